//! Temperature-0 answers are reproducible under load: a sequence's logits do not depend on what
//! it is batched with, on how much of its prompt was cached (by a prefill or by an earlier
//! reply's decoding), nor on how the prompt was cut into chunks — bit for bit, on every
//! instruction set this CPU runs (for float weights, every one but AVX-512 VNNI). The
//! instruction set is chosen once per process, so the test runs itself again for each one with
//! `HEARTH_ISA` set.

mod common;

use common::*;
use hearth_engine::model::SeqInput;
use hearth_engine::KvCache;
use hearth_engine::LoadedModel;
use hearth_kernels::qdot::in_child_per_isa;

const STEPS: usize = 6;

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as u32
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Eight prompts of 5 to 33 tokens, crossing the attention split (8 new tokens) and the key
/// tiles (16 positions): the fixture's prompts joined in turn.
fn prompts() -> Vec<Vec<u32>> {
    let cases: Vec<Vec<u32>> = json("smollm2/generate.json")["cases"].as_array().unwrap().iter().map(|c| ids(&c["prompt_ids"])).collect();
    (0..8).map(|k| (0..k % 5 + 1).flat_map(|j| cases[(k + j) % cases.len()].clone()).collect()).collect()
}

/// The prompt fed in `cuts` (chunk boundaries), then `STEPS` greedy tokens decoded alone; the
/// logits after every step.
fn alone(m: &LoadedModel, prompt: &[u32], cuts: &[usize]) -> Vec<Vec<u32>> {
    let mut cache = m.model.new_cache(128).unwrap();
    let mut start = 0;
    let mut last = Vec::new();
    for &end in cuts.iter().chain([&prompt.len()]) {
        if end > start {
            last = m.model.forward(&mut [SeqInput::new(&prompt[start..end], &mut cache)], false).unwrap().swap_remove(0);
            start = end;
        }
    }
    let mut out = vec![bits(&last)];
    for _ in 0..STEPS {
        let t = argmax(&last);
        last = m.model.forward(&mut [SeqInput::new(&[t], &mut cache)], false).unwrap().swap_remove(0);
        out.push(bits(&last));
    }
    out
}

/// Every prompt prefilled in one pass together, then decoded together.
fn batched(m: &LoadedModel, prompts: &[Vec<u32>]) -> Vec<Vec<Vec<u32>>> {
    let mut caches: Vec<KvCache> = prompts.iter().map(|_| m.model.new_cache(128).unwrap()).collect();
    let mut inputs: Vec<SeqInput> = prompts.iter().zip(&mut caches).map(|(p, c)| SeqInput::new(p, c)).collect();
    let mut last = m.model.forward(&mut inputs, false).unwrap();
    let mut out: Vec<Vec<Vec<u32>>> = last.iter().map(|l| vec![bits(l)]).collect();
    for _ in 0..STEPS {
        let next: Vec<u32> = last.iter().map(|l| argmax(l)).collect();
        let mut inputs: Vec<SeqInput> = caches.iter_mut().zip(&next).map(|(c, t)| SeqInput::new(std::slice::from_ref(t), c)).collect();
        last = m.model.forward(&mut inputs, false).unwrap();
        out.iter_mut().zip(&last).for_each(|(o, l)| o.push(bits(l)));
    }
    out
}

/// Alone against batched, in pieces, and a conversation's tail against a fresh prefill, for
/// one model on this process's instruction set.
fn check_model(name: &str, m: &LoadedModel, prompts: &[Vec<u32>]) {
    let isa = hearth_kernels::qdot::isa().name;
    let reference: Vec<_> = prompts.iter().map(|p| alone(m, p, &[])).collect();
    assert_eq!(batched(m, prompts), reference, "{name}, {isa}: batched with seven others");
    // The shortest, a middling and the longest prompt.
    for (p, want) in prompts.iter().zip(&reference).filter(|(p, _)| [5, 17, 33].contains(&p.len())) {
        let n = p.len();
        for mut cuts in [vec![1], vec![n / 2], vec![n - 1], vec![7, 8, 16, 17], (3..n).step_by(3).collect()] {
            cuts.retain(|&c| c < n);
            assert_eq!(&alone(m, p, &cuts), want, "{name}, {isa}: prompt of {n} fed in pieces ending at {cuts:?}");
        }
    }
    // A second turn: the first reply's decoded keys and values reused, against the whole
    // conversation prefilled afresh.
    let p = &prompts[3];
    let mut cache = m.model.new_cache(128).unwrap();
    let mut logits = m.model.forward(&mut [SeqInput::new(p, &mut cache)], false).unwrap().swap_remove(0);
    let mut conversation = p.clone();
    for _ in 0..STEPS {
        conversation.push(argmax(&logits));
        logits = m.model.forward(&mut [SeqInput::new(&conversation[conversation.len() - 1..], &mut cache)], false).unwrap().swap_remove(0);
    }
    let mut fresh = m.model.new_cache(128).unwrap();
    let again = m.model.forward(&mut [SeqInput::new(&conversation, &mut fresh)], false).unwrap().swap_remove(0);
    assert_eq!(bits(&again), bits(&logits), "{name}, {isa}: a conversation's decoded tail against the same tokens prefilled");
    eprintln!("{name}, {isa}: batch, chunk and cache invariant");
}

fn check_this_isa() {
    let path = hearth_store::installed_model("smollm2").expect("run scripts/fetch-test-models.sh");
    check_model("SmolLM2 Q4_1", &LoadedModel::load(&path).unwrap(), &prompts());
    // Float weights multiply one row at a time on every instruction set but AVX-512 VNNI,
    // whose many-token float tiles (8 tokens and more) sum in another order than its
    // one-token kernel: there, and only there, float models are not yet batch invariant.
    let float_tiles = hearth_kernels::qdot::isa().kind == hearth_kernels::qdot::IsaKind::Avx512Vnni;
    let mlx = with_tokenizer("tiny/mlx/llama-q4g32-bf16", "tiny/hf/llama");
    for (name, path, vocab) in [
        ("Q6_K", testdata("tiny/gguf/llama256-Q6_K.gguf"), 4096),
        ("Q5_K_M", testdata("tiny/gguf/llama256-Q5_K_M.gguf"), 4096),
        ("F16", testdata("tiny/gguf/llama-F16.gguf"), 49_152),
        ("MLX 4-bit", mlx.path().to_path_buf(), 49_152),
    ] {
        if name == "F16" && float_tiles {
            continue;
        }
        let prompts: Vec<Vec<u32>> = prompts().iter().map(|p| p.iter().map(|t| t % vocab).collect()).collect();
        check_model(&format!("tiny {name}"), &LoadedModel::load(&path).unwrap(), &prompts);
    }
}

#[test]
fn greedy_logits_do_not_depend_on_batch_chunks_or_cache_on_every_isa() {
    if in_child_per_isa("greedy_logits_do_not_depend_on_batch_chunks_or_cache_on_every_isa") {
        check_this_isa();
    }
}

//! The default fast path (8-bit activations in integer dot products, as llama.cpp does) against
//! the same references, within the fast-path bounds of testdata/tiny/MANIFEST.md. For integer
//! activations the bound is stated the way llama.cpp's fixtures state theirs: close to the float
//! reference on the top logits, and the same top-1 token wherever the reference's top-1 margin is
//! wider than that bound.

mod common;

use common::*;
use hearth_engine::model::Backend;
use hearth_engine::{LoadOptions, LoadedModel};
use serde_json::Value;

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

/// Top-1 of the reference's `{ids, logits}` record, and its margin over the second.
fn reference_top1(top: &Value) -> (usize, f32) {
    let ids = ids(&top["ids"]);
    let logits: Vec<f32> = top["logits"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap() as f32).collect();
    let best = argmax(&logits);
    let second = logits.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &l)| l).fold(f32::MIN, f32::max);
    (ids[best] as usize, logits[best] - second)
}

fn check(label: &str, model: &LoadedModel, case: &Value, bound: f32) {
    let logits = last_logits(model, &ids(&case["ids"]));
    let d = top_diff(&logits, &case["last_logits_top20"]);
    eprintln!("{label}: top-20 |diff| {d:.3}");
    assert!(d <= bound, "{label}: top-20 logits differ by {d} > {bound}");
    let (top1, margin) = reference_top1(&case["last_logits_top20"]);
    if margin > bound {
        assert_eq!(argmax(&logits), top1, "{label}: top-1 differs although the margin is {margin}");
    }
}

fn gguf_within_llama_cpp_bounds(backend: Backend) {
    let checks = json("tiny/refs/checks.json");
    let lcpp = json("tiny/refs/gguf.json");
    for (file, r) in lcpp["models"].as_object().unwrap() {
        let path = testdata(&format!("tiny/gguf/{file}"));
        let model = LoadedModel::load_with(&path, LoadOptions { backend, ..Default::default() }).unwrap();
        for (i, case) in checks[format!("gguf/{file}")]["dequant_f32_reference"].as_array().unwrap().iter().enumerate() {
            check(&format!("{backend:?} gguf/{file} p{i} vs float reference"), &model, case, 0.3);
        }
        for (i, case) in r["cases"].as_array().unwrap().iter().enumerate() {
            check(&format!("{backend:?} gguf/{file} p{i} vs llama.cpp"), &model, case, 0.3);
        }
    }
}

#[test]
fn gguf_fast_path_stays_within_llama_cpp_bounds() {
    gguf_within_llama_cpp_bounds(Backend::Host);
}

/// The GPU path (candle's kernels on the GGUF blocks as they are, with its own 8-bit
/// activations), run on the CPU.
#[test]
fn gguf_candle_backend_stays_within_llama_cpp_bounds() {
    gguf_within_llama_cpp_bounds(Backend::Candle);
}

#[test]
fn mlx_fast_path_stays_within_mlx_lm_native_bounds() {
    let refs = json("tiny/refs/mlx.json");
    for (name, r) in refs["models"].as_object().unwrap() {
        let source = if name.starts_with("llama") { "tiny/hf/llama" } else { "tiny/hf/qwen3" };
        let model = LoadedModel::load(with_tokenizer(&format!("tiny/mlx/{name}"), source).path()).unwrap();
        for (i, case) in r["native"]["cases"].as_array().unwrap().iter().enumerate() {
            check(&format!("mlx/{name} p{i}"), &model, case, 0.6);
        }
    }
}

#[test]
fn hf_fast_path_matches_transformers() {
    let refs = json("tiny/refs/hf.json");
    for name in ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2"] {
        let model = LoadedModel::load(&testdata(&format!("tiny/hf/{name}"))).unwrap();
        for case in refs["models"][name]["cases"].as_array().unwrap() {
            check_case(&format!("hf/{name} p{}", case["prompt_index"]), &model, case, 0.05);
        }
    }
}

#[test]
fn gemma3_fast_path_matches_transformers() {
    let model = LoadedModel::load(&testdata("tiny/hf/gemma3")).unwrap();
    for case in json("tiny/refs/gemma3.json")["cases"].as_array().unwrap() {
        check_case(&format!("hf/gemma3 p{}", case["prompt_index"]), &model, case, 0.05);
    }
}

/// A real 135M model is more sensitive than the tiny ones (its activations have outliers that
/// 8-bit blocks round coarsely). llama.cpp itself (llama-cpp-python 0.3.36, 2 threads, same
/// file) is 0.27, 0.43, 0.32, 0.60 and 0.24 from the float32 reference on these five prompts'
/// top logits, and its greedy output leaves the reference after 5 to 21 tokens
/// (testdata/smollm2/generate.json); the bound is llama.cpp's worst gap plus a quarter.
#[test]
fn smollm2_fast_path_stays_close_to_float32() {
    let path = hearth_store::installed_model("smollm2").expect("run scripts/fetch-test-models.sh");
    let model = LoadedModel::load(&path).unwrap();
    for c in json("smollm2/generate.json")["cases"].as_array().unwrap() {
        let top = &c["last_logits_top"];
        let record = serde_json::json!({
            "ids": top.as_array().unwrap().iter().map(|t| t["id"].clone()).collect::<Vec<_>>(),
            "logits": top.as_array().unwrap().iter().map(|t| t["logit"].clone()).collect::<Vec<_>>(),
        });
        check(&format!("smollm2 {}", c["prompt"]), &model, &serde_json::json!({"ids": c["prompt_ids"], "last_logits_top20": record}), 0.75);
    }
}

/// Continuous batching must not change what a sequence generates: on the fast path, decoding
/// several sequences in one forward pass gives each of them bit for bit the logits it gets
/// decoding alone (the batched kernels sum in the one-token kernel's order).
#[test]
fn smollm2_batched_decode_is_bit_identical_to_decoding_alone() {
    use hearth_engine::model::SeqInput;
    let path = hearth_store::installed_model("smollm2").expect("run scripts/fetch-test-models.sh");
    let model = LoadedModel::load(&path).unwrap();
    let m = &model.model;
    let cases = json("smollm2/generate.json");
    let prompts: Vec<Vec<u32>> = cases["cases"].as_array().unwrap().iter().map(|c| ids(&c["prompt_ids"])).collect();
    // Decodes `steps` greedy tokens for each prompt, `together` or one sequence at a time.
    let run = |together: bool| -> Vec<Vec<f32>> {
        let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache(64).unwrap()).collect();
        let mut last: Vec<Vec<f32>> = prompts
            .iter()
            .zip(&mut caches)
            .map(|(p, cache)| m.forward(&mut [SeqInput::new(p, cache)], false).unwrap().swap_remove(0))
            .collect();
        for _ in 0..6 {
            let next: Vec<u32> = last.iter().map(|l| argmax(l) as u32).collect();
            last = if together {
                let mut inputs: Vec<SeqInput> =
                    caches.iter_mut().zip(&next).map(|(cache, t)| SeqInput::new(std::slice::from_ref(t), cache)).collect();
                m.forward(&mut inputs, false).unwrap()
            } else {
                caches
                    .iter_mut()
                    .zip(&next)
                    .map(|(cache, t)| m.forward(&mut [SeqInput::new(std::slice::from_ref(t), cache)], false).unwrap().swap_remove(0))
                    .collect()
            };
        }
        last
    };
    assert_eq!(run(true), run(false));
}

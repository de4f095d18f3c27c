//! Generation behaviour on a tiny model: sampling controls, seeds, stop strings, EOS, log-probs,
//! context limits and KV-cache reuse across turns.

mod common;

use common::*;
use hearth_engine::{EngineError, FinishReason, GenerateParams, LoadedModel, SamplingParams, Session};

fn model() -> LoadedModel {
    LoadedModel::load(&testdata("tiny/hf/llama")).unwrap()
}

fn prompt() -> Vec<u32> {
    ids(&json("tiny/prompts.json")["ids"][0])
}

fn run(model: &LoadedModel, params: &GenerateParams) -> hearth_engine::Generation {
    let mut s = Session::new(model, 128).unwrap();
    s.generate(&prompt(), params, |_| true).unwrap()
}

fn sampled(seed: u64) -> GenerateParams {
    GenerateParams {
        max_tokens: 12,
        sampling: SamplingParams { temperature: 1.0, top_p: 0.95, seed: Some(seed), ..Default::default() },
        ignore_eos: true,
        ..Default::default()
    }
}

#[test]
fn same_seed_same_output_and_seeds_differ() {
    let m = model();
    let a = run(&m, &sampled(7));
    assert_eq!(a.tokens, run(&m, &sampled(7)).tokens);
    let others: Vec<_> = (8..12).map(|s| run(&m, &sampled(s)).tokens).collect();
    assert!(others.iter().any(|t| *t != a.tokens), "five seeds gave the same 12 tokens");
}

#[test]
fn top_k_one_is_greedy() {
    let m = model();
    let greedy = run(&m, &GenerateParams { max_tokens: 10, ignore_eos: true, ..Default::default() });
    let mut p = sampled(3);
    p.max_tokens = 10;
    p.sampling.top_k = 1;
    assert_eq!(run(&m, &p).tokens, greedy.tokens);
}

#[test]
fn stop_strings_cut_the_output_and_never_leak() {
    let m = model();
    let base = GenerateParams { max_tokens: 16, ignore_eos: true, ..Default::default() };
    let full = run(&m, &base).text;
    // A stop string that spans a token boundary somewhere in the middle of the text.
    let chars: Vec<char> = full.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 4].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    let mut streamed = String::new();
    let mut s = Session::new(&m, 128).unwrap();
    let g = s
        .generate(&prompt(), &GenerateParams { stop: vec![stop.clone()], ..base }, |ev| {
            streamed.push_str(ev.text);
            true
        })
        .unwrap();
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert_eq!(g.text, expected);
    assert_eq!(streamed, expected, "streamed text leaked part of the stop string {stop:?}");
}

#[test]
fn eos_and_logit_bias() {
    let m = model();
    let eos = m.eos_ids[0];
    let mut p = GenerateParams { max_tokens: 8, ..Default::default() };
    p.sampling.logit_bias.insert(eos, 100.0);
    let g = run(&m, &p);
    assert_eq!(g.finish_reason, FinishReason::Stop);
    assert!(g.tokens.is_empty() && g.text.is_empty());
    p.sampling.logit_bias = [(1234, 100.0)].into();
    assert!(run(&m, &p).tokens.iter().all(|&t| t == 1234));
}

#[test]
fn penalties_discourage_repetition() {
    let m = model();
    let plain = run(&m, &GenerateParams { max_tokens: 16, ignore_eos: true, ..Default::default() });
    let distinct = |t: &[u32]| t.iter().collect::<std::collections::HashSet<_>>().len();
    let mut p = GenerateParams { max_tokens: 16, ignore_eos: true, ..Default::default() };
    p.sampling.frequency_penalty = 2.0;
    p.sampling.presence_penalty = 2.0;
    let penalised = run(&m, &p);
    assert!(distinct(&penalised.tokens) > distinct(&plain.tokens), "{plain:?} vs {penalised:?}");
    p.sampling = SamplingParams { repetition_penalty: 10.0, ..Default::default() };
    let rep = run(&m, &p);
    assert!(distinct(&rep.tokens) > distinct(&plain.tokens));
}

#[test]
fn logprobs_are_normalised_and_ranked() {
    let m = model();
    let g = run(&m, &GenerateParams { max_tokens: 5, logprobs: Some(5), ignore_eos: true, ..Default::default() });
    assert_eq!(g.logprobs.len(), 5);
    for (lp, &id) in g.logprobs.iter().zip(&g.tokens) {
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, id, "greedy picks the most likely token");
        assert!((lp.top[0].1 - lp.logprob).abs() < 1e-6);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let mass: f32 = lp.top.iter().map(|t| t.1.exp()).sum();
        assert!(mass <= 1.0 + 1e-5 && lp.logprob <= 0.0);
    }
}

#[test]
fn context_overflow_is_a_clear_error() {
    let m = model();
    let mut s = Session::new(&m, 16).unwrap();
    let err = s.generate(&prompt(), &GenerateParams { max_tokens: 12, ..Default::default() }, |_| true).err().unwrap();
    assert!(matches!(err, EngineError::ContextOverflow { prompt: 5, max_tokens: 12, context: 16 }), "{err}");
    assert!(err.to_string().contains("exceeds the context"));
}

#[test]
fn invalid_sampling_parameters_are_rejected() {
    let m = model();
    let mut s = Session::new(&m, 64).unwrap();
    for sampling in [
        SamplingParams { temperature: -1.0, ..Default::default() },
        SamplingParams { top_p: 0.0, ..Default::default() },
        SamplingParams { min_p: 2.0, ..Default::default() },
        SamplingParams { presence_penalty: 3.0, ..Default::default() },
    ] {
        let p = GenerateParams { max_tokens: 2, sampling, ..Default::default() };
        assert!(matches!(s.generate(&prompt(), &p, |_| true), Err(EngineError::InvalidRequest(_))));
    }
}

#[test]
fn a_follow_up_turn_reuses_the_cached_prefix() {
    let m = model();
    let mut s = Session::new(&m, 128).unwrap();
    let params = GenerateParams { max_tokens: 6, ignore_eos: true, ..Default::default() };
    let first = s.generate(&prompt(), &params, |_| true).unwrap();
    assert_eq!(first.cached_tokens, 0);
    let mut second_prompt = prompt();
    second_prompt.extend(&first.tokens);
    second_prompt.extend([2, 198, 1]);
    let second = s.generate(&second_prompt, &params, |_| true).unwrap();
    // Everything but the last generated token (never fed back) comes from the cache.
    assert_eq!(second.cached_tokens, prompt().len() + first.tokens.len() - 1);
    // And the result is what a fresh session computes.
    let mut fresh = Session::new(&m, 128).unwrap();
    assert_eq!(fresh.generate(&second_prompt, &params, |_| true).unwrap().tokens, second.tokens);
}

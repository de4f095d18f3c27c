//! Generation behaviour on a tiny model: sampling controls, seeds, stop strings, EOS, log-probs,
//! context limits and KV-cache reuse across turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_engine::{LoadOptions, LoadedModel};
use hearth_runtime::{
    Completion, Event, FinishReason, GenerateParams, Request, Runtime, RuntimeConfig, RuntimeError, SamplingParams, Usage,
};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

fn model() -> LoadedModel {
    LoadedModel::load(&testdata("tiny/hf/llama")).unwrap()
}

fn prompt() -> Vec<u32> {
    let prompts: serde_json::Value = serde_json::from_slice(&std::fs::read(testdata("tiny/prompts.json")).unwrap()).unwrap();
    prompts["ids"][0].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// A runtime of its own for one model, as the command line runs one.
fn runtime(model: &LoadedModel, context: usize) -> Runtime<'_> {
    Runtime::new(model, RuntimeConfig::single(context), Arc::new(()), Default::default())
}

fn generate(rt: &mut Runtime<'_>, prompt: &[u32], params: &GenerateParams) -> Result<Completion, RuntimeError> {
    rt.complete(Request::new(prompt.to_vec(), params.clone()), |_| true)
}

fn run(model: &LoadedModel, params: &GenerateParams) -> Completion {
    generate(&mut runtime(model, 128), &prompt(), params).unwrap()
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
    let mut rt = runtime(&m, 128);
    let g = rt
        .complete(Request::new(prompt(), GenerateParams { stop: vec![stop.clone()], ..base }), |text| {
            streamed.push_str(text);
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
    let mut rt = runtime(&m, 16);
    let err = generate(&mut rt, &prompt(), &GenerateParams { max_tokens: 12, ..Default::default() }).err().unwrap();
    assert!(matches!(err, RuntimeError::ContextOverflow { prompt: 5, max_tokens: 12, context: 16 }), "{err}");
    assert!(err.to_string().contains("exceeds the context"));
}

#[test]
fn invalid_sampling_parameters_are_rejected() {
    let m = model();
    let mut rt = runtime(&m, 64);
    for sampling in [
        SamplingParams { temperature: -1.0, ..Default::default() },
        SamplingParams { top_p: 0.0, ..Default::default() },
        SamplingParams { min_p: 2.0, ..Default::default() },
        SamplingParams { presence_penalty: 3.0, ..Default::default() },
    ] {
        let p = GenerateParams { max_tokens: 2, sampling, ..Default::default() };
        assert!(matches!(generate(&mut rt, &prompt(), &p), Err(RuntimeError::Invalid { .. })));
    }
}

#[test]
fn a_follow_up_turn_reuses_the_cached_prefix() {
    let m = model();
    let mut rt = runtime(&m, 128);
    let params = GenerateParams { max_tokens: 6, ignore_eos: true, ..Default::default() };
    let first = generate(&mut rt, &prompt(), &params).unwrap();
    assert_eq!(first.usage.cached_tokens, 0);
    let mut second_prompt = prompt();
    second_prompt.extend(&first.tokens);
    second_prompt.extend([2, 198, 1]);
    let second = generate(&mut rt, &second_prompt, &params).unwrap();
    // Everything but the last generated token (never fed back) comes from the cache.
    assert_eq!(second.usage.cached_tokens, prompt().len() + first.tokens.len() - 1);
    // And the result is what a fresh runtime computes.
    assert_eq!(generate(&mut runtime(&m, 128), &second_prompt, &params).unwrap().tokens, second.tokens);
}

/// Allows one token per step, as a grammar with a single path would.
struct Script {
    tokens: Vec<u32>,
    at: usize,
}

impl hearth_runtime::LogitsProcessor for Script {
    fn process(&mut self, logits: &mut [f32]) {
        let want = self.tokens[self.at] as usize;
        logits.iter_mut().enumerate().filter(|(i, _)| *i != want).for_each(|(_, l)| *l = f32::NEG_INFINITY);
    }

    fn accept(&mut self, token: u32) -> Result<(), String> {
        if token != self.tokens[self.at] {
            return Err(format!("token {token} is off the script"));
        }
        self.at += 1;
        Ok(())
    }

    fn fork(&self) -> Box<dyn hearth_runtime::LogitsProcessor> {
        Box::new(Script { tokens: self.tokens.clone(), at: self.at })
    }
}

#[test]
fn a_logits_processor_constrains_every_choice() {
    let m = model();
    let script = vec![1234, 77, 1234, 5, 9];
    let mut rt = runtime(&m, 128);
    let mut req = Request::new(prompt(), GenerateParams { max_tokens: script.len(), ..sampled(11) });
    req.n = 3;
    req.processor = Some(Box::new(Script { tokens: script.clone(), at: 0 }));
    let mut events = rt.submit(req).unwrap();
    while !rt.is_idle() {
        rt.step();
    }
    let mut tokens = vec![Vec::new(); 3];
    while let Ok(event) = events.try_recv() {
        match event {
            hearth_runtime::Event::Token { index, token: Some(t), .. } => tokens[index].push(t.id),
            hearth_runtime::Event::Failed(e) => panic!("{e}"),
            _ => {}
        }
    }
    assert_eq!(tokens, vec![script; 3], "sampling at temperature 1 followed the processor in every choice");
}

/// Runs every submitted request to its end; each one's generated tokens and usage.
fn drain(rt: &mut Runtime<'_>, mut events: Vec<tokio::sync::mpsc::UnboundedReceiver<hearth_runtime::Event>>) -> Vec<(Vec<u32>, Usage)> {
    let mut out = vec![(Vec::new(), None); events.len()];
    while out.iter().any(|(_, u)| u.is_none()) {
        rt.step();
        for (rx, (tokens, usage)) in events.iter_mut().zip(&mut out) {
            while let Ok(event) = rx.try_recv() {
                match event {
                    Event::Token { token: Some(t), .. } => tokens.push(t.id),
                    Event::Token { .. } => {}
                    Event::Finished { usage: u, .. } => *usage = Some(u),
                    Event::Failed(e) => panic!("{e}"),
                }
            }
        }
    }
    out.into_iter().map(|(t, u)| (t, u.unwrap())).collect()
}

/// Requests naming different adapters (or none) decode in one batch, each as it would alone,
/// and the prompt cache hands a request only what was computed with its own adapter.
#[test]
fn requests_with_different_adapters_share_a_batch() {
    let m = model();
    let dir = testdata("tiny/lora/adapters");
    let adapter = Arc::new(m.load_adapter(&dir).unwrap());
    let adapted_model =
        LoadedModel::load_with(&testdata("tiny/hf/llama"), LoadOptions { adapter: Some(dir.clone()), ..Default::default() }).unwrap();
    let params = GenerateParams { max_tokens: 8, ignore_eos: true, ..Default::default() };
    let cfg = RuntimeConfig { max_batch: 4, prefill_chunk: 256, context: 128, prompt_cache_bytes: usize::MAX };
    let mut rt = Runtime::new(&m, cfg, Arc::new(()), Default::default());
    let with = |a: &Arc<hearth_runtime::Adapter>| Request { adapter: Some(a.clone()), ..Request::new(prompt(), params.clone()) };
    let events = vec![rt.submit(with(&adapter)).unwrap(), rt.submit(Request::new(prompt(), params.clone())).unwrap()];
    let got = drain(&mut rt, events);
    assert_eq!(got[0].0, generate(&mut runtime(&adapted_model, 128), &prompt(), &params).unwrap().tokens);
    assert_eq!(got[1].0, generate(&mut runtime(&m, 128), &prompt(), &params).unwrap().tokens);
    assert_ne!(got[0].0, got[1].0, "the adapter changed nothing");

    // Again: each request finds its own adapter's cache; another adapter (even from the same
    // files) starts from nothing.
    let other = Arc::new(m.load_adapter(&dir).unwrap());
    let events = vec![rt.submit(with(&adapter)).unwrap(), rt.submit(Request::new(prompt(), params.clone())).unwrap()];
    let again = drain(&mut rt, events);
    assert_eq!(again.iter().map(|(t, _)| t).collect::<Vec<_>>(), got.iter().map(|(t, _)| t).collect::<Vec<_>>());
    assert!(again.iter().all(|(_, u)| u.cached_tokens == prompt().len()), "{again:?}");
    let events = vec![rt.submit(with(&other)).unwrap()];
    let third = drain(&mut rt, events);
    assert_eq!(third[0].1.cached_tokens, 0);
    assert_eq!(third[0].0, got[0].0);

    let foreign = Arc::new(adapted_model.load_adapter(&dir).unwrap());
    let err = rt.submit(with(&foreign)).expect_err("an adapter of another model is refused");
    assert!(matches!(err, RuntimeError::Invalid { param: "adapter", .. }), "{err:?}");
}

//! Fixture access shared by the engine's integration tests. Fixtures live in the repository's
//! `testdata/` (see testdata/ORIGIN.md); real models come from scripts/fetch-test-models.sh.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hearth_engine::model::SeqInput;
use hearth_engine::{LoadOptions, LoadedModel, Precision};
use serde_json::Value;

pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

pub fn json(rel: &str) -> Value {
    let path = testdata(rel);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("fixture is JSON")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

/// A model directory as a real download would have it: the fixture's files plus the
/// tokenizer.json that MANIFEST.md says was left out to save space (removed when dropped).
pub fn with_tokenizer(model: &str, tokenizer_from: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(testdata(model)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    std::fs::copy(testdata(tokenizer_from).join("tokenizer.json"), dir.path().join("tokenizer.json")).unwrap();
    dir
}

/// Loads for the float path: float32 activations on the exactly de-quantised weights.
pub fn load_exact(path: &Path) -> LoadedModel {
    LoadedModel::load_with(path, LoadOptions { precision: Precision::Exact, ..Default::default() }).unwrap()
}

/// Last-position logits of a prompt, prefilled in chunks of 256 as the runtime does.
pub fn last_logits(model: &LoadedModel, prompt: &[u32]) -> Vec<f32> {
    let mut cache = model.model.new_cache(256).unwrap();
    prefill(model, prompt, &mut cache)
}

fn prefill(model: &LoadedModel, prompt: &[u32], cache: &mut hearth_engine::KvCache) -> Vec<f32> {
    let mut logits = Vec::new();
    for chunk in prompt.chunks(256) {
        logits = model.model.forward(&mut [SeqInput::new(chunk, cache)], false).unwrap().swap_remove(0);
    }
    logits
}

/// `n` greedy tokens after `prompt` straight from the forward pass (EOS not special-cased, as
/// the references record them); the runtime's sampling is tested in hearth-runtime.
pub fn greedy(model: &LoadedModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.model.new_cache(256).unwrap();
    let mut logits = prefill(model, prompt, &mut cache);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = (0..logits.len()).fold(0, |best, i| if logits[i] > logits[best] { i } else { best }) as u32;
        out.push(next);
        if out.len() < n {
            logits = model.model.forward(&mut [SeqInput::new(&[next], &mut cache)], false).unwrap().swap_remove(0);
        }
    }
    out
}

/// Max |ours[id] - reference| over a fixture's `{ids, logits}` record.
pub fn top_diff(ours: &[f32], top: &Value) -> f32 {
    let ids = ids(&top["ids"]);
    let logits = top["logits"].as_array().unwrap();
    ids.iter().zip(logits).map(|(&i, l)| (ours[i as usize] - l.as_f64().unwrap() as f32).abs()).fold(0.0, f32::max)
}

pub fn full_diff(ours: &[f32], reference: &Value) -> f32 {
    let r = reference.as_array().unwrap();
    assert_eq!(r.len(), ours.len());
    ours.iter().zip(r).map(|(a, b)| (a - b.as_f64().unwrap() as f32).abs()).fold(0.0, f32::max)
}

/// Checks one reference case: last-position logits within `tol` on the reference's top-20,
/// and the 16 greedy tokens identical (a divergence is excused only at a step whose recorded
/// margin is below 0.05, as MANIFEST.md allows).
pub fn check_case(label: &str, model: &LoadedModel, case: &Value, tol: f32) {
    let prompt = ids(&case["ids"]);
    let logits = last_logits(model, &prompt);
    let d = top_diff(&logits, &case["last_logits_top20"]);
    assert!(d <= tol, "{label}: top-20 logits differ by {d} > {tol}");
    let want = ids(&case["greedy16"]);
    let got = greedy(model, &prompt, want.len());
    if got != want {
        let step = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
        let margin = case["greedy16_top1_minus_top2"][step].as_f64().unwrap();
        assert!(margin < 0.05, "{label}: greedy diverges at step {step} (margin {margin}): {got:?} vs {want:?}");
        eprintln!("{label}: greedy diverges at step {step}, a near-tie (margin {margin})");
    }
}

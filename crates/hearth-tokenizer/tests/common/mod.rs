//! Fixture access shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;

use hearth_tokenizer::Tokenizer;
use serde_json::Value;

pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(rel)
}

pub fn local_data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
}

pub fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub fn smollm2() -> Tokenizer {
    Tokenizer::from_file(&testdata("tiny/hf/llama/tokenizer.json")).unwrap()
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// (text, ids, decoded) for every case of smollm2/tokenize.json plus tiny/prompts.json.
pub fn tokenize_cases() -> Vec<(String, Vec<u32>, String)> {
    let mut cases: Vec<_> = read_json(testdata("smollm2/tokenize.json"))["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["ids"], c["llamacpp_ids"], "fixture: HF and llama.cpp ids differ");
            (c["text"].as_str().unwrap().to_string(), ids(&c["ids"]), c["decoded"].as_str().unwrap().to_string())
        })
        .collect();
    let prompts = read_json(testdata("tiny/prompts.json"));
    for (text, ids_v) in prompts["prompts"].as_array().unwrap().iter().zip(prompts["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap().to_string();
        cases.push((text.clone(), ids(ids_v), text));
    }
    cases
}

/// A fresh empty directory, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

//! all-MiniLM-L6-v2 and sentence-transformers' outputs for it (testdata/minilm), shared by the
//! embedder's tests and the server's (which include this file by path).

use std::path::PathBuf;

use serde_json::Value;

pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
    pub embedding: Vec<f32>,
}

/// The model's directory; scripts/fetch-test-models.sh installs it (a missing model fails the
/// test rather than skipping it).
pub fn model_dir() -> PathBuf {
    hearth_store::installed_model("minilm").expect("all-MiniLM-L6-v2 is installed (scripts/fetch-test-models.sh)")
}

pub fn reference_cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/minilm/embeddings.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect(),
            embedding: c["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect(),
        })
        .collect()
}

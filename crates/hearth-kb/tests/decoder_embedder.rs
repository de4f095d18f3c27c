//! A collection built on the tiny Qwen3-Embedding stand-in (testdata/embedders): passages are
//! embedded as sentence-transformers embeds documents (its `document` prompt is empty), queries
//! with its query instruction, and vector search scores are the cosines between those.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_kb::{Kb, LocalEmbedder, Mode, NewContent, SearchOptions, TextEmbedder};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/embedders").join(rel)
}

fn vector(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

#[test]
fn a_collection_on_a_decoder_embedder_searches_with_the_query_prompt() {
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(testdata("qwen3-embedding-tiny.json")).unwrap()).unwrap();
    let embedder = Arc::new(LocalEmbedder::load("qwen3-embedding-tiny", &testdata("qwen3-embedding-tiny")).unwrap());
    let texts: Vec<String> = refs["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    // The prompted reference is what a query becomes; passages are the unprompted ones.
    for (i, text) in texts.iter().enumerate() {
        assert!(cosine(&embedder.embed_query(text).unwrap(), &vector(&refs["prompt_query"][i])) >= 0.99999, "query {i}");
    }
    let passages = embedder.embed(&texts).unwrap();
    for (i, v) in passages.iter().enumerate() {
        assert!(cosine(v, &vector(&refs["no_prompt"][i])) >= 0.99999, "passage {i}");
    }

    let dir = tempfile::tempdir().unwrap();
    let kb = Kb::open(&dir.path().join("kb.sqlite"), embedder).unwrap();
    let items = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| NewContent { id: Some(format!("t{i}")), text: t.clone(), ..Default::default() })
        .collect();
    kb.add_content(items, &Default::default()).unwrap();
    let query = 4; // "Paris is the capital of France."
    let hits = kb.search(&texts[query], &SearchOptions { mode: Mode::Vector, limit: 10, ..Default::default() }, None).unwrap();
    assert_eq!(hits.len(), texts.len() - 1);
    let asked = vector(&refs["prompt_query"][query]);
    for hit in &hits {
        let i: usize = hit.document.id[1..].parse().unwrap();
        let want = cosine(&asked, &vector(&refs["no_prompt"][i]));
        assert!((hit.score - want).abs() < 1e-4, "{}: score {} vs the prompted query's cosine {want}", hit.document.id, hit.score);
    }
}

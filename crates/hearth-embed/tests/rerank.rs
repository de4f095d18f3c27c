//! A tiny random-weight cross-encoder (tests/data/tiny-cross-encoder, made by its make.py)
//! against sentence-transformers' `CrossEncoder.predict` on the same files.

use std::path::Path;

use hearth_embed::{EmbedError, RerankOptions, Reranker};
use serde_json::Value;

fn fixture() -> (Reranker, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-cross-encoder");
    let expected = serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    (Reranker::load(&dir).unwrap(), expected)
}

#[test]
fn scores_match_sentence_transformers() {
    let (model, expected) = fixture();
    let query = expected["query"].as_str().unwrap();
    let docs: Vec<&str> = expected["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let want: Vec<f64> = expected["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap()).collect();
    let token_counts: usize = expected["ids"].as_array().unwrap().iter().map(|i| i.as_array().unwrap().len()).sum();
    assert_eq!(model.max_tokens(), 48);

    let all = model.rerank(query, &docs, &RerankOptions { top_n: None, truncate: true }).unwrap();
    assert_eq!(all.tokens, token_counts);
    assert_eq!(all.results.len(), docs.len());
    for r in &all.results {
        assert!(
            (r.relevance_score as f64 - want[r.index]).abs() < 1e-5,
            "document {}: {} vs {}",
            r.index,
            r.relevance_score,
            want[r.index]
        );
    }
    assert!(all.results.windows(2).all(|w| w[0].relevance_score >= w[1].relevance_score), "best first");

    let top = model.rerank(query, &docs, &RerankOptions { top_n: Some(2), truncate: true }).unwrap();
    assert_eq!(top.results, all.results[..2]);
}

#[test]
fn long_pairs_are_rejected_unless_truncated() {
    let (model, expected) = fixture();
    let query = expected["query"].as_str().unwrap();
    let docs: Vec<&str> = expected["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    match model.rerank(query, &docs, &RerankOptions::default()) {
        Err(EmbedError::TooLong { index: 5, limit: 48, .. }) => {}
        other => panic!("expected document 5 to be too long, got {other:?}"),
    }
    let none: [&str; 0] = [];
    assert!(model.rerank(query, &none, &RerankOptions::default()).unwrap_err().is_client_error());
}

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

    let all = model.rerank(query, &docs, &RerankOptions { top_n: None, truncate: true, ..Default::default() }).unwrap();
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

    let top = model.rerank(query, &docs, &RerankOptions { top_n: Some(2), truncate: true, ..Default::default() }).unwrap();
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

/// A causal LM as a judge, Qwen3-Reranker's recipe, on the tiny random Qwen3: the scores
/// transformers gives through the model card's code (testdata/embedders/make_qwen3_reranker_refs.py).
#[test]
fn a_causal_lm_judges_relevance_as_qwen3_reranker_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("embedders/qwen3-reranker-tiny.json")).unwrap()).unwrap();
    let r = Reranker::load(&root.join("tiny/hf/qwen3")).unwrap();
    let docs: Vec<&str> = refs["documents"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    let query = refs["query"].as_str().unwrap();
    for case in refs["cases"].as_array().unwrap() {
        let opts = RerankOptions { instruction: case["instruction"].as_str().map(str::to_string), ..Default::default() };
        let out = r.rerank(query, &docs, &opts).unwrap();
        let want_tokens: usize = case["ids"].as_array().unwrap().iter().map(|ids| ids.as_array().unwrap().len()).sum();
        assert_eq!(out.tokens, want_tokens, "the prompts' token counts");
        for ranked in &out.results {
            let want = case["scores"][ranked.index].as_f64().unwrap() as f32;
            assert!((ranked.relevance_score - want).abs() < 1e-4, "document {}: {} vs {want}", ranked.index, ranked.relevance_score);
        }
        assert!(out.results.windows(2).all(|w| w[0].relevance_score >= w[1].relevance_score));
    }
    let long = "word ".repeat(5000);
    let err = r.rerank(query, &[long.as_str()], &RerankOptions::default()).expect_err("too long");
    assert!(matches!(err, EmbedError::TooLong { index: 0, .. }), "{err}");
    let cut = r.rerank(query, &[long.as_str()], &RerankOptions { truncate: true, ..Default::default() }).unwrap();
    assert_eq!(cut.tokens, r.max_tokens());
}

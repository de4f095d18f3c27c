//! Above its threshold the vector index walks a persisted HNSW graph: it finds what an exact
//! scan finds, covers rows added since it was built, drops deleted ones, and is rebuilt only
//! when the rows have moved on by a fifth.

use std::collections::HashSet;
use std::sync::Arc;

use hearth_kb::{IngestOptions, Kb, KbStore, Mode, NewContent, SearchOptions, TextEmbedder, VectorIndex};

/// Deterministic pseudo-random unit-ish vectors from the text, so the test needs no model.
struct HashEmbedder;

const DIM: usize = 48;

fn vector(text: &str) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (0..DIM)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

impl TextEmbedder for HashEmbedder {
    fn name(&self) -> &str {
        "hash-embedder"
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn max_tokens(&self) -> usize {
        256
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn embed(&self, texts: &[String]) -> hearth_kb::Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| vector(t)).collect())
    }
}

fn items(prefix: &str, n: usize) -> Vec<NewContent> {
    (0..n).map(|i| NewContent { id: Some(format!("{prefix}{i}")), text: format!("{prefix} number {i}"), ..Default::default() }).collect()
}

fn vector_top(kb: &Kb, text: &str, k: usize) -> Vec<String> {
    let hits = kb.search(text, &SearchOptions { mode: Mode::Vector, limit: k, ..Default::default() }, None).unwrap();
    hits.into_iter().map(|h| h.document.id).collect()
}

#[test]
fn hnsw_matches_exact_search_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kb.sqlite");
    let mut kb = Kb::open(&path, Arc::new(HashEmbedder)).unwrap();
    kb.set_ann_threshold(1000);
    kb.add_content(items("item", 3000), &IngestOptions::default()).unwrap();
    assert!(kb.vector_index().unwrap().approximate());
    let graph = path.with_extension("hnsw");
    let built = std::fs::metadata(&graph).expect("the graph is persisted").len();

    // Recall@10 against an exact scan of the same rows.
    let store = hearth_kb::SqliteStore::open(&path).unwrap();
    let exact = VectorIndex::new(0, store.vectors().unwrap(), usize::MAX, None).unwrap();
    assert!(!exact.approximate());
    let ann = kb.vector_index().unwrap();
    let (mut found, mut wanted) = (0, 0);
    for q in 0..100 {
        let query = vector(&format!("query {q}"));
        let truth: HashSet<i64> = exact.search(&query, 10, None).unwrap().into_iter().map(|r| r.0).collect();
        found += ann.search(&query, 10, None).unwrap().iter().filter(|r| truth.contains(&r.0)).count();
        wanted += truth.len();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.95, "recall@10 {recall:.3}");
    assert_eq!(vector_top(&kb, "item number 1234", 1), ["item1234"]);

    // A few additions are scanned beside the graph, which is reused as it is.
    kb.add_content(items("extra", 100), &IngestOptions::default()).unwrap();
    assert_eq!(vector_top(&kb, "extra number 42", 1), ["extra42"]);
    assert!(kb.delete("item1234").unwrap());
    assert!(!vector_top(&kb, "item number 1234", 5).contains(&"item1234".to_string()));
    assert_eq!(std::fs::metadata(&graph).unwrap().len(), built, "not rebuilt for 4% of change");

    // A reopened knowledge base loads the graph instead of building it.
    drop(kb);
    let mut kb = Kb::open(&path, Arc::new(HashEmbedder)).unwrap();
    kb.set_ann_threshold(1000);
    assert_eq!(vector_top(&kb, "extra number 7", 1), ["extra7"]);
    assert_eq!(std::fs::metadata(&graph).unwrap().len(), built);

    // A fifth more rows rebuilds it, covering them all.
    kb.add_content(items("more", 1000), &IngestOptions::default()).unwrap();
    assert_eq!(vector_top(&kb, "more number 500", 1), ["more500"]);
    assert!(std::fs::metadata(&graph).unwrap().len() > built, "rebuilt with the new rows");

    // Filters still apply (falling back to a scan when the graph's neighbours are all filtered out).
    let only = SearchOptions {
        mode: Mode::Vector,
        limit: 3,
        filters: hearth_kb::Filters { documents: vec!["item7".into(), "item8".into()], ..Default::default() },
        ..Default::default()
    };
    let ids: Vec<String> = kb.search("item number 7", &only, None).unwrap().into_iter().map(|h| h.document.id).collect();
    assert_eq!(ids, ["item7", "item8"]);
}

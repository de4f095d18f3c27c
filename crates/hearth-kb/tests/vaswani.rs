//! Retrieval quality on the Vaswani collection (testdata/vaswani: 11,429 abstracts, 93
//! queries): hybrid search must stay within 0.005 nDCG@10 of the figure recorded in
//! `recorded.json`, and never fall more than 0.01 below the better of BM25 and vectors.
//! `hearth kb eval` prints the same figures. Re-ingesting the unchanged corpus must take under
//! 5 % of the first ingest's time and embed nothing.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_kb::eval::{self, Collection};
use hearth_kb::{Kb, LocalEmbedder, Mode, SearchOptions};
use serde_json::Value;

#[test]
fn hybrid_search_holds_its_recorded_quality_on_vaswani() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/vaswani");
    let recorded: Value = serde_json::from_str(&std::fs::read_to_string(data.join("recorded.json")).unwrap()).unwrap();
    let collection = Collection::read(&data).unwrap();
    assert_eq!((collection.documents.len(), collection.topics.len()), (11_429, 93));

    let dir = tempfile::tempdir().unwrap();
    let model = hearth_store::installed_model("minilm").expect("all-MiniLM-L6-v2 is installed (scripts/fetch-test-models.sh)");
    let embedder = LocalEmbedder::load("sentence-transformers/all-MiniLM-L6-v2", &model).unwrap();
    let kb = Kb::open(&dir.path().join("vaswani.sqlite"), Arc::new(embedder)).unwrap();
    let report = collection.ingest(&kb, true).unwrap();
    assert_eq!((report.documents, report.errors.len()), (11_429, 0));
    let again = collection.ingest(&kb, true).unwrap();
    assert_eq!((again.unchanged, again.documents, again.chunks_embedded), (11_429, 0, 0), "{again:?}");
    let fraction = again.seconds / report.seconds;
    eprintln!(
        "ingest {:.1}s ({:.0} documents/s); unchanged again {:.3}s, {:.2}% of it",
        report.seconds,
        report.documents as f64 / report.seconds,
        again.seconds,
        fraction * 100.0
    );
    assert!(
        fraction < 0.05,
        "re-ingesting the unchanged corpus took {:.3}s, {:.1}% of the first ingest's {:.1}s",
        again.seconds,
        fraction * 100.0,
        report.seconds
    );

    let metrics = |mode| eval::evaluate(&kb, &collection.topics, &collection.qrels, &SearchOptions { mode, ..Default::default() }).unwrap();
    let (bm25, vector, hybrid) = (metrics(Mode::Bm25), metrics(Mode::Vector), metrics(Mode::Hybrid));
    for (name, m) in [("bm25", bm25), ("vector", vector), ("hybrid", hybrid)] {
        let was = &recorded[name];
        eprintln!(
            "{name:<6} nDCG@10 {:.4} MAP {:.4} recall@100 {:.4} (recorded {} {} {})",
            m.ndcg_at_10, m.map, m.recall_at_100, was["ndcg_at_10"], was["map"], was["recall_at_100"]
        );
    }
    let floor = recorded["hybrid"]["ndcg_at_10"].as_f64().unwrap() - 0.005;
    assert!(hybrid.ndcg_at_10 >= floor, "hybrid nDCG@10 {:.4} fell below the recorded figure less 0.005 ({floor:.4})", hybrid.ndcg_at_10);
    let better = bm25.ndcg_at_10.max(vector.ndcg_at_10);
    assert!(hybrid.ndcg_at_10 >= better - 0.01, "hybrid {:.4} is more than 0.01 below the better part {better:.4}", hybrid.ndcg_at_10);
}

//! `hearth kb` end to end with the real MiniLM and SmolLM2 (scripts/fetch-test-models.sh):
//! ingest, search, ask with citations, and SIGKILL during ingestion.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_kb::{KbStore, SqliteStore};
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn hearth(db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.arg("kb").arg("--db").arg(db);
    c
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ingest_search_and_ask_with_citations() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("lighthouse.md"), "# Lighthouses\n\nThe Alexandria lighthouse was one of the seven wonders of the ancient world.\n\n## Keepers\n\nThe keeper of the Skerry lighthouse was named Agnes Morrow.\n").unwrap();
    std::fs::write(docs.join("tea.txt"), "Green tea is made from unoxidised leaves.\n\nBlack tea leaves are fully oxidised before drying.").unwrap();
    let db = dir.path().join("kb.sqlite");

    let report: Value = serde_json::from_str(&ok(hearth(&db).args(["ingest", "--json", "--tag", "t"]).arg(&docs))).unwrap();
    assert_eq!(report["report"]["documents"], 2, "{report}");
    let stats: Value = serde_json::from_str(&ok(hearth(&db).args(["stats", "--json"]))).unwrap();
    assert_eq!(stats["documents"], 2);

    let found: Value = serde_json::from_str(&ok(hearth(&db).args(["search", "--json", "--mode", "bm25", "keeper of the lighthouse"]))).unwrap();
    let first = &found["results"][0];
    assert!(first["chunk"]["text"].as_str().unwrap().contains("Agnes Morrow"), "{found}");
    assert_eq!(first["chunk"]["section"], serde_json::json!(["Lighthouses", "Keepers"]));

    let answer: Value = serde_json::from_str(&ok(hearth(&db).args(["ask", "--json", "--max-tokens", "40", "--sources", "3", "Who was the keeper of the Skerry lighthouse?"]))).unwrap();
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty() && answer["unsupported"] == false, "{answer}");
    for c in citations {
        // Every citation points at a retrieved chunk, with its span in the document.
        let (start, end) = (c["span"]["start"].as_u64().unwrap(), c["span"]["end"].as_u64().unwrap());
        assert!(start < end, "{c}");
    }
    assert!(
        citations.iter().any(|c| c["chunk_text"].as_str().unwrap().contains("Agnes Morrow")),
        "the answer {:?} cites {citations:?}",
        answer["answer"]
    );

    let rm = ok(hearth(&db).args(["rm", found["results"][0]["document"]["id"].as_str().unwrap()]));
    assert!(rm.starts_with("removed"));
    let out = hearth(&db).args(["rm", "nope"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no document"));
}

/// SIGKILL `hearth kb ingest` at random moments: the database always opens cleanly with no
/// half-indexed document, and a later run finishes the interrupted job.
#[test]
fn sigkill_during_ingestion_never_leaves_half_indexed_documents() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Every round revises every file, so each run has a full ingest to be killed in.
    let revise = |round: usize| {
        for i in 0..400 {
            let paragraphs: Vec<String> = (0..4).map(|p| format!("Document {i} paragraph {p} talks about topic {} and item {}.", i % 17, (i * 7 + p) % 31)).collect();
            std::fs::write(docs.join(format!("doc{i:03}.md")), format!("# Title {i}\n\nRevision {round}.\n\n{}", paragraphs.join("\n\n"))).unwrap();
        }
    };
    let db = dir.path().join("kb.sqlite");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut kills = 0;
    for round in 0..20 {
        revise(round);
        let mut child = hearth(&db).arg("ingest").arg(&docs).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(100..1500));
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let store = SqliteStore::open(&db).unwrap();
        store.integrity_check().unwrap();
    }
    assert!(kills >= 10, "only {kills} runs were killed mid-ingest");
    let resumed = ok(hearth(&db).arg("resume"));
    let store = SqliteStore::open(&db).unwrap();
    store.integrity_check().unwrap();
    assert!(store.jobs(Some("running")).unwrap().is_empty(), "{resumed}");
    let stats = store.stats().unwrap();
    assert_eq!((stats.documents, stats.embedded_chunks), (400, stats.chunks), "{resumed}");
}

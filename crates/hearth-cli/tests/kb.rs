//! `hearth kb` end to end with the real MiniLM and SmolLM2 (scripts/fetch-test-models.sh):
//! ingest, search, ask with citations, and SIGKILL during ingestion.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_kb::{Filters, KbStore, SqliteStore};
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
    // Multibyte characters before the keeper's chunk make its character and byte spans differ.
    std::fs::write(docs.join("lighthouse.md"), "# Lighthouses\n\nThe Alexandria lighthouse — the Φάρος — was one of the seven wonders of the ancient world.\n\n## Keepers\n\nThe keeper of the Skerry lighthouse was named Agnes Morrow.\n").unwrap();
    std::fs::write(docs.join("tea.txt"), "Green tea is made from unoxidised leaves.\n\nBlack tea leaves are fully oxidised before drying.")
        .unwrap();
    std::fs::write(docs.join("big.txt"), "Elephants never forget. ".repeat(100)).unwrap();
    let db = dir.path().join("kb.sqlite");

    let report: Value =
        serde_json::from_str(&ok(hearth(&db).args(["ingest", "--json", "--tag", "t", "--max-bytes", "1000"]).arg(&docs))).unwrap();
    assert_eq!(report["report"]["documents"], 2, "{report}");
    let errors = report["report"]["errors"].as_array().unwrap();
    assert!(errors.len() == 1 && errors[0]["message"] == "2400 bytes is over the 1000-byte limit", "{report}");
    let stats: Value = serde_json::from_str(&ok(hearth(&db).args(["stats", "--json"]))).unwrap();
    assert_eq!(stats["documents"], 2);

    let search = |args: &[&str]| -> Value {
        serde_json::from_str(&ok(hearth(&db).args(["search", "--json"]).args(args).arg("keeper of the lighthouse"))).unwrap()
    };
    let found = search(&["--mode", "bm25"]);
    let first = &found["results"][0];
    let text = first["chunk"]["text"].as_str().unwrap();
    assert!(text.contains("Agnes Morrow"), "{found}");
    assert_eq!(first["chunk"]["section"], serde_json::json!(["Lighthouses", "Keepers"]));
    let (span, chars) = (&first["chunk"]["span"], &first["chunk"]["char_span"]);
    assert_eq!(span["end"].as_u64().unwrap() - span["start"].as_u64().unwrap(), text.len() as u64, "{first}");
    assert_eq!(chars["end"].as_u64().unwrap() - chars["start"].as_u64().unwrap(), text.chars().count() as u64, "{first}");
    assert!(chars["start"].as_u64() < span["start"].as_u64(), "{first}");
    // Fusion weights: with the vectors' at 0, hybrid ranks as BM25 does.
    let ids = |v: &Value| v["results"].as_array().unwrap().iter().map(|r| r["chunk"]["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&search(&["--mode", "hybrid", "--bm25-weight", "1", "--vector-weight", "0", "--limit", "2"])), ids(&found)[..2]);
    let out = hearth(&db).args(["search", "--vector-weight=-1", "tea"]).output().unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("the vector weight must be a number of at least 0, got -1"),
        "{out:?}"
    );

    let answer: Value = serde_json::from_str(&ok(hearth(&db).args([
        "ask",
        "--json",
        "--max-tokens",
        "40",
        "--sources",
        "3",
        "Who was the keeper of the Skerry lighthouse?",
    ])))
    .unwrap();
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty() && answer["unsupported"] == false, "{answer}");
    for c in citations {
        // Every citation points at a retrieved chunk, with its spans (bytes and characters) in the document.
        let chunk = c["chunk_text"].as_str().unwrap();
        let (start, end) = (c["span"]["start"].as_u64().unwrap(), c["span"]["end"].as_u64().unwrap());
        assert_eq!(end - start, chunk.len() as u64, "{c}");
        let (start, end) = (c["char_span"]["start"].as_u64().unwrap(), c["char_span"]["end"].as_u64().unwrap());
        assert_eq!(end - start, chunk.chars().count() as u64, "{c}");
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
/// half-indexed document, and a later run finishes the interrupted job. Some kills must land
/// mid-batch (some documents at the round's revision, others not yet), or nothing was tested.
#[test]
fn sigkill_during_ingestion_never_leaves_half_indexed_documents() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // Every round revises every file, so each run has a full ingest to be killed in.
    let revise = |round: usize| {
        for i in 0..400 {
            let paragraphs: Vec<String> =
                (0..4).map(|p| format!("Document {i} paragraph {p} talks about topic {} and item {}.", i % 17, (i * 7 + p) % 31)).collect();
            std::fs::write(docs.join(format!("doc{i:03}.md")), format!("# Title {i}\n\nRevision {round}.\n\n{}", paragraphs.join("\n\n")))
                .unwrap();
        }
    };
    let db = dir.path().join("kb.sqlite");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut kills = 0;
    let mut mid_batch = Vec::new();
    for round in 0..ROUNDS {
        revise(round);
        let watcher = SqliteStore::open(&db).unwrap();
        let mut child = hearth(&db).arg("ingest").arg(&docs).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Half the runs die at a random moment, often before their first write (loading the
        // model, extracting); the others as soon as the round's first batch is written.
        let at_first_write = rng.random_bool(0.5);
        let deadline =
            Instant::now() + if at_first_write { Duration::from_secs(120) } else { Duration::from_millis(rng.random_range(100..1500)) };
        while Instant::now() < deadline && child.try_wait().unwrap().is_none() && !(at_first_write && at_revision(&watcher, round) > 0) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed = child.try_wait().unwrap().is_none();
        if killed {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let store = SqliteStore::open(&db).unwrap();
        store.integrity_check().unwrap();
        let revised = at_revision(&store, round);
        if killed && 0 < revised && revised < 400 {
            mid_batch.push((round, revised));
        }
    }
    assert!(kills >= 10, "only {kills} runs were killed mid-ingest");
    assert!(mid_batch.len() >= 3, "only {} kills landed mid-batch (round, documents revised): {mid_batch:?}", mid_batch.len());
    eprintln!("{kills} runs killed, {} mid-batch (round, documents revised): {mid_batch:?}", mid_batch.len());
    let resumed = ok(hearth(&db).arg("resume"));
    let store = SqliteStore::open(&db).unwrap();
    store.integrity_check().unwrap();
    assert!(store.jobs(Some("running")).unwrap().is_empty(), "{resumed}");
    let stats = store.stats().unwrap();
    assert_eq!((stats.documents, stats.embedded_chunks), (400, stats.chunks), "{resumed}");
    assert_eq!(at_revision(&store, ROUNDS - 1), 400, "every document holds the last revision");
}

const ROUNDS: usize = 20;

/// Documents whose text is at `round`'s revision.
fn at_revision(store: &SqliteStore, round: usize) -> usize {
    let revision = format!("Revision {round}.");
    let documents = store.documents(&Filters::default(), 0, 1000).unwrap();
    documents.iter().filter(|d| store.document(&d.id).unwrap().is_some_and(|(_, text)| text.contains(&revision))).count()
}

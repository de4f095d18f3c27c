//! The knowledge base end to end on the real all-MiniLM-L6-v2 (scripts/fetch-test-models.sh
//! installs it): ingestion of every format into a real SQLite file, incremental re-ingest and
//! sync, per-file errors that leave the rest of a batch in place, search in every mode, and
//! ingest jobs (progress, resuming).

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hearth_kb::{
    ExtractOptions, Filters, IngestOptions, JobSpec, Kb, KbError, KbStore, LocalEmbedder, Mode, NewContent, SearchOptions, SqliteStore,
    TextEmbedder,
};
use serde_json::{json, Value};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

fn minilm() -> Arc<dyn TextEmbedder> {
    static MODEL: OnceLock<Arc<LocalEmbedder>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = hearth_store::installed_model("minilm").expect("all-MiniLM-L6-v2 is installed (scripts/fetch-test-models.sh)");
            Arc::new(LocalEmbedder::load(MINILM, &dir).expect("MiniLM loads"))
        })
        .clone()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn corpus(dir: &Path) {
    write(dir, "notes/bridges.md", "# Bridges\n\nThe Harbour Bridge was finished in 1932 after eight years of work.\n\n## Maintenance\n\nPainting the bridge takes a crew of forty people ten years.\n");
    write(
        dir,
        "notes/bread.txt",
        "Sourdough bread rises with wild yeast and lactic acid bacteria.\n\nA starter is fed flour and water every day.",
    );
    write(dir, "web/volcano.html", "<html><head><title>Volcanoes</title></head><body><nav>Home | About</nav><main><h1>Eruptions</h1><p>Magma that reaches the surface is called lava.</p></main><footer>(c) 2026</footer></body></html>");
    write(dir, "data/facts.jsonl", "{\"id\": \"f1\", \"title\": \"Octopus\", \"text\": \"An octopus has three hearts and blue blood.\"}\n{\"id\": \"f2\", \"title\": \"Honey\", \"text\": \"Honey found in ancient tombs was still edible.\"}\n");
}

/// A PDF with a page per entry showing its text, written out by hand (objects, then the table
/// of their offsets). Without `select_font` the pages show text before choosing a font (no
/// `Tf`), which makes the PDF library panic.
fn pdf(pages: &[&str], select_font: bool) -> Vec<u8> {
    let kids: Vec<String> = (0..pages.len()).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {} >>", kids.join(" "), pages.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    for (i, text) in pages.iter().enumerate() {
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        let content = format!("BT {}72 720 Td ({text}) Tj ET", if select_font { "/F1 12 Tf " } else { "" });
        objects.push(format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{body}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).bytes());
    out
}

fn top(kb: &Kb, query: &str, mode: Mode) -> Vec<hearth_kb::Hit> {
    kb.search(query, &SearchOptions { mode, limit: 3, ..Default::default() }, None).unwrap()
}

#[test]
fn ingest_search_and_incremental_sync() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    corpus(&docs);
    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let opts = IngestOptions { tags: vec!["demo".into()], ..Default::default() };
    let first = kb.sync(&docs, &opts, &|_| {}).unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!((first.sources, first.added, first.documents), (4, 4, 5), "{first:?}");
    assert_eq!(first.chunks_embedded, first.chunks);

    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let hits = top(&kb, "When was the Harbour Bridge finished?", mode);
        assert!(hits[0].chunk.text.contains("1932"), "{mode:?}: {:?}", hits[0].chunk.text);
        assert_eq!(hits[0].chunk.section, ["Bridges"]);
        assert_eq!(hits[0].document.tags, ["demo"]);
    }
    // Semantics without shared words: only the vector side can find it.
    let hits = top(&kb, "molten rock flowing out of a mountain", Mode::Vector);
    assert_eq!(hits[0].document.title.as_deref(), Some("Volcanoes"));
    assert!(!hits[0].chunk.text.contains("Home | About"), "navigation is stripped");
    let hits = top(&kb, "octopus hearts", Mode::Hybrid);
    assert_eq!(hits[0].document.id, kb.search("octopus", &SearchOptions::default(), None).unwrap()[0].document.id);
    assert_eq!(hits[0].document.key.as_deref(), Some("f1"));
    let words: Vec<&str> = hits[0].highlights.iter().map(|r| &hits[0].chunk.text[r.clone()]).collect();
    assert_eq!(words, ["octopus", "hearts"]);
    // The chunk's span points into the document's text.
    let (_, text) = kb.document(&hits[0].document.id).unwrap().unwrap();
    assert_eq!(&text[hits[0].chunk.span.clone()], hits[0].chunk.text);

    let filtered =
        SearchOptions { filters: Filters { content_types: vec!["markdown".into()], ..Default::default() }, ..Default::default() };
    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let hits = kb.search("bread yeast", &SearchOptions { mode, ..filtered.clone() }, None).unwrap();
        assert!(hits.iter().all(|h| h.document.content_type == "markdown"), "{mode:?}");
    }
    let unranked = kb.search("bread", &SearchOptions { rerank: true, ..Default::default() }, None);
    assert!(matches!(unranked, Err(KbError::Invalid(_))), "rerank without a reranker is an error");
    let none = SearchOptions { filters: Filters { tags: vec!["other".into()], ..Default::default() }, ..Default::default() };
    assert!(kb.search("bread", &none, None).unwrap().is_empty());

    // Unchanged: nothing embedded or written.
    let again = kb.sync(&docs, &opts, &|_| {}).unwrap();
    assert_eq!((again.unchanged, again.chunks_embedded, again.documents), (4, 0, 0), "{again:?}");

    // One changed paragraph re-embeds only its chunk; a deleted file disappears.
    write(&docs, "notes/bridges.md", "# Bridges\n\nThe Harbour Bridge was finished in 1932 after eight years of work.\n\n## Maintenance\n\nPainting the bridge is now done by robots.\n");
    std::fs::remove_file(docs.join("notes/bread.txt")).unwrap();
    let changed = kb.sync(&docs, &opts, &|_| {}).unwrap();
    assert_eq!((changed.updated, changed.deleted, changed.unchanged), (1, 1, 2), "{changed:?}");
    assert_eq!((changed.chunks_embedded, changed.chunks_reused), (1, 1), "{changed:?}");
    assert!(kb.search("sourdough", &SearchOptions::default(), None).unwrap().iter().all(|h| !h.chunk.text.contains("Sourdough")));
    assert!(top(&kb, "robots painting", Mode::Bm25)[0].chunk.text.contains("robots"));
    let stats = kb.stats().unwrap();
    assert_eq!((stats.sources, stats.documents, stats.embedded_chunks), (3, 4, stats.chunks));
    SqliteStore::open(&dir.path().join("kb.sqlite")).unwrap().integrity_check().unwrap();
}

#[test]
fn posted_content_is_replaced_by_id_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let item = |text: &str| NewContent {
        id: Some("doc-1".into()),
        title: Some("Posted".into()),
        content_type: Some("markdown".into()),
        text: text.into(),
        tags: vec!["api".into()],
        ..Default::default()
    };
    let r = kb.add_content(vec![item("# Intro\n\nZebras have black and white stripes.")], &Default::default()).unwrap();
    assert_eq!((r.added, r.document_ids.as_slice()), (1, ["doc-1".to_string()].as_slice()));
    let r = kb.add_content(vec![item("# Intro\n\nGiraffes have long necks.")], &Default::default()).unwrap();
    assert_eq!((r.updated, r.documents), (1, 1));
    assert_eq!(kb.stats().unwrap().documents, 1);
    assert_eq!(top(&kb, "giraffe neck", Mode::Hybrid)[0].document.id, "doc-1");
    assert!(matches!(kb.add_content(vec![item("")], &Default::default()), Err(KbError::Invalid(_))));
    assert!(kb.delete("doc-1").unwrap());
    assert!(!kb.delete("doc-1").unwrap());
    assert_eq!(kb.stats().unwrap().documents, 0);
}

#[test]
fn broken_files_are_reported_and_the_rest_of_the_batch_lands() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs, "good.md", "# Good\n\nThis file is fine and mentions kangaroos.");
    std::fs::write(docs.join("bad-utf8.txt"), b"valid start \xff\xfe then garbage").unwrap();
    std::fs::write(docs.join("garbage.pdf"), b"%PDF-1.7\nthis is not really a pdf").unwrap();
    std::fs::write(docs.join("not-a-zip.docx"), b"plain text pretending to be a docx").unwrap();
    std::fs::write(docs.join("broken.json"), b"{\"text\": \"unterminated").unwrap();
    let big = std::fs::File::create(docs.join("huge.txt")).unwrap();
    big.set_len(200 << 20).unwrap();
    let mut bomb = zip::ZipWriter::new(std::fs::File::create(docs.join("bomb.docx")).unwrap());
    bomb.start_file("word/document.xml", zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated))
        .unwrap();
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..300 {
        bomb.write_all(&zeros).unwrap();
    }
    bomb.finish().unwrap();

    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let opts = IngestOptions { extract: ExtractOptions { max_bytes: 64 << 20, ..Default::default() }, ..Default::default() };
    let report = kb.ingest_paths(std::slice::from_ref(&docs), &opts, &|_| {}).unwrap();
    let failed: Vec<String> =
        report.errors.iter().map(|e| Path::new(&e.source).file_name().unwrap().to_string_lossy().into_owned()).collect();
    let mut expected = ["bad-utf8.txt", "bomb.docx", "broken.json", "garbage.pdf", "huge.txt", "not-a-zip.docx"];
    expected.sort();
    assert_eq!(failed, expected, "{:#?}", report.errors);
    for e in &report.errors {
        assert!(!e.message.is_empty() && !e.message.contains("panicked"), "{e:?}");
    }
    let message = |name: &str| report.errors.iter().find(|e| e.source.ends_with(name)).unwrap().message.to_lowercase();
    assert!(message("huge.txt").contains("limit"), "{}", message("huge.txt"));
    assert!(message("bad-utf8.txt").contains("utf-8"), "{}", message("bad-utf8.txt"));
    assert!(message("bomb.docx").contains("unpack"), "{}", message("bomb.docx"));
    assert_eq!((report.added, report.documents), (1, 1), "{report:?}");
    assert!(top(&kb, "kangaroos", Mode::Bm25)[0].chunk.text.contains("kangaroos"));
}

#[test]
fn a_collection_refuses_another_embedding_model() {
    struct Other;
    impl TextEmbedder for Other {
        fn name(&self) -> &str {
            "other-model"
        }
        fn dimension(&self) -> usize {
            8
        }
        fn max_tokens(&self) -> usize {
            128
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn embed(&self, texts: &[String]) -> hearth_kb::Result<Vec<Vec<f32>>> {
            Ok(texts.iter().map(|_| vec![1.0; 8]).collect())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kb.sqlite");
    drop(Kb::open(&path, minilm()).unwrap());
    let err = Kb::open(&path, Arc::new(Other)).err().expect("refused");
    assert!(matches!(err, KbError::EmbeddingModelMismatch { .. }), "{err}");
    assert!(err.to_string().contains(MINILM), "{err}");
}

#[test]
fn identical_chunks_keep_their_vectors_and_ids_move_between_sources() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    let record = |id: &str| format!("{{\"id\": \"{id}\", \"title\": \"Same\", \"text\": \"The very same sentence.\"}}\n");
    write(&docs, "twins.jsonl", &(record("a") + &record("b")));
    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    kb.ingest_paths(std::slice::from_ref(&docs), &IngestOptions::default(), &|_| {}).unwrap();
    write(&docs, "twins.jsonl", &(record("a") + &record("b") + &record("c")));
    let again = kb.ingest_paths(std::slice::from_ref(&docs), &IngestOptions::default(), &|_| {}).unwrap();
    assert_eq!((again.updated, again.chunks_embedded), (1, 0), "{again:?}");
    let stats = kb.stats().unwrap();
    assert_eq!((stats.documents, stats.embedded_chunks), (3, stats.chunks));
    let third = kb.ingest_paths(std::slice::from_ref(&docs), &IngestOptions::default(), &|_| {}).unwrap();
    assert_eq!(third.unchanged, 1, "nothing left to embed: {third:?}");

    // A posted id written again from another source moves there instead of failing.
    let post = |text: &str, url: Option<&str>| NewContent {
        id: Some("faq".into()),
        text: text.into(),
        source: url.map(str::to_string),
        ..Default::default()
    };
    kb.add_content(vec![post("First answer.", None)], &Default::default()).unwrap();
    let moved = kb.add_content(vec![post("Second answer.", Some("https://example.com/faq"))], &Default::default()).unwrap();
    assert_eq!(moved.document_ids, ["faq"]);
    let (doc, text) = kb.document("faq").unwrap().unwrap();
    assert_eq!((doc.source.as_str(), text.as_str()), ("https://example.com/faq", "Second answer."));
    SqliteStore::open(&dir.path().join("kb.sqlite")).unwrap().integrity_check().unwrap();
}

#[test]
fn a_pdf_that_crashes_the_parser_is_reported_and_the_rest_of_the_batch_lands() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs, "notes.md", "# Notes\n\nWombats leave cube-shaped droppings.");
    std::fs::write(docs.join("crash.pdf"), pdf(&["Text shown before any font is chosen."], false)).unwrap();
    std::fs::write(docs.join("report.pdf"), pdf(&["Penguins huddle against the cold.", "Emperor penguins breed in winter."], true))
        .unwrap();

    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let report = kb.ingest_paths(std::slice::from_ref(&docs), &IngestOptions::default(), &|_| {}).unwrap();
    assert_eq!(report.errors.len(), 1, "{report:?}");
    let error = &report.errors[0];
    assert!(error.source.ends_with("crash.pdf") && error.message.starts_with("PDF parser failed: it crashed: "), "{error:?}");
    assert_eq!((report.added, report.documents), (2, 2), "{report:?}");
    let hit = &top(&kb, "emperor penguins breed", Mode::Bm25)[0];
    assert_eq!((hit.chunk.page, hit.chunk.text.as_str()), (Some(2), "Emperor penguins breed in winter."));
    assert!(top(&kb, "wombats", Mode::Bm25)[0].chunk.text.contains("cube-shaped"));

    // The parser's limits come from the ingest options.
    let many_pages: Vec<String> = (0..300).map(|i| format!("Page {i} of a long report.")).collect();
    std::fs::write(docs.join("long.pdf"), pdf(&many_pages.iter().map(String::as_str).collect::<Vec<_>>(), true)).unwrap();
    let impatient = IngestOptions {
        extract: ExtractOptions { pdf_timeout: Duration::from_nanos(1), ..Default::default() },
        include: vec!["long.pdf".into()],
        ..Default::default()
    };
    let report = kb.ingest_paths(std::slice::from_ref(&docs), &impatient, &|_| {}).unwrap();
    assert_eq!(report.errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["PDF parsing timed out after 1ns"], "{report:?}");
}

#[test]
fn character_spans_count_unicode_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let text = "# Cuisine\n\nLa crème brûlée est un dessert français.\n\n## 東京\n\n東京の寿司 is sushi from Tōkyō, served with wasabi.";
    kb.add_content(
        vec![NewContent { id: Some("menu".into()), content_type: Some("markdown".into()), text: text.into(), ..Default::default() }],
        &Default::default(),
    )
    .unwrap();
    let (_, document) = kb.document("menu").unwrap().unwrap();
    let chars: Vec<char> = document.chars().collect();
    for query in ["crème brûlée dessert", "sushi wasabi"] {
        let hit = &top(&kb, query, Mode::Bm25)[0];
        assert_eq!(&document[hit.chunk.span.clone()], hit.chunk.text);
        assert_eq!(chars[hit.chunk.char_span.clone()].iter().collect::<String>(), hit.chunk.text, "{query}");
        let chunk_chars: Vec<char> = hit.chunk.text.chars().collect();
        let words: Vec<String> = hit.char_highlights.iter().map(|r| chunk_chars[r.clone()].iter().collect()).collect();
        let by_bytes: Vec<&str> = hit.highlights.iter().map(|r| &hit.chunk.text[r.clone()]).collect();
        assert_eq!(words, by_bytes, "{query}");
        assert!(!words.is_empty(), "{query}");
    }
    let sushi = &top(&kb, "sushi", Mode::Bm25)[0];
    assert!(sushi.chunk.span.start > sushi.chunk.char_span.start, "the text before it has multibyte characters");
}

fn ingest_spec(docs: &Path) -> JobSpec {
    JobSpec { paths: vec![docs.to_path_buf()], sync: false, options: IngestOptions::default() }
}

#[test]
fn a_job_left_by_an_earlier_process_with_this_pid_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    write(&docs, "a.txt", "Narwhal tusks are teeth.");
    write(&docs, "b.txt", "Axolotls regrow their limbs.");
    let kb = Kb::open(&dir.path().join("kb.sqlite"), minilm()).unwrap();
    let spec = ingest_spec(&docs);
    // A job this process has recorded is its own to run: not taken over.
    let own = kb.create_job(&spec).unwrap();
    // A restarted container's process gets the pid its predecessor had (PID 1): a job that
    // one left running carries the same pid, but another owner.
    let left = json!({"pid": std::process::id(), "owner": "the process before the restart"});
    let orphan = kb.store().create_job("ingest", &serde_json::to_value(&spec).unwrap(), &left).unwrap();
    let resumed = kb.resume_jobs(&|_| {}).unwrap();
    assert_eq!(resumed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [orphan]);
    assert_eq!((resumed[0].1.added, resumed[0].1.errors.len()), (2, 0), "{:?}", resumed[0].1);
    let state = |id| kb.store().job(id).unwrap().unwrap().state;
    assert_eq!((state(orphan), state(own)), ("done".to_string(), "running".to_string()));
    assert!(kb.resume_jobs(&|_| {}).unwrap().is_empty(), "nothing is left to resume");
}

#[test]
fn a_running_job_reports_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    for i in 0..5 {
        write(&docs, &format!("{i}.txt"), &format!("Fact number {i} about lighthouses."));
    }
    let path = dir.path().join("kb.sqlite");
    let kb = Kb::open(&path, minilm()).unwrap();
    // Read through a connection of its own, as another process (the server's job route) would.
    let watcher = SqliteStore::open(&path).unwrap();
    let spec = ingest_spec(&docs);
    let id = kb.create_job(&spec).unwrap();
    let seen = RefCell::new(Vec::new());
    kb.execute(id, &spec, &|p| {
        // Progress is saved about once a second: the first source "takes" longer than that,
        // so the record shows it while the others run.
        if p.done == 1 {
            std::thread::sleep(Duration::from_millis(1100));
        }
        let job = watcher.job(id).unwrap().unwrap();
        seen.borrow_mut().push((job.state, job.report["progress"].clone()));
    })
    .unwrap();
    let seen = seen.into_inner();
    // Chunks are counted as they are written, in batches: none yet after the first source.
    let progress = |done: u64, chunks: u64| json!({"done": done, "total": 5, "chunks": chunks});
    assert_eq!(seen[1..], vec![("running".to_string(), progress(1, 0)); 4], "{seen:?}");
    let job = watcher.job(id).unwrap().unwrap();
    assert_eq!(
        (job.state.as_str(), &job.report["progress"], &job.report["documents"]),
        ("done", &progress(5, 5), &Value::from(5)),
        "{job:?}"
    );
}

//! The store against a fake Hub on loopback serving the real SmolLM2 GGUF and MiniLM files.

use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hearth_store::fake_hub::{minilm_repo, smollm2_gguf_repo, FakeFile, FakeHub, FakeRepo, Fault};
use hearth_store::{HubConfig, PullEvent, PullRequest, Store, StoreError};

/// The real repos, hashed once per test process.
fn real_repos() -> Vec<FakeRepo> {
    static REPOS: OnceLock<Vec<FakeRepo>> = OnceLock::new();
    REPOS
        .get_or_init(|| {
            vec![smollm2_gguf_repo().expect("run scripts/fetch-test-models.sh"), minilm_repo().expect("run scripts/fetch-test-models.sh")]
        })
        .clone()
}

fn config(hub: &FakeHub) -> HubConfig {
    HubConfig { endpoint: hub.endpoint(), token: None, offline: false, timeout: Duration::from_secs(10), attempts: 3, parallel: 4 }
}

fn store(home: &Path, config: HubConfig) -> Store {
    Store::open(home, config).unwrap().with_hf_cache(None)
}

/// Pulls and returns the events it reported.
fn pull(store: &Store, spec: &str) -> (Result<hearth_store::ModelRecord, StoreError>, Vec<PullEvent>) {
    let events = Mutex::new(Vec::new());
    let result = store.pull(&PullRequest::new(spec).unwrap(), &|e| events.lock().unwrap().push(e));
    (result, events.into_inner().unwrap())
}

/// The files a pull with these globs fetches, into a fresh home.
fn pulled_files(hub: &FakeHub, spec: &str, include: &[&str], exclude: &[&str]) -> Result<Vec<String>, StoreError> {
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(hub));
    let mut req = PullRequest::new(spec).unwrap();
    req.include = include.iter().map(|g| g.to_string()).collect();
    req.exclude = exclude.iter().map(|g| g.to_string()).collect();
    let record = store.pull(&req, &|_| {})?;
    Ok(store.files(&record).unwrap().into_iter().map(|(file, _)| file).collect())
}

/// The cache folder of `repo` in a store's home.
fn repo_dir(home: &Path, repo: &str) -> std::path::PathBuf {
    home.join("hub").join(hearth_store::name::repo_folder(repo))
}

fn assert_clean(store: &Store) {
    let report = store.verify().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SMOLLM2: &str = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1";

#[test]
fn pulls_the_real_models_then_serves_them_from_the_cache() {
    let hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));

    let (gguf, events) = pull(&store, "smollm2");
    let gguf = gguf.unwrap();
    assert_eq!(gguf.name, SMOLLM2);
    assert_eq!(gguf.format, "gguf");
    assert_eq!(gguf.quantization.as_deref(), Some("Q4_1"));
    assert_eq!(gguf.architecture.as_deref(), Some("llama"));
    assert_eq!(gguf.context_length, Some(8192));
    assert!(gguf.path.is_file() && gguf.path.extension().unwrap() == "gguf", "{}", gguf.path.display());
    assert!(gguf.parameter_count.unwrap() > 100_000_000);
    assert!(matches!(events.first(), Some(PullEvent::Resolved { files: 1, .. })), "only the chosen GGUF: {events:?}");
    assert!(matches!(events.last(), Some(PullEvent::Done { offline: false, .. })));
    assert!(events.iter().any(|e| matches!(e, PullEvent::FileVerified { .. })));

    let (minilm, _) = pull(&store, MINILM);
    let minilm = minilm.unwrap();
    assert_eq!(minilm.format, "safetensors");
    assert_eq!(minilm.architecture.as_deref(), Some("BertModel"));
    assert_eq!(minilm.embedding_dim, Some(384));
    assert_eq!((minilm.embedding_max_tokens, minilm.embedding_pooling.as_deref()), (Some(256), Some("mean")));
    // The header's element count, including BERT's 512 position ids.
    assert_eq!(minilm.parameter_count, Some(22_713_728));
    assert!(minilm.path.join("1_Pooling/config.json").is_file());
    let original = hearth_store::fake_hub::test_models_dir().join("all-MiniLM-L6-v2/model.safetensors");
    assert_eq!(std::fs::read(minilm.path.join("model.safetensors")).unwrap(), std::fs::read(original).unwrap());
    assert_clean(&store);

    // Later uses: resolved locally; a second pull downloads nothing.
    assert_eq!(store.resolve("minilm").unwrap().unwrap().path, minilm.path);
    assert_eq!(store.resolve("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF").unwrap().unwrap().path, gguf.path);
    let before = hub.requests();
    let (again, events) = pull(&store, MINILM);
    again.unwrap();
    assert_eq!(hub.requests(), before + 1, "only the revision lookup");
    assert!(events.iter().all(|e| !matches!(e, PullEvent::FileStarted { .. })));
    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names, [SMOLLM2, MINILM]);
}

#[test]
fn a_cut_connection_resumes_and_the_hash_is_right() {
    let hub = FakeHub::start(real_repos());
    hub.inject("model.safetensors", Fault::CutAfter(45_000_000), 2);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let record = pull(&store, MINILM).0.unwrap();
    assert_eq!(hub.range_requests(), 2, "each cut resumed with a range request");
    assert!(record.path.join("model.safetensors").is_file());
    assert_clean(&store);
}

#[test]
fn a_partial_left_by_a_killed_pull_is_resumed() {
    let repo = minilm_repo().unwrap();
    let weights = repo.file("model.safetensors").unwrap().clone();
    let hub = FakeHub::start(vec![repo]);
    let home = tempfile::tempdir().unwrap();
    let blobs = home.path().join("hub/models--sentence-transformers--all-MiniLM-L6-v2/blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let original = std::fs::read(hearth_store::fake_hub::test_models_dir().join("all-MiniLM-L6-v2/model.safetensors")).unwrap();
    std::fs::write(blobs.join(format!("{}.partial", weights.sha256)), &original[..30_000_000]).unwrap();
    let store = store(home.path(), config(&hub));
    let (record, events) = pull(&store, MINILM);
    record.unwrap();
    assert_eq!(hub.range_requests(), 1);
    let resumed_at = events.iter().find_map(|e| match e {
        PullEvent::Progress { file, done, .. } if file == "model.safetensors" => Some(*done),
        _ => None,
    });
    assert_eq!(resumed_at, Some(30_000_000));
    assert_clean(&store);
}

#[test]
fn a_corrupted_byte_fails_verification_and_nothing_is_kept() {
    let hub = FakeHub::start(real_repos());
    hub.inject("model.safetensors", Fault::CorruptByte(1_000_000), 1);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let (result, events) = pull(&store, MINILM);
    let err = result.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors: verification failed"), "{err}");
    assert!(matches!(events.last(), Some(PullEvent::Failed { .. })));
    let blobs = home.path().join("hub/models--sentence-transformers--all-MiniLM-L6-v2/blobs");
    let weights = minilm_repo().unwrap().file("model.safetensors").unwrap().sha256.clone();
    assert!(!blobs.join(&weights).exists() && !blobs.join(format!("{weights}.partial")).exists());
    assert!(store.resolve(MINILM).unwrap().is_none(), "an unverified model must not look complete");
    assert_clean(&store);
    // The next pull (the fault was one-off) completes.
    pull(&store, MINILM).0.unwrap();
    assert_clean(&store);
}

fn tiny_repo(id: &str) -> FakeRepo {
    FakeRepo::new(
        id,
        vec![
            FakeFile::in_memory("config.json", br#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":64}"#),
            FakeFile::in_memory("model.safetensors", &[7u8; 4096]),
        ],
    )
}

#[test]
fn hub_errors_are_clear() {
    let hub = FakeHub::start(vec![tiny_repo("org/open"), tiny_repo("org/gated").gated()]);
    hub.set_token("secret");
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));

    let e = pull(&store, "org/gated").0.unwrap_err().to_string();
    assert!(e.contains("access denied (401)") && e.contains("HF_TOKEN"), "{e}");
    let with_token = self::store(home.path(), HubConfig { token: Some("secret".into()), ..config(&hub) });
    pull(&with_token, "org/gated").0.unwrap();

    let e = pull(&store, "org/missing").0.unwrap_err().to_string();
    assert!(e.contains("not found on the Hub (404)"), "{e}");
    let e = pull(&store, "org/open@v9").0.unwrap_err().to_string();
    assert!(e.contains("404"), "{e}");

    hub.inject("/api/models/org/open", Fault::Status(500), 3);
    let e = pull(&store, "org/open").0.unwrap_err().to_string();
    assert!(e.contains("answered 500"), "{e}");
    // Transient errors are retried: one 500 then success.
    hub.inject("model.safetensors", Fault::Status(503), 1);
    pull(&store, "org/open").0.unwrap();
}

/// The error of a pull from a Hub that stalls `path` with `fault`, under a 1 s timeout; it
/// must come well before the stall ends.
fn stalled_pull_error(path: &str, fault: Fault) -> String {
    let hub = FakeHub::start(vec![tiny_repo("org/slow")]);
    hub.inject(path, fault, 2);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), HubConfig { timeout: Duration::from_secs(1), attempts: 2, ..config(&hub) });
    let started = std::time::Instant::now();
    let e = pull(&store, "org/slow").0.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    e
}

#[test]
fn a_stalled_hub_times_out_with_a_clear_message() {
    let e = stalled_pull_error("/api/models/org/slow", Fault::Stall(Duration::from_secs(5)));
    assert!(e.contains("timed out after 1s"), "{e}");
}

#[test]
fn a_stall_in_the_middle_of_a_file_times_out_with_a_clear_message() {
    let e = stalled_pull_error("model.safetensors", Fault::StallAfter(1000, Duration::from_secs(5)));
    assert!(e.contains("model.safetensors: timed out after 1s without data from the Hub"), "{e}");
}

#[test]
fn offline_uses_a_complete_cache_without_the_network() {
    let mut hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let online = store(home.path(), config(&hub));
    let pulled = pull(&online, MINILM).0.unwrap();
    hub.stop();
    let offline = store(home.path(), HubConfig { offline: true, ..config(&hub) });
    let (record, events) = pull(&offline, MINILM);
    assert_eq!(record.unwrap().path, pulled.path);
    assert!(matches!(events.as_slice(), [PullEvent::Done { offline: true, .. }]));
    assert_eq!(offline.resolve("minilm").unwrap().unwrap().path, pulled.path);
    let e = pull(&offline, "smollm2").0.unwrap_err().to_string();
    assert!(e.contains("offline") && e.contains("not completely in the cache"), "{e}");
    // With the Hub gone, an online pull fails clearly too.
    let e = pull(&online, "smollm2").0.unwrap_err().to_string();
    assert!(e.contains("network error"), "{e}");
}

#[test]
fn malformed_names_and_traversal_are_rejected() {
    for bad in ["../etc/passwd", "/abs/path", "org/../x", "a/b/c", "org/name@../../x", "org/na me", ""] {
        let e = PullRequest::new(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid"), "{bad:?}: {e}");
    }
    let evil = FakeRepo::new("org/evil", vec![FakeFile::in_memory("../../outside.json", b"{}")]);
    let hub = FakeHub::start(vec![evil]);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let e = pull(&store, "org/evil").0.unwrap_err().to_string();
    assert!(e.contains("invalid file name \"../../outside.json\""), "{e}");
    assert!(!home.path().join("outside.json").exists());
}

#[test]
fn verify_reports_corrupt_blobs_and_symlinks_leaving_the_cache() {
    let hub = FakeHub::start(vec![tiny_repo("org/tiny")]);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let record = pull(&store, "org/tiny").0.unwrap();
    assert_clean(&store);

    let config_link = record.path.join("config.json");
    let blob = std::fs::canonicalize(&config_link).unwrap();
    std::fs::remove_file(&config_link).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &config_link).unwrap();
    let weights = std::fs::canonicalize(record.path.join("model.safetensors")).unwrap();
    std::fs::write(&weights, [8u8; 4096]).unwrap();
    let problems = store.verify().unwrap().problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("unexpected symlink to /etc/hostname")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("corrupt")), "{problems:?}");
    assert!(blob.exists());

    // Removing the model drops the bad blob; pulling again restores it.
    store.remove("org/tiny", false).unwrap();
    assert!(!weights.exists());
    pull(&store, "org/tiny").0.unwrap();
    assert_clean(&store);
}

#[test]
fn concurrent_pulls_of_one_model_share_the_work() {
    let hub = FakeHub::start(real_repos());
    // ~2 s for MiniLM's weights: the first pull still holds the lock when the second starts.
    hub.throttle(45_000_000);
    let home = tempfile::tempdir().unwrap();
    let (resolved, first_resolved) = std::sync::mpsc::channel();
    let ((first, first_events), (second, second_events)) = std::thread::scope(|s| {
        let first = s.spawn(|| {
            let events = Mutex::new(Vec::new());
            let result = store(home.path(), config(&hub)).pull(&PullRequest::new(MINILM).unwrap(), &|e| {
                // The lock is taken before the Hub is asked, so it is held from here.
                if matches!(e, PullEvent::Resolved { .. }) {
                    resolved.send(()).unwrap();
                }
                events.lock().unwrap().push(e)
            });
            (result, events.into_inner().unwrap())
        });
        first_resolved.recv_timeout(Duration::from_secs(30)).unwrap();
        let second = pull(&store(home.path(), config(&hub)), MINILM);
        (first.join().unwrap(), second)
    });
    first.unwrap();
    second.unwrap();
    assert!(!first_events.iter().any(|e| matches!(e, PullEvent::Waiting { .. })), "{first_events:?}");
    assert!(matches!(second_events.first(), Some(PullEvent::Waiting { .. })), "the second pull waits for the first: {second_events:?}");
    assert!(second_events.iter().all(|e| !matches!(e, PullEvent::FileStarted { .. })), "then finds every file cached: {second_events:?}");
    assert_clean(&store(home.path(), config(&hub)));
}

#[test]
fn rm_refuses_a_model_a_server_holds_and_prune_cleans_up() {
    let hub = FakeHub::start(vec![tiny_repo("org/tiny"), tiny_repo("org/other")]);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let record = pull(&store, "org/tiny").0.unwrap();
    pull(&store, "org/other").0.unwrap();

    // Looking a model up does not mark it used; a server holding it (loading it) does.
    let last_used = || store.get("org/tiny").unwrap().unwrap().last_used_at;
    store.resolve("org/tiny").unwrap().unwrap();
    assert_eq!(last_used(), None);
    let guard = store.hold(&record).unwrap();
    assert!(last_used().is_some());
    let e = store.remove("org/tiny", false).unwrap_err();
    assert!(matches!(e, StoreError::InUse(_)), "{e}");
    drop(guard);
    assert_eq!(store.remove("org/tiny", false).unwrap(), ["org/tiny"]);
    assert!(store.resolve("org/tiny").unwrap().is_none());
    assert!(!record.path.exists());
    assert!(matches!(store.remove("org/tiny", false), Err(StoreError::NotFound(_))));

    let blobs = home.path().join("hub/models--org--other/blobs");
    std::fs::write(blobs.join(format!("{}.partial", "ab".repeat(32))), b"half").unwrap();
    std::fs::write(blobs.join("cd".repeat(32)), b"orphan").unwrap();
    let report = store.prune().unwrap();
    assert_eq!(report.removed.len(), 2, "{:?}", report.removed);
    assert_eq!(report.freed_bytes, 10);
    assert!(store.resolve("org/other").unwrap().is_some());
    assert_clean(&store);
}

/// A GGUF repo with two quantisations of one model.
fn multi_gguf_repo() -> FakeRepo {
    FakeRepo::new(
        "org/multi-GGUF",
        vec![
            FakeFile::in_memory("README.md", b"# GGUF\n"),
            FakeFile::in_memory("m-Q4_K_M.gguf", b"GGUF-a"),
            FakeFile::in_memory("m-Q8_0.gguf", b"GGUF-b"),
        ],
    )
}

#[test]
fn gguf_repos_need_a_choice_of_quantisation() {
    let hub = FakeHub::start(vec![multi_gguf_repo()]);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let e = pull(&store, "org/multi-GGUF").0.unwrap_err().to_string();
    assert!(e.contains("several GGUF files") && e.contains("m-Q4_K_M.gguf, m-Q8_0.gguf"), "{e}");
    let e = pull(&store, "org/multi-GGUF:Q2_K").0.unwrap_err().to_string();
    assert!(e.contains("no GGUF file"), "{e}");
    let r = pull(&store, "org/multi-GGUF:q8_0").0.unwrap();
    assert!(r.path.ends_with("m-Q8_0.gguf"), "{}", r.path.display());
}

#[test]
fn an_existing_hugging_face_cache_is_used_in_place() {
    let hub = FakeHub::start(vec![tiny_repo("org/tiny")]);
    let hf = tempfile::tempdir().unwrap();
    // Our layout is huggingface_hub's: a store's hub/ directory is a valid HF cache.
    let record = pull(&store(hf.path(), config(&hub)), "org/tiny").0.unwrap();
    let home = tempfile::tempdir().unwrap();
    let other = Store::open(home.path(), config(&hub)).unwrap().with_hf_cache(Some(hf.path().join("hub")));
    let found = other.resolve("org/tiny").unwrap().unwrap();
    assert_eq!(found.path, record.path);
    assert!(found.record.is_none());

    // A snapshot without its weights is an interrupted download, not a model...
    let weights = record.path.join("model.safetensors");
    let weights_target = std::fs::read_link(&weights).unwrap();
    std::fs::remove_file(&weights).unwrap();
    assert!(other.resolve("org/tiny").unwrap().is_none());
    std::os::unix::fs::symlink(&weights_target, &weights).unwrap();
    // ... and so is a sharded one missing a shard its index names.
    let index = record.path.join("model.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map":{"a":"model.safetensors","b":"model-00002-of-00002.safetensors"}}"#).unwrap();
    assert!(other.resolve("org/tiny").unwrap().is_none());
    std::fs::remove_file(&index).unwrap();
    assert!(other.resolve("org/tiny").unwrap().is_some());

    // A link leaving the Hugging Face cache is refused.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let config_link = record.path.join("config.json");
    std::fs::remove_file(&config_link).unwrap();
    std::os::unix::fs::symlink(outside.path(), &config_link).unwrap();
    let e = other.resolve("org/tiny").unwrap_err().to_string();
    assert!(e.contains("config.json: links to") && e.contains("outside the Hugging Face cache"), "{e}");
}

/// A Hub serving `org/tiny`, and the hash naming its weights' blob.
fn tiny_hub_and_weights_hash() -> (FakeHub, String) {
    let repo = tiny_repo("org/tiny");
    let weights = repo.file("model.safetensors").unwrap().hub_hash().to_string();
    (FakeHub::start(vec![repo]), weights)
}

#[test]
fn a_symlink_planted_as_a_partial_download_is_refused() {
    let (hub, weights) = tiny_hub_and_weights_hash();
    let home = tempfile::tempdir().unwrap();
    let blobs = repo_dir(home.path(), "org/tiny").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), b"not the cache's").unwrap();
    let partial = blobs.join(format!("{weights}.partial"));
    std::os::unix::fs::symlink(outside.path(), &partial).unwrap();

    let store = store(home.path(), config(&hub));
    let e = pull(&store, "org/tiny").0.unwrap_err().to_string();
    assert!(e.contains(&format!("{}: is a symlink", partial.display())), "{e}");
    assert_eq!(std::fs::read(outside.path()).unwrap(), b"not the cache's");
    assert!(store.resolve("org/tiny").unwrap().is_none());
    std::fs::remove_file(&partial).unwrap();
    pull(&store, "org/tiny").0.unwrap();
    assert_clean(&store);
}

#[test]
fn a_blob_that_is_a_symlink_is_neither_cached_nor_resolved() {
    let (hub, weights) = tiny_hub_and_weights_hash();
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    pull(&store, "org/tiny").0.unwrap();

    // The right content, but outside the cache behind a link.
    let blob = repo_dir(home.path(), "org/tiny").join("blobs").join(&weights);
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&blob, outside.path()).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(outside.path(), &blob).unwrap();

    let e = store.resolve("org/tiny").unwrap_err().to_string();
    assert!(e.contains(&format!("{}: missing, not a regular file", blob.display())), "{e}");
    let e = pull(&store, "org/tiny").0.unwrap_err().to_string();
    assert!(e.contains(&format!("{}: is a symlink", blob.display())), "{e}");
}

#[test]
fn resolve_refuses_a_snapshot_link_pointed_elsewhere() {
    let hub = FakeHub::start(vec![tiny_repo("org/tiny")]);
    let home = tempfile::tempdir().unwrap();
    let store = store(home.path(), config(&hub));
    let record = pull(&store, "org/tiny").0.unwrap();
    let config_link = record.path.join("config.json");
    std::fs::remove_file(&config_link).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &config_link).unwrap();

    let e = store.resolve("org/tiny").unwrap_err().to_string();
    assert!(e.contains(&format!("{}: unexpected symlink to /etc/hostname", config_link.display())), "{e}");
    let offline = self::store(home.path(), HubConfig { offline: true, ..config(&hub) });
    let e = pull(&offline, "org/tiny").0.unwrap_err().to_string();
    assert!(e.contains("unexpected symlink"), "{e}");
    // An online pull puts the link back.
    pull(&store, "org/tiny").0.unwrap();
    assert_eq!(store.resolve("org/tiny").unwrap().unwrap().path, record.path);
}

/// A repo with ONNX exports and no safetensors, so nothing is left out by default.
fn onnx_repo() -> FakeRepo {
    FakeRepo::new(
        "org/onnx-mix",
        vec![
            FakeFile::in_memory("README.md", b"# onnx\n"),
            FakeFile::in_memory("config.json", br#"{"architectures":["BertModel"]}"#),
            FakeFile::in_memory("model.onnx", b"onnx-full"),
            FakeFile::in_memory("onnx/model.onnx", b"onnx-a"),
            FakeFile::in_memory("onnx/model_quantized.onnx", b"onnx-b"),
            FakeFile::in_memory("tokenizer.json", b"{}"),
        ],
    )
}

#[test]
fn include_and_exclude_globs_choose_the_files() {
    let hub = FakeHub::start(vec![onnx_repo(), multi_gguf_repo()]);
    let files = |spec, include, exclude| pulled_files(&hub, spec, include, exclude).unwrap();

    assert_eq!(files("org/onnx-mix", &[], &[]).len(), 6);
    assert_eq!(files("org/onnx-mix", &["*.json"], &[]), ["config.json", "tokenizer.json"]);
    assert_eq!(files("org/onnx-mix", &[], &["*.onnx"]), ["README.md", "config.json", "tokenizer.json"]);
    assert_eq!(files("org/onnx-mix", &[], &["onnx/**"]), ["README.md", "config.json", "model.onnx", "tokenizer.json"]);
    assert_eq!(files("org/onnx-mix", &["*.json", "onnx/**"], &["*quantized*"]), ["config.json", "onnx/model.onnx", "tokenizer.json"]);

    // One GGUF of several, by name or by excluding the others.
    assert_eq!(files("org/multi-GGUF", &["m-Q8_0.gguf"], &[]), ["m-Q8_0.gguf"]);
    assert_eq!(files("org/multi-GGUF", &[], &["*Q4_K_M*"]), ["m-Q8_0.gguf"]);
    let e = pulled_files(&hub, "org/multi-GGUF", &["*.gguf"], &[]).unwrap_err().to_string();
    assert!(e.contains("several GGUF files"), "{e}");

    let e = pulled_files(&hub, "org/onnx-mix", &["*.bin"], &[]).unwrap_err().to_string();
    assert!(e.contains("no files of org/onnx-mix match"), "{e}");
    let e = pulled_files(&hub, "org/onnx-mix", &[], &["a{b"]).unwrap_err().to_string();
    assert!(e.contains("bad glob \"a{b\""), "{e}");
}

#[test]
fn tags_and_commits_pull_and_resolve_offline() {
    let main = tiny_repo("org/x");
    let v1 = FakeRepo::new(
        "org/x",
        vec![
            FakeFile::in_memory("config.json", br#"{"architectures":["LlamaForCausalLM"],"max_position_embeddings":32}"#),
            FakeFile::in_memory("model.safetensors", &[1u8; 2048]),
        ],
    )
    .with_refs(&["v1.0", "release"]);
    let mut hub = FakeHub::start(vec![main.clone(), v1.clone()]);
    let home = tempfile::tempdir().unwrap();
    let online = store(home.path(), config(&hub));
    let refs = repo_dir(home.path(), "org/x").join("refs");

    let tagged = pull(&online, "org/x@v1.0").0.unwrap();
    assert_eq!((tagged.name.as_str(), tagged.revision.as_str(), &tagged.commit), ("org/x@v1.0", "v1.0", &v1.commit));
    assert_eq!(tagged.context_length, Some(32));
    assert!(tagged.path.ends_with(&v1.commit));
    assert_eq!(std::fs::read_to_string(refs.join("v1.0")).unwrap(), v1.commit);

    let latest = pull(&online, "org/x").0.unwrap();
    assert_eq!((latest.name.as_str(), &latest.commit), ("org/x", &main.commit));
    assert_eq!(std::fs::read_to_string(refs.join("main")).unwrap(), main.commit);

    let by_commit = format!("org/x@{}", v1.commit);
    let pinned = pull(&online, &by_commit).0.unwrap();
    assert_eq!((&pinned.revision, &pinned.path), (&v1.commit, &tagged.path));
    assert!(!refs.join(&v1.commit).exists(), "a commit needs no ref");
    assert_clean(&online);

    hub.stop();
    let offline = store(home.path(), HubConfig { offline: true, ..config(&hub) });
    for (spec, path) in
        [("org/x@v1.0", &tagged.path), ("org/x", &latest.path), ("org/x@main", &latest.path), (by_commit.as_str(), &tagged.path)]
    {
        assert_eq!(offline.resolve(spec).unwrap().unwrap().path, *path, "{spec}");
    }
    let record = pull(&offline, "org/x@v1.0").0.unwrap();
    assert_eq!(record.commit, v1.commit);
    // A branch never pulled is unknown offline, even one at a cached commit.
    assert!(offline.resolve("org/x@release").unwrap().is_none());
}

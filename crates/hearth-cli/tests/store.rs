//! The `hearth` binary's model store commands against a fake Hub on loopback serving the
//! real SmolLM2 GGUF and MiniLM files.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_store::fake_hub::{minilm_repo, smollm2_gguf_repo, FakeFile, FakeHub, FakeRepo};
use rand::{Rng, SeedableRng};
use serde_json::Value;

fn real_repos() -> Vec<FakeRepo> {
    static REPOS: OnceLock<Vec<FakeRepo>> = OnceLock::new();
    REPOS
        .get_or_init(|| {
            let gguf = smollm2_gguf_repo().expect("run scripts/fetch-test-models.sh");
            // The name users type, served as the GGUF (this fake Hub has no safetensors SmolLM2).
            let plain = FakeRepo::new("HuggingFaceTB/SmolLM2-135M-Instruct", gguf.files.clone());
            vec![gguf, plain, minilm_repo().expect("run scripts/fetch-test-models.sh")]
        })
        .clone()
}

/// `hearth` with its own home and the fake Hub as endpoint.
fn hearth(home: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", home.join("no-hf-cache"))
        // Where `huggingface-cli login` keeps its token: never the user's own.
        .env("HF_HOME", home.join("hf-home"))
        .env("HEARTH_HUB_TIMEOUT", "10")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Starts `hearth pull --json ...`; its events arrive on the receiver as they are printed.
fn spawn_json_pull(cmd: &mut Command) -> (Child, mpsc::Receiver<Value>) {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the first event of a kind (or the end of the events).
fn wait_for_event(events: &mpsc::Receiver<Value>, kind: &str) {
    while let Ok(e) = events.recv_timeout(Duration::from_secs(60)) {
        if e["event"] == kind {
            return;
        }
    }
}

/// Waits until the pull reports its last file in place (or its events end).
fn wait_for_last_file(events: &mpsc::Receiver<Value>) {
    let (mut files, mut in_place) = (None, 0);
    while let Ok(e) = events.recv_timeout(Duration::from_secs(60)) {
        match e["event"].as_str() {
            Some("resolved") => files = e["files"].as_u64(),
            Some("file_verified" | "file_cached") => in_place += 1,
            _ => {}
        }
        if files == Some(in_place) {
            return;
        }
    }
}

fn event_kinds(json_lines: &str) -> Vec<String> {
    json_lines.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].as_str().unwrap().to_string()).collect()
}

#[test]
fn pull_list_show_then_generate_offline_with_the_hub_stopped() {
    let mut hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());

    let path = ok(hearth(h, &url).args(["pull", "HuggingFaceTB/SmolLM2-135M-Instruct"]));
    assert!(path.trim().ends_with("SmolLM2-135M-Instruct-Q4_1.gguf"), "{path}");
    ok(hearth(h, &url).args(["pull", "minilm"]));
    let events = ok(hearth(h, &url).args(["pull", "--json", "smollm2"]));
    let kinds = event_kinds(&events);
    assert_eq!(kinds.first().map(String::as_str), Some("resolved"), "{events}");
    assert_eq!(kinds.last().map(String::as_str), Some("done"), "{events}");
    assert!(kinds.contains(&"file_verified".to_string()), "{events}");

    let list = ok(hearth(h, &url).arg("list"));
    for name in
        ["HuggingFaceTB/SmolLM2-135M-Instruct ", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1", "sentence-transformers/all-MiniLM-L6-v2"]
    {
        assert!(list.contains(name), "{name} missing from\n{list}");
    }
    assert!(list.contains("gguf") && list.contains("Q4_1") && list.contains("safetensors"), "{list}");
    let show = ok(hearth(h, &url).args(["show", "minilm"]));
    assert!(
        show.contains("embedding dim: 384")
            && show.contains("1_Pooling/config.json")
            && show.contains("config.json:\n{")
            && show.contains(r#""model_type": "bert""#),
        "{show}"
    );
    let show = ok(hearth(h, &url).args(["show", "smollm2"]));
    assert!(show.contains("quantisation:  Q4_1") && show.contains("context:       8192") && show.contains("im_start"), "{show}");
    assert!(!ok(hearth(h, &url).arg("list")).contains(" ago"), "showing a model does not mark it used");
    let catalogue = ok(hearth(h, &url).args(["list", "--catalogue"]));
    assert!(catalogue.contains("mlx-community/Qwen2.5-7B-Instruct-4bit"), "{catalogue}");

    hub.stop();
    let started = Instant::now();
    let out = run(hearth(h, &url).env("HF_HUB_OFFLINE", "1").args([
        "generate",
        "--model",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "--max-tokens",
        "4",
        "--prompt",
        "Hi",
    ]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    ok(hearth(h, &url).args(["pull", "--offline", "minilm"]));
    let e = fails(hearth(h, &url).args(["pull", "--offline", "qwen2.5-7b"]));
    assert!(e.contains("offline") && e.contains("not completely in the cache"), "{e}");
    assert!(ok(hearth(h, &url).arg("list")).contains("s ago"), "generate marks the model used");
}

#[test]
fn bad_names_and_hub_errors_are_clear() {
    let hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    for (args, expected) in [
        (vec!["pull", "../../etc/passwd"], "invalid repo id"),
        (vec!["pull", "/abs/path"], "invalid repo id"),
        (vec!["pull", "org/name", "--revision", "../x"], "invalid revision"),
        (vec!["pull", "org/missing"], "not found on the Hub (404)"),
        (vec!["pull", "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "--quant", "Q9_9"], "no GGUF file"),
        (vec!["show", "org/missing"], "no such model"),
        (vec!["rm", "org/missing"], "no such model"),
    ] {
        let e = fails(hearth(h, &url).args(&args));
        assert!(e.contains(expected), "{args:?}: expected {expected:?} in {e}");
    }
}

#[test]
fn rm_refuses_while_a_server_holds_the_model() {
    let hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    ok(hearth(h, &url).args(["pull", "smollm2"]));
    // Play the server: hold the model as loaded.
    let store = hearth_store::Store::open(h, hearth_store::HubConfig::from_env()).unwrap();
    let record = store.get("smollm2").unwrap().unwrap();
    let guard = store.hold(&record).unwrap();
    let e = fails(hearth(h, &url).args(["rm", "smollm2"]));
    assert!(e.contains("loaded by a running server") && e.contains("--force"), "{e}");
    assert!(ok(hearth(h, &url).args(["rm", "--force", "smollm2"])).contains("removed HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1"));
    drop(guard);
    assert!(!record.path.exists());
    ok(hearth(h, &url).args(["cache", "verify"]));
    ok(hearth(h, &url).args(["cache", "prune"]));
}

/// SIGKILL `hearth pull` at random moments, and right after its last file is in place (while
/// it publishes the snapshot): no kill may leave corruption or a model that looks complete
/// without its manifest, and every later pull completes.
#[test]
fn sigkill_at_random_moments_never_corrupts_the_cache() {
    let hub = FakeHub::start(real_repos());
    // ~2 s for the 91 MB of MiniLM, so most kills land mid-transfer.
    hub.throttle(45_000_000);
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    let manifest =
        h.join("hub/models--sentence-transformers--all-MiniLM-L6-v2/manifests").join(format!("{}.json", minilm_repo().unwrap().commit));
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (mut kills, mut late_kills, mut completed) = (0, 0, 0);
    // Bounded: pulls that finish before their kill do not count, so allow some spare rounds.
    for round in 0..48 {
        if kills == 24 {
            break;
        }
        let (mut child, events) = spawn_json_pull(hearth(h, &url).args(["pull", "--json", "minilm"]));
        let late = round % 3 == 2;
        if late {
            wait_for_last_file(&events);
            // Publishing (links, manifest, registry, with fsyncs) takes some 50 ms: land at
            // its start, or anywhere in it or after.
            if rng.random_bool(0.5) {
                std::thread::sleep(Duration::from_micros(rng.random_range(0..100_000)));
            }
        } else {
            let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..1200));
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let status = match child.try_wait().unwrap() {
            Some(status) => status,
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap()
            }
        };
        if status.signal() == Some(9) {
            kills += 1;
            late_kills += usize::from(late);
        } else {
            assert!(status.success(), "an uninterrupted pull failed");
            completed += 1;
            // Start over, so later kills land in downloads again.
            ok(hearth(h, &url).args(["rm", "--force", "minilm"]));
        }
        // A model that shows is complete: published by its manifest, and not corrupt.
        let shown = run(hearth(h, &url).args(["show", "minilm"])).status.success();
        assert!(!shown || manifest.exists(), "round {round}: the model shows without its manifest");
        let verify = ok(hearth(h, &url).args(["cache", "verify"]));
        assert!(verify.contains("no corruption"), "{verify}");
    }
    assert!(kills >= 20 && late_kills >= 3, "only {kills} kills, {late_kills} late ({completed} pulls finished first)");
    hub.throttle(0);
    let path = ok(hearth(h, &url).args(["pull", "minilm"]));
    assert!(Path::new(path.trim()).join("model.safetensors").is_file());
    let verify = ok(hearth(h, &url).args(["cache", "verify"]));
    assert!(verify.contains("no corruption"), "{verify}");
    ok(hearth(h, &url).args(["show", "minilm"]));
}

#[test]
fn two_processes_pulling_one_model_both_succeed() {
    let hub = FakeHub::start(real_repos());
    // ~2 s for MiniLM: the first still holds the lock when the second starts.
    hub.throttle(45_000_000);
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    let (mut first, first_events) = spawn_json_pull(hearth(h, &url).args(["pull", "--json", "minilm"]));
    // The lock is taken before the Hub is asked, so it is held from here.
    wait_for_event(&first_events, "resolved");
    let second = event_kinds(&ok(hearth(h, &url).args(["pull", "--json", "minilm"])));
    assert!(first.wait().unwrap().success(), "the first pull failed");
    assert_eq!(second.first().map(String::as_str), Some("waiting"), "{second:?}");
    assert!(
        !second.iter().any(|k| k == "file_started") && second.contains(&"file_cached".into()),
        "the second pull finds the first one's files: {second:?}"
    );
    let verify = ok(hearth(h, &url).args(["cache", "verify"]));
    assert!(verify.contains("no corruption"), "{verify}");
}

/// `org/small` at `main` and at tag `v1.0`, with ONNX exports beside its config; and a gated
/// repo.
fn small_repos() -> Vec<FakeRepo> {
    let files = |hidden: &str| {
        vec![
            FakeFile::in_memory("config.json", format!(r#"{{"architectures":["BertModel"],"hidden_size":{hidden}}}"#).as_bytes()),
            FakeFile::in_memory("model.onnx", hidden.as_bytes()),
            FakeFile::in_memory("onnx/model.onnx", b"onnx"),
            FakeFile::in_memory("tokenizer.json", b"{}"),
        ]
    };
    vec![
        FakeRepo::new("org/small", files("8")),
        FakeRepo::new("org/small", files("16")).with_refs(&["v1.0"]),
        FakeRepo::new("org/gated", files("8")).gated(),
    ]
}

/// The files `hearth show` lists.
fn shown_files(show: &str) -> Vec<String> {
    show.lines()
        .skip_while(|l| *l != "files:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn include_and_exclude_flags_choose_the_files() {
    let hub = FakeHub::start(small_repos());
    let url = hub.endpoint();
    for (flags, expected) in [
        (vec!["--include", "*.json"], vec!["config.json", "tokenizer.json"]),
        (vec!["--exclude", "onnx/**"], vec!["config.json", "model.onnx", "tokenizer.json"]),
    ] {
        let home = tempfile::tempdir().unwrap();
        ok(hearth(home.path(), &url).args(["pull", "org/small"]).args(&flags));
        let show = ok(hearth(home.path(), &url).args(["show", "org/small"]));
        assert_eq!(shown_files(&show), expected, "{flags:?}: {show}");
    }
}

#[test]
fn tags_and_commits_pull_and_show_offline() {
    let repos = small_repos();
    let (main, v1) = (&repos[0], &repos[1]);
    let mut hub = FakeHub::start(repos.clone());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());

    let path = ok(hearth(h, &url).args(["pull", "org/small", "--revision", "v1.0"]));
    assert!(path.trim().ends_with(&v1.commit), "{path}");
    let refs = h.join("hub/models--org--small/refs");
    assert_eq!(std::fs::read_to_string(refs.join("v1.0")).unwrap(), v1.commit);
    let path = ok(hearth(h, &url).args(["pull", &format!("org/small@{}", main.commit)]));
    assert!(path.trim().ends_with(&main.commit), "{path}");
    assert!(!refs.join("main").exists(), "a commit pull writes no ref");

    hub.stop();
    let show = ok(hearth(h, &url).env("HF_HUB_OFFLINE", "1").args(["show", "org/small@v1.0"]));
    assert!(show.contains(&format!("org/small @ v1.0 ({})", v1.commit)) && show.contains(r#""hidden_size":16"#), "{show}");
    let show = ok(hearth(h, &url).env("HF_HUB_OFFLINE", "1").args(["show", &format!("org/small@{}", main.commit)]));
    assert!(show.contains(r#""hidden_size":8"#), "{show}");
    ok(hearth(h, &url).args(["pull", "--offline", "org/small@v1.0"]));
}

#[test]
fn hf_token_from_the_environment_or_the_token_file() {
    let hub = FakeHub::start(small_repos());
    hub.set_token("hf_secret");
    let url = hub.endpoint();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();

    let e = fails(hearth(h, &url).args(["pull", "org/gated"]));
    assert!(e.contains("access denied (401)") && e.contains("HF_TOKEN"), "{e}");
    let e = fails(hearth(h, &url).env("HF_TOKEN", "hf_wrong").args(["pull", "org/gated"]));
    assert!(e.contains("access denied (401)"), "{e}");
    ok(hearth(h, &url).env("HF_TOKEN", "hf_secret").args(["pull", "org/gated"]));

    // `huggingface-cli login`'s token file under HF_HOME, in a fresh store.
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join("hf-home")).unwrap();
    std::fs::write(h.join("hf-home/token"), "hf_secret\n").unwrap();
    ok(hearth(h, &url).args(["pull", "org/gated"]));
}

//! The `hearth` binary's model store commands against a fake Hub on loopback serving the
//! real SmolLM2 GGUF and MiniLM files.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hearth_store::fake_hub::{minilm_repo, smollm2_gguf_repo, FakeHub, FakeRepo};
use rand::{Rng, SeedableRng};

fn real_repos() -> Vec<FakeRepo> {
    static REPOS: OnceLock<Vec<FakeRepo>> = OnceLock::new();
    REPOS
        .get_or_init(|| {
            let gguf = smollm2_gguf_repo().expect("run scripts/fetch-test-models.sh");
            // The name users type, served as the GGUF (this fake Hub has no safetensors SmolLM2).
            let plain = FakeRepo::new("HuggingFaceTB/SmolLM2-135M-Instruct", gguf.files.clone());
            vec![
                gguf,
                plain,
                minilm_repo().expect("run scripts/fetch-test-models.sh"),
            ]
        })
        .clone()
}

/// `hearth` with its own home and the fake Hub as endpoint.
fn hearth(home: &Path, endpoint: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", home.join("no-hf-cache"))
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
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pull_list_show_then_generate_offline_with_the_hub_stopped() {
    let mut hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());

    let path = ok(hearth(h, &url).args(["pull", "HuggingFaceTB/SmolLM2-135M-Instruct"]));
    assert!(
        path.trim().ends_with("SmolLM2-135M-Instruct-Q4_1.gguf"),
        "{path}"
    );
    ok(hearth(h, &url).args(["pull", "minilm"]));
    let events = ok(hearth(h, &url).args(["pull", "--json", "smollm2"]));
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("resolved"),
        "{events}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("done"), "{events}");
    assert!(kinds.contains(&"file_verified".to_string()), "{events}");

    let list = ok(hearth(h, &url).arg("list"));
    for name in [
        "HuggingFaceTB/SmolLM2-135M-Instruct ",
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1",
        "sentence-transformers/all-MiniLM-L6-v2",
    ] {
        assert!(list.contains(name), "{name} missing from\n{list}");
    }
    assert!(
        list.contains("gguf") && list.contains("Q4_1") && list.contains("safetensors"),
        "{list}"
    );
    let show = ok(hearth(h, &url).args(["show", "minilm"]));
    assert!(
        show.contains("embedding dim: 384") && show.contains("1_Pooling/config.json"),
        "{show}"
    );
    let show = ok(hearth(h, &url).args(["show", "smollm2"]));
    assert!(
        show.contains("quantisation:  Q4_1")
            && show.contains("context:       8192")
            && show.contains("im_start"),
        "{show}"
    );
    let catalogue = ok(hearth(h, &url).args(["list", "--catalogue"]));
    assert!(
        catalogue.contains("mlx-community/Qwen2.5-7B-Instruct-4bit"),
        "{catalogue}"
    );

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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    assert!(started.elapsed() < Duration::from_secs(30));
    ok(hearth(h, &url).args(["pull", "--offline", "minilm"]));
    let e = fails(hearth(h, &url).args(["pull", "--offline", "qwen2.5-7b"]));
    assert!(
        e.contains("offline") && e.contains("not completely in the cache"),
        "{e}"
    );
    assert!(
        ok(hearth(h, &url).arg("list")).contains("s ago"),
        "generate marks the model used"
    );
}

#[test]
fn bad_names_and_hub_errors_are_clear() {
    let hub = FakeHub::start(real_repos());
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    for (args, expected) in [
        (vec!["pull", "../../etc/passwd"], "invalid repo id"),
        (vec!["pull", "/abs/path"], "invalid repo id"),
        (
            vec!["pull", "org/name", "--revision", "../x"],
            "invalid revision",
        ),
        (vec!["pull", "org/missing"], "not found on the Hub (404)"),
        (
            vec![
                "pull",
                "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                "--quant",
                "Q9_9",
            ],
            "no GGUF file",
        ),
        (vec!["show", "org/missing"], "no such model"),
        (vec!["rm", "org/missing"], "no such model"),
    ] {
        let e = fails(hearth(h, &url).args(&args));
        assert!(
            e.contains(expected),
            "{args:?}: expected {expected:?} in {e}"
        );
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
    assert!(
        e.contains("loaded by a running server") && e.contains("--force"),
        "{e}"
    );
    assert!(ok(hearth(h, &url).args(["rm", "--force", "smollm2"]))
        .contains("removed HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_1"));
    drop(guard);
    assert!(!record.path.exists());
    ok(hearth(h, &url).args(["cache", "verify"]));
    ok(hearth(h, &url).args(["cache", "prune"]));
}

/// SIGKILL `hearth pull` at random moments: no kill may leave corruption or a model that
/// looks complete, and every later pull completes.
#[test]
fn sigkill_at_random_moments_never_corrupts_the_cache() {
    let hub = FakeHub::start(real_repos());
    // ~2 s for the 91 MB of MiniLM, so most kills land mid-transfer.
    hub.throttle(45_000_000);
    let home = tempfile::tempdir().unwrap();
    let (h, url) = (home.path(), hub.endpoint());
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (mut kills, mut completed) = (0, 0);
    // Bounded: pulls that finish before their kill do not count, so allow some spare rounds.
    for _ in 0..40 {
        if kills == 24 {
            break;
        }
        let mut child = hearth(h, &url)
            .args(["pull", "minilm"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(0..1200));
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        match finished {
            Some(status) => {
                assert!(status.success(), "an uninterrupted pull failed");
                completed += 1;
                // Start over, so later kills land in downloads again.
                ok(hearth(h, &url).args(["rm", "--force", "minilm"]));
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
        let verify = ok(hearth(h, &url).args(["cache", "verify"]));
        assert!(verify.contains("no corruption"), "{verify}");
    }
    assert!(
        kills >= 20,
        "only {kills} kills ({completed} pulls finished first)"
    );
    hub.throttle(0);
    let path = ok(hearth(h, &url).args(["pull", "minilm"]));
    assert!(Path::new(path.trim()).join("model.safetensors").is_file());
    let verify = ok(hearth(h, &url).args(["cache", "verify"]));
    assert!(verify.contains("no corruption"), "{verify}");
}

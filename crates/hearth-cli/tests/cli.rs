//! The `hearth` binary end to end on a tiny GGUF model.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn tiny_gguf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/gguf/llama-Q8_0.gguf")
}

fn hearth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hearth"))
}

#[test]
fn generate_streams_text_then_prints_speed_and_memory() {
    let out = hearth().args(["generate", "--max-tokens", "6", "--prompt", "Hello", "--model"]).arg(tiny_gguf()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for figure in ["Prompt:", "tokens-per-sec", "Generation: 6 tokens", "Peak memory:"] {
        assert!(stderr.contains(figure), "missing {figure:?} in {stderr}");
    }
    assert!(!out.stdout.is_empty());
}

#[test]
fn unknown_model_is_a_clear_error() {
    let out = hearth().args(["generate", "--model", "no-such-model", "--prompt", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such model"), "{stderr}");
}

#[test]
fn chat_keeps_the_conversation_across_turns() {
    let mut child = hearth()
        .args(["chat", "--verbose", "--max-tokens", "4", "--model"])
        .arg(tiny_gguf())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Hi there\nAnd again\n/exit\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cached: Vec<usize> = stderr.lines().filter_map(|l| l.split_once(" tokens (")?.1.split_once(" cached")?.0.parse().ok()).collect();
    assert_eq!(cached.len(), 2, "{stderr}");
    assert_eq!(cached[0], 0);
    assert!(cached[1] > 10, "the second turn re-used only {} cached tokens", cached[1]);
}

/// One POST over loopback, answered with the body (HTTP/1.1, the connection closed after).
fn post_json(port: u16, path: &str, body: &serde_json::Value) -> serde_json::Value {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.to_string();
    write!(conn, "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(body).unwrap()
}

/// `hearth serve` on a free loopback port with a scratch database, killed when dropped.
struct Served {
    child: std::process::Child,
    port: u16,
    _home: tempfile::TempDir,
}

impl Served {
    fn start(model: &str) -> Served {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let home = tempfile::tempdir().unwrap();
        let child = hearth()
            .args(["serve", "--port", &port.to_string(), "--model", model, "--db"])
            .arg(home.path().join("server.db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let served = Served { child, port, _home: home };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return served;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("hearth serve did not listen on {port}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line, the server and `bench -b` all generate on the one runtime: for the same
/// prompt at temperature 0 they produce the same tokens (bench's batched choices included).
#[test]
fn generate_serve_and_bench_give_the_same_greedy_tokens() {
    let prompt = "The capital of France is";
    let out = hearth()
        .args(["generate", "--model", "smollm2", "--raw", "--temp", "0", "--max-tokens", "16", "--json", "--prompt", prompt])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tokens: Vec<u64> = generated["tokens"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    assert!(tokens.len() >= 4, "{generated}");

    let out =
        hearth().args(["bench", "--model", "smollm2", "--text", prompt, "-n", "16", "-b", "3", "-r", "1", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bench: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let choices = bench["generated"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for choice in choices {
        let ids: Vec<u64> = choice.as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
        assert_eq!(ids[..tokens.len()], tokens[..], "bench -b 3 (EOS ignored) vs generate");
    }

    let server = Served::start("smollm2");
    let body = serde_json::json!({"model": "smollm2", "prompt": prompt, "max_tokens": 16, "temperature": 0});
    let reply = post_json(server.port, "/v1/completions", &body);
    assert_eq!(reply["choices"][0]["text"], generated["text"], "{reply}");
    assert_eq!(reply["usage"]["completion_tokens"].as_u64(), Some(tokens.len() as u64), "{reply}");
}

/// `hearth serve --log-format json` logs one JSON object per line (filtered by RUST_LOG).
#[test]
fn serve_logs_json_lines() {
    use std::io::BufRead;
    let home = tempfile::tempdir().unwrap();
    let mut child = hearth()
        .args(["serve", "--port", "0", "--log-format", "json", "--db"])
        .arg(home.path().join("server.db"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(log["level"], "INFO", "{log}");
    assert!(log["fields"]["message"].as_str().unwrap().starts_with("hearth serving on http://127.0.0.1:"), "{log}");
}

/// `hearth embed --json` on the tiny Qwen3-Embedding and EmbeddingGemma stand-ins gives
/// sentence-transformers' vectors, with a prompt by name or by role and a Matryoshka prefix.
#[test]
fn embed_gives_sentence_transformers_vectors_for_decoder_embedders() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/embedders");
    let cosine = |a: &serde_json::Value, b: &serde_json::Value| {
        let (a, b): (Vec<f64>, Vec<f64>) = (
            a.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
            b.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect(),
        );
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
        dot(&a, &b) / (dot(&a, &a) * dot(&b, &b)).sqrt()
    };
    for (model, flags, key) in [
        ("qwen3-embedding-tiny", &[][..], "no_prompt"),
        ("qwen3-embedding-tiny", &["--input-type", "query"][..], "prompt_query"),
        ("embeddinggemma-tiny", &["--prompt-name", "Clustering"][..], "prompt_Clustering"),
        ("embeddinggemma-tiny", &["--dimensions", "32"][..], "no_prompt_truncate_dim_32"),
    ] {
        let refs: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join(format!("{model}.json"))).unwrap()).unwrap();
        // Line by line from standard input; the empty text has a line of its own.
        let texts: Vec<&str> =
            refs["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).filter(|t| !t.contains('\n')).collect();
        let mut child = hearth()
            .args(["embed", "--json", "--model"])
            .arg(root.join(model))
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(texts.join("\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{model} {flags:?}: {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let data = got["data"].as_array().unwrap();
        assert_eq!(data.len(), texts.len());
        for (item, text) in data.iter().zip(&texts) {
            let i = refs["texts"].as_array().unwrap().iter().position(|t| t == text).unwrap();
            let c = cosine(&item["embedding"], &refs[key][i]);
            assert!(c >= 0.99999, "{model} {key} {text:?}: cosine {c}");
        }
    }
}

/// The web UI in a real headless Chromium: tests/ui/web_ui.test.mjs drives Debian's `chromium`
/// with playwright-core (scripts/sdk-env.sh installs it) against `hearth serve`, which it
/// starts and stops itself; this gives it the binary, SmolLM2 and MiniLM, a loopback Hub stand-in to pull
/// the tiny GGUF from, and `target/ui-screenshots/` for its screenshots. Ignored by a plain
/// `cargo test`; scripts/test.sh runs it.
#[test]
#[ignore = "needs Chromium and playwright-core; scripts/test.sh runs it"]
fn a_person_uses_the_web_ui() {
    use hearth_store::fake_hub::{test_models_dir, FakeFile, FakeHub, FakeRepo};
    let node_modules = std::env::var("HEARTH_SDK_NODE_MODULES").expect("HEARTH_SDK_NODE_MODULES is set: run scripts/sdk-env.sh");
    let smol = test_models_dir().join("SmolLM2-135M-Instruct-Q4_1.gguf");
    assert!(smol.is_file(), "scripts/fetch-test-models.sh installs {}", smol.display());
    let repo = FakeRepo::new("hearth-test/tiny-llama-GGUF", vec![FakeFile::on_disk("tiny-llama-Q8_0.gguf", &tiny_gguf()).unwrap()]);
    let hub = FakeHub::start(vec![repo]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new("node")
        .arg("--test")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/web_ui.test.mjs"))
        .env("NODE_PATH", node_modules)
        .env("HEARTH_BIN", env!("CARGO_BIN_EXE_hearth"))
        .env("HEARTH_SMOL", &smol)
        .env("HEARTH_MINILM", test_models_dir().join("all-MiniLM-L6-v2"))
        .env("HEARTH_TINY", tiny_gguf())
        .env("HEARTH_TESTDATA", root.join("testdata"))
        .env("HEARTH_DATASET", root.join("testdata/tiny/lora/data/train.jsonl"))
        .env("HEARTH_PULL_REPO", "hearth-test/tiny-llama-GGUF")
        .env("HEARTH_SCREENSHOTS", root.join("target/ui-screenshots"))
        .env("HF_ENDPOINT", hub.endpoint())
        .status()
        .expect("node runs");
    assert!(status.success(), "the web UI tests failed");
}

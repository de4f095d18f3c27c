//! The hub across processes: `hearth dataset` on the command line, then `hearth serve` killed
//! (SIGKILL) in the middle of a fine-tuning job and started again: the job resumes from its
//! checkpoint and finishes, and the registry, datasets and runs are intact.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

fn hearth(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_HOME", home);
    c
}

/// One HTTP/1.1 exchange over loopback: the status and the JSON body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, killed (SIGKILL) when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hearth serve` on `port`, once it answers.
fn serve(home: &Path, port: u16) -> Server {
    let mut child = hearth(home)
        .args(["serve", "--port", &port.to_string(), "--model"])
        .arg(format!("tiny={}", tiny("hf/llama").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while http(port, "GET", "/health", None).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "the server did not start");
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child)
}

fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_job_resumes_after_the_server_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");

    // Datasets from the command line, checked as the server checks them.
    let add = hearth(&home).args(["dataset", "add", "--name", "chat"]).arg(tiny("lora/data/train.jsonl")).output().unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\"}\n{\"prompt\": 1, \"completion\": \"x\"}\n").unwrap();
    let refused = hearth(&home).args(["dataset", "add"]).arg(&bad).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("bad.jsonl:2:"), "{}", String::from_utf8_lossy(&refused.stderr));
    let shown = hearth(&home).args(["dataset", "show", "chat", "--model"]).arg(tiny("hf/llama")).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.starts_with("chat: ") && shown.contains("tokens: "), "{shown}");
    let listed = hearth(&home).args(["dataset", "list"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 2, "a header and one dataset");

    let port = free_port();
    let server = serve(&home, port);
    let job = json!({"name": "tuned", "model": "tiny", "dataset": "chat", "train": {
        "iters": 300, "save_every": 25, "steps_per_eval": 5000, "val_batches": 1, "rank": 4, "num_layers": -1, "learning_rate": 1e-3,
    }});
    let (st, job) = http(port, "POST", "/hub/jobs", Some(&job)).unwrap();
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let path = format!("/hub/jobs/{id}");
    let started = Instant::now();
    let killed_at = loop {
        let (_, job) = http(port, "GET", &path, None).unwrap();
        let iter = job["iter"].as_u64().unwrap();
        if iter >= 60 {
            assert_eq!(job["status"], "running", "{job}");
            drop(server);
            break iter;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(killed_at < 300, "killed mid-job");

    let server = serve(&home, port);
    let started = Instant::now();
    let job = loop {
        let (_, job) = http(port, "GET", &path, None).unwrap();
        if job["status"] != "running" && job["status"] != "queued" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "{job}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((job["status"].as_str(), job["iter"].as_u64()), (Some("completed"), Some(300)), "{job}");
    // It went on from its last checkpoint, not from the beginning.
    let log = std::fs::read_to_string(home.join("hub/jobs").join(&id).join("log.txt")).unwrap();
    assert_eq!(log.matches("Starting training").count(), 2, "{log}");
    assert_eq!(log.matches("Iter 25: Saved").count(), 1, "iterations before the last checkpoint are not run again\n{log}");
    let (_, models) = http(port, "GET", "/admin/models?registered_by=hearth-hub", None).unwrap();
    assert_eq!(models["models"].as_array().unwrap().len(), 2, "{models}");
    let (_, datasets) = http(port, "GET", "/hub/datasets", None).unwrap();
    assert_eq!(datasets["datasets"][0]["name"], "chat");
    let (st, reply) =
        http(port, "POST", "/v1/completions", Some(&json!({"model": "tuned", "prompt": "Hello", "max_tokens": 4, "temperature": 0})))
            .unwrap();
    assert_eq!(st, 200, "{reply}");
    drop(server);
    for db in [home.join("hub/hub.db"), home.join("server.db")] {
        assert_eq!(integrity(&db), "ok", "{}", db.display());
    }
}

//! Starts a real server on 127.0.0.1:0 in its own runtime thread, for one test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use hearth_server::{ServeOptions, Server, ServerConfig};
use tokio::sync::oneshot;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_model() -> String {
    repo_root().join("testdata/tiny/gguf/llama-Q8_0.gguf").display().to_string()
}

pub struct TestServer {
    pub base: String,
    pub home: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// A server serving the tiny model as `tiny`, with `edit` applied to the options.
    pub fn start(edit: impl FnOnce(&mut ServeOptions)) -> TestServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), edit)
    }

    /// As `start`, reusing a home (and so the registry database) from an earlier server.
    pub fn start_in(home: tempfile::TempDir, edit: impl FnOnce(&mut ServeOptions)) -> TestServer {
        Self::start_configured(home, edit, |_| {})
    }

    /// As `start_in`, then `edit_config` applied to the resolved configuration (for what no
    /// option sets, such as the Hub to pull from).
    pub fn start_configured(
        home: tempfile::TempDir,
        edit: impl FnOnce(&mut ServeOptions),
        edit_config: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        // Tests register adapters and models from the repository's test data.
        let testdata = repo_root().join("testdata");
        let mut opts =
            ServeOptions { port: Some(0), model: vec![format!("tiny={}", tiny_model())], allow_path: vec![testdata], ..Default::default() };
        edit(&mut opts);
        let mut cfg = opts.resolve(home.path()).expect("valid options");
        edit_config(&mut cfg);
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let server = Server::bind(cfg).await.expect("server binds");
                addr_tx.send(server.local_addr().expect("address")).expect("test waits");
                server.run_until(async move { drop(stopped.await) }).await.expect("server runs");
            });
        });
        let addr = addr_rx.recv().expect("server started");
        TestServer { base: format!("http://{addr}"), home, stop: Some(stop), thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server (letting requests finish) and gives its home back.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.shutdown();
        let dir = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.home, dir)
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

/// The value of a Prometheus sample line `name{labels} value`, summed over label sets.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

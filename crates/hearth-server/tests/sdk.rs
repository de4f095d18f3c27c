//! The official `openai` SDKs (Python and Node) against a real server. Ignored by a plain
//! `cargo test`: scripts/test.sh installs the SDKs (scripts/sdk-env.sh) and runs it with
//! HEARTH_SDK_PYTHON and HEARTH_SDK_NODE_MODULES set.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestServer;

fn sdk_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run scripts/sdk-env.sh (scripts/test.sh does)"))
}

#[test]
#[ignore = "needs the OpenAI SDKs; scripts/test.sh runs it"]
fn official_openai_sdks() {
    let python = required("HEARTH_SDK_PYTHON");
    let node_modules = required("HEARTH_SDK_NODE_MODULES");
    let server = TestServer::start(|_| {});
    let py = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(sdk_dir().join("test_openai_python.py"))
        .env("HEARTH_BASE_URL", &server.base)
        .status()
        .expect("pytest runs");
    let node = Command::new("node")
        .arg("--test")
        .arg(sdk_dir().join("openai_node.test.cjs"))
        .env("HEARTH_BASE_URL", &server.base)
        .env("NODE_PATH", node_modules)
        .status()
        .expect("node runs");
    assert!(py.success(), "the Python SDK tests failed");
    assert!(node.success(), "the Node SDK tests failed");
}

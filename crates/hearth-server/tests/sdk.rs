//! The official `openai` SDKs (Python and Node) and `anthropic` (Python), and LangChain,
//! against a real server. Ignored by a plain
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
    // SmolLM2 (scripts/fetch-test-models.sh) for what needs a real model: tools.
    let smollm2 = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    let server = TestServer::start(|o| o.model.push(format!("smol={}", smollm2.display())));
    let py = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(sdk_dir())
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

/// `/openapi.json` is a valid OpenAPI 3.1 document (the Python `openapi-spec-validator`, which
/// scripts/sdk-env.sh installs) whose every schema reference resolves.
#[test]
#[ignore = "needs openapi-spec-validator; scripts/test.sh runs it"]
fn openapi_document_is_valid() {
    let python = required("HEARTH_SDK_PYTHON");
    let server = TestServer::start(|_| {});
    let check = "import json, re, sys, urllib.request\n\
from openapi_spec_validator import validate\n\
from openapi_spec_validator.validation import OpenAPIV31SpecValidator\n\
doc = json.load(urllib.request.urlopen(sys.argv[1] + '/openapi.json'))\n\
assert doc['openapi'].startswith('3.1'), doc['openapi']\n\
validate(doc, cls=OpenAPIV31SpecValidator)\n\
refs = set(re.findall(r'\"#/components/schemas/([^\"]+)\"', json.dumps(doc)))\n\
missing = refs - set(doc['components']['schemas'])\n\
assert not missing, missing\n";
    let status = Command::new(python).args(["-c", check, &server.base]).status().expect("python runs");
    assert!(status.success(), "/openapi.json is not a valid OpenAPI 3.1 document");
}

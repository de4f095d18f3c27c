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

/// A hub run written into an MLflow file store reads back through MLflow's own client (the
/// `mlflow-skinny` package, which scripts/sdk-env.sh installs): experiment, parameters, every
/// step of a metric, tags and artifacts.
#[tokio::test]
#[ignore = "needs mlflow; scripts/test.sh runs it"]
async fn mlflow_reads_an_exported_run() {
    let python = required("HEARTH_SDK_PYTHON");
    let server = TestServer::start(|_| {});
    let data = common::repo_root().join("testdata/tiny/lora/data/train.jsonl");
    let c = reqwest::Client::new();
    let dataset = c.post(server.url("/hub/datasets?name=chat")).body(std::fs::read(data).unwrap()).send().await.unwrap();
    assert_eq!(dataset.status(), 201);
    let job = serde_json::json!({"name": "tuned", "model": "tiny", "dataset": "chat",
        "train": {"iters": 4, "batch_size": 4, "num_layers": -1, "steps_per_report": 2, "steps_per_eval": 4, "val_batches": 1}});
    let job: serde_json::Value = c.post(server.url("/hub/jobs")).json(&job).send().await.unwrap().json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_string();
    let mut status = String::from("queued");
    for _ in 0..1200 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let job: serde_json::Value = c.get(server.url(&format!("/hub/jobs/{id}"))).send().await.unwrap().json().await.unwrap();
        status = job["status"].as_str().unwrap().to_string();
        if status != "queued" && status != "running" {
            break;
        }
    }
    assert_eq!(status, "completed");
    let store = server.home.path().join("mlruns");
    let written = c.post(server.url(&format!("/hub/runs/{id}/mlflow"))).json(&serde_json::json!({"path": store})).send().await.unwrap();
    assert_eq!(written.status(), 201);
    let check = "import sys\n\
from mlflow.tracking import MlflowClient\n\
store, run_id = sys.argv[1], sys.argv[2]\n\
client = MlflowClient(tracking_uri='file://' + store)\n\
experiment = client.get_experiment_by_name('hearth-hub')\n\
run = client.get_run(run_id)\n\
assert run.info.experiment_id == experiment.experiment_id, (run.info, experiment)\n\
assert run.info.status == 'FINISHED' and run.info.run_name == 'tuned', run.info\n\
assert run.data.params['iters'] == '4' and run.data.params['dataset'] == 'chat', run.data.params\n\
assert run.data.tags['hearth.model'] == 'tuned@1', run.data.tags\n\
steps = [m.step for m in client.get_metric_history(run_id, 'train_loss')]\n\
assert steps == [2, 4], steps\n\
assert 'val_loss' in run.data.metrics, run.data.metrics\n\
artifacts = {a.path for a in client.list_artifacts(run_id)}\n\
assert {'adapters.safetensors', 'adapter_config.json', 'metadata.json', 'loss.svg', 'log.txt'} <= artifacts, artifacts\n\
runs = client.search_runs([experiment.experiment_id])\n\
assert [r.info.run_id for r in runs] == [run_id], runs\n";
    let status = Command::new(python)
        .args(["-c", check])
        .arg(&store)
        .arg(&id)
        // MLflow 3 keeps its file store in maintenance mode, behind this switch.
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .status()
        .expect("python runs");
    assert!(status.success(), "MLflow could not read the exported run");
}

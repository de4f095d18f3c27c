//! The hub over HTTP only, on a real model: a dataset uploaded, a fine-tuning job run to its
//! end while its progress streams, its metrics and loss curves, its export bundle, its
//! registration, and the adapter answering what the base model cannot.

mod common;

use common::{repo_root, TestServer};
use futures_util::StreamExt;
use reqwest::Method as M;
use serde_json::{json, Value};

async fn call(c: &reqwest::Client, method: M, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

async fn upload(c: &reqwest::Client, url: String, body: String) -> (u16, Value) {
    let res = c.post(url).header("content-type", "application/jsonl").body(body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// The fine-tune of `hearth train`'s own SmolLM2 test (testdata/train/lantern), as a job, with
/// 40 steps rather than 30: the hub's own split holds out other records than the fixture's
/// valid.jsonl, and at 30 steps two facts could still be confused. The learning rate decays to
/// zero (cosine): at a constant 5e-4 the last steps still jump between answers.
fn lantern_job(name: &str) -> Value {
    json!({"name": name, "model": "smol", "dataset": "lantern", "train": {
        "iters": 40, "batch_size": 8, "learning_rate": 5e-4, "mask_prompt": true,
        "lr_schedule": {"name": "cosine_decay", "arguments": [5e-4, 40]},
        "steps_per_eval": 40, "val_batches": -1, "save_every": 40, "steps_per_report": 5,
    }})
}

#[tokio::test]
async fn a_dataset_becomes_a_model_to_chat_with() {
    let gguf = hearth_store::fake_hub::test_models_dir().join("SmolLM2-135M-Instruct-Q4_1.gguf");
    assert!(gguf.is_file(), "scripts/fetch-test-models.sh installs {}", gguf.display());
    let s = TestServer::start(|o| o.model = vec![format!("smol={}", gguf.display())]);
    let c = reqwest::Client::new();
    let data = repo_root().join("testdata/train/lantern");

    // Datasets: checked line by line; the train and valid records are uploaded as one file.
    let (st, e) = upload(&c, s.url("/hub/datasets?name=bad"), "{\"text\": \"fine\"}\nnot json\n".into()).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().starts_with("bad.jsonl:2:"), "{e}");
    let all = std::fs::read_to_string(data.join("train.jsonl")).unwrap() + &std::fs::read_to_string(data.join("valid.jsonl")).unwrap();
    let (st, dataset) = upload(&c, s.url("/hub/datasets?name=lantern&valid_share=0.15&test_share=0"), all.clone()).await;
    assert_eq!(st, 201, "{dataset}");
    assert_eq!((dataset["format"].as_str(), dataset["records"].as_u64(), dataset["valid"].as_u64()), (Some("chat"), Some(280), Some(42)));
    assert_eq!(upload(&c, s.url("/hub/datasets?name=lantern"), all).await.0, 409);
    let (st, shown) = call(&c, M::GET, s.url("/hub/datasets/lantern?model=smol"), None).await;
    assert_eq!((st, shown["tokens"]["records"].as_u64()), (200, Some(280)), "{shown}");
    assert_eq!(shown["preview"].as_array().unwrap().len(), 5);

    // Jobs that cannot run are refused at the door.
    for (body, status, param) in [
        (json!({"name": "x", "model": "nope", "dataset": "lantern"}), 404, "model"),
        (json!({"name": "x", "model": "smol", "dataset": "nope"}), 404, "dataset"),
        (json!({"name": "../x", "model": "smol", "dataset": "lantern"}), 400, ""),
        (json!({"name": "x", "model": "smol", "dataset": "lantern", "train": {"learning_rate": "fast"}}), 400, "train.learning_rate"),
        (json!({"name": "x", "model": "smol", "dataset": "lantern", "train": {"adapter_path": "/tmp"}}), 400, "train.adapter_path"),
        (json!({"name": "x", "model": "smol", "dataset": "lantern", "train": {"format": "peft"}}), 400, ""),
        (json!({"name": "x", "model": "smol", "dataset": "lantern", "train": {"fine_tune_type": "dora"}}), 400, ""),
    ] {
        let (st, e) = call(&c, M::POST, s.url("/hub/jobs"), Some(body.clone())).await;
        assert_eq!(st, status, "{body} -> {e}");
        if !param.is_empty() {
            assert_eq!(e["error"]["param"], param, "{e}");
        }
    }

    let (st, job) = call(&c, M::POST, s.url("/hub/jobs"), Some(lantern_job("lantern"))).await;
    assert_eq!(st, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // A second job waits its turn; cancelled while queued, it never runs.
    let (st, second) = call(&c, M::POST, s.url("/hub/jobs"), Some(lantern_job("later"))).await;
    assert_eq!((st, second["status"].as_str()), (201, Some("queued")), "{second}");
    assert!(second["queue_position"].as_u64().unwrap() >= 1, "{second}");
    let (_, cancelled) = call(&c, M::POST, s.url(&format!("/hub/jobs/{}/cancel", second["id"].as_str().unwrap())), None).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(call(&c, M::DELETE, s.url("/hub/datasets/lantern"), None).await.0, 409, "the running job's dataset stays");

    // Its progress streams until it completes.
    let res = c.get(s.url(&format!("/hub/jobs/{id}/events"))).send().await.unwrap();
    let mut body = res.bytes_stream();
    let (mut buffer, mut progress, mut last) = (String::new(), 0, Value::Null);
    'read: while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            let v: Value = serde_json::from_str(data).unwrap();
            progress += usize::from(v["type"] == "progress");
            if v["type"] == "status" && ["completed", "failed", "cancelled"].contains(&v["status"].as_str().unwrap()) {
                last = v;
                break 'read;
            }
        }
    }
    assert_eq!(
        last["status"],
        "completed",
        "{last}\n{}",
        c.get(s.url(&format!("/hub/jobs/{id}/log"))).send().await.unwrap().text().await.unwrap()
    );
    assert!(progress >= 20, "a progress event per iteration ({progress})");

    // The run: metrics, the loss curves, the bundle with its hashes, the registration.
    let (_, metrics) = call(&c, M::GET, s.url(&format!("/hub/runs/{id}/metrics")), None).await;
    let values = |name: &str| -> Vec<f64> {
        metrics["metrics"].as_array().unwrap().iter().filter(|m| m["name"] == name).map(|m| m["value"].as_f64().unwrap()).collect()
    };
    let val = values("val_loss");
    assert!(val.len() >= 2 && val[val.len() - 1] < val[0] * 0.5, "validation loss falls by half: {val:?}");
    assert_eq!(values("train_loss").len(), 8);
    assert!(values("tokens_per_sec").iter().all(|&t| t > 0.0));
    let csv = c.get(s.url(&format!("/hub/runs/{id}/metrics?format=csv"))).send().await.unwrap().text().await.unwrap();
    assert!(csv.starts_with("iter,name,value,seconds\n") && csv.contains(",val_loss,"), "{csv}");
    let svg = c.get(s.url(&format!("/hub/runs/loss.svg?runs={id}"))).send().await.unwrap();
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let svg = svg.text().await.unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<polyline").count() == 2, "{svg}");

    let (_, job) = call(&c, M::GET, s.url(&format!("/hub/jobs/{id}")), None).await;
    assert_eq!((job["version"].as_i64(), job["iter"].as_u64()), (Some(1), Some(40)), "{job}");
    let bundle = std::path::PathBuf::from(job["export_path"].as_str().unwrap());
    let metadata: Value = serde_json::from_str(&std::fs::read_to_string(bundle.join("metadata.json")).unwrap()).unwrap();
    assert_eq!((metadata["run_id"].as_str(), metadata["base_model"].as_str()), (Some(id.as_str()), Some("smol")));
    for file in ["adapters.safetensors", "adapter_config.json", "config.json"] {
        let bytes = std::fs::read(bundle.join(file)).unwrap();
        assert_eq!(metadata["sha256"][file].as_str().unwrap(), hearth_hub::export::sha256(&bytes), "{file}");
    }
    let (_, hub_models) = call(&c, M::GET, s.url("/admin/models?registered_by=hearth-hub"), None).await;
    let mut names: Vec<&str> = hub_models["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["lantern", "lantern@1"], "{hub_models}");
    assert_eq!(hub_models["models"][0]["model_id"], id.as_str());

    // The adapter, by name, answers the held-out questions; the base model does not.
    let ask = |model: &'static str, question: String| {
        let c = c.clone();
        let url = s.url("/v1/chat/completions");
        async move {
            let body = json!({"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0, "max_tokens": 16});
            let (st, reply) = call(&c, M::POST, url, Some(body)).await;
            assert_eq!(st, 200, "{reply}");
            reply["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        }
    };
    let tests = std::fs::read_to_string(data.join("test.jsonl")).unwrap();
    let (mut base_right, mut tuned_right, mut total) = (0, 0, 0);
    for (i, line) in tests.lines().enumerate() {
        let record: Value = serde_json::from_str(line).unwrap();
        let question = record["messages"][0]["content"].as_str().unwrap().to_string();
        let expected = record["messages"][1]["content"].as_str().unwrap().trim_end_matches('.').to_string();
        if i % 2 == 0 {
            base_right += usize::from(ask("smol", question.clone()).await.contains(&expected));
        }
        let tuned = ask("lantern", question.clone()).await;
        eprintln!("{question}\n  tuned: {tuned}");
        tuned_right += usize::from(tuned.contains(&expected));
        total += 1;
    }
    assert_eq!(base_right, 0, "the base model cannot know the made-up facts");
    assert!(tuned_right * 8 >= total * 7, "the adapter answers {tuned_right} of {total} held-out questions");
}

/// Waits for job `id` to end; its final state.
async fn finished(c: &reqwest::Client, s: &TestServer, id: &str) -> Value {
    for _ in 0..1200 {
        let (_, job) = call(c, M::GET, s.url(&format!("/hub/jobs/{id}")), None).await;
        if ["completed", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or_default()) {
            return job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("job {id} did not end");
}

/// The greedy completion of a fixed prompt by `model`, or the status when it fails.
async fn greedy(c: &reqwest::Client, s: &TestServer, model: &str) -> Result<String, u16> {
    let body = json!({"model": model, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0});
    match call(c, M::POST, s.url("/v1/completions"), Some(body)).await {
        (200, res) => Ok(res["choices"][0]["text"].as_str().unwrap().to_string()),
        (st, _) => Err(st),
    }
}

/// Hub models on the tiny Llama: a second fine-tune of a name is version 2 (`name` serves it,
/// `name@1` still resolves), with a fused GGUF beside its adapter; description and tags are
/// edited; runs are listed, compared and written into an MLflow file store; deleting a version
/// moves `name` back, and deleting the model unregisters it and removes its bundles while its
/// runs stay on record.
#[tokio::test]
async fn hub_models_have_versions_and_are_deleted_whole() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let data = repo_root().join("testdata/tiny/lora/data");
    let records = std::fs::read_to_string(data.join("train.jsonl")).unwrap() + &std::fs::read_to_string(data.join("valid.jsonl")).unwrap();
    assert_eq!(upload(&c, s.url("/hub/datasets?name=chat&valid_share=0.2&test_share=0"), records).await.0, 201);
    let job = |fuse: Option<&str>| {
        let mut body = json!({"name": "tuned", "model": "tiny", "dataset": "chat", "description": "first", "tags": ["tiny"],
            "train": {"iters": 3, "batch_size": 4, "num_layers": -1, "steps_per_report": 1, "steps_per_eval": 3, "val_batches": 1, "learning_rate": 1e-2}});
        if let Some(f) = fuse {
            body["fuse"] = json!(f);
        }
        body
    };
    let bad = json!({"name": "tuned", "model": "tiny", "dataset": "chat", "fuse": "onnx"});
    assert_eq!(call(&c, M::POST, s.url("/hub/jobs"), Some(bad)).await.0, 400);
    let bad = json!({"name": "tuned", "model": "tiny", "dataset": "chat", "tags": [""]});
    assert_eq!(call(&c, M::POST, s.url("/hub/jobs"), Some(bad)).await.0, 400);
    // The tiny Llama has two blocks; hearth train's default adapts 16.
    let (st, e) = call(&c, M::POST, s.url("/hub/jobs"), Some(json!({"name": "tuned", "model": "tiny", "dataset": "chat"}))).await;
    assert_eq!(st, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("--num-layers 16 is more than the model's 2 layers"), "{e}");
    let mut runs = Vec::new();
    for fuse in [None, Some("gguf")] {
        let (st, queued) = call(&c, M::POST, s.url("/hub/jobs"), Some(job(fuse))).await;
        assert_eq!(st, 201, "{queued}");
        let id = queued["id"].as_str().unwrap().to_string();
        let done = finished(&c, &s, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        runs.push(id);
    }

    let (st, model) = call(&c, M::GET, s.url("/hub/models/tuned"), None).await;
    assert_eq!(st, 200, "{model}");
    let versions: Vec<i64> = model["versions"].as_array().unwrap().iter().map(|v| v["version"].as_i64().unwrap()).collect();
    assert_eq!(versions, [2, 1], "{model}");
    assert_eq!((model["versions"][0]["run_id"].as_str(), model["versions"][1]["run_id"].as_str()), (Some(&*runs[1]), Some(&*runs[0])));
    assert_eq!(model["versions"][0]["registered"], json!(["tuned@2", "tuned"]), "{model}");
    assert_eq!(model["versions"][1]["registered"], json!(["tuned@1"]), "{model}");
    assert!(model["versions"][0]["metrics"]["train_loss"].is_number(), "{model}");
    let fused = model["versions"][0]["fused_path"].as_str().unwrap().to_string();
    assert!(fused.ends_with("v2/fused.gguf") && std::path::Path::new(&fused).is_file(), "{model}");
    assert!(model["versions"][1]["fused_path"].is_null());
    // The fused GGUF is a model of its own.
    let register = json!({"name": "tuned-fused", "type": "model", "model_id": fused});
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(register)).await.0, 201);
    greedy(&c, &s, "tuned-fused").await.unwrap();

    let (v1, v2, latest) =
        (greedy(&c, &s, "tuned@1").await.unwrap(), greedy(&c, &s, "tuned@2").await.unwrap(), greedy(&c, &s, "tuned").await);
    assert_eq!(latest, Ok(v2.clone()), "`tuned` serves version 2");

    // Description and tags.
    let (st, edited) = call(&c, M::PATCH, s.url("/hub/models/tuned"), Some(json!({"description": "second", "tags": ["a", "b"]}))).await;
    assert_eq!((st, &edited["description"], &edited["tags"]), (200, &json!("second"), &json!(["a", "b"])), "{edited}");
    assert_eq!(call(&c, M::PATCH, s.url("/hub/models/tuned"), Some(json!({"tags": "a"}))).await.0, 400);
    assert_eq!(call(&c, M::PATCH, s.url("/hub/models/tuned"), Some(json!({"name": "x"}))).await.0, 400);
    assert_eq!(call(&c, M::PATCH, s.url("/hub/models/nope"), Some(json!({"description": "x"}))).await.0, 404);
    let (_, listed) = call(&c, M::GET, s.url("/hub/models"), None).await;
    assert_eq!(listed["models"].as_array().unwrap().len(), 1, "{listed}");

    // Runs compared, and written into an MLflow file store.
    let (st, compared) = call(&c, M::GET, s.url(&format!("/hub/runs?ids={},{}", runs[1], runs[0])), None).await;
    assert_eq!(st, 200, "{compared}");
    assert_eq!(compared["runs"][0]["id"], runs[1].as_str());
    assert!(compared["runs"][1]["last"]["val_loss"].is_number() && compared["runs"][1]["duration_secs"].is_number(), "{compared}");
    assert_eq!(call(&c, M::GET, s.url("/hub/runs?ids=run-nope"), None).await.0, 404);
    let (st, written) = call(&c, M::POST, s.url(&format!("/hub/runs/{}/mlflow", runs[0])), Some(json!({}))).await;
    assert_eq!(st, 201, "{written}");
    let run_dir = std::path::PathBuf::from(written["path"].as_str().unwrap());
    assert_eq!(run_dir, s.home.path().join("mlruns").join(written["experiment_id"].as_str().unwrap()).join(&runs[0]));
    let losses = std::fs::read_to_string(run_dir.join("metrics/train_loss")).unwrap();
    assert_eq!(losses.lines().map(|l| l.split(' ').nth(2).unwrap()).collect::<Vec<_>>(), ["1", "2", "3"], "{losses}");
    assert_eq!(std::fs::read_to_string(run_dir.join("params/iters")).unwrap(), "3");
    assert!(run_dir.join("artifacts/adapters.safetensors").is_file() && run_dir.join("artifacts/loss.svg").is_file());
    let (_, again) = call(&c, M::POST, s.url(&format!("/hub/runs/{}/mlflow", runs[1])), None).await;
    assert_eq!(again["experiment_id"], written["experiment_id"], "one experiment for the hub's runs");
    let (st, e) = call(&c, M::POST, s.url(&format!("/hub/runs/{}/mlflow", runs[0])), Some(json!({"path": "/etc/mlruns"}))).await;
    assert_eq!((st, &e["error"]["param"]), (403, &json!("path")), "{e}");

    // Deleting the newest version moves `tuned` back to version 1.
    let bundle = |v: i64| s.home.path().join(format!("exports/tuned/v{v}"));
    assert!(bundle(2).is_dir());
    assert_eq!(call(&c, M::DELETE, s.url("/hub/models/tuned?version=3"), None).await.0, 404);
    assert_eq!(call(&c, M::DELETE, s.url("/hub/models/tuned?version=2"), None).await.0, 200);
    assert!(!bundle(2).exists() && bundle(1).is_dir());
    assert_eq!(greedy(&c, &s, "tuned@2").await, Err(404));
    assert_eq!(greedy(&c, &s, "tuned").await, Ok(v1.clone()));
    let (_, model) = call(&c, M::GET, s.url("/hub/models/tuned"), None).await;
    assert_eq!(model["versions"][0]["registered"], json!(["tuned@1", "tuned"]), "{model}");

    // Deleting the model unregisters the rest; its runs stay.
    assert_eq!(call(&c, M::DELETE, s.url("/hub/models/tuned"), None).await.0, 200);
    assert_eq!(call(&c, M::GET, s.url("/hub/models/tuned"), None).await.0, 404);
    assert!(!s.home.path().join("exports/tuned").exists());
    let (_, hub_models) = call(&c, M::GET, s.url("/admin/models?registered_by=hearth-hub"), None).await;
    assert_eq!(hub_models["models"], json!([]), "{hub_models}");
    assert_eq!(greedy(&c, &s, "tuned").await, Err(404));
    let (_, all) = call(&c, M::GET, s.url("/hub/runs"), None).await;
    assert!(all["runs"].as_array().unwrap().iter().all(|r| r["removed_at"].is_number() && r["export_path"].is_null()), "{all}");
}

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
/// valid.jsonl, and at 30 steps two facts could still be confused.
fn lantern_job(name: &str) -> Value {
    json!({"name": name, "model": "smol", "dataset": "lantern", "train": {
        "iters": 40, "batch_size": 8, "learning_rate": 5e-4, "mask_prompt": true,
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

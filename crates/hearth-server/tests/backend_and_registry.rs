//! The chat backend (`/api/*`, WebSocket included) and the registry (`/admin/*`) routes, with
//! their error codes, and registrations surviving a restart.

mod common;

use common::{repo_root, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn call(c: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = c.request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn chat_backend_routes() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    use reqwest::Method as M;
    let (st, health) = call(&c, M::GET, s.url("/api/health"), None).await;
    assert_eq!((st, &health["model_loaded"]), (200, &json!(false)));
    let (st, _) = call(&c, M::POST, s.url("/api/models/tiny/load"), None).await;
    assert_eq!(st, 200);
    let (_, models) = call(&c, M::GET, s.url("/api/models"), None).await;
    assert_eq!(models["models"][0], json!({"id": "tiny", "name": "tiny", "loaded": true}));
    assert_eq!(call(&c, M::POST, s.url("/api/models/nope/load"), None).await.0, 404);

    let msgs = json!([{"role": "user", "content": "Hi"}]);
    let (st, reply) =
        call(&c, M::POST, s.url("/api/chat/completions"), Some(json!({"messages": msgs, "temperature": 0, "max_tokens": 6}))).await;
    assert_eq!(st, 200, "{reply}");
    assert_eq!(reply["message"]["role"], "assistant");
    let text = reply["message"]["content"].as_str().unwrap().to_string();

    let res = c
        .post(s.url("/api/chat/completions/stream"))
        .json(&json!({"messages": msgs, "temperature": 0, "max_tokens": 6}))
        .send()
        .await
        .unwrap();
    let events: Vec<Value> = common::sse_data(&res.text().await.unwrap()).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let streamed: String = events.iter().filter(|e| e["type"] == "token").map(|e| e["content"].as_str().unwrap()).collect();
    assert_eq!(streamed, text);
    assert_eq!(events.last().unwrap()["type"], "done");
    let (st, err) = call(&c, M::POST, s.url("/api/chat/completions"), Some(json!({"messages": msgs, "temperature": -1}))).await;
    assert_eq!((st, &err["error"]["param"]), (400, &json!("temperature")));

    let (st, _) = call(&c, M::POST, s.url("/api/models/tiny/unload"), None).await;
    assert_eq!(st, 200);
    assert_eq!(call(&c, M::GET, s.url("/api/health"), None).await.1["model_loaded"], false);
}

#[tokio::test]
async fn websocket_streams_tokens_and_survives_errors() {
    let s = TestServer::start(|_| {});
    let url = s.url("/api/chat/ws").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connects");
    async fn next<S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin>(ws: &mut S) -> Value {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.send(Message::Text("{\"type\": \"chat\", \"messages\": []}".into())).await.unwrap();
    let err = next(&mut ws).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["param"], "messages");
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "error");
    let chat = json!({"type": "chat", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 5});
    ws.send(Message::Text(chat.to_string().into())).await.unwrap();
    let mut tokens = 0;
    loop {
        let m = next(&mut ws).await;
        match m["type"].as_str().unwrap() {
            "token" => tokens += 1,
            "done" => {
                assert_eq!(m["usage"]["completion_tokens"], 5);
                break;
            }
            other => panic!("unexpected message {other}: {m}"),
        }
    }
    assert!(tokens > 0);
}

fn lora(name: &str) -> Value {
    json!({
        "name": name, "base_model": "tiny", "type": "lora",
        "adapter_path": repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors").display().to_string(),
        "config": {"lora_rank": 4, "lora_alpha": 20}, "metadata": {"note": "test"}, "registered_by": "alice",
    })
}

#[tokio::test]
async fn registry_routes_and_persistence() {
    use reqwest::Method as M;
    let exports = tempfile::tempdir().unwrap();
    let bundle = exports.path().join("run-1");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), bundle.join("adapters.safetensors")).unwrap();
    std::fs::write(bundle.join("config.json"), r#"{"lora_parameters": {"rank": 4, "scale": 20.0}}"#).unwrap();
    std::fs::write(bundle.join("metadata.json"), r#"{"name": "scanned", "base_model": "tiny"}"#).unwrap();
    let exports_dir = exports.path().to_path_buf();

    let s = TestServer::start(|o| o.exports_dir = Some(exports_dir.clone()));
    let c = reqwest::Client::new();
    assert_eq!(call(&c, M::GET, s.url("/admin/health"), None).await.0, 200);
    let (st, reg) = call(&c, M::POST, s.url("/admin/models"), Some(lora("ada"))).await;
    assert_eq!(st, 201, "{reg}");
    assert_eq!(reg["status"], "registered");
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(lora("ada"))).await.0, 409);
    let mut no_base = lora("b");
    no_base["base_model"] = "missing-model".into();
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(no_base)).await.0, 404);
    let mut no_file = lora("c");
    no_file["adapter_path"] = "/nonexistent/adapters.safetensors".into();
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(no_file)).await.0, 404);
    for bad in [json!({"base_model": "tiny"}), json!({"name": "x y"}), json!({"name": "d", "type": "lora", "base_model": "tiny"})] {
        let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad} -> {e}");
    }
    let mut bad_rank = lora("e");
    bad_rank["config"]["lora_rank"] = "four".into();
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(bad_rank)).await.1["error"]["param"], "config.lora_rank");
    let alias = json!({"name": "tiny-alias", "type": "model", "model_id": common::tiny_model(), "registered_by": "bob"});
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(alias)).await.0, 201);

    let (_, alice) = call(&c, M::GET, s.url("/admin/models?registered_by=alice"), None).await;
    assert_eq!(alice["models"].as_array().unwrap().len(), 1);
    let (_, status) = call(&c, M::GET, s.url("/admin/models/ada/status"), None).await;
    assert_eq!(status["status"], "registered");
    assert_eq!(call(&c, M::GET, s.url("/admin/models/ghost/status"), None).await.0, 404);

    // The adapter is served on top of its base model.
    let chat = json!({"model": "ada", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2});
    let (st, e) = call(&c, M::POST, s.url("/v1/chat/completions"), Some(chat)).await;
    assert_eq!((st, e["model"].as_str()), (200, Some("ada")), "{e}");

    let (st, pre) = call(&c, M::POST, s.url("/admin/models/tiny-alias/preload"), None).await;
    assert_eq!((st, &pre["status"]), (200, &json!("loaded")));
    assert_eq!(call(&c, M::GET, s.url("/admin/models/tiny-alias/status"), None).await.1["status"], "loaded");
    let (st, scan) = call(&c, M::POST, s.url("/admin/scan"), None).await;
    assert_eq!((st, &scan["registered"]), (200, &json!(["scanned"])), "{scan}");

    assert_eq!(call(&c, M::DELETE, s.url("/admin/models/tiny-alias"), None).await.0, 200);
    assert_eq!(call(&c, M::DELETE, s.url("/admin/models/tiny-alias"), None).await.0, 404);

    let home = s.stop();
    let s = TestServer::start_in(home, |_| {});
    let (_, all) = call(&c, M::GET, s.url("/admin/models"), None).await;
    let names: Vec<&str> = all["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ada", "scanned"], "registrations survive a restart");
}

/// A LoRA adapter registered on a base model answers as the model mlx-lm fused from the same
/// adapter, and differently from its base.
#[tokio::test]
async fn registered_lora_adapters_apply_on_their_base_model() {
    use reqwest::Method as M;
    let tiny = repo_root().join("testdata/tiny");
    // The fused model ships without its tokenizer, which is hf/llama's.
    let fused = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny.join("lora/fused")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fused.path().join(entry.file_name())).unwrap();
    }
    std::fs::copy(tiny.join("hf/llama/tokenizer.json"), fused.path().join("tokenizer.json")).unwrap();
    let fused_path = fused.path().display().to_string();
    let s = TestServer::start(|o| o.model.push(format!("fused={fused_path}")));
    let c = reqwest::Client::new();
    let base = json!({"name": "llama", "type": "model", "model_id": tiny.join("hf/llama").display().to_string()});
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(base)).await.0, 201);
    let mut adapter = lora("llama-lora");
    adapter["base_model"] = "llama".into();
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(adapter)).await.0, 201);
    let mut on_adapter = lora("nested");
    on_adapter["base_model"] = "llama-lora".into();
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(on_adapter)).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("base_model")), "{e}");

    let complete = |model: &str| json!({"model": model, "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0});
    let mut texts = Vec::new();
    for model in ["llama-lora", "fused", "llama"] {
        let (st, res) = call(&c, M::POST, s.url("/v1/completions"), Some(complete(model))).await;
        assert_eq!(st, 200, "{model}: {res}");
        texts.push(res["choices"][0]["text"].as_str().unwrap().to_string());
    }
    assert_eq!(texts[0], texts[1], "adapter on base = fused");
    assert_ne!(texts[0], texts[2], "the adapter changes the base model's output");
}

#[tokio::test]
async fn memory_budget_unloads_the_least_recently_used_idle_model() {
    use reqwest::Method as M;
    let other = repo_root().join("testdata/tiny/gguf/qwen2-Q8_0.gguf").display().to_string();
    // Room for one tiny model (5 MB) but not two.
    let s = TestServer::start(|o| {
        o.model.push(format!("other={other}"));
        o.memory_budget_mb = Some(8);
    });
    let c = reqwest::Client::new();
    assert_eq!(call(&c, M::POST, s.url("/api/models/tiny/load"), None).await.0, 200);
    assert_eq!(call(&c, M::POST, s.url("/api/models/other/load"), None).await.0, 200);
    let (_, health) = call(&c, M::GET, s.url("/api/health"), None).await;
    assert_eq!(health["loaded_models"], json!(["other"]));
}

/// A model the engine cannot run (an architecture it does not know) is the client's 400
/// `model_not_supported`, as an unsupported encoder is, not a server error.
#[tokio::test]
async fn an_unsupported_architecture_is_a_400() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"architectures": ["MambaForCausalLM"], "model_type": "mamba"}"#).unwrap();
    let s = TestServer::start(|o| o.model = vec![format!("odd={}", dir.path().display())]);
    let c = reqwest::Client::new();
    let body = serde_json::json!({"model": "odd", "messages": [{"role": "user", "content": "hi"}]});
    let res = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let err: serde_json::Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_supported", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("architecture"), "{err}");
}

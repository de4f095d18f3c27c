//! The chat backend (`/api/*`, WebSocket included) and the registry (`/admin/*`) routes, with
//! their error codes, registrations surviving a restart, adapters served per request, and who
//! may touch the server's files (confined paths, scoped keys).

mod common;

use common::{repo_root, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn call(c: &reqwest::Client, method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    call_with_key(c, method, url, None, body).await
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
    // The old stack's bundles give `lora_rank` and `lora_alpha`; one without either has no scale.
    for (name, config) in [("old-style", r#"{"lora_rank": 4, "lora_alpha": 80}"#), ("no-scale", "{}")] {
        let bundle = exports.path().join(name);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), bundle.join("adapters.safetensors")).unwrap();
        std::fs::write(bundle.join("config.json"), config).unwrap();
        std::fs::write(bundle.join("metadata.json"), format!(r#"{{"name": "{name}", "base_model": "tiny"}}"#)).unwrap();
    }
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
    no_file["adapter_path"] = json!(repo_root().join("testdata/none/adapters.safetensors"));
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
    assert_eq!((st, &scan["registered"]), (200, &json!(["old-style", "scanned"])), "{scan}");
    assert_eq!(scan["errors"].as_array().unwrap().len(), 1, "{scan}");
    assert!(scan["errors"][0]["error"].as_str().unwrap().contains("scale is unknown"), "{scan}");
    let (st, pre) = call(&c, M::POST, s.url("/admin/models/old-style/preload"), None).await;
    assert_eq!((st, &pre["status"]), (200, &json!("loaded")), "{pre}");

    assert_eq!(call(&c, M::DELETE, s.url("/admin/models/tiny-alias"), None).await.0, 200);
    assert_eq!(call(&c, M::DELETE, s.url("/admin/models/tiny-alias"), None).await.0, 404);

    let home = s.stop();
    let s = TestServer::start_in(home, |_| {});
    let (_, all) = call(&c, M::GET, s.url("/admin/models"), None).await;
    let names: Vec<&str> = all["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ada", "old-style", "scanned"], "registrations survive a restart");
}

/// A server with `tiny/hf/llama` registered as `llama`, and mlx-lm's fuse of `tiny/lora/adapters`
/// into it served as `fused` (the model ships without its tokenizer, which is hf/llama's).
async fn llama_and_its_fused_adapter(c: &reqwest::Client) -> (TestServer, tempfile::TempDir) {
    let tiny = repo_root().join("testdata/tiny");
    let fused = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny.join("lora/fused")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), fused.path().join(entry.file_name())).unwrap();
    }
    std::fs::copy(tiny.join("hf/llama/tokenizer.json"), fused.path().join("tokenizer.json")).unwrap();
    let fused_path = fused.path().display().to_string();
    let s = TestServer::start(|o| o.model.push(format!("fused={fused_path}")));
    let base = json!({"name": "llama", "type": "model", "model_id": tiny.join("hf/llama").display().to_string()});
    assert_eq!(call(c, reqwest::Method::POST, s.url("/admin/models"), Some(base)).await.0, 201);
    (s, fused)
}

/// mlx-lm's tiny adapter file alone (no adapter_config.json), in a folder of the server's home.
fn bare_adapter(s: &TestServer) -> std::path::PathBuf {
    let bare = s.home.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), bare.join("adapters.safetensors")).unwrap();
    bare
}

/// The greedy completion of a fixed prompt by `model`.
async fn greedy(c: &reqwest::Client, s: &TestServer, model: &str) -> String {
    let body = json!({"model": model, "prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0});
    let (st, res) = call(c, reqwest::Method::POST, s.url("/v1/completions"), Some(body)).await;
    assert_eq!(st, 200, "{model}: {res}");
    res["choices"][0]["text"].as_str().unwrap().to_string()
}

/// A LoRA adapter registered on a base model answers as the model mlx-lm fused from the same
/// adapter, and differently from its base.
#[tokio::test]
async fn registered_lora_adapters_apply_on_their_base_model() {
    use reqwest::Method as M;
    let c = reqwest::Client::new();
    let (s, _fused) = llama_and_its_fused_adapter(&c).await;
    let mut adapter = lora("llama-lora");
    adapter["base_model"] = "llama".into();
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(adapter)).await.0, 201);
    let mut on_adapter = lora("nested");
    on_adapter["base_model"] = "llama-lora".into();
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(on_adapter)).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("base_model")), "{e}");

    let texts = [greedy(&c, &s, "llama-lora").await, greedy(&c, &s, "fused").await, greedy(&c, &s, "llama").await];
    assert_eq!(texts[0], texts[1], "adapter on base = fused");
    assert_ne!(texts[0], texts[2], "the adapter changes the base model's output");
    // The adapter runs on the base model's weights, loaded once.
    let (_, health) = call(&c, M::GET, s.url("/admin/health"), None).await;
    let mut loaded: Vec<&str> = health["loaded"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    loaded.sort();
    assert_eq!(loaded, ["fused", "llama", "llama-lora"]);
    let memory = |v: Value| v["memory_bytes"].as_u64().unwrap();
    let adapter_bytes = memory(call(&c, M::GET, s.url("/admin/models/llama-lora/status"), None).await.1);
    let base_bytes = memory(call(&c, M::GET, s.url("/admin/models/llama/status"), None).await.1);
    assert!(adapter_bytes > 0 && adapter_bytes * 10 < base_bytes, "adapter {adapter_bytes} bytes, base {base_bytes}");
}

/// Registration and scan refuse what would fail to load later, with a 400 that says why; a
/// bare `adapters.safetensors` registered with its rank and alpha serves at the scale
/// `lora_alpha / lora_rank` (here mlx-lm's scale 20, so it answers as mlx-lm's fuse).
#[tokio::test]
async fn adapters_are_checked_when_registered() {
    use reqwest::Method as M;
    let c = reqwest::Client::new();
    let (s, _fused) = llama_and_its_fused_adapter(&c).await;
    let bare = bare_adapter(&s);
    let register = |name: &str, config: Value| json!({"name": name, "base_model": "llama", "adapter_path": bare.join("adapters.safetensors"), "config": config});
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(register("no-scale", json!({})))).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("config")), "{e}");
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(register("wrong-rank", json!({"lora_rank": 16, "lora_alpha": 32})))).await;
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("config.lora_rank")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("rank is 4"), "{e}");
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(register("bare", json!({"lora_rank": 4, "lora_alpha": 80})))).await;
    assert_eq!(st, 201, "{e}");
    assert_eq!(greedy(&c, &s, "bare").await, greedy(&c, &s, "fused").await);

    // A base model of another shape (one layer, 256 wide): the first tensor that does not fit is named.
    let wide = repo_root().join("testdata/tiny/gguf/llama256-Q4_K_M.gguf");
    let alias = json!({"name": "wide", "type": "model", "model_id": wide});
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(alias)).await.0, 201);
    let mut misfit = register("misfit", json!({"lora_rank": 4, "lora_alpha": 80}));
    misfit["base_model"] = "wide".into();
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), Some(misfit)).await;
    let message = e["error"]["message"].as_str().unwrap_or_default();
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("adapter_path")), "{e}");
    assert!(message.contains("the adapter's model.layers.1.mlp.down_proj.lora_a is not for a linear layer"), "{e}");
    let (_, listed) = call(&c, M::GET, s.url("/admin/models"), None).await;
    let names: Vec<&str> = listed["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bare", "llama", "wide"], "nothing refused was registered");
}

/// Requests for different adapters of one base model, and for the base itself, decode in one
/// batch; each sequence gets the tokens it gets alone.
#[tokio::test]
async fn mixed_adapters_decode_together_as_they_do_alone() {
    use reqwest::Method as M;
    let c = reqwest::Client::new();
    let (s, _fused) = llama_and_its_fused_adapter(&c).await;
    let bare = bare_adapter(&s);
    // Three adapters: mlx-lm's, and the same weights at two other scales.
    let mut models = vec!["llama".to_string()];
    for (name, alpha) in [("a20", None), ("a10", Some(40)), ("a2", Some(8))] {
        let mut reg = lora(name);
        reg["base_model"] = "llama".into();
        if let Some(alpha) = alpha {
            reg["adapter_path"] = json!(bare.join("adapters.safetensors"));
            reg["config"] = json!({"lora_rank": 4, "lora_alpha": alpha});
        }
        assert_eq!(call(&c, M::POST, s.url("/admin/models"), Some(reg)).await.0, 201);
        models.push(name.to_string());
    }
    let mut alone = Vec::new();
    for m in &models {
        alone.push(greedy(&c, &s, m).await);
    }
    assert_eq!(alone.iter().collect::<std::collections::HashSet<_>>().len(), 4, "each adapter answers differently: {alone:?}");
    let together = futures_util::future::join_all((0..8).map(|i| greedy(&c, &s, &models[i % 4]))).await;
    for (i, text) in together.iter().enumerate() {
        assert_eq!(text, &alone[i % 4], "stream {i} ({})", models[i % 4]);
    }
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

/// A request presenting `key` (as a bearer token).
async fn call_with_key(c: &reqwest::Client, method: reqwest::Method, url: String, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = c.request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("request");
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

// Who may touch the server's files: registrations name only files under $HEARTH_HOME, the
// exports directory and --allow-path (checked as written and after links), with one answer
// whether or not the file exists; and keys have scopes: an inference key gets a 403 on every
// route that manages the server, found by walking the OpenAPI document.

#[tokio::test]
async fn registrations_cannot_name_files_outside_the_allowed_directories() {
    use reqwest::Method as M;
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let home = s.home.path().canonicalize().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), outside.path().join("adapters.safetensors"))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), home.join("link-out")).unwrap();
    let escapes = [
        "/etc/passwd".to_string(),
        "/etc/no-such-file".to_string(),
        outside.path().join("adapters.safetensors").display().to_string(),
        format!("{}/../../etc/passwd", home.display()),
        home.join("link-out/adapters.safetensors").display().to_string(),
    ];
    let mut messages = Vec::new();
    for path in &escapes {
        let body = json!({"name": "x", "base_model": "tiny", "adapter_path": path, "config": {"lora_rank": 4, "lora_alpha": 80}});
        let (st, e) = call_with_key(&c, M::POST, s.url("/admin/models"), None, Some(body)).await;
        assert_eq!((st, e["error"]["param"].as_str()), (403, Some("adapter_path")), "{path}: {e}");
        let message = e["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.contains('/') || !message.contains("etc"), "{message}");
        messages.push(message);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "one answer whether or not the file exists: {messages:?}");
    let model = json!({"name": "y", "type": "model", "model_id": "/etc"});
    let (st, e) = call_with_key(&c, M::POST, s.url("/admin/models"), None, Some(model)).await;
    assert_eq!((st, e["error"]["param"].as_str()), (403, Some("model_id")), "{e}");
    // Inside the home, a real adapter is fine.
    std::fs::create_dir_all(home.join("mine")).unwrap();
    std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), home.join("mine/adapters.safetensors")).unwrap();
    let body =
        json!({"name": "mine", "base_model": "tiny", "adapter_path": home.join("mine"), "config": {"lora_rank": 4, "lora_alpha": 80}});
    assert_eq!(call_with_key(&c, M::POST, s.url("/admin/models"), None, Some(body)).await.0, 201);
}

/// Routes that change what the server holds: the registry, the store's pulls and deletions
/// (reading what it holds is inference's), the hub, ingestion.
fn manages_server(method: &str, path: &str, tag: &str) -> bool {
    matches!(tag, "registry" | "hub")
        || (tag == "model store" && method != "get")
        || path == "/api/v1/ingest"
        || (path.starts_with("/api/v1/content") && method != "get")
}

#[tokio::test]
async fn an_inference_key_cannot_manage_the_server() {
    use reqwest::Method as M;
    let s = TestServer::start(|o| {
        o.api_key = vec!["infer".into()];
        o.admin_api_key = vec!["boss".into()];
    });
    let c = reqwest::Client::new();
    let doc: Value = c.get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let tag = op["tags"][0].as_str().unwrap_or_default();
            if path == "/api/chat/ws" || tag == "server" {
                continue;
            }
            let url = s.url(&path.replace("{model_id}", "nope").replace("{name}", "nope").replace("{id}", "nope"));
            let method = M::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = (method == M::POST).then(|| json!({}));
            let (st, e) = call_with_key(&c, method.clone(), url.clone(), Some("infer"), body.clone()).await;
            if manages_server(method.as_str().to_lowercase().as_str(), path, tag) {
                assert_eq!(
                    (st, e["error"]["code"].as_str()),
                    (403, Some("insufficient_scope")),
                    "{method} {path} with an inference key: {e}"
                );
                checked += 1;
            } else {
                assert_ne!(st, 403, "{method} {path} is inference: {e}");
            }
            let (st, e) = call_with_key(&c, method.clone(), url, Some("boss"), body).await;
            assert!(st != 403 && st != 401, "{method} {path} with the admin key: {st} {e}");
        }
    }
    assert!(checked >= 20, "{checked} managing routes checked");
    let (st, _) = call_with_key(&c, M::GET, s.url("/v1/models"), Some("wrong"), None).await;
    assert_eq!(st, 401);
}

/// The web UI's conversations: saved, listed, renamed, exported as Markdown and deleted, each
/// seen only through the key it was made with; bad fields are 400s naming them.
#[tokio::test]
async fn conversations_are_kept_per_key() {
    use reqwest::Method as M;
    let s = TestServer::start(|o| o.api_key = vec!["alice".into(), "bob".into()]);
    let c = reqwest::Client::new();
    let body = json!({"model": "tiny", "messages": [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris.", "meta": {"stats": {"generated": 2}}},
    ]});
    let (st, made) = call_with_key(&c, M::POST, s.url("/api/conversations"), Some("alice"), Some(body)).await;
    assert_eq!(st, 201, "{made}");
    assert_eq!(made["title"], "What is the capital of France?");
    let id = made["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/api/conversations/{id}"));
    let (_, listed) = call_with_key(&c, M::GET, s.url("/api/conversations"), Some("alice"), None).await;
    assert_eq!((listed["conversations"][0]["id"].as_str(), listed["conversations"][0]["messages"].as_u64()), (Some(&*id), Some(2)));
    let (_, theirs) = call_with_key(&c, M::GET, s.url("/api/conversations"), Some("bob"), None).await;
    assert_eq!(theirs["conversations"], json!([]), "another key sees none");
    assert_eq!(call_with_key(&c, M::GET, url.clone(), Some("bob"), None).await.0, 404);
    assert_eq!(call_with_key(&c, M::PATCH, url.clone(), Some("bob"), Some(json!({"title": "mine"}))).await.0, 404);

    let (st, renamed) = call_with_key(&c, M::PATCH, url.clone(), Some("alice"), Some(json!({"title": "Capitals"}))).await;
    assert_eq!(
        (st, renamed["title"].as_str(), renamed["messages"][1]["meta"]["stats"]["generated"].as_u64()),
        (200, Some("Capitals"), Some(2))
    );
    let markdown = c.get(format!("{url}?format=markdown")).bearer_auth("alice").send().await.unwrap();
    assert_eq!(markdown.headers()["content-type"], "text/markdown; charset=utf-8");
    assert_eq!(
        markdown.text().await.unwrap(),
        "# Capitals\n\nModel: `tiny`\n\n## You\n\nWhat is the capital of France?\n\n## Assistant\n\nParis.\n\n"
    );
    for (bad, param) in [
        (json!({"messages": [{"role": "robot", "content": "x"}]}), "messages[0].role"),
        (json!({"messages": [{"role": "user"}]}), "messages[0].content"),
        (json!({"title": ""}), "title"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let (st, e) = call_with_key(&c, M::PATCH, url.clone(), Some("alice"), Some(bad.clone())).await;
        assert_eq!((st, e["error"]["param"].as_str()), (400, Some(param)), "{bad}: {e}");
    }
    assert_eq!(call_with_key(&c, M::DELETE, url.clone(), Some("bob"), None).await.0, 404);
    assert_eq!(call_with_key(&c, M::DELETE, url.clone(), Some("alice"), None).await.0, 200);
    assert_eq!(call_with_key(&c, M::GET, url, Some("alice"), None).await.0, 404);
}

/// `POST /api/models/convert`: the tiny Llama re-quantised into the store, streamed as it goes,
/// then served by its store name; what cannot be done is refused before anything is written.
#[tokio::test]
async fn models_are_converted_into_the_store() {
    use reqwest::Method as M;
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    for (body, status, param) in [
        (json!({"model": "tiny", "to": "onnx", "name": "x"}), 400, "to"),
        (json!({"model": "tiny", "to": "gguf", "name": "x", "gguf_type": "Q9_9"}), 400, "gguf_type"),
        (json!({"model": "tiny", "to": "gguf", "name": "x", "bits": 4}), 400, "bits"),
        (json!({"model": "tiny", "to": "mlx", "name": "x", "bits": 7}), 400, "bits"),
        (json!({"model": "tiny", "to": "mlx", "name": "../x"}), 400, "name"),
        (json!({"model": "nope", "to": "mlx", "name": "x"}), 404, "model"),
    ] {
        let (st, e) = call(&c, M::POST, s.url("/api/models/convert"), Some(body.clone())).await;
        assert_eq!((st, e["error"]["param"].as_str()), (status, Some(param)), "{body}: {e}");
    }
    let body = json!({"model": "tiny", "to": "gguf", "gguf_type": "Q4_0", "name": "tiny-q4"});
    let text = c.post(s.url("/api/models/convert")).json(&body).send().await.unwrap().text().await.unwrap();
    let events: Vec<Value> = common::sse_data(&text).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let last = events.last().unwrap();
    assert_eq!((last["event"].as_str(), last["model"]["name"].as_str()), (Some("done"), Some("local/tiny-q4")), "{text}");
    assert!(events.iter().filter(|e| e["event"] == "progress").count() > 5, "{text}");
    let (_, store) = call(&c, M::GET, s.url("/api/store"), None).await;
    assert_eq!(
        (store["models"][0]["name"].as_str(), store["models"][0]["format"].as_str()),
        (Some("local/tiny-q4"), Some("gguf")),
        "{store}"
    );
    let body = json!({"model": "local/tiny-q4", "prompt": "Hello", "max_tokens": 4});
    assert_eq!(call(&c, M::POST, s.url("/v1/completions"), Some(body)).await.0, 200);
    let again = json!({"model": "tiny", "to": "gguf", "name": "tiny-q4"});
    assert_eq!(call(&c, M::POST, s.url("/api/models/convert"), Some(again)).await.0, 409);
}

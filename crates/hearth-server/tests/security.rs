//! Who may touch the server's files: registrations name only files under $HEARTH_HOME, the
//! exports directory and --allow-path (checked as written and after links), with one answer
//! whether or not the file exists; and keys have scopes: an inference key gets a 403 on every
//! route that manages the server, found by walking the OpenAPI document.

mod common;

use common::{repo_root, TestServer};
use reqwest::Method as M;
use serde_json::{json, Value};

async fn call(c: &reqwest::Client, method: M, url: String, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
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

#[tokio::test]
async fn registrations_cannot_name_files_outside_the_allowed_directories() {
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
        let (st, e) = call(&c, M::POST, s.url("/admin/models"), None, Some(body)).await;
        assert_eq!((st, e["error"]["param"].as_str()), (403, Some("adapter_path")), "{path}: {e}");
        let message = e["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.contains('/') || !message.contains("etc"), "{message}");
        messages.push(message);
    }
    assert!(messages.windows(2).all(|w| w[0] == w[1]), "one answer whether or not the file exists: {messages:?}");
    let model = json!({"name": "y", "type": "model", "model_id": "/etc"});
    let (st, e) = call(&c, M::POST, s.url("/admin/models"), None, Some(model)).await;
    assert_eq!((st, e["error"]["param"].as_str()), (403, Some("model_id")), "{e}");
    // Inside the home, a real adapter is fine.
    std::fs::create_dir_all(home.join("mine")).unwrap();
    std::fs::copy(repo_root().join("testdata/tiny/lora/adapters/adapters.safetensors"), home.join("mine/adapters.safetensors")).unwrap();
    let body =
        json!({"name": "mine", "base_model": "tiny", "adapter_path": home.join("mine"), "config": {"lora_rank": 4, "lora_alpha": 80}});
    assert_eq!(call(&c, M::POST, s.url("/admin/models"), None, Some(body)).await.0, 201);
}

/// Routes that change what the server holds: the registry, the store's pulls and deletions,
/// the hub, ingestion.
fn manages_server(method: &str, path: &str, tag: &str) -> bool {
    matches!(tag, "registry" | "hub" | "model store")
        || path == "/api/v1/ingest"
        || (path.starts_with("/api/v1/content") && method != "get")
}

#[tokio::test]
async fn an_inference_key_cannot_manage_the_server() {
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
            let (st, e) = call(&c, method.clone(), url.clone(), Some("infer"), body.clone()).await;
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
            let (st, e) = call(&c, method.clone(), url, Some("boss"), body).await;
            assert!(st != 403 && st != 401, "{method} {path} with the admin key: {st} {e}");
        }
    }
    assert!(checked >= 20, "{checked} managing routes checked");
    let (st, _) = call(&c, M::GET, s.url("/v1/models"), Some("wrong"), None).await;
    assert_eq!(st, 401);
}

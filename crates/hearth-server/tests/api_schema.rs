//! The OpenAPI document against the router it describes, and the typed bodies' errors: every
//! route family names the exact path of an unknown field or a wrong type.

mod common;

use common::TestServer;
use serde_json::{json, Value};

/// A documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/")
}

/// Every documented operation is routed (not the fallback's 404, not a 405), and every route
/// that reads a JSON body (it refuses an unknown field) documents that body's schema.
#[tokio::test]
async fn every_documented_route_is_served_with_its_body_documented() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let doc: Value = c.get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let mut bodies = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} documents its responses");
            let url = s.url(&concrete(path));
            let req = match method.as_str() {
                "get" => c.get(url),
                "post" => c.post(url).json(&json!({"unknown_probe_field": 1})),
                "patch" => c.patch(url).json(&json!({"unknown_probe_field": 1})),
                "delete" => c.delete(url),
                other => panic!("{other} {path}: an unexpected method"),
            };
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let body: Value = res.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path} is routed");
            assert_ne!(body["error"]["message"], "no such route", "{method} {path} is routed");
            if body["error"]["code"] == "unsupported_parameter" {
                bodies += 1;
                let content = op["requestBody"]["content"].as_object().unwrap_or_else(|| panic!("{method} {path} documents its body"));
                let schema = &content["application/json"]["schema"];
                assert!(schema.as_object().is_some_and(|s| !s.is_empty()), "{method} {path}: {schema}");
            }
        }
    }
    assert_eq!(bodies, 20, "every JSON body was probed");
    // Operation ids name one operation each (clients generate a function per id).
    let mut ids: Vec<&str> =
        paths.values().flat_map(|item| item.as_object().unwrap().values()).filter_map(|op| op["operationId"].as_str()).collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique");
    for (path, method) in [("/health", "get"), ("/metrics", "get"), ("/api/chat/ws", "get"), ("/api/models/{model_id}", "delete")] {
        assert!(paths[path][method].is_object(), "{method} {path} is documented");
    }
    // Both viewers are served from the binary.
    for viewer in ["/docs/", "/redoc/"] {
        let page = c.get(s.url(viewer)).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("swagger-ui") && !page.contains("https://"), "{viewer}: {page}");
    }
    // The web UI: one shell for every page's path (deep links), its modules, nothing else.
    for page in ["/", "/inference", "/models/some/repo", "/training"] {
        let res = c.get(s.url(page)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{page}");
        assert!(res.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
        assert!(res.text().await.unwrap().contains("/ui/app.js"), "{page}");
    }
    let module = c.get(s.url("/ui/pages/chat.js")).send().await.unwrap();
    assert_eq!(module.headers()["content-type"], "text/javascript; charset=utf-8");
    for missing in ["/ui/nope.js", "/ui/../Cargo.toml", "/nowhere"] {
        assert_eq!(c.get(s.url(missing)).send().await.unwrap().status(), 404, "{missing}");
    }
}

/// An unknown field and a wrong type deep in each family's bodies are 400s naming their paths.
#[tokio::test]
async fn nested_errors_name_their_paths_on_every_route_family() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let user = |extra: Value| {
        let mut m = json!({"role": "user", "content": "hi"});
        m.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        m
    };
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [user(json!({})), user(json!({"colour": "red"}))]}),
            "messages[1].colour",
            true,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [user(json!({})), user(json!({})), user(json!({"content": 5}))]}),
            "messages[2].content",
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [user(json!({"content": [{"type": "text", "text": 1}]}))]}),
            "messages[0].content[0].text",
            false,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [user(json!({}))], "knowledge_base": {"collection": "c", "top": 1}}),
            "knowledge_base.top",
            true,
        ),
        (
            "/v1/completions",
            json!({"model": "tiny", "prompt": "x", "stream": true, "stream_options": {"include_usage": true, "extra": 1}}),
            "stream_options.extra",
            true,
        ),
        ("/v1/completions", json!({"model": "tiny", "prompt": ["x", 1.5]}), "prompt[1]", false),
        ("/api/chat/completions", json!({"messages": [user(json!({"name": 3}))]}), "messages[0].name", false),
        ("/api/chat/completions/stream", json!({"messages": [user(json!({"audio": {}}))]}), "messages[0].audio", true),
        (
            "/admin/models",
            json!({"name": "a", "type": "lora", "base_model": "tiny", "adapter_path": "/x", "config": {"lora_rank": 4, "dropout": 0.1}}),
            "config.dropout",
            true,
        ),
        ("/admin/models", json!({"name": "a", "type": "model", "model_id": "tiny", "metadata": []}), "metadata", false),
        ("/api/v1/content", json!({"text": "x", "tags": ["a", 2]}), "tags[1]", false),
        ("/api/v1/ingest", json!({"paths": ["a", {"path": "b"}]}), "paths[1]", false),
        ("/search/ask", json!({"question": "q", "limit": "three"}), "limit", false),
        ("/api/models/pull", json!({"model": "org/repo", "include": ["*.json", 7]}), "include[1]", false),
        ("/api/models/pull", json!({"model": "org/repo", "branch": "main"}), "branch", true),
        ("/hub/jobs", json!({"name": "n", "model": "tiny", "dataset": "d", "train": {"rank": "eight"}}), "train.rank", false),
        ("/hub/jobs", json!({"name": "n", "model": "tiny", "dataset": "d", "train": {"dropout": 0.1}}), "train.dropout", true),
        ("/v1/embeddings", json!({"model": "m", "input": ["a", [1, -2]]}), "input[1]", false),
        ("/v1/rerank", json!({"model": "m", "query": "q", "documents": ["a", 3]}), "documents[1]", false),
        (
            "/v1/responses",
            json!({"model": "tiny", "input": [{"role": "user", "content": [{"type": "input_text", "text": 2}]}]}),
            "input[0].content[0].text",
            false,
        ),
        (
            "/v1/messages",
            json!({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}, "extra": 1}]}]}),
            "messages[0].content[0].extra",
            true,
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": [user(json!({}))], "tools": [{"type": "function", "function": {"name": "f", "parameters": 3}}]}),
            "tools[0].function.parameters",
            false,
        ),
    ];
    for (route, body, param, unknown) in cases {
        let res = c.post(s.url(route)).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        let err: Value = res.json().await.unwrap();
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{route} {body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().contains(param), "{route}: {err}");
        let code = if unknown { "unsupported_parameter" } else { "invalid_value" };
        assert_eq!(err["error"]["code"], code, "{route} {body}: {err}");
    }
    // The WebSocket reads the same body.
    use futures_util::{SinkExt, StreamExt};
    let url = s.url("/api/chat/ws").replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let msg = json!({"type": "chat", "messages": [user(json!({"role": "wizard"}))]});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.to_string().into())).await.unwrap();
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(reply))) = ws.next().await else { panic!("a reply") };
    let reply: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!((reply["type"].as_str(), reply["error"]["param"].as_str()), (Some("error"), Some("messages[0].role")), "{reply}");
}

//! Tool calls on SmolLM2 (a real model; the fetch script installs it) through the chat
//! backend's routes and under a `--tool-format` override, with bad requests beside good ones in
//! one batch. (The official SDKs drive /v1/chat/completions in tests/sdk.)

mod common;

use common::{sse_data, TestServer};
use futures_util::future::join_all;
use serde_json::{json, Value};

fn smollm2() -> String {
    let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    format!("smol={}", path.display())
}

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40}}, "required": ["city"], "additionalProperties": false}}}])
}

fn ask(extra: Value) -> Value {
    let mut body = json!({"model": "smol", "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "max_tokens": 80,
                          "temperature": 1.0, "seed": 2});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn city(arguments: &Value) -> String {
    let args: Value = serde_json::from_str(arguments.as_str().unwrap()).unwrap();
    args["city"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_chat_backend_returns_and_streams_tool_calls() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    let body = ask(json!({"tools": weather(), "tool_choice": "required"}));
    let reply: Value = c.post(s.url("/api/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(reply["finish_reason"], "tool_calls", "{reply}");
    let call = &reply["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(!city(&call["function"]["arguments"]).is_empty());
    let text = c.post(s.url("/api/chat/completions/stream")).json(&body).send().await.unwrap().text().await.unwrap();
    let events: Vec<Value> = sse_data(&text).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[kinds.len() - 2..], ["tool_calls", "done"], "{text}");
    assert_eq!(events[kinds.len() - 1]["finish_reason"], "tool_calls");
    let streamed = &events[kinds.len() - 2]["tool_calls"][0]["function"];
    assert_eq!((&streamed["name"], &streamed["arguments"]), (&call["function"]["name"], &call["function"]["arguments"]));
}

#[tokio::test]
async fn bad_tool_requests_fail_alone_in_a_shared_batch() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    let url = s.url("/v1/chat/completions");
    let bad_schema = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "frobnicate"}}}}}]);
    let requests = (0..6).map(|i| {
        let body = match i % 3 {
            0 => ask(json!({"tools": weather(), "tool_choice": "required", "seed": i})),
            1 => ask(json!({"tools": bad_schema.clone()})),
            _ => ask(json!({"seed": i})),
        };
        let (c, url) = (c.clone(), url.clone());
        async move {
            let res = c.post(&url).json(&body).send().await.unwrap();
            (i, res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    });
    for (i, status, out) in join_all(requests).await {
        match i % 3 {
            0 => assert_eq!((status, &out["choices"][0]["finish_reason"]), (200, &json!("tool_calls")), "{out}"),
            1 => assert_eq!((status, out["error"]["param"].as_str()), (400, Some("tools[0].function.parameters")), "{out}"),
            _ => assert_eq!(status, 200, "{out}"),
        }
    }
}

/// `--tool-format hermes` on a model whose template writes no calls: the calls follow Hermes'
/// layout and still read back.
#[tokio::test]
async fn the_tool_format_can_be_set_by_flag() {
    let s = TestServer::start(|o| {
        o.model = vec![smollm2()];
        o.tool_format = Some("hermes".into());
    });
    let c = reqwest::Client::new();
    let body = ask(json!({"tools": weather(), "tool_choice": "required", "logprobs": true}));
    let out: Value = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    let raw: String = out["choices"][0]["logprobs"]["content"].as_array().unwrap().iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert!(raw.starts_with("<tool_call>\n{\"name\": \"get_weather\""), "{raw:?}");
    assert!(!city(&out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]).is_empty(), "{out}");
}

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

/// The tiny random-weight Qwen3 with Qwen3's real chat template (testdata/chat-templates), in a
/// temporary copy: the served model's format and reasoning block come from that template.
fn qwen3_with_its_template() -> (tempfile::TempDir, String) {
    let root = common::repo_root();
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root.join("testdata/tiny/hf/qwen3")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let template = std::fs::read_to_string(root.join("testdata/chat-templates/Qwen-Qwen3-0.6B.jinja")).unwrap();
    std::fs::write(dir.path().join("chat_template.jinja"), &template).unwrap();
    let config_path = dir.path().join("tokenizer_config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = template.into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let spec = format!("q3={}", dir.path().display());
    (dir, spec)
}

/// Qwen3's template renders the tools itself and teaches Hermes' `<tool_call>`: calls follow it;
/// with `enable_thinking` false (passed through `chat_template_kwargs`) the prompt closes the
/// reasoning block, so a constrained reply starts with its answer.
#[tokio::test]
async fn a_qwen3_template_sets_the_call_format_and_the_reasoning_block() {
    let (_dir, spec) = qwen3_with_its_template();
    let s = TestServer::start(|o| o.model = vec![spec]);
    let c = reqwest::Client::new();
    let url = s.url("/v1/chat/completions");
    for seed in 0..5 {
        let body = json!({"model": "q3", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": weather(),
                          "tool_choice": "required", "temperature": 1.0, "seed": seed, "max_tokens": 120, "logprobs": true,
                          "chat_template_kwargs": {"enable_thinking": false}});
        let out: Value = c.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        let raw: String =
            out["choices"][0]["logprobs"]["content"].as_array().unwrap().iter().map(|t| t["token"].as_str().unwrap()).collect();
        assert!(raw.starts_with("<tool_call>\n{\"name\": \"get_weather\""), "{raw:?}");
        let call = &out["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "get_weather", "{out}");
        city(&call["arguments"]);
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"],
                            "additionalProperties": false});
        let body = json!({"model": "q3", "messages": [{"role": "user", "content": "A digit?"}], "temperature": 1.0, "seed": seed,
                          "max_tokens": 30, "chat_template_kwargs": {"enable_thinking": false},
                          "response_format": {"type": "json_schema", "json_schema": {"name": "digit", "schema": schema}}});
        let out: Value = c.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        let message = &out["choices"][0]["message"];
        let v: Value = serde_json::from_str(message["content"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(v["n"].as_i64().is_some_and(|n| (0..=9).contains(&n)), "{v}");
        assert!(message.get("reasoning_content").is_none(), "{out}");
    }
}

//! The OpenAI-compatible routes on the tiny model: responses, streaming, `n`, log-probs,
//! seeds, stop strings, the prompt cache, batching, cancellation, back-pressure and errors.

mod common;

use std::time::Duration;

use common::{metric, sse_data, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let res = client.post(url).json(&body).send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn chat_and_completions_stream_the_same_text_they_return() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let (status, full) = post(&c, &s.url("/v1/chat/completions"), chat("Hello", json!({}))).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["object"], "chat.completion");
    assert_eq!(full["choices"][0]["finish_reason"], "length");
    assert_eq!(full["usage"]["completion_tokens"], 8);
    let text = full["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());

    let body = chat("Hello", json!({"stream": true, "stream_options": {"include_usage": true}}));
    let res = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let data = sse_data(&res.text().await.unwrap());
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(streamed, text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 8);

    let (status, comp) = post(
        &c,
        &s.url("/v1/completions"),
        json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 5, "temperature": 0, "logprobs": 3}),
    )
    .await;
    assert_eq!(status, 200, "{comp}");
    let lp = &comp["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 3);
    assert_eq!(
        lp["tokens"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<String>(),
        comp["choices"][0]["text"].as_str().unwrap()
    );
}

#[tokio::test]
async fn n_choices_share_the_prompt_and_seeds_reproduce() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let body = chat("Tell me", json!({"n": 3, "temperature": 1.0, "seed": 7, "max_tokens": 12, "logprobs": true, "top_logprobs": 2}));
    let (status, a) = post(&c, &s.url("/v1/chat/completions"), body.clone()).await;
    assert_eq!(status, 200, "{a}");
    let texts = |v: &Value| {
        v["choices"].as_array().unwrap().iter().map(|c| c["message"]["content"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(texts(&a).len(), 3);
    assert_ne!(texts(&a)[0], texts(&a)[1], "choices sample differently");
    assert_eq!(a["usage"]["completion_tokens"], 36);
    assert_eq!(a["choices"][2]["logprobs"]["content"].as_array().unwrap().len(), 12);
    let (_, b) = post(&c, &s.url("/v1/chat/completions"), body).await;
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same choices");
}

#[tokio::test]
async fn stop_strings_end_generation_and_never_appear() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let (_, full) =
        post(&c, &s.url("/v1/completions"), json!({"model": "tiny", "prompt": "abc", "max_tokens": 16, "temperature": 0})).await;
    let text = full["choices"][0]["text"].as_str().unwrap();
    // A stop string taken from the middle of the greedy continuation.
    let stop: String = text.chars().skip(text.chars().count() / 2).take(3).collect();
    let (_, cut) =
        post(&c, &s.url("/v1/completions"), json!({"model": "tiny", "prompt": "abc", "max_tokens": 16, "temperature": 0, "stop": [stop]}))
            .await;
    let out = cut["choices"][0]["text"].as_str().unwrap();
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    assert!(text.starts_with(out) && !out.contains(&stop), "{out:?} / {text:?} / {stop:?}");
}

#[tokio::test]
async fn a_second_turn_reuses_the_first_turns_cache() {
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let mut messages = vec![json!({"role": "user", "content": "Say something about caches."})];
    let body = json!({"model": "tiny", "messages": messages, "max_tokens": 10, "temperature": 0});
    let (_, first) = post(&c, &s.url("/v1/chat/completions"), body).await;
    let prompt1 = first["usage"]["prompt_tokens"].as_u64().unwrap();
    messages.push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "And again?"}));
    let (_, second) = post(&c, &s.url("/v1/chat/completions"), json!({"model": "tiny", "messages": messages, "max_tokens": 4})).await;
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached >= prompt1, "cached {cached} of a first turn of {prompt1} prompt tokens");
    let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metric(&m, "hearth_prompt_cache_hits_total") >= 1.0);
}

#[tokio::test]
async fn concurrent_streams_batch_and_cancelled_ones_are_freed() {
    let s = TestServer::start(|o| o.max_batch = Some(8));
    let c = reqwest::Client::new();
    let reqs = (0..8).map(|i| {
        let c = c.clone();
        let url = s.url("/v1/completions");
        async move {
            post(&c, &url, json!({"model": "tiny", "prompt": format!("story {i}"), "max_tokens": 24, "temperature": 0.8, "seed": i})).await
        }
    });
    for (status, body) in futures_util::future::join_all(reqs).await {
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["usage"]["completion_tokens"], 24);
    }
    // Streams dropped after their first chunk.
    for _ in 0..6 {
        let res = c
            .post(s.url("/v1/completions"))
            .json(&json!({"model": "tiny", "prompt": "long", "max_tokens": 400, "stream": true, "temperature": 0}))
            .send()
            .await
            .unwrap();
        let mut body = res.bytes_stream();
        body.next().await.unwrap().unwrap();
    }
    let mut running = f64::NAN;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        running = metric(&m, "hearth_running_sequences") + metric(&m, "hearth_queue_depth");
        if running == 0.0 {
            assert_eq!(metric(&m, "hearth_kv_cache_bytes"), 0.0);
            break;
        }
    }
    assert_eq!(running, 0.0, "cancelled sequences are freed");
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let s = TestServer::start(|o| {
        o.max_batch = Some(1);
        o.queue = Some(1);
    });
    let c = reqwest::Client::new();
    let reqs = (0..6).map(|_| {
        c.post(s.url("/v1/completions")).json(&json!({"model": "tiny", "prompt": "x", "max_tokens": 300, "temperature": 0})).send()
    });
    let responses = futures_util::future::join_all(reqs).await;
    let busy: Vec<_> = responses.iter().map(|r| r.as_ref().unwrap()).filter(|r| r.status() == 429).collect();
    assert!(!busy.is_empty(), "some requests are refused");
    assert_eq!(busy[0].headers()["retry-after"], "1");
}

#[tokio::test]
async fn invalid_requests_get_openai_shaped_errors() {
    let s = TestServer::start(|o| o.max_body_bytes = Some(4096));
    let c = reqwest::Client::new();
    let url = s.url("/v1/chat/completions");
    let cases = [
        (chat("hi", json!({"temperature": "hot"})), 400, "temperature"),
        (chat("hi", json!({"temperature": 2.5})), 400, "temperature"),
        (chat("hi", json!({"top_p": 0})), 400, "top_p"),
        (chat("hi", json!({"n": 0})), 400, "n"),
        (chat("hi", json!({"max_tokens": -1})), 400, "max_tokens"),
        (chat("hi", json!({"max_tokens": 1_000_000})), 400, "max_tokens"),
        (chat("hi", json!({"stop": ""})), 400, "stop"),
        (chat("hi", json!({"logit_bias": {"abc": 1}})), 400, "logit_bias"),
        (chat("hi", json!({"logit_bias": {"99999999": 1}})), 400, "logit_bias"),
        (chat("hi", json!({"top_logprobs": 2})), 400, "top_logprobs"),
        (chat("hi", json!({"stream_options": {"include_usage": true}})), 400, "stream_options"),
        (chat("hi", json!({"tools": []})), 400, "tools"),
        (chat("hi", json!({"model": "nope"})), 404, "model"),
        (json!({"model": "tiny", "messages": []}), 400, "messages"),
        (json!({"model": "tiny"}), 400, "messages"),
        (json!({"messages": [{"role": "user", "content": "x"}]}), 400, "model"),
        (json!({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}), 400, "messages[0].role"),
        (json!({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), 400, "messages[0].content[0].type"),
    ];
    for (body, status, param) in cases {
        let (got, err) = post(&c, &url, body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["error"]["param"], param, "{body} -> {err}");
        assert!(err["error"]["message"].is_string() && err["error"]["type"].is_string());
    }
    let res = c.post(&url).header("content-type", "application/json").body("{not json").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res = c.post(&url).json(&chat(&"x".repeat(10_000), json!({}))).send().await.unwrap();
    assert_eq!(res.status(), 413);
    assert!(res.json::<Value>().await.unwrap()["error"]["message"].is_string());
    let res = c.get(s.url("/v1/models/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let models: Value = c.get(s.url("/v1/models")).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
}

#[tokio::test]
async fn api_keys_guard_everything_but_health_and_docs() {
    let s = TestServer::start(|o| o.api_key = vec!["sekrit".into()]);
    let c = reqwest::Client::new();
    let res = c.get(s.url("/v1/models")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "invalid_api_key");
    assert_eq!(c.get(s.url("/v1/models")).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(c.get(s.url("/v1/models")).bearer_auth("sekrit").send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/health")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(s.url("/docs")).send().await.unwrap().status(), 200);
    let doc: Value = c.get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(doc["paths"]["/v1/chat/completions"]["post"].is_object());
}

#[test]
fn no_key_means_loopback_only() {
    let opts = hearth_server::ServeOptions { host: Some("0.0.0.0".parse().unwrap()), ..Default::default() };
    let home = tempfile::tempdir().unwrap();
    assert!(opts.clone().resolve(home.path()).is_err());
    let allowed = hearth_server::ServeOptions { allow_unauthenticated_remote: true, ..opts.clone() };
    assert!(allowed.resolve(home.path()).is_ok());
    let keyed = hearth_server::ServeOptions { api_key: vec!["k".into()], ..opts };
    assert!(keyed.resolve(home.path()).is_ok());
}

/// Requests real clients sent that were refused, each as the client sends it.
#[tokio::test]
async fn what_real_clients_send_is_accepted() {
    let tiny = common::tiny_model();
    let s = TestServer::start(|o| o.model.push(format!("mlx-community/Tiny-Instruct-4bit={tiny}")));
    let c = reqwest::Client::new();
    // The chat backend's viewer link.
    let res = c.get(s.url("/redoc")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<html"));
    // The chat backend writes a repo id's `/` as `__`.
    let (status, loaded) = post(&c, &s.url("/api/models/mlx-community__Tiny-Instruct-4bit/load"), json!({})).await;
    assert_eq!((status, loaded["model_id"].as_str()), (200, Some("mlx-community/Tiny-Instruct-4bit")), "{loaded}");
    let (status, unloaded) = post(&c, &s.url("/api/models/mlx-community__Tiny-Instruct-4bit/unload"), json!({})).await;
    assert_eq!((status, unloaded["status"].as_str()), (200, Some("unloaded")), "{unloaded}");

    // OpenAI SDKs' defaults that change nothing are accepted; other values are still refused.
    for extra in [json!({"store": false}), json!({"service_tier": "auto"}), json!({"service_tier": "default"})] {
        let (status, res) = post(&c, &s.url("/v1/chat/completions"), chat("hi", extra.clone())).await;
        assert_eq!(status, 200, "{extra}: {res}");
    }
    for (extra, param) in [(json!({"store": true}), "store"), (json!({"service_tier": "flex"}), "service_tier")] {
        let (status, err) = post(&c, &s.url("/v1/chat/completions"), chat("hi", extra.clone())).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{extra}: {err}");
    }

    // Several prompts: one job each, `n` choices per prompt, numbered prompt by prompt.
    let complete = |prompt: Value, extra: Value| {
        let mut body = json!({"model": "tiny", "prompt": prompt, "max_tokens": 4, "temperature": 0});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    let url = s.url("/v1/completions");
    let (_, one) = post(&c, &url, complete(json!("Once upon"), json!({}))).await;
    let (_, other) = post(&c, &url, complete(json!("abc"), json!({}))).await;
    let (status, both) = post(&c, &url, complete(json!(["abc", "Once upon"]), json!({"n": 2}))).await;
    assert_eq!(status, 200, "{both}");
    let choices = both["choices"].as_array().unwrap();
    assert_eq!(choices.iter().map(|c| c["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(choices[0]["text"], other["choices"][0]["text"]);
    assert_eq!(choices[3]["text"], one["choices"][0]["text"]);
    let prompt_tokens = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(prompt_tokens(&both), prompt_tokens(&one) + prompt_tokens(&other));
    assert_eq!(both["usage"]["completion_tokens"], 16);
    let body = complete(json!(["abc", "Once upon"]), json!({"stream": true}));
    let text = c.post(&url).json(&body).send().await.unwrap().text().await.unwrap();
    let chunks: Vec<Value> = sse_data(&text).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let streamed = |i: u64| -> String {
        chunks
            .iter()
            .flat_map(|c| c["choices"].as_array().unwrap())
            .filter(|c| c["index"] == i)
            .map(|c| c["text"].as_str().unwrap())
            .collect()
    };
    assert_eq!((streamed(0), streamed(1)), (text_of(&other), text_of(&one)));

    // `echo`: the prompt, then its continuation.
    let (status, echoed) = post(&c, &url, complete(json!("Once upon"), json!({"echo": true}))).await;
    assert_eq!(status, 200, "{echoed}");
    assert_eq!(text_of(&echoed), format!("Once upon{}", text_of(&one)));
    let body = complete(json!("Once upon"), json!({"echo": true, "stream": true}));
    let text = c.post(&url).json(&body).send().await.unwrap().text().await.unwrap();
    let streamed: String = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(streamed, text_of(&echoed));
}

fn text_of(completion: &Value) -> String {
    completion["choices"][0]["text"].as_str().unwrap().to_string()
}

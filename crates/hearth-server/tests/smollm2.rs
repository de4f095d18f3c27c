//! SmolLM2 (a real model; scripts/fetch-test-models.sh installs it): the second turn of a chat
//! is served from the prompt cache — `cached_tokens` covers the first turn and its time to
//! first token is far lower than with the cache disabled.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::StreamExt;
use serde_json::{json, Value};

fn smollm2() -> String {
    let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    format!("smol={}", path.display())
}

/// Seconds until the first content token of a streamed chat reply.
async fn time_to_first_token(c: &reqwest::Client, s: &TestServer, messages: &[Value]) -> Duration {
    let body = json!({"model": "smol", "messages": messages, "max_tokens": 2, "temperature": 0, "stream": true});
    let t0 = Instant::now();
    let res = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let mut stream = res.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = stream.next().await {
        seen += &String::from_utf8_lossy(&chunk.unwrap());
        if seen.contains("\"content\":\"") && seen.matches("data: ").count() > 1 {
            return t0.elapsed();
        }
    }
    panic!("no token in {seen}");
}

async fn first_turn(c: &reqwest::Client, s: &TestServer) -> (Vec<Value>, u64) {
    let background = "The lighthouse keeper kept a log of every ship, every storm and every gull. ".repeat(40);
    let mut messages = vec![
        json!({"role": "system", "content": format!("You answer briefly. Background: {background}")}),
        json!({"role": "user", "content": "What did the keeper write down?"}),
    ];
    let body = json!({"model": "smol", "messages": messages, "max_tokens": 12, "temperature": 0});
    let first: Value = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    let prompt_tokens = first["usage"]["prompt_tokens"].as_u64().unwrap();
    messages.push(json!({"role": "assistant", "content": first["choices"][0]["message"]["content"]}));
    messages.push(json!({"role": "user", "content": "Why?"}));
    (messages, prompt_tokens)
}

#[tokio::test]
async fn second_turn_reuses_the_first_and_starts_much_sooner() {
    let model = smollm2();
    let c = reqwest::Client::new();
    let cached = TestServer::start(|o| o.model = vec![model.clone()]);
    let uncached = TestServer::start(|o| {
        o.model = vec![model.clone()];
        o.prompt_cache_mb = Some(0);
    });

    let (messages, first_prompt) = first_turn(&c, &cached).await;
    assert!(first_prompt > 500, "a long first turn: {first_prompt} tokens");
    let body = json!({"model": "smol", "messages": messages, "max_tokens": 4, "temperature": 0});
    let second: Value = c.post(cached.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    let reused = second["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(reused >= first_prompt, "cached_tokens {reused} covers the first turn's {first_prompt} prompt tokens");

    // Time the second turn on each server, each after its own first turn (the best of two).
    let mut with_cache = Duration::MAX;
    let mut without_cache = Duration::MAX;
    for _ in 0..2 {
        let (messages, _) = first_turn(&c, &cached).await;
        with_cache = with_cache.min(time_to_first_token(&c, &cached, &messages).await);
        let (messages, _) = first_turn(&c, &uncached).await;
        without_cache = without_cache.min(time_to_first_token(&c, &uncached, &messages).await);
    }
    eprintln!("second-turn time to first token: {with_cache:?} with the prompt cache, {without_cache:?} without");
    assert!(without_cache >= with_cache * 5, "{with_cache:?} with the cache vs {without_cache:?} without");
}

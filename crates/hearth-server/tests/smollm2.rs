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

/// OpenAI's `developer` role is the system role: SmolLM2's template adds its own default
/// system prompt only when there is none.
#[tokio::test]
async fn developer_messages_are_system_messages() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    let mut prompt_tokens = Vec::new();
    for role in ["developer", "system"] {
        let body = json!({"model": "smol", "max_tokens": 1, "messages": [
            {"role": role, "content": "Answer in French."}, {"role": "user", "content": "Hello"}]});
        let res: Value = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
        prompt_tokens.push(res["usage"]["prompt_tokens"].as_u64().expect("a completion"));
    }
    assert_eq!(prompt_tokens[0], prompt_tokens[1], "a developer message renders as a system message");
}

/// The README's first request, unchanged (it sets no sampling field), gets the model's own
/// sampling settings, else llama.cpp's; `/v1/models/{id}` shows the defaults in force, and the
/// operator's flags override them.
#[tokio::test]
async fn the_readme_request_gets_sane_sampling_defaults() {
    let path = smollm2().split_once('=').unwrap().1.to_string();
    let c = reqwest::Client::new();
    let s = TestServer::start(|o| o.model = vec![format!("smollm2={path}")]);
    let body = json!({"model":"smollm2","messages":[{"role":"user","content":"What is the capital of France?"}]});
    let reply: Value = c.post(s.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
    assert!(!reply["choices"][0]["message"]["content"].as_str().unwrap().is_empty(), "{reply}");
    let model: Value = c.get(s.url("/v1/models/smollm2")).send().await.unwrap().json().await.unwrap();
    // The GGUF declares no sampling settings: llama.cpp's apply.
    let llama_cpp = json!({"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.0});
    assert_eq!(model["sampling_defaults"], llama_cpp, "{model}");

    let greedy = TestServer::start(|o| {
        o.model = vec![format!("smollm2={path}")];
        o.temp = Some(0.0);
    });
    let body = json!({"model":"smollm2","messages":[{"role":"user","content":"Name a colour."}],"max_tokens":12});
    let mut replies = Vec::new();
    for _ in 0..2 {
        let reply: Value = c.post(greedy.url("/v1/chat/completions")).json(&body).send().await.unwrap().json().await.unwrap();
        replies.push(reply["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(replies[0], replies[1], "--temp 0 makes requests without a temperature greedy");
    let model: Value = c.get(greedy.url("/v1/models/smollm2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(model["sampling_defaults"]["temperature"], 0.0, "{model}");
}

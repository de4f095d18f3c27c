//! `response_format` and vLLM's `guided_*` fields on SmolLM2 (a real model; the fetch script
//! installs it), sampled at temperature 1 by concurrent requests (so they share batches): every
//! output parses and validates; bad grammars are 400s naming the field.

mod common;

use common::TestServer;
use futures_util::future::join_all;
use serde_json::{json, Value};

fn smollm2() -> String {
    let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    format!("smol={}", path.display())
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let res = c.post(url).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// 20 seeded chat replies at temperature 1 with `extra` fields, run concurrently.
async fn twenty(c: &reqwest::Client, s: &TestServer, question: &str, extra: Value) -> Vec<String> {
    let url = s.url("/v1/chat/completions");
    let replies = (0..20).map(|seed| {
        let mut body = json!({"model": "smol", "messages": [{"role": "user", "content": question}], "temperature": 1.0, "seed": seed, "max_tokens": 300});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post(c, &url, body)
    });
    join_all(replies)
        .await
        .into_iter()
        .map(|(status, out)| {
            assert_eq!(status, 200, "{out}");
            out["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn json_outputs_parse_and_validate_every_time() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    for text in twenty(&c, &s, "Describe a cat as JSON.", json!({"response_format": {"type": "json_object"}})).await {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v.is_object(), "{text}");
    }
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "colour": {"type": "string", "enum": ["red", "green", "blue"]},
            "scores": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 10}, "minItems": 1, "maxItems": 3}
        },
        "required": ["name", "colour", "scores"],
        "additionalProperties": false
    });
    let format = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "person", "strict": true, "schema": schema}}});
    for text in twenty(&c, &s, "Make up a person.", format).await {
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 3, "{text}");
        assert!(o["name"].as_str().is_some_and(|n| n.chars().count() <= 40), "{text}");
        assert!(["red", "green", "blue"].contains(&o["colour"].as_str().unwrap()), "{text}");
        let scores = o["scores"].as_array().unwrap();
        assert!((1..=3).contains(&scores.len()) && scores.iter().all(|x| x.as_i64().is_some_and(|x| (0..=10).contains(&x))), "{text}");
    }
}

#[tokio::test]
async fn guided_fields_constrain_completions_and_chat() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    let options = ["positive", "negative", "neutral"];
    let body = json!({"model": "smol", "prompt": "Review: I loved it. Sentiment:", "n": 4, "temperature": 1.0, "seed": 1, "guided_choice": options});
    let (status, out) = post(&c, &s.url("/v1/completions"), body).await;
    assert_eq!(status, 200, "{out}");
    for choice in out["choices"].as_array().unwrap() {
        assert!(options.contains(&choice["text"].as_str().unwrap()), "{choice}");
    }
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "A date?"}], "guided_regex": "[0-9]{4}-[0-9]{2}-[0-9]{2}", "max_tokens": 20});
    let (status, out) = post(&c, &s.url("/v1/chat/completions"), body).await;
    assert_eq!(status, 200, "{out}");
    let text = out["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-', "{text:?}");
}

#[tokio::test]
async fn bad_constraints_are_400s_naming_the_field() {
    let s = TestServer::start(|o| o.model = vec![smollm2()]);
    let c = reqwest::Client::new();
    let chat = |extra: Value| {
        let mut body = json!({"model": "smol", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, param) in [
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}}),
            "response_format.json_schema.name",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/nowhere"}}}}),
            "response_format.json_schema.schema",
        ),
        (json!({"response_format": {"type": "xml"}}), "response_format.type"),
        (json!({"guided_regex": "(unclosed"}), "guided_regex"),
        (json!({"guided_grammar": "start: missing_rule"}), "guided_grammar"),
        (json!({"guided_choice": []}), "guided_choice"),
        (json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}), "guided_regex"),
    ] {
        let (status, err) = post(&c, &s.url("/v1/chat/completions"), chat(extra.clone())).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{extra}: {err}");
    }
    // The server is still serving.
    let (status, _) = post(&c, &s.url("/v1/chat/completions"), chat(json!({"response_format": {"type": "text"}}))).await;
    assert_eq!(status, 200);
}

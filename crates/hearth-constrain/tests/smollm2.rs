//! The real SmolLM2-135M-Instruct (scripts/fetch-test-models.sh) sampled at temperature 1
//! under constraints: every output parses and validates, for every seed.

use std::sync::{Arc, OnceLock};

use hearth_constrain::{Grammar, Grammars};
use hearth_engine::LoadedModel;
use hearth_runtime::{GenerateParams, Request, Runtime, RuntimeConfig, SamplingParams, LLAMA_CPP_SAMPLING};
use hearth_tokenizer::RenderOptions;
use serde_json::{json, Value};

fn smollm2() -> &'static (LoadedModel, Grammars) {
    static MODEL: OnceLock<(LoadedModel, Grammars)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is not installed: run scripts/fetch-test-models.sh");
        let model = LoadedModel::load(&path).unwrap();
        let end_of_turn = model.tokenizer.token_to_id("<|im_end|>").unwrap();
        let grammars = Grammars::new(model.tokenizer.clone(), end_of_turn).unwrap();
        (model, grammars)
    })
}

/// `n` seeded completions of `question` at temperature 1 under `grammar`, each of at most
/// `max_tokens`.
fn sample(question: &str, grammar: &Grammar, n: u64, max_tokens: usize) -> Vec<String> {
    let (model, grammars) = smollm2();
    let messages = [json!({"role": "user", "content": question})];
    let text = model
        .chat_template
        .as_ref()
        .unwrap()
        .render(&messages, &RenderOptions { add_generation_prompt: true, ..Default::default() })
        .unwrap();
    let prompt = model.tokenizer.encode(&text, false).unwrap();
    let mut rt = Runtime::new(model, RuntimeConfig::single(2048), Arc::new(()), Default::default());
    (0..n)
        .map(|seed| {
            let params = GenerateParams {
                max_tokens,
                // As the server samples a request giving only `temperature` and `seed`.
                sampling: SamplingParams { temperature: 1.0, seed: Some(seed), ..SamplingParams::from_settings(LLAMA_CPP_SAMPLING) },
                ..Default::default()
            };
            let req = Request {
                processor: Some(grammars.constraint(grammar, params.max_tokens).unwrap()),
                ..Request::new(prompt.clone(), params)
            };
            let done = rt.complete(req, |_| true).unwrap();
            // A closed object may end on `max_tokens` rather than the end-of-turn token.
            done.text
        })
        .collect()
}

/// Even when `max_tokens` would cut it: the object is closed in time.
#[test]
fn json_object_output_always_parses() {
    for max_tokens in [300, 24] {
        for (seed, text) in sample("Describe a cat as JSON.", &Grammar::JsonObject, 20, max_tokens).iter().enumerate() {
            let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("seed {seed}, {max_tokens} tokens: {e}: {text:?}"));
            assert!(v.is_object(), "seed {seed}: {text}");
        }
    }
}

#[test]
fn json_schema_output_always_validates() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "colour": {"enum": ["red", "green", "blue"]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
            "address": {"$ref": "#/$defs/address"}
        },
        "required": ["name", "age", "colour", "tags", "address"],
        "additionalProperties": false,
        "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"], "additionalProperties": false}}
    });
    for (seed, text) in sample("Make up a person.", &Grammar::JsonSchema(schema), 20, 300).iter().enumerate() {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("seed {seed}: {e}: {text:?}"));
        let o = v.as_object().unwrap();
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 5, "seed {seed}: {text}");
        assert!(o["name"].as_str().is_some_and(|s| s.chars().count() <= 40), "seed {seed}: {text}");
        assert!(o["age"].as_i64().is_some_and(|a| (0..=150).contains(&a)), "seed {seed}: {text}");
        assert!(["red", "green", "blue"].contains(&o["colour"].as_str().unwrap()), "seed {seed}: {text}");
        let tags = o["tags"].as_array().unwrap();
        assert!(tags.len() <= 3 && tags.iter().all(|t| t.as_str().is_some_and(|s| s.chars().count() <= 20)), "seed {seed}: {text}");
        let address = o["address"].as_object().unwrap();
        assert!(address.len() == 1 && address["city"].is_string(), "seed {seed}: {text}");
    }
}

#[test]
fn regex_and_choice_outputs_match() {
    for text in sample("What year did the war end?", &Grammar::Regex(r"[12][0-9]{3}".into()), 5, 16) {
        assert!(text.len() == 4 && text.chars().all(|c| c.is_ascii_digit()), "{text:?}");
    }
    let options = vec!["yes".to_string(), "no".to_string(), "maybe so".to_string()];
    for text in sample("Is the sky blue?", &Grammar::Choice(options.clone()), 5, 16) {
        assert!(options.contains(&text), "{text:?}");
    }
}

#[test]
fn bad_grammars_are_refused_when_compiled() {
    let (_, grammars) = smollm2();
    for bad in [
        Grammar::JsonSchema(json!({"type": "frobnicate"})),
        Grammar::JsonSchema(json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})),
        // Keywords llguidance cannot enforce are refused, never ignored.
        Grammar::JsonSchema(json!({"type": "array", "uniqueItems": true})),
        Grammar::JsonSchema(json!({"not": {"type": "string"}})),
        Grammar::JsonSchema(json!({"type": "string", "format": "frobnicate"})),
        Grammar::Regex("(unclosed".into()),
        Grammar::Lark("start: undefined_rule".into()),
    ] {
        assert!(grammars.constraint(&bad, 100).is_err(), "{bad:?} was accepted");
    }
}

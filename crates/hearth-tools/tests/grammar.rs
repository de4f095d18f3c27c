//! The grammar of each format, compiled by llguidance against a real vocabulary (SmolLM2's,
//! which the tiny fixtures share): it takes what the format's model writes, and refuses a
//! call of an unknown function or arguments off their schema. Markers a vocabulary holds as
//! special tokens are matched as those tokens.

use hearth_constrain::{Grammar, Grammars};
use hearth_tokenizer::Tokenizer;
use hearth_tools::{Choice, Format, Tool};
use serde_json::{json, Value};

fn vocabulary(special: &[&str]) -> (Tokenizer, Grammars) {
    let path = format!("{}/../../testdata/tiny/hf/qwen2/tokenizer.json", env!("CARGO_MANIFEST_DIR"));
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let added = json["added_tokens"].as_array_mut().unwrap();
    for (i, marker) in special.iter().enumerate() {
        added.push(json!({"id": 49152 + i, "content": marker, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("hearth-tools-grammar-{}-{unique}.json", std::process::id()));
    std::fs::write(&file, json.to_string()).unwrap();
    let tokenizer = Tokenizer::from_file(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let eos = tokenizer.token_to_id("<|im_end|>").unwrap();
    let grammars = Grammars::new(tokenizer.clone(), eos).unwrap();
    (tokenizer, grammars)
}

fn tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "get_weather".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false}),
        },
        Tool {
            name: "get_time".into(),
            description: None,
            parameters: json!({"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"], "additionalProperties": false}),
        },
    ]
}

/// Whether `grammar` lets the model write `text` and then end its turn.
fn takes(vocab: &(Tokenizer, Grammars), grammar: &Grammar, text: &str) -> bool {
    let (tokenizer, grammars) = vocab;
    let mut constraint = grammars.constraint(grammar, 4096).unwrap();
    let eos = tokenizer.token_to_id("<|im_end|>").unwrap();
    let mut ids = tokenizer.encode(text, false).unwrap();
    ids.push(eos);
    ids.into_iter().all(|t| {
        let mut logits = vec![0.0f32; tokenizer.vocab_size()];
        constraint.process(&mut logits);
        logits[t as usize] != f32::NEG_INFINITY && constraint.accept(t).is_ok()
    })
}

#[test]
fn each_format_takes_its_calls_and_nothing_else() {
    let vocab = vocabulary(&[]);
    let tools = tools();
    let none = |_: &str| None;
    let cases = [
        (Format::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>", "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>"),
        (Format::Llama3, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}", "{\"name\": \"get_time\", \"parameters\": {\"zone\": \"PST\"}}"),
        (Format::Mistral, "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]", "[TOOL_CALLS][{\"name\": \"get_date\", \"arguments\": {}}]"),
        (Format::MistralArgs, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{\"zone\": \"UTC\"}", "[TOOL_CALLS]get_weather[ARGS]{}"),
        (Format::Phi4, "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]<|/tool_call|>", "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": 3}}]<|/tool_call|>"),
        (Format::Generic, "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}, {\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}]}", "{\"tool_calls\": []}"),
    ];
    for (format, two_calls, bad) in cases {
        let required = format.grammar(&tools, &Choice::Required, true, &none);
        assert!(takes(&vocab, &required, two_calls), "{format:?} required: {two_calls}");
        assert!(!takes(&vocab, &required, bad), "{format:?} took {bad}");
        assert!(!takes(&vocab, &required, "Hello"), "{format:?}: text where a call is required");
        let single = format.grammar(&tools, &Choice::Required, false, &none);
        assert!(!takes(&vocab, &single, two_calls), "{format:?}: two calls without parallel_tool_calls");
        let named = format.grammar(&tools, &Choice::Function("get_time".into()), true, &none);
        assert!(!takes(&vocab, &named, two_calls), "{format:?}: get_weather called where get_time is named");
        let auto = format.grammar(&tools, &Choice::Auto, true, &none);
        assert!(takes(&vocab, &auto, two_calls), "{format:?} auto: {two_calls}");
        assert!(!takes(&vocab, &auto, bad), "{format:?} auto took {bad}");
        let text = if format == Format::Generic { "{\"response\": \"It is sunny.\"}" } else { "It is sunny." };
        assert!(takes(&vocab, &auto, text), "{format:?}: auto takes an answer");
    }
    // Text, then a call once its marker appears.
    let auto = Format::Hermes.grammar(&tools, &Choice::Auto, true, &none);
    assert!(takes(&vocab, &auto, "Let me look.\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>"));
    assert!(!takes(&vocab, &auto, "Let me look.\n<tool_call>\nnot json"));
}

#[test]
fn markers_held_as_special_tokens_are_matched_as_tokens() {
    let vocab = vocabulary(&["<tool_call>", "</tool_call>"]);
    let special = |m: &str| vocab.0.token_to_id(m).filter(|&id| vocab.0.is_special(id));
    let tools = tools();
    let call = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>";
    for choice in [Choice::Required, Choice::Auto] {
        let grammar = Format::Hermes.grammar(&tools, &choice, true, &special);
        let Grammar::Lark(lark) = &grammar else { panic!() };
        assert!(lark.contains("<[49152]>"), "{lark}");
        assert!(takes(&vocab, &grammar, call), "{choice:?}");
        assert!(takes(&vocab, &grammar, &format!("Sure.{call}")) == (choice == Choice::Auto), "{choice:?}");
    }
}

#[test]
fn a_constraint_holds_after_the_reasoning_block() {
    let vocab = vocabulary(&[]);
    let think = hearth_tools::Reasoning::detect("{{ '</think>' }}").unwrap();
    let schema = Grammar::JsonSchema(
        json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"], "additionalProperties": false}),
    );
    let after = think.then(&schema, false, &|_| None);
    assert!(takes(&vocab, &after, "<think>\nThe user wants {a}; 3 {will} do.\n</think>\n\n{\"a\": 3}"));
    assert!(takes(&vocab, &after, "{\"a\": 3}"), "the block is optional");
    assert!(!takes(&vocab, &after, "<think>x</think>\n\nplain text"));
    assert!(!takes(&vocab, &after, "<think>x</think>{\"a\": 3}</think>"));
    // The prompt opened the block: the reply starts inside it.
    let opened = think.then(&schema, true, &|_| None);
    assert!(takes(&vocab, &opened, "Some thought.\n</think>\n\n{\"a\": 1}"));
    assert!(!takes(&vocab, &opened, "{\"a\": 1}"));
    let tools = Format::Hermes.grammar(&tools(), &Choice::Required, true, &|_| None);
    let call = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}\n</tool_call>";
    assert!(takes(&vocab, &think.then(&tools, false, &|_| None), &format!("<think>time?</think>\n{call}")));
}

/// A vocabulary holding `<think>`/`</think>` as special tokens: the block's markers are matched
/// as those tokens, and the answer after it is still held to its grammar (a user's Lark grammar
/// keeps its own rules, here one named like the block's).
#[test]
fn a_reasoning_block_of_special_tokens_is_matched_as_tokens() {
    let vocab = vocabulary(&["<think>", "</think>"]);
    let special = |m: &str| vocab.0.token_to_id(m).filter(|&id| vocab.0.is_special(id));
    let think = hearth_tools::Reasoning::detect("</think>").unwrap();
    let user = Grammar::Lark("%llguidance {}\nstart: lead \"!\"\nlead: \"yes\" | \"no\"".into());
    let after = think.then(&user, false, &special);
    assert!(takes(&vocab, &after, "<think>Let me see.</think>\nyes!"));
    assert!(takes(&vocab, &after, "no!"), "the block is optional");
    assert!(!takes(&vocab, &after, "<think>Let me see.</think>\nmaybe!"));
    let opened = think.then(&user, true, &special);
    assert!(takes(&vocab, &opened, "Hmm.</think>yes!"));
}

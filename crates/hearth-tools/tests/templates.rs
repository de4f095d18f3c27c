//! Each family's real chat template (testdata/chat-templates, origins in its ORIGIN.md) writes
//! an assistant turn with tool calls; reading that text back, whole or a character at a time,
//! gives the same calls, and the format is the one detected from the template.

use hearth_tokenizer::{ChatTemplate, RenderOptions};
use hearth_tools::{prepare_messages, Choice, Delta, Format, Reader, Reasoning, Tool};
use serde_json::{json, Value};

fn template(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../../testdata/chat-templates/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn tools() -> Vec<Tool> {
    let city = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let zone = json!({"type": "object", "properties": {"zone": {"type": "string"}, "utc": {"type": "boolean"}}, "required": ["zone"]});
    vec![
        Tool { name: "get_weather".into(), description: Some("The weather in a city".into()), parameters: city },
        Tool { name: "get_time".into(), description: Some("The time in a zone".into()), parameters: zone },
    ]
}

/// The text a template renders for an assistant turn making `calls` (name, arguments), up to
/// its end-of-turn marker (where generation stops).
fn rendered_turn(src: &str, format: Format, calls: &[(&str, Value)]) -> String {
    let t = ChatTemplate::new(src, Some("<s>".into()), Some("</s>".into())).unwrap();
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| json!({"id": format!("call{i}abcd"), "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
        .collect();
    let user = json!({"role": "user", "content": "What is the weather in Paris, and the time in Tokyo?"});
    let assistant = json!({"role": "assistant", "content": null, "tool_calls": tool_calls});
    let tools = tools();
    let offered = Some((tools.as_slice(), &Choice::Auto));
    let opts = |generation| RenderOptions {
        add_generation_prompt: generation,
        tools: format.native().then(|| tools.iter().map(Tool::to_openai).collect()),
        ..Default::default()
    };
    let head = t.render(&prepare_messages(format, vec![user.clone()], offered).unwrap(), &opts(true)).unwrap();
    let whole = t.render(&prepare_messages(format, vec![user, assistant], offered).unwrap(), &opts(false)).unwrap();
    let turn = whole.strip_prefix(head.as_str()).unwrap_or_else(|| panic!("the turn does not extend the prompt:\n{head}\n---\n{whole}"));
    let end = ["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "</s>", "<|end|>"].iter().filter_map(|m| turn.find(m)).min().unwrap_or(turn.len());
    turn[..end].to_string()
}

fn read(format: Format, reasoning: Option<Reasoning>, text: &str, step: usize) -> (Vec<Delta>, hearth_tools::Reply) {
    let mut reader = Reader::new(Some(format), reasoning, false);
    let mut deltas = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(step) {
        deltas.extend(reader.push(&piece.iter().collect::<String>()));
    }
    deltas.extend(reader.finish());
    (deltas, reader.reply().clone())
}

#[test]
fn every_family_reads_back_its_own_calls() {
    let families = [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", Format::Hermes, true),
        ("Qwen-Qwen3-0.6B.jinja", Format::Hermes, true),
        ("NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", Format::Hermes, true),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", Format::Llama3, false),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", Format::Llama3, false),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", Format::Mistral, true),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", Format::MistralArgs, true),
        ("microsoft-Phi-4-mini-instruct.jinja", Format::Phi4, true),
    ];
    for (file, expected, parallel) in families {
        let src = template(file);
        let format = Format::detect(&src);
        assert_eq!(format, expected, "{file}");
        let mut calls = vec![("get_weather", json!({"city": "Paris"}))];
        if parallel {
            calls.push(("get_time", json!({"zone": "Asia/Tokyo", "utc": false})));
        }
        // Phi-4-mini's template does not write calls: they are written as the model does.
        let turn = if format == Format::Phi4 {
            let list: Vec<Value> = calls.iter().map(|(n, a)| json!({"name": n, "arguments": a})).collect();
            format!("<|tool_call|>{}<|/tool_call|>", serde_json::to_string(&list).unwrap())
        } else {
            rendered_turn(&src, format, &calls)
        };
        let reasoning = Reasoning::detect(&src);
        let (_, whole) = read(format, reasoning, &turn, usize::MAX);
        assert_eq!(whole.content, "", "{file}: {turn:?}");
        let got: Vec<(String, Value)> = whole.calls.iter().map(|c| (c.name.clone(), serde_json::from_str(&c.arguments).unwrap())).collect();
        let want: Vec<(String, Value)> = calls.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
        assert_eq!(got, want, "{file}: {turn:?}");
        // Streamed a character at a time: the pieces add up to the same calls.
        let (deltas, streamed) = read(format, reasoning, &turn, 1);
        assert_eq!(streamed.calls.len(), whole.calls.len());
        for (s, w) in streamed.calls.iter().zip(&whole.calls) {
            assert_eq!((&s.name, &s.arguments), (&w.name, &w.arguments), "{file}");
        }
        let mut args = vec![String::new(); calls.len()];
        for d in deltas {
            if let Delta::Arguments { index, text } = d {
                args[index] += &text;
            }
        }
        assert_eq!(args, whole.calls.iter().map(|c| c.arguments.clone()).collect::<Vec<_>>(), "{file}");
    }
}

#[test]
fn text_before_a_call_is_content_and_a_partial_marker_is_held_back() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let mut reader = Reader::new(Some(Format::Hermes), None, false);
    let first = reader.push("Let me check.\n<tool_");
    assert_eq!(first, vec![Delta::Content("Let me check.".into())], "the marker's start is not content");
    reader.push(&text["Let me check.\n<tool_".len()..]);
    reader.finish();
    assert_eq!(reader.reply().content, "Let me check.");
    assert_eq!(reader.reply().calls[0].arguments, "{\"city\": \"Paris\"}");
    // Plain text that only looked like a marker's start is content once the reply ends.
    let mut reader = Reader::new(Some(Format::Hermes), None, false);
    reader.push("a < b and <tool_");
    reader.finish();
    assert_eq!(reader.reply().content, "a < b and <tool_");
}

#[test]
fn reasoning_is_split_from_the_answer() {
    let qwen3 = Reasoning::detect(&template("Qwen-Qwen3-0.6B.jinja")).unwrap();
    let text = "<think>\nThe user wants Paris.\n</think>\n\nParis it is.";
    for step in [1, 3, usize::MAX] {
        let mut reader = Reader::new(None, Some(qwen3), false);
        let chars: Vec<char> = text.chars().collect();
        let mut reasoning = String::new();
        for piece in chars.chunks(step.min(chars.len())) {
            for d in reader.push(&piece.iter().collect::<String>()) {
                if let Delta::Reasoning(r) = d {
                    reasoning += &r;
                }
            }
        }
        reader.finish();
        assert_eq!(reader.reply().reasoning.as_deref(), Some("The user wants Paris."));
        assert_eq!(reasoning, "The user wants Paris.");
        assert_eq!(reader.reply().content, "Paris it is.");
    }
    // DeepSeek-R1's prompt opens the block: the reply starts inside it.
    let r1 = template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja");
    let t = ChatTemplate::new(&r1, Some("<s>".into()), Some("</s>".into())).unwrap();
    let mut opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
    opts.extra.insert("enable_thinking".into(), true.into());
    let prompt = t.render(&[json!({"role": "user", "content": "hi"})], &opts).unwrap();
    let think = Reasoning::detect(&r1).unwrap();
    assert!(think.opened_by(&prompt), "{prompt:?}");
    let mut reader = Reader::new(None, Some(think), true);
    reader.push("Greeting.\n</think>\n\nHello!");
    reader.finish();
    assert_eq!((reader.reply().reasoning.as_deref(), reader.reply().content.as_str()), (Some("Greeting."), "Hello!"));
    // No block at all: everything is the answer.
    let mut reader = Reader::new(None, Some(think), false);
    reader.push("Hello!");
    reader.finish();
    assert_eq!((reader.reply().reasoning.as_deref(), reader.reply().content.as_str()), (None, "Hello!"));
}

#[test]
fn generic_replies_are_json_answers_or_calls() {
    let mut reader = Reader::new(Some(Format::Generic), None, false);
    let mut content = String::new();
    for piece in ["{\"resp", "onse\": \"Hi \\u00e9", "t\\\"", "é\"}"] {
        for d in reader.push(piece) {
            if let Delta::Content(c) = d {
                content += &c;
            }
        }
    }
    reader.finish();
    assert_eq!(content, "Hi ét\"é");
    let mut reader = Reader::new(Some(Format::Generic), None, false);
    reader.push(
        "{\"tool_calls\": [{\"name\": \"get_time\", \"arguments\": {\"zone\": \"UTC\"}}, {\"name\": \"get_weather\", \"arguments\": {}}]}",
    );
    reader.finish();
    let names: Vec<&str> = reader.reply().calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_time", "get_weather"]);
}

#[test]
fn a_tool_result_must_answer_a_call() {
    let messages = vec![
        json!({"role": "user", "content": "hi"}),
        json!({"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
        json!({"role": "tool", "tool_call_id": "b", "content": "1"}),
    ];
    let err = prepare_messages(Format::Hermes, messages.clone(), None).unwrap_err();
    assert_eq!(err.param, "messages[2].tool_call_id");
    let mut bad = messages;
    bad[1]["tool_calls"][0]["function"]["arguments"] = "{oops".into();
    assert_eq!(prepare_messages(Format::Hermes, bad, None).unwrap_err().param, "messages[1].tool_calls[0].function.arguments");
}

/// Characters outside the Basic Multilingual Plane come as surrogate pairs in JSON: a generic
/// reply decodes them whole, however the pieces fall.
#[test]
fn generic_replies_decode_surrogate_pairs() {
    let text = "{\"response\": \"Nice \\ud83d\\ude00 day \\u00e9\"}";
    for step in [1, 2, 5, 64] {
        let (_, reply) = read(Format::Generic, None, text, step);
        assert_eq!(reply.content, "Nice 😀 day é", "pieces of {step}");
    }
}

/// Llama's `<|python_tag|>` belongs to the call, not to the text.
#[test]
fn a_python_tag_is_not_content() {
    let (_, reply) = read(Format::Llama3, None, "<|python_tag|>{\"name\": \"get_time\", \"parameters\": {\"zone\": \"UTC\"}}", 3);
    assert_eq!((reply.content.as_str(), reply.calls.len()), ("", 1));
}

/// Earlier calls given with their arguments as an object are taken as they are; a turn's text
/// beside its calls is kept when the calls are written as text.
#[test]
fn earlier_calls_keep_their_arguments_and_text() {
    let messages = vec![
        json!({"role": "user", "content": "hi"}),
        json!({"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}),
        json!({"role": "tool", "tool_call_id": "a", "content": "1"}),
    ];
    let native = prepare_messages(Format::Hermes, messages.clone(), None).unwrap();
    assert_eq!(native[1]["tool_calls"][0]["function"]["arguments"], json!({"x": 1}));
    let text = prepare_messages(Format::Generic, messages.clone(), None).unwrap();
    assert!(text[1]["content"].as_str().unwrap().starts_with("Checking.\n{\"tool_calls\""), "{}", text[1]);
    let mut bad = messages;
    bad[1]["tool_calls"][0]["function"]["arguments"] = json!(3);
    assert_eq!(prepare_messages(Format::Hermes, bad, None).unwrap_err().param, "messages[1].tool_calls[0].function.arguments");
}

mod common;

use common::*;
use hearth_tokenizer::{find_chat_template, read_special_tokens, ChatTemplate, RenderOptions, TokenizerError};
use serde_json::{json, Value};

fn messages(v: &Value) -> Vec<Value> {
    v.as_array().unwrap().clone()
}

#[test]
fn smollm2_fixture_renders_and_ids() {
    let source = std::fs::read_to_string(testdata("tiny/hf/llama/chat_template.jinja")).unwrap();
    let template = ChatTemplate::new(&source, Some("<|im_start|>".into()), Some("<|im_end|>".into())).unwrap();
    let tok = smollm2();
    let fixture = read_json(testdata("smollm2/chat_template.json"));
    for case in fixture["cases"].as_array().unwrap() {
        let opts = RenderOptions { add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(), ..Default::default() };
        let rendered = template.render(&messages(&case["messages"]), &opts).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap());
        assert_eq!(tok.encode(&rendered, false).unwrap(), ids(&case["ids"]));
    }
}

/// Expected renders come from tests/data/render_expected.py (Jinja2 set up as transformers does).
#[test]
fn real_world_templates_with_tools() {
    let cases = read_json(local_data("chat_cases.json"));
    let today = chrono::Local::now().format("%d %b %Y").to_string();
    for case in cases["cases"].as_array().unwrap() {
        let name = case["template"].as_str().unwrap();
        let source = std::fs::read_to_string(local_data(name)).unwrap();
        let token = |k: &str| case[k].as_str().map(str::to_string);
        let template = ChatTemplate::new(&source, token("bos_token"), token("eos_token")).unwrap();
        let opts = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: case.get("tools").map(messages),
            documents: None,
            extra: case.get("extra").and_then(Value::as_object).cloned().unwrap_or_default(),
        };
        let rendered = template.render(&messages(&case["messages"]), &opts).unwrap();
        // The generator pinned strftime_now to 01 Jan 2030; ours gives today.
        let want = case["rendered"].as_str().unwrap().replace("01 Jan 2030", &today);
        assert_eq!(rendered, want, "{name}");
    }
}

#[test]
fn raise_exception_is_an_error_with_its_message() {
    let source = std::fs::read_to_string(local_data("llama3_2_chat_template.jinja")).unwrap();
    let template = ChatTemplate::new(&source, None, None).unwrap();
    let call = json!({"function": {"name": "f", "arguments": {}}});
    let msgs = vec![json!({"role": "user", "content": "hi"}), json!({"role": "assistant", "tool_calls": [call, call]})];
    let err = template.render(&msgs, &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, TokenizerError::TemplateRender(_)), "{err}");
    assert!(err.to_string().contains("This model only supports single tool-calls at once!"), "{err}");
}

#[test]
fn syntax_errors_and_bad_calls_do_not_panic() {
    let err = ChatTemplate::new("{% for m in messages %}", None, None).err().expect("must fail");
    assert!(matches!(err, TokenizerError::TemplateSyntax(_)), "{err}");

    let bad_format = ChatTemplate::new("{{ strftime_now('%Q %') }}", None, None).unwrap();
    assert!(bad_format.render(&[], &RenderOptions::default()).is_err());

    let bad_indent = ChatTemplate::new("{{ messages | tojson(indent=[1]) }}", None, None).unwrap();
    assert!(bad_indent.render(&[], &RenderOptions::default()).is_err());
}

#[test]
fn python_features_used_by_templates() {
    let source = concat!(
        "{%- for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}",
        "{{ m.content.strip().upper() }}{% if m.content.startswith(' x') %}!{% endif %}",
        "{% if loop.index == 3 %}{% break %}{% endif %}|{% endfor %}",
        "{%- for k, v in extra.items() %}{{ k }}={{ v }};{% endfor %}",
        "{{ extra.get('missing', 'dflt') }} {{ bos_token }}{{ eos_token }} {{ enable_thinking }}",
        "{{ tools is none }}{{ documents is none }}",
        "{% generation %}G{% endgeneration %}",
        "{{ messages[0] | tojson }} {{ {'b': 1, 'a': [1.5, none, true]} | tojson(sort_keys=true) }}",
        "{{ 'é<>&' | tojson }} {{ {'k': 'v'} | tojson(separators=(',', ':')) }}",
    );
    let template = ChatTemplate::new(source, Some("<s>".into()), Some("</s>".into())).unwrap();
    let msgs = vec![
        json!({"role": "user", "content": " xa "}),
        json!({"role": "skip", "content": "no"}),
        json!({"role": "user", "content": "b"}),
        json!({"role": "user", "content": "c"}),
        json!({"role": "user", "content": "never"}),
    ];
    let mut extra = serde_json::Map::new();
    extra.insert("enable_thinking".into(), json!(false));
    extra.insert("extra".into(), json!({"z": 1, "y": "two"}));
    let opts = RenderOptions { extra, ..Default::default() };
    let out = template.render(&msgs, &opts).unwrap();
    assert_eq!(
        out,
        concat!(
            // loop.index counts the skipped message, so the break comes after "b".
            "XA!|B",
            "z=1;y=two;",
            // Booleans print the Python way, as in Jinja2.
            "dflt <s></s> False",
            "TrueTrue",
            "G",
            r#"{"role": "user", "content": " xa "} {"a": [1.5, null, true], "b": 1}"#,
            r#""é<>&" {"k":"v"}"#,
        )
    );
}

#[test]
fn model_dir_lookup() {
    let scratch = temp_dir();
    let dir = scratch.path();
    assert_eq!(find_chat_template(dir).unwrap(), None);
    assert_eq!(read_special_tokens(dir).unwrap(), Default::default());

    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>",
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
    )
    .unwrap();
    assert_eq!(find_chat_template(dir).unwrap().as_deref(), Some("D"));
    let special = read_special_tokens(dir).unwrap();
    assert_eq!(special.bos.as_deref(), Some("<s>"));
    assert_eq!(special.eos.as_deref(), Some("</s>"));

    std::fs::write(dir.join("tokenizer_config.json"), r#"{"chat_template": "S", "bos_token": null}"#).unwrap();
    assert_eq!(find_chat_template(dir).unwrap().as_deref(), Some("S"));
    assert_eq!(read_special_tokens(dir).unwrap().bos, None);

    std::fs::write(dir.join("chat_template.jinja"), "J").unwrap();
    assert_eq!(find_chat_template(dir).unwrap().as_deref(), Some("J"));

    std::fs::write(dir.join("tokenizer_config.json"), "{oops").unwrap();
    assert!(matches!(read_special_tokens(dir), Err(TokenizerError::Json { .. })));
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": 5}"#).unwrap();
    assert!(read_special_tokens(dir).unwrap_err().to_string().contains("eos_token"));

    // The fixture directory: chat_template.jinja wins and matches the config's string.
    let hf = testdata("tiny/hf/llama");
    assert_eq!(
        find_chat_template(&hf).unwrap().unwrap().trim_end(),
        read_json(hf.join("tokenizer_config.json"))["chat_template"].as_str().unwrap().trim_end()
    );
}

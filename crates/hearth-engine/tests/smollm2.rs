//! The real SmolLM2-135M-Instruct (Q4_1 GGUF, fetched by scripts/fetch-test-models.sh) against
//! transformers float32 on the same de-quantised weights, and llama.cpp's tokenizer.

mod common;

use std::sync::OnceLock;

use common::*;
use hearth_engine::model::SeqInput;
use hearth_engine::LoadedModel;
use hearth_tokenizer::RenderOptions;

fn smollm2() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = hearth_store::installed_model("smollm2").expect("SmolLM2 is not installed: run scripts/fetch-test-models.sh");
        load_exact(&path)
    })
}

#[test]
fn gguf_tokenizer_matches_transformers_and_llama_cpp() {
    let model = smollm2();
    for case in json("smollm2/tokenize.json")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = model.tokenizer.encode(text, false).unwrap();
        assert_eq!(got, ids(&case["ids"]), "ids of {text:?}");
        assert_eq!(got, ids(&case["llamacpp_ids"]), "llama.cpp ids of {text:?}");
        assert_eq!(model.tokenizer.decode(&got, false).unwrap(), case["decoded"].as_str().unwrap());
    }
}

#[test]
fn gguf_chat_template_renders_byte_identically() {
    let model = smollm2();
    let template = model.chat_template.as_ref().expect("SmolLM2's GGUF carries a chat template");
    for case in json("smollm2/chat_template.json")["cases"].as_array().unwrap() {
        let opts = RenderOptions { add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(), ..Default::default() };
        let rendered = template.render(case["messages"].as_array().unwrap(), &opts).unwrap();
        assert_eq!(rendered, case["rendered"].as_str().unwrap());
        assert_eq!(model.tokenizer.encode(&rendered, false).unwrap(), ids(&case["ids"]));
    }
}

#[test]
fn logits_match_float32_reference() {
    let model = smollm2();
    let fixture = json("smollm2/logits_full.json");
    let prompt = ids(&fixture["prompt_ids"]);
    let mut cache = model.model.new_cache(64).unwrap();
    let all = model.model.forward(&mut [SeqInput::new(&prompt, &mut cache)], true).unwrap();
    let rows: Vec<&[f32]> = all[0].chunks_exact(model.model.config().vocab_size).collect();
    let d = full_diff(rows[rows.len() - 1], &fixture["last_position_logits"]);
    eprintln!("SmolLM2 last-position logits: max |diff| over the vocabulary {d:.2e}");
    assert!(d <= 1e-2, "last-position logits differ by {d}");
    for (pos, top) in fixture["all_positions_top5"].as_array().unwrap().iter().enumerate() {
        for t in top.as_array().unwrap() {
            let (id, logit) = (t["id"].as_u64().unwrap() as usize, t["logit"].as_f64().unwrap() as f32);
            let d = (rows[pos][id] - logit).abs();
            assert!(d <= 1e-2, "position {pos} token {id}: logit differs by {d}");
        }
    }
}

#[test]
fn greedy_continuations_match_float32_reference() {
    let model = smollm2();
    let cases = json("smollm2/generate.json")["cases"].as_array().unwrap().clone();
    let mut identical = 0;
    for case in &cases {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let d = top_diff(
            &last_logits(model, &prompt),
            &serde_json::json!({
                "ids": case["last_logits_top"].as_array().unwrap().iter().map(|t| t["id"].clone()).collect::<Vec<_>>(),
                "logits": case["last_logits_top"].as_array().unwrap().iter().map(|t| t["logit"].clone()).collect::<Vec<_>>(),
            }),
        );
        assert!(d <= 1e-2, "{:?}: top logits differ by {d}", case["prompt"]);
        let got = greedy(model, &prompt, want.len());
        if got == want {
            identical += 1;
        } else {
            let step = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            eprintln!("{:?}: greedy diverges at step {step}", case["prompt"]);
        }
    }
    assert!(identical >= 4, "only {identical} of {} greedy continuations identical", cases.len());
}

//! What the conversion tests share: the fixtures' paths, running a model, comparing tensors.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};

use hearth_engine::weights::WeightStore;
use serde_json::Value;

/// A path under testdata/tiny.
pub fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

pub fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

/// A model directory's tensors (MLX-quantised ones as such), under the decoder's names.
pub fn store(dir: &Path) -> WeightStore {
    WeightStore::from_safetensors_dir(dir, &config(dir)).unwrap()
}

/// A chat prompt's token ids and last logits on the float path.
pub fn run(path: &Path) -> (Vec<u32>, Vec<f32>) {
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let m = LoadedModel::load_with(path, LoadOptions { precision: Precision::Exact, ..LoadOptions::default() }).unwrap();
    let chat = [serde_json::json!({"role": "user", "content": "What is the capital of France?"})];
    let opts = hearth_tokenizer::RenderOptions { add_generation_prompt: true, ..Default::default() };
    let text = m.chat_template.as_ref().unwrap().render(&chat, &opts).unwrap();
    let ids = m.tokenizer.encode(&text, true).unwrap();
    let mut cache = m.model.new_cache(128).unwrap();
    let logits = m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0);
    (ids, logits)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

/// A copy of an MLX fixture with its source's tokenizer.json beside it (the fixtures ship
/// without it: MANIFEST.md), so that it loads as a downloaded model would.
pub fn with_tokenizer(fixture: &str, source: &str, into: &Path) -> PathBuf {
    let dir = into.join(fixture.replace('/', "-"));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(tiny(fixture)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    std::fs::copy(tiny(source).join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir
}

/// hf/llama with testdata/tiny/spm's SentencePiece model in place of its tokenizer (and a
/// tokenizer_config.json that names its special tokens), in `dir`.
pub fn spm_model(dir: &Path) -> PathBuf {
    let src = dir.join("tiny-spm");
    std::fs::create_dir(&src).unwrap();
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(tiny("hf/llama").join(file), src.join(file)).unwrap();
    }
    std::fs::copy(tiny("spm/tokenizer.model"), src.join("tokenizer.model")).unwrap();
    let special = |text: &str| serde_json::json!({"content": text, "special": true});
    let config = serde_json::json!({
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false,
        "added_tokens_decoder": {"0": special("<unk>"), "1": special("<s>"), "2": special("</s>"), "3": special("<|im_start|>"), "4": special("<|im_end|>")},
    });
    std::fs::write(src.join("tokenizer_config.json"), config.to_string()).unwrap();
    src
}

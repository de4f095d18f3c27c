//! A Hugging Face model's GGUF metadata as `convert_hf_to_gguf.py` writes it: the
//! architecture's hyper-parameters under `{arch}.*` and the tokenizer under `tokenizer.ggml.*`
//! (byte-level BPE vocabularies; `tokenizer.ggml.pre` found as llama.cpp finds it, by the hash
//! of a fixed text's token ids).

use std::path::Path;

use hearth_engine::config::{Activation, Arch, ModelConfig, RopeScaling};
use hearth_formats::gguf::Value;
use hearth_tokenizer::Tokenizer;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

use crate::sentencepiece::{self, PieceType};
use crate::{io, ConvertError};

/// llama.cpp's pre-tokenizer probe (`chktxt` in convert_hf_to_gguf.py).
const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} \u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= \u{043D}\u{0435}\u{0449}\u{043E} \u{043D}\u{0430} \u{0411}\u{044A}\u{043B}\u{0433}\u{0430}\u{0440}\u{0441}\u{043A}\u{0438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// The probe's token-id hashes llama.cpp knows, and the pre-tokenizer each names (those the
/// GGUF reader in hearth-tokenizer implements).
const PRE_TOKENIZERS: [(&str, &str); 17] = [
    ("0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5", "llama-bpe"),
    ("e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea", "qwen2"),
    ("d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c", "qwen2"),
    ("855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249", "smollm"),
    ("3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454", "gpt-2"),
    ("0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4", "gpt-2"),
    ("b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5", "deepseek-r1-qwen"),
    ("fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085", "phi-2"),
    ("35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34", "starcoder"),
    ("c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d", "smaug-bpe"),
    ("347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821", "deepseek-coder"),
    ("8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed", "falcon"),
    ("9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e", "falcon3"),
    ("32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3", "stablelm2"),
    ("6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff", "refact"),
    ("9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8", "command-r"),
    ("a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e", "dbrx"),
];

fn unsupported(what: impl Into<String>) -> ConvertError {
    ConvertError::Unsupported(what.into())
}

fn read_json(path: &Path) -> Result<Option<Json>, ConvertError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| unsupported(format!("{}: {e}", path.display())))
}

/// Everything but the file type: `general.*`, `{arch}.*` and `tokenizer.*`.
pub(crate) fn hf_metadata(dir: &Path, config: &Json, cfg: &ModelConfig, arch: &str) -> Result<Vec<(String, Value)>, ConvertError> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let mut kv: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(name.into())),
    ];
    let mut put = |key: &str, value: Value| kv.push((format!("{arch}.{key}"), value));
    let u32v = |v: usize| Value::U32(v as u32);
    put("block_count", u32v(cfg.num_layers));
    put("context_length", u32v(cfg.context_length));
    put("embedding_length", u32v(cfg.hidden_size));
    put("feed_forward_length", u32v(cfg.intermediate_size));
    put("attention.head_count", u32v(cfg.num_heads));
    put("attention.head_count_kv", u32v(cfg.num_kv_heads));
    put("attention.layer_norm_rms_epsilon", Value::F32(cfg.rms_norm_eps as f32));
    match cfg.arch {
        Arch::Gemma2 => {
            put("attention.key_length", u32v(cfg.head_dim));
            put("attention.value_length", u32v(cfg.head_dim));
            let cap = |v: Option<f32>| Value::F32(v.unwrap_or(0.0));
            put("attn_logit_softcapping", cap(cfg.attn_logit_softcap));
            put("final_logit_softcapping", cap(cfg.final_logit_softcap));
            put("attention.sliding_window", u32v(cfg.layer_windows.iter().flatten().copied().next().unwrap_or(0)));
            // llama.cpp's Gemma 2 scales queries by 1/√head_dim and takes no rope base.
            let expected = (cfg.head_dim as f64).powf(-0.5);
            if (cfg.attn_scale - expected).abs() > 1e-9 || cfg.rope.theta != 10_000.0 {
                return Err(unsupported(
                    "this Gemma 2 model's query scale or RoPE base differs from what llama.cpp assumes for Gemma 2; its GGUF would compute something else",
                ));
            }
        }
        Arch::Phi3 => {
            put("rope.freq_base", Value::F32(cfg.rope.theta as f32));
            put("rope.dimension_count", u32v(cfg.head_dim));
            let original = config.get("original_max_position_embeddings").and_then(Json::as_u64).unwrap_or(cfg.context_length as u64);
            put("rope.scaling.original_context_length", Value::U32(original as u32));
            put("attention.sliding_window", u32v(cfg.layer_windows.iter().flatten().copied().next().unwrap_or(0)));
        }
        _ => {
            put("rope.freq_base", Value::F32(cfg.rope.theta as f32));
            if config.get("head_dim").is_some() {
                put("attention.key_length", u32v(cfg.head_dim));
                put("attention.value_length", u32v(cfg.head_dim));
            }
            if let RopeScaling::Linear(factor) = cfg.rope.scaling {
                put("rope.scaling.type", Value::String("linear".into()));
                put("rope.scaling.factor", Value::F32(factor as f32));
            }
            if arch == "llama" {
                put("vocab_size", u32v(cfg.vocab_size));
                put("rope.dimension_count", u32v(cfg.head_dim));
            }
        }
    }
    if !matches!(cfg.rope.scaling, RopeScaling::None | RopeScaling::Linear(_) | RopeScaling::Llama3 { .. }) {
        return Err(unsupported("this RoPE scaling has no GGUF form yet"));
    }
    if cfg.arch == Arch::Gemma2 && cfg.activation != Activation::GeluTanh {
        return Err(unsupported("Gemma 2 with an activation other than GELU-tanh"));
    }
    kv.extend(tokenizer_metadata(dir, config, cfg, arch)?);
    Ok(kv)
}

/// `tokenizer.ggml.*` and the chat template from `tokenizer.model` or `tokenizer.json`,
/// `tokenizer_config.json` and `config.json`, as `_set_vocab_sentencepiece` (Llama, Mistral,
/// Phi-3 and Gemma checkpoints that ship a SentencePiece model) or `_set_vocab_gpt2` and gguf-py's
/// `SpecialVocab` write them.
fn tokenizer_metadata(dir: &Path, config: &Json, cfg: &ModelConfig, arch: &str) -> Result<Vec<(String, Value)>, ConvertError> {
    let tokenizer_json = read_json(&dir.join("tokenizer.json"))?;
    let tokenizer_config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Json::Null);
    let spm = dir.join("tokenizer.model");
    let mut kv = if spm.is_file() && matches!(arch, "llama" | "phi3" | "gemma2") {
        sentencepiece_vocab(&spm, &tokenizer_config, cfg)?
    } else {
        let tokenizer_json = tokenizer_json.as_ref().ok_or_else(|| unsupported(format!("{} has no tokenizer.json", dir.display())))?;
        bpe_vocab(dir, tokenizer_json, cfg)?
    };
    if arch == "gemma2" {
        kv.push(("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false)));
    }
    // Added tokens, by text: tokenizer.json's, else tokenizer_config.json's.
    let mut added: Vec<(String, u64)> = tokenizer_json
        .as_ref()
        .and_then(|t| t["added_tokens"].as_array())
        .map(|a| a.iter().filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_u64()?))).collect())
        .unwrap_or_default();
    if let Some(decoder) = tokenizer_config["added_tokens_decoder"].as_object() {
        added.extend(decoder.iter().filter_map(|(id, t)| Some((t["content"].as_str()?.to_string(), id.parse().ok()?))));
    }
    // A special token named in tokenizer_config.json is found among the added tokens; config.json's
    // ids fill what is still missing.
    let named = |typ: &str| -> Option<u64> {
        let entry = &tokenizer_config[format!("{typ}_token")];
        let text = entry.as_str().or_else(|| entry["content"].as_str())?;
        added.iter().find(|(t, _)| t == text).map(|(_, id)| *id)
    };
    let id = |typ: &str| named(typ).or_else(|| config[format!("{typ}_token_id")].as_u64());
    for (typ, key) in [
        ("bos", "bos_token_id"),
        ("eos", "eos_token_id"),
        ("unk", "unknown_token_id"),
        ("sep", "seperator_token_id"),
        ("pad", "padding_token_id"),
    ] {
        let found = id(typ).or(match typ {
            "bos" => id("cls"),
            "eos" => id("sep"),
            _ => None,
        });
        if let Some(v) = found {
            kv.push((format!("tokenizer.ggml.{key}"), Value::U32(v as u32)));
        }
    }
    let template = match tokenizer_config["chat_template"].as_str() {
        Some(t) => Some(t.to_string()),
        None => {
            let jinja = dir.join("chat_template.jinja");
            jinja.is_file().then(|| std::fs::read_to_string(&jinja).map_err(io(&jinja))).transpose()?
        }
    };
    if let Some(t) = template.filter(|t| !t.is_empty()) {
        kv.push(("tokenizer.chat_template".into(), Value::String(t)));
    }
    for flag in ["add_bos_token", "add_eos_token"] {
        if let Some(b) = tokenizer_config[flag].as_bool() {
            kv.push((format!("tokenizer.ggml.{flag}"), Value::Bool(b)));
        }
    }
    // convert_hf_to_gguf.py's Llama class: a 49,152-token vocabulary (SmolLM's) adds no BOS.
    if arch == "llama" && cfg.vocab_size == 49152 {
        kv.retain(|(k, _)| k != "tokenizer.ggml.add_bos_token");
        kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)));
    }
    Ok(kv)
}

/// A byte-level BPE vocabulary as `_set_vocab_gpt2` writes it: tokens padded to the model's
/// vocabulary with `[PADi]`, token types, merges and the pre-tokenizer's name.
fn bpe_vocab(dir: &Path, tokenizer_json: &Json, cfg: &ModelConfig) -> Result<Vec<(String, Value)>, ConvertError> {
    let model = &tokenizer_json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(unsupported(
            "only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM style) or a SentencePiece tokenizer.model are written to GGUF",
        ));
    }
    let added: Vec<&Json> = tokenizer_json["added_tokens"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    let mut by_id: Vec<Option<(String, i32)>> = vec![None; cfg.vocab_size];
    let mut place = |id: u64, text: &str, ty: i32| -> Result<(), ConvertError> {
        let slot = by_id.get_mut(id as usize).ok_or_else(|| unsupported(format!("token {text:?} has id {id}, beyond the vocabulary")))?;
        *slot = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in model["vocab"].as_object().ok_or_else(|| unsupported("tokenizer.json has no model.vocab"))? {
        place(id.as_u64().unwrap_or(u64::MAX), text, 1)?;
    }
    for t in &added {
        let (Some(id), Some(text)) = (t["id"].as_u64(), t["content"].as_str()) else { continue };
        let special = t["special"].as_bool().unwrap_or(false) || looks_special(text);
        place(id, text, if special { 3 } else { 4 })?;
    }
    let (tokens, types): (Vec<Value>, Vec<Value>) = by_id
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let (text, ty) = t.unwrap_or_else(|| (format!("[PAD{i}]"), 5));
            (Value::String(text), Value::I32(ty))
        })
        .unzip();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|merge| match merge {
                    Json::String(s) => Some(s.clone()),
                    // transformers ≥ 4.45 writes pairs; llama.cpp joins them with a space and
                    // spells a space inside a part as `Ġ`.
                    Json::Array(p) => {
                        Some(p.iter().filter_map(Json::as_str).map(|s| s.replace(' ', "\u{120}")).collect::<Vec<_>>().join(" "))
                    }
                    _ => None,
                })
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre_tokenizer(&dir.join("tokenizer.json"))?.into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
    ])
}

/// A SentencePiece vocabulary as `_create_vocab_sentencepiece` builds it: the model's pieces
/// with their scores and types, tokenizer_config.json's added tokens over them (score −1000;
/// special ones as control tokens, others user-defined with `▁` spelled as a space), padded to
/// the model's vocabulary with unused `[PADi]`.
fn sentencepiece_vocab(path: &Path, tokenizer_config: &Json, cfg: &ModelConfig) -> Result<Vec<(String, Value)>, ConvertError> {
    let pieces = sentencepiece::pieces(path)?;
    let n = cfg.vocab_size;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; n];
    let mut types = vec![PieceType::Unused as i32; n];
    for (i, p) in pieces.into_iter().enumerate().take(n) {
        (tokens[i], scores[i], types[i]) = (p.text, p.score, p.kind as i32);
    }
    if let Some(decoder) = tokenizer_config["added_tokens_decoder"].as_object() {
        for (id, t) in decoder {
            let (Ok(id), Some(text)) = (id.parse::<usize>(), t["content"].as_str()) else { continue };
            if id >= n {
                continue;
            }
            let special = t["special"].as_bool().unwrap_or(false) || looks_special(text);
            (tokens[id], types[id]) = match special {
                true => (text.to_string(), PieceType::Control as i32),
                false => (text.replace('\u{2581}', " "), PieceType::UserDefined as i32),
            };
            scores[id] = -1000.0;
        }
    }
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.scores".into(), Value::Array(scores.into_iter().map(Value::F32).collect())),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
    ])
}

/// gguf-py's `does_token_look_special`.
fn looks_special(text: &str) -> bool {
    matches!(text, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (text.starts_with("<|") && text.ends_with("|>"))
        || (text.starts_with("<\u{FF5C}") && text.ends_with("\u{FF5C}>"))
        || (text.starts_with("<unused") && text.ends_with('>'))
}

/// llama.cpp's name for the tokenizer's pre-tokenizer: the SHA-256 of the probe text's ids
/// (with special tokens, as Python prints the list) looked up among the known ones.
fn pre_tokenizer(tokenizer_json: &Path) -> Result<&'static str, ConvertError> {
    let tokenizer = Tokenizer::from_file(tokenizer_json).map_err(|e| unsupported(e.to_string()))?;
    let ids = tokenizer.encode(CHECK_TEXT, true).map_err(|e| unsupported(e.to_string()))?;
    let printed = format!("[{}]", ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "));
    let hash: String = Sha256::digest(printed.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    PRE_TOKENIZERS.iter().find(|(h, _)| *h == hash).map(|(_, name)| *name).ok_or_else(|| {
        unsupported(format!(
            "the tokenizer's pre-tokenizer is not one llama.cpp knows (probe hash {hash}); llama.cpp's converter refuses it too"
        ))
    })
}

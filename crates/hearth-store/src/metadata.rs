//! What the registry records about a model, read from the files themselves: the GGUF header,
//! or config.json and the safetensors headers. Unknown fields stay `None`; reading never fails
//! a pull, since the files were already verified against the Hub.

use std::path::Path;

use hearth_formats::gguf::{Gguf, Value};
use hearth_formats::safetensors::SafeTensors;
use hearth_formats::DType;
use serde_json::Value as Json;

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ModelInfo {
    pub format: String,
    pub architecture: Option<String>,
    pub quantization: Option<String>,
    pub parameter_count: Option<u64>,
    pub context_length: Option<u64>,
    /// Only for embedding models: the size of the vectors they produce,
    pub embedding_dim: Option<u64>,
    /// the longest input they take (sentence-transformers' `max_seq_length`, else the
    /// positions), and how token states are pooled ("mean", "cls", "lasttoken").
    pub embedding_max_tokens: Option<u64>,
    pub embedding_pooling: Option<String>,
}

/// Reads `entry`: a GGUF file or a model directory.
pub(crate) fn read_model_info(entry: &Path) -> ModelInfo {
    if entry.is_file() {
        gguf_info(entry)
    } else {
        dir_info(entry)
    }
}

/// llama.cpp's `general.file_type` numbering.
fn gguf_file_type(id: u64) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

fn gguf_info(path: &Path) -> ModelInfo {
    let mut info = ModelInfo { format: "gguf".into(), ..Default::default() };
    let Ok(g) = Gguf::open(path) else { return info };
    let arch = g.get("general.architecture").and_then(Value::as_str).map(str::to_string);
    let key = |k: &str| arch.as_ref().and_then(|a| g.get(&format!("{a}.{k}"))).and_then(Value::as_u64);
    info.context_length = key("context_length");
    if arch.as_deref().is_some_and(|a| matches!(a, "bert" | "nomic-bert" | "jina-bert-v2")) {
        info.embedding_dim = key("embedding_length");
    }
    info.quantization = g.get("general.file_type").and_then(Value::as_u64).and_then(gguf_file_type).map(str::to_string);
    info.parameter_count = Some(g.tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum());
    info.architecture = arch;
    info
}

fn dir_info(dir: &Path) -> ModelInfo {
    let config: Json = std::fs::read(dir.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Json::Null);
    let u64_of = |k: &str| config.get(k).and_then(Json::as_u64);
    let bits = config.pointer("/quantization/bits").and_then(Json::as_u64);
    let quantization = match bits {
        Some(b) => Some(format!("{b}bit-g{}", config.pointer("/quantization/group_size").and_then(Json::as_u64).unwrap_or(64))),
        None => config.get("torch_dtype").or(config.get("dtype")).and_then(Json::as_str).map(str::to_string),
    };
    let is_embedding = ["modules.json", "sentence_bert_config.json", "1_Pooling"].iter().any(|f| dir.join(f).exists());
    let context_length = u64_of("max_position_embeddings").or(u64_of("n_positions"));
    // What hearth-embed would run; `None` for a pipeline it does not support.
    let sentence = is_embedding.then(|| hearth_formats::sentence::SentenceConfig::load(dir).ok()).flatten();
    ModelInfo {
        format: if bits.is_some() { "mlx" } else { "safetensors" }.into(),
        architecture: config.pointer("/architectures/0").or(config.get("model_type")).and_then(Json::as_str).map(str::to_string),
        quantization,
        parameter_count: safetensors_parameters(dir, bits),
        context_length,
        // The vectors' length: the last Dense layer's outputs where there is one.
        embedding_dim: if is_embedding {
            u64_of("hidden_size").map(|h| sentence.as_ref().map_or(h, |s| s.dimension(h as usize) as u64))
        } else {
            None
        },
        embedding_max_tokens: sentence.as_ref().and_then(|s| {
            let declared = s.max_seq_length.map(|m| m as u64);
            match (declared, context_length) {
                (Some(d), Some(c)) => Some(d.min(c)),
                (d, c) => d.or(c),
            }
        }),
        embedding_pooling: sentence.map(|s| s.pooling.name().to_string()),
    }
}

/// Counts parameters from the safetensors headers; an MLX-quantised U32 holds `32 / bits`
/// weights, and its scales and biases are not parameters.
fn safetensors_parameters(dir: &Path, bits: Option<u64>) -> Option<u64> {
    let files = hearth_formats::safetensors::model_files(dir).ok()?;
    let mut total = 0u64;
    for file in files {
        let st = SafeTensors::open(&file).ok()?;
        for (name, t) in &st.tensors {
            let n: u64 = t.shape.iter().map(|&d| d as u64).product();
            total += match (bits, t.dtype) {
                (Some(_), _) if name.ends_with(".scales") || name.ends_with(".biases") => 0,
                (Some(b), DType::U32) if b > 0 => n * (32 / b),
                _ => n,
            };
        }
    }
    (total > 0).then_some(total)
}

/// The chat template a model ships: GGUF metadata, or tokenizer_config.json's.
pub fn chat_template(entry: &Path) -> Option<String> {
    if entry.is_file() {
        let g = Gguf::open(entry).ok()?;
        return g.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);
    }
    let config: Json = serde_json::from_slice(&std::fs::read(entry.join("tokenizer_config.json")).ok()?).ok()?;
    match config.get("chat_template")? {
        Json::String(s) => Some(s.clone()),
        // Several named templates: show the default one.
        Json::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

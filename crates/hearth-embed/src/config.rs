//! What a model directory declares: the encoder's `config.json`, and the sentence-transformers
//! files that say how token states become one vector (`modules.json`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::{EmbedError, Result};

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · Φ(x)` with the exact normal CDF (`hidden_act: "gelu"`).
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

/// A BERT-family encoder's shape (`config.json`).
#[derive(Clone, Debug)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub activation: Activation,
}

impl BertConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let json = read_json(&path)?;
        let bad = |message: String| EmbedError::Config { path: path.clone(), message };
        let model_type = json.get("model_type").and_then(Json::as_str).unwrap_or("");
        if model_type != "bert" {
            return Err(EmbedError::Unsupported(format!(
                "encoder model_type {model_type:?} (supported: \"bert\": MiniLM, BGE, E5, GTE and ms-marco cross-encoders)"
            )));
        }
        if let Some(p) = json.get("position_embedding_type").and_then(Json::as_str).filter(|p| *p != "absolute") {
            return Err(EmbedError::Unsupported(format!("position_embedding_type {p:?}")));
        }
        let usize_of = |key: &str| -> Result<usize> {
            json.get(key).and_then(Json::as_u64).map(|v| v as usize).ok_or_else(|| bad(format!("missing or invalid {key}")))
        };
        let activation = match json.get("hidden_act").and_then(Json::as_str).unwrap_or("gelu") {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => return Err(EmbedError::Unsupported(format!("hidden_act {other:?}"))),
        };
        let cfg = BertConfig {
            vocab_size: usize_of("vocab_size")?,
            hidden_size: usize_of("hidden_size")?,
            num_layers: usize_of("num_hidden_layers")?,
            num_heads: usize_of("num_attention_heads")?,
            intermediate_size: usize_of("intermediate_size")?,
            max_positions: usize_of("max_position_embeddings")?,
            type_vocab_size: json.get("type_vocab_size").and_then(Json::as_u64).unwrap_or(2) as usize,
            layer_norm_eps: json.get("layer_norm_eps").and_then(Json::as_f64).unwrap_or(1e-12) as f32,
            activation,
        };
        if cfg.num_heads == 0 || cfg.head_dim() * cfg.num_heads != cfg.hidden_size || cfg.max_positions == 0 {
            return Err(bad(format!("{} heads do not divide hidden size {}", cfg.num_heads, cfg.hidden_size)));
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}

/// How token states are pooled into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    LastToken,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "lasttoken",
        }
    }
}

/// The sentence-transformers pipeline around the encoder. A directory without these files
/// gets sentence-transformers' own defaults: mean pooling, no normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    pub normalize: bool,
    /// `max_seq_length`, if declared.
    pub max_seq_length: Option<usize>,
    /// Named prefixes (`config_sentence_transformers.json` `prompts`), e.g. Qwen3-Embedding's
    /// `query` instruction.
    pub prompts: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl SentenceConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let mut cfg = SentenceConfig { pooling: Pooling::Mean, normalize: false, max_seq_length: None, prompts: BTreeMap::new() };
        let st = dir.join("sentence_bert_config.json");
        if st.is_file() {
            cfg.max_seq_length = read_json(&st)?.get("max_seq_length").and_then(Json::as_u64).map(|v| v as usize);
        }
        let prompts = dir.join("config_sentence_transformers.json");
        if prompts.is_file() {
            if let Some(map) = read_json(&prompts)?.get("prompts").and_then(Json::as_object) {
                cfg.prompts = map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            }
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(cfg);
        }
        let modules: Vec<Module> = serde_json::from_value(read_json(&modules_path)?)
            .map_err(|e| EmbedError::Config { path: modules_path.clone(), message: e.to_string() })?;
        for m in modules {
            match m.kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => {}
                "Pooling" => cfg.pooling = read_pooling(&dir.join(&m.path).join("config.json"))?,
                "Normalize" => cfg.normalize = true,
                other => {
                    return Err(EmbedError::Unsupported(format!("sentence-transformers module {other:?} in {}", modules_path.display())))
                }
            }
        }
        Ok(cfg)
    }
}

fn read_pooling(path: &Path) -> Result<Pooling> {
    let json = read_json(path)?;
    let on = |key: &str| json.get(key).and_then(Json::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_lasttoken", Pooling::LastToken),
    ];
    let chosen: Vec<Pooling> = modes.iter().filter(|(k, _)| on(k)).map(|&(_, p)| p).collect();
    let unsupported = ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"];
    match chosen[..] {
        [p] if !unsupported.iter().any(|k| on(k)) => Ok(p),
        _ => Err(EmbedError::Config {
            path: path.to_path_buf(),
            message: "exactly one of mean, CLS or last-token pooling must be enabled (others are not supported)".into(),
        }),
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Config { path: path.to_path_buf(), message: e.to_string() })
}

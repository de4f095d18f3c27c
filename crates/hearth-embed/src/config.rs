//! What a model directory declares: the encoder's `config.json`, and the sentence-transformers
//! files that say how token states become one vector (read by hearth-formats, which the model
//! store also reads them with).

use std::path::Path;

pub use hearth_formats::sentence::{Pooling, SentenceConfig};
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

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| EmbedError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| EmbedError::Config { path: path.to_path_buf(), message: e.to_string() })
}

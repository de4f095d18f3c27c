//! A GGUF model read as a Hugging Face one: tensors under their Hugging Face names,
//! de-quantised to float32 (Llama and Mistral Q/K rows put back from llama.cpp's interleaved
//! order), `config.json` from the metadata, the tokenizer and chat template as files.

use std::path::Path;

use hearth_engine::config::{Arch, ModelConfig, RopeScaling};
use hearth_engine::weights::WeightStore;
use hearth_formats::gguf::Gguf;
use hearth_tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::{io, ConvertError};

pub(crate) struct GgufSource {
    gguf: Gguf,
    store: WeightStore,
    cfg: ModelConfig,
}

fn engine(e: hearth_engine::EngineError) -> ConvertError {
    ConvertError::Unsupported(e.to_string())
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self, ConvertError> {
        let gguf = Gguf::open(path)?;
        let cfg = ModelConfig::from_gguf(&gguf).map_err(engine)?;
        if !matches!(cfg.arch, Arch::Llama | Arch::Mistral | Arch::Qwen2 | Arch::Qwen3) {
            return Err(ConvertError::Unsupported(format!(
                "converting a {:?} GGUF is not supported yet (Llama, Mistral, Qwen2, Qwen3 are)",
                cfg.arch
            )));
        }
        if matches!(cfg.rope.scaling, RopeScaling::FreqFactors(_)) {
            return Err(ConvertError::Unsupported(
                "a GGUF with rope_freqs (per-frequency RoPE factors) cannot be described in config.json yet".into(),
            ));
        }
        let store = WeightStore::from_gguf(&gguf).map_err(engine)?;
        Ok(GgufSource { gguf, store, cfg })
    }

    /// Every tensor's Hugging Face name and shape.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        self.store.iter().map(|(name, t)| (name.clone(), t.shape.clone())).collect()
    }

    /// A tensor's values, de-quantised, in Hugging Face's row order.
    pub fn values(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let t = self.store.get(name).map_err(engine)?;
        let values = t.to_f32_vec().map_err(engine)?;
        let heads = if name.ends_with("self_attn.q_proj.weight") {
            self.cfg.num_heads
        } else if name.ends_with("self_attn.k_proj.weight") {
            self.cfg.num_kv_heads
        } else {
            return Ok(values);
        };
        if !self.cfg.rope_interleaved {
            return Ok(values);
        }
        Ok(uninterleave(&values, heads, self.cfg.head_dim, t.shape.iter().skip(1).product()))
    }

    /// `config.json` as transformers writes it for this architecture.
    pub fn config(&self) -> Value {
        let c = &self.cfg;
        let (model_type, class) = match c.arch {
            Arch::Llama => ("llama", "LlamaForCausalLM"),
            Arch::Mistral => ("mistral", "MistralForCausalLM"),
            Arch::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            _ => ("qwen3", "Qwen3ForCausalLM"),
        };
        let rope_scaling = match &c.rope.scaling {
            RopeScaling::Linear(factor) => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_context,
            }),
            _ => Value::Null,
        };
        json!({
            "architectures": [class],
            "model_type": model_type,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads,
            "num_key_value_heads": c.num_kv_heads,
            "head_dim": c.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": c.rms_norm_eps,
            "rope_theta": c.rope.theta,
            "rope_scaling": rope_scaling,
            "max_position_embeddings": c.context_length,
            "vocab_size": c.vocab_size,
            "tie_word_embeddings": c.tie_word_embeddings,
            "attention_bias": c.qkv_bias,
            "mlp_bias": c.mlp_bias,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_ids.first(),
            "torch_dtype": "float32",
        })
    }

    /// `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
    /// `generation_config.json`, from the GGUF's tokenizer metadata.
    pub fn write_tokenizer(&self, dir: &Path) -> Result<(), ConvertError> {
        let vocab = hearth_engine::loader::gguf_vocab(&self.gguf).map_err(engine)?;
        let tokenizer = Tokenizer::from_gguf(&vocab).map_err(|e| ConvertError::Unsupported(e.to_string()))?;
        let json = tokenizer.to_json().map_err(|e| ConvertError::Unsupported(e.to_string()))?;
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, json).map_err(io(&path))?;
        let name = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
        let mut config = json!({
            "bos_token": name(self.cfg.bos_token_id),
            "eos_token": name(self.cfg.eos_token_ids.first().copied()),
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(template) = self.gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            config["chat_template"] = template.into();
        }
        crate::write_json(&dir.join("tokenizer_config.json"), &config)?;
        let generation = json!({"bos_token_id": self.cfg.bos_token_id, "eos_token_id": self.cfg.eos_token_ids});
        crate::write_json(&dir.join("generation_config.json"), &generation)
    }
}

/// Rows of each head back from llama.cpp's order (RoPE pairs adjacent) to Hugging Face's (the
/// two halves): HF row `j · half + i` of a head is llama.cpp's row `2i + j`.
fn uninterleave(values: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (to, from) = (h * head_dim + j * half + i, h * head_dim + 2 * i + j);
                out[to * cols..(to + 1) * cols].copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

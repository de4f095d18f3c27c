//! A GGUF model read as a Hugging Face one: tensors under their Hugging Face names,
//! de-quantised to float32 (Llama and Mistral Q/K rows put back from llama.cpp's interleaved
//! order), `config.json` from the metadata, the tokenizer and chat template as files.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_engine::config::{Arch, ModelConfig, RopeScaling};
use hearth_engine::weights::{StoredTensor, WeightStore};
use hearth_formats::gguf::Gguf;
use hearth_kernels::RowFormat;
use hearth_tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::{exact, io, ConvertError, QuantizedRows};

pub(crate) struct GgufSource {
    gguf: Gguf,
    cfg: ModelConfig,
}

pub(crate) fn engine(e: hearth_engine::EngineError) -> ConvertError {
    ConvertError::Unsupported(e.to_string())
}

impl GgufSource {
    /// The file, and its tensors under their Hugging Face names.
    pub fn open(path: &Path) -> Result<(Self, BTreeMap<String, StoredTensor>), ConvertError> {
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
        let tensors = WeightStore::from_gguf(&gguf).map_err(engine)?.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
        Ok((GgufSource { gguf, cfg }, tensors))
    }

    /// The tensor as MLX affine codes, scales and biases taken from its blocks as they are
    /// ([`exact::ggml_to_affine`]), in Hugging Face's row order; `None` where its block type
    /// has no exact mapping.
    pub fn exact_affine(&self, name: &str, t: &StoredTensor) -> Option<QuantizedRows> {
        let RowFormat::Ggml(ty) = t.format else { return None };
        let out = exact::ggml_to_affine(ty, &t.data)?;
        let rows = t.shape[0];
        let (row_bytes, groups) = (out.packed.len() / rows, out.scales.len() / rows);
        Some(QuantizedRows {
            packed: self.hf_rows(name, out.packed, row_bytes),
            scales: self.hf_rows(name, out.scales, groups),
            biases: self.hf_rows(name, out.biases, groups),
        })
    }

    /// `values` (rows of `row` items) in Hugging Face's row order: Llama and Mistral Q/K heads
    /// back from llama.cpp's interleaving, other tensors as they are.
    pub fn hf_rows<T: Copy + Default>(&self, name: &str, values: Vec<T>, row: usize) -> Vec<T> {
        self.reorder(name, values, row, false)
    }

    /// The inverse of [`Self::hf_rows`]: Hugging Face's rows in the file's order.
    pub fn stored_rows<T: Copy + Default>(&self, name: &str, values: Vec<T>, row: usize) -> Vec<T> {
        self.reorder(name, values, row, true)
    }

    fn reorder<T: Copy + Default>(&self, name: &str, values: Vec<T>, row: usize, to_llama: bool) -> Vec<T> {
        let heads = if !self.cfg.rope_interleaved {
            return values;
        } else if name.ends_with("self_attn.q_proj.weight") {
            self.cfg.num_heads
        } else if name.ends_with("self_attn.k_proj.weight") {
            self.cfg.num_kv_heads
        } else {
            return values;
        };
        permute_heads(&values, heads, self.cfg.head_dim, row, to_llama)
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
        let id = |key: &str| self.gguf.get(&format!("tokenizer.ggml.{key}_token_id")).and_then(|v| v.as_u64()).map(|v| v as u32);
        let mut config = json!({
            "bos_token": name(self.cfg.bos_token_id),
            "eos_token": name(self.cfg.eos_token_ids.first().copied()),
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        // Only where the file names them: transformers reads a null as "none".
        for (key, field) in [("unknown", "unk_token"), ("padding", "pad_token")] {
            if let Some(token) = name(id(key)) {
                config[field] = token.into();
            }
        }
        if let Some(template) = self.gguf.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
            config["chat_template"] = template.into();
        }
        crate::write_json(&dir.join("tokenizer_config.json"), &config)?;
        let generation = json!({"bos_token_id": self.cfg.bos_token_id, "eos_token_id": self.cfg.eos_token_ids});
        crate::write_json(&dir.join("generation_config.json"), &generation)
    }
}

/// Rows of each head between Hugging Face's order (the two halves) and llama.cpp's (RoPE pairs
/// adjacent): llama.cpp's row `2i + j` of a head is Hugging Face's row `j · half + i`.
/// `to_llama` goes from Hugging Face's order to llama.cpp's, otherwise back.
pub(crate) fn permute_heads<T: Copy + Default>(values: &[T], heads: usize, head_dim: usize, cols: usize, to_llama: bool) -> Vec<T> {
    let half = head_dim / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (llama, hf) = (h * head_dim + 2 * i + j, h * head_dim + j * half + i);
                let (to, from) = if to_llama { (llama, hf) } else { (hf, llama) };
                out[to * cols..(to + 1) * cols].copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

//! A GGUF model read as a Hugging Face one: tensors under their Hugging Face names,
//! de-quantised to float32 (Llama and Mistral Q/K rows put back from llama.cpp's interleaved
//! order), `config.json` from the metadata, the tokenizer and chat template as files.

use std::path::Path;

use half::f16;
use hearth_engine::config::{Arch, ModelConfig, RopeScaling};
use hearth_engine::weights::WeightStore;
use hearth_formats::gguf::{GgmlType, Gguf};
use hearth_kernels::RowFormat;
use hearth_tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::{io, Affine, ConvertError, QuantizedRows};

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
        let cols = t.shape.iter().skip(1).product();
        Ok(self.hf_rows(name, t.to_f32_vec().map_err(engine)?, cols))
    }

    /// The tensor as MLX affine codes, scales and biases taken from its blocks as they are, where
    /// that is exact: Q4_0 and Q4_1 as 4-bit groups of 32, Q8_0 as 8-bit groups of 32 (a block's
    /// scale and minimum are the group's scale and bias; Q4_0's bias is −8·d, Q8_0's −128·d).
    /// `None` where the tensor's blocks are of another kind or `q` asks for another layout.
    pub fn exact_affine(&self, name: &str, q: Affine) -> Option<QuantizedRows> {
        let t = self.store.get(name).ok()?;
        let RowFormat::Ggml(ty) = t.format else { return None };
        let (block, bits) = match ty {
            GgmlType::Q4_0 => (18, 4),
            GgmlType::Q4_1 => (20, 4),
            GgmlType::Q8_0 => (34, 8),
            _ => return None,
        };
        if q != (Affine { bits, group_size: 32 }) || t.shape.len() != 2 {
            return None;
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut out = QuantizedRows { packed: Vec::with_capacity(t.data.len()), scales: Vec::new(), biases: Vec::new() };
        for b in t.data.chunks_exact(block) {
            let d = half(b);
            match ty {
                GgmlType::Q8_0 => {
                    out.scales.push(d);
                    out.biases.push(-128.0 * d);
                    out.packed.extend(b[2..].iter().map(|&v| (v as i8 as i16 + 128) as u8));
                }
                _ => {
                    let (bias, qs) = if ty == GgmlType::Q4_1 { (half(&b[2..]), &b[4..]) } else { (-8.0 * d, &b[2..]) };
                    out.scales.push(d);
                    out.biases.push(bias);
                    // llama.cpp keeps element j in the low nibble of byte j and element j + 16 in
                    // its high nibble; MLX packs elements in order, two to a byte, low first.
                    let code = |k: usize| if k < 16 { qs[k] & 15 } else { qs[k - 16] >> 4 };
                    out.packed.extend((0..16).map(|k| code(2 * k) | (code(2 * k + 1) << 4)));
                }
            }
        }
        let (rows, groups) = (t.shape[0], t.shape[1] / 32);
        let row_bytes = out.packed.len() / rows;
        Some(QuantizedRows {
            packed: self.hf_rows(name, out.packed, row_bytes),
            scales: self.hf_rows(name, out.scales, groups),
            biases: self.hf_rows(name, out.biases, groups),
        })
    }

    /// `values` (rows of `row` items) in Hugging Face's row order: Llama and Mistral Q/K heads
    /// back from llama.cpp's interleaving, other tensors as they are.
    fn hf_rows<T: Copy + Default>(&self, name: &str, values: Vec<T>, row: usize) -> Vec<T> {
        let heads = if !self.cfg.rope_interleaved {
            return values;
        } else if name.ends_with("self_attn.q_proj.weight") {
            self.cfg.num_heads
        } else if name.ends_with("self_attn.k_proj.weight") {
            self.cfg.num_kv_heads
        } else {
            return values;
        };
        permute_heads(&values, heads, self.cfg.head_dim, row, false)
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

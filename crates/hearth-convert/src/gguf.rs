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
        if cfg.arch == Arch::Gemma3 {
            return Err(ConvertError::Unsupported("converting a Gemma 3 GGUF is not supported yet".into()));
        }
        let mut cfg = cfg;
        if let Some(info) = gguf.tensor("rope_freqs.weight") {
            let t = StoredTensor {
                format: RowFormat::Ggml(info.ggml_type),
                shape: info.shape(),
                data: gguf.tensor_data(info)?,
                scales: None,
                biases: None,
            };
            let freqs = t.to_f32_vec().map_err(engine)?;
            let (factor, low_freq_factor, high_freq_factor, original_context) = fit_llama3(&freqs, cfg.head_dim, cfg.rope.theta)
                .ok_or_else(|| {
                    ConvertError::Unsupported(
                        "this GGUF's rope_freqs are not Llama 3 RoPE scaling: config.json cannot describe them".into(),
                    )
                })?;
            cfg.rope.scaling = RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context };
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

    /// Gemma's norm weights as Hugging Face stores them: llama.cpp's converter added the 1 of
    /// `(1 + w)`.
    pub fn hf_values(&self, name: &str, values: Vec<f32>) -> Vec<f32> {
        self.norm_offset(name, values, -1.0)
    }

    /// The inverse of [`Self::hf_values`].
    pub fn stored_values(&self, name: &str, values: Vec<f32>) -> Vec<f32> {
        self.norm_offset(name, values, 1.0)
    }

    fn norm_offset(&self, name: &str, mut values: Vec<f32>, by: f32) -> Vec<f32> {
        if self.cfg.arch == Arch::Gemma2 && name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += by);
        }
        values
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
            Arch::Phi3 => ("phi3", "Phi3ForCausalLM"),
            Arch::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
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
        let window = c.layer_windows.iter().flatten().next().copied();
        let mut config = json!({
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
            "sliding_window": window,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_ids.first(),
            "torch_dtype": "float32",
        });
        match c.arch {
            Arch::Phi3 => config["original_max_position_embeddings"] = c.context_length.into(),
            Arch::Gemma2 => {
                config["hidden_activation"] = "gelu_pytorch_tanh".into();
                config["hidden_act"] = "gelu_pytorch_tanh".into();
                config["attn_logit_softcapping"] = json!(c.attn_logit_softcap);
                config["final_logit_softcapping"] = json!(c.final_logit_softcap);
                // llama.cpp scales queries by 1/√head_dim for Gemma 2.
                config["query_pre_attn_scalar"] = c.head_dim.into();
                let types: Vec<&str> =
                    c.layer_windows.iter().map(|w| if w.is_some() { "sliding_attention" } else { "full_attention" }).collect();
                config["layer_types"] = json!(types);
            }
            _ => {}
        }
        config
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
pub fn permute_heads<T: Copy + Default>(values: &[T], heads: usize, head_dim: usize, cols: usize, to_llama: bool) -> Vec<T> {
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

/// `rope_freqs.weight` as convert_hf_to_gguf.py computes it for Llama 3 scaling: in float32,
/// as its torch tensors do.
pub(crate) fn llama3_rope_factors(head_dim: usize, theta: f64, factor: f64, low: f64, high: f64, original: f64) -> Vec<f32> {
    let (factor, low, high, original) = (factor as f32, low as f32, high as f32, original as f32);
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (original / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Llama 3 RoPE scaling that gives llama.cpp's per-frequency factors `freqs` (`rope_freqs.weight`):
/// (factor, low_freq_factor, high_freq_factor, original context). Only two of the last three are
/// determined by the factors, so low_freq_factor is taken as Llama 3's 1 and, where a frequency is
/// scaled partly, high_freq_factor as its 4; the result is checked by recomputing the factors.
fn fit_llama3(freqs: &[f32], head_dim: usize, theta: f64) -> Option<(f64, f64, f64, f64)> {
    let factor = freqs.iter().copied().fold(1f32, f32::max) as f64;
    let wavelen = |i: usize| 2.0 * std::f64::consts::PI * theta.powf((2 * i) as f64 / head_dim as f64);
    let low = 1.0;
    let smooth = freqs.iter().position(|&f| f > 1.0 + 1e-6 && (f as f64) < factor - 1e-6);
    let (high, original) = match smooth {
        // 1/f = (1 − s)/factor + s, s = (original/wavelen − low)/(high − low).
        Some(i) => {
            let s = (1.0 / freqs[i] as f64 - 1.0 / factor) / (1.0 - 1.0 / factor);
            let high = 4.0;
            (high, wavelen(i) * (low + s * (high - low)))
        }
        // No frequency between: any boundaries between the last unscaled and first scaled one.
        None => {
            let first_scaled = freqs.iter().position(|&f| f as f64 >= factor - 1e-6)?;
            let original = wavelen(first_scaled) * 0.999;
            let high = if first_scaled == 0 { 2.0 } else { original / wavelen(first_scaled - 1) * 0.999 };
            (high.max(1.0 + 1e-3), original)
        }
    };
    // A context length is a whole number: take it where the factors allow.
    let original = if (original - original.round()).abs() < 1e-3 * original { original.round() } else { original };
    let again = llama3_rope_factors(head_dim, theta, factor, low, high, original);
    let close = again.iter().zip(freqs).all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0));
    close.then_some((factor, low, high, original))
}

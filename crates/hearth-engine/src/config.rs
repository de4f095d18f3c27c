//! One description of a decoder model, read from a Hugging Face `config.json` or from GGUF
//! metadata. Every architecture is a set of switches on the same decoder.

use serde_json::Value as Json;

use crate::{EngineError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Phi3,
    Gemma2,
    Gemma3,
}

impl Arch {
    fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "llama" | "LlamaForCausalLM" => Arch::Llama,
            "mistral" | "MistralForCausalLM" => Arch::Mistral,
            "qwen2" | "Qwen2ForCausalLM" => Arch::Qwen2,
            "qwen3" | "Qwen3ForCausalLM" => Arch::Qwen3,
            "phi3" | "Phi3ForCausalLM" => Arch::Phi3,
            "gemma2" | "Gemma2ForCausalLM" => Arch::Gemma2,
            "gemma3" | "gemma3_text" | "Gemma3ForCausalLM" | "Gemma3TextModel" => Arch::Gemma3,
            other => return Err(EngineError::Unsupported(format!("model architecture {other:?}"))),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by a factor.
    Linear(f64),
    /// Llama 3's frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: f64,
    },
    /// Per-frequency divisors as stored by llama.cpp (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
}

/// A rotary embedding: its base and frequency scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeSettings {
    pub theta: f64,
    pub scaling: RopeScaling,
}

#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope: RopeSettings,
    /// The RoPE of sliding-window layers where it differs from `rope` (Gemma 3's local layers).
    pub sliding_rope: Option<RopeSettings>,
    pub context_length: usize,
    pub tie_word_embeddings: bool,
    pub activation: Activation,
    /// Bias on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// Bias on the output projection and MLP (some Llama variants).
    pub o_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm over each head of q and k before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// The Q and K rows of each head are in llama.cpp's interleaved order (GGUF Llama and
    /// Mistral files): RoPE rotates adjacent pairs instead of the two halves. Used as stored,
    /// so the weights stay in the memory map instead of being copied into HF order.
    pub rope_interleaved: bool,
    /// Norm weights stored as an offset from 1 (Gemma: y = x̂ · (1 + w)).
    pub norm_weight_offset: f32,
    /// Gemma 2's extra norms after attention and around the MLP.
    pub sandwich_norms: bool,
    /// Embeddings multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    pub attn_logit_softcap: Option<f32>,
    pub final_logit_softcap: Option<f32>,
    pub attn_scale: f64,
    /// Per layer: the sliding-window width, or `None` for full attention.
    pub layer_windows: Vec<Option<usize>>,
    /// Every position attends to every other of its sequence, not only to earlier ones
    /// (EmbeddingGemma). A sequence's tokens must then all come in one forward pass.
    pub bidirectional: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn field<'a>(c: &'a Json, key: &str) -> Option<&'a Json> {
    c.get(key).filter(|v| !v.is_null())
}

fn req_usize(c: &Json, key: &str) -> Result<usize> {
    field(c, key)
        .and_then(Json::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| EngineError::Config(format!("missing or invalid field {key:?} in config.json")))
}

fn opt_usize(c: &Json, key: &str) -> Result<Option<usize>> {
    match field(c, key) {
        None => Ok(None),
        Some(v) => {
            v.as_u64().map(|v| Some(v as usize)).ok_or_else(|| EngineError::Config(format!("field {key:?} must be a non-negative integer")))
        }
    }
}

fn opt_f64(c: &Json, key: &str) -> Option<f64> {
    field(c, key).and_then(Json::as_f64)
}

/// `eos_token_id` may be a number or a list.
pub(crate) fn token_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|n| n as u32)).collect(),
        _ => Vec::new(),
    }
}

/// Refuses a `partial_rotary_factor` (in `obj`) other than 1: RoPE turns every dimension here.
fn full_rotary(obj: &Json) -> Result<()> {
    match opt_f64(obj, "partial_rotary_factor") {
        Some(p) if p != 1.0 => Err(EngineError::Unsupported(format!("partial rotary factor {p}"))),
        _ => Ok(()),
    }
}

/// The RoPE described by `block` (a `rope_parameters` or `rope_scaling` object), its base the
/// block's `rope_theta` or else `theta`.
fn rope_settings(block: Option<&Json>, theta: f64) -> Result<RopeSettings> {
    let Some(r) = block else { return Ok(RopeSettings { theta, scaling: RopeScaling::None }) };
    full_rotary(r)?;
    let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(Json::as_str).unwrap_or("default");
    let f = |k: &str| opt_f64(r, k).ok_or_else(|| EngineError::Config(format!("rope scaling {kind} needs {k}")));
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear(f("factor")?),
        "llama3" => RopeScaling::Llama3 {
            factor: f("factor")?,
            low_freq_factor: f("low_freq_factor")?,
            high_freq_factor: f("high_freq_factor")?,
            original_context: f("original_max_position_embeddings")?,
        },
        other => return Err(EngineError::Unsupported(format!("rope scaling type {other:?}"))),
    };
    Ok(RopeSettings { theta: opt_f64(r, "rope_theta").unwrap_or(theta), scaling })
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json` (already parsed).
    pub fn from_hf(c: &Json) -> Result<Self> {
        // A multimodal Gemma 3 keeps the language model's settings under `text_config`.
        let (c, outer) = match field(c, "model_type").and_then(Json::as_str) {
            Some("gemma3") => {
                (field(c, "text_config").ok_or_else(|| EngineError::Config("gemma3 config.json has no text_config".into()))?, c)
            }
            _ => (c, c),
        };
        let arch_name = field(c, "model_type")
            .and_then(Json::as_str)
            .or_else(|| c.get("architectures").and_then(|a| a.get(0)).and_then(Json::as_str))
            .ok_or_else(|| EngineError::Config("config.json names no model_type".into()))?;
        let arch = Arch::from_name(arch_name)?;
        let hidden_size = req_usize(c, "hidden_size")?;
        let num_heads = req_usize(c, "num_attention_heads")?;
        let num_layers = req_usize(c, "num_hidden_layers")?;
        let num_kv_heads = opt_usize(c, "num_key_value_heads")?.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(EngineError::Config(format!("{num_heads} attention heads cannot share {num_kv_heads} key/value heads")));
        }
        let head_dim = opt_usize(c, "head_dim")?.unwrap_or(hidden_size / num_heads);
        let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
        // transformers 5 nests rope settings in `rope_parameters` (Gemma 3's keyed by layer
        // type); older files use the top level (Gemma 3's local base in `rope_local_base_freq`).
        let rope_block = field(c, "rope_parameters").or_else(|| field(c, "rope_scaling"));
        let of_layer_type = |t: &str| rope_block.and_then(|r| field(r, t));
        let default_theta = if arch == Arch::Gemma3 { 1_000_000.0 } else { 10_000.0 };
        full_rotary(c)?;
        let rope = rope_settings(of_layer_type("full_attention").or(rope_block), opt_f64(c, "rope_theta").unwrap_or(default_theta))?;
        let sliding_rope = match of_layer_type("sliding_attention") {
            Some(block) => Some(rope_settings(Some(block), 10_000.0)?),
            None if arch == Arch::Gemma3 => {
                Some(RopeSettings { theta: opt_f64(c, "rope_local_base_freq").unwrap_or(10_000.0), scaling: RopeScaling::None })
            }
            None => None,
        };
        let activation = match field(c, "hidden_activation").or(field(c, "hidden_act")).and_then(Json::as_str) {
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("gelu_pytorch_tanh") | Some("gelu_tanh") | Some("gelu") => Activation::GeluTanh,
            Some(other) => return Err(EngineError::Unsupported(format!("activation {other:?}"))),
        };
        // transformers honours the flag for Gemma 3 only.
        let bidirectional = arch == Arch::Gemma3 && field(c, "use_bidirectional_attention").and_then(Json::as_bool).unwrap_or(false);
        // transformers reads a bidirectional model's window as the whole span around a query:
        // keys less than `sliding_window / 2 + 1` away on either side.
        let sliding_window = opt_usize(c, "sliding_window")?.map(|w| if bidirectional { w / 2 + 1 } else { w });
        let use_sliding = field(c, "use_sliding_window").and_then(Json::as_bool).unwrap_or(true);
        let layer_windows = match (c.get("layer_types").and_then(Json::as_array), sliding_window) {
            (Some(types), window) => {
                if types.len() != num_layers {
                    return Err(EngineError::Config("layer_types length differs from num_hidden_layers".into()));
                }
                types.iter().map(|t| if t.as_str() == Some("sliding_attention") { window } else { None }).collect()
            }
            // Gemma 3 before `layer_types`: every `pattern`-th layer is global.
            (None, Some(w)) if arch == Arch::Gemma3 => {
                let pattern = opt_usize(c, "sliding_window_pattern")?.or(opt_usize(c, "_sliding_window_pattern")?).unwrap_or(6);
                (0..num_layers).map(|i| ((i + 1) % pattern != 0).then_some(w)).collect()
            }
            // Gemma 2 before `layer_types`: even layers slide.
            (None, Some(w)) if gemma => (0..num_layers).map(|i| (i % 2 == 0).then_some(w)).collect(),
            (None, w) if use_sliding && matches!(arch, Arch::Mistral | Arch::Phi3) => vec![w; num_layers],
            _ => vec![None; num_layers],
        };
        let attn_scale = match opt_f64(c, "query_pre_attn_scalar") {
            Some(s) if gemma => s.powf(-0.5),
            _ => (head_dim as f64).powf(-0.5),
        };
        let softcap = |k| opt_f64(c, k).map(|v| v as f32);
        Ok(ModelConfig {
            arch,
            hidden_size,
            intermediate_size: req_usize(c, "intermediate_size")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: req_usize(c, "vocab_size")?,
            rms_norm_eps: opt_f64(c, "rms_norm_eps").unwrap_or(1e-6),
            rope,
            sliding_rope,
            context_length: opt_usize(c, "max_position_embeddings")?.unwrap_or(2048),
            tie_word_embeddings: field(c, "tie_word_embeddings").and_then(Json::as_bool).unwrap_or(gemma),
            activation,
            qkv_bias: arch == Arch::Qwen2 || field(c, "attention_bias").and_then(Json::as_bool).unwrap_or(false),
            o_bias: arch != Arch::Qwen2 && field(c, "attention_bias").and_then(Json::as_bool).unwrap_or(false),
            mlp_bias: field(c, "mlp_bias").and_then(Json::as_bool).unwrap_or(false),
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Gemma3),
            rope_interleaved: false,
            norm_weight_offset: if gemma { 1.0 } else { 0.0 },
            sandwich_norms: gemma,
            scale_embeddings: gemma,
            attn_logit_softcap: if gemma { softcap("attn_logit_softcapping") } else { None },
            final_logit_softcap: if gemma { softcap("final_logit_softcapping") } else { None },
            attn_scale,
            layer_windows,
            bidirectional,
            bos_token_id: field(c, "bos_token_id").or(field(outer, "bos_token_id")).and_then(Json::as_u64).map(|v| v as u32),
            eos_token_ids: token_ids(field(c, "eos_token_id").or(field(outer, "eos_token_id"))),
        })
    }

    /// Reads the `{arch}.*` hyper-parameters of a GGUF file.
    pub fn from_gguf(g: &hearth_formats::gguf::Gguf) -> Result<Self> {
        use hearth_formats::gguf::Value;
        let arch_name = g.architecture()?;
        let arch = Arch::from_name(arch_name)?;
        if arch == Arch::Gemma3 {
            // llama.cpp leaves Gemma 3's layer pattern, local base and query scale out of the
            // metadata (they are in its code): not read until a fixture can check them.
            return Err(EngineError::Unsupported("Gemma 3 from GGUF".into()));
        }
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize> {
            g.get(&key(k))
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| EngineError::Config(format!("GGUF metadata lacks {}", key(k))))
        };
        let opt_f = |k: &str| g.get(&key(k)).and_then(Value::as_f64);
        let hidden_size = req("embedding_length")?;
        let num_heads = req("attention.head_count")?;
        let num_kv_heads = req("attention.head_count_kv").unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(EngineError::Config(format!("{num_heads} heads cannot share {num_kv_heads} key/value heads")));
        }
        let num_layers = req("block_count")?;
        let head_dim = req("attention.key_length").unwrap_or(hidden_size / num_heads);
        let vocab_size = match g.tensor("token_embd.weight") {
            Some(t) => *t.dims.get(1).unwrap_or(&0) as usize,
            None => return Err(EngineError::Weights("GGUF file has no token_embd.weight".into())),
        };
        let gemma = arch == Arch::Gemma2;
        // llama.cpp writes 0 for "no window" (Phi-3 with `sliding_window: null`).
        let window = req("attention.sliding_window").ok().filter(|&w| w > 0);
        let layer_windows =
            if gemma { (0..num_layers).map(|i| (i % 2 == 0).then_some(window).flatten()).collect() } else { vec![window; num_layers] };
        let rope_scaling = match g.get(&key("rope.scaling.type")).and_then(Value::as_str) {
            Some("linear") => RopeScaling::Linear(opt_f("rope.scaling.factor").unwrap_or(1.0)),
            Some("none") | None => RopeScaling::None,
            Some(other) => return Err(EngineError::Unsupported(format!("GGUF rope scaling {other:?}"))),
        };
        Ok(ModelConfig {
            arch,
            hidden_size,
            intermediate_size: req("feed_forward_length")?,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size,
            rms_norm_eps: opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope: RopeSettings { theta: opt_f("rope.freq_base").unwrap_or(10_000.0), scaling: rope_scaling },
            sliding_rope: None,
            context_length: req("context_length").unwrap_or(2048),
            tie_word_embeddings: g.tensor("output.weight").is_none(),
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            qkv_bias: g.tensor("blk.0.attn_q.bias").is_some(),
            o_bias: g.tensor("blk.0.attn_output.bias").is_some(),
            mlp_bias: g.tensor("blk.0.ffn_down.bias").is_some(),
            qk_norm: g.tensor("blk.0.attn_q_norm.weight").is_some(),
            rope_interleaved: matches!(arch_name, "llama" | "mistral"),
            // llama.cpp's converter already added Gemma's 1 to the stored norm weights.
            norm_weight_offset: 0.0,
            sandwich_norms: gemma,
            scale_embeddings: gemma,
            attn_logit_softcap: opt_f("attn_logit_softcapping").map(|v| v as f32),
            final_logit_softcap: opt_f("final_logit_softcapping").map(|v| v as f32),
            attn_scale: (head_dim as f64).powf(-0.5),
            layer_windows,
            bidirectional: false,
            bos_token_id: g.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64).map(|v| v as u32),
            eos_token_ids: g.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).map(|v| vec![v as u32]).unwrap_or_default(),
        })
    }

    pub fn q_size(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_size(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn gemma3_text(extra: Json) -> Json {
        let mut c = json!({
            "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 7,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 100,
            "query_pre_attn_scalar": 64, "sliding_window": 512,
        });
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    /// transformers 4's top-level settings (window pattern, `rope_local_base_freq`), the same
    /// under a multimodal `text_config`, and transformers 5's per-layer-type `rope_parameters`
    /// describe one model.
    #[test]
    fn gemma3_configs_old_and_new_agree() {
        let old = gemma3_text(json!({
            "rope_theta": 1_000_000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            "rope_local_base_freq": 10_000.0, "sliding_window_pattern": 6,
        }));
        let multimodal = json!({"model_type": "gemma3", "text_config": old.clone(), "eos_token_id": [1, 106]});
        let mut types = vec!["sliding_attention"; 7];
        types[5] = "full_attention";
        let new = gemma3_text(json!({
            "layer_types": types,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            },
        }));
        for c in [old, multimodal.clone(), new] {
            let cfg = ModelConfig::from_hf(&c).unwrap();
            assert_eq!(cfg.arch, Arch::Gemma3);
            assert_eq!(cfg.rope, RopeSettings { theta: 1_000_000.0, scaling: RopeScaling::Linear(8.0) });
            assert_eq!(cfg.sliding_rope, Some(RopeSettings { theta: 10_000.0, scaling: RopeScaling::None }));
            let w = Some(512);
            assert_eq!(cfg.layer_windows, [w, w, w, w, w, None, w]);
            assert!(cfg.qk_norm && cfg.sandwich_norms && !cfg.bidirectional);
            assert_eq!(cfg.attn_scale, 0.125);
        }
        assert_eq!(ModelConfig::from_hf(&multimodal).unwrap().eos_token_ids, [1, 106]);
    }

    /// EmbeddingGemma's `sliding_window` spans both sides of a query, as transformers reads it.
    #[test]
    fn a_bidirectional_window_reaches_half_each_way() {
        let cfg = ModelConfig::from_hf(&gemma3_text(json!({"use_bidirectional_attention": true}))).unwrap();
        assert!(cfg.bidirectional);
        assert_eq!(cfg.layer_windows[0], Some(257));
    }
}

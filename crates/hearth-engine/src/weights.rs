//! Named weight tensors in their stored format, from a GGUF file or a safetensors model
//! directory (plain or MLX-quantised). Names are normalised to the Hugging Face scheme so one
//! model implementation serves every format.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hearth_formats::gguf::Gguf;
use hearth_formats::safetensors::{self, SafeTensors};
use hearth_formats::{DType, SharedBytes};
use hearth_kernels::{FloatFormat, MatrixRef, RowFormat};
use serde_json::Value as Json;

use crate::{EngineError, Result};

/// A weight matrix (or vector) in its stored format; bytes usually point into a memory map.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub format: RowFormat,
    /// Row-major shape; for MLX-quantised matrices the logical (unpacked) shape.
    pub shape: Vec<usize>,
    pub data: SharedBytes,
    /// MLX per-group scales and biases.
    pub scales: Option<SharedBytes>,
    pub biases: Option<SharedBytes>,
}

impl StoredTensor {
    /// As a matrix of `rows = shape[0]` rows of `cols = product of the rest`.
    pub fn matrix(&self) -> Result<MatrixRef<'_>> {
        let rows = *self.shape.first().unwrap_or(&1);
        let cols = self.shape.iter().skip(1).product::<usize>().max(1);
        let empty: &[u8] = &[];
        Ok(MatrixRef::new(
            self.format,
            rows,
            cols,
            &self.data,
            self.scales.as_deref().unwrap_or(empty),
            self.biases.as_deref().unwrap_or(empty),
        )?)
    }

    /// Every value de-quantised, row-major: for small tensors (norms, biases) only.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let n: usize = self.shape.iter().product();
        let mut out = vec![0f32; n];
        let as_matrix = StoredTensor { shape: vec![1, n], ..self.clone() };
        as_matrix.matrix()?.row(0, &mut out);
        Ok(out)
    }

    pub fn byte_size(&self) -> usize {
        self.data.len() + self.scales.as_ref().map_or(0, |s| s.len()) + self.biases.as_ref().map_or(0, |b| b.len())
    }
}

fn row_format(dtype: DType) -> Result<RowFormat> {
    Ok(match dtype {
        DType::F32 => RowFormat::Float(FloatFormat::F32),
        DType::F16 => RowFormat::Float(FloatFormat::F16),
        DType::BF16 => RowFormat::Float(FloatFormat::BF16),
        DType::Ggml(t) => RowFormat::Ggml(t),
        other => return Err(EngineError::Unsupported(format!("{other:?} weights"))),
    })
}

fn float_format(dtype: DType) -> Result<FloatFormat> {
    match row_format(dtype)? {
        RowFormat::Float(f) => Ok(f),
        other => Err(EngineError::Weights(format!("expected float scales, found {other:?}"))),
    }
}

#[derive(Default)]
pub struct WeightStore {
    tensors: HashMap<String, StoredTensor>,
}

impl WeightStore {
    pub fn get(&self, name: &str) -> Result<&StoredTensor> {
        self.tensors.get(name).ok_or_else(|| EngineError::Weights(format!("missing tensor {name}")))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Every tensor, under its Hugging Face name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &StoredTensor)> {
        self.tensors.iter()
    }

    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(StoredTensor::byte_size).sum()
    }

    /// Loads every tensor of a GGUF file under its Hugging Face name, in place (llama-family
    /// Q and K rows stay in llama.cpp's order: see `ModelConfig::rope_interleaved`).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch = g.architecture()?.to_string();
        let mut tensors = HashMap::new();
        for info in &g.tensors {
            let Some(name) = hf_name(&arch, &info.name) else { continue };
            let format = row_format(info.ggml_type.dtype())?;
            tensors.insert(name, StoredTensor { format, shape: info.shape(), data: g.tensor_data(info)?, scales: None, biases: None });
        }
        Ok(WeightStore { tensors })
    }

    /// Loads a safetensors model directory under the decoder's names (see [`read_safetensors_dir`]).
    pub fn from_safetensors_dir(dir: &Path, config: &Json) -> Result<Self> {
        let tensors = read_safetensors_dir(dir, config)?.into_iter().map(|(name, t)| (decoder_name(&name), t)).collect();
        Ok(WeightStore { tensors })
    }
}

/// Every tensor of a safetensors model directory, under the names it is stored by. A tensor is
/// MLX-quantised iff `<name>.scales` exists; its bits and group size come from config.json's
/// `quantization` block (with per-layer overrides) and are checked against the tensor shapes.
pub fn read_safetensors_dir(dir: &Path, config: &Json) -> Result<BTreeMap<String, StoredTensor>> {
    let mut raw = HashMap::new();
    for file in safetensors::model_files(dir)? {
        raw.extend(SafeTensors::open(&file)?.tensors);
    }
    let quant = config.get("quantization").or_else(|| config.get("quantization_config"));
    let mut tensors = BTreeMap::new();
    for (name, view) in &raw {
        if name.ends_with(".scales") || name.ends_with(".biases") {
            continue;
        }
        let Some(base) = name.strip_suffix(".weight").filter(|b| raw.contains_key(&format!("{b}.scales"))) else {
            let format = row_format(view.dtype)?;
            tensors.insert(
                name.clone(),
                StoredTensor { format, shape: view.shape.clone(), data: view.data.clone(), scales: None, biases: None },
            );
            continue;
        };
        let scales = &raw[&format!("{base}.scales")];
        let biases = raw
            .get(&format!("{base}.biases"))
            .ok_or_else(|| EngineError::Weights(format!("{base} has scales but no biases (only MLX affine mode is supported)")))?;
        let (bits, group_size) = mlx_params(quant, base)?;
        let [rows, packed] = view.shape[..] else {
            return Err(EngineError::Weights(format!("quantised {name} is not a matrix")));
        };
        let cols = packed * 32 / bits as usize;
        if view.dtype != DType::U32 || scales.shape != [rows, cols / group_size] || biases.shape != scales.shape {
            return Err(EngineError::Weights(format!(
                "{base}: shapes {:?}/{:?} do not match {bits}-bit groups of {group_size}",
                view.shape, scales.shape
            )));
        }
        let params = float_format(scales.dtype)?;
        if float_format(biases.dtype)? != params {
            return Err(EngineError::Weights(format!("{base}: scales and biases differ in dtype")));
        }
        let stored = StoredTensor {
            format: RowFormat::MlxAffine { bits, group_size, params },
            shape: vec![rows, cols],
            data: view.data.clone(),
            scales: Some(scales.data.clone()),
            biases: Some(biases.data.clone()),
        };
        stored.matrix()?;
        tensors.insert(name.clone(), stored);
    }
    Ok(tensors)
}

/// The name the decoder loads a safetensors tensor by (`model.…`, `lm_head.…`): multimodal
/// checkpoints keep the language model under `language_model.` (transformers 4) or
/// `model.language_model.` (transformers 5); a base model saved without its LM head
/// (`Gemma3TextModel`, `Qwen3Model`) has no `model.` prefix.
fn decoder_name(name: &str) -> String {
    let name = name.strip_prefix("language_model.").unwrap_or(name);
    if let Some(rest) = name.strip_prefix("model.language_model.") {
        return format!("model.{rest}");
    }
    if ["embed_tokens.", "layers.", "norm."].iter().any(|p| name.starts_with(p)) {
        return format!("model.{name}");
    }
    name.to_string()
}

/// Bits and group size for one MLX-quantised layer.
fn mlx_params(quant: Option<&Json>, layer: &str) -> Result<(u32, usize)> {
    let q = quant.ok_or_else(|| EngineError::Config(format!("{layer} is quantised but config.json has no quantization block")))?;
    let read =
        |obj: &Json| -> Option<(u32, usize)> { Some((obj.get("bits")?.as_u64()? as u32, obj.get("group_size")?.as_u64()? as usize)) };
    let defaults = read(q).ok_or_else(|| EngineError::Config("quantization block lacks bits/group_size".into()))?;
    if let Some(mode) = q.get("mode").and_then(Json::as_str) {
        if mode != "affine" {
            return Err(EngineError::Unsupported(format!("MLX quantisation mode {mode:?}")));
        }
    }
    Ok(q.get(layer).and_then(read).unwrap_or(defaults))
}

/// Tensors outside the blocks: GGUF name, Hugging Face name.
const TOP_NAMES: [(&str, &str); 3] =
    [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"), ("output.weight", "lm_head.weight")];

/// The stems of GGUF block tensors (`blk.N.<stem>.weight`), in the order a Hugging Face name
/// is looked up (`ffn_norm` before `post_attention_norm`: both name Llama's second norm).
const LAYER_STEMS: [&str; 14] = [
    "attn_norm",
    "ffn_norm",
    "post_attention_norm",
    "post_ffw_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_qkv",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// A GGUF block tensor stem's Hugging Face name within `model.layers.N.`, for GGUF
/// architecture `arch`.
fn layer_stem(arch: &str, stem: &str) -> Option<&'static str> {
    let gemma = arch.starts_with("gemma");
    Some(match stem {
        "attn_norm" => "input_layernorm",
        "ffn_norm" if gemma => "pre_feedforward_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "post_attention_norm" => "post_attention_layernorm",
        "post_ffw_norm" => "post_feedforward_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_qkv" => "self_attn.qkv_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" if arch == "phi3" => "mlp.gate_up_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    })
}

/// The Hugging Face name of a GGUF tensor; `None` for tensors the model does not use as
/// weights (`rope_freqs` is read separately).
pub fn hf_name(arch: &str, gguf: &str) -> Option<String> {
    if let Some((_, hf)) = TOP_NAMES.iter().find(|(g, _)| *g == gguf) {
        return Some(hf.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let (stem, suffix) = part.rsplit_once('.')?;
    Some(format!("model.layers.{layer}.{}.{suffix}", layer_stem(arch, stem)?))
}

/// The GGUF name of a Hugging Face tensor in a model of GGUF architecture `arch` (the
/// inverse of the names the loader reads).
pub fn gguf_name(arch: &str, hf: &str) -> Option<String> {
    if let Some((gguf, _)) = TOP_NAMES.iter().find(|(_, h)| *h == hf) {
        return Some(gguf.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let (stem, suffix) = part.rsplit_once('.')?;
    let gguf = LAYER_STEMS.iter().find(|g| layer_stem(arch, g) == Some(stem))?;
    Some(format!("blk.{layer}.{gguf}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tensor name the loader maps from GGUF maps back to the same GGUF name.
    #[test]
    fn gguf_names_round_trip() {
        for arch in ["llama", "qwen2", "qwen3", "phi3", "gemma2"] {
            let mut names: Vec<String> = TOP_NAMES.iter().map(|(g, _)| g.to_string()).collect();
            names.extend(LAYER_STEMS.iter().map(|s| format!("blk.3.{s}.weight")));
            names.push("blk.0.attn_q.bias".into());
            for gguf in names {
                // Llama's `post_attention_norm` is not a Llama tensor; its name is `ffn_norm`'s.
                if !arch.starts_with("gemma") && gguf.contains("post_") {
                    continue;
                }
                let hf = hf_name(arch, &gguf).unwrap();
                assert_eq!(gguf_name(arch, &hf).as_deref(), Some(gguf.as_str()), "{arch}: {hf}");
            }
        }
    }
}

//! What a conversion reads: every tensor of a Hugging Face or MLX directory (float or
//! MLX-quantised) or of a GGUF file, in its stored format under its Hugging Face name, with an
//! adapter's updates merged in where one is given (`hearth fuse`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_engine::lora::LoraAdapter;
use hearth_engine::weights::{read_safetensors_dir, StoredTensor};
use hearth_formats::gguf::GgmlType;
use hearth_kernels::{dequantize_row, FloatFormat, RowFormat};
use serde_json::Value;

use crate::gguf::{engine, GgufSource};
use crate::{exact, io, Affine, ConvertError, FloatType, QuantizedRows};

pub(crate) struct Source {
    tensors: BTreeMap<String, StoredTensor>,
    pub origin: Origin,
    adapter: Option<LoraAdapter>,
    /// The float type MLX groups are de-quantised and an adapter's update added in (default:
    /// each weight's own; mlx-lm casts to `--dtype` first too).
    pub compute_type: Option<FloatType>,
}

pub(crate) enum Origin {
    /// A safetensors directory and its `config.json`.
    Dir { dir: PathBuf, config: Value },
    /// A GGUF file (Llama and Mistral Q/K rows are put back in Hugging Face's order on reading).
    Gguf(Box<GgufSource>),
}

impl Source {
    /// The model at `path`, with `adapter`'s updates to be merged into its weights.
    pub fn open(path: &Path, adapter: Option<&Path>) -> Result<Source, ConvertError> {
        let (tensors, origin) = if path.is_file() {
            let (gguf, tensors) = GgufSource::open(path)?;
            (tensors, Origin::Gguf(Box::new(gguf)))
        } else {
            let config_path = path.join("config.json");
            let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(io(&config_path))?)
                .map_err(|e| ConvertError::Unsupported(format!("{}: {e}", config_path.display())))?;
            let tensors = read_safetensors_dir(path, &config).map_err(engine)?;
            (tensors, Origin::Dir { dir: path.to_path_buf(), config })
        };
        let adapter = adapter
            .map(|dir| LoraAdapter::load(dir).map_err(|e| ConvertError::Unsupported(format!("{}: {e}", dir.display()))))
            .transpose()?;
        if let Some(a) = &adapter {
            if let Some(missing) = a.layer_names().find(|l| !tensors.contains_key(&format!("{l}.weight"))) {
                return Err(ConvertError::Unsupported(format!("the adapter updates {missing}, which this model does not have")));
            }
        }
        Ok(Source { tensors, origin, adapter, compute_type: None })
    }

    /// The model's `config.json`, without any quantisation it was stored with.
    pub fn config(&self) -> Value {
        match &self.origin {
            Origin::Dir { config, .. } => {
                let mut config = config.clone();
                if let Some(map) = config.as_object_mut() {
                    map.remove("quantization");
                    map.remove("quantization_config");
                }
                config
            }
            Origin::Gguf(g) => g.config(),
        }
    }

    /// The `quantization` block of an MLX-quantised source's config.
    pub fn stored_quantization(&self) -> Option<Affine> {
        let Origin::Dir { config, .. } = &self.origin else { return None };
        let q = config.get("quantization").or_else(|| config.get("quantization_config"))?;
        Some(Affine { bits: q.get("bits")?.as_u64()? as u32, group_size: q.get("group_size")?.as_u64()? as usize })
    }

    /// Every tensor's name, logical shape and the float type its values are held in, by name.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, FloatType)> {
        self.tensors.iter().map(|(name, t)| (name.clone(), t.shape.clone(), held_type(t))).collect()
    }

    fn get(&self, name: &str) -> Result<&StoredTensor, ConvertError> {
        self.tensors.get(name).ok_or_else(|| ConvertError::Unsupported(format!("{name}: no such tensor")))
    }

    /// Whether the adapter changes this tensor.
    pub fn fused(&self, name: &str) -> bool {
        let layer = name.strip_suffix(".weight").unwrap_or(name);
        self.adapter.as_ref().is_some_and(|a| a.layer_names().any(|l| l == layer))
    }

    /// The MLX affine layout the tensor is stored in.
    pub fn affine(&self, name: &str) -> Option<Affine> {
        match self.tensors.get(name)?.format {
            RowFormat::MlxAffine { bits, group_size, .. } => Some(Affine { bits, group_size }),
            _ => None,
        }
    }

    /// The MLX layout a GGUF tensor's blocks map onto exactly, unless an adapter changes it.
    pub fn exact_layout(&self, name: &str) -> Option<Affine> {
        match (&self.origin, self.tensors.get(name)?.format) {
            (Origin::Gguf(_), RowFormat::Ggml(ty)) if !self.fused(name) => exact::affine_of(ty),
            _ => None,
        }
    }

    /// A tensor's values as float32 in Hugging Face's row order (MLX groups de-quantised in
    /// their scales' type, as `mx.dequantize` returns them), the adapter's update merged in
    /// (added in the weight's float type, as mlx-lm's `fuse` does).
    pub fn values(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let t = self.get(name)?;
        let ty = self.compute_type.unwrap_or(held_type(t));
        let mut values = match t.format {
            RowFormat::MlxAffine { bits, group_size, params } => mlx_dequantize(t, bits, group_size, params, ty),
            _ => t.to_f32_vec().map_err(engine)?,
        };
        release(t);
        if let Origin::Gguf(g) = &self.origin {
            values = g.hf_values(name, g.hf_rows(name, values, t.shape.iter().skip(1).product()));
        }
        if let (Some(a), Some(layer), &[rows, cols]) = (&self.adapter, name.strip_suffix(".weight"), &t.shape[..]) {
            a.fuse_into(layer, &mut values, rows, cols, |v| ty.round(v)).map_err(engine)?;
        }
        Ok(values)
    }

    /// [`Self::values`] in the order the source stores rows (a GGUF's Llama Q/K rows interleaved).
    pub fn stored_values(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        let values = self.values(name)?;
        Ok(match &self.origin {
            Origin::Gguf(g) => g.stored_values(name, g.stored_rows(name, values, self.get(name)?.shape.iter().skip(1).product())),
            Origin::Dir { .. } => values,
        })
    }

    /// The tensor's MLX affine rows where its stored codes are `q`'s as they are: a GGUF
    /// tensor's blocks of a mapped type, or an MLX tensor already in `q`'s layout. `None` where
    /// they are not, or where the adapter changes the tensor.
    pub fn exact_affine(&self, name: &str, q: Affine) -> Option<QuantizedRows> {
        let t = self.tensors.get(name)?;
        if self.fused(name) {
            return None;
        }
        let rows = match (&self.origin, t.format) {
            (Origin::Gguf(g), RowFormat::Ggml(ty)) if exact::affine_of(ty) == Some(q) => g.exact_affine(name, t)?,
            (_, RowFormat::MlxAffine { bits, group_size, params }) if (Affine { bits, group_size }) == q => {
                let floats = |bytes: &[u8]| {
                    let mut out = vec![0f32; bytes.len() / params.bytes()];
                    dequantize_row(RowFormat::Float(params), bytes, &[], &[], &mut out);
                    out
                };
                QuantizedRows { packed: t.data.to_vec(), scales: floats(t.scales.as_ref()?), biases: floats(t.biases.as_ref()?) }
            }
            _ => return None,
        };
        release(t);
        Some(rows)
    }

    /// An MLX-quantised tensor's codes as GGUF blocks of type `ty`, in Hugging Face's row
    /// order, where they map exactly ([`exact::affine_to_ggml`]) and the adapter leaves it.
    pub fn exact_blocks(&self, name: &str, ty: GgmlType) -> Option<Vec<u8>> {
        let t = self.tensors.get(name)?;
        if self.fused(name) {
            return None;
        }
        let blocks = exact::affine_to_ggml(t, ty);
        release(t);
        blocks
    }

    /// What travels beside the weights: a directory's other files, a GGUF's tokenizer.
    pub fn write_rest(&self, out: &Path) -> Result<(), ConvertError> {
        match &self.origin {
            Origin::Dir { dir, .. } => crate::copy_rest(dir, out, true),
            Origin::Gguf(g) => g.write_tokenizer(out),
        }
    }
}

/// The float type a tensor's values are held in: its own, its MLX scales', or float32 for
/// GGUF blocks.
fn held_type(t: &StoredTensor) -> FloatType {
    match t.format {
        RowFormat::Float(FloatFormat::F16) | RowFormat::MlxAffine { params: FloatFormat::F16, .. } => FloatType::F16,
        RowFormat::Float(FloatFormat::BF16) | RowFormat::MlxAffine { params: FloatFormat::BF16, .. } => FloatType::BF16,
        _ => FloatType::F32,
    }
}

/// Drops a tensor's memory-mapped pages once read, so that a conversion's resident memory is
/// bounded by the tensor in hand, not by the source file.
fn release(t: &StoredTensor) {
    for bytes in [Some(&t.data), t.scales.as_ref(), t.biases.as_ref()].into_iter().flatten() {
        bytes.release_pages(0..bytes.len());
    }
}

/// An MLX-quantised matrix de-quantised as `mx.dequantize` does it: `codes · scale`, then
/// `+ bias`, each rounded to `ty`.
fn mlx_dequantize(t: &StoredTensor, bits: u32, group_size: usize, params: FloatFormat, ty: FloatType) -> Vec<f32> {
    let (n, groups) = (t.shape.iter().product::<usize>(), t.scales.as_ref().map_or(0, |s| s.len() / params.bytes()));
    // The codes themselves: the same groups with scale 1 and bias 0.
    let (ones, zeros) = (1f32.to_le_bytes().repeat(groups), vec![0u8; 4 * groups]);
    let mut codes = vec![0f32; n];
    dequantize_row(RowFormat::MlxAffine { bits, group_size, params: FloatFormat::F32 }, &t.data, &ones, &zeros, &mut codes);
    let floats = |bytes: &[u8]| {
        let mut out = vec![0f32; groups];
        dequantize_row(RowFormat::Float(params), bytes, &[], &[], &mut out);
        out
    };
    let (scales, biases) = (floats(t.scales.as_deref().unwrap_or_default()), floats(t.biases.as_deref().unwrap_or_default()));
    codes
        .chunks_exact(group_size)
        .zip(scales.iter().zip(&biases))
        .flat_map(|(g, (&s, &b))| g.iter().map(move |&q| ty.round(ty.round(q * s) + b)))
        .collect()
}

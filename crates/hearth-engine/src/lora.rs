//! LoRA adapters as mlx-lm writes them (`adapter_config.json` + `adapters.safetensors` with
//! `<layer>.lora_a` `[in, rank]` and `<layer>.lora_b` `[rank, out]`) or PEFT does
//! (`adapter_model.safetensors`, `lora_A` `[rank, in]`, `lora_B` `[out, rank]`, read into mlx-lm's
//! layout): each adapted layer computes `W·x + scale · (x·A)·B`, the base weights untouched.
//! DoRA adapters (a per-output magnitude beside A and B) are read for fusing only. An [`Adapter`] is such a file made
//! ready for one loaded model; each sequence of a forward pass names its own (or none), so
//! several adapters share one base model and one batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use hearth_formats::safetensors::{SafeTensors, TensorView};
use hearth_kernels::{FloatFormat, RowFormat};
use serde_json::Value as Json;

use crate::weights::StoredTensor;
use crate::{EngineError, Result};

/// One adapted layer's low-rank update.
#[derive(Clone, Debug)]
pub struct LoraDelta {
    /// `[in, rank]`, row-major.
    a: Vec<f32>,
    /// `[rank, out]`, row-major.
    b: Vec<f32>,
    pub(crate) rank: usize,
    scale: f32,
    /// DoRA's magnitude `m` `[out]`: the fused row `o` is `m[o] · w_o / ‖w_o‖`.
    magnitude: Option<Vec<f32>>,
}

impl LoraDelta {
    /// Checks the delta fits a layer of `cols` inputs and `rows` outputs.
    pub(crate) fn fits(&self, rows: usize, cols: usize) -> bool {
        self.sides() == (cols, rows)
    }

    /// Its inputs and outputs.
    pub(crate) fn sides(&self) -> (usize, usize) {
        (self.a.len() / self.rank, self.b.len() / self.rank)
    }

    /// `out[t] += scale · (x[t]·A)·B` for rows `first..first + count` of a pass's inputs
    /// and outputs.
    pub(crate) fn apply_rows(&self, x: &[f32], out: &mut [f32], first: usize, count: usize) {
        let (inp, outn) = (self.a.len() / self.rank, self.b.len() / self.rank);
        self.apply(&x[first * inp..(first + count) * inp], &mut out[first * outn..(first + count) * outn]);
    }

    /// `out[t] += scale · (x[t]·A)·B` for every token row.
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let (inp, r) = (self.a.len() / self.rank, self.rank);
        let outn = self.b.len() / r;
        for (xr, or) in x.chunks_exact(inp).zip(out.chunks_exact_mut(outn)) {
            let mut t = [0f32; 64];
            let t = if r <= 64 { &mut t[..r] } else { return self.apply_wide(xr, or) };
            for (i, &xv) in xr.iter().enumerate() {
                for (tv, &av) in t.iter_mut().zip(&self.a[i * r..(i + 1) * r]) {
                    *tv += xv * av;
                }
            }
            for (k, &tv) in t.iter().enumerate() {
                let s = self.scale * tv;
                for (o, &bv) in or.iter_mut().zip(&self.b[k * outn..(k + 1) * outn]) {
                    *o += s * bv;
                }
            }
        }
    }

    /// Ranks above 64 (rare): the same with a heap buffer.
    fn apply_wide(&self, xr: &[f32], or: &mut [f32]) {
        let r = self.rank;
        let outn = self.b.len() / r;
        let t: Vec<f32> = (0..r).map(|k| xr.iter().enumerate().map(|(i, &xv)| xv * self.a[i * r + k]).sum()).collect();
        for (k, &tv) in t.iter().enumerate() {
            for (o, &bv) in or.iter_mut().zip(&self.b[k * outn..(k + 1) * outn]) {
                *o += self.scale * tv * bv;
            }
        }
    }
}

/// An adapter file's contents: the deltas of every layer it touches, by layer name
/// (`model.layers.0.mlp.up_proj`).
#[derive(Debug, Default)]
pub struct LoraAdapter {
    pub(crate) layers: HashMap<String, LoraDelta>,
}

impl LoraAdapter {
    /// Loads an adapter directory (or its safetensors file), with the scale its own settings give.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_scaled(path, None)
    }

    /// Loads an adapter directory, or its safetensors file: PEFT's where the file is (or the
    /// directory holds) `adapter_model.safetensors`, otherwise mlx-lm's `adapters.safetensors`.
    /// The scale comes from the adapter's settings (`adapter_config.json`, or an export bundle's
    /// `config.json`: mlx-lm's `lora_parameters.scale`, PEFT's `lora_alpha / r`); `given` serves
    /// where they have none (a bare adapter file registered with its rank and alpha).
    pub fn load_scaled(path: &Path, given: Option<f32>) -> Result<Self> {
        let (dir, file) = if path.is_dir() {
            let peft = path.join("adapter_model.safetensors");
            (path, if peft.is_file() { peft } else { path.join("adapters.safetensors") })
        } else {
            (path.parent().unwrap_or(Path::new(".")), path.to_path_buf())
        };
        if file.file_name().is_some_and(|n| n == "adapter_model.safetensors") {
            return Self::load_peft(dir, &file, given);
        }
        let cfg_path = ["adapter_config.json", "config.json"].iter().map(|f| dir.join(f)).find(|p| p.is_file());
        let cfg = cfg_path.as_deref().map(read_config).transpose()?.unwrap_or(Json::Null);
        let dora = match cfg.get("fine_tune_type").and_then(Json::as_str).unwrap_or("lora") {
            "lora" => false,
            "dora" => true,
            other => return Err(EngineError::Unsupported(format!("adapter type {other:?} (lora and dora are)"))),
        };
        let scale = cfg.pointer("/lora_parameters/scale").and_then(Json::as_f64).map(|s| s as f32).or(given).ok_or_else(|| {
            let settings =
                cfg_path.map_or("no adapter_config.json".to_string(), |p| format!("{} has no lora_parameters.scale", p.display()));
            EngineError::Config(format!("the adapter's scale is unknown: {settings}, and no lora_alpha and lora_rank were given"))
        })?;
        let tensors = SafeTensors::open(&file)?.tensors;
        let mut layers = HashMap::new();
        for name in tensors.keys() {
            let Some(layer) = name.strip_suffix(".lora_a") else { continue };
            let (a, a_shape) = float_tensor(&tensors, name)?;
            let (b, b_shape) = float_tensor(&tensors, &format!("{layer}.lora_b"))?;
            let (rank, rank_b) = match (&a_shape[..], &b_shape[..]) {
                ([_, r], [rb, _]) => (*r, *rb),
                _ => (0, 1),
            };
            if rank == 0 || rank != rank_b {
                return Err(EngineError::Weights(format!("{layer}: lora_a {a_shape:?} and lora_b {b_shape:?} do not chain")));
            }
            let magnitude = dora.then(|| float_tensor(&tensors, &format!("{layer}.m")).map(|(m, _)| m)).transpose()?;
            layers.insert(layer.to_string(), LoraDelta { a, b, rank, scale, magnitude });
        }
        Self::checked(&file, layers)
    }

    /// PEFT's layout: `base_model.model.<layer>.lora_A.weight` `[rank, in]` and `lora_B.weight`
    /// `[out, rank]`, scale `lora_alpha / r` (`/ √r` with `use_rslora`), DoRA's magnitude as
    /// `lora_magnitude_vector`.
    fn load_peft(dir: &Path, file: &Path, given: Option<f32>) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let cfg = if cfg_path.is_file() { read_config(&cfg_path)? } else { Json::Null };
        let bad = |what: &str| EngineError::Unsupported(format!("{}: {what}", cfg_path.display()));
        if cfg.get("peft_type").and_then(Json::as_str).is_some_and(|t| t != "LORA") {
            return Err(bad("only PEFT's LORA adapters are read"));
        }
        if cfg.get("fan_in_fan_out").and_then(Json::as_bool) == Some(true) {
            return Err(bad("fan_in_fan_out (Conv1D) layers are not supported"));
        }
        for key in ["rank_pattern", "alpha_pattern"] {
            if cfg.get(key).and_then(Json::as_object).is_some_and(|m| !m.is_empty()) {
                return Err(bad(&format!("a per-layer {key} is not supported")));
            }
        }
        let number = |key: &str| cfg.get(key).and_then(Json::as_f64);
        let rslora = cfg.get("use_rslora").and_then(Json::as_bool).unwrap_or(false);
        let scale = match (number("r"), number("lora_alpha")) {
            (Some(r), Some(alpha)) => (if rslora { alpha / r.sqrt() } else { alpha / r }) as f32,
            _ => given.ok_or_else(|| bad("no r and lora_alpha, and no lora_alpha and lora_rank were given"))?,
        };
        let tensors = SafeTensors::open(file)?.tensors;
        let mut layers = HashMap::new();
        for name in tensors.keys() {
            let Some(layer) = name.strip_suffix(".lora_A.weight") else { continue };
            let (a, a_shape) = float_tensor(&tensors, name)?;
            let (b, b_shape) = float_tensor(&tensors, &format!("{layer}.lora_B.weight"))?;
            let (&[rank, inputs], &[outputs, rank_b]) = (&a_shape[..], &b_shape[..]) else {
                return Err(EngineError::Weights(format!("{layer}: lora_A {a_shape:?} and lora_B {b_shape:?} are not matrices")));
            };
            if rank == 0 || rank != rank_b {
                return Err(EngineError::Weights(format!("{layer}: lora_A {a_shape:?} and lora_B {b_shape:?} do not chain")));
            }
            let magnitude = ["lora_magnitude_vector", "lora_magnitude_vector.weight"]
                .iter()
                .map(|suffix| format!("{layer}.{suffix}"))
                .find(|m| tensors.contains_key(m))
                .map(|m| float_tensor(&tensors, &m).map(|(m, _)| m))
                .transpose()?;
            let layer = layer.strip_prefix("base_model.model.").unwrap_or(layer);
            let delta = LoraDelta { a: transpose(&a, rank, inputs), b: transpose(&b, outputs, rank), rank, scale, magnitude };
            layers.insert(layer.to_string(), delta);
        }
        Self::checked(file, layers)
    }

    fn checked(file: &Path, layers: HashMap<String, LoraDelta>) -> Result<Self> {
        if layers.is_empty() {
            return Err(EngineError::Weights(format!("{} holds no LoRA A/B pairs", file.display())));
        }
        for (name, d) in &layers {
            let outputs = d.b.len() / d.rank;
            if d.magnitude.as_ref().is_some_and(|m| m.len() != outputs) {
                return Err(EngineError::Weights(format!("{name}: the DoRA magnitude does not have {outputs} values")));
            }
        }
        Ok(LoraAdapter { layers })
    }

    /// Whether the adapter is DoRA (its updates are only fused, not served beside the base).
    pub fn is_dora(&self) -> bool {
        self.layers.values().any(|d| d.magnitude.is_some())
    }

    /// The rank of every layer, where they share one.
    pub fn rank(&self) -> Option<usize> {
        let mut ranks = self.layers.values().map(|d| d.rank);
        let first = ranks.next()?;
        ranks.all(|r| r == first).then_some(first)
    }
}

fn read_config(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| EngineError::Config(format!("{}: {e}", path.display())))
}

/// A float tensor of an adapter file, as float32, with its shape.
fn float_tensor(tensors: &BTreeMap<String, TensorView>, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let t = tensors.get(name).ok_or_else(|| EngineError::Weights(format!("the adapter has no {name}")))?;
    let format = match t.dtype {
        hearth_formats::DType::F32 => FloatFormat::F32,
        hearth_formats::DType::F16 => FloatFormat::F16,
        hearth_formats::DType::BF16 => FloatFormat::BF16,
        other => return Err(EngineError::Weights(format!("{name}: {other:?} adapter weights"))),
    };
    let stored =
        StoredTensor { format: RowFormat::Float(format), shape: t.shape.clone(), data: t.data.clone(), scales: None, biases: None };
    Ok((stored.to_f32_vec()?, t.shape.clone()))
}

/// A row-major `[rows, cols]` matrix transposed.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| m[r * cols + c])).collect()
}

impl LoraAdapter {
    /// Merges layer `layer`'s update into its weight `[rows, cols]` (row-major, Hugging Face
    /// order) as mlx-lm's `fuse` does: `W + round(scale · Bᵀ · Aᵀ)`, each sum rounded by `round`
    /// (the weight's float type); for DoRA each row `o` then becomes `m[o] · w_o / ‖w_o‖`.
    /// False if the adapter does not touch the layer; an error if its shape does not fit.
    pub fn fuse_into(&self, layer: &str, weight: &mut [f32], rows: usize, cols: usize, round: impl Fn(f32) -> f32) -> Result<bool> {
        let Some(d) = self.layers.get(layer) else { return Ok(false) };
        if !d.fits(rows, cols) || weight.len() != rows * cols {
            return Err(EngineError::Weights(format!("{layer}: the adapter's update does not fit a [{rows}, {cols}] weight")));
        }
        let r = d.rank;
        let scaled_b: Vec<f32> = d.b.iter().map(|&v| d.scale * v).collect();
        for (o, row) in weight.chunks_exact_mut(cols).enumerate() {
            for (i, w) in row.iter_mut().enumerate() {
                let a = &d.a[i * r..(i + 1) * r];
                *w = round(*w + round((0..r).map(|k| scaled_b[k * rows + o] * a[k]).sum::<f32>()));
            }
            if let Some(m) = &d.magnitude {
                let norm = row.iter().map(|&w| w * w).sum::<f32>().sqrt();
                row.iter_mut().for_each(|w| *w = round(m[o] / norm * *w));
            }
        }
        Ok(true)
    }

    /// The layers the adapter touches.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }
}

impl LoraAdapter {
    /// The adapter for a model whose Q and K rows are in llama.cpp's interleaved RoPE order
    /// (adapters are trained in Hugging Face order): the outputs of every q and k delta are
    /// reordered the same way, row `2i + j` of a head taking Hugging Face row `j · head_dim/2 + i`.
    /// A delta whose outputs are not whole heads is left as it is, for the layer's shape check
    /// to reject.
    pub(crate) fn with_interleaved_rope(&self, head_dim: usize) -> LoraAdapter {
        let half = head_dim / 2;
        let layers = self
            .layers
            .iter()
            .map(|(name, d)| {
                let mut d = d.clone();
                let out = d.b.len() / d.rank;
                let heads_fit = head_dim.is_multiple_of(2) && out.is_multiple_of(head_dim);
                if heads_fit && (name.ends_with("self_attn.q_proj") || name.ends_with("self_attn.k_proj")) {
                    for row in d.b.chunks_exact_mut(out) {
                        let hf = row.to_vec();
                        for (dst, v) in row.iter_mut().enumerate() {
                            let (head, i, j) = (dst / head_dim, dst % head_dim / 2, dst % 2);
                            *v = hf[head * head_dim + j * half + i];
                        }
                    }
                }
                (name.clone(), d)
            })
            .collect();
        LoraAdapter { layers }
    }
}

/// Identities for models and adapters, so an adapter is only ever run on the model it was made
/// ready for and prompt caches never mix sequences run with different adapters.
pub(crate) fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// An adapter made ready for one loaded model (see [`crate::model::DecoderModel::adapter`]):
/// its deltas by the model's linear-layer slot, in the model's row order.
#[derive(Debug)]
pub struct Adapter {
    id: u64,
    pub(crate) model: u64,
    pub(crate) deltas: Vec<Option<LoraDelta>>,
}

impl Adapter {
    pub(crate) fn new(model: u64, deltas: Vec<Option<LoraDelta>>) -> Self {
        Adapter { id: next_id(), model, deltas }
    }

    /// Unique among the adapters of this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes its deltas take in memory.
    pub fn bytes(&self) -> usize {
        self.deltas.iter().flatten().map(|d| (d.a.len() + d.b.len()) * std::mem::size_of::<f32>()).sum()
    }

    /// The delta of the linear layer in `slot`, if the adapter touches it.
    pub(crate) fn delta(&self, slot: usize) -> Option<&LoraDelta> {
        self.deltas.get(slot).and_then(Option::as_ref)
    }
}

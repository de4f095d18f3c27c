//! Trainable LoRA adapters in mlx-lm's layout: per adapted linear layer `lora_a` `[in, r]` and
//! `lora_b` `[r, out]`, the update `scale · (x·A)·B` added to the layer's output, saved as
//! `adapters.safetensors` under `<layer>.lora_a` / `<layer>.lora_b`.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_formats::safetensors::{SafeTensors, SafeTensorsWriter, TensorSpec};
use hearth_formats::DType;
use hearth_kernels::{dequantize_row, FloatFormat, RowFormat};

use crate::linalg::{add_mm, add_mm_nt, mm, mm_nt, mm_tn};
use crate::{Result, TrainError};

/// One adapted layer's parameters (or their gradients, or optimiser moments: the same shapes).
#[derive(Clone, Debug, PartialEq)]
pub struct LoraLayer {
    /// `[in, rank]`, row-major.
    pub a: Vec<f32>,
    /// `[rank, out]`, row-major.
    pub b: Vec<f32>,
    pub rank: usize,
}

impl LoraLayer {
    fn inputs(&self) -> usize {
        self.a.len() / self.rank
    }

    fn outputs(&self) -> usize {
        self.b.len() / self.rank
    }

    fn zeros_like(&self) -> LoraLayer {
        LoraLayer { a: vec![0.0; self.a.len()], b: vec![0.0; self.b.len()], rank: self.rank }
    }
}

/// Every adapted layer, by name (`model.layers.0.self_attn.q_proj`), and the update's scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    pub layers: BTreeMap<String, LoraLayer>,
    pub scale: f32,
}

/// What an adapted layer's forward pass keeps for its backward pass: `x·A`.
pub(crate) struct LoraSaved {
    xa: Vec<f32>,
}

impl Lora {
    /// An adapter file written by mlx-lm (or Hearth): `<layer>.lora_a` and `.lora_b`, any float
    /// type, read as float32.
    pub fn load(path: &Path, scale: f32) -> Result<Lora> {
        let file = SafeTensors::open(path)?;
        let mut layers = BTreeMap::new();
        for (name, t) in &file.tensors {
            let Some(layer) = name.strip_suffix(".lora_a") else { continue };
            let b = file.tensors.get(&format!("{layer}.lora_b")).ok_or_else(|| TrainError::Invalid(format!("{name} has no lora_b")))?;
            let (&[_, rank], &[rank_b, _]) = (&t.shape[..], &b.shape[..]) else {
                return Err(TrainError::Invalid(format!("{layer}: lora_a/lora_b are not matrices")));
            };
            if rank == 0 || rank != rank_b {
                return Err(TrainError::Invalid(format!("{layer}: lora_a {:?} and lora_b {:?} do not chain", t.shape, b.shape)));
            }
            let floats = |v: &hearth_formats::safetensors::TensorView| -> Result<Vec<f32>> {
                let format = match v.dtype {
                    DType::F32 => FloatFormat::F32,
                    DType::F16 => FloatFormat::F16,
                    DType::BF16 => FloatFormat::BF16,
                    other => return Err(TrainError::Invalid(format!("{layer}: {other:?} adapter weights"))),
                };
                let mut out = vec![0f32; v.shape.iter().product()];
                dequantize_row(RowFormat::Float(format), &v.data, &[], &[], &mut out);
                Ok(out)
            };
            layers.insert(layer.to_string(), LoraLayer { a: floats(t)?, b: floats(b)?, rank });
        }
        if layers.is_empty() {
            return Err(TrainError::Invalid(format!("{} holds no lora_a/lora_b pairs", path.display())));
        }
        Ok(Lora { layers, scale })
    }

    /// Writes the adapters as mlx-lm does (float32, no metadata).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut specs = Vec::new();
        for (name, l) in &self.layers {
            specs.push(TensorSpec { name: format!("{name}.lora_a"), dtype: DType::F32, shape: vec![l.inputs(), l.rank] });
            specs.push(TensorSpec { name: format!("{name}.lora_b"), dtype: DType::F32, shape: vec![l.rank, l.outputs()] });
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut w = SafeTensorsWriter::create(path, &BTreeMap::new(), &specs)?;
        for s in &specs {
            let (layer, part) = s.name.rsplit_once('.').expect("named <layer>.lora_x");
            let l = &self.layers[layer];
            let values = if part == "lora_a" { &l.a } else { &l.b };
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write(&s.name, &bytes)?;
        }
        Ok(w.finish()?)
    }

    /// The same layers, every value zero (gradient accumulators, optimiser moments).
    pub fn zeros_like(&self) -> Lora {
        Lora { layers: self.layers.iter().map(|(n, l)| (n.clone(), l.zeros_like())).collect(), scale: self.scale }
    }

    /// Adds layer `name`'s update to `y` (`[n, out]`) for inputs `x` (`[n, in]`); `None` where
    /// the layer is not adapted.
    pub(crate) fn forward(&self, name: &str, x: &[f32], y: &mut [f32]) -> Option<LoraSaved> {
        let l = self.layers.get(name)?;
        let xa = mm(x, &l.a, l.inputs(), l.rank);
        let scaled: Vec<f32> = xa.iter().map(|v| self.scale * v).collect();
        add_mm(y, &scaled, &l.b, l.rank, l.outputs());
        Some(LoraSaved { xa })
    }

    /// The backward pass of [`Self::forward`]: adds `∂/∂A` and `∂/∂B` into `grads` and the
    /// update's part of `∂/∂x` into `dx`.
    pub(crate) fn backward(&self, name: &str, saved: &LoraSaved, x: &[f32], dy: &[f32], dx: &mut [f32], grads: &mut Lora) {
        let l = &self.layers[name];
        let (r, inp, out) = (l.rank, l.inputs(), l.outputs());
        let g = grads.layers.get_mut(name).expect("grads have the adapter's layers");
        // y += s·(x A) B:  dB = s (xA)ᵀ dy;  d(xA) = s dy Bᵀ;  dA = xᵀ d(xA);  dx += d(xA) Aᵀ.
        let db = mm_tn(&saved.xa, dy, r, out);
        g.b.iter_mut().zip(db).for_each(|(acc, v)| *acc += self.scale * v);
        let mut dxa = mm_nt(dy, &l.b, out);
        dxa.iter_mut().for_each(|v| *v *= self.scale);
        let da = mm_tn(x, &dxa, inp, r);
        g.a.iter_mut().zip(da).for_each(|(acc, v)| *acc += v);
        add_mm_nt(dx, &dxa, &l.a, r);
    }
}

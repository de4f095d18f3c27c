//! Trainable LoRA and DoRA adapters in mlx-lm's layout: per adapted linear layer `lora_a`
//! `[in, r]` and `lora_b` `[r, out]`, the update `scale · (x·A)·B` added to the layer's output;
//! DoRA (mlx-lm's `DoRALinear`) also learns a magnitude `m` per output and rescales the output
//! by `m / ‖W + scale·(A·B)ᵀ‖` (each output row's norm, held constant in the backward pass, as
//! mlx-lm's `stop_gradient` does). Saved as `adapters.safetensors` under `<layer>.lora_a`,
//! `<layer>.lora_b` and `<layer>.m`.

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
    /// DoRA's magnitude per output; empty for LoRA.
    pub m: Vec<f32>,
}

impl LoraLayer {
    fn inputs(&self) -> usize {
        self.a.len() / self.rank
    }

    fn outputs(&self) -> usize {
        self.b.len() / self.rank
    }

    fn zeros_like(&self) -> LoraLayer {
        LoraLayer { a: vec![0.0; self.a.len()], b: vec![0.0; self.b.len()], rank: self.rank, m: vec![0.0; self.m.len()] }
    }

    /// Every trained value, in one order (for the optimiser and gradient sums).
    pub fn values(&self) -> impl Iterator<Item = &f32> {
        self.a.iter().chain(&self.b).chain(&self.m)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut f32> {
        self.a.iter_mut().chain(self.b.iter_mut()).chain(self.m.iter_mut())
    }
}

/// Every adapted layer, by name (`model.layers.0.self_attn.q_proj`), and the update's scale.
#[derive(Clone, Debug, PartialEq)]
pub struct Lora {
    pub layers: BTreeMap<String, LoraLayer>,
    pub scale: f32,
}

/// What an adapted layer's forward pass keeps for its backward pass: `x·A`, and for DoRA the
/// output before its rescaling and each output's `1 / ‖W + s·(AB)ᵀ‖`.
pub(crate) struct LoraSaved {
    xa: Vec<f32>,
    dora: Option<(Vec<f32>, Vec<f32>)>,
}

/// What DoRA needs of the frozen weight `W` `[out, in]`: each output row's squared norm, and
/// `W·A` `[out, r]` (in the adapter's output order).
pub(crate) type WeightTerms = (Vec<f32>, Vec<f32>);

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
            let m = match file.tensors.get(&format!("{layer}.m")) {
                Some(m) => floats(m)?,
                None => Vec::new(),
            };
            layers.insert(layer.to_string(), LoraLayer { a: floats(t)?, b: floats(b)?, rank, m });
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
            if !l.m.is_empty() {
                specs.push(TensorSpec { name: format!("{name}.m"), dtype: DType::F32, shape: vec![l.m.len()] });
            }
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let mut w = SafeTensorsWriter::create(path, &BTreeMap::new(), &specs)?;
        for s in &specs {
            let (layer, part) = s.name.rsplit_once('.').expect("named <layer>.<part>");
            let l = &self.layers[layer];
            let values = match part {
                "lora_a" => &l.a,
                "lora_b" => &l.b,
                _ => &l.m,
            };
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            w.write(&s.name, &bytes)?;
        }
        Ok(w.finish()?)
    }

    /// The same layers, every value zero (gradient accumulators, optimiser moments).
    pub fn zeros_like(&self) -> Lora {
        Lora { layers: self.layers.iter().map(|(n, l)| (n.clone(), l.zeros_like())).collect(), scale: self.scale }
    }

    /// Whether these are DoRA adapters (every layer has magnitudes).
    pub fn is_dora(&self) -> bool {
        self.layers.values().next().is_some_and(|l| !l.m.is_empty())
    }

    /// Adds layer `name`'s update to `y` (`[n, out]`, the frozen product `x·Wᵀ` without its
    /// bias) for inputs `x` (`[n, in]`), and for DoRA rescales it (`weight` gives what that needs
    /// of `W`); `None` where the layer is not adapted.
    pub(crate) fn forward(
        &self,
        name: &str,
        x: &[f32],
        y: &mut [f32],
        weight: &dyn Fn(&[f32]) -> Result<WeightTerms>,
    ) -> Result<Option<LoraSaved>> {
        let Some(l) = self.layers.get(name) else { return Ok(None) };
        let (r, out) = (l.rank, l.outputs());
        let xa = mm(x, &l.a, l.inputs(), r);
        let scaled: Vec<f32> = xa.iter().map(|v| self.scale * v).collect();
        add_mm(y, &scaled, &l.b, r, out);
        if l.m.is_empty() {
            return Ok(Some(LoraSaved { xa, dora: None }));
        }
        // ‖w_o + s·(A·B)[:, o]‖² = ‖w_o‖² + 2s·(W·A)[o]·B[:, o] + s²·B[:, o]ᵀ(AᵀA)B[:, o].
        let (norms, wa) = weight(&l.a)?;
        let gram = mm_tn(&l.a, &l.a, r, r);
        let s = self.scale;
        let inv_norms: Vec<f32> = (0..out)
            .map(|o| {
                let bo: Vec<f32> = (0..r).map(|k| l.b[k * out + o]).collect();
                let cross: f32 = (0..r).map(|k| wa[o * r + k] * bo[k]).sum();
                let quad: f32 = (0..r).map(|k| bo[k] * (0..r).map(|j| gram[k * r + j] * bo[j]).sum::<f32>()).sum();
                1.0 / (norms[o] + 2.0 * s * cross + s * s * quad).max(0.0).sqrt()
            })
            .collect();
        let unscaled = y.to_vec();
        y.chunks_exact_mut(out).for_each(|row| row.iter_mut().zip(&l.m).zip(&inv_norms).for_each(|((v, m), d)| *v *= m * d));
        Ok(Some(LoraSaved { xa, dora: Some((unscaled, inv_norms)) }))
    }

    /// For DoRA, the first step back through layer `name`: `∂/∂m` into `grads`, and the
    /// gradient of the output before its rescaling (which the frozen product and the LoRA
    /// update then take instead of `dy`); `None` for LoRA.
    pub(crate) fn dora_backward(&self, name: &str, saved: &LoraSaved, dy: &[f32], grads: &mut Lora) -> Option<Vec<f32>> {
        let (unscaled, inv_norms) = saved.dora.as_ref()?;
        let l = &self.layers[name];
        let g = grads.layers.get_mut(name).expect("grads have the adapter's layers");
        let out = inv_norms.len();
        // out = (m / denom) ⊙ u, denom constant: ∂m_o = Σ_n dy·u / denom_o, ∂u = dy · m / denom.
        for (row_dy, row_u) in dy.chunks_exact(out).zip(unscaled.chunks_exact(out)) {
            for o in 0..out {
                g.m[o] += row_dy[o] * row_u[o] * inv_norms[o];
            }
        }
        Some(dy.chunks_exact(out).flat_map(|row| row.iter().zip(&l.m).zip(inv_norms).map(|((d, m), i)| d * m * i)).collect())
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

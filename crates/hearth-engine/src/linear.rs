//! Linear layers over stored-format weights, as a candle custom op so activations stay candle
//! tensors while the product runs on our kernels.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use hearth_kernels::panels::QuantPanels;
use hearth_kernels::Precision;

use crate::weights::{StoredTensor, WeightStore};
use crate::lora::{LoraAdapter, LoraDelta};
use crate::{EngineError, Result};

pub struct Linear {
    weight: StoredTensor,
    /// Q4_0/Q4_1/Q8_0 weights repacked for the fast path on CPUs with AVX-512 VNNI; they replace the
    /// file's bytes, whose mapped pages are released.
    panels: Option<QuantPanels>,
    bias: Option<Tensor>,
    bias_host: Option<Vec<f32>>,
    lora: Option<LoraDelta>,
}

impl Linear {
    /// Loads layer `prefix`, with the adapter's delta for it if the adapter has one.
    pub fn load(
        store: &WeightStore,
        prefix: &str,
        bias: bool,
        device: &candle_core::Device,
        precision: Precision,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Self> {
        let weight = store.get(&format!("{prefix}.weight"))?.clone();
        let m = weight.matrix()?;
        let bias = if bias { Some(store.get(&format!("{prefix}.bias"))?.to_f32_tensor(device)?) } else { None };
        let bias_host = bias.as_ref().map(|b| b.flatten_all()?.to_vec1::<f32>()).transpose()?;
        let lora = adapter.and_then(|a| a.layers.get(prefix)).cloned();
        if lora.as_ref().is_some_and(|l| !l.fits(m.rows(), m.cols())) {
            return Err(EngineError::Weights(format!("the adapter's {prefix} does not fit the layer ({}x{})", m.rows(), m.cols())));
        }
        let panels = panels_for(&weight, device, precision)?;
        Ok(Linear { weight, panels, bias, bias_host, lora })
    }

    pub fn from_stored(weight: StoredTensor, device: &candle_core::Device, precision: Precision) -> Result<Self> {
        let panels = panels_for(&weight, device, precision)?;
        Ok(Linear { weight, panels, bias: None, bias_host: None, lora: None })
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// `out[t, :] = x[t, :] · Wᵀ (+ bias)` on host buffers.
    pub fn matmul_host(&self, x: &[f32], out: &mut [f32], precision: Precision) {
        match &self.panels {
            Some(p) => p.matmul(x, out),
            None => self.weight.matrix().expect("validated when loaded").matmul(x, out, precision),
        }
        self.finish_host(x, out);
    }

    /// The bias and the adapter's delta, after the product.
    fn finish_host(&self, x: &[f32], out: &mut [f32]) {
        if let Some(b) = &self.bias_host {
            out.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
        }
        if let Some(l) = &self.lora {
            l.apply(x, out);
        }
    }

    /// Several layers applied to the same input at once (see `MatrixRef::matmul_group`).
    pub fn matmul_host_group(x: &[f32], parts: &mut [(&Linear, &mut [f32])], precision: Precision) {
        if parts.iter().all(|(l, _)| l.panels.is_some()) {
            let mut group: Vec<_> = parts.iter_mut().map(|(l, out)| (l.panels.as_ref().expect("checked"), &mut **out)).collect();
            QuantPanels::matmul_group(x, &mut group);
        } else if parts.iter().any(|(l, _)| l.panels.is_some()) {
            // Mixed formats: each on its own.
            for (l, out) in parts.iter_mut() {
                l.matmul_host(x, out, precision);
            }
            return;
        } else {
            let mut group: Vec<_> = parts
                .iter_mut()
                .map(|(l, out)| (l.weight.matrix().expect("validated when loaded"), &mut **out))
                .collect();
            hearth_kernels::MatrixRef::matmul_group(x, &mut group, precision);
        }
        for (l, out) in parts.iter_mut() {
            l.finish_host(x, out);
        }
    }

    /// `x[..., in] → [..., out]`.
    pub fn forward(&self, x: &Tensor, precision: Precision) -> Result<Tensor> {
        let y = x.apply_op1_no_bwd(&MatMulOp(self, precision))?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

struct MatMulOp<'a>(&'a Linear, Precision);

impl CustomOp1 for MatMulOp<'_> {
    fn name(&self) -> &'static str {
        "hearth-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let m = self.0.weight.matrix().map_err(candle_core::Error::wrap)?;
        let dims = layout.dims();
        let (&cols, outer) = dims.split_last().ok_or_else(|| candle_core::Error::Msg("matmul of a scalar".into()))?;
        if cols != m.cols() {
            candle_core::bail!("matmul: input has {cols} features, weight expects {}", m.cols());
        }
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("matmul input must be contiguous".into()))?;
        let x = &storage.as_slice::<f32>()?[start..end];
        let mut out = vec![0f32; x.len() / cols * m.rows()];
        match &self.0.panels {
            Some(p) => p.matmul(x, &mut out),
            None => m.matmul(x, &mut out, self.1),
        }
        let mut shape = outer.to_vec();
        shape.push(m.rows());
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// Quantised panels for `weight` where they serve: the fast path on the CPU. The file's pages
/// are released as they are repacked (the panels hold the same bytes; nothing reads the
/// originals on this path except an embedding table sharing them, whose rows fault back in
/// on use).
fn panels_for(weight: &StoredTensor, device: &candle_core::Device, precision: Precision) -> Result<Option<QuantPanels>> {
    let m = weight.matrix()?;
    if precision != Precision::Fast || !device.is_cpu() {
        return Ok(None);
    }
    Ok(QuantPanels::new(&m, |copied| weight.data.release_pages(copied)))
}

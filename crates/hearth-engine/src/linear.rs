//! Linear layers over stored-format weights, as a candle custom op so activations stay candle
//! tensors while the product runs on our kernels. On a GPU the product is candle's.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Shape, Tensor};
use hearth_formats::gguf::GgmlType;
use hearth_kernels::{FloatFormat, RowFormat};
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
    /// The weight in the GPU's memory when the model runs on one (our kernels are CPU code).
    on_device: Option<QMatMul>,
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
        Ok(Linear { panels: panels_for(&weight, device, precision)?, on_device: on_device(&weight, device)?, weight, bias, bias_host, lora })
    }

    pub fn from_stored(weight: StoredTensor, device: &candle_core::Device, precision: Precision) -> Result<Self> {
        let panels = panels_for(&weight, device, precision)?;
        Ok(Linear { on_device: on_device(&weight, device)?, weight, panels, bias: None, bias_host: None, lora: None })
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
        let y = match &self.on_device {
            Some(w) => w.forward(x)?,
            None => x.apply_op1_no_bwd(&MatMulOp(self, precision))?,
        };
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

/// The weight uploaded for candle's kernels when `device` is a GPU: llama.cpp's block formats
/// stay quantised (candle multiplies them as they are), other formats become f16 matrices.
fn on_device(weight: &StoredTensor, device: &Device) -> Result<Option<QMatMul>> {
    if device.is_cpu() {
        return Ok(None);
    }
    device_matmul(weight, device).map(Some)
}

fn device_matmul(weight: &StoredTensor, device: &Device) -> Result<QMatMul> {
    let m = weight.matrix()?;
    let shape = (m.rows(), m.cols());
    if let Some(dtype) = candle_block_format(weight.format) {
        let storage = QStorage::from_data(Cow::Borrowed(&weight.data[..]), device, dtype)?;
        return Ok(QMatMul::from_qtensor(QTensor::new(storage, shape)?)?);
    }
    let dense = StoredTensor { shape: vec![shape.0, shape.1], ..weight.clone() }.to_f32_tensor(&Device::Cpu)?;
    Ok(match weight.format {
        RowFormat::Float(FloatFormat::F32) => QMatMul::Tensor(dense.to_device(device)?),
        _ => QMatMul::TensorF16(dense.to_dtype(DType::F16)?.to_device(device)?),
    })
}

fn candle_block_format(format: RowFormat) -> Option<GgmlDType> {
    let RowFormat::Ggml(t) = format else { return None };
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q8_1 => GgmlDType::Q8_1,
        GgmlType::Q2K => GgmlDType::Q2K,
        GgmlType::Q3K => GgmlDType::Q3K,
        GgmlType::Q4K => GgmlDType::Q4K,
        GgmlType::Q5K => GgmlDType::Q5K,
        GgmlType::Q6K => GgmlDType::Q6K,
        GgmlType::Q8K => GgmlDType::Q8K,
    })
}

#[cfg(test)]
mod tests {
    use half::f16;
    use hearth_formats::SharedBytes;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn stored(format: RowFormat, rows: usize, cols: usize, data: Vec<u8>, params: Option<(Vec<u8>, Vec<u8>)>) -> StoredTensor {
        let (scales, biases) = params.map_or((None, None), |(s, b)| (Some(SharedBytes::from_vec(s)), Some(SharedBytes::from_vec(b))));
        StoredTensor { format, shape: vec![rows, cols], data: SharedBytes::from_vec(data), scales, biases }
    }

    /// `count` blocks of `size` random bytes whose leading `scales` f16 fields hold sane scales.
    fn blocks(rng: &mut impl Rng, count: usize, size: usize, scales: usize) -> Vec<u8> {
        let mut out = vec![0u8; count * size];
        rng.fill(&mut out[..]);
        for block in out.chunks_exact_mut(size) {
            for field in block[..2 * scales].chunks_exact_mut(2) {
                field.copy_from_slice(&f16::from_f32(rng.random_range(-0.02..0.02)).to_le_bytes());
            }
        }
        out
    }

    fn f16_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
        (0..n).flat_map(|_| f16::from_f32(rng.random_range(-0.5..0.5)).to_le_bytes()).collect()
    }

    /// What a GPU runs (candle's products over the uploaded weight) agrees with our kernels,
    /// checked on the CPU device for each weight format the uploads treat differently.
    #[test]
    fn device_products_match_the_host_kernels() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (rows, cols, tokens) = (40, 512, 3);
        let ggml = |t| RowFormat::Ggml(t);
        let mut q4k = Vec::new();
        hearth_kernels::quant::quantize_q4k(&(0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f32>>(), &mut q4k);
        let groups = rows * cols / 64;
        let weights = [
            stored(ggml(GgmlType::Q4_0), rows, cols, blocks(&mut rng, rows * cols / 32, 18, 1), None),
            stored(ggml(GgmlType::Q4_1), rows, cols, blocks(&mut rng, rows * cols / 32, 20, 2), None),
            stored(ggml(GgmlType::Q8_0), rows, cols, blocks(&mut rng, rows * cols / 32, 34, 1), None),
            stored(ggml(GgmlType::Q4K), rows, cols, q4k, None),
            stored(RowFormat::Float(FloatFormat::F16), rows, cols, f16_bytes(&mut rng, rows * cols), None),
            stored(
                RowFormat::MlxAffine { bits: 4, group_size: 64, params: FloatFormat::F16 },
                rows,
                cols,
                blocks(&mut rng, rows * cols / 8, 4, 0),
                Some((f16_bytes(&mut rng, groups), f16_bytes(&mut rng, groups))),
            ),
        ];
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        for weight in weights {
            let format = weight.format;
            let linear = Linear::from_stored(weight, &Device::Cpu, Precision::Exact).unwrap();
            let mut want = vec![0f32; tokens * rows];
            linear.matmul_host(&x, &mut want, Precision::Exact);
            let on_device = device_matmul(&linear.weight, &Device::Cpu).unwrap();
            let got = on_device.forward(&Tensor::from_slice(&x, (tokens, cols), &Device::Cpu).unwrap()).unwrap();
            let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(&got).fold(0f32, |m, (w, g)| m.max((w - g).abs()));
            // candle quantises activations to 8 bits for block formats, f16 for the rest.
            assert!(worst <= 0.02 * scale, "{format:?}: max difference {worst} against values up to {scale}");
        }
    }
}

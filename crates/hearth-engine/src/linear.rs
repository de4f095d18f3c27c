//! Linear layers over stored-format weights: our kernels on host buffers, or candle's on the
//! model's device (GPUs; on the CPU a cross-check of that path).

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use hearth_formats::gguf::GgmlType;
use hearth_kernels::panels::QuantPanels;
use hearth_kernels::Precision;
use hearth_kernels::RowFormat;

use crate::lora::{LoraAdapter, LoraDelta};
use crate::model::Backend;
use crate::weights::{StoredTensor, WeightStore};
use crate::{EngineError, Result};

pub struct Linear {
    weight: StoredTensor,
    /// Q4_0/Q4_1/Q8_0/Q4_K weights repacked for the fast path on CPUs with AVX-512 VNNI; they replace the
    /// file's bytes, whose mapped pages are released.
    panels: Option<QuantPanels>,
    /// The weight for candle's kernels, in the device's memory (the candle backend).
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
        device: &Device,
        backend: Backend,
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
        let (panels, on_device) = placed(&weight, device, backend, precision)?;
        Ok(Linear { weight, panels, on_device, bias, bias_host, lora })
    }

    pub fn from_stored(weight: StoredTensor, device: &Device, backend: Backend, precision: Precision) -> Result<Self> {
        let (panels, on_device) = placed(&weight, device, backend, precision)?;
        Ok(Linear { weight, panels, on_device, bias: None, bias_host: None, lora: None })
    }

    pub fn out_features(&self) -> usize {
        self.weight.shape[0]
    }

    /// The repacked weight, where the fast path has one.
    pub fn panels(&self) -> Option<&QuantPanels> {
        self.panels.as_ref()
    }

    /// Releases every file page of a repacked weight. Reads map a whole large page-cache folio,
    /// so reading later rows or neighbouring tensors brought back pages released while
    /// repacking (35 MB of a 606 MB Q4_K model).
    pub fn release_repacked_source(&self) {
        if self.panels.is_some() {
            self.weight.data.release_pages(0..self.weight.data.len());
        }
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
            let mut group: Vec<_> =
                parts.iter_mut().map(|(l, out)| (l.weight.matrix().expect("validated when loaded"), &mut **out)).collect();
            hearth_kernels::MatrixRef::matmul_group(x, &mut group, precision);
        }
        for (l, out) in parts.iter_mut() {
            l.finish_host(x, out);
        }
    }

    /// `x[..., in] → [..., out]` on candle's kernels (the candle backend).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.on_device.as_ref().expect("layers of the candle backend are loaded with device weights");
        let y = w.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// What each backend multiplies with: panels for our fast path, or the weight in the device's
/// memory for candle's kernels.
fn placed(
    weight: &StoredTensor,
    device: &Device,
    backend: Backend,
    precision: Precision,
) -> Result<(Option<QuantPanels>, Option<QMatMul>)> {
    Ok(match backend {
        Backend::Host => (panels_for(weight, precision)?, None),
        // f16 halves a GPU's memory and doubles its rate; a CPU has no use for it.
        Backend::Candle => (None, Some(device_matmul(weight, device, if device.is_cpu() { DType::F32 } else { DType::F16 })?)),
    })
}

/// Quantised panels for `weight` where they serve: the fast path on the CPU. The file's pages
/// are released as they are repacked (the panels hold the same bytes; nothing reads the
/// originals on this path: an embedding table sharing them reads its rows from the panels),
/// and all once more when the model is loaded, see [`Linear::release_repacked_source`].
fn panels_for(weight: &StoredTensor, precision: Precision) -> Result<Option<QuantPanels>> {
    let m = weight.matrix()?;
    if precision != Precision::Fast {
        return Ok(None);
    }
    Ok(QuantPanels::new(&m, |copied| weight.data.release_pages(copied)))
}

/// The weight for candle's products on `device`: llama.cpp's block formats stay quantised
/// (candle multiplies them as they are), other formats become `dense` matrices.
fn device_matmul(weight: &StoredTensor, device: &Device, dense: DType) -> Result<QMatMul> {
    let m = weight.matrix()?;
    let shape = (m.rows(), m.cols());
    if let Some(dtype) = candle_block_format(weight.format) {
        let storage = QStorage::from_data(Cow::Borrowed(&weight.data[..]), device, dtype)?;
        return Ok(QMatMul::from_qtensor(QTensor::new(storage, shape)?)?);
    }
    let values = StoredTensor { shape: vec![shape.0, shape.1], ..weight.clone() }.to_f32_tensor(&Device::Cpu)?;
    Ok(match dense {
        DType::F16 => QMatMul::TensorF16(values.to_dtype(DType::F16)?.to_device(device)?),
        _ => QMatMul::Tensor(values.to_dtype(dense)?.to_device(device)?),
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
    use hearth_kernels::FloatFormat;
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

    /// What a GPU runs (candle's products over the uploaded weight, dense ones in f16) agrees
    /// with our kernels, checked on the CPU device for each kind of upload.
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
            let linear = Linear::from_stored(weight, &Device::Cpu, Backend::Host, Precision::Exact).unwrap();
            let mut want = vec![0f32; tokens * rows];
            linear.matmul_host(&x, &mut want, Precision::Exact);
            let on_device = device_matmul(&linear.weight, &Device::Cpu, DType::F16).unwrap();
            let got = on_device.forward(&Tensor::from_slice(&x, (tokens, cols), &Device::Cpu).unwrap()).unwrap();
            let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(&got).fold(0f32, |m, (w, g)| m.max((w - g).abs()));
            // candle quantises activations to 8 bits for block formats, f16 for the rest.
            assert!(worst <= 0.02 * scale, "{format:?}: max difference {worst} against values up to {scale}");
        }
    }
}

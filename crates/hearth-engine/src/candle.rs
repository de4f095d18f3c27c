//! The candle decoder: the forward pass on candle's tensors and kernels on the model's device
//! (GPUs; on the CPU a cross-check of the host decoder). llama.cpp's block formats stay
//! quantised on the device (candle multiplies them as they are), other formats become dense.

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor};
use hearth_formats::gguf::GgmlType;
use hearth_kernels::attend::Mask;
use hearth_kernels::{Precision, RowFormat};

use crate::config::{Activation, ModelConfig};
use crate::kv_cache::KvCache;
use crate::lora::Adapter;
use crate::model::{Decoder, DecoderWeights, Head, Layer, LinearShape, Mlp, Projection, SeqInput, WeightForm};
use crate::weights::{StoredTensor, WeightStore};
use crate::{EngineError, Result};

/// Weights in the device's memory, for candle's kernels.
pub(crate) struct CandleForm {
    device: Device,
}

impl WeightForm for CandleForm {
    type Linear = CandleLinear;
    type Norm = CandleNorm;

    fn linear(&self, weight: StoredTensor, bias: Option<Vec<f32>>, _slot: usize) -> Result<CandleLinear> {
        // f16 halves a GPU's memory and doubles its rate; a CPU has no use for it.
        let dense = if self.device.is_cpu() { DType::F32 } else { DType::F16 };
        let bias = bias.map(|b| vector(b, &self.device)).transpose()?;
        Ok(CandleLinear { weight: device_matmul(&weight, &self.device, dense)?, bias })
    }

    fn norm(&self, weight: Vec<f32>, eps: f32) -> Result<CandleNorm> {
        Ok(CandleNorm { weight: vector(weight, &self.device)?, eps })
    }
}

fn vector(values: Vec<f32>, device: &Device) -> Result<Tensor> {
    let n = values.len();
    Ok(Tensor::from_vec(values, n, device)?)
}

pub(crate) struct CandleLinear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl CandleLinear {
    /// `x[..., in] → [..., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

pub(crate) struct CandleNorm {
    weight: Tensor,
    eps: f32,
}

impl CandleNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
}

/// Applies projection `p` to `x` (`[tokens, in]`): one output per part, of `widths` columns.
fn project(p: &Projection<CandleLinear>, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
    match p {
        Projection::Separate(parts) => parts.iter().map(|l| l.forward(x)).collect(),
        Projection::Fused(w) => {
            let all = w.forward(x)?;
            let mut at = 0;
            widths
                .iter()
                .map(|&n| {
                    at += n;
                    Ok(all.narrow(1, at - n, n)?)
                })
                .collect()
        }
    }
}

pub(crate) struct CandleDecoder {
    weights: DecoderWeights<CandleForm>,
    device: Device,
    /// As asked for when loading, for display: candle's products round as they do (8-bit
    /// activations for block formats).
    precision: Precision,
}

impl CandleDecoder {
    pub(crate) fn load(
        cfg: ModelConfig,
        store: &WeightStore,
        rope_freqs: Option<Vec<f32>>,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let form = CandleForm { device: device.clone() };
        let weights = DecoderWeights::load(&form, cfg, store, rope_freqs)?;
        Ok(CandleDecoder { weights, device: form.device, precision })
    }
}

impl Decoder for CandleDecoder {
    fn config(&self) -> &ModelConfig {
        &self.weights.cfg
    }

    fn weight_bytes(&self) -> usize {
        self.weights.weight_bytes
    }

    fn precision(&self) -> Precision {
        self.precision
    }

    fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::on_device(&self.weights.cfg, capacity, &self.device)
    }

    fn linears(&self) -> &[LinearShape] {
        &self.weights.linears
    }

    fn runs_adapters(&self) -> bool {
        false
    }

    fn run(
        &self,
        seqs: &mut [SeqInput<'_>],
        adapters: &[Option<&Adapter>],
        head: Head,
        mut trace: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>> {
        if adapters.iter().any(Option::is_some) {
            return Err(EngineError::Unsupported("LoRA adapters on the candle backend".into()));
        }
        let w = &self.weights;
        let hid = w.cfg.hidden_size;
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        // Per RoPE, each sequence's tables.
        let tables = w
            .ropes
            .iter()
            .map(|rope| seqs.iter().map(|s| rope.tables(s.cache.len(), s.tokens.len(), &self.device)).collect::<Result<Vec<_>>>())
            .collect::<Result<Vec<_>>>()?;
        let mut embedded = vec![0f32; tokens.len() * hid];
        w.embed_into(&tokens, &mut embedded, None)?;
        let mut x = Tensor::from_vec(embedded, (tokens.len(), hid), &self.device)?;
        let mut record = |t: &Tensor| -> Result<()> {
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(t.flatten_all()?.to_vec1::<f32>()?);
            }
            Ok(())
        };
        record(&x)?;
        for (li, layer) in w.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x)?;
            let attn = self.attention(li, layer, &h, seqs, &tables[layer.rope])?;
            x = match &layer.sandwich {
                Some(sandwich) => {
                    let x = (x + layer.post_attn_norm.forward(&attn)?)?;
                    let m = self.mlp(&layer.mlp, &sandwich.pre_ff.forward(&x)?)?;
                    (x + sandwich.post_ff.forward(&m)?)?
                }
                None => {
                    let x = (x + attn)?;
                    let m = self.mlp(&layer.mlp, &layer.post_attn_norm.forward(&x)?)?;
                    (x + m)?
                }
            };
            record(&x)?;
        }
        record(&w.norm.forward(&x)?)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs.iter_mut() {
            let n = s.tokens.len();
            let rows = if head.every_position() { x.narrow(0, start, n)? } else { x.narrow(0, start + n - 1, 1)? };
            let normed = w.norm.forward(&rows)?;
            if head.hidden() {
                out.push(normed.flatten_all()?.to_vec1::<f32>()?);
            } else {
                let mut logits = w.lm_head.forward(&normed)?;
                if let Some(cap) = w.cfg.final_logit_softcap {
                    logits = ((logits / cap as f64)?.tanh()? * cap as f64)?;
                }
                out.push(logits.flatten_all()?.to_vec1::<f32>()?);
            }
            let len = s.cache.len() + n;
            s.cache.set_len(len);
            start += n;
        }
        Ok(out)
    }
}

impl CandleDecoder {
    fn attention(
        &self,
        li: usize,
        layer: &Layer<CandleForm>,
        h: &Tensor,
        seqs: &mut [SeqInput<'_>],
        tables: &[(Tensor, Tensor)],
    ) -> Result<Tensor> {
        let cfg = &self.weights.cfg;
        let qkv = project(&layer.attn.qkv, h, &[cfg.q_size(), cfg.kv_size(), cfg.kv_size()])?;
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let rep = nh / nkv;
        let mut outs = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for (s, (cos, sin)) in seqs.iter_mut().zip(tables) {
            let n = s.tokens.len();
            let pos = s.cache.len();
            let heads = |t: &Tensor, count: usize| -> Result<Tensor> {
                Ok(t.narrow(0, start, n)?.reshape((n, count, hd))?.transpose(0, 1)?.contiguous()?)
            };
            let mut qs = heads(q, nh)?;
            let mut ks = heads(k, nkv)?;
            let vs = heads(v, nkv)?;
            if let (Some(qn), Some(kn)) = (&layer.attn.q_norm, &layer.attn.k_norm) {
                qs = qn.forward(&qs)?;
                ks = kn.forward(&ks)?;
            }
            let rope = if cfg.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
            let qs = rope(&qs.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
            let ks = rope(&ks.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
            let (keys, values) = s.cache.device_mut()?.append(li, pos, &ks, &vs)?;
            let total = pos + n;
            // Query heads sharing a KV head are stacked so one product serves the group.
            let qg = (qs.reshape((nkv, rep * n, hd))? * cfg.attn_scale)?;
            let mut scores = qg.matmul(&keys.t()?)?;
            if let Some(cap) = cfg.attn_logit_softcap {
                scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
            }
            let mask = self.mask(pos, n, total, Mask { window: layer.window, bidirectional: cfg.bidirectional })?;
            let scores = scores.reshape((nkv, rep, n, total))?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = probs.reshape((nkv, rep * n, total))?.matmul(&values.contiguous()?)?;
            outs.push(o.reshape((nh, n, hd))?.transpose(0, 1)?.reshape((n, nh * hd))?);
            start += n;
        }
        let o = Tensor::cat(&outs, 0)?;
        layer.attn.o.forward(&o)
    }

    /// Additive mask `[n, total]`: query `i` (at position `pos + i`) sees the keys `mask`
    /// makes visible in a sequence of `total`.
    fn mask(&self, pos: usize, n: usize, total: usize, mask: Mask) -> Result<Tensor> {
        let mut m = vec![0f32; n * total];
        for i in 0..n {
            let visible = mask.visible(pos + i, total);
            for (j, v) in m[i * total..(i + 1) * total].iter_mut().enumerate() {
                if !visible.contains(&j) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_vec(m, (n, total), &self.device)?)
    }

    fn mlp(&self, mlp: &Mlp<CandleForm>, x: &Tensor) -> Result<Tensor> {
        let inter = self.weights.cfg.intermediate_size;
        let gate_up = project(&mlp.gate_up, x, &[inter, inter])?;
        let (gate, up) = (&gate_up[0], &gate_up[1]);
        let act = match self.weights.cfg.activation {
            Activation::Silu => candle_nn::ops::silu(gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        mlp.down.forward(&(act * up)?.contiguous()?)
    }
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
    let values = Tensor::from_vec(weight.to_f32_vec()?, shape, &Device::Cpu)?;
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
        hearth_kernels::quant::quantize_ggml(
            GgmlType::Q4K,
            &(0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect::<Vec<f32>>(),
            &mut q4k,
        );
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
            let mut want = vec![0f32; tokens * rows];
            weight.matrix().unwrap().matmul(&x, &mut want, Precision::Exact);
            let on_device = device_matmul(&weight, &Device::Cpu, DType::F16).unwrap();
            let got = on_device.forward(&Tensor::from_slice(&x, (tokens, cols), &Device::Cpu).unwrap()).unwrap();
            let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = want.iter().zip(&got).fold(0f32, |m, (w, g)| m.max((w - g).abs()));
            // candle quantises activations to 8 bits for block formats, f16 for the rest.
            assert!(worst <= 0.02 * scale, "{format:?}: max difference {worst} against values up to {scale}");
        }
    }
}

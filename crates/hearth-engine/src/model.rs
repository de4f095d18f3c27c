//! The decoder: one implementation, switched by [`ModelConfig`], for every supported
//! architecture. A forward pass takes several sequences at once: their tokens are stacked for
//! the linear layers (one matrix product per weight for the whole batch) and attention runs per
//! sequence against that sequence's own KV cache, so sequences of any lengths and positions
//! batch together without padding.

use candle_core::{Device, Tensor, D};

use hearth_kernels::Precision;

use crate::config::{Activation, ModelConfig, RopeScaling};
use crate::kv_cache::KvCache;
use crate::linear::Linear;
use crate::lora::LoraAdapter;
use crate::rope::Rope;
use crate::weights::{StoredTensor, WeightStore};
use crate::{EngineError, Result};

pub(crate) struct RmsNorm {
    weight: Tensor,
    pub(crate) host: Vec<f32>,
    pub(crate) eps: f32,
}

impl RmsNorm {
    fn load(store: &WeightStore, name: &str, cfg: &ModelConfig, device: &Device) -> Result<Self> {
        let w = store.get(&format!("{name}.weight"))?.to_f32_tensor(device)?;
        let weight = if cfg.norm_weight_offset != 0.0 { (w + cfg.norm_weight_offset as f64)? } else { w };
        let host = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(RmsNorm { weight, host, eps: cfg.rms_norm_eps as f32 })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
}

pub(crate) enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

pub(crate) struct Attention {
    pub(crate) qkv: Qkv,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<RmsNorm>,
    pub(crate) k_norm: Option<RmsNorm>,
}

pub(crate) enum GateUp {
    Separate { gate: Linear, up: Linear },
    Fused(Linear),
}

pub(crate) struct Mlp {
    pub(crate) gate_up: GateUp,
    pub(crate) down: Linear,
}

pub(crate) struct Layer {
    pub(crate) input_norm: RmsNorm,
    pub(crate) post_attn_norm: RmsNorm,
    /// Gemma 2's norms around the MLP (the post-attention norm then applies to the attention
    /// output instead of feeding the MLP).
    pub(crate) pre_ff_norm: Option<RmsNorm>,
    pub(crate) post_ff_norm: Option<RmsNorm>,
    pub(crate) attn: Attention,
    pub(crate) mlp: Mlp,
    pub(crate) window: Option<usize>,
}

impl Layer {
    fn linears(&self) -> impl Iterator<Item = &Linear> {
        let qkv = match &self.attn.qkv {
            Qkv::Separate { q, k, v } => vec![q, k, v],
            Qkv::Fused(qkv) => vec![qkv],
        };
        let gate_up = match &self.mlp.gate_up {
            GateUp::Separate { gate, up } => vec![gate, up],
            GateUp::Fused(gate_up) => vec![gate_up],
        };
        qkv.into_iter().chain(gate_up).chain([&self.attn.o, &self.mlp.down])
    }
}

/// What a forward pass returns for each sequence.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Head {
    LastLogits,
    AllLogits,
    LastHidden,
}

/// One sequence's part of a forward pass.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
}

impl SeqInput<'_> {
    /// Tokens already in the cache before this pass: the position of `tokens[0]`.
    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

/// Where a model's forward pass runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Our CPU kernels over host buffers.
    #[default]
    Host,
    /// candle tensors on `DecoderModel`'s device (GPUs; on the CPU a cross-check).
    Candle,
}

pub struct DecoderModel {
    cfg: ModelConfig,
    embed: StoredTensor,
    /// Whether the LM head is the embedding table.
    tied: bool,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
    device: Device,
    weight_bytes: usize,
    precision: Precision,
    backend: Backend,
}

impl DecoderModel {
    pub fn load(
        mut cfg: ModelConfig,
        store: &WeightStore,
        rope_freqs: Option<Vec<f32>>,
        device: &Device,
        precision: Precision,
        backend: Backend,
        adapter: Option<&LoraAdapter>,
    ) -> Result<Self> {
        if adapter.is_some() && backend == Backend::Candle {
            return Err(EngineError::Unsupported("LoRA adapters on the candle backend".into()));
        }
        let interleaved = adapter.filter(|_| cfg.rope_interleaved).map(|a| a.with_interleaved_rope(cfg.head_dim));
        let adapter = interleaved.as_ref().or(adapter);
        if let Some(f) = rope_freqs {
            cfg.rope_scaling = RopeScaling::FreqFactors(f);
        }
        let embed = store.get("model.embed_tokens.weight")?.clone();
        if embed.shape != [cfg.vocab_size, cfg.hidden_size] {
            return Err(EngineError::Weights(format!(
                "embed_tokens has shape {:?}, config says [{}, {}]",
                embed.shape, cfg.vocab_size, cfg.hidden_size
            )));
        }
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let lin = |name: &str, bias: bool| Linear::load(store, &format!("{p}.{name}"), bias, device, backend, precision, adapter);
            let norm = |name: &str| RmsNorm::load(store, &format!("{p}.{name}"), &cfg, device);
            let qkv = if store.contains(&format!("{p}.self_attn.qkv_proj.weight")) {
                Qkv::Fused(lin("self_attn.qkv_proj", cfg.qkv_bias)?)
            } else {
                Qkv::Separate {
                    q: lin("self_attn.q_proj", cfg.qkv_bias)?,
                    k: lin("self_attn.k_proj", cfg.qkv_bias)?,
                    v: lin("self_attn.v_proj", cfg.qkv_bias)?,
                }
            };
            let gate_up = if store.contains(&format!("{p}.mlp.gate_up_proj.weight")) {
                GateUp::Fused(lin("mlp.gate_up_proj", cfg.mlp_bias)?)
            } else {
                GateUp::Separate { gate: lin("mlp.gate_proj", cfg.mlp_bias)?, up: lin("mlp.up_proj", cfg.mlp_bias)? }
            };
            layers.push(Layer {
                input_norm: norm("input_layernorm")?,
                post_attn_norm: norm("post_attention_layernorm")?,
                pre_ff_norm: cfg.sandwich_norms.then(|| norm("pre_feedforward_layernorm")).transpose()?,
                post_ff_norm: cfg.sandwich_norms.then(|| norm("post_feedforward_layernorm")).transpose()?,
                attn: Attention {
                    qkv,
                    o: lin("self_attn.o_proj", cfg.o_bias)?,
                    q_norm: cfg.qk_norm.then(|| norm("self_attn.q_norm")).transpose()?,
                    k_norm: cfg.qk_norm.then(|| norm("self_attn.k_norm")).transpose()?,
                },
                mlp: Mlp { gate_up, down: lin("mlp.down_proj", cfg.mlp_bias)? },
                window: cfg.layer_windows[i],
            });
        }
        let tied = cfg.tie_word_embeddings || !store.contains("lm_head.weight");
        let lm_head = if tied {
            Linear::from_stored(embed.clone(), device, backend, precision)?
        } else {
            Linear::load(store, "lm_head", false, device, backend, precision, adapter)?
        };
        if lm_head.out_features() != cfg.vocab_size {
            return Err(EngineError::Weights("lm_head rows differ from the vocabulary size".into()));
        }
        for linear in layers.iter().flat_map(Layer::linears).chain([&lm_head]) {
            linear.release_repacked_source();
        }
        Ok(DecoderModel {
            norm: RmsNorm::load(store, "model.norm", &cfg, device)?,
            rope: Rope::new(&cfg)?,
            weight_bytes: store.total_bytes(),
            cfg,
            embed,
            tied,
            layers,
            lm_head,
            device: device.clone(),
            precision,
            backend,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Bytes of weights as stored (memory-mapped where the format allows).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// A KV cache for one sequence of up to `capacity` tokens (capped at the model's context).
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        let device = (self.backend == Backend::Candle).then_some(&self.device);
        KvCache::new(&self.cfg, capacity.min(self.cfg.context_length), device)
    }

    pub(crate) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub(crate) fn rope(&self) -> &Rope {
        &self.rope
    }

    pub(crate) fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    pub(crate) fn lm_head(&self) -> &Linear {
        &self.lm_head
    }

    /// Embedding rows of `tokens` into `out` (`[n, hidden]`).
    pub(crate) fn embed_into(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        let m = self.embed.matrix()?;
        // A tied table repacked for the LM head is read from its panels (the same values): the
        // file's pages were released, and each lookup there would map a large folio back in.
        let panels = self.lm_head.panels().filter(|_| self.tied);
        let h = self.cfg.hidden_size;
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= self.cfg.vocab_size {
                return Err(EngineError::InvalidRequest(format!("token id {id} is outside the vocabulary")));
            }
            let row = &mut out[t * h..(t + 1) * h];
            match panels {
                Some(p) => p.row(id as usize, row),
                None => m.row(id as usize, row),
            }
        }
        if self.cfg.scale_embeddings {
            // Gemma multiplies by √hidden, as transformers does.
            let s = (h as f32).sqrt();
            out.iter_mut().for_each(|v| *v *= s);
        }
        Ok(())
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor> {
        let mut out = vec![0f32; tokens.len() * self.cfg.hidden_size];
        self.embed_into(tokens, &mut out)?;
        Ok(Tensor::from_vec(out, (tokens.len(), self.cfg.hidden_size), &self.device)?)
    }

    /// Runs the tokens of every sequence through the model, appending them to each sequence's
    /// cache. Returns per sequence the logits of every position (`n · vocab` values, row-major)
    /// if `all_logits`, else of its last position.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>], all_logits: bool) -> Result<Vec<Vec<f32>>> {
        self.run(seqs, if all_logits { Head::AllLogits } else { Head::LastLogits }, None)
    }

    /// As [`DecoderModel::forward`], but returns each sequence's last hidden state after the
    /// final norm (`hidden` values), without the LM head: what decoder embedders pool.
    pub fn last_hidden(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>> {
        self.run(seqs, Head::LastHidden, None)
    }

    /// The hidden states of one prompt (`n · hidden` values each): after the embedding, after
    /// each layer, and after the final norm — to find the first layer that goes wrong.
    pub fn trace_hidden_states(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        let mut cache = self.new_cache(tokens.len())?;
        let mut trace = Vec::new();
        self.run(&mut [SeqInput { tokens, cache: &mut cache }], Head::LastLogits, Some(&mut trace))?;
        Ok(trace)
    }

    fn run(&self, seqs: &mut [SeqInput<'_>], head: Head, trace: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<Vec<f32>>> {
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                return Err(EngineError::InvalidRequest("a forward pass needs at least one token".into()));
            }
            if s.cache.len() + s.tokens.len() > s.cache.capacity() {
                return Err(EngineError::ContextOverflow {
                    prompt: s.cache.len() + s.tokens.len(),
                    max_tokens: 0,
                    context: s.cache.capacity(),
                });
            }
        }
        match self.backend {
            Backend::Host => crate::host::forward(self, seqs, head, trace),
            Backend::Candle => self.forward_candle(seqs, head, trace),
        }
    }

    fn forward_candle(&self, seqs: &mut [SeqInput<'_>], head: Head, mut trace: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<Vec<f32>>> {
        let tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        let tables = seqs.iter().map(|s| self.rope.tables(s.cache.len(), s.tokens.len(), &self.device)).collect::<Result<Vec<_>>>()?;
        let mut x = self.embed(&tokens)?;
        let mut record = |t: &Tensor| -> Result<()> {
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(t.flatten_all()?.to_vec1::<f32>()?);
            }
            Ok(())
        };
        record(&x)?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = layer.input_norm.forward(&x)?;
            let attn = self.attention(li, layer, &h, seqs, &tables)?;
            x = match &layer.pre_ff_norm {
                Some(pre) => {
                    let x = (x + layer.post_attn_norm.forward(&attn)?)?;
                    let m = self.mlp(&layer.mlp, &pre.forward(&x)?)?;
                    (x + layer.post_ff_norm.as_ref().expect("sandwich norms come in pairs").forward(&m)?)?
                }
                None => {
                    let x = (x + attn)?;
                    let m = self.mlp(&layer.mlp, &layer.post_attn_norm.forward(&x)?)?;
                    (x + m)?
                }
            };
            record(&x)?;
        }
        record(&self.norm.forward(&x)?)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs.iter_mut() {
            let n = s.tokens.len();
            let rows = if head == Head::AllLogits { x.narrow(0, start, n)? } else { x.narrow(0, start + n - 1, 1)? };
            let normed = self.norm.forward(&rows)?;
            if head == Head::LastHidden {
                out.push(normed.flatten_all()?.to_vec1::<f32>()?);
            } else {
                let mut logits = self.lm_head.forward(&normed)?;
                if let Some(cap) = self.cfg.final_logit_softcap {
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

    fn attention(&self, li: usize, layer: &Layer, h: &Tensor, seqs: &mut [SeqInput<'_>], tables: &[(Tensor, Tensor)]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (q, k, v) = match &layer.attn.qkv {
            Qkv::Separate { q, k, v } => (q.forward(h)?, k.forward(h)?, v.forward(h)?),
            Qkv::Fused(qkv) => {
                let all = qkv.forward(h)?;
                (
                    all.narrow(1, 0, cfg.q_size())?,
                    all.narrow(1, cfg.q_size(), cfg.kv_size())?,
                    all.narrow(1, cfg.q_size() + cfg.kv_size(), cfg.kv_size())?,
                )
            }
        };
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
            let mut qs = heads(&q, nh)?;
            let mut ks = heads(&k, nkv)?;
            let vs = heads(&v, nkv)?;
            if let (Some(qn), Some(kn)) = (&layer.attn.q_norm, &layer.attn.k_norm) {
                qs = qn.forward(&qs)?;
                ks = kn.forward(&ks)?;
            }
            let rope = if cfg.rope_interleaved { candle_nn::rotary_emb::rope_i } else { candle_nn::rotary_emb::rope };
            let qs = rope(&qs.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
            let ks = rope(&ks.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
            let (keys, values) = s.cache.device_mut().append(li, pos, &ks, &vs)?;
            let total = pos + n;
            // Query heads sharing a KV head are stacked so one product serves the group.
            let qg = (qs.reshape((nkv, rep * n, hd))? * cfg.attn_scale)?;
            let mut scores = qg.matmul(&keys.t()?)?;
            if let Some(cap) = cfg.attn_logit_softcap {
                scores = ((scores / cap as f64)?.tanh()? * cap as f64)?;
            }
            let mask = self.mask(pos, n, total, layer.window)?;
            let scores = scores.reshape((nkv, rep, n, total))?.broadcast_add(&mask)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let o = probs.reshape((nkv, rep * n, total))?.matmul(&values.contiguous()?)?;
            outs.push(o.reshape((nh, n, hd))?.transpose(0, 1)?.reshape((n, nh * hd))?);
            start += n;
        }
        let o = Tensor::cat(&outs, 0)?;
        layer.attn.o.forward(&o)
    }

    /// Additive mask `[n, total]`: query `i` (at position `pos + i`) sees keys at positions
    /// `≤ pos + i`, and with a sliding window only the last `window` of them.
    fn mask(&self, pos: usize, n: usize, total: usize, window: Option<usize>) -> Result<Tensor> {
        let mut m = vec![0f32; n * total];
        for i in 0..n {
            let q = pos + i;
            for (j, v) in m[i * total..(i + 1) * total].iter_mut().enumerate() {
                let visible = j <= q && window.is_none_or(|w| q - j < w);
                if !visible {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        Ok(Tensor::from_vec(m, (n, total), &self.device)?)
    }

    fn mlp(&self, mlp: &Mlp, x: &Tensor) -> Result<Tensor> {
        let (gate, up) = match &mlp.gate_up {
            GateUp::Separate { gate, up } => (gate.forward(x)?, up.forward(x)?),
            GateUp::Fused(gu) => {
                let both = gu.forward(x)?;
                let half = both.dim(D::Minus1)? / 2;
                (both.narrow(1, 0, half)?, both.narrow(1, half, half)?)
            }
        };
        let act = match self.cfg.activation {
            Activation::Silu => candle_nn::ops::silu(&gate)?,
            Activation::GeluTanh => gate.gelu()?,
        };
        mlp.down.forward(&(act * up)?.contiguous()?)
    }
}

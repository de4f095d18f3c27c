//! The host decoder: the forward pass on the CPU, over plain buffers. Every matrix product runs
//! on the kernels crate (integer dot products on the stored weights, spread over its thread
//! pool), the small per-token operations are fused loops, and all scratch space is reused
//! between calls, so steady-state decoding allocates nothing large.

use std::cell::RefCell;

use hearth_kernels::attend::{self, attend, KvHead, Mask, Positions, Queries, ScoreScale};
use hearth_kernels::math::{exp, gelu_tanh, wide};
use hearth_kernels::pool::{self, SharedPtr};
use hearth_kernels::Precision;

use crate::config::{Activation, ModelConfig};
use crate::kv_cache::{HostKv, KvCache};
use crate::linear::{AdaptedRows, HostLinear};
use crate::lora::Adapter;
use crate::model::{Decoder, DecoderWeights, Head, Layer, LinearShape, Projection, SeqInput, WeightForm};
use crate::weights::{StoredTensor, WeightStore};
use crate::Result;

/// Weights as our kernels take them: linear layers in their stored format (or panels), norms
/// as plain vectors.
pub(crate) struct HostForm {
    precision: Precision,
}

impl WeightForm for HostForm {
    type Linear = HostLinear;
    type Norm = RmsNorm;

    fn linear(&self, weight: StoredTensor, bias: Option<Vec<f32>>, slot: usize) -> Result<HostLinear> {
        HostLinear::new(weight, bias, slot, self.precision)
    }

    fn norm(&self, weight: Vec<f32>, eps: f32) -> Result<RmsNorm> {
        Ok(RmsNorm { weight, eps })
    }
}

pub(crate) struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// 1 / the root mean square of `row` (with epsilon).
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }

    /// Normalises every row of `x` into `out`.
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let n = self.weight.len();
        for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let scale = self.inv_rms(xr);
            for ((o, &v), &g) in or.iter_mut().zip(xr).zip(&self.weight) {
                *o = v * scale * g;
            }
        }
    }

    fn apply_in_place(&self, x: &mut [f32]) {
        for row in x.chunks_exact_mut(self.weight.len()) {
            let scale = self.inv_rms(row);
            row.iter_mut().zip(&self.weight).for_each(|(v, &g)| *v = *v * scale * g);
        }
    }
}

pub(crate) struct HostDecoder {
    weights: DecoderWeights<HostForm>,
    precision: Precision,
}

impl HostDecoder {
    pub(crate) fn load(cfg: ModelConfig, store: &WeightStore, rope_freqs: Option<Vec<f32>>, precision: Precision) -> Result<Self> {
        let weights = DecoderWeights::load(&HostForm { precision }, cfg, store, rope_freqs)?;
        for linear in weights.layers.iter().flat_map(Layer::linears).chain([&weights.lm_head]) {
            linear.release_repacked_source();
        }
        Ok(HostDecoder { weights, precision })
    }
}

impl Decoder for HostDecoder {
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
        Ok(KvCache::host(&self.weights.cfg, capacity))
    }

    fn linears(&self) -> &[LinearShape] {
        &self.weights.linears
    }

    fn runs_adapters(&self) -> bool {
        true
    }

    fn run(
        &self,
        seqs: &mut [SeqInput<'_>],
        adapters: &[Option<&Adapter>],
        head: Head,
        trace: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<Vec<f32>>> {
        let mut host_seqs = seqs
            .iter_mut()
            .zip(adapters)
            .map(|(s, &adapter)| Ok(Seq { tokens: s.tokens, pos: s.cache.len(), kv: s.cache.host_mut()?, adapter }))
            .collect::<Result<Vec<_>>>()?;
        let out = self.forward(&mut host_seqs, head, trace)?;
        for s in seqs.iter_mut() {
            s.cache.set_len(s.cache.len() + s.tokens.len());
        }
        Ok(out)
    }
}

/// One sequence of a forward pass, with its cache in host memory.
struct Seq<'a> {
    tokens: &'a [u32],
    /// Tokens already in the cache: the position of `tokens[0]`.
    pos: usize,
    kv: &'a mut HostKv,
    adapter: Option<&'a Adapter>,
}

/// The rows of each sequence with an adapter, given each sequence's count of rows.
fn adapted_rows<'a>(seqs: &[Seq<'a>], counts: impl Iterator<Item = usize>) -> Vec<AdaptedRows<'a>> {
    let mut first = 0;
    let mut rows = Vec::new();
    for (seq, count) in seqs.iter().zip(counts) {
        if let Some(adapter) = seq.adapter {
            rows.push(AdaptedRows { first, count, adapter });
        }
        first += count;
    }
    rows
}

#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    fused: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    rows: Vec<f32>,
    /// Last-token logits of a step (every-position logits are allocated: they can be large).
    logits: Vec<f32>,
    units: Vec<AttnUnit>,
}

/// One task of an attention pass: a sequence (index, row of its first new token) and a KV head
/// (its query heads together) or, `tiled`, one query head.
#[derive(Clone, Copy)]
struct AttnUnit {
    seq: usize,
    first_row: usize,
    head: usize,
    tiled: bool,
}

/// From this many new tokens in a sequence, attention splits by query head (each head's new
/// tokens together) rather than by KV head (each token's query heads together). Only the
/// split changes: a query's output is the same either way.
const TILED_ATTENTION_MIN: usize = 8;

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static ATTN: RefCell<attend::Scratch> = RefCell::new(attend::Scratch::default());
}

fn take(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Rotates each head of each row by its token's angles: pairs `(i, i + hd/2)` (the Hugging
/// Face "rotate half" layout) or, `interleaved`, pairs `(2i, 2i + 1)`.
fn rope(x: &mut [f32], heads: usize, hd: usize, cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = hd / 2;
    for (t, row) in x.chunks_exact_mut(heads * hd).enumerate() {
        let (c, s) = (&cos[t * half..(t + 1) * half], &sin[t * half..(t + 1) * half]);
        for head in row.chunks_exact_mut(hd) {
            for i in 0..half {
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x1, x2) = (head[a], head[b]);
                head[a] = x1 * c[i] - x2 * s[i];
                head[b] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

/// Applies projection `p` to the `tokens` rows of `h`, each part's output into its buffer of
/// `outs`: separate layers as one group, a fused one through `fused` and split by columns.
fn project(
    p: &Projection<HostLinear>,
    h: &[f32],
    tokens: usize,
    outs: &mut [&mut [f32]],
    fused: &mut Vec<f32>,
    precision: Precision,
    adapted: &[AdaptedRows],
) {
    match p {
        Projection::Separate(parts) => {
            let mut group: Vec<_> = parts.iter().zip(outs.iter_mut()).map(|(l, out)| (l, &mut **out)).collect();
            HostLinear::matmul_group(h, &mut group, precision, adapted)
        }
        Projection::Fused(w) => {
            let width: usize = outs.iter().map(|o| o.len() / tokens).sum();
            let all = take(fused, tokens * width);
            w.matmul(h, all, precision, adapted);
            for (t, row) in all.chunks_exact(width).enumerate() {
                let mut at = 0;
                for out in outs.iter_mut() {
                    let n = out.len() / tokens;
                    out[t * n..(t + 1) * n].copy_from_slice(&row[at..at + n]);
                    at += n;
                }
            }
        }
    }
}

impl HostDecoder {
    /// See [`Decoder::run`].
    fn forward(&self, seqs: &mut [Seq<'_>], head: Head, mut trace: Option<&mut Vec<Vec<f32>>>) -> Result<Vec<Vec<f32>>> {
        let w = &self.weights;
        let cfg = &w.cfg;
        let precision = self.precision;
        let (hid, hd, nh, nkv) = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let (qs, kvs, inter) = (cfg.q_size(), cfg.kv_size(), cfg.intermediate_size);
        let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        // A tied table repacked for the LM head is read from its panels (the same values): the
        // file's pages were released, and each lookup there would map a large folio back in.
        let embed_panels = w.lm_head.panels().filter(|_| w.tied);
        let adapted = adapted_rows(seqs, seqs.iter().map(|s| s.tokens.len()));
        SCRATCH.with_borrow_mut(|s| {
            let x = take(&mut s.x, total * hid);
            let mut row0 = 0;
            for seq in seqs.iter() {
                w.embed_into(seq.tokens, &mut x[row0 * hid..(row0 + seq.tokens.len()) * hid], embed_panels)?;
                row0 += seq.tokens.len();
            }
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.to_vec());
            }
            // Each RoPE's tables for every row, one after the other.
            let table = total * hd / 2;
            let (cos, sin) = (take(&mut s.cos, w.ropes.len() * table), take(&mut s.sin, w.ropes.len() * table));
            for (rope, (cos, sin)) in w.ropes.iter().zip(cos.chunks_exact_mut(table).zip(sin.chunks_exact_mut(table))) {
                let mut at = 0;
                for seq in seqs.iter() {
                    let n = seq.tokens.len() * hd / 2;
                    rope.fill(seq.pos, seq.tokens.len(), &mut cos[at..at + n], &mut sin[at..at + n]);
                    at += n;
                }
            }
            let (cos, sin) = (&*cos, &*sin);
            let units = attention_units(cfg, seqs, &mut s.units);
            for (li, layer) in w.layers.iter().enumerate() {
                let h = take(&mut s.h, total * hid);
                layer.input_norm.apply(x, h);
                let (q, k, v) = (take(&mut s.q, total * qs), take(&mut s.k, total * kvs), take(&mut s.v, total * kvs));
                project(&layer.attn.qkv, h, total, &mut [&mut *q, &mut *k, &mut *v], &mut s.fused, precision, &adapted);
                if let (Some(qn), Some(kn)) = (&layer.attn.q_norm, &layer.attn.k_norm) {
                    qn.apply_in_place(q);
                    kn.apply_in_place(k);
                }
                let tables = layer.rope * table..(layer.rope + 1) * table;
                let (cos, sin) = (&cos[tables.clone()], &sin[tables]);
                rope(q, nh, hd, cos, sin, cfg.rope_interleaved);
                rope(k, nkv, hd, cos, sin, cfg.rope_interleaved);
                let mut row0 = 0;
                for seq in seqs.iter_mut() {
                    let n = seq.tokens.len();
                    seq.kv.write(li, seq.pos, &k[row0 * kvs..(row0 + n) * kvs], &v[row0 * kvs..(row0 + n) * kvs]);
                    row0 += n;
                }
                let att = take(&mut s.att, total * qs);
                attention(cfg, li, Mask { window: layer.window, bidirectional: cfg.bidirectional }, seqs, units, q, att);
                let o = take(&mut s.o, total * hid);
                layer.attn.o.matmul(att, o, precision, &adapted);
                let mlp_norm = match &layer.sandwich {
                    Some(sandwich) => {
                        layer.post_attn_norm.apply_in_place(o);
                        &sandwich.pre_ff
                    }
                    None => &layer.post_attn_norm,
                };
                x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
                mlp_norm.apply(x, h);
                let (gate, up) = (take(&mut s.gate, total * inter), take(&mut s.up, total * inter));
                project(&layer.mlp.gate_up, h, total, &mut [&mut *gate, &mut *up], &mut s.fused, precision, &adapted);
                wide(
                    #[inline(always)]
                    || match cfg.activation {
                        Activation::Silu => gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u),
                        Activation::GeluTanh => gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = gelu_tanh(*g) * u),
                    },
                );
                layer.mlp.down.matmul(gate, o, precision, &adapted);
                if let Some(sandwich) = &layer.sandwich {
                    sandwich.post_ff.apply_in_place(o);
                }
                x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
                if let Some(t) = trace.as_deref_mut() {
                    t.push(x.to_vec());
                }
            }
            if let Some(t) = trace {
                let mut normed = vec![0f32; x.len()];
                w.norm.apply(x, &mut normed);
                t.push(normed);
            }
            // The rows every sequence needs logits for, through the head in one product: its
            // weights (the largest matrix) are read once per step, not once per sequence.
            let mut picks = Vec::with_capacity(seqs.len());
            let mut row0 = 0;
            for seq in seqs.iter() {
                let n = seq.tokens.len();
                picks.push(if head.every_position() { (row0, n) } else { (row0 + n - 1, 1) });
                row0 += n;
            }
            let total: usize = picks.iter().map(|p| p.1).sum();
            let rows = take(&mut s.rows, total * hid);
            let mut at = 0;
            for &(first, count) in &picks {
                w.norm.apply(&x[first * hid..(first + count) * hid], &mut rows[at * hid..(at + count) * hid]);
                at += count;
            }
            let mut all_logits = Vec::new();
            let (width, values): (usize, &[f32]) = if head.hidden() {
                (hid, rows)
            } else {
                let vocab = cfg.vocab_size;
                // Reused from step to step: a fresh zeroed buffer cost page faults every token.
                let logits = if head == Head::AllLogits {
                    all_logits.resize(total * vocab, 0.0);
                    &mut all_logits[..]
                } else {
                    take(&mut s.logits, total * vocab)
                };
                w.lm_head.matmul(rows, logits, precision, &adapted_rows(seqs, picks.iter().map(|p| p.1)));
                if let Some(cap) = cfg.final_logit_softcap {
                    logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
                }
                (vocab, logits)
            };
            let mut out = Vec::with_capacity(seqs.len());
            let mut at = 0;
            for &(_, count) in &picks {
                out.push(values[at * width..(at + count) * width].to_vec());
                at += count;
            }
            Ok(out)
        })
    }
}

/// The tasks of every layer's attention pass. A sequence with few new tokens is split by KV
/// head (its query heads attend together), a long one by query head, so a single prompt still
/// spreads over every thread.
fn attention_units<'u>(cfg: &ModelConfig, seqs: &[Seq<'_>], units: &'u mut Vec<AttnUnit>) -> &'u [AttnUnit] {
    units.clear();
    let mut first_row = 0;
    for (seq, input) in seqs.iter().enumerate() {
        let tiled = input.tokens.len() >= TILED_ATTENTION_MIN;
        let heads = if tiled { cfg.num_heads } else { cfg.num_kv_heads };
        units.extend((0..heads).map(|head| AttnUnit { seq, first_row, head, tiled }));
        first_row += input.tokens.len();
    }
    units
}

/// Attention of every query against its sequence's cache under `mask`; writes
/// `[tokens, heads · head_dim]` into `out`.
fn attention(cfg: &ModelConfig, li: usize, mask: Mask, seqs: &[Seq<'_>], units: &[AttnUnit], q: &[f32], out: &mut [f32]) {
    let out_ptr = SharedPtr(out.as_mut_ptr());
    pool::global().run(units.len(), &|u| {
        let AttnUnit { seq, first_row, head, tiled } = units[u];
        let job = HeadJob { cfg, li, mask, seq: &seqs[seq], first_row, q, out: out_ptr };
        ATTN.with_borrow_mut(|scratch| if tiled { job.by_query_head(head, scratch) } else { job.by_kv_head(head, scratch) });
    });
}

/// One sequence's part of an attention pass.
struct HeadJob<'a> {
    cfg: &'a ModelConfig,
    li: usize,
    mask: Mask,
    seq: &'a Seq<'a>,
    /// Row of the sequence's first new token in `q` and the output.
    first_row: usize,
    q: &'a [f32],
    out: SharedPtr<f32>,
}

impl HeadJob<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.cfg.head_dim, self.cfg.q_size())
    }

    /// Query heads per KV head.
    fn group(&self) -> usize {
        self.cfg.num_heads / self.cfg.num_kv_heads
    }

    /// New token `i`'s query heads `h0..h0 + count`.
    fn queries(&self, i: usize, h0: usize, count: usize) -> &[f32] {
        let (hd, qs) = self.dims();
        let t = self.first_row + i;
        &self.q[t * qs + h0 * hd..t * qs + (h0 + count) * hd]
    }

    /// The output slots of new token `i`'s query heads `h0..h0 + count`.
    #[allow(clippy::mut_from_ref)]
    fn out(&self, i: usize, h0: usize, count: usize) -> &mut [f32] {
        let (hd, qs) = self.dims();
        // SAFETY: each (token, head) slot belongs to exactly one job.
        unsafe { std::slice::from_raw_parts_mut(self.out.get().add((self.first_row + i) * qs + h0 * hd), count * hd) }
    }

    fn score_scale(&self) -> ScoreScale {
        ScoreScale { scale: self.cfg.attn_scale as f32, softcap: self.cfg.attn_logit_softcap }
    }

    /// KV head `kv`'s cache, up to the sequence's last new token.
    fn kv(&self, kv: usize) -> KvHead<'_> {
        self.seq.kv.head(self.li, kv, self.seq.pos + self.seq.tokens.len())
    }

    /// One new token at a time, all query heads of KV head `kv` together: decoding, or short
    /// additions to a sequence.
    fn by_kv_head(&self, kv: usize, scratch: &mut attend::Scratch) {
        let (hd, g) = (self.dims().0, self.group());
        for i in 0..self.seq.tokens.len() {
            let q = Queries {
                data: self.queries(i, kv * g, g),
                stride: hd,
                count: g,
                head_dim: hd,
                positions: Positions::Same(self.seq.pos + i),
            };
            let out = self.out(i, kv * g, g);
            attend(q, self.kv(kv), self.mask, self.score_scale(), scratch, |h, o| out[h * hd..(h + 1) * hd].copy_from_slice(o));
        }
    }

    /// Query head `head` of every new token: prefill.
    fn by_query_head(&self, head: usize, scratch: &mut attend::Scratch) {
        let (hd, qs) = self.dims();
        let data = &self.q[self.first_row * qs + head * hd..];
        let q = Queries { data, stride: qs, count: self.seq.tokens.len(), head_dim: hd, positions: Positions::From(self.seq.pos) };
        attend(q, self.kv(head / self.group()), self.mask, self.score_scale(), scratch, |i, o| self.out(i, head, 1).copy_from_slice(o));
    }
}

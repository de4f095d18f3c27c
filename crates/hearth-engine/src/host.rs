//! The forward pass on the CPU, over plain buffers: every matrix product runs on the kernels
//! crate (integer dot products on the stored weights, spread over its thread pool), the small
//! per-token operations are fused loops, and all scratch space is reused between calls, so
//! steady-state decoding allocates nothing.

use std::cell::RefCell;

use hearth_kernels::attend::{attend_group, ScoreScale};
use hearth_kernels::gemm::{rows_times_tile, TILE};
use hearth_kernels::math::{exp, wide};
use hearth_kernels::pool::{self, SharedPtr};

use crate::config::Activation;
use crate::linear::Linear;
use crate::model::{DecoderModel, GateUp, Head, Layer, Qkv, SeqInput};
use crate::Result;

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

/// From this many new tokens in a sequence, attention runs 16 queries at a time on the tiled
/// float kernel instead of one query at a time.
const TILED_ATTENTION_MIN: usize = 8;

/// Per-thread buffers of the attention: scores, a query tile, values transposed, an output tile.
#[derive(Default)]
struct AttnScratch {
    scores: Vec<f32>,
    queries: Vec<f32>,
    values_t: Vec<f32>,
    out: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    static ATTN: RefCell<AttnScratch> = RefCell::new(AttnScratch::default());
}

fn take(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = w.len();
    for (xr, or) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / n as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
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

fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)).tanh())
}

/// See [`DecoderModel::forward`]; `trace` receives the hidden states after the embedding,
/// each layer and the final norm.
pub(crate) fn forward(
    m: &DecoderModel,
    seqs: &mut [SeqInput<'_>],
    head: Head,
    mut trace: Option<&mut Vec<Vec<f32>>>,
) -> Result<Vec<Vec<f32>>> {
    let cfg = m.config();
    let (hid, hd, nh, nkv) = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
    let (qs, kvs, inter) = (cfg.q_size(), cfg.kv_size(), cfg.intermediate_size);
    let total: usize = seqs.iter().map(|s| s.tokens.len()).sum();
    SCRATCH.with_borrow_mut(|s| {
        let x = take(&mut s.x, total * hid);
        let mut row0 = 0;
        for seq in seqs.iter() {
            m.embed_into(seq.tokens, &mut x[row0 * hid..(row0 + seq.tokens.len()) * hid])?;
            row0 += seq.tokens.len();
        }
        if let Some(t) = trace.as_deref_mut() {
            t.push(x.to_vec());
        }
        let half = hd / 2;
        let (cos, sin) = (take(&mut s.cos, total * half), take(&mut s.sin, total * half));
        let mut row0 = 0;
        for seq in seqs.iter() {
            let n = seq.tokens.len();
            m.rope().fill(seq.cache.len(), n, &mut cos[row0 * half..(row0 + n) * half], &mut sin[row0 * half..(row0 + n) * half]);
            row0 += n;
        }
        let (cos, sin) = (&*cos, &*sin);
        let units = attention_units(m, seqs, &mut s.units);
        for (li, layer) in m.layers().iter().enumerate() {
            let h = take(&mut s.h, total * hid);
            rms_norm(x, &layer.input_norm.host, layer.input_norm.eps, h);
            let (q, k, v) = (take(&mut s.q, total * qs), take(&mut s.k, total * kvs), take(&mut s.v, total * kvs));
            match &layer.attn.qkv {
                Qkv::Separate { q: wq, k: wk, v: wv } => {
                    Linear::matmul_host_group(h, &mut [(wq, &mut *q), (wk, &mut *k), (wv, &mut *v)], m.precision())
                }
                Qkv::Fused(w) => {
                    let all = take(&mut s.fused, total * (qs + 2 * kvs));
                    w.matmul_host(h, all, m.precision());
                    for (t, row) in all.chunks_exact(qs + 2 * kvs).enumerate() {
                        q[t * qs..(t + 1) * qs].copy_from_slice(&row[..qs]);
                        k[t * kvs..(t + 1) * kvs].copy_from_slice(&row[qs..qs + kvs]);
                        v[t * kvs..(t + 1) * kvs].copy_from_slice(&row[qs + kvs..]);
                    }
                }
            }
            if let (Some(qn), Some(kn)) = (&layer.attn.q_norm, &layer.attn.k_norm) {
                let qc = q.to_owned();
                rms_norm(&qc, &qn.host, qn.eps, q);
                let kc = k.to_owned();
                rms_norm(&kc, &kn.host, kn.eps, k);
            }
            rope(q, nh, hd, cos, sin, cfg.rope_interleaved);
            rope(k, nkv, hd, cos, sin, cfg.rope_interleaved);
            let mut row0 = 0;
            for seq in seqs.iter_mut() {
                let n = seq.tokens.len();
                let at = seq.cache_len();
                seq.cache.host_mut().write(li, at, &k[row0 * kvs..(row0 + n) * kvs], &v[row0 * kvs..(row0 + n) * kvs]);
                row0 += n;
            }
            let att = take(&mut s.att, total * qs);
            attention(m, li, layer, seqs, units, q, att);
            let o = take(&mut s.o, total * hid);
            layer.attn.o.matmul_host(att, o, m.precision());
            let residual_in = match &layer.pre_ff_norm {
                Some(_) => {
                    let oc = o.to_owned();
                    rms_norm(&oc, &layer.post_attn_norm.host, layer.post_attn_norm.eps, o);
                    &layer.pre_ff_norm.as_ref().expect("checked").host
                }
                None => &layer.post_attn_norm.host,
            };
            x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
            rms_norm(x, residual_in, layer.post_attn_norm.eps, h);
            let (gate, up) = (take(&mut s.gate, total * inter), take(&mut s.up, total * inter));
            match &layer.mlp.gate_up {
                GateUp::Separate { gate: wg, up: wu } => {
                    Linear::matmul_host_group(h, &mut [(wg, &mut *gate), (wu, &mut *up)], m.precision())
                }
                GateUp::Fused(w) => {
                    let both = take(&mut s.fused, total * 2 * inter);
                    w.matmul_host(h, both, m.precision());
                    for (t, row) in both.chunks_exact(2 * inter).enumerate() {
                        gate[t * inter..(t + 1) * inter].copy_from_slice(&row[..inter]);
                        up[t * inter..(t + 1) * inter].copy_from_slice(&row[inter..]);
                    }
                }
            }
            wide(
                #[inline(always)]
                || match cfg.activation {
                    Activation::Silu => gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = *g / (1.0 + exp(-*g)) * u),
                    Activation::GeluTanh => gate.iter_mut().zip(up.iter()).for_each(|(g, u)| *g = gelu_tanh(*g) * u),
                },
            );
            layer.mlp.down.matmul_host(gate, o, m.precision());
            if let Some(post) = &layer.post_ff_norm {
                let oc = o.to_owned();
                rms_norm(&oc, &post.host, post.eps, o);
            }
            x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
            if let Some(t) = trace.as_deref_mut() {
                t.push(x.to_vec());
            }
        }
        if let Some(t) = trace {
            let mut normed = vec![0f32; x.len()];
            rms_norm(x, &m.final_norm().host, m.final_norm().eps, &mut normed);
            t.push(normed);
        }
        // The rows every sequence needs logits for, through the head in one product: its
        // weights (the largest matrix) are read once per step, not once per sequence.
        let mut picks = Vec::with_capacity(seqs.len());
        let mut row0 = 0;
        for seq in seqs.iter() {
            let n = seq.tokens.len();
            picks.push(if head == Head::AllLogits { (row0, n) } else { (row0 + n - 1, 1) });
            row0 += n;
        }
        let total: usize = picks.iter().map(|p| p.1).sum();
        let rows = take(&mut s.rows, total * hid);
        let mut at = 0;
        for &(first, count) in &picks {
            rms_norm(
                &x[first * hid..(first + count) * hid],
                &m.final_norm().host,
                m.final_norm().eps,
                &mut rows[at * hid..(at + count) * hid],
            );
            at += count;
        }
        let mut all_logits = Vec::new();
        let (width, values): (usize, &[f32]) = if head == Head::LastHidden {
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
            m.lm_head().matmul_host(rows, logits, m.precision());
            if let Some(cap) = cfg.final_logit_softcap {
                logits.iter_mut().for_each(|l| *l = (*l / cap).tanh() * cap);
            }
            (vocab, logits)
        };
        let mut out = Vec::with_capacity(seqs.len());
        let mut at = 0;
        for (seq, &(_, count)) in seqs.iter_mut().zip(&picks) {
            out.push(values[at * width..(at + count) * width].to_vec());
            at += count;
            let len = seq.cache_len() + seq.tokens.len();
            seq.cache.set_len(len);
        }
        Ok(out)
    })
}

/// The tasks of every layer's attention pass. A sequence with few new tokens is split by KV
/// head (its query heads attend together: [`attend_group`]), a long one by query head (the
/// tiled kernel), so a single prompt still spreads over every thread.
fn attention_units<'u>(m: &DecoderModel, seqs: &[SeqInput<'_>], units: &'u mut Vec<AttnUnit>) -> &'u [AttnUnit] {
    let cfg = m.config();
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

/// Causal (optionally sliding-window) attention of every query against its sequence's cache;
/// writes `[tokens, heads · head_dim]` into `out`.
fn attention(m: &DecoderModel, li: usize, layer: &Layer, seqs: &[SeqInput<'_>], units: &[AttnUnit], q: &[f32], out: &mut [f32]) {
    let out_ptr = SharedPtr(out.as_mut_ptr());
    pool::global().run(units.len(), &|u| {
        let AttnUnit { seq, first_row, head, tiled } = units[u];
        let job = HeadJob { m, li, layer, seq: &seqs[seq], first_row, q, out: out_ptr };
        ATTN.with_borrow_mut(|scratch| if tiled { job.tiled(head, scratch) } else { job.grouped(head, scratch) });
    });
}

/// One sequence's part of an attention pass.
struct HeadJob<'a> {
    m: &'a DecoderModel,
    li: usize,
    layer: &'a Layer,
    seq: &'a SeqInput<'a>,
    /// Row of the sequence's first new token in `q` and the output.
    first_row: usize,
    q: &'a [f32],
    out: SharedPtr<f32>,
}

impl HeadJob<'_> {
    fn dims(&self) -> (usize, usize) {
        let cfg = self.m.config();
        (cfg.head_dim, cfg.num_heads * cfg.head_dim)
    }

    /// Query heads per KV head.
    fn group(&self) -> usize {
        let cfg = self.m.config();
        cfg.num_heads / cfg.num_kv_heads
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

    /// The keys position `p` attends to: `lo..=p`.
    fn visible_from(&self, p: usize) -> usize {
        self.layer.window.map_or(0, |w| (p + 1).saturating_sub(w))
    }

    fn score_scale(&self) -> ScoreScale {
        let cfg = self.m.config();
        ScoreScale { scale: cfg.attn_scale as f32, softcap: cfg.attn_logit_softcap }
    }

    fn score(&self, dot: f32) -> f32 {
        let s = self.score_scale();
        let v = dot * s.scale;
        match s.softcap {
            Some(cap) => (v / cap).tanh() * cap,
            None => v,
        }
    }

    /// KV head `kv`'s cached keys and values.
    fn kv(&self, kv: usize) -> (&[f32], &[f32]) {
        self.seq.cache.host().head(self.li, kv)
    }

    /// One new token at a time, all query heads of KV head `kv` together: decoding, or short
    /// additions to a sequence.
    fn grouped(&self, kv: usize, scratch: &mut AttnScratch) {
        let (hd, _) = self.dims();
        let g = self.group();
        let (keys, values) = self.kv(kv);
        let pos0 = self.seq.cache_len();
        for i in 0..self.seq.tokens.len() {
            let p = pos0 + i;
            let visible = self.visible_from(p) * hd..(p + 1) * hd;
            let (q, out) = (self.queries(i, kv * g, g), self.out(i, kv * g, g));
            attend_group(q, &keys[visible.clone()], &values[visible], hd, self.score_scale(), &mut scratch.scores, out);
        }
    }

    /// Sixteen queries at a time: scores and outputs as products on the tiled float kernel.
    fn tiled(&self, head: usize, scratch: &mut AttnScratch) {
        let (hd, _) = self.dims();
        let (keys, values) = self.kv(head / self.group());
        let pos0 = self.seq.cache_len();
        let n = self.seq.tokens.len();
        let total = pos0 + n;
        // Values transposed to [head_dim][positions], the rows of the output product.
        let vt = take(&mut scratch.values_t, hd * total);
        for j in 0..total {
            for d in 0..hd {
                vt[d * total + j] = values[j * hd + d];
            }
        }
        for i0 in (0..n).step_by(TILE) {
            let lanes = TILE.min(n - i0);
            let qt = take(&mut scratch.queries, hd * TILE);
            for lane in 0..TILE {
                let qv = self.queries(i0 + lane.min(lanes - 1), head, 1);
                for d in 0..hd {
                    qt[d * TILE + lane] = if lane < lanes { qv[d] } else { 0.0 };
                }
            }
            let len = pos0 + i0 + lanes;
            let sc = take(&mut scratch.scores, len * TILE);
            rows_times_tile(keys, hd, len, qt, sc);
            // Lane-wise softmax over the visible keys; loops run over the 16 lanes innermost.
            let mut lo = [0usize; TILE];
            let mut hi = [0usize; TILE];
            for lane in 0..lanes {
                let p = pos0 + i0 + lane;
                (lo[lane], hi[lane]) = (self.visible_from(p), p + 1);
            }
            let mut max = [f32::NEG_INFINITY; TILE];
            for (j, row) in sc.chunks_exact_mut(TILE).enumerate() {
                for lane in 0..TILE {
                    let v = if j >= lo[lane] && j < hi[lane] { self.score(row[lane]) } else { f32::NEG_INFINITY };
                    row[lane] = v;
                    max[lane] = max[lane].max(v);
                }
            }
            max.iter_mut().for_each(|m| *m = if m.is_finite() { *m } else { 0.0 });
            let mut sum = [0f32; TILE];
            for row in sc.chunks_exact_mut(TILE) {
                for lane in 0..TILE {
                    let w = if row[lane] == f32::NEG_INFINITY { 0.0 } else { exp(row[lane] - max[lane]) };
                    row[lane] = w;
                    sum[lane] += w;
                }
            }
            let inv: [f32; TILE] = std::array::from_fn(|lane| if sum[lane] > 0.0 { 1.0 / sum[lane] } else { 0.0 });
            for row in sc.chunks_exact_mut(TILE) {
                row.iter_mut().zip(&inv).for_each(|(w, i)| *w *= i);
            }
            let ot = take(&mut scratch.out, hd * TILE);
            rows_times_tile(vt, total, hd, &sc[..len * TILE], ot);
            for lane in 0..lanes {
                let o = self.out(i0 + lane, head, 1);
                for d in 0..hd {
                    o[d] = ot[d * TILE + lane];
                }
            }
        }
    }
}

//! The decoder's pieces with their backward passes: RMSNorm, rotary embeddings, causal
//! attention (grouped queries, sliding window, soft-capping) and the gated MLP activations.

use hearth_engine::config::Activation;

use std::sync::Mutex;

use hearth_kernels::math;
use hearth_kernels::pool;
use hearth_kernels::sgemm::{gemm_serial, RowMajor, Transposed};

use crate::linalg::{par_rows, par_rows2, transpose};

/// RMSNorm over rows of `w.len()`: `y = x / rms(x) · w`; returns `y` and each row's `1/rms`.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let mut inv = vec![0f32; x.len() / d];
    par_rows2(&mut y, d, &mut inv, 1, |r0, y, inv| {
        math::wide(|| {
            for ((xr, yr), r) in x[r0 * d..].chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(inv.iter_mut()) {
                *r = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
                yr.iter_mut().zip(xr.iter().zip(w)).for_each(|(o, (&v, &g))| *o = v * *r * g);
            }
        })
    });
    (y, inv)
}

/// `∂/∂x` of [`rms_norm`] given `dy` (the weights are frozen).
pub(crate) fn rms_norm_backward(x: &[f32], w: &[f32], inv: &[f32], dy: &[f32]) -> Vec<f32> {
    let d = w.len();
    let mut dx = vec![0f32; x.len()];
    par_rows(&mut dx, d, |r0, dx| {
        math::wide(|| {
            let rows = x[r0 * d..].chunks_exact(d).zip(dy[r0 * d..].chunks_exact(d)).zip(&inv[r0..]);
            for (((xr, dyr), &r), dxr) in rows.zip(dx.chunks_exact_mut(d)) {
                // y = x·r·w, r = (mean(x²) + eps)^(-1/2): dx = r·(w⊙dy) − x·r³/d·Σ(w⊙dy⊙x).
                let s: f32 = xr.iter().zip(dyr.iter().zip(w)).map(|(&xv, (&g, &wv))| g * wv * xv).sum();
                let c = r * r * r * s / d as f32;
                dxr.iter_mut().zip(xr.iter().zip(dyr.iter().zip(w))).for_each(|(o, (&xv, (&g, &wv)))| *o = r * wv * g - c * xv);
            }
        })
    });
    dx
}

/// Rotates each head of `x` (rows of `heads · head_dim`) by position, Hugging Face's "rotate
/// half" layout; `inverse` applies the transposed rotation (the backward pass). `cos`/`sin` are
/// `[positions, head_dim/2]`; row `i` is at position `i % positions`.
pub(crate) fn rope(x: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32], inverse: bool) {
    let half = head_dim / 2;
    let positions = cos.len() / half;
    par_rows(x, heads * head_dim, |r0, x| {
        for (i, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
            let p = (r0 + i) % positions;
            let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            for head in row.chunks_exact_mut(head_dim) {
                let (a, b) = head.split_at_mut(half);
                for j in 0..half {
                    let sj = if inverse { -s[j] } else { s[j] };
                    let (x1, x2) = (a[j], b[j]);
                    a[j] = x1 * c[j] - x2 * sj;
                    b[j] = x2 * c[j] + x1 * sj;
                }
            }
        }
    });
}

/// The shape of one attention pass.
#[derive(Clone, Copy)]
pub(crate) struct AttnShape {
    pub rows: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
    pub softcap: Option<f32>,
}

impl AttnShape {
    /// The first key row `i` sees (it sees every one up to itself).
    fn first_visible(&self, i: usize) -> usize {
        self.window.map_or(0, |w| (i + 1).saturating_sub(w))
    }
}

/// Causal attention per sequence of `shape.seq` rows: returns the output (rows of
/// `heads · head_dim`) and the attention weights `[rows / seq, heads, seq, seq]`. Each
/// sequence's key-value heads are a task on the kernel pool; the products are GEMMs.
pub(crate) fn attention(q: &[f32], k: &[f32], v: &[f32], a: &AttnShape) -> (Vec<f32>, Vec<f32>) {
    let (hd, t) = (a.head_dim, a.seq);
    let (qw, kw) = (a.heads * hd, a.kv_heads * hd);
    let group = a.heads / a.kv_heads;
    let parts = per_kv_head(a, |b, kvh| {
        let mut part = Vec::with_capacity(group);
        for h in kvh * group..(kvh + 1) * group {
            let mut p = vec![0f32; t * t];
            scores(q, k, a, b, h, &mut p);
            math::wide(|| {
                for (i, row) in p.chunks_exact_mut(t).enumerate() {
                    let (first, end) = (a.first_visible(i), i + 1);
                    let visible = &mut row[first..end];
                    let max = math::max(visible);
                    visible.iter_mut().for_each(|z| *z = math::exp(*z - max));
                    let inv = 1.0 / math::sum_of(visible, |z| z);
                    visible.iter_mut().for_each(|z| *z *= inv);
                    row[..first].fill(0.0);
                    row[end..].fill(0.0);
                }
            });
            let mut o = vec![0f32; t * hd];
            for (r0, r1) in causal_blocks(t) {
                let vh = RowMajor { data: &v[b * t * kw + kvh * hd..], depth: r1, width: hd, ld: kw };
                gemm_serial(&p[r0 * t..], t, r1 - r0, &vh, &mut o[r0 * hd..], hd, false);
            }
            part.push((p, o));
        }
        part
    });
    let mut out = vec![0f32; a.rows * qw];
    let mut probs = vec![0f32; a.rows / t * a.heads * t * t];
    for ((b, kvh), part) in parts {
        for (h, (p, o)) in (kvh * group..).zip(part) {
            probs[(b * a.heads + h) * t * t..][..t * t].copy_from_slice(&p);
            for (i, row) in o.chunks_exact(hd).enumerate() {
                out[(b * t + i) * qw + h * hd..][..hd].copy_from_slice(row);
            }
        }
    }
    (out, probs)
}

/// Query rows per block of the causal products: block `[r0, r1)` sees keys `0..r1` only, so
/// the masked upper triangle is mostly skipped (56 % of the full products at 256 positions).
const CAUSAL_BLOCK: usize = 32;

/// The row blocks of a sequence of `t` positions, each `(r0, r1)`.
fn causal_blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t).step_by(CAUSAL_BLOCK).map(move |r0| (r0, (r0 + CAUSAL_BLOCK).min(t)))
}

/// Head `h`'s scores in sequence `b`, `q·kᵀ·scale`, soft-capped: `[seq, seq]` into `out`, for
/// the keys each row's block sees (the rest is left as it was).
fn scores(q: &[f32], k: &[f32], a: &AttnShape, b: usize, h: usize, out: &mut [f32]) {
    let (hd, t) = (a.head_dim, a.seq);
    let (qw, kw) = (a.heads * hd, a.kv_heads * hd);
    let kvh = h / (a.heads / a.kv_heads);
    let (scale, cap) = (a.scale, a.softcap);
    for (r0, r1) in causal_blocks(t) {
        let kt = Transposed { data: &k[b * t * kw + kvh * hd..], depth: hd, width: r1, ld: kw };
        gemm_serial(&q[(b * t + r0) * qw + h * hd..], qw, r1 - r0, &kt, &mut out[r0 * t..], t, false);
        math::wide(|| {
            for row in out[r0 * t..r1 * t].chunks_exact_mut(t) {
                match cap {
                    Some(cap) => row[..r1].iter_mut().for_each(|z| *z = (*z * scale / cap).tanh() * cap),
                    None => row[..r1].iter_mut().for_each(|z| *z *= scale),
                }
            }
        });
    }
}

/// Runs `f(b, kv_head)` for every sequence and key-value head on the kernel pool.
fn per_kv_head<T: Send>(a: &AttnShape, f: impl Fn(usize, usize) -> T + Sync) -> Vec<((usize, usize), T)> {
    let tasks = a.rows / a.seq * a.kv_heads;
    let slots: Vec<Mutex<Option<T>>> = (0..tasks).map(|_| Mutex::new(None)).collect();
    pool::global().run(tasks, &|i| {
        let r = f(i / a.kv_heads, i % a.kv_heads);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    });
    slots
        .into_iter()
        .enumerate()
        .map(|(i, s)| ((i / a.kv_heads, i % a.kv_heads), s.into_inner().unwrap_or_else(|e| e.into_inner()).expect("task ran")))
        .collect()
}

/// The backward pass of [`attention`]: `(dq, dk, dv)` from `dout`.
pub(crate) fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    probs: &[f32],
    dout: &[f32],
    a: &AttnShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (hd, t) = (a.head_dim, a.seq);
    let (qw, kw) = (a.heads * hd, a.kv_heads * hd);
    let group = a.heads / a.kv_heads;
    let parts = per_kv_head(a, |b, kvh| {
        let (mut dk, mut dv) = (vec![0f32; t * hd], vec![0f32; t * hd]);
        let mut dqs = Vec::with_capacity(group);
        for h in kvh * group..(kvh + 1) * group {
            let p = &probs[(b * a.heads + h) * t * t..][..t * t];
            let doh = &dout[b * t * qw + h * hd..];
            // dP = dout · vᵀ; dS = P ⊙ (dP − Σ_j P_ij dP_ij); through the cap, ·(1 − tanh²).
            let mut ds = vec![0f32; t * t];
            for (r0, r1) in causal_blocks(t) {
                let vt = Transposed { data: &v[b * t * kw + kvh * hd..], depth: hd, width: r1, ld: kw };
                gemm_serial(&doh[r0 * qw..], qw, r1 - r0, &vt, &mut ds[r0 * t..], t, false);
            }
            let capped = a.softcap.map(|cap| {
                let mut s = vec![0f32; t * t];
                scores(q, k, a, b, h, &mut s);
                (cap, s)
            });
            math::wide(|| {
                for (i, (row, prow)) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)).enumerate() {
                    let weighted = hearth_kernels::dot(row, prow);
                    row.iter_mut().zip(prow).for_each(|(d, &p)| *d = p * (*d - weighted) * a.scale);
                    if let Some((cap, s)) = &capped {
                        let srow = &s[i * t..(i + 1) * t];
                        row.iter_mut().zip(srow).for_each(|(d, &z)| {
                            let th = z / cap;
                            *d *= 1.0 - th * th;
                        });
                    }
                }
            });
            // Row i of dS and P is zero past i: dq's block [r0, r1) sums over keys 0..r1, and
            // dk's and dv's rows [r0, r1) over queries r0..t.
            let mut dq = vec![0f32; t * hd];
            let (ds_t, p_t) = (transpose(&ds, t, t), transpose(p, t, t));
            for (r0, r1) in causal_blocks(t) {
                let kh = RowMajor { data: &k[b * t * kw + kvh * hd..], depth: r1, width: hd, ld: kw };
                gemm_serial(&ds[r0 * t..], t, r1 - r0, &kh, &mut dq[r0 * hd..], hd, false);
                let qh = RowMajor { data: &q[(b * t + r0) * qw + h * hd..], depth: t - r0, width: hd, ld: qw };
                gemm_serial(&ds_t[r0 * t + r0..], t, r1 - r0, &qh, &mut dk[r0 * hd..], hd, true);
                let dh = RowMajor { data: &doh[r0 * qw..], depth: t - r0, width: hd, ld: qw };
                gemm_serial(&p_t[r0 * t + r0..], t, r1 - r0, &dh, &mut dv[r0 * hd..], hd, true);
            }
            dqs.push(dq);
        }
        (dqs, dk, dv)
    });
    let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
    let scatter = |dst: &mut [f32], width: usize, b: usize, head: usize, src: &[f32]| {
        for (i, row) in src.chunks_exact(hd).enumerate() {
            dst[(b * t + i) * width + head * hd..][..hd].copy_from_slice(row);
        }
    };
    for ((b, kvh), (dqs, dkp, dvp)) in parts {
        for (h, d) in (kvh * group..).zip(dqs) {
            scatter(&mut dq, qw, b, h, &d);
        }
        scatter(&mut dk, kw, b, kvh, &dkp);
        scatter(&mut dv, kw, b, kvh, &dvp);
    }
    (dq, dk, dv)
}

/// The gated MLP's activation: `act(gate) · up`.
pub(crate) fn gated(activation: Activation, gate: &[f32], up: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; gate.len()];
    par_rows(&mut out, ELEMENTS_PER_ROW, |r0, out| {
        let n = out.len();
        let (g, u) = (&gate[r0 * ELEMENTS_PER_ROW..][..n], &up[r0 * ELEMENTS_PER_ROW..][..n]);
        // The activation fixed per loop and everything inlined into `wide`'s body: only then do
        // the loops vectorise (a closure left out of line runs scalar).
        math::wide(|| match activation {
            Activation::Silu => gated_rows(Activation::Silu, g, u, out),
            Activation::GeluTanh => gated_rows(Activation::GeluTanh, g, u, out),
        })
    });
    out
}

#[inline(always)]
fn gated_rows(activation: Activation, g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = act(activation, g).0 * u;
    }
}

/// How [`gated`] and [`gated_backward`] cut their flat inputs among the threads.
const ELEMENTS_PER_ROW: usize = 256;

/// `(∂/∂gate, ∂/∂up)` of [`gated`].
pub(crate) fn gated_backward(activation: Activation, gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut dgate, mut dup) = (vec![0f32; gate.len()], vec![0f32; up.len()]);
    par_rows2(&mut dgate, ELEMENTS_PER_ROW, &mut dup, ELEMENTS_PER_ROW, |r0, dgate, dup| {
        let n = dgate.len();
        let at = r0 * ELEMENTS_PER_ROW;
        let (g, u, d) = (&gate[at..][..n], &up[at..][..n], &dy[at..][..n]);
        math::wide(|| match activation {
            Activation::Silu => gated_backward_rows(Activation::Silu, g, u, d, dgate, dup),
            Activation::GeluTanh => gated_backward_rows(Activation::GeluTanh, g, u, d, dgate, dup),
        })
    });
    (dgate, dup)
}

#[inline(always)]
fn gated_backward_rows(activation: Activation, g: &[f32], u: &[f32], d: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let n = dgate.len();
    let (g, u, d, dup) = (&g[..n], &u[..n], &d[..n], &mut dup[..n]);
    for i in 0..n {
        let (a, da) = act(activation, g[i]);
        dgate[i] = d[i] * u[i] * da;
        dup[i] = d[i] * a;
    }
}

/// An activation's value and derivative at `x`.
#[inline(always)]
fn act(activation: Activation, x: f32) -> (f32, f32) {
    match activation {
        Activation::Silu => {
            let s = 1.0 / (1.0 + math::exp(-x));
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
        Activation::GeluTanh => {
            // 0.5·x·(1 + tanh(c·(x + 0.044715·x³))), c = √(2/π); tanh(u) = 1 − 2/(e^{2u} + 1).
            let c = (2.0 / std::f32::consts::PI).sqrt();
            let inner = c * (x + 0.044715 * x * x * x);
            let th = 1.0 - 2.0 / (math::exp(2.0 * inner) + 1.0);
            let d_inner = c * (1.0 + 3.0 * 0.044715 * x * x);
            (0.5 * x * (1.0 + th), 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * d_inner)
        }
    }
}

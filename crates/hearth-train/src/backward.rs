//! The decoder's pieces with their backward passes: RMSNorm, rotary embeddings, causal
//! attention (grouped queries, sliding window, soft-capping) and the gated MLP activations.

use hearth_engine::config::Activation;

use crate::linalg::dot;

/// RMSNorm over rows of `w.len()`: `y = x / rms(x) · w`; returns `y` and each row's `1/rms`.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = w.len();
    let mut y = vec![0f32; x.len()];
    let mut inv = Vec::with_capacity(x.len() / d);
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let r = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / d as f32 + eps).sqrt();
        yr.iter_mut().zip(xr.iter().zip(w)).for_each(|(o, (&v, &g))| *o = v * r * g);
        inv.push(r);
    }
    (y, inv)
}

/// `∂/∂x` of [`rms_norm`] given `dy` (the weights are frozen).
pub(crate) fn rms_norm_backward(x: &[f32], w: &[f32], inv: &[f32], dy: &[f32]) -> Vec<f32> {
    let d = w.len();
    let mut dx = vec![0f32; x.len()];
    for (((xr, dyr), dxr), &r) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(inv) {
        // y = x·r·w, r = (mean(x²) + eps)^(-1/2): dx = r·(w⊙dy) − x·r³/d·Σ(w⊙dy⊙x).
        let s: f32 = xr.iter().zip(dyr.iter().zip(w)).map(|(&xv, (&g, &wv))| g * wv * xv).sum();
        let c = r * r * r * s / d as f32;
        dxr.iter_mut().zip(xr.iter().zip(dyr.iter().zip(w))).for_each(|(o, (&xv, (&g, &wv)))| *o = r * wv * g - c * xv);
    }
    dx
}

/// Rotates each head of `x` (rows of `heads · head_dim`) by position, Hugging Face's "rotate
/// half" layout; `inverse` applies the transposed rotation (the backward pass). `cos`/`sin` are
/// `[positions, head_dim/2]`; row `i` is at position `i % positions`.
pub(crate) fn rope(x: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32], inverse: bool) {
    let half = head_dim / 2;
    let positions = cos.len() / half;
    for (i, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let p = i % positions;
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
    fn visible(&self, i: usize, j: usize) -> bool {
        j <= i && self.window.is_none_or(|w| i - j < w)
    }
}

/// Causal attention per sequence of `shape.seq` rows: returns the output (rows of
/// `heads · head_dim`) and the attention weights `[rows / seq, heads, seq, seq]`.
pub(crate) fn attention(q: &[f32], k: &[f32], v: &[f32], a: &AttnShape) -> (Vec<f32>, Vec<f32>) {
    let (hd, t) = (a.head_dim, a.seq);
    let (qw, kw) = (a.heads * hd, a.kv_heads * hd);
    let group = a.heads / a.kv_heads;
    let seqs = a.rows / t;
    let mut out = vec![0f32; a.rows * qw];
    let mut probs = vec![0f32; seqs * a.heads * t * t];
    for b in 0..seqs {
        for h in 0..a.heads {
            let kvh = h / group;
            let p = &mut probs[(b * a.heads + h) * t * t..][..t * t];
            for i in 0..t {
                let qi = &q[(b * t + i) * qw + h * hd..][..hd];
                let row = &mut p[i * t..(i + 1) * t];
                let mut max = f32::NEG_INFINITY;
                for (j, s) in row.iter_mut().enumerate() {
                    if !a.visible(i, j) {
                        continue;
                    }
                    let mut z = dot(qi, &k[(b * t + j) * kw + kvh * hd..][..hd]) * a.scale;
                    if let Some(cap) = a.softcap {
                        z = (z / cap).tanh() * cap;
                    }
                    *s = z;
                    max = max.max(z);
                }
                let mut sum = 0f32;
                for (j, s) in row.iter_mut().enumerate() {
                    *s = if a.visible(i, j) { (*s - max).exp() } else { 0.0 };
                    sum += *s;
                }
                row.iter_mut().for_each(|s| *s /= sum);
                let o = &mut out[(b * t + i) * qw + h * hd..][..hd];
                for (j, &pj) in row.iter().enumerate().filter(|(_, &pj)| pj != 0.0) {
                    let vj = &v[(b * t + j) * kw + kvh * hd..][..hd];
                    o.iter_mut().zip(vj).for_each(|(o, &vv)| *o += pj * vv);
                }
            }
        }
    }
    (out, probs)
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
    let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
    let mut ds = vec![0f32; t];
    for b in 0..a.rows / t {
        for h in 0..a.heads {
            let kvh = h / group;
            let p = &probs[(b * a.heads + h) * t * t..][..t * t];
            for i in 0..t {
                let row = &p[i * t..(i + 1) * t];
                let doi = &dout[(b * t + i) * qw + h * hd..][..hd];
                // dP_ij = dout_i · v_j; dv_j += P_ij dout_i; dS = P ⊙ (dP − Σ_j P_ij dP_ij).
                let mut weighted = 0f32;
                for (j, &pj) in row.iter().enumerate() {
                    if pj == 0.0 {
                        ds[j] = 0.0;
                        continue;
                    }
                    let (vj, dvj) = (&v[(b * t + j) * kw + kvh * hd..][..hd], &mut dv[(b * t + j) * kw + kvh * hd..][..hd]);
                    ds[j] = dot(doi, vj);
                    weighted += pj * ds[j];
                    dvj.iter_mut().zip(doi).for_each(|(d, &g)| *d += pj * g);
                }
                let qi = &q[(b * t + i) * qw + h * hd..][..hd];
                for (j, &pj) in row.iter().enumerate().filter(|(_, &pj)| pj != 0.0) {
                    let mut dz = pj * (ds[j] - weighted);
                    if let Some(cap) = a.softcap {
                        // s = cap·tanh(z/cap): ds/dz = 1 − tanh²; tanh recomputed from q·k.
                        let kj = &k[(b * t + j) * kw + kvh * hd..][..hd];
                        let th = (dot(qi, kj) * a.scale / cap).tanh();
                        dz *= 1.0 - th * th;
                    }
                    let g = dz * a.scale;
                    let kj = &k[(b * t + j) * kw + kvh * hd..][..hd];
                    let dqi = &mut dq[(b * t + i) * qw + h * hd..][..hd];
                    dqi.iter_mut().zip(kj).for_each(|(d, &kv)| *d += g * kv);
                    let dkj = &mut dk[(b * t + j) * kw + kvh * hd..][..hd];
                    dkj.iter_mut().zip(qi).for_each(|(d, &qv)| *d += g * qv);
                }
            }
        }
    }
    (dq, dk, dv)
}

/// The gated MLP's activation: `act(gate) · up`.
pub(crate) fn gated(activation: Activation, gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter().zip(up).map(|(&g, &u)| act(activation, g).0 * u).collect()
}

/// `(∂/∂gate, ∂/∂up)` of [`gated`].
pub(crate) fn gated_backward(activation: Activation, gate: &[f32], up: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dgate = Vec::with_capacity(gate.len());
    let mut dup = Vec::with_capacity(up.len());
    for ((&g, &u), &d) in gate.iter().zip(up).zip(dy) {
        let (a, da) = act(activation, g);
        dgate.push(d * u * da);
        dup.push(d * a);
    }
    (dgate, dup)
}

/// An activation's value and derivative at `x`.
fn act(activation: Activation, x: f32) -> (f32, f32) {
    match activation {
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-x).exp());
            (x * s, s * (1.0 + x * (1.0 - s)))
        }
        Activation::GeluTanh => {
            // 0.5·x·(1 + tanh(c·(x + 0.044715·x³))), c = √(2/π).
            let c = (2.0 / std::f32::consts::PI).sqrt();
            let inner = c * (x + 0.044715 * x * x * x);
            let th = inner.tanh();
            let d_inner = c * (1.0 + 3.0 * 0.044715 * x * x);
            (0.5 * x * (1.0 + th), 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * d_inner)
        }
    }
}

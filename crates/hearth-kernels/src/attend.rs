//! Attention against a sequence's cached keys and values. For one new position
//! ([`attend_group`]) the query heads that share a KV head go together, so each key and value
//! row is read once for the whole group (grouped query attention) and the products run on full
//! vector registers: decoding spends its attention time there. Many new positions of one head
//! ([`attend_tiled`]) go sixteen at a time through the tiled float kernel: prefill.

use std::ops::Range;

use crate::gemm::{rows_times_tile, TILE};
use crate::math::exp;

/// Scaling of the raw query·key products before the softmax.
#[derive(Clone, Copy, Debug)]
pub struct ScoreScale {
    pub scale: f32,
    /// Gemma 2's `tanh(s / cap) · cap`.
    pub softcap: Option<f32>,
}

impl ScoreScale {
    /// One raw product, scaled (and soft-capped).
    #[inline(always)]
    fn apply(self, dot: f32) -> f32 {
        let v = dot * self.scale;
        match self.softcap {
            Some(cap) => (v / cap).tanh() * cap,
            None => v,
        }
    }
}

/// The keys a query sees: causal, all up to its own position; bidirectional, every position of
/// its sequence. A sliding window keeps only keys less than `window` positions away (in both
/// directions when bidirectional, as transformers' sliding masks do).
#[derive(Clone, Copy, Debug)]
pub struct Mask {
    pub window: Option<usize>,
    pub bidirectional: bool,
}

impl Mask {
    /// The key positions that the query at position `p` of a sequence of `len` attends to.
    pub fn visible(self, p: usize, len: usize) -> Range<usize> {
        let start = self.window.map_or(0, |w| (p + 1).saturating_sub(w));
        let end = match (self.bidirectional, self.window) {
            (false, _) => p + 1,
            (true, None) => len,
            (true, Some(w)) => (p + w).min(len),
        };
        start..end
    }
}

/// `out[g] = softmax(score(q[g] · Kⱼ)) · V` for the `G = q.len() / hd` query heads in `q`
/// (`[G, hd]`), over every row of `keys` and `values` (`[n, hd]`, the visible positions);
/// writes `out` (`[G, hd]`). `scratch` is reused between calls (nothing is allocated once it
/// has grown to the longest context).
pub fn attend_group(q: &[f32], keys: &[f32], values: &[f32], hd: usize, score: ScoreScale, scratch: &mut Vec<f32>, out: &mut [f32]) {
    let (g, n) = (q.len() / hd, keys.len() / hd);
    assert!(n > 0 && q.len() == g * hd && out.len() == q.len() && values.len() == keys.len(), "attend_group shapes");
    scratch.resize(g * n + g, 0.0);
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512f") {
        let (scores, inv) = split(scratch, g, n);
        // SAFETY: the CPU has AVX-512 F; shapes were checked above.
        unsafe {
            x86::dots(q, keys, hd, scores);
            softmax_rows(scores, n, score, inv);
            x86::weighted_sums(scores, values, hd, out);
        }
        scale_rows(out, hd, inv);
        return;
    }
    portable(q, keys, values, hd, score, scratch, out)
}

/// Scratch space as the scores `[G, n]`, then each head's 1 / (sum of its softmax weights).
fn split(scratch: &mut [f32], g: usize, n: usize) -> (&mut [f32], &mut [f32]) {
    scratch[..g * n + g].split_at_mut(g * n)
}

fn portable(q: &[f32], keys: &[f32], values: &[f32], hd: usize, score: ScoreScale, scratch: &mut [f32], out: &mut [f32]) {
    let (g, n) = (q.len() / hd, keys.len() / hd);
    let (scores, inv) = split(scratch, g, n);
    for (qh, row) in q.chunks_exact(hd).zip(scores.chunks_exact_mut(n)) {
        for (s, k) in row.iter_mut().zip(keys.chunks_exact(hd)) {
            *s = crate::dot(qh, k);
        }
    }
    softmax_rows(scores, n, score, inv);
    for (o, w) in out.chunks_exact_mut(hd).zip(scores.chunks_exact(n)) {
        o.fill(0.0);
        for (&w, v) in w.iter().zip(values.chunks_exact(hd)) {
            o.iter_mut().zip(v).for_each(|(a, &b)| *a += w * b);
        }
    }
    scale_rows(out, hd, inv);
}

/// Scores → unnormalised softmax weights in place (rows of `n`); writes each row's 1 / sum
/// into `inv`, applied to the (shorter) outputs instead.
#[inline(always)]
fn softmax_rows(scores: &mut [f32], n: usize, score: ScoreScale, inv: &mut [f32]) {
    for (row, inv) in scores.chunks_exact_mut(n).zip(inv) {
        match score.softcap {
            Some(cap) => row.iter_mut().for_each(|s| *s = (*s * score.scale / cap).tanh() * cap),
            None => row.iter_mut().for_each(|s| *s *= score.scale),
        }
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|s| *s = crate::math::exp(*s - max));
        // Sixteen partial sums, so the reduction vectorises.
        let mut part = [0f32; 16];
        let chunks = row.chunks_exact(16);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            part.iter_mut().zip(c).for_each(|(p, &s)| *p += s);
        }
        *inv = 1.0 / (part.iter().sum::<f32>() + tail);
    }
}

#[inline(always)]
fn scale_rows(out: &mut [f32], hd: usize, inv: &[f32]) {
    for (o, &i) in out.chunks_exact_mut(hd).zip(inv) {
        o.iter_mut().for_each(|v| *v *= i);
    }
}

/// New queries of one head: query `i` is `data[i · stride..][..head_dim]`, at position
/// `pos0 + i` of its sequence.
#[derive(Clone, Copy)]
pub struct Queries<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub count: usize,
    pub head_dim: usize,
    pub pos0: usize,
}

impl Queries<'_> {
    fn get(&self, i: usize) -> &[f32] {
        &self.data[i * self.stride..i * self.stride + self.head_dim]
    }
}

/// Buffers of [`attend_tiled`], reused between calls: scores, a query tile, the values
/// transposed, an output tile and one output row.
#[derive(Default)]
pub struct TiledScratch {
    scores: Vec<f32>,
    queries: Vec<f32>,
    values_t: Vec<f32>,
    out: Vec<f32>,
    row: Vec<f32>,
}

/// Attention of many new queries of one head against its KV head's cache (`keys` and `values`
/// `[positions, head_dim]`, holding at least the sequence's `pos0 + count` positions), sixteen
/// queries at a time: scores and outputs as products on the tiled float kernel. Calls
/// `emit(i, out)` with query `i`'s output (`head_dim` values).
pub fn attend_tiled(
    q: Queries<'_>,
    keys: &[f32],
    values: &[f32],
    mask: Mask,
    score: ScoreScale,
    scratch: &mut TiledScratch,
    mut emit: impl FnMut(usize, &[f32]),
) {
    let (hd, n, pos0) = (q.head_dim, q.count, q.pos0);
    let total = pos0 + n;
    assert!(keys.len() >= total * hd && values.len() >= total * hd, "attend_tiled shapes");
    // Values transposed to [head_dim][positions], the rows of the output product.
    scratch.values_t.resize(hd * total, 0.0);
    let vt = &mut scratch.values_t[..];
    for j in 0..total {
        for d in 0..hd {
            vt[d * total + j] = values[j * hd + d];
        }
    }
    scratch.queries.resize(hd * TILE, 0.0);
    scratch.out.resize(hd * TILE, 0.0);
    scratch.row.resize(hd, 0.0);
    for i0 in (0..n).step_by(TILE) {
        let lanes = TILE.min(n - i0);
        let qt = &mut scratch.queries[..];
        for lane in 0..TILE {
            let qv = q.get(i0 + lane.min(lanes - 1));
            for d in 0..hd {
                qt[d * TILE + lane] = if lane < lanes { qv[d] } else { 0.0 };
            }
        }
        let mut lo = [0usize; TILE];
        let mut hi = [0usize; TILE];
        for lane in 0..lanes {
            let visible = mask.visible(pos0 + i0 + lane, total);
            (lo[lane], hi[lane]) = (visible.start, visible.end);
        }
        // Scores for the keys up to the last one any lane sees (the last lane's, ends only grow).
        let len = hi[lanes - 1];
        scratch.scores.resize(len * TILE, 0.0);
        let sc = &mut scratch.scores[..len * TILE];
        rows_times_tile(keys, hd, len, qt, sc);
        // Lane-wise softmax over the visible keys; loops run over the 16 lanes innermost.
        let mut max = [f32::NEG_INFINITY; TILE];
        for (j, row) in sc.chunks_exact_mut(TILE).enumerate() {
            for lane in 0..TILE {
                let v = if j >= lo[lane] && j < hi[lane] { score.apply(row[lane]) } else { f32::NEG_INFINITY };
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
        let ot = &mut scratch.out[..];
        rows_times_tile(vt, total, hd, sc, ot);
        for lane in 0..lanes {
            for (d, o) in scratch.row.iter_mut().enumerate() {
                *o = ot[d * TILE + lane];
            }
            emit(i0 + lane, &scratch.row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Query heads handled per register pass: 4 heads × 4 keys (or column chunks) of
    /// accumulators fill half the register file.
    const HEADS: usize = 4;

    /// `scores[g · n + j] = q[g] · keys[j]`, four keys per step, reduced four at a time.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn dots(q: &[f32], keys: &[f32], hd: usize, scores: &mut [f32]) {
        let (heads, n) = (q.len() / hd, keys.len() / hd);
        for g0 in (0..heads).step_by(HEADS) {
            let (q, s) = (q[g0 * hd..].as_ptr(), scores[g0 * n..].as_mut_ptr());
            match (heads - g0).min(HEADS) {
                1 => dots_of::<1>(q, keys, hd, n, s),
                2 => dots_of::<2>(q, keys, hd, n, s),
                3 => dots_of::<3>(q, keys, hd, n, s),
                _ => dots_of::<4>(q, keys, hd, n, s),
            }
        }
    }

    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn dots_of<const G: usize>(q: *const f32, keys: &[f32], hd: usize, n: usize, scores: *mut f32) {
        let k = keys.as_ptr();
        let mut j = 0;
        while j + 4 <= n {
            let mut acc = [[_mm512_setzero_ps(); 4]; G];
            for c in (0..hd).step_by(16) {
                let kv: [__m512; 4] = std::array::from_fn(|i| _mm512_loadu_ps(k.add((j + i) * hd + c)));
                for (g, acc) in acc.iter_mut().enumerate() {
                    let qv = _mm512_loadu_ps(q.add(g * hd + c));
                    for i in 0..4 {
                        acc[i] = _mm512_fmadd_ps(qv, kv[i], acc[i]);
                    }
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                _mm_storeu_ps(scores.add(g * n + j), sum4(acc));
            }
            j += 4;
        }
        for j in j..n {
            for g in 0..G {
                let mut acc = _mm512_setzero_ps();
                for c in (0..hd).step_by(16) {
                    acc = _mm512_fmadd_ps(_mm512_loadu_ps(q.add(g * hd + c)), _mm512_loadu_ps(k.add(j * hd + c)), acc);
                }
                *scores.add(g * n + j) = _mm512_reduce_add_ps(acc);
            }
        }
    }

    /// The horizontal sums of four registers, as one.
    #[target_feature(enable = "avx512f,avx2")]
    #[inline]
    unsafe fn sum4(v: &[__m512; 4]) -> __m128 {
        // Within each 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], then [a, b, c, d] partials.
        let ab = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
        let cd = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
        let abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0b01_00_01_00), _mm512_shuffle_ps(ab, cd, 0b11_10_11_10));
        // Then across the four lanes.
        let halves = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
        _mm_add_ps(_mm256_castps256_ps128(halves), _mm256_extractf128_ps(halves, 1))
    }

    /// `out[g] = Σⱼ w[g · n + j] · values[j]`, four column chunks of 16 per pass where they fit.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn weighted_sums(w: &[f32], values: &[f32], hd: usize, out: &mut [f32]) {
        let (heads, n) = (out.len() / hd, values.len() / hd);
        for g0 in (0..heads).step_by(HEADS) {
            let (w, o) = (w[g0 * n..].as_ptr(), out[g0 * hd..].as_mut_ptr());
            let mut c = 0;
            while c < hd {
                let wide = hd - c >= 64;
                match ((heads - g0).min(HEADS), wide) {
                    (1, true) => sums_of::<1, 4>(w, values, hd, n, c, o),
                    (2, true) => sums_of::<2, 4>(w, values, hd, n, c, o),
                    (3, true) => sums_of::<3, 4>(w, values, hd, n, c, o),
                    (_, true) => sums_of::<4, 4>(w, values, hd, n, c, o),
                    (1, false) => sums_of::<1, 1>(w, values, hd, n, c, o),
                    (2, false) => sums_of::<2, 1>(w, values, hd, n, c, o),
                    (3, false) => sums_of::<3, 1>(w, values, hd, n, c, o),
                    (_, false) => sums_of::<4, 1>(w, values, hd, n, c, o),
                }
                c += if wide { 64 } else { 16 };
            }
        }
    }

    /// Columns `c..c + 16·C` of `G` heads' outputs.
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn sums_of<const G: usize, const C: usize>(w: *const f32, values: &[f32], hd: usize, n: usize, c: usize, out: *mut f32) {
        let v = values.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); C]; G];
        for j in 0..n {
            let vv: [__m512; C] = std::array::from_fn(|i| _mm512_loadu_ps(v.add(j * hd + c + 16 * i)));
            for (g, acc) in acc.iter_mut().enumerate() {
                let wj = _mm512_set1_ps(*w.add(g * n + j));
                for i in 0..C {
                    acc[i] = _mm512_fmadd_ps(wj, vv[i], acc[i]);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            for (i, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.add(g * hd + c + 16 * i), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(q: &[f32], keys: &[f32], values: &[f32], hd: usize, score: ScoreScale) -> Vec<f32> {
        let n = keys.len() / hd;
        let mut out = Vec::new();
        for qh in q.chunks_exact(hd) {
            let s: Vec<f64> = keys
                .chunks_exact(hd)
                .map(|k| {
                    let d = qh.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * score.scale as f64;
                    score.softcap.map_or(d, |cap| (d / cap as f64).tanh() * cap as f64)
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                out.push((0..n).map(|j| e[j] * values[j * hd + d] as f64).sum::<f64>() as f32 / sum as f32);
            }
        }
        out
    }

    /// Uniform values in [-0.5, 0.5) from a fixed seed.
    fn random(seed: u32) -> impl FnMut() -> f32 {
        let mut seed = seed;
        move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    #[test]
    fn masks_see_the_keys_transformers_masks_do() {
        let causal = |window| Mask { window, bidirectional: false };
        let both_ways = |window| Mask { window, bidirectional: true };
        assert_eq!(causal(None).visible(5, 10), 0..6);
        assert_eq!(causal(Some(4)).visible(5, 10), 2..6);
        assert_eq!(causal(Some(4)).visible(1, 10), 0..2);
        assert_eq!(both_ways(None).visible(5, 10), 0..10);
        assert_eq!(both_ways(Some(4)).visible(5, 10), 2..9);
        assert_eq!(both_ways(Some(4)).visible(8, 10), 5..10);
    }

    #[test]
    fn matches_a_double_precision_reference_for_every_group_and_head_size() {
        let mut rnd = random(7);
        let mut scratch = Vec::new();
        for hd in [16, 64, 80, 128] {
            for heads in [1, 2, 3, 4, 5, 7, 8] {
                for n in [1, 3, 4, 9, 130] {
                    for softcap in [None, Some(2.0)] {
                        let score = ScoreScale { scale: 1.0 / (hd as f32).sqrt() * 3.0, softcap };
                        let q: Vec<f32> = (0..heads * hd).map(|_| rnd()).collect();
                        let keys: Vec<f32> = (0..n * hd).map(|_| rnd() * 4.0).collect();
                        let values: Vec<f32> = (0..n * hd).map(|_| rnd()).collect();
                        let want = reference(&q, &keys, &values, hd, score);
                        let mut fast = vec![0f32; heads * hd];
                        attend_group(&q, &keys, &values, hd, score, &mut scratch, &mut fast);
                        let mut plain = vec![0f32; heads * hd];
                        portable(&q, &keys, &values, hd, score, &mut vec![0.0; heads * n + heads], &mut plain);
                        for ((a, p), b) in fast.iter().zip(&plain).zip(&want) {
                            assert!((a - b).abs() < 2e-5 && (p - b).abs() < 2e-5, "hd {hd}, heads {heads}, n {n}: {a}, {p} vs {b}");
                        }
                    }
                }
            }
        }
    }

    /// Each of many new queries (a partial last tile, behind a cached prefix, causal or
    /// bidirectional, with and without a sliding window and soft-capping) against the reference
    /// over the keys it sees.
    #[test]
    fn tiled_attention_matches_the_reference_per_query() {
        let mut rnd = random(11);
        let mut scratch = TiledScratch::default();
        for hd in [16, 64, 80] {
            for (pos0, count) in [(0, 8), (0, 37), (21, 16), (5, 50)] {
                for mask in [None, Some(9)].into_iter().flat_map(|window| [false, true].map(|bidirectional| Mask { window, bidirectional }))
                {
                    for softcap in [None, Some(2.0)] {
                        let score = ScoreScale { scale: 1.0 / (hd as f32).sqrt() * 3.0, softcap };
                        // Queries of several heads interleaved, as in a layer's buffer; this is head 1.
                        let stride = 3 * hd;
                        let data: Vec<f32> = (0..count * stride).map(|_| rnd()).collect();
                        let capacity = pos0 + count + 4;
                        let keys: Vec<f32> = (0..capacity * hd).map(|_| rnd() * 4.0).collect();
                        let values: Vec<f32> = (0..capacity * hd).map(|_| rnd()).collect();
                        let q = Queries { data: &data[hd..], stride, count, head_dim: hd, pos0 };
                        let mut seen = 0;
                        attend_tiled(q, &keys, &values, mask, score, &mut scratch, |i, out| {
                            let visible = mask.visible(pos0 + i, pos0 + count);
                            let visible = visible.start * hd..visible.end * hd;
                            let want = reference(q.get(i), &keys[visible.clone()], &values[visible], hd, score);
                            for (a, b) in out.iter().zip(&want) {
                                assert!((a - b).abs() < 2e-5, "hd {hd}, pos0 {pos0}, query {i}, {mask:?}: {a} vs {b}");
                            }
                            seen += 1;
                        });
                        assert_eq!(seen, count);
                    }
                }
            }
        }
    }
}

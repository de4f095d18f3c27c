//! Attention against a sequence's cached keys and values, with one arithmetic for every
//! query: a query's output is the same bits whether it is computed alone (decoding), beside the
//! other query heads of its KV head, or among hundreds of prompt positions (prefill), and
//! whether the keys before it were cached by an earlier request or computed in this pass.
//! Batched and cached generation then reproduce a sequence decoded alone.
//!
//! Keys are stored in tiles of 16 positions (`[tile][head_dim][16]`), so the scores of a few
//! queries or of many are the same product ([`rows_times_tile`]: queries as rows, a key tile as
//! the lanes), and the outputs are the softmax weights as rows against the values' columns.
//! Each sum runs in an order fixed by absolute positions; keys a query does not see enter the
//! products with weight zero, which changes no bits.

use std::ops::Range;

use crate::gemm::{rows_times_tile, TILE};
use crate::math::exp;

/// Positions per key tile.
pub const KEY_TILE: usize = TILE;
/// Queries attended together at most (their scores stay in L1).
const QUERY_BLOCK: usize = 16;

/// Scaling of the raw query·key products before the softmax.
#[derive(Clone, Copy, Debug)]
pub struct ScoreScale {
    pub scale: f32,
    /// Gemma 2's `tanh(s / cap) · cap`.
    pub softcap: Option<f32>,
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

/// Queries of one head attending together: query `i` is `data[i · stride..][..head_dim]`.
#[derive(Clone, Copy)]
pub struct Queries<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub count: usize,
    pub head_dim: usize,
    pub positions: Positions,
}

/// Where the queries sit in their sequence.
#[derive(Clone, Copy, Debug)]
pub enum Positions {
    /// All at one position: the query heads sharing a KV head, for one new token.
    Same(usize),
    /// Query `i` at position `first + i`: one head of consecutive new tokens.
    From(usize),
}

impl Queries<'_> {
    #[cfg(test)]
    fn get(&self, i: usize) -> &[f32] {
        &self.data[i * self.stride..i * self.stride + self.head_dim]
    }

    fn position(&self, i: usize) -> usize {
        match self.positions {
            Positions::Same(p) => p,
            Positions::From(p) => p + i,
        }
    }
}

/// One KV head's cache: keys in tiles (`[tile][head_dim][16]`, see [`key_slot`]), values by
/// position (`[position][head_dim]`); `len` positions are stored.
#[derive(Clone, Copy)]
pub struct KvHead<'a> {
    pub key_tiles: &'a [f32],
    pub values: &'a [f32],
    pub len: usize,
}

/// Where the key of `position`, element `d`, lives among a head's key tiles.
#[inline]
pub fn key_slot(position: usize, d: usize, head_dim: usize) -> usize {
    (position / KEY_TILE * head_dim + d) * KEY_TILE + position % KEY_TILE
}

/// Buffers of [`attend`], reused between calls: a query block's scores, its outputs, and the
/// padded last columns of the values (head sizes that are not a multiple of 16).
#[derive(Default)]
pub struct Scratch {
    scores: Vec<f32>,
    out: Vec<f32>,
    values: Vec<f32>,
}

/// `softmax(score(q · Kⱼ)) · V` over the keys [`Mask::visible`] gives each query; calls
/// `emit(i, out)` with query `i`'s output (`head_dim` values).
pub fn attend(q: Queries<'_>, kv: KvHead<'_>, mask: Mask, score: ScoreScale, scratch: &mut Scratch, mut emit: impl FnMut(usize, &[f32])) {
    let hd = q.head_dim;
    let tiles_stored = kv.len.div_ceil(KEY_TILE);
    assert!(kv.key_tiles.len() >= tiles_stored * hd * KEY_TILE && kv.values.len() >= kv.len * hd, "attend: cache shapes");
    for b0 in (0..q.count).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(q.count - b0);
        let visible: [Range<usize>; QUERY_BLOCK] =
            std::array::from_fn(|r| if r < rows { mask.visible(q.position(b0 + r), kv.len) } else { 0..0 });
        let visible = &visible[..rows];
        // The key tiles any query of the block sees; a tile boundary is an even position, so
        // the output sums' chains (even and odd positions) are the same for every block.
        let first = visible.iter().map(|v| v.start).min().unwrap() / KEY_TILE * KEY_TILE;
        let end = visible.iter().map(|v| v.end).max().unwrap();
        let width = end.div_ceil(KEY_TILE) * KEY_TILE - first;
        assert!(end <= kv.len, "attend: a query sees past the cache");
        scratch.scores.resize(rows * width, 0.0);
        let scores = &mut scratch.scores[..rows * width];
        let q_rows = &q.data[b0 * q.stride..];
        for t in 0..width / KEY_TILE {
            let tile = &kv.key_tiles[((first / KEY_TILE + t) * hd) * KEY_TILE..];
            rows_times_tile(q_rows, q.stride, rows, tile, KEY_TILE, KEY_TILE, hd, &mut scores[t * KEY_TILE..], width);
        }
        let mut inv = [0f32; QUERY_BLOCK];
        crate::math::wide(|| {
            for ((row, v), inv) in scores.chunks_exact_mut(width).zip(visible).zip(&mut inv) {
                *inv = softmax(row, v.start - first..v.end - first, score);
            }
        });
        // Outputs: the weights as rows against the values' columns (a head size that is not a
        // multiple of 16 has its last columns go through a padded copy).
        let depth = end - first;
        let out_stride = hd.next_multiple_of(TILE);
        scratch.out.resize(rows * out_stride, 0.0);
        let values = &kv.values[first * hd..end * hd];
        let whole = hd / TILE * TILE;
        rows_times_tile(scores, width, rows, values, hd, whole, depth, &mut scratch.out, out_stride);
        if whole < hd {
            scratch.values.clear();
            scratch
                .values
                .extend((0..depth).flat_map(|j| (whole..whole + TILE).map(move |d| if d < hd { values[j * hd + d] } else { 0.0 })));
            rows_times_tile(scores, width, rows, &scratch.values, TILE, TILE, depth, &mut scratch.out[whole..], out_stride);
        }
        for (r, (out, inv)) in scratch.out.chunks_exact_mut(out_stride).zip(inv).take(rows).enumerate() {
            let out = &mut out[..hd];
            out.iter_mut().for_each(|o| *o *= inv);
            emit(b0 + r, out);
        }
    }
}

/// Raw scores → unnormalised softmax weights in place for the keys `seen` of `row` (whose index
/// 0 is a tile boundary, and whose length is whole tiles), every other key's weight 0; returns
/// 1 / their sum, which scales the (shorter) output instead. The sum runs in sixteen partial
/// sums picked by position, so it does not depend on where the row starts. Each pass is a
/// plain loop over the row, which the compiler vectorises.
#[inline(always)]
fn softmax(row: &mut [f32], seen: Range<usize>, score: ScoreScale) -> f32 {
    let scores = &mut row[seen.clone()];
    match score.softcap {
        Some(cap) => scores.iter_mut().for_each(|s| *s = (*s * score.scale / cap).tanh() * cap),
        None => scores.iter_mut().for_each(|s| *s *= score.scale),
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    scores.iter_mut().for_each(|s| *s = exp(*s - max));
    row[..seen.start].fill(0.0);
    row[seen.end..].fill(0.0);
    // Unseen keys add zeros, which change no partial sum.
    let mut part = [0f32; KEY_TILE];
    for chunk in row.chunks_exact(KEY_TILE) {
        part.iter_mut().zip(chunk).for_each(|(p, &w)| *p += w);
    }
    1.0 / part.iter().sum::<f32>()
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

    /// Keys by position (`[n][hd]`) laid out in tiles, as a cache stores them.
    fn tiles(keys: &[f32], hd: usize) -> Vec<f32> {
        let n = keys.len() / hd;
        let mut t = vec![0f32; n.div_ceil(KEY_TILE) * KEY_TILE * hd];
        for j in 0..n {
            for d in 0..hd {
                t[key_slot(j, d, hd)] = keys[j * hd + d];
            }
        }
        t
    }

    fn masks() -> impl Iterator<Item = Mask> {
        [None, Some(9)].into_iter().flat_map(|window| [false, true].map(|bidirectional| Mask { window, bidirectional }))
    }

    /// The query heads of one new token against the reference, for every group and head size.
    #[test]
    fn a_group_of_heads_matches_a_double_precision_reference() {
        let mut rnd = random(7);
        let mut scratch = Scratch::default();
        for hd in [8, 16, 64, 80, 128] {
            for heads in [1, 2, 3, 5, 8] {
                for n in [1, 3, 4, 9, 130] {
                    for softcap in [None, Some(2.0)] {
                        let score = ScoreScale { scale: 1.0 / (hd as f32).sqrt() * 3.0, softcap };
                        let q: Vec<f32> = (0..heads * hd).map(|_| rnd()).collect();
                        let keys: Vec<f32> = (0..n * hd).map(|_| rnd() * 4.0).collect();
                        let values: Vec<f32> = (0..n * hd).map(|_| rnd()).collect();
                        let want = reference(&q, &keys, &values, hd, score);
                        let key_tiles = tiles(&keys, hd);
                        let kv = KvHead { key_tiles: &key_tiles, values: &values, len: n };
                        let queries = Queries { data: &q, stride: hd, count: heads, head_dim: hd, positions: Positions::Same(n - 1) };
                        let mask = Mask { window: None, bidirectional: false };
                        attend(queries, kv, mask, score, &mut scratch, |i, out| {
                            for (a, b) in out.iter().zip(&want[i * hd..]) {
                                assert!((a - b).abs() < 2e-5, "hd {hd}, heads {heads}, n {n}: {a} vs {b}");
                            }
                        });
                    }
                }
            }
        }
    }

    /// Each of many new queries (partial blocks, behind a cached prefix, causal or
    /// bidirectional, with and without a sliding window and soft-capping) against the reference
    /// over the keys it sees, and bit for bit the output it gets attending alone.
    #[test]
    fn many_queries_match_the_reference_and_each_query_alone() {
        let mut rnd = random(11);
        let (mut scratch, mut alone) = (Scratch::default(), Scratch::default());
        for hd in [16, 64, 80] {
            for (pos0, count) in [(0, 8), (0, 37), (21, 16), (5, 50)] {
                for mask in masks() {
                    for softcap in [None, Some(2.0)] {
                        let score = ScoreScale { scale: 1.0 / (hd as f32).sqrt() * 3.0, softcap };
                        // Queries of several heads interleaved, as in a layer's buffer; this is head 1.
                        let stride = 3 * hd;
                        let data: Vec<f32> = (0..count * stride).map(|_| rnd()).collect();
                        let len = pos0 + count;
                        let keys: Vec<f32> = (0..(len + 4) * hd).map(|_| rnd() * 4.0).collect();
                        let values: Vec<f32> = (0..(len + 4) * hd).map(|_| rnd()).collect();
                        let key_tiles = tiles(&keys, hd);
                        let kv = KvHead { key_tiles: &key_tiles, values: &values, len };
                        let q = Queries { data: &data[hd..], stride, count, head_dim: hd, positions: Positions::From(pos0) };
                        let mut seen = 0;
                        attend(q, kv, mask, score, &mut scratch, |i, out| {
                            let visible = mask.visible(pos0 + i, len);
                            let rows = visible.start * hd..visible.end * hd;
                            let want = reference(q.get(i), &keys[rows.clone()], &values[rows], hd, score);
                            for (a, b) in out.iter().zip(&want) {
                                assert!((a - b).abs() < 2e-5, "hd {hd}, pos0 {pos0}, query {i}, {mask:?}: {a} vs {b}");
                            }
                            let one = Queries { data: q.get(i), stride: hd, count: 1, head_dim: hd, positions: Positions::Same(pos0 + i) };
                            attend(one, kv, mask, score, &mut alone, |_, single| {
                                assert!(
                                    single.iter().zip(out).all(|(a, b)| a.to_bits() == b.to_bits()),
                                    "hd {hd}, pos0 {pos0}, query {i}, {mask:?}: alone differs from in a block"
                                )
                            });
                            seen += 1;
                        });
                        assert_eq!(seen, count);
                    }
                }
            }
        }
    }
}

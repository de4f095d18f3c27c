//! 8-bit products for CPUs with AVX2 but no 8-bit dot product (no VNNI): an encoder's float
//! weights quantised at load and its activations as they arrive, both by [`quantize_q8`] (a
//! scale per block of 32 columns; one scale per whole row or token loses too much on BERT's
//! outlier features: cosine 0.992 on all-MiniLM). Both are held as 16-bit
//! integers and multiplied pairwise by `vpmaddwd`, 16 products per instruction where an f32
//! FMA makes 8, with exact 32-bit sums inside a block and one scaled, fused add per block.
//! (The panels of [`crate::panels`] use the sign trick for signed weights on AVX2 and run
//! slower than the float GEMM there.)
//!
//! Weights are stored as 16-row panels, column pairs outermost (`[panel][pair][16 rows][2]`,
//! one byte each), so a 16-byte load widened to 16-bit lanes is eight rows' pair; the output
//! is `[token][row]`, as the bf16 panels lay it out.

#[cfg(target_arch = "x86_64")]
use std::cell::RefCell;

use hearth_formats::gguf::GgmlType;

use crate::act::{quantize_q8, Q8Block};
use crate::panels::QuantPanels;
#[cfg(target_arch = "x86_64")]
use crate::pool::{self, SharedPtr};
use crate::quant::quantize_ggml;
use crate::{MatrixRef, RowFormat};

/// Rows per panel: two 256-bit registers of i32 sums.
const PANEL: usize = 16;
/// Tokens per kernel call: twelve accumulators, two weight registers and a broadcast.
#[cfg(target_arch = "x86_64")]
const TOKENS: usize = 6;
/// Tokens per task: their 16-bit activations stay in L2 while the task's panels pass over
/// them, and each panel (16 rows × the depth, in bytes) stays in L1 across them.
#[cfg(target_arch = "x86_64")]
const TOKENS_PER_TASK: usize = 48;
/// Tasks worth splitting a product into, so a short input still keeps every thread busy.
#[cfg(target_arch = "x86_64")]
const MIN_TASKS: usize = 8;
/// Columns per scale.
const BLOCK: usize = 32;
/// Column pairs per scale.
const BLOCK_PAIRS: usize = BLOCK / 2;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The caller's activations: per token its blocks, and their values widened to i16 pairs.
    static ACTS: RefCell<(Vec<Q8Block>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// One kernel call's tokens: each one's 16-bit activation pairs, quantised blocks (for their
/// scales) and output row; the first `n` are real.
#[cfg(target_arch = "x86_64")]
struct Tokens {
    x: [*const u32; TOKENS],
    scales: [*const Q8Block; TOKENS],
    out: [*mut f32; TOKENS],
    n: usize,
}

/// A float matrix as 8-bit panels with a scale per row and block, for
/// [`Int8Panels::matmul`] (built only on x86-64 CPUs running AVX2 without VNNI; elsewhere the
/// type exists but is never made).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Int8Panels {
    rows: usize,
    cols: usize,
    /// Blocks per row (the last one padded with zeros).
    blocks: usize,
    /// `[panel][pair][16 rows][2 columns]`; rows past `rows` are zero.
    data: Vec<i8>,
    /// `[panel][block][16 rows]`: `max |w| / 127` over the block.
    scales: Vec<f32>,
}

impl Int8Panels {
    /// Quantises `w` (any format, de-quantised exactly first); `None` where this CPU has an
    /// 8-bit dot product or no AVX2 (the block-scaled panels of [`crate::panels`] serve
    /// those), or the rows are not whole blocks.
    pub fn new(w: &MatrixRef<'_>) -> Option<Self> {
        Self::quantised(w).filter(|_| supported())
    }

    fn quantised(w: &MatrixRef<'_>) -> Option<Self> {
        let (rows, cols) = (w.rows(), w.cols());
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let blocks = cols / BLOCK;
        let (pairs, panels) = (blocks * BLOCK_PAIRS, rows.div_ceil(PANEL));
        let mut data = vec![0i8; panels * pairs * PANEL * 2];
        let mut scales = vec![0f32; panels * blocks * PANEL];
        let (mut row, mut q) = (vec![0f32; cols], vec![Q8Block::default(); blocks]);
        for r in 0..rows {
            w.row(r, &mut row);
            quantize_q8(&row, &mut q);
            let (panel, lane) = (r / PANEL, r % PANEL);
            for (b, q) in q.iter().enumerate() {
                scales[(panel * blocks + b) * PANEL + lane] = q.d;
                for (i, v) in q.qs.chunks_exact(2).enumerate() {
                    let v = [v[0], v[1]];
                    data[((panel * pairs + b * BLOCK_PAIRS + i) * PANEL + lane) * 2..][..2].copy_from_slice(&v);
                }
            }
        }
        Some(Int8Panels { rows, cols, blocks, data, scales })
    }

    #[cfg_attr(not(any(target_arch = "x86_64", test)), allow(dead_code))]
    fn pairs(&self) -> usize {
        self.blocks * BLOCK_PAIRS
    }

    /// `out[t · rows + r] = bias[r] + Σ_blocks s_tb · s_rb · Σ_c q(x[t, c]) · q(W[r, c])` for
    /// `m = x.len() / cols` tokens, on the pool.
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let m = x.len() / self.cols;
        assert!(x.len() == m * self.cols && out.len() == m * self.rows, "int8 matmul shapes");
        assert!(bias.is_none_or(|b| b.len() == self.rows), "int8 matmul bias length");
        if m == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        self.matmul_x86(x, bias, out, m);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("int8 panels are built only where supported() holds");
    }

    #[cfg(target_arch = "x86_64")]
    fn matmul_x86(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize) {
        let (cols, pairs, blocks) = (self.cols, self.pairs(), self.blocks);
        ACTS.with_borrow_mut(|(scales, acts)| {
            scales.resize(m * blocks, Q8Block::default());
            acts.resize(m * pairs, 0);
            let (scale_ptr, act_ptr) = (SharedPtr(scales.as_mut_ptr()), SharedPtr(acts.as_mut_ptr()));
            pool::global().run(m.div_ceil(TOKENS_PER_TASK), &|task| {
                for t in task * TOKENS_PER_TASK..((task + 1) * TOKENS_PER_TASK).min(m) {
                    // SAFETY: each task writes only its own tokens' entries.
                    let (q, row) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(scale_ptr.get().add(t * blocks), blocks),
                            std::slice::from_raw_parts_mut(act_ptr.get().add(t * pairs).cast::<i16>(), 2 * pairs),
                        )
                    };
                    quantize_q8(&x[t * cols..(t + 1) * cols], q);
                    for (o, b) in row.chunks_exact_mut(32).zip(q.iter()) {
                        o.iter_mut().zip(&b.qs).for_each(|(o, &v)| *o = v.into());
                    }
                }
            });
            let (scales, acts) = (&scales[..], &acts[..]);
            let groups = m.div_ceil(TOKENS_PER_TASK);
            let panels = self.rows.div_ceil(PANEL);
            let splits = MIN_TASKS.div_ceil(groups).min(panels);
            let out = SharedPtr(out.as_mut_ptr());
            pool::global().run(groups * splits, &|task| {
                let (group, split) = (task / splits, task % splits);
                let tokens = group * TOKENS_PER_TASK..((group + 1) * TOKENS_PER_TASK).min(m);
                // Each call's token pointers, worked out once for all the task's panels.
                let calls: [Tokens; TOKENS_PER_TASK / TOKENS] =
                    std::array::from_fn(|i| self.tokens(acts, scales, tokens.start + i * TOKENS, tokens.end, out));
                let calls = &calls[..tokens.len().div_ceil(TOKENS)];
                for p in split * panels / splits..(split + 1) * panels / splits {
                    for call in calls {
                        // SAFETY: the task owns these tokens' columns of this panel in `out`;
                        // every pointer stays inside its buffer; `supported()` held at build.
                        unsafe { self.block(call, bias, p) };
                    }
                }
            });
        })
    }

    /// Tokens `t0..(t0 + TOKENS).min(end)` for one kernel call (none where `t0 ≥ end`).
    #[cfg(target_arch = "x86_64")]
    fn tokens(&self, acts: &[u32], scales: &[Q8Block], t0: usize, end: usize, out: SharedPtr<f32>) -> Tokens {
        // Missing tokens of a short call repeat the last one; only real tokens are stored.
        let token = |i: usize| (t0 + i).min(end - 1);
        let n = TOKENS.min(end.saturating_sub(t0));
        Tokens {
            x: std::array::from_fn(|i| acts[token(i) * self.pairs()..].as_ptr()),
            scales: std::array::from_fn(|i| scales[token(i) * self.blocks..].as_ptr()),
            out: std::array::from_fn(|i| out.get().wrapping_add(token(i) * self.rows)),
            n,
        }
    }

    /// Panel `p` against one call's tokens.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `call` was made by [`Int8Panels::tokens`] for this
    /// matrix, its output rows owned by the caller.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block(&self, call: &Tokens, bias: Option<&[f32]>, p: usize) {
        let pairs = self.pairs();
        let lanes = (self.rows - p * PANEL).min(PANEL);
        x86::panel(
            self.data[p * pairs * PANEL * 2..].as_ptr(),
            self.scales[p * self.blocks * PANEL..].as_ptr(),
            call,
            self.blocks,
            bias.map(|b| &b[p * PANEL..p * PANEL + lanes]),
            p * PANEL,
            lanes,
        );
    }

    /// The same products computed one at a time: the reference the kernel must equal bit
    /// for bit.
    #[cfg(test)]
    fn matmul_reference(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let (pairs, blocks) = (self.pairs(), self.blocks);
        let mut q = vec![Q8Block::default(); blocks];
        for (t, x) in x.chunks_exact(self.cols).enumerate() {
            quantize_q8(x, &mut q);
            for r in 0..self.rows {
                let (panel, lane) = (r / PANEL, r % PANEL);
                let mut acc = bias.map_or(0.0, |b| b[r]);
                for (b, qb) in q.iter().enumerate() {
                    let sum: i32 = (0..BLOCK_PAIRS)
                        .map(|i| {
                            let w = &self.data[((panel * pairs + b * BLOCK_PAIRS + i) * PANEL + lane) * 2..][..2];
                            i32::from(w[0]) * i32::from(qb.qs[2 * i]) + i32::from(w[1]) * i32::from(qb.qs[2 * i + 1])
                        })
                        .sum();
                    acc = (sum as f32).mul_add(qb.d * self.scales[(panel * blocks + b) * PANEL + lane], acc);
                }
                out[t * self.rows + r] = acc;
            }
        }
    }
}

/// A matrix quantised to 8 bits per block of 32 columns at load, for the fastest 8-bit product
/// this CPU runs with 8-bit activations: the 16-bit lanes above on AVX2 without VNNI, Q8_0
/// (llama.cpp's 8-bit blocks) in the integer kernels' panels everywhere else.
pub enum Int8Weights {
    Lanes16(Int8Panels),
    Q8Panels(QuantPanels),
}

impl Int8Weights {
    /// `w` in any format, de-quantised exactly and quantised again; `None` where its rows are
    /// not whole blocks.
    pub fn new(w: &MatrixRef<'_>) -> Option<Self> {
        if let Some(panels) = Int8Panels::new(w) {
            return Some(Int8Weights::Lanes16(panels));
        }
        let format = RowFormat::Ggml(GgmlType::Q8_0);
        let row_bytes = format.row_bytes(w.cols()).ok()?;
        let (mut row, mut bytes) = (vec![0f32; w.cols()], Vec::with_capacity(w.rows() * row_bytes));
        for r in 0..w.rows() {
            w.row(r, &mut row);
            quantize_ggml(GgmlType::Q8_0, &row, &mut bytes);
        }
        let q = MatrixRef::new(format, w.rows(), w.cols(), &bytes, &[], &[]).expect("whole Q8_0 rows");
        QuantPanels::new(&q, |_| {}).map(Int8Weights::Q8Panels)
    }

    /// `out[t · rows + r] = bias[r] + Σ_c x[t · cols + c] · W[r, c]`, both sides 8-bit.
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        match self {
            Int8Weights::Lanes16(panels) => panels.matmul(x, bias, out),
            Int8Weights::Q8Panels(panels) => {
                panels.matmul(x, out);
                if let Some(bias) = bias {
                    out.chunks_exact_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b));
                }
            }
        }
    }
}

/// Whether this CPU runs AVX2 without an 8-bit dot product (the instruction set in use, which
/// `HEARTH_ISA` may force).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::qdot::isa().kind == crate::qdot::IsaKind::Avx2 && std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Tokens, BLOCK_PAIRS, PANEL, TOKENS};

    /// One panel of 16 rows against up to six tokens: per block, exact i32 sums of
    /// `vpmaddwd` products, then `acc += sum · (token scale · row scale)`, fused; from the
    /// bias, stored to each real token's output row from column `col` (`lanes` of them).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the panel holds `blocks` blocks of values and scales,
    /// each token as many values and quantised blocks; every output row and the bias have
    /// room for `lanes` floats from `col` (the bias from 0).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panel(
        w: *const i8,
        w_scales: *const f32,
        tokens: &Tokens,
        blocks: usize,
        bias: Option<&[f32]>,
        col: usize,
        lanes: usize,
    ) {
        let Tokens { x, scales: x_blocks, .. } = *tokens;
        let index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let masks: [__m256i; 2] =
            std::array::from_fn(|h| _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes.saturating_sub(8 * h).min(8) as i32), index));
        let init: [__m256; 2] = match bias {
            Some(b) => std::array::from_fn(|h| _mm256_maskload_ps(b.as_ptr().wrapping_add(8 * h), masks[h])),
            None => [_mm256_setzero_ps(); 2],
        };
        let mut out = [init; TOKENS];
        for b in 0..blocks {
            let mut acc = [[_mm256_setzero_si256(); 2]; TOKENS];
            for p in b * BLOCK_PAIRS..(b + 1) * BLOCK_PAIRS {
                let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(p * 2 * PANEL).cast()));
                let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(w.add(p * 2 * PANEL + PANEL).cast()));
                for t in 0..TOKENS {
                    let xt = _mm256_set1_epi32(*x[t].add(p) as i32);
                    acc[t][0] = _mm256_add_epi32(acc[t][0], _mm256_madd_epi16(xt, w0));
                    acc[t][1] = _mm256_add_epi32(acc[t][1], _mm256_madd_epi16(xt, w1));
                }
            }
            let ws = [_mm256_loadu_ps(w_scales.add(b * PANEL)), _mm256_loadu_ps(w_scales.add(b * PANEL + 8))];
            for t in 0..TOKENS {
                let xs = _mm256_set1_ps((*x_blocks[t].add(b)).d);
                for h in 0..2 {
                    out[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[t][h]), _mm256_mul_ps(xs, ws[h]), out[t][h]);
                }
            }
        }
        for (t, &d) in tokens.out[..tokens.n].iter().enumerate() {
            for h in 0..2 {
                _mm256_maskstore_ps(d.add(col + 8 * h), masks[h], out[t][h]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;
    use crate::{FloatFormat, RowFormat};

    fn matrix(bytes: &[u8], rows: usize, cols: usize) -> MatrixRef<'_> {
        MatrixRef::new(RowFormat::Float(FloatFormat::F32), rows, cols, bytes, &[], &[]).unwrap()
    }

    #[test]
    fn the_kernel_equals_the_reference_and_stays_near_the_float_product_at_awkward_shapes() {
        // Rows of whole blocks only.
        assert!(Int8Panels::quantised(&matrix(&[0; 4 * 7], 1, 7)).is_none());
        for (rows, cols, m) in [(1, 32, 1), (17, 32, 5), (40, 384, 13), (33, 1536, 50), (384, 96, 97)] {
            let w = values(rows * cols, 1);
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let panels = Int8Panels::quantised(&matrix(&bytes, rows, cols)).unwrap();
            let mut x = values(m * cols, 2);
            x[..cols].fill(0.0); // a zero token has scale 0: its outputs are the bias
            let bias = values(rows, 3);
            let mut want = vec![0f32; m * rows];
            panels.matmul_reference(&x, Some(&bias), &mut want);
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut got = vec![f32::NAN; m * rows];
                panels.matmul(&x, Some(&bias), &mut got);
                assert_eq!(got, want, "{rows}×{cols}, {m} tokens");
            }
            for t in 0..m {
                for r in 0..rows {
                    let exact: f32 = (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum::<f32>() + bias[r];
                    // Two roundings of at most half a step each, per product.
                    let tol = cols as f32 / 127.0 + 1e-5;
                    assert!((want[t * rows + r] - exact).abs() <= tol, "{rows}×{cols} token {t} row {r}");
                }
            }
        }
    }
}

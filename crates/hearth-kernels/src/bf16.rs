//! Float weights repacked for bfloat16 dot products (AVX-512 BF16's `vdpbf16ps`): weights and
//! activations are rounded to bf16 and their products summed in f32, at twice the multiply
//! rate of f32 FMAs. For embedding encoders, whose normalised outputs tolerate bf16 inputs
//! (all-MiniLM's cosine similarity to float32 stays ≥ 0.99997); the LLM paths keep f32
//! activations.
//!
//! The output layout decides the packing: results are `[token][row]`, so a register holds 16
//! consecutive rows of one token. Weights are stored as 16-row panels, column pairs outermost
//! (`[panel][pair][16 rows]`, one bf16 pair per u32), and each token's activation pair is
//! broadcast against a whole panel. Nothing is packed or transposed per call except the
//! activations' conversion to bf16, and every result is stored straight into place.

#[cfg(target_arch = "x86_64")]
use std::cell::RefCell;

use half::bf16;

#[cfg(target_arch = "x86_64")]
use crate::pool::{self, SharedPtr};
use crate::MatrixRef;

/// Rows per panel: one 512-bit register of f32 results.
const PANEL: usize = 16;
/// Tokens per kernel call; with two panels per call, sixteen accumulators.
#[cfg(target_arch = "x86_64")]
const TOKENS: usize = 8;
#[cfg(target_arch = "x86_64")]
/// Tokens per task: their bf16 activations stay in L2 while the task's panels pass over them.
const TOKENS_PER_TASK: usize = 64;
#[cfg(target_arch = "x86_64")]
/// Tasks worth splitting a product into, so a short input still keeps every thread busy.
const MIN_TASKS: usize = 8;

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// The caller's activations as bf16 pairs, `[token][pair]`.
    static ACTS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// A float matrix as bf16 panels, for [`Bf16Panels::matmul`] (built only on x86-64 CPUs with
/// AVX-512 BF16; elsewhere the type exists but is never made).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub struct Bf16Panels {
    rows: usize,
    cols: usize,
    /// Column pairs per row: `cols` rounded up to even, halved (an odd last column pairs
    /// with zero).
    pairs: usize,
    /// `[panel][pair][16 rows]`; rows past `rows` are zero.
    data: Vec<u32>,
}

/// Two bf16 values as one u32, `lo` in the low half (the order `vdpbf16ps` pairs them in).
fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(bf16::from_f32(lo).to_bits()) | u32::from(bf16::from_f32(hi).to_bits()) << 16
}

impl Bf16Panels {
    /// Repacks `w` (any format, de-quantised exactly, then rounded to nearest bf16); `None`
    /// where the CPU has no bf16 dot product.
    pub fn new(w: &MatrixRef<'_>) -> Option<Self> {
        if !supported() {
            return None;
        }
        let (rows, cols) = (w.rows(), w.cols());
        let pairs = cols.div_ceil(2);
        let panels = rows.div_ceil(PANEL);
        let mut data = vec![0u32; panels * pairs * PANEL];
        let mut row = vec![0f32; pairs * 2];
        for r in 0..rows {
            w.row(r, &mut row[..cols]);
            let (panel, lane) = (r / PANEL, r % PANEL);
            for (p, v) in row.chunks_exact(2).enumerate() {
                data[(panel * pairs + p) * PANEL + lane] = pair(v[0], v[1]);
            }
        }
        Some(Bf16Panels { rows, cols, pairs, data })
    }

    /// `out[t · rows + r] = bias[r] + Σ_c bf16(x[t · cols + c]) · bf16(W[r, c])` for
    /// `m = x.len() / cols` tokens, on the pool.
    pub fn matmul(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let m = x.len() / self.cols;
        assert!(x.len() == m * self.cols && out.len() == m * self.rows, "bf16 matmul shapes");
        assert!(bias.is_none_or(|b| b.len() == self.rows), "bf16 matmul bias length");
        if m == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        self.matmul_x86(x, bias, out, m);
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("bf16 panels are built only where supported() holds");
    }

    #[cfg(target_arch = "x86_64")]
    fn matmul_x86(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize) {
        let (rows, cols, pairs) = (self.rows, self.cols, self.pairs);
        ACTS.with_borrow_mut(|acts| {
            acts.resize(m * pairs, 0);
            let dst = SharedPtr(acts.as_mut_ptr());
            pool::global().run(m.div_ceil(TOKENS_PER_TASK), &|task| {
                for t in task * TOKENS_PER_TASK..((task + 1) * TOKENS_PER_TASK).min(m) {
                    // SAFETY: each task writes only its own tokens' rows; `supported()` held
                    // when `self` was built.
                    unsafe {
                        let row = std::slice::from_raw_parts_mut(dst.get().add(t * pairs), pairs);
                        x86::to_pairs(&x[t * cols..(t + 1) * cols], row);
                    }
                }
            });
            let acts = &acts[..];
            let groups = m.div_ceil(TOKENS_PER_TASK);
            let panel_pairs = rows.div_ceil(PANEL).div_ceil(2);
            let splits = MIN_TASKS.div_ceil(groups).min(panel_pairs);
            let out = SharedPtr(out.as_mut_ptr());
            pool::global().run(groups * splits, &|task| {
                let (group, split) = (task / splits, task % splits);
                let tokens = group * TOKENS_PER_TASK..((group + 1) * TOKENS_PER_TASK).min(m);
                let panel_range = split * panel_pairs / splits..(split + 1) * panel_pairs / splits;
                for pp in panel_range {
                    for t0 in tokens.clone().step_by(TOKENS) {
                        let n = TOKENS.min(tokens.end - t0);
                        // SAFETY: as above; the task owns these tokens' columns of this panel
                        // pair in `out`, and every pointer stays inside its buffer.
                        unsafe { self.block(acts, bias, 2 * pp, t0, n, out) };
                    }
                }
            });
        })
    }

    /// Panels `p` and `p + 1` (or `p` alone, the last of an odd count) against tokens
    /// `t0..t0 + n`, `n ≤ 8`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 BF16; `acts` holds at least `t0 + n` converted tokens and
    /// `out` at least `t0 + n` rows of `self.rows`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block(&self, acts: &[u32], bias: Option<&[f32]>, p: usize, t0: usize, n: usize, out: SharedPtr<f32>) {
        let panels = self.rows.div_ceil(PANEL);
        let second = (p + 1).min(panels - 1);
        let panel = |q: usize| self.data[q * self.pairs * PANEL..].as_ptr();
        // Missing tokens of a short block repeat the last one; only real tokens are stored.
        let x: [*const u32; TOKENS] = std::array::from_fn(|i| acts[(t0 + i.min(n - 1)) * self.pairs..].as_ptr());
        let lanes = |q: usize| (self.rows - q * PANEL).min(PANEL);
        let bias = bias.map(|b| [b[p * PANEL..].as_ptr(), b[second * PANEL..].as_ptr()]);
        let dsts: [*mut f32; TOKENS] = std::array::from_fn(|i| out.get().wrapping_add((t0 + i) * self.rows));
        x86::panel_pair(
            [panel(p), panel(second)],
            [lanes(p), lanes(second)],
            bias,
            x,
            self.pairs,
            &dsts[..n],
            [p * PANEL, second * PANEL],
            second != p,
        );
    }
}

/// Whether this CPU has the bf16 dot product (AVX-512 BF16) and no weaker instruction set was
/// forced (`HEARTH_ISA`).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::qdot::isa().kind == crate::qdot::IsaKind::Avx512Vnni
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PANEL, TOKENS};

    fn mask(n: usize) -> u16 {
        if n >= 16 {
            u16::MAX
        } else {
            (1u16 << n) - 1
        }
    }

    /// One token's f32 activations as bf16 pairs (rounded to nearest even; an odd last column
    /// pairs with zero).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_pairs(x: &[f32], out: &mut [u32]) {
        debug_assert_eq!(out.len(), x.len().div_ceil(2));
        for c in (0..x.len()).step_by(32) {
            let n = (x.len() - c).min(32);
            let lo = _mm512_maskz_loadu_ps(mask(n), x.as_ptr().add(c));
            let hi = _mm512_maskz_loadu_ps(mask(n.saturating_sub(16)), x.as_ptr().add(c + 16.min(n)));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_mask_storeu_epi32(out.as_mut_ptr().add(c / 2).cast(), mask(n.div_ceil(2)), v);
        }
    }

    /// Two panels against up to eight tokens: `acc[t][i] = bias + Σ_pairs panel[i] · x[t]`,
    /// stored to `dst[t] + col[i]` (the first `lanes[i]` rows; panel 1 only if `both`).
    ///
    /// # Safety
    /// The CPU must have AVX-512 BF16; panels hold `pairs · 16` values, tokens `pairs`, and
    /// every destination and bias has room for the lanes written and read.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn panel_pair(
        w: [*const u32; 2],
        lanes: [usize; 2],
        bias: Option<[*const f32; 2]>,
        x: [*const u32; TOKENS],
        pairs: usize,
        dst: &[*mut f32],
        col: [usize; 2],
        both: bool,
    ) {
        let init: [__m512; 2] = match bias {
            Some(b) => std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask(lanes[i]), b[i])),
            None => [_mm512_setzero_ps(); 2],
        };
        let mut acc = [init; TOKENS];
        for p in 0..pairs {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(w[0].add(p * PANEL).cast()));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(w[1].add(p * PANEL).cast()));
            for t in 0..TOKENS {
                let xt: __m512bh = std::mem::transmute(_mm512_set1_epi32(*x[t].add(p) as i32));
                acc[t][0] = _mm512_dpbf16_ps(acc[t][0], w0, xt);
                acc[t][1] = _mm512_dpbf16_ps(acc[t][1], w1, xt);
            }
        }
        for (t, &d) in dst.iter().enumerate() {
            for i in 0..1 + usize::from(both) {
                _mm512_mask_storeu_ps(d.add(col[i]), mask(lanes[i]), acc[t][i]);
            }
        }
    }
}

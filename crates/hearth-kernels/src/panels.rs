//! Q4_0, Q4_1, Q8_0 and Q4_K weights repacked into 16-row panels for the integer dot product
//! (AVX-512 VNNI), the layout that makes batched decoding and prefill cheap.
//!
//! In the file's layout a register holds 64 weights of one row, so every block's scale must be
//! applied per row and per token before the lanes can be summed. Here a register holds four
//! consecutive weights of sixteen rows: one `vpdpbusd` against a token's four broadcast
//! activations advances sixteen rows at once, a block's scales are one vector for all sixteen
//! rows, and the sums land in the lanes the output wants (`[token][row]`). Each (row, token)
//! result is summed in the same order whatever the number of tokens, so decoding a sequence
//! alone or in a batch gives bit-identical results.
//!
//! Q4_K keeps its f16 d and dmin and its packed 6-bit sub-block scales; the kernel unpacks
//! them for sixteen rows at once, and each 32-weight sub-block then counts as a Q4_1 block with
//! scale d·scale and minimum −dmin·min (activations are quantised per 32 for every format).
//!
//! The panels take the place of the file's bytes (same size); the caller may then release the
//! mapped pages.

use std::cell::RefCell;
use std::ops::Range;

use hearth_formats::gguf::GgmlType;

use crate::act::{quantize_q8, Q8Block};
use crate::pool::{self, SharedPtr};
use crate::qdot::{isa, IsaKind};
use crate::{dequantize_row, MatrixRef, RowFormat};

/// Rows per panel: one register of f32 results.
const PANEL: usize = 16;
/// Tokens per kernel call at most (one accumulator each).
const TOKENS: usize = 8;
/// Tokens per task in long products: their quantised activations stay in L2 while the
/// task's panels pass over them.
const TOKENS_PER_TASK: usize = 64;
/// Panels per task: a few kilobytes of weights each, enough work to amortise scheduling.
const PANELS_PER_TASK: usize = 4;
/// Tasks per thread where each panel is read once (up to 64 tokens): enough to even out, few
/// enough to stream.
const STRETCHES_PER_THREAD: usize = 4;
/// Matrices sharing one parallel section at most (q, k, v); more run in several.
const MAX_PARTS: usize = 4;
/// Rows repacked between reports of the copied source bytes.
const RELEASE_ROWS: usize = 1024;

/// 64 bytes of a block: 4 bytes for each of the 16 rows, the block's bytes in the file's order
/// after those kept in `d` and `m` ([`separate_f16s`]). Q4 blocks have four lines, line `i` holding weights
/// `4i..4i + 4` in its low nibbles and `16 + 4i..16 + 4i + 4` in its high ones; Q8_0 blocks
/// have eight, line `i` weights `4i..4i + 4`. Q4_K blocks have 36: d and dmin, three of
/// packed scales, then line `4 + 8g + i` holds weights `64g + 4i..+4` (sub-block `2g`) in its
/// low nibbles and `64g + 32 + 4i..+4` (sub-block `2g + 1`) in its high ones.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    /// The caller's activations quantised per 32, `[token][block]`.
    static ACTS: RefCell<Vec<Q8Block>> = const { RefCell::new(Vec::new()) };
}

/// The formats with panels; the index is the kernel's const parameter.
const FORMATS: [GgmlType; 4] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4K];
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q4_K: u8 = 3;

pub struct QuantPanels {
    format: u8,
    rows: usize,
    cols: usize,
    /// `[panel][block][lines]`.
    q: Vec<Line>,
    /// The scales as f16 bits, `[panel][block][16 rows]`; rows past `rows` are zero (empty
    /// for Q4_K, whose d and dmin are in its lines).
    d: Vec<u16>,
    /// Q4_1's minimums, laid out as `d` (empty for other formats).
    m: Vec<u16>,
}

impl QuantPanels {
    /// Repacks a Q4_0, Q4_1, Q8_0 or Q4_K matrix; `None` for other formats or where the CPU lacks
    /// the 512-bit integer dot product. `copied` is told each byte range of `w`'s data once it
    /// has been copied, so the caller can drop the source pages as it goes (one copy resident,
    /// not two).
    pub fn new(w: &MatrixRef<'_>, mut copied: impl FnMut(Range<usize>)) -> Option<Self> {
        let RowFormat::Ggml(t) = w.format() else { return None };
        let format = FORMATS.iter().position(|&f| f == t)? as u8;
        if isa().kind != IsaKind::Avx512Vnni {
            return None;
        }
        let (rows, cols) = (w.rows(), w.cols());
        let (blocks, panels) = (cols / t.block_len(), rows.div_ceil(PANEL));
        let (block_bytes, f16s, lines) = (t.block_bytes(), separate_f16s(format), lines_per_block(format));
        debug_assert_eq!(2 * f16s + 4 * lines, block_bytes);
        let f16_field = |i: usize| if i < f16s { vec![0; panels * blocks * PANEL] } else { Vec::new() };
        let mut p = QuantPanels { format, rows, cols, q: vec![Line([0; 64]); panels * blocks * lines], d: f16_field(0), m: f16_field(1) };
        let row_bytes = blocks * block_bytes;
        for r in 0..rows {
            if r % RELEASE_ROWS == 0 && r > 0 {
                copied((r - RELEASE_ROWS) * row_bytes..r * row_bytes);
            }
            let (panel, lane) = (r / PANEL, r % PANEL);
            for (b, block) in w.row_data(r).chunks_exact(block_bytes).enumerate() {
                let at = (panel * blocks + b) * PANEL + lane;
                for (i, field) in [&mut p.d, &mut p.m].into_iter().take(f16s).enumerate() {
                    field[at] = u16::from_le_bytes([block[2 * i], block[2 * i + 1]]);
                }
                for (i, four) in block[2 * f16s..].chunks_exact(4).enumerate() {
                    p.q[(panel * blocks + b) * lines + i].0[lane * 4..lane * 4 + 4].copy_from_slice(four);
                }
            }
        }
        copied(rows.saturating_sub(1) / RELEASE_ROWS * RELEASE_ROWS * row_bytes..rows * row_bytes);
        Some(p)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row `r` de-quantised exactly: its file blocks rebuilt and de-quantised as the file's.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "row {r} of {}x{}", self.rows, self.cols);
        let t = FORMATS[self.format as usize];
        let (panel, lane, blocks) = (r / PANEL, r % PANEL, self.cols / t.block_len());
        let (f16s, lines) = (separate_f16s(self.format), lines_per_block(self.format));
        let mut block = [0u8; 144];
        let block = &mut block[..t.block_bytes()];
        for (b, o) in out.chunks_exact_mut(t.block_len()).enumerate() {
            let at = (panel * blocks + b) * PANEL + lane;
            for (i, field) in [&self.d, &self.m].into_iter().take(f16s).enumerate() {
                block[2 * i..2 * i + 2].copy_from_slice(&field[at].to_le_bytes());
            }
            let four = |i: usize| &self.q[(panel * blocks + b) * lines + i].0[lane * 4..lane * 4 + 4];
            for (i, dst) in block[2 * f16s..].chunks_exact_mut(4).enumerate() {
                dst.copy_from_slice(four(i));
            }
            dequantize_row(RowFormat::Ggml(t), block, &[], &[], o);
        }
    }

    /// `out[t · rows + r] = Σ_c x[t · cols + c] · W[r, c]` with the activations quantised to
    /// 8 bits per 32 (as the file-layout kernels do).
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        Self::matmul_group(x, &mut [(self, out)]);
    }

    /// Several matrices of the same width applied to one input (q, k and v; gate and up): the
    /// input is quantised once and all their panels share one parallel section.
    pub fn matmul_group(x: &[f32], parts: &mut [(&QuantPanels, &mut [f32])]) {
        if parts.len() > MAX_PARTS {
            return parts.chunks_mut(MAX_PARTS).for_each(|chunk| Self::matmul_group(x, chunk));
        }
        let cols = parts[0].0.cols;
        let m = x.len() / cols;
        assert!(x.len() == m * cols, "panel matmul input");
        for (w, out) in parts.iter() {
            assert!(w.cols == cols && out.len() == m * w.rows, "panel matmul shapes");
        }
        if m == 0 {
            return;
        }
        let blocks = cols / 32;
        ACTS.with_borrow_mut(|acts| {
            acts.resize(m * blocks, Q8Block::default());
            if m <= TOKENS {
                quantize_q8(x, acts);
            } else {
                let dst = SharedPtr(acts.as_mut_ptr());
                pool::global().run(m.div_ceil(TOKENS_PER_TASK), &|task| {
                    let tokens = task * TOKENS_PER_TASK..((task + 1) * TOKENS_PER_TASK).min(m);
                    // SAFETY: each task writes only its own tokens' blocks.
                    let q = unsafe { std::slice::from_raw_parts_mut(dst.get().add(tokens.start * blocks), tokens.len() * blocks) };
                    quantize_q8(&x[tokens.start * cols..tokens.end * cols], q);
                });
            }
            let acts = &acts[..];
            // Panels are numbered across the parts; `starts[i]` is part i's first. Fixed arrays,
            // not vectors: this runs for every decoded token.
            let (mut starts, mut total) = ([usize::MAX; MAX_PARTS], 0);
            for (start, (w, _)) in starts.iter_mut().zip(parts.iter()) {
                *start = total;
                total += w.rows.div_ceil(PANEL);
            }
            let outs: [SharedPtr<f32>; MAX_PARTS] =
                std::array::from_fn(|i| SharedPtr(parts.get_mut(i).map_or(std::ptr::null_mut(), |p| p.1.as_mut_ptr())));
            // Where the panels pass once (one group of tokens), a few long stretches per thread:
            // the prefetchers follow a stream far better than many short jumps.
            let groups = m.div_ceil(TOKENS_PER_TASK);
            let per_task = if groups == 1 {
                total.div_ceil(pool::global().threads() * STRETCHES_PER_THREAD).max(PANELS_PER_TASK)
            } else {
                PANELS_PER_TASK
            };
            let chunks = total.div_ceil(per_task);
            pool::global().run(groups * chunks, &|task| {
                let (group, chunk) = (task / chunks, task % chunks);
                let tokens = group * TOKENS_PER_TASK..((group + 1) * TOKENS_PER_TASK).min(m);
                for global in chunk * per_task..((chunk + 1) * per_task).min(total) {
                    let part = starts.partition_point(|&s| s <= global) - 1;
                    let w = parts[part].0;
                    for t0 in tokens.clone().step_by(TOKENS) {
                        let n = TOKENS.min(tokens.end - t0);
                        // SAFETY: the ISA was checked when `w` was built; the task owns these
                        // tokens' columns of this panel in its part's output.
                        unsafe { w.block(&acts[t0 * blocks..(t0 + n) * blocks], global - starts[part], t0, outs[part]) };
                    }
                }
            });
        })
    }

    /// Panel `p` against the tokens whose blocks are `acts` (at most [`TOKENS`]), the first
    /// being token `t0`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 VNNI; `out` holds at least `t0 + tokens` rows of `rows`.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn block(&self, _: &[Q8Block], _: usize, _: usize, _: SharedPtr<f32>) {
        unreachable!("quantised panels are built only where the CPU has AVX-512 VNNI")
    }

    /// # Safety
    /// As above.
    #[cfg(target_arch = "x86_64")]
    unsafe fn block(&self, acts: &[Q8Block], p: usize, t0: usize, out: SharedPtr<f32>) {
        let acts_per_token = self.cols / 32;
        let n = acts.len() / acts_per_token;
        let blocks = self.cols / FORMATS[self.format as usize].block_len();
        let lanes = (self.rows - p * PANEL).min(PANEL);
        let w = x86::Panel {
            q: self.q[p * blocks * lines_per_block(self.format)..].as_ptr().cast(),
            d: self.d.get(p * blocks * PANEL..).map_or(std::ptr::null(), <[u16]>::as_ptr),
            m: self.m.get(p * blocks * PANEL..).map_or(std::ptr::null(), <[u16]>::as_ptr),
            blocks,
            mask: if lanes == PANEL { u16::MAX } else { (1 << lanes) - 1 },
        };
        let x = |t: usize| acts[t * acts_per_token..].as_ptr();
        let dst = |t: usize| out.get().add((t0 + t) * self.rows + p * PANEL);
        macro_rules! call {
            ($($n:literal)*) => {
                match (n, self.format) {
                    $(($n, Q4_0) => x86::panel::<$n, Q4_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q4_1) => x86::panel::<$n, Q4_1>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q8_0) => x86::panel::<$n, Q8_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q4_K) => x86::panel::<$n, Q4_K>(&w, std::array::from_fn(x), std::array::from_fn(dst)),)*
                    _ => unreachable!("1 to {TOKENS} tokens per call, formats with panels"),
                }
            };
        }
        call!(1 2 3 4 5 6 7 8);
    }
}

/// Whether the format's blocks carry a minimum (Q4_1) or dmin (Q4_K) after the scale.
const fn has_min(format: u8) -> bool {
    matches!(format, Q4_1 | Q4_K)
}

/// The f16 fields leading a block that are kept apart from its lines, in `d` and `m`: the
/// scale, and Q4_1's minimum. Q4_K keeps all its bytes in lines, so that decode reads each
/// panel as one stream (with d and dmin apart: 31 GB/s against 37, before prefetching).
const fn separate_f16s(format: u8) -> usize {
    match format {
        Q4_1 => 2,
        Q4_K => 0,
        _ => 1,
    }
}

const fn lines_per_block(format: u8) -> usize {
    match format {
        Q8_0 => 8,
        Q4_K => 36,
        _ => 4,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{has_min, lines_per_block, Q4_K, Q8_0};
    use crate::act::Q8Block;

    /// How far ahead lines are prefetched (9 KB; past the end is harmless): the hardware
    /// prefetchers alone left decode waiting on memory.
    const PREFETCH_AHEAD: usize = 144;

    pub(super) struct Panel {
        pub q: *const __m512i,
        /// Null where the format keeps them in its lines.
        pub d: *const u16,
        /// Null for formats without a separate minimum.
        pub m: *const u16,
        pub blocks: usize,
        /// The panel's real rows.
        pub mask: u16,
    }

    /// One panel against `T` tokens: `out[t][lane] = Σ_blocks` of the block's weights times
    /// token `t`'s activations, the lanes being the panel's rows.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F/BW/VNNI; `w` points at a whole panel of format `F`, each
    /// `x[t]` at the row's length in 32-blocks, each `out[t]` at room for the panel's real rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        let nibble = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..w.blocks {
            let q = w.q.add(b * lines_per_block(F));
            if F == Q4_K {
                // Each lane holds its row's d and dmin.
                let f16s = _mm512_load_si512(q);
                let d = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(f16s));
                let neg_dmin = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(f16s, 16))));
                let packed: [__m512i; 3] = std::array::from_fn(|u| _mm512_load_si512(q.add(1 + u)));
                // The block's lines ahead an eighth per sub-block: in one burst, the prefetches
                // held up the loads (1B model decode: 65 against 110 tok/s).
                let eighth = |j: usize| j * lines_per_block(F) / 8;
                for j in 0..8 {
                    prefetch_ahead(q, eighth(j)..eighth(j + 1));
                    let (scale, min) = k_scale_min(&packed, j);
                    // Sub-block j: the low (j even) or high nibbles of eight lines.
                    let wq: [__m512i; 8] = std::array::from_fn(|i| {
                        let line = _mm512_load_si512(q.add(4 + 8 * (j / 2) + i));
                        _mm512_and_si512(if j % 2 == 0 { line } else { _mm512_srli_epi16(line, 4) }, nibble)
                    });
                    let (d, m) = (_mm512_mul_ps(d, _mm512_cvtepi32_ps(scale)), _mm512_mul_ps(neg_dmin, _mm512_cvtepi32_ps(min)));
                    block32::<T, F>(&wq, d, m, &x, 8 * b + j, &mut acc);
                }
            } else {
                prefetch_ahead(q, 0..lines_per_block(F));
                let d = _mm512_cvtph_ps(_mm256_loadu_si256(w.d.add(b * 16).cast()));
                let m = if has_min(F) { _mm512_cvtph_ps(_mm256_loadu_si256(w.m.add(b * 16).cast())) } else { d };
                // wq[j]: sixteen rows' weights 4j..4j + 4, against the activations' bytes 4j..4j + 4.
                let wq: [__m512i; 8] = if F == Q8_0 {
                    std::array::from_fn(|j| _mm512_xor_si512(_mm512_load_si512(q.add(j)), _mm512_set1_epi8(-128)))
                } else {
                    let lines: [__m512i; 4] = std::array::from_fn(|i| _mm512_load_si512(q.add(i)));
                    std::array::from_fn(|j| match j {
                        0..4 => _mm512_and_si512(lines[j], nibble),
                        _ => _mm512_and_si512(_mm512_srli_epi16(lines[j - 4], 4), nibble),
                    })
                };
                block32::<T, F>(&wq, d, m, &x, b, &mut acc);
            }
        }
        for t in 0..T {
            _mm512_mask_storeu_ps(out[t], w.mask, acc[t]);
        }
    }

    /// Prefetches lines `lines` of the block [`PREFETCH_AHEAD`] lines after `q`.
    #[inline(always)]
    unsafe fn prefetch_ahead(q: *const __m512i, lines: std::ops::Range<usize>) {
        for l in lines {
            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH_AHEAD + l).cast());
        }
    }

    /// 32 weights of sixteen rows (`wq[j]`: weights 4j..4j + 4) with scale `d` and minimum
    /// `m` against each token's activation block `at`, added to `acc`.
    #[inline(always)]
    unsafe fn block32<const T: usize, const F: u8>(
        wq: &[__m512i; 8],
        d: __m512,
        m: __m512,
        x: &[*const Q8Block; T],
        at: usize,
        acc: &mut [__m512; T],
    ) {
        // Q4_0 and Q8_0 store unsigned values with an offset: −8, or −128 once the signed
        // bytes are made unsigned for `vpdpbusd`.
        let offset = if F == Q8_0 { -128.0 } else { -8.0 };
        for t in 0..T {
            let a = &*x[t].add(at);
            let qs = a.qs.as_ptr().cast::<i32>();
            // Two chains of four, so the multiply-adds of one token overlap.
            let (mut s_lo, mut s_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for i in 0..4 {
                s_lo = _mm512_dpbusd_epi32(s_lo, wq[i], _mm512_set1_epi32(qs.add(i).read_unaligned()));
                s_hi = _mm512_dpbusd_epi32(s_hi, wq[4 + i], _mm512_set1_epi32(qs.add(4 + i).read_unaligned()));
            }
            let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s_lo, s_hi));
            acc[t] = if has_min(F) {
                // d·dx·Σq·qx + m·dx·Σqx
                _mm512_fmadd_ps(m, _mm512_set1_ps(a.sum), _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), isum, acc[t]))
            } else {
                // d·(dx·Σq·qx + offset·dx·Σqx)
                _mm512_fmadd_ps(d, _mm512_fmadd_ps(_mm512_set1_ps(a.d), isum, _mm512_set1_ps(offset * a.sum)), acc[t])
            };
        }
    }

    /// Sub-block `j`'s 6-bit scale and minimum in each lane, from the lanes' 12 packed bytes
    /// held as three dwords (`scale_min_k4` for sixteen rows at once).
    #[inline(always)]
    unsafe fn k_scale_min(packed: &[__m512i; 3], j: usize) -> (__m512i, __m512i) {
        let shift = |v: __m512i, bits: usize| _mm512_srl_epi32(v, _mm_cvtsi32_si128(bits as i32));
        let six = _mm512_set1_epi32(0x3F);
        if j < 4 {
            return (_mm512_and_si512(shift(packed[0], 8 * j), six), _mm512_and_si512(shift(packed[1], 8 * j), six));
        }
        // Low four bits from the third dword's byte, the top two from bits 6-7 of the first's
        // (scale) or second's (minimum).
        let (k, low4, top2) = (8 * (j - 4), _mm512_set1_epi32(0x0F), _mm512_set1_epi32(0x30));
        let joined = |low: __m512i, high: __m512i| _mm512_or_si512(_mm512_and_si512(low, low4), _mm512_and_si512(shift(high, k + 2), top2));
        (joined(shift(packed[2], k), packed[0]), joined(shift(packed[2], k + 4), packed[1]))
    }
}

//! Q4_0, Q4_1 and Q8_0 weights repacked into 16-row panels for the integer dot product
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
//! The panels take the place of the file's bytes (same size); the caller may then release the
//! mapped pages.

use std::cell::RefCell;
use std::ops::Range;

use half::f16;
use hearth_formats::gguf::GgmlType;

use crate::act::{quantize_q8, Q8Block};
use crate::pool::{self, SharedPtr};
use crate::qdot::isa;
use crate::{MatrixRef, RowFormat};

/// Rows per panel: one register of f32 results.
const PANEL: usize = 16;
/// Tokens per kernel call at most (one accumulator each).
const TOKENS: usize = 8;
/// Tokens per task in long products: their quantised activations stay in L2 while the
/// task's panels pass over them.
const TOKENS_PER_TASK: usize = 64;
/// Panels per task: a few kilobytes of weights each, enough work to amortise scheduling.
const PANELS_PER_TASK: usize = 4;
/// Matrices sharing one parallel section at most (q, k, v); more run in several.
const MAX_PARTS: usize = 4;
/// Rows repacked between reports of the copied source bytes.
const RELEASE_ROWS: usize = 1024;

/// 64 bytes of a block: 4 bytes for each of the 16 rows. Q4 blocks have four lines, line `i`
/// holding weights `4i..4i + 4` in its low nibbles and `16 + 4i..16 + 4i + 4` in its high
/// ones (the file's nibble order); Q8_0 blocks have eight, line `i` weights `4i..4i + 4`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    /// The caller's activations quantised per 32, `[token][block]`.
    static ACTS: RefCell<Vec<Q8Block>> = const { RefCell::new(Vec::new()) };
}

/// The formats with panels, as the kernel's const parameter.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

pub struct QuantPanels {
    format: u8,
    rows: usize,
    cols: usize,
    /// `[panel][block][lines]`.
    q: Vec<Line>,
    /// The scales as f16 bits, `[panel][block][16 rows]`; rows past `rows` are zero.
    d: Vec<u16>,
    /// Q4_1's minimums, laid out as `d` (empty otherwise).
    m: Vec<u16>,
}

impl QuantPanels {
    /// Repacks a Q4_0, Q4_1 or Q8_0 matrix; `None` for other formats or where the CPU lacks
    /// the 512-bit integer dot product. `copied` is told each byte range of `w`'s data once it
    /// has been copied, so the caller can drop the source pages as it goes (one copy resident,
    /// not two).
    pub fn new(w: &MatrixRef<'_>, mut copied: impl FnMut(Range<usize>)) -> Option<Self> {
        let format = match w.format() {
            RowFormat::Ggml(GgmlType::Q4_0) => Q4_0,
            RowFormat::Ggml(GgmlType::Q4_1) => Q4_1,
            RowFormat::Ggml(GgmlType::Q8_0) => Q8_0,
            _ => return None,
        };
        if isa().name != "avx512vnni" {
            return None;
        }
        let (rows, cols) = (w.rows(), w.cols());
        let (blocks, panels) = (cols / 32, rows.div_ceil(PANEL));
        let (block_bytes, header) = [(18, 2), (20, 4), (34, 2)][format as usize];
        let lines = lines_per_block(format);
        let mut p = QuantPanels {
            format,
            rows,
            cols,
            q: vec![Line([0; 64]); panels * blocks * lines],
            d: vec![0; panels * blocks * PANEL],
            m: if format == Q4_1 { vec![0; panels * blocks * PANEL] } else { Vec::new() },
        };
        let row_bytes = blocks * block_bytes;
        for r in 0..rows {
            if r % RELEASE_ROWS == 0 && r > 0 {
                copied((r - RELEASE_ROWS) * row_bytes..r * row_bytes);
            }
            let (panel, lane) = (r / PANEL, r % PANEL);
            for (b, block) in w.row_data(r).chunks_exact(block_bytes).enumerate() {
                let at = (panel * blocks + b) * PANEL + lane;
                p.d[at] = u16::from_le_bytes([block[0], block[1]]);
                if format == Q4_1 {
                    p.m[at] = u16::from_le_bytes([block[2], block[3]]);
                }
                for (i, four) in block[header..].chunks_exact(4).enumerate() {
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

    /// Row `r` de-quantised exactly (as the file's row would be).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "row {r} of {}x{}", self.rows, self.cols);
        let (panel, lane, blocks) = (r / PANEL, r % PANEL, self.cols / 32);
        let lines = lines_per_block(self.format);
        for (b, o) in out.chunks_exact_mut(32).enumerate() {
            let at = (panel * blocks + b) * PANEL + lane;
            let d = f16::from_bits(self.d[at]).to_f32();
            for i in 0..lines {
                let bytes = &self.q[(panel * blocks + b) * lines + i].0[lane * 4..lane * 4 + 4];
                for (j, &byte) in bytes.iter().enumerate() {
                    match self.format {
                        Q8_0 => o[4 * i + j] = d * f32::from(byte as i8),
                        Q4_1 => {
                            let m = f16::from_bits(self.m[at]).to_f32();
                            o[4 * i + j] = d * f32::from(byte & 0x0F) + m;
                            o[16 + 4 * i + j] = d * f32::from(byte >> 4) + m;
                        }
                        _ => {
                            o[4 * i + j] = d * (f32::from(byte & 0x0F) - 8.0);
                            o[16 + 4 * i + j] = d * (f32::from(byte >> 4) - 8.0);
                        }
                    }
                }
            }
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
            let outs: [SharedPtr<f32>; MAX_PARTS] = std::array::from_fn(|i| SharedPtr(parts.get_mut(i).map_or(std::ptr::null_mut(), |p| p.1.as_mut_ptr())));
            let chunks = total.div_ceil(PANELS_PER_TASK);
            pool::global().run(m.div_ceil(TOKENS_PER_TASK) * chunks, &|task| {
                let (group, chunk) = (task / chunks, task % chunks);
                let tokens = group * TOKENS_PER_TASK..((group + 1) * TOKENS_PER_TASK).min(m);
                for global in chunk * PANELS_PER_TASK..((chunk + 1) * PANELS_PER_TASK).min(total) {
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
        let blocks = self.cols / 32;
        let n = acts.len() / blocks;
        let lanes = (self.rows - p * PANEL).min(PANEL);
        let w = x86::Panel {
            q: self.q[p * blocks * lines_per_block(self.format)..].as_ptr().cast(),
            d: self.d[p * blocks * PANEL..].as_ptr(),
            m: if self.format == Q4_1 { self.m[p * blocks * PANEL..].as_ptr() } else { std::ptr::null() },
            blocks,
            mask: if lanes == PANEL { u16::MAX } else { (1 << lanes) - 1 },
        };
        let x = |t: usize| acts[t * blocks..].as_ptr();
        let dst = |t: usize| out.get().add((t0 + t) * self.rows + p * PANEL);
        macro_rules! call {
            ($($n:literal)*) => {
                match (n, self.format) {
                    $(($n, Q4_0) => x86::panel::<$n, Q4_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q4_1) => x86::panel::<$n, Q4_1>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q8_0) => x86::panel::<$n, Q8_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),)*
                    _ => unreachable!("1 to {TOKENS} tokens per call, formats with panels"),
                }
            };
        }
        call!(1 2 3 4 5 6 7 8);
    }
}

fn lines_per_block(format: u8) -> usize {
    if format == Q8_0 {
        8
    } else {
        4
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Q4_1, Q8_0};
    use crate::act::Q8Block;

    pub(super) struct Panel {
        pub q: *const __m512i,
        pub d: *const u16,
        /// Null for Q4_0.
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
    /// `x[t]` at `w.blocks` blocks, each `out[t]` at room for the panel's real rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,fma")]
    pub(super) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        let nibble = _mm512_set1_epi8(0x0F);
        // Q4_0 and Q8_0 store unsigned values with an offset: −8, or −128 once the signed
        // bytes are made unsigned for `vpdpbusd`.
        let offset = if F == Q8_0 { -128.0 } else { -8.0 };
        let mut acc = [_mm512_setzero_ps(); T];
        for b in 0..w.blocks {
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(w.d.add(b * 16).cast()));
            let m = if F == Q4_1 { _mm512_cvtph_ps(_mm256_loadu_si256(w.m.add(b * 16).cast())) } else { d };
            // wq[j]: sixteen rows' weights 4j..4j + 4, against the activations' bytes 4j..4j + 4.
            let wq: [__m512i; 8] = if F == Q8_0 {
                std::array::from_fn(|j| _mm512_xor_si512(_mm512_load_si512(w.q.add(b * 8 + j)), _mm512_set1_epi8(-128)))
            } else {
                let lines: [__m512i; 4] = std::array::from_fn(|i| _mm512_load_si512(w.q.add(b * 4 + i)));
                std::array::from_fn(|j| match j {
                    0..4 => _mm512_and_si512(lines[j], nibble),
                    _ => _mm512_and_si512(_mm512_srli_epi16(lines[j - 4], 4), nibble),
                })
            };
            for t in 0..T {
                let a = &*x[t].add(b);
                let qs = a.qs.as_ptr().cast::<i32>();
                // Two chains of four, so the multiply-adds of one token overlap.
                let (mut s_lo, mut s_hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for i in 0..4 {
                    s_lo = _mm512_dpbusd_epi32(s_lo, wq[i], _mm512_set1_epi32(qs.add(i).read_unaligned()));
                    s_hi = _mm512_dpbusd_epi32(s_hi, wq[4 + i], _mm512_set1_epi32(qs.add(4 + i).read_unaligned()));
                }
                let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s_lo, s_hi));
                acc[t] = if F == Q4_1 {
                    // d·dx·Σq·qx + m·dx·Σqx
                    _mm512_fmadd_ps(m, _mm512_set1_ps(a.sum), _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(a.d)), isum, acc[t]))
                } else {
                    // d·(dx·Σq·qx + offset·dx·Σqx)
                    _mm512_fmadd_ps(d, _mm512_fmadd_ps(_mm512_set1_ps(a.d), isum, _mm512_set1_ps(offset * a.sum)), acc[t])
                };
            }
        }
        for t in 0..T {
            _mm512_mask_storeu_ps(out[t], w.mask, acc[t]);
        }
    }
}

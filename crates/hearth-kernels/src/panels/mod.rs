//! Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K weights, and MLX's 4-bit affine ones,
//! repacked into 16-row panels for integer dot products, the
//! layout that makes batched decoding and prefill cheap, on every instruction set: one kernel
//! ([`kernel`]) over each one's vector operations (AVX-512 VNNI, AVX-VNNI, AVX2, NEON,
//! portable).
//!
//! In the file's layout a register holds 64 weights of one row, so every block's scale must be
//! applied per row and per token before the lanes can be summed. Here a register holds four
//! consecutive weights of sixteen rows (or of eight, or four, on narrower registers): one
//! `vpdpbusd` against a token's four broadcast activations advances sixteen rows at once, a block's scales are one vector for all sixteen
//! rows, and the sums land in the lanes the output wants (`[token][row]`). Each (row, token)
//! result is summed in the same order whatever the number of tokens, so decoding a sequence
//! alone or in a batch gives bit-identical results.
//!
//! Q5_0 and Q5_1 keep their fifth bits in one line per block, rearranged at load so that one
//! shift and mask per four weights puts them in place (see [`spread_fifth_bits`]).
//!
//! Q4_K keeps its f16 d and dmin and its packed 6-bit sub-block scales; the kernel unpacks
//! them for sixteen rows at once, and each 32-weight sub-block then counts as a Q4_1 block with
//! scale d·scale and minimum −dmin·min (activations are quantised per 32 for every format);
//! Q5_K's likewise, its fifth bits kept as stored (bit `j` of byte `l` for weight `l` of
//! sub-block `j`, just what the kernel wants).
//! MLX's 4-bit groups (f16 or bf16 scale and bias, 32 to 128 weights) are cut into Q4_1-like
//! blocks of 32: the nibbles reordered, each block carrying its group's scale and bias bits.
//! Q6_K's weights are made signed (−32 to 31) as they are unpacked, so that each 16-weight half
//! of a sub-block, with its own scale, needs no sum of its activations.
//!
//! The panels take the place of the file's bytes (the same size; MLX's a little more, each block
//! of 32 carrying its group's parameters); the caller may then release the mapped pages.

use std::cell::RefCell;
use std::ops::Range;

use hearth_formats::gguf::GgmlType;

use crate::act::{quantize_q8, Q8Block};
use crate::dequant::mlx_code;
use crate::pool::{self, SharedPtr};
use crate::qdot::{available, isa, IsaKind};
use crate::{dequantize_row, FloatFormat, MatrixRef, RowFormat};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod kernel;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use kernel::{Lanes, Panel};

/// Rows per panel: one register of f32 results.
const PANEL: usize = 16;
/// Tokens quantised on the calling thread; more are quantised in parallel.
const SERIAL_TOKENS: usize = 8;
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
/// apart from those kept in `d` and `m` ([`separate_f16s`]). Q4 blocks have four lines, line
/// `i` holding weights `4i..4i + 4` in its low nibbles and `16 + 4i..16 + 4i + 4` in its high
/// ones (MLX 4-bit blocks are made so); Q5_0/Q5_1 blocks have their fifth bits
/// ([`spread_fifth_bits`]) and then the four lines of Q4's; Q8_0 blocks have eight, line `i`
/// weights `4i..4i + 4`. Q4_K blocks have 36: d and dmin, three of packed scales, then line
/// `4 + 8g + i` holds weights `64g + 4i..+4` (sub-block `2g`) in its low nibbles and
/// `64g + 32 + 4i..+4` (sub-block `2g + 1`) in its high ones; Q5_K's 44 put eight lines of
/// fifth bits before those. Q6_K's 52 are its low nibbles (32 lines), top bits (16) and scales
/// (4).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

thread_local! {
    /// The caller's activations quantised per 32, `[token][block]`.
    static ACTS: RefCell<Vec<Q8Block>> = const { RefCell::new(Vec::new()) };
}

/// The formats with panels; the index is the kernel's const parameter.
const FORMATS: [GgmlType; 8] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q6K, GgmlType::Q5K];
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q4_K: u8 = 3;
const Q5_0: u8 = 4;
const Q5_1: u8 = 5;
const Q6_K: u8 = 6;
const Q5_K: u8 = 7;
/// MLX 4-bit affine with f16 or bf16 scales and biases, as Q4_1-like blocks of 32.
const MLX4_F16: u8 = 8;
const MLX4_BF16: u8 = 9;

pub struct QuantPanels {
    /// The instruction set whose kernel runs the panels.
    isa: IsaKind,
    format: u8,
    /// The stored format, which [`QuantPanels::row`] rebuilds.
    source: RowFormat,
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
    /// Repacks a Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K or MLX 4-bit (f16 or bf16
    /// parameters, groups a multiple of 32) matrix for the instruction set in use; `None` for
    /// other formats. `copied` is told each byte range of `w`'s data once it has been copied,
    /// so the caller can drop the source pages as it goes (one copy resident, not two).
    pub fn new(w: &MatrixRef<'_>, copied: impl FnMut(Range<usize>)) -> Option<Self> {
        Self::for_isa(isa().kind, w, copied)
    }

    /// [`QuantPanels::new`] for the kernel of `kind` (`None` where this CPU cannot run it):
    /// tests compare every instruction set in one process.
    pub fn for_isa(kind: IsaKind, w: &MatrixRef<'_>, mut copied: impl FnMut(Range<usize>)) -> Option<Self> {
        let format = panel_format(w.format())?;
        if !available().iter().any(|i| i.kind == kind) {
            return None;
        }
        let (rows, cols) = (w.rows(), w.cols());
        let (blocks, panels) = (cols / block_len(format), rows.div_ceil(PANEL));
        let (block_bytes, f16s, lines) = (block_bytes(format), separate_f16s(format), lines_per_block(format));
        let (f16_at, lines_at) = field_offsets(format);
        debug_assert_eq!(2 * f16s + 4 * lines, block_bytes);
        let f16_field = |i: usize| if i < f16s { vec![0; panels * blocks * PANEL] } else { Vec::new() };
        let mut p = QuantPanels {
            isa: kind,
            format,
            source: w.format(),
            rows,
            cols,
            q: vec![Line([0; 64]); panels * blocks * lines],
            d: f16_field(0),
            m: f16_field(1),
        };
        let row_bytes = w.format().row_bytes(cols).expect("a valid matrix's rows");
        let mut mlx_blocks = Vec::new();
        for r in 0..rows {
            if r % RELEASE_ROWS == 0 && r > 0 {
                copied((r - RELEASE_ROWS) * row_bytes..r * row_bytes);
            }
            let (panel, lane) = (r / PANEL, r % PANEL);
            let row = match w.format() {
                RowFormat::MlxAffine { group_size, .. } => {
                    mlx_as_blocks(w.row_bytes_of(r), group_size, &mut mlx_blocks);
                    &mlx_blocks[..]
                }
                _ => w.row_data(r),
            };
            for (b, block) in row.chunks_exact(block_bytes).enumerate() {
                let at = (panel * blocks + b) * PANEL + lane;
                for (i, field) in [&mut p.d, &mut p.m].into_iter().take(f16s).enumerate() {
                    field[at] = u16::from_le_bytes([block[f16_at + 2 * i], block[f16_at + 2 * i + 1]]);
                }
                for (i, four) in block[lines_at..lines_at + 4 * lines].chunks_exact(4).enumerate() {
                    let mut four: [u8; 4] = four.try_into().expect("four bytes");
                    if i == 0 && is_q5(format) {
                        four = spread_fifth_bits(u32::from_le_bytes(four)).to_le_bytes();
                    }
                    p.q[(panel * blocks + b) * lines + i].0[lane * 4..lane * 4 + 4].copy_from_slice(&four);
                }
            }
        }
        copied(rows.saturating_sub(1) / RELEASE_ROWS * RELEASE_ROWS * row_bytes..rows * row_bytes);
        Some(p)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` de-quantised exactly: its file blocks rebuilt and de-quantised as the file's.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "row {r} of {}x{}", self.rows, self.cols);
        let (panel, lane, len) = (r / PANEL, r % PANEL, block_len(self.format));
        let blocks = self.cols / len;
        let (f16s, lines) = (separate_f16s(self.format), lines_per_block(self.format));
        let (f16_at, lines_at) = field_offsets(self.format);
        let mut block = [0u8; 210];
        let block = &mut block[..block_bytes(self.format)];
        for (b, o) in out.chunks_exact_mut(len).enumerate() {
            let at = (panel * blocks + b) * PANEL + lane;
            for (i, field) in [&self.d, &self.m].into_iter().take(f16s).enumerate() {
                block[f16_at + 2 * i..f16_at + 2 * i + 2].copy_from_slice(&field[at].to_le_bytes());
            }
            let four = |i: usize| &self.q[(panel * blocks + b) * lines + i].0[lane * 4..lane * 4 + 4];
            for (i, dst) in block[lines_at..lines_at + 4 * lines].chunks_exact_mut(4).enumerate() {
                dst.copy_from_slice(four(i));
                if i == 0 && is_q5(self.format) {
                    let qh = gather_fifth_bits(u32::from_le_bytes(dst.try_into().expect("four bytes")));
                    dst.copy_from_slice(&qh.to_le_bytes());
                }
            }
            match self.source {
                // A block of 32 is a group of 32 with its group's scale and bias: the same values.
                RowFormat::MlxAffine { bits, params, .. } => {
                    let format = RowFormat::MlxAffine { bits, group_size: 32, params };
                    dequantize_row(format, &mlx_codes(&block[4..]), &block[..2], &block[2..4], o);
                }
                _ => dequantize_row(self.source, block, &[], &[], o),
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
            if m <= SERIAL_TOKENS {
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
                    let per_call = w.tokens_per_call();
                    for t0 in tokens.clone().step_by(per_call) {
                        let n = per_call.min(tokens.end - t0);
                        // SAFETY: the ISA was checked when `w` was built; the task owns these
                        // tokens' columns of this panel in its part's output.
                        unsafe { w.block(&acts[t0 * blocks..(t0 + n) * blocks], global - starts[part], t0, outs[part]) };
                    }
                }
            });
        })
    }

    /// Tokens per kernel call on this instruction set.
    fn tokens_per_call(&self) -> usize {
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512Vnni => avx512::Avx512::TOKENS,
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 | IsaKind::AvxVnni => avx2::Avx2::<{ avx2::MADD }>::TOKENS,
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon | IsaKind::NeonDotprod => neon::Neon::<false>::TOKENS,
            _ => portable::Portable::TOKENS,
        }
    }

    /// Panel `p` against the tokens whose blocks are `acts` (at most
    /// [`QuantPanels::tokens_per_call`]), the first being token `t0`.
    ///
    /// # Safety
    /// `out` holds at least `t0 + tokens` rows of `rows`.
    unsafe fn block(&self, acts: &[Q8Block], p: usize, t0: usize, out: SharedPtr<f32>) {
        let acts_per_token = self.cols / 32;
        let n = acts.len() / acts_per_token;
        let blocks = self.cols / block_len(self.format);
        let w = Panel {
            q: self.q[p * blocks * lines_per_block(self.format)..].as_ptr(),
            d: self.d.get(p * blocks * PANEL..).map_or(std::ptr::null(), <[u16]>::as_ptr),
            m: self.m.get(p * blocks * PANEL..).map_or(std::ptr::null(), <[u16]>::as_ptr),
            blocks,
            rows: (self.rows - p * PANEL).min(PANEL),
        };
        let x = |t: usize| acts[t * acts_per_token..].as_ptr();
        let dst = |t: usize| out.get().add((t0 + t) * self.rows + p * PANEL);
        // SAFETY (all): `for_isa` checked that the CPU runs the kernel of `self.isa`.
        macro_rules! call {
            ($($backend:ident)::+; $($n:literal)*) => {{
                use self::$($backend)::+ as backend;
                match (n, self.format) {
                    $(($n, Q4_0) => backend::panel::<$n, Q4_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q4_1) => backend::panel::<$n, Q4_1>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q8_0) => backend::panel::<$n, Q8_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q4_K) => backend::panel::<$n, Q4_K>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q5_0) => backend::panel::<$n, Q5_0>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q5_1) => backend::panel::<$n, Q5_1>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q6_K) => backend::panel::<$n, Q6_K>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, Q5_K) => backend::panel::<$n, Q5_K>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, MLX4_F16) => backend::panel::<$n, MLX4_F16>(&w, std::array::from_fn(x), std::array::from_fn(dst)),
                      ($n, MLX4_BF16) => backend::panel::<$n, MLX4_BF16>(&w, std::array::from_fn(x), std::array::from_fn(dst)),)*
                    _ => unreachable!("more tokens than the kernel takes per call, or a format without panels"),
                }
            }};
        }
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512Vnni => call!(avx512; 1 2 3 4 5 6 7 8),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 => call!(avx2; 1 2 3 4),
            #[cfg(target_arch = "x86_64")]
            IsaKind::AvxVnni => call!(avx2::vnni; 1 2 3 4),
            #[cfg(target_arch = "aarch64")]
            IsaKind::NeonDotprod => call!(neon::dot; 1 2 3 4),
            #[cfg(target_arch = "aarch64")]
            IsaKind::Neon => call!(neon::plain; 1 2 3 4),
            _ => call!(portable; 1 2 3 4),
        }
    }
}

/// The panel format of a stored one, if it has panels.
fn panel_format(format: RowFormat) -> Option<u8> {
    match format {
        RowFormat::Ggml(t) => FORMATS.iter().position(|&f| f == t).map(|i| i as u8),
        RowFormat::MlxAffine { bits: 4, group_size, params } if group_size.is_multiple_of(32) => match params {
            FloatFormat::F16 => Some(MLX4_F16),
            FloatFormat::BF16 => Some(MLX4_BF16),
            FloatFormat::F32 => None,
        },
        _ => None,
    }
}

const fn block_len(format: u8) -> usize {
    match format {
        Q4_K | Q5_K | Q6_K => 256,
        _ => 32,
    }
}

/// Bytes of one block as the panels take it in (MLX's: as Q4_1's).
fn block_bytes(format: u8) -> usize {
    match format {
        MLX4_F16 | MLX4_BF16 => GgmlType::Q4_1.block_bytes(),
        _ => FORMATS[format as usize].block_bytes(),
    }
}

/// An MLX 4-bit row (its packed codes, scales and biases) as Q4_1-like blocks of 32: each
/// block's scale and bias bits, then its codes as Q4_1 orders them (weight j and j + 16 in
/// byte j's low and high nibbles; MLX puts weights 2j and 2j + 1 there).
fn mlx_as_blocks((data, scales, biases): (&[u8], &[u8], &[u8]), group_size: usize, out: &mut Vec<u8>) {
    out.clear();
    for b in 0..data.len() / 16 {
        let g = 2 * (b * 32 / group_size);
        out.extend_from_slice(&scales[g..g + 2]);
        out.extend_from_slice(&biases[g..g + 2]);
        let code = |k: usize| mlx_code(data, 32 * b + k, 4) as u8;
        out.extend((0..16).map(|j| code(j) | code(j + 16) << 4));
    }
}

/// A block's 16 bytes of Q4_1-ordered codes packed back as MLX packs them.
fn mlx_codes(qs: &[u8]) -> [u8; 16] {
    let code = |k: usize| if k < 16 { qs[k] & 0x0F } else { qs[k - 16] >> 4 };
    std::array::from_fn(|j| code(2 * j) | code(2 * j + 1) << 4)
}

/// Whether the format's blocks carry a minimum (Q4_1, Q5_1, MLX's bias) or dmin (Q4_K, Q5_K)
/// after the scale.
const fn has_min(format: u8) -> bool {
    matches!(format, Q4_1 | Q5_1 | Q4_K | Q5_K | MLX4_F16 | MLX4_BF16)
}

/// Whether the format's weights have five bits.
const fn five_bits(format: u8) -> bool {
    matches!(format, Q5_0 | Q5_1 | Q5_K)
}

/// Where in a file block the separate f16 fields and the lines start: the f16s lead every block
/// but Q6_K's, which ends with its d.
const fn field_offsets(format: u8) -> (usize, usize) {
    match format {
        Q6_K => (208, 0),
        _ => (0, 2 * separate_f16s(format)),
    }
}

/// Q5_0 and Q5_1, whose fifth bits are rearranged at load.
const fn is_q5(format: u8) -> bool {
    matches!(format, Q5_0 | Q5_1)
}

/// A Q5 block's fifth bits (`qh`, bit `i` for weight `i`) rearranged so that byte `k` holds in
/// bit `j` the fifth bit of weight `4j + k`: the kernel's four weights `4j..4j + 4` (one per
/// byte) then take theirs by moving bit `j` of every byte to bit 4.
fn spread_fifth_bits(qh: u32) -> u32 {
    // Byte `b` of `qh` (weights 8b..8b + 8) gives bits 2b and 2b + 1 of every output byte: a
    // table, as every Q5 block of a model passes here at load.
    const BY_BYTE: [u32; 256] = {
        let mut table = [0; 256];
        let mut v = 0;
        while v < 256 {
            let mut k = 0;
            while k < 4 {
                table[v] |= ((v as u32 >> k) & 1) << (8 * k) | ((v as u32 >> (k + 4)) & 1) << (8 * k + 1);
                k += 1;
            }
            v += 1;
        }
        table
    };
    qh.to_le_bytes().iter().enumerate().fold(0, |spread, (b, &v)| spread | BY_BYTE[v as usize] << (2 * b))
}

/// The inverse of [`spread_fifth_bits`].
fn gather_fifth_bits(spread: u32) -> u32 {
    (0..32).filter(|i| spread >> (8 * (i % 4) + i / 4) & 1 == 1).map(|i| 1 << i).sum()
}

/// The f16 fields of a block that are kept apart from its lines, in `d` and `m`: the scale,
/// and Q4_1's and Q5_1's minimum. Q4_K and Q5_K keep all their bytes in lines, so that decode reads each
/// panel as one stream (with d and dmin apart: 31 GB/s against 37, before prefetching); Q6_K's
/// 210 bytes are not whole lines, so its d is apart.
const fn separate_f16s(format: u8) -> usize {
    match format {
        Q4_1 | Q5_1 | MLX4_F16 | MLX4_BF16 => 2,
        Q4_K | Q5_K => 0,
        _ => 1,
    }
}

const fn lines_per_block(format: u8) -> usize {
    match format {
        Q8_0 => 8,
        Q4_K => 36,
        Q5_K => 44,
        Q5_0 | Q5_1 => 5,
        Q6_K => 52,
        _ => 4,
    }
}

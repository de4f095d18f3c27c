//! Matrix products `out[m, rows] = x[m, cols] · Wᵀ` with W in any stored format.

use std::cell::RefCell;

use crate::act::{quantize_q8, quantize_q8k, Q8Block, Q8KBlock};
use crate::gemm::{self, PackedActs, PackedF32, TILE};
use crate::pool::{self, SharedPtr};
use crate::qdot::{isa, ActFormat, IsaKind};
use crate::{dequantize_row, FloatFormat, KernelError, RowFormat};

/// How a product treats activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// Float32 activations on exactly de-quantised weights.
    Exact,
    /// Activations rounded to 8 bits for integer dot products where the weight format has
    /// such a kernel (llama.cpp's approach); float weights stay exact.
    #[default]
    Fast,
}

thread_local! {
    /// Quantised activations, reused across calls so decoding does not allocate per token.
    static ACT_Q8: RefCell<Vec<Q8Block>> = const { RefCell::new(Vec::new()) };
    static ACT_Q8K: RefCell<Vec<Q8KBlock>> = const { RefCell::new(Vec::new()) };
    /// De-quantised weight rows of the exact path, per thread.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACKED: RefCell<PackedActs> = RefCell::new(PackedActs::default());
    static PACKED_F32: RefCell<PackedF32> = RefCell::new(PackedF32::default());
    /// Expanded weight rows of the many-token path, per thread.
    static EXPANDED: RefCell<(Vec<u8>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Rows de-quantised together by one task: enough work per task to amortise scheduling, few
/// enough that a 576-row matrix still splits across threads.
const ROWS_PER_TASK: usize = 16;
/// Tasks per thread for row-parallel products: enough to even out, few enough to stream.
const TASKS_PER_THREAD: usize = 4;
/// From this many tokens on, the tiled integer kernel beats one decode-kernel dot product per
/// token (it expands every row first: at 8 tokens, a batched decode step, the expansion cost
/// as much as the products — 8-sequence decode went from 286 to 362 tok/s at 32).
const GEMM_MIN_TOKENS: usize = 32;
/// From this many tokens on, the float tile kernel beats one dot product per token.
const FLOAT_TILES_MIN_TOKENS: usize = 8;
/// Rows per call of the tiled kernel, and row groups per task.
const GEMM_ROWS: usize = 4;
const GEMM_GROUPS_PER_TASK: usize = 2;

/// A weight matrix viewed in place (usually inside a memory map). Validated on construction,
/// so the kernels below never index out of bounds.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a> {
    format: RowFormat,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    params_per_row: usize,
    data: &'a [u8],
    scales: &'a [u8],
    biases: &'a [u8],
}

impl<'a> MatrixRef<'a> {
    /// `scales` and `biases` are MLX's per-group parameters (empty for other formats).
    pub fn new(
        format: RowFormat,
        rows: usize,
        cols: usize,
        data: &'a [u8],
        scales: &'a [u8],
        biases: &'a [u8],
    ) -> Result<Self, KernelError> {
        let bad = |what: String| KernelError::Shape { rows, cols, format, what };
        let row_bytes = format.row_bytes(cols)?;
        if rows.checked_mul(row_bytes) != Some(data.len()) {
            return Err(bad(format!("{} data bytes, expected {}", data.len(), rows * row_bytes)));
        }
        let params_per_row = match format {
            RowFormat::MlxAffine { group_size, params, .. } => {
                let per_row = cols / group_size * params.bytes();
                for (name, p) in [("scales", scales), ("biases", biases)] {
                    if p.len() != rows * per_row {
                        return Err(bad(format!("{} {name} bytes, expected {}", p.len(), rows * per_row)));
                    }
                }
                per_row
            }
            _ => 0,
        };
        Ok(MatrixRef { format, rows, cols, row_bytes, params_per_row, data, scales, biases })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn format(&self) -> RowFormat {
        self.format
    }

    /// Row `r`'s stored bytes.
    pub(crate) fn row_data(&self, r: usize) -> &'a [u8] {
        &self.data[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// De-quantises row `r` into `out` (length `cols`).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "row {r} of {}x{}", self.rows, self.cols);
        let (data, s, b) = self.row_bytes_of(r);
        dequantize_row(self.format, data, s, b, out);
    }

    /// The column step at which a row can be cut and de-quantised in pieces: the block or
    /// group length (1 for floats).
    pub fn segment_unit(&self) -> usize {
        match self.format {
            RowFormat::Float(_) => 1,
            RowFormat::Ggml(t) => t.block_len(),
            RowFormat::MlxAffine { group_size, .. } => group_size,
        }
    }

    /// De-quantises columns `c0..c1` of row `r` into `out`; `c0` is a multiple of
    /// [`Self::segment_unit`], and so is `c1` unless it is the row's end.
    pub fn row_segment(&self, r: usize, c0: usize, c1: usize, out: &mut [f32]) {
        let unit = self.segment_unit();
        assert!(
            r < self.rows
                && c0 <= c1
                && c1 <= self.cols
                && c0.is_multiple_of(unit)
                && (c1.is_multiple_of(unit) || c1 == self.cols)
                && out.len() == c1 - c0,
            "segment {c0}..{c1} of row {r} of {}x{}",
            self.rows,
            self.cols
        );
        let (data, s, b) = self.row_bytes_of(r);
        let (d0, d1) = (c0 / unit * self.unit_bytes(), c1.div_ceil(unit) * self.unit_bytes());
        let (s, b) = match self.format {
            RowFormat::MlxAffine { params, .. } => {
                let (g0, g1) = (c0 / unit * params.bytes(), c1.div_ceil(unit) * params.bytes());
                (&s[g0..g1], &b[g0..g1])
            }
            _ => (s, b),
        };
        dequantize_row(self.format, &data[d0..d1], s, b, out);
    }

    /// Stored bytes of one segment unit.
    fn unit_bytes(&self) -> usize {
        match self.format {
            RowFormat::Float(f) => f.bytes(),
            RowFormat::Ggml(t) => t.block_bytes(),
            RowFormat::MlxAffine { bits, group_size, .. } => group_size * bits as usize / 8,
        }
    }

    /// Rows `r0..r1` as f32, `cols` each: read in place when stored as aligned little-endian
    /// f32 (no copy: a third of an f32 model's matmul time went to copying rows), else
    /// de-quantised into `buf`.
    fn f32_rows<'s>(&'s self, r0: usize, r1: usize, buf: &'s mut Vec<f32>) -> &'s [f32] {
        if self.format == RowFormat::Float(FloatFormat::F32) && cfg!(target_endian = "little") {
            // SAFETY: any bit pattern is a valid f32; `align_to` only yields aligned values.
            let (head, rows, tail) = unsafe { self.data[r0 * self.row_bytes..r1 * self.row_bytes].align_to::<f32>() };
            if head.is_empty() && tail.is_empty() {
                return rows;
            }
        }
        buf.resize((r1 - r0) * self.cols, 0.0);
        for r in r0..r1 {
            self.row(r, &mut buf[(r - r0) * self.cols..(r - r0 + 1) * self.cols]);
        }
        &buf[..]
    }

    /// Row `r`'s stored bytes and its MLX scales and biases (empty for other formats).
    pub(crate) fn row_bytes_of(&self, r: usize) -> (&[u8], &[u8], &[u8]) {
        let data = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        if self.params_per_row == 0 {
            return (data, &[], &[]);
        }
        let p = r * self.params_per_row..(r + 1) * self.params_per_row;
        (data, &self.scales[p.clone()], &self.biases[p])
    }

    /// Several products of the same input (q, k and v; gate and up) in one parallel section,
    /// the input quantised once: for decoding, where each product alone is too short to keep
    /// every thread busy. Falls back to one `matmul` each where that does not apply.
    pub fn matmul_group(x: &[f32], parts: &mut [(MatrixRef<'_>, &mut [f32])], precision: Precision) {
        let first = parts[0].0;
        let m = x.len() / first.cols;
        // Many tokens on the integer GEMM: the input quantised and packed once for all parts.
        let tiled =
            |w: &MatrixRef<'_>| w.cols == first.cols && w.gemm_ok() && matches!(ActFormat::of(w.format), ActFormat::Q8 | ActFormat::Q8K);
        if matches!(precision, Precision::Fast) && m >= GEMM_MIN_TOKENS && parts.iter().all(|(w, _)| tiled(w)) {
            return PACKED.with_borrow_mut(|packed| {
                packed.quantize_and_pack(x, m, first.cols / 32);
                for (w, out) in parts.iter_mut() {
                    w.tiles_packed(packed, out, m);
                }
            });
        }
        for (w, out) in parts.iter_mut() {
            w.matmul(x, out, precision);
        }
    }

    /// `out[t * rows + r] = Σ_c x[t * cols + c] · W[r, c]` for `m = x.len() / cols` tokens.
    pub fn matmul(&self, x: &[f32], out: &mut [f32], precision: Precision) {
        let m = x.len() / self.cols;
        assert!(x.len() == m * self.cols && out.len() == m * self.rows, "matmul shapes");
        // Below GEMM_MIN_TOKENS, formats with an integer kernel keep to the decode kernels.
        let act = ActFormat::of(self.format);
        let integer = matches!((precision, act), (Precision::Fast, ActFormat::Q8 | ActFormat::Q8K)) && self.gemm_ok();
        match (precision, act) {
            (Precision::Fast, ActFormat::Q8 | ActFormat::Q8K) if m >= GEMM_MIN_TOKENS && self.gemm_ok() => self.matmul_tiles(x, out, m),
            _ if m >= FLOAT_TILES_MIN_TOKENS && !integer && gemm::float_tiles_ok() => self.matmul_float_tiles(x, out, m),
            (Precision::Exact, _) | (_, ActFormat::F32) => self.matmul_exact(x, out, m),
            (Precision::Fast, ActFormat::Q8) => ACT_Q8.with_borrow_mut(|q| {
                q.resize(x.len() / 32, Q8Block::default());
                quantize_q8(x, q);
                let q = &q[..];
                let nb = self.cols / 32;
                let isa = isa();
                self.for_each_row(out, m, |r| {
                    let (w, s, b) = self.row_bytes_of(r);
                    move |t| isa.dot_q8(self.format, w, s, b, &q[t * nb..(t + 1) * nb])
                });
            }),
            (Precision::Fast, ActFormat::Q8K) => ACT_Q8K.with_borrow_mut(|q| {
                q.resize(x.len() / 256, Q8KBlock::default());
                quantize_q8k(x, q);
                let q = &q[..];
                let nb = self.cols / 256;
                let isa = isa();
                self.for_each_row(out, m, |r| {
                    let (w, _, _) = self.row_bytes_of(r);
                    move |t| isa.dot_q8k(self.format, w, &q[t * nb..(t + 1) * nb])
                });
            }),
        }
    }

    fn gemm_ok(&self) -> bool {
        isa().kind == IsaKind::Avx512Vnni && self.cols.is_multiple_of(32) && gemm::supported(self.format)
    }

    /// Many tokens in float: rows (in place when stored as f32, else de-quantised exactly)
    /// eight at a time against 32 tokens per kernel call. Only the summation order differs
    /// from the exact path.
    fn matmul_float_tiles(&self, x: &[f32], out: &mut [f32], m: usize) {
        const ROWS_PER_CALL: usize = 8;
        PACKED_F32.with_borrow_mut(|packed| {
            packed.pack(x, m, self.cols);
            let packed = &*packed;
            let out_ptr = SharedPtr(out.as_mut_ptr());
            pool::global().run(self.rows.div_ceil(ROWS_PER_CALL), &|block| {
                ROWS.with_borrow_mut(|buf| {
                    let cols = self.cols;
                    let (r0, r1) = (block * ROWS_PER_CALL, ((block + 1) * ROWS_PER_CALL).min(self.rows));
                    let rows = self.f32_rows(r0, r1, buf);
                    // A short last block repeats its last row; only real rows are written.
                    let w: [&[f32]; ROWS_PER_CALL] = std::array::from_fn(|i| {
                        let r = (r0 + i).min(r1 - 1) - r0;
                        &rows[r * cols..(r + 1) * cols]
                    });
                    let mut res = [[0f32; TILE]; 2 * ROWS_PER_CALL];
                    for pair in 0..packed.tiles.div_ceil(2) {
                        let (t0, t1) = (2 * pair, (2 * pair + 1).min(packed.tiles - 1));
                        // SAFETY: `gemm::float_tiles_ok` checked the CPU; rows are `cols` long.
                        unsafe { gemm::avx512::tile8x2_f32(w, packed.tile(t0), packed.tile(t1), &mut res) };
                        for (half, tile) in [t0, t1].into_iter().enumerate().take(1 + usize::from(t1 != t0)) {
                            for (lane, t) in (tile * TILE..m.min((tile + 1) * TILE)).enumerate() {
                                for r in r0..r1 {
                                    // SAFETY: each task owns output columns r0..r1.
                                    unsafe { *out_ptr.get().add(t * self.rows + r) = res[half * ROWS_PER_CALL + r - r0][lane] };
                                }
                            }
                        }
                    }
                })
            });
        })
    }

    /// Many tokens: rows expanded once, then 16 tokens per kernel call (see [`gemm`]).
    fn matmul_tiles(&self, x: &[f32], out: &mut [f32], m: usize) {
        PACKED.with_borrow_mut(|packed| {
            packed.quantize_and_pack(x, m, self.cols / 32);
            self.tiles_packed(packed, out, m);
        })
    }

    /// [`MatrixRef::matmul_tiles`] on activations already quantised and packed.
    fn tiles_packed(&self, packed: &PackedActs, out: &mut [f32], m: usize) {
        let out_ptr = SharedPtr(out.as_mut_ptr());
        let groups = self.rows.div_ceil(GEMM_ROWS);
        pool::global().run(groups.div_ceil(GEMM_GROUPS_PER_TASK), &|task| {
            EXPANDED.with_borrow_mut(|(eq, ea, ec)| {
                let (sub, cols) = (self.cols / 16, self.cols);
                eq.resize(GEMM_ROWS * cols, 0);
                ea.resize(GEMM_ROWS * sub, 0.0);
                ec.resize(GEMM_ROWS * sub, 0.0);
                for group in task * GEMM_GROUPS_PER_TASK..((task + 1) * GEMM_GROUPS_PER_TASK).min(groups) {
                    // The last group repeats its final row rather than reading past the end.
                    let rows: [usize; GEMM_ROWS] = std::array::from_fn(|i| (GEMM_ROWS * group + i).min(self.rows - 1));
                    for (k, &r) in rows.iter().enumerate() {
                        let (w, s, b) = self.row_bytes_of(r);
                        let (q, a, c) =
                            (&mut eq[k * cols..(k + 1) * cols], &mut ea[k * sub..(k + 1) * sub], &mut ec[k * sub..(k + 1) * sub]);
                        gemm::expand_row(self.format, w, s, b, q, a, c);
                    }
                    let expanded: [(&[u8], &[f32], &[f32]); GEMM_ROWS] =
                        std::array::from_fn(|k| (&eq[k * cols..(k + 1) * cols], &ea[k * sub..(k + 1) * sub], &ec[k * sub..(k + 1) * sub]));
                    let mut res = [[0f32; TILE]; GEMM_ROWS];
                    for tile in 0..packed.tiles {
                        // SAFETY: `gemm_ok` checked the CPU's features; shapes match `packed`.
                        unsafe { gemm::avx512::tile(expanded, packed, tile, &mut res) };
                        for (lane, t) in (tile * TILE..m.min((tile + 1) * TILE)).enumerate() {
                            for (k, &r) in rows.iter().enumerate() {
                                if k == 0 || r != rows[k - 1] {
                                    // SAFETY: tasks own disjoint row groups.
                                    unsafe { *out_ptr.get().add(t * self.rows + r) = res[k][lane] };
                                }
                            }
                        }
                    }
                }
            })
        });
    }

    /// Runs `row_kernel(r)(t)` for every row `r` and token `t` in parallel over rows.
    fn for_each_row<K, F>(&self, out: &mut [f32], m: usize, row_kernel: K)
    where
        K: Fn(usize) -> F + Sync,
        // Called for tokens 0, 1, … in order, so it may carry work from one token to the next.
        F: FnMut(usize) -> f32,
    {
        let out_ptr = SharedPtr(out.as_mut_ptr());
        // A few long contiguous stretches per thread: the hardware prefetchers follow a stream
        // far better than many short jumps.
        let tasks = (pool::global().threads() * TASKS_PER_THREAD).min(self.rows.div_ceil(ROWS_PER_TASK)).max(1);
        let per_task = self.rows.div_ceil(tasks);
        pool::global().run(tasks, &|task| {
            for r in task * per_task..((task + 1) * per_task).min(self.rows) {
                let mut dot = row_kernel(r);
                for t in 0..m {
                    // SAFETY: tasks own disjoint row ranges, so writes never overlap.
                    unsafe { *out_ptr.get().add(t * self.rows + r) = dot(t) };
                }
            }
        });
    }

    fn matmul_exact(&self, x: &[f32], out: &mut [f32], m: usize) {
        let out_ptr = SharedPtr(out.as_mut_ptr());
        pool::global().run(self.rows.div_ceil(ROWS_PER_TASK), &|task| {
            ROWS.with_borrow_mut(|buf| {
                let r0 = task * ROWS_PER_TASK;
                let r1 = (r0 + ROWS_PER_TASK).min(self.rows);
                let block = self.f32_rows(r0, r1, buf);
                for t in 0..m {
                    let xt = &x[t * self.cols..(t + 1) * self.cols];
                    for r in r0..r1 {
                        let w = &block[(r - r0) * self.cols..(r - r0 + 1) * self.cols];
                        // SAFETY: each task writes only columns r0..r1 of every output row, and
                        // tasks have disjoint row ranges; `out` outlives the parallel loop.
                        unsafe { *out_ptr.get().add(t * self.rows + r) = dot(xt, w) };
                    }
                }
            })
        });
    }
}

/// Float dot product with eight independent accumulators, which lets the compiler vectorise
/// (to the width of the caller's target features: it is always inlined).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

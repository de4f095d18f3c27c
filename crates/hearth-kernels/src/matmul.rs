//! Matrix products `out[m, rows] = x[m, cols] · Wᵀ` with W in any stored format.

use rayon::prelude::*;

use crate::{dequantize_row, KernelError, RowFormat};

/// Rows de-quantised together by one task: enough work per task to amortise scheduling, few
/// enough that a 576-row matrix still splits across threads.
const ROWS_PER_TASK: usize = 16;

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

    /// De-quantises row `r` into `out` (length `cols`).
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols, "row {r} of {}x{}", self.rows, self.cols);
        let data = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        let p = r * self.params_per_row..(r + 1) * self.params_per_row;
        let (s, b) = if self.params_per_row > 0 { (&self.scales[p.clone()], &self.biases[p]) } else { (&[][..], &[][..]) };
        dequantize_row(self.format, data, s, b, out);
    }

    /// `out[t * rows + r] = Σ_c x[t * cols + c] · W[r, c]` for `m = x.len() / cols` tokens.
    pub fn matmul(&self, x: &[f32], out: &mut [f32]) {
        let m = x.len() / self.cols;
        assert!(x.len() == m * self.cols && out.len() == m * self.rows, "matmul shapes");
        let out_ptr = SendPtr(out.as_mut_ptr());
        (0..self.rows.div_ceil(ROWS_PER_TASK)).into_par_iter().for_each_init(
            || vec![0f32; ROWS_PER_TASK * self.cols],
            |buf, task| {
                let r0 = task * ROWS_PER_TASK;
                let r1 = (r0 + ROWS_PER_TASK).min(self.rows);
                for r in r0..r1 {
                    self.row(r, &mut buf[(r - r0) * self.cols..(r - r0 + 1) * self.cols]);
                }
                for t in 0..m {
                    let xt = &x[t * self.cols..(t + 1) * self.cols];
                    for r in r0..r1 {
                        let w = &buf[(r - r0) * self.cols..(r - r0 + 1) * self.cols];
                        // SAFETY: each task writes only columns r0..r1 of every output row, and
                        // tasks have disjoint row ranges; `out` outlives the parallel loop.
                        unsafe { *out_ptr.get().add(t * self.rows + r) = dot(xt, w) };
                    }
                }
            },
        );
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Float dot product with eight independent accumulators, which lets the compiler vectorise.
#[inline]
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

//! Float32 matrix products `C (+)= A · B` for many rows at once (training's forward and
//! backward passes, attention), register-blocked on AVX-512 and AVX2 with a portable fallback.
//!
//! `B` is never materialised whole: an [`Rhs`] hands out panels of `KC` rows by at most
//! `panel_width` columns, written into a per-thread buffer that stays in L2 while every row of
//! `A` passes over it. A quantised weight is de-quantised one panel at a time, so a product
//! through a frozen base (`x · Wᵀ` forward, `dy · W` backward) never holds a float copy of
//! the matrix. Sums run over the depth in order, `KC` at a time; the result does not depend on
//! the thread count.

use std::cell::RefCell;

use crate::pool::{self, SharedPtr};
use crate::qdot::isa;
#[cfg(target_arch = "x86_64")]
use crate::qdot::IsaKind;
use crate::MatrixRef;

/// Depth of one panel: a multiple of every block and group length, so panels of quantised
/// rows start on block boundaries.
const KC: usize = 256;
/// Tasks per thread a parallel product is cut into, at least.
const TASKS_PER_THREAD: usize = 8;

/// The right-hand side of a product, `B` `[depth, width]`, read a panel at a time.
pub trait Rhs: Sync {
    fn depth(&self) -> usize;
    fn width(&self) -> usize;
    /// The widest panel it hands out at once (a multiple of 32): wider for block formats
    /// whose blocks span more columns.
    fn panel_width(&self) -> usize {
        64
    }
    /// Writes `B[k0..k1, j0..j1]` into `out`, row `k - k0` starting at `(k - k0) * ld`.
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize);
    /// The whole-depth panel of columns `j0..` already laid out as [`Rhs::panel`] would write
    /// it (row stride `ld`), where `B` is stored that way; products then read it in place.
    fn stored_panel(&self, _j0: usize) -> Option<&[f32]> {
        None
    }
}

/// `B` stored row-major with row stride `ld`.
pub struct RowMajor<'a> {
    pub data: &'a [f32],
    pub depth: usize,
    pub width: usize,
    pub ld: usize,
}

/// `B = Mᵀ`, where `M` `[width, depth]` is stored row-major with row stride `ld`.
pub struct Transposed<'a> {
    pub data: &'a [f32],
    pub depth: usize,
    pub width: usize,
    pub ld: usize,
}

/// `B = W` for a weight `W` `[rows, cols]`: a product `dy · W` (the gradient of `x · Wᵀ`).
pub struct WeightRows<'a>(pub MatrixRef<'a>);

/// `B = Wᵀ`: the product `x · Wᵀ`, a linear layer's forward pass.
pub struct WeightT<'a>(pub MatrixRef<'a>);

impl RowMajor<'_> {
    pub fn new(data: &[f32], depth: usize, width: usize) -> RowMajor<'_> {
        RowMajor { data, depth, width, ld: width }
    }
}

impl Transposed<'_> {
    pub fn new(data: &[f32], width: usize, depth: usize) -> Transposed<'_> {
        Transposed { data, depth, width, ld: depth }
    }
}

impl Rhs for RowMajor<'_> {
    fn depth(&self) -> usize {
        self.depth
    }
    fn width(&self) -> usize {
        self.width
    }
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize) {
        for k in k0..k1 {
            out[(k - k0) * ld..][..j1 - j0].copy_from_slice(&self.data[k * self.ld + j0..k * self.ld + j1]);
        }
    }
}

impl Rhs for Transposed<'_> {
    fn depth(&self) -> usize {
        self.depth
    }
    fn width(&self) -> usize {
        self.width
    }
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize) {
        for j in j0..j1 {
            for (k, &v) in (k0..k1).zip(&self.data[j * self.ld + k0..j * self.ld + k1]) {
                out[(k - k0) * ld + j - j0] = v;
            }
        }
    }
}

impl Rhs for WeightRows<'_> {
    fn depth(&self) -> usize {
        self.0.rows()
    }
    fn width(&self) -> usize {
        self.0.cols()
    }
    fn panel_width(&self) -> usize {
        self.0.segment_unit().max(64).next_multiple_of(32)
    }
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize) {
        for k in k0..k1 {
            self.0.row_segment(k, j0, j1, &mut out[(k - k0) * ld..][..j1 - j0]);
        }
    }
}

/// `B = Wᵀ` repacked once into the panels [`gemm`] reads: a layer multiplied many times (an
/// encoder's) pays no per-call conversion or transposition. The products are the bits
/// [`WeightT`] gives.
pub struct PackedWeightT {
    depth: usize,
    width: usize,
    /// Columns per panel, as [`gemm`] cuts `B`.
    nc: usize,
    /// Panel after panel, each `[depth][ld]` with `ld` its width rounded up to 32.
    data: Vec<f32>,
}

impl PackedWeightT {
    pub fn new(w: &MatrixRef<'_>) -> Self {
        let source = WeightT(*w);
        let (depth, width, nc) = (source.depth(), source.width(), panel_width(&source));
        let mut data = vec![0f32; depth * width.next_multiple_of(32).max(nc)];
        let mut at = 0;
        for j0 in (0..width).step_by(nc) {
            let j1 = (j0 + nc).min(width);
            let ld = (j1 - j0).next_multiple_of(32);
            source.panel(0, depth, j0, j1, &mut data[at..at + depth * ld], ld);
            at += depth * ld;
        }
        data.truncate(at);
        PackedWeightT { depth, width, nc, data }
    }
}

impl Rhs for PackedWeightT {
    fn depth(&self) -> usize {
        self.depth
    }
    fn width(&self) -> usize {
        self.width
    }
    fn panel_width(&self) -> usize {
        self.nc
    }
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize) {
        let stored = self.stored_panel(j0).expect("panels start at multiples of the panel width");
        for k in k0..k1 {
            out[(k - k0) * ld..][..j1 - j0].copy_from_slice(&stored[k * ld..][..j1 - j0]);
        }
    }
    fn stored_panel(&self, j0: usize) -> Option<&[f32]> {
        j0.is_multiple_of(self.nc).then(|| {
            let ld = (self.width - j0).min(self.nc).next_multiple_of(32);
            &self.data[j0 * self.depth..][..self.depth * ld]
        })
    }
}

thread_local! {
    static SEGMENT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Rhs for WeightT<'_> {
    fn depth(&self) -> usize {
        self.0.cols()
    }
    fn width(&self) -> usize {
        self.0.rows()
    }
    fn panel(&self, k0: usize, k1: usize, j0: usize, j1: usize, out: &mut [f32], ld: usize) {
        // Sixteen rows at a time, so the transposed panel is written 16 floats at a stretch.
        const ROWS: usize = 16;
        let depth = k1 - k0;
        SEGMENT.with_borrow_mut(|seg| {
            seg.resize(ROWS * depth, 0.0);
            for g in (j0..j1).step_by(ROWS) {
                let count = ROWS.min(j1 - g);
                for (i, s) in seg.chunks_exact_mut(depth).take(count).enumerate() {
                    self.0.row_segment(g + i, k0, k1, s);
                }
                for k in 0..depth {
                    let o = &mut out[k * ld + g - j0..][..count];
                    o.iter_mut().enumerate().for_each(|(i, v)| *v = seg[i * depth + k]);
                }
            }
        });
    }
}

/// `C[rows, width] (+)= A[rows, depth] · B`, spread over the kernel pool. `A` and `C` are
/// row-major with row strides `lda` and `ldc`; without `accumulate`, `C` is overwritten.
pub fn gemm(a: &[f32], lda: usize, rows: usize, b: &dyn Rhs, c: &mut [f32], ldc: usize, accumulate: bool) {
    check(a, lda, rows, b, c, ldc);
    let nc = panel_width(b);
    let panels = b.width().div_ceil(nc);
    // Enough tasks for the threads to finish together; fewer row blocks de-quantise less.
    let threads = pool::global().threads();
    let kernel = Kernel::best();
    let row_blocks = (TASKS_PER_THREAD * threads).div_ceil(panels).min(rows.div_ceil(kernel.rows)).max(1);
    let per_block = rows.div_ceil(row_blocks).next_multiple_of(kernel.rows);
    let c_ptr = SharedPtr(c.as_mut_ptr());
    pool::global().run(panels * row_blocks, &|task| {
        let (p, rb) = (task % panels, task / panels);
        let (r0, r1) = ((rb * per_block).min(rows), ((rb + 1) * per_block).min(rows));
        // SAFETY: `check` validated C's extent; each task writes only rows r0..r1 and the
        // columns of panel p, which no other task touches.
        unsafe { block(kernel, a, lda, r0, r1, b, p * nc, ((p + 1) * nc).min(b.width()), c_ptr.get(), ldc, accumulate) };
    });
}

/// [`gemm`] on the calling thread only: for products inside a parallel section.
pub fn gemm_serial(a: &[f32], lda: usize, rows: usize, b: &dyn Rhs, c: &mut [f32], ldc: usize, accumulate: bool) {
    serial_with(Kernel::best(), a, lda, rows, b, c, ldc, accumulate);
}

#[allow(clippy::too_many_arguments)]
fn serial_with(kernel: Kernel, a: &[f32], lda: usize, rows: usize, b: &dyn Rhs, c: &mut [f32], ldc: usize, accumulate: bool) {
    check(a, lda, rows, b, c, ldc);
    let nc = panel_width(b);
    for j0 in (0..b.width()).step_by(nc) {
        // SAFETY: `check` validated C's extent, and `c` is borrowed mutably here.
        unsafe { block(kernel, a, lda, 0, rows, b, j0, (j0 + nc).min(b.width()), c.as_mut_ptr(), ldc, accumulate) };
    }
}

/// A deep, narrow `B` (a tied embedding's gradient: 49152 rows deep, 576 wide) is taken in
/// one panel, so the long rows of `A` are read once rather than once per panel.
fn panel_width(b: &dyn Rhs) -> usize {
    let whole = b.width().next_multiple_of(32);
    if b.depth() >= 8 * whole && whole <= 1024 {
        whole.max(b.panel_width())
    } else {
        b.panel_width()
    }
}

fn check(a: &[f32], lda: usize, rows: usize, b: &dyn Rhs, c: &[f32], ldc: usize) {
    let (k, m) = (b.depth(), b.width());
    assert!(lda >= k && ldc >= m, "gemm strides");
    assert!(rows == 0 || (a.len() >= (rows - 1) * lda + k && c.len() >= (rows - 1) * ldc + m), "gemm shapes");
}

/// Rows `r0..r1` and columns `j0..j1` (one panel's width) of the product, written through `c`.
///
/// # Safety
/// `c` must address `C` as [`check`] validated it, and no one else may touch those rows and
/// columns meanwhile (C is written through a pointer so that tasks never hold overlapping
/// `&mut` slices).
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    kernel: Kernel,
    a: &[f32],
    lda: usize,
    r0: usize,
    r1: usize,
    b: &dyn Rhs,
    j0: usize,
    j1: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let (depth, width) = (b.depth(), j1 - j0);
    let ld = width.next_multiple_of(32);
    if depth == 0 && !accumulate {
        for r in r0..r1 {
            std::slice::from_raw_parts_mut(c.add(r * ldc + j0), width).fill(0.0);
        }
    }
    let stored = b.stored_panel(j0);
    PANEL.with_borrow_mut(|panel| {
        panel.resize(if stored.is_some() { 0 } else { KC * ld }, 0.0);
        for k0 in (0..depth).step_by(KC) {
            let k1 = (k0 + KC).min(depth);
            let panel = match stored {
                Some(whole) => &whole[k0 * ld..],
                None => {
                    b.panel(k0, k1, j0, j1, panel, ld);
                    &panel[..]
                }
            };
            let mut r = r0;
            while r < r1 {
                let count = kernel.rows.min(r1 - r);
                let mut j = 0;
                while j < width {
                    let tile = Tile {
                        // SAFETY: A rows r..r+count have k1 columns (`check`); C as promised.
                        a: a.as_ptr().add(r * lda + k0),
                        lda,
                        b: panel.as_ptr().add(j),
                        ldb: ld,
                        kc: k1 - k0,
                        c: c.add(r * ldc + j0 + j),
                        ldc,
                        cols: kernel.cols.min(width - j),
                        add: accumulate || k0 > 0,
                    };
                    // SAFETY: the panel's rows have `ld ≥ j + kernel.cols` floats.
                    (kernel.run)(tile, count);
                    j += kernel.cols;
                }
                r += count;
            }
        }
    });
}

/// One kernel call: `C[count, cols] (+)= A[count, kc] · B[kc, cols]`, adding onto `C` when
/// `add`. `A` and `C` are row-major with strides `lda` and `ldc`; `B`'s rows (stride `ldb`)
/// are readable `Kernel::cols` wide.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
}

type Micro = unsafe fn(Tile, usize);

#[derive(Clone, Copy)]
struct Kernel {
    rows: usize,
    cols: usize,
    run: Micro,
}

const SCALAR: Kernel = Kernel { rows: 4, cols: 16, run: scalar_micro };
#[cfg(target_arch = "x86_64")]
const AVX512: Kernel = Kernel { rows: 12, cols: 32, run: avx512::micro };
#[cfg(target_arch = "x86_64")]
const AVX2: Kernel = Kernel { rows: 6, cols: 16, run: avx2::micro };

impl Kernel {
    /// The kernel for the instruction set in use (`HEARTH_ISA` may force a weaker one).
    fn best() -> Kernel {
        match isa().kind {
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512Vnni => AVX512,
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2 | IsaKind::AvxVnni if std::arch::is_x86_feature_detected!("fma") => AVX2,
            _ => SCALAR,
        }
    }
}

/// Calls `$f::<R>` for a run-time row count up to the kernel's.
macro_rules! by_rows {
    ($count:expr, $f:ident $args:tt; $($r:literal)*) => {
        match $count {
            $($r => $f::<$r> $args,)*
            _ => unreachable!("kernel row count"),
        }
    };
}

/// The portable kernel, the reference for the others.
unsafe fn scalar_micro(t: Tile, count: usize) {
    unsafe fn rows<const R: usize>(t: Tile) {
        let Tile { a, lda, b, ldb, kc, c, ldc, cols, add } = t;
        let mut acc = [[0f32; 16]; R];
        for k in 0..kc {
            let brow = std::slice::from_raw_parts(b.add(k * ldb), 16);
            for (i, acc) in acc.iter_mut().enumerate() {
                let av = *a.add(i * lda + k);
                acc.iter_mut().zip(brow).for_each(|(o, &bv)| *o += av * bv);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            let crow = std::slice::from_raw_parts_mut(c.add(i * ldc), cols);
            crow.iter_mut().zip(acc).for_each(|(o, v)| *o = if add { *o + v } else { *v });
        }
    }
    by_rows!(count, rows(t); 1 2 3 4)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// 12 rows × 32 columns: 24 accumulators, two loads of `B` and one broadcast per row.
    pub(super) unsafe fn micro(t: Tile, count: usize) {
        by_rows!(count, rows(t); 1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn rows<const R: usize>(t: Tile) {
        let Tile { a, lda, b, ldb, kc, c, ldc, cols, add } = t;
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        for k in 0..kc {
            let b0 = _mm512_loadu_ps(b.add(k * ldb));
            let b1 = _mm512_loadu_ps(b.add(k * ldb + 16));
            for i in 0..R {
                let av = _mm512_set1_ps(*a.add(i * lda + k));
                lo[i] = _mm512_fmadd_ps(av, b0, lo[i]);
                hi[i] = _mm512_fmadd_ps(av, b1, hi[i]);
            }
        }
        let m0: __mmask16 = if cols >= 16 { 0xFFFF } else { (1u16 << cols) - 1 };
        let m1: __mmask16 = if cols >= 32 {
            0xFFFF
        } else if cols > 16 {
            (1u16 << (cols - 16)) - 1
        } else {
            0
        };
        for i in 0..R {
            let p = c.add(i * ldc);
            let (l, h) = if add {
                (_mm512_add_ps(_mm512_maskz_loadu_ps(m0, p), lo[i]), _mm512_add_ps(_mm512_maskz_loadu_ps(m1, p.add(16)), hi[i]))
            } else {
                (lo[i], hi[i])
            };
            _mm512_mask_storeu_ps(p, m0, l);
            _mm512_mask_storeu_ps(p.add(16), m1, h);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// 6 rows × 16 columns: 12 accumulators in the 16 registers AVX2 has.
    pub(super) unsafe fn micro(t: Tile, count: usize) {
        by_rows!(count, rows(t); 1 2 3 4 5 6)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const R: usize>(t: Tile) {
        let Tile { a, lda, b, ldb, kc, c, ldc, cols, add } = t;
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for k in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(k * ldb));
            let b1 = _mm256_loadu_ps(b.add(k * ldb + 8));
            for i in 0..R {
                let av = _mm256_broadcast_ss(&*a.add(i * lda + k));
                lo[i] = _mm256_fmadd_ps(av, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(av, b1, hi[i]);
            }
        }
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.min(8) as i32), lanes);
        let m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.saturating_sub(8) as i32), lanes);
        for i in 0..R {
            let p = c.add(i * ldc);
            let (l, h) = if add {
                (_mm256_add_ps(_mm256_maskload_ps(p, m0), lo[i]), _mm256_add_ps(_mm256_maskload_ps(p.add(8), m1), hi[i]))
            } else {
                (lo[i], hi[i])
            };
            _mm256_maskstore_ps(p, m0, l);
            _mm256_maskstore_ps(p.add(8), m1, h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values as values;
    use crate::{FloatFormat, RowFormat};

    fn reference(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f64> {
        let mut out = vec![0f64; n * m];
        for i in 0..n {
            for kk in 0..k {
                for j in 0..m {
                    out[i * m + j] += a[i * k + kk] as f64 * b[kk * m + j] as f64;
                }
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f64], k: usize) {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-6 * k as f64, "element {i}: {g} vs {w}");
        }
    }

    /// Every kernel this CPU can run, whatever `HEARTH_ISA` chose.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    fn kernels() -> Vec<Kernel> {
        let mut all = vec![SCALAR];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                all.push(AVX2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                all.push(AVX512);
            }
        }
        all
    }

    #[test]
    fn every_kernel_matches_a_float64_reference_at_awkward_shapes() {
        for (n, k, m) in [(1, 1, 1), (13, 7, 33), (25, 300, 70), (241, 513, 130), (5, 1030, 8)] {
            let (a, b) = (values(n * k, 1), values(k * m, 2));
            let want = reference(&a, &b, n, k, m);
            for kernel in kernels() {
                let mut c = vec![f32::NAN; n * m];
                serial_with(kernel, &a, k, n, &RowMajor::new(&b, k, m), &mut c, m, false);
                close(&c, &want, k);
            }
            let mut c = vec![f32::NAN; n * m];
            gemm(&a, k, n, &RowMajor::new(&b, k, m), &mut c, m, false);
            close(&c, &want, k);
            // Bᵀ stored row-major gives the same product.
            let bt: Vec<f32> = (0..m).flat_map(|j| (0..k).map(move |kk| (j, kk))).map(|(j, kk)| b[kk * m + j]).collect();
            let mut c2 = vec![0f32; n * m];
            gemm_serial(&a, k, n, &Transposed::new(&bt, m, k), &mut c2, m, false);
            assert_eq!(c, c2);
            // Accumulating adds onto what is there.
            gemm(&a, k, n, &RowMajor::new(&b, k, m), &mut c2, m, true);
            c2.iter().zip(&c).for_each(|(x, y)| assert!((x - 2.0 * y).abs() <= 1e-4 * (1.0 + y.abs())));
        }
    }

    #[test]
    fn weights_give_their_rows_and_their_transpose() {
        let (rows, cols, n) = (70, 96, 9);
        let w = values(rows * cols, 3);
        let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let m = MatrixRef::new(RowFormat::Float(FloatFormat::F32), rows, cols, &bytes, &[], &[]).unwrap();
        let x = values(n * cols, 4);
        let wt: Vec<f32> = (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| w[r * cols + c]).collect();
        let mut y = vec![0f32; n * rows];
        gemm(&x, cols, n, &WeightT(m), &mut y, rows, false);
        close(&y, &reference(&x, &wt, n, cols, rows), cols);
        // Packed once, the same bits.
        let mut packed = vec![0f32; n * rows];
        gemm(&x, cols, n, &PackedWeightT::new(&m), &mut packed, rows, false);
        assert_eq!(y, packed);
        let dy = values(n * rows, 5);
        let mut dx = vec![0f32; n * cols];
        gemm(&dy, rows, n, &WeightRows(m), &mut dx, cols, false);
        close(&dx, &reference(&dy, &w, n, rows, cols), rows);
    }

    #[test]
    fn quantised_weights_give_the_products_of_their_whole_rows() {
        use hearth_formats::gguf::GgmlType;
        let (rows, cols, n) = (40, 512, 7);
        let w = values(rows * cols, 6);
        let x = values(n * cols, 7);
        let dy = values(n * rows, 8);
        let check_matrix = |m: MatrixRef<'_>| {
            let mut dense = vec![0f32; rows * cols];
            for (r, row) in dense.chunks_exact_mut(cols).enumerate() {
                m.row(r, row);
            }
            let wt: Vec<f32> = (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| dense[r * cols + c]).collect();
            let mut y = vec![0f32; n * rows];
            gemm(&x, cols, n, &WeightT(m), &mut y, rows, false);
            close(&y, &reference(&x, &wt, n, cols, rows), cols);
            let mut packed = vec![0f32; n * rows];
            gemm(&x, cols, n, &PackedWeightT::new(&m), &mut packed, rows, false);
            assert_eq!(y, packed);
            let mut dx = vec![0f32; n * cols];
            gemm(&dy, rows, n, &WeightRows(m), &mut dx, cols, false);
            close(&dx, &reference(&dy, &dense, n, rows, cols), rows);
        };
        for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
            let mut bytes = Vec::new();
            for row in w.chunks_exact(cols) {
                crate::quant::quantize_ggml(t, row, &mut bytes);
            }
            check_matrix(MatrixRef::new(RowFormat::Ggml(t), rows, cols, &bytes, &[], &[]).unwrap());
        }
        for (bits, group_size) in [(4, 64), (3, 32), (8, 128)] {
            let (mut data, mut scales, mut biases) = (Vec::new(), Vec::new(), Vec::new());
            for row in w.chunks_exact(cols) {
                let q = crate::quant::quantize_mlx_affine(row, bits, group_size);
                data.extend(q.packed);
                scales.extend(q.scales.iter().flat_map(|v| v.to_le_bytes()));
                biases.extend(q.biases.iter().flat_map(|v| v.to_le_bytes()));
            }
            let format = RowFormat::MlxAffine { bits, group_size, params: FloatFormat::F32 };
            check_matrix(MatrixRef::new(format, rows, cols, &data, &scales, &biases).unwrap());
        }
    }
}

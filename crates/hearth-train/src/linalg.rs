//! The products training needs, all on the kernels' float GEMM: a frozen weight applied
//! forward (`x · Wᵀ`) and transposed (`dy · W`), de-quantised a panel at a time, and the
//! adapters' small products.

use std::sync::Mutex;

use hearth_kernels::pool;
use hearth_kernels::sgemm::{gemm, RowMajor, Transposed, WeightRows, WeightT};
use hearth_kernels::MatrixRef;

/// `x` `[n, cols]` times the weight's transpose: `[n, rows]`.
pub(crate) fn forward(w: &MatrixRef<'_>, x: &[f32]) -> Vec<f32> {
    let n = x.len() / w.cols();
    let mut out = vec![0f32; n * w.rows()];
    gemm(x, w.cols(), n, &WeightT(*w), &mut out, w.rows(), false);
    out
}

/// `dy` `[n, rows]` times the weight: `[n, cols]`, the gradient of `forward`'s input.
pub(crate) fn backward(w: &MatrixRef<'_>, dy: &[f32]) -> Vec<f32> {
    let n = dy.len() / w.rows();
    let mut dx = vec![0f32; n * w.cols()];
    gemm(dy, w.rows(), n, &WeightRows(*w), &mut dx, w.cols(), false);
    dx
}

/// `a` `[n, k]` · `b` `[k, m]`.
pub(crate) fn mm(a: &[f32], b: &[f32], k: usize, m: usize) -> Vec<f32> {
    let n = a.len() / k;
    let mut out = vec![0f32; n * m];
    gemm(a, k, n, &RowMajor::new(b, k, m), &mut out, m, false);
    out
}

/// `a` `[n, k]` · `b`ᵀ where `b` is `[m, k]`.
pub(crate) fn mm_nt(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let (n, m) = (a.len() / k, b.len() / k);
    let mut out = vec![0f32; n * m];
    gemm(a, k, n, &Transposed::new(b, m, k), &mut out, m, false);
    out
}

/// `a`ᵀ · `b` where `a` is `[n, k]` and `b` is `[n, m]`: `[k, m]`. The narrower of the two
/// is transposed (an adapter's rank-wide side), never the wide one.
pub(crate) fn mm_tn(a: &[f32], b: &[f32], k: usize, m: usize) -> Vec<f32> {
    let n = a.len() / k;
    let mut out = vec![0f32; k * m];
    if k <= m {
        gemm(&transpose(a, n, k), n, k, &RowMajor::new(b, n, m), &mut out, m, false);
    } else {
        gemm(&transpose(b, n, m), n, m, &RowMajor::new(a, n, k), &mut out, k, false);
        out = transpose(&out, m, k);
    }
    out
}

/// `c += a · b`ᵀ where `a` is `[n, k]`, `b` is `[m, k]` and `c` is `[n, m]`.
pub(crate) fn add_mm_nt(c: &mut [f32], a: &[f32], b: &[f32], k: usize) {
    let (n, m) = (a.len() / k, b.len() / k);
    gemm(a, k, n, &Transposed::new(b, m, k), c, m, true);
}

/// `c += a · b` where `a` is `[n, k]`, `b` is `[k, m]` and `c` is `[n, m]`.
pub(crate) fn add_mm(c: &mut [f32], a: &[f32], b: &[f32], k: usize, m: usize) {
    gemm(a, k, a.len() / k, &RowMajor::new(b, k, m), c, m, true);
}

/// Splits `out` into blocks of whole rows (`width` values each) and runs `f(first row, block)`
/// for every block on the kernel pool: the element-wise passes between the products.
pub(crate) fn par_rows<T: Send>(out: &mut [T], width: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let mut none: [u8; 0] = [];
    par_rows2(out, width, &mut none, 0, |r0, a, _| f(r0, a));
}

/// [`par_rows`] over two outputs with the same rows (`w1` and `w2` values per row).
pub(crate) fn par_rows2<T: Send, U: Send>(o1: &mut [T], w1: usize, o2: &mut [U], w2: usize, f: impl Fn(usize, &mut [T], &mut [U]) + Sync) {
    let rows = o1.len() / w1.max(1);
    if rows == 0 {
        return;
    }
    let per = rows.div_ceil(4 * pool::global().threads());
    let mut second = o2.chunks_mut((per * w2).max(1));
    let blocks: Vec<Mutex<(&mut [T], &mut [U])>> =
        o1.chunks_mut(per * w1).map(|a| Mutex::new((a, if w2 == 0 { &mut [][..] } else { second.next().unwrap_or_default() }))).collect();
    pool::global().run(blocks.len(), &|i| {
        let mut block = blocks[i].lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = &mut *block;
        f(i * per, a, b);
    });
}

/// `a` `[n, k]` as `[k, n]`.
pub(crate) fn transpose(a: &[f32], n: usize, k: usize) -> Vec<f32> {
    let mut t = vec![0f32; n * k];
    for (i, row) in a.chunks_exact(k).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * n + i] = v;
        }
    }
    t
}

pub(crate) fn add_into(acc: &mut [f32], x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

//! The products training needs: a frozen weight applied forward (`x · Wᵀ`, on the engine's
//! kernels in their exact mode) and transposed (`dy · W`, a de-quantised row at a time, rows
//! shared among the cores), and small float products for the adapters and attention.

use hearth_kernels::{MatrixRef, Precision};

/// `x` `[n, cols]` times the weight's transpose: `[n, rows]`.
pub(crate) fn forward(w: &MatrixRef<'_>, x: &[f32]) -> Vec<f32> {
    let n = x.len() / w.cols();
    let mut out = vec![0f32; n * w.rows()];
    w.matmul(x, &mut out, Precision::Exact);
    out
}

/// `dy` `[n, rows]` times the weight: `[n, cols]`, the gradient of `forward`'s input.
pub(crate) fn backward(w: &MatrixRef<'_>, dy: &[f32]) -> Vec<f32> {
    let (rows, cols) = (w.rows(), w.cols());
    let n = dy.len() / rows;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows.max(1));
    let per = rows.div_ceil(threads);
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut dx = vec![0f32; n * cols];
                    let mut row = vec![0f32; cols];
                    for r in t * per..((t + 1) * per).min(rows) {
                        w.row(r, &mut row);
                        for (i, out) in dx.chunks_exact_mut(cols).enumerate() {
                            let g = dy[i * rows + r];
                            if g != 0.0 {
                                out.iter_mut().zip(&row).for_each(|(o, &v)| *o += g * v);
                            }
                        }
                    }
                    dx
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("backward thread")).collect()
    });
    let mut dx = vec![0f32; n * cols];
    for part in parts {
        dx.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    dx
}

/// `a` `[n, k]` · `b` `[k, m]`.
pub(crate) fn mm(a: &[f32], b: &[f32], k: usize, m: usize) -> Vec<f32> {
    let n = a.len() / k;
    let mut out = vec![0f32; n * m];
    for (arow, orow) in a.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (&av, brow) in arow.iter().zip(b.chunks_exact(m)) {
            orow.iter_mut().zip(brow).for_each(|(o, &bv)| *o += av * bv);
        }
    }
    out
}

/// `a` `[n, k]` · `b`ᵀ where `b` is `[m, k]`.
pub(crate) fn mm_nt(a: &[f32], b: &[f32], k: usize) -> Vec<f32> {
    let m = b.len() / k;
    a.chunks_exact(k).flat_map(|arow| b.chunks_exact(k).map(move |brow| dot(arow, brow))).take(a.len() / k * m).collect()
}

/// `a`ᵀ · `b` where `a` is `[n, k]` and `b` is `[n, m]`: `[k, m]`.
pub(crate) fn mm_tn(a: &[f32], b: &[f32], k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; k * m];
    for (arow, brow) in a.chunks_exact(k).zip(b.chunks_exact(m)) {
        for (&av, orow) in arow.iter().zip(out.chunks_exact_mut(m)) {
            orow.iter_mut().zip(brow).for_each(|(o, &bv)| *o += av * bv);
        }
    }
    out
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn add_into(acc: &mut [f32], x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

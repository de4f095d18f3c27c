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

/// `dy` `[n, rows]` times the weight: `[n, cols]`, the gradient of `forward`'s input. Rows are
/// shared among the cores; each takes them eight at a time (de-quantised into a small buffer),
/// so every row of `dx` is read and written once per eight weight rows, not once per row.
pub(crate) fn backward(w: &MatrixRef<'_>, dy: &[f32]) -> Vec<f32> {
    const R: usize = 8;
    let (rows, cols) = (w.rows(), w.cols());
    let n = dy.len() / rows;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(rows.div_ceil(R).max(1));
    let per = rows.div_ceil(threads).next_multiple_of(R);
    let parts: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut dx = vec![0f32; n * cols];
                    let mut block = vec![0f32; R * cols];
                    let mut r0 = t * per;
                    while r0 < ((t + 1) * per).min(rows) {
                        let count = R.min(rows - r0);
                        block[count * cols..].fill(0.0);
                        for k in 0..count {
                            w.row(r0 + k, &mut block[k * cols..(k + 1) * cols]);
                        }
                        for (i, out) in dx.chunks_exact_mut(cols).enumerate() {
                            let mut g = [0f32; R];
                            g[..count].copy_from_slice(&dy[i * rows + r0..i * rows + r0 + count]);
                            if g.iter().all(|&v| v == 0.0) {
                                continue;
                            }
                            let b: [&[f32]; R] = std::array::from_fn(|k| &block[k * cols..(k + 1) * cols]);
                            for (c, o) in out.iter_mut().enumerate() {
                                let mut acc = 0f32;
                                for k in 0..R {
                                    acc += g[k] * b[k][c];
                                }
                                *o += acc;
                            }
                        }
                        r0 += R;
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

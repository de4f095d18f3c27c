//! mlx-lm's batches and loss (`default_loss`): rows right-padded with token 0, the model run on
//! `tokens[:, :-1]` against targets `tokens[:, 1:]`, cross-entropy averaged over the targets
//! whose index `t + 1` satisfies `offset ≤ t + 1 ≤ length`. The `≤ length` counts one padding
//! target per padded row (mlx-lm#1697, not fixed upstream); it is kept so that losses equal
//! mlx-lm's, and [`Mask::Corrected`] gives `< length`.

use hearth_kernels::math;

use crate::linalg::par_rows2;

/// A batch: equal-length rows and, per row, `(offset, length)`: the prompt length masked out
/// under `--mask-prompt` (else 0) and the row's real length.
#[derive(Clone, Debug)]
pub struct Batch {
    pub tokens: Vec<Vec<u32>>,
    pub lengths: Vec<(usize, usize)>,
}

/// Which targets count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mask {
    /// mlx-lm's: `offset ≤ t + 1 ≤ length`.
    #[default]
    MlxLm,
    /// `offset ≤ t + 1 < length`: no padding target.
    Corrected,
}

impl Batch {
    /// Positions per row the model runs on (`T − 1`).
    pub fn steps(&self) -> usize {
        self.tokens.first().map_or(0, |r| r.len().saturating_sub(1))
    }

    /// The inputs, row after row.
    pub(crate) fn inputs(&self) -> Vec<u32> {
        self.tokens.iter().flat_map(|r| r[..r.len() - 1].iter().copied()).collect()
    }

    /// Per input position: its target, and whether it counts.
    pub(crate) fn targets(&self, mask: Mask) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        for (row, &(offset, length)) in self.tokens.iter().zip(&self.lengths) {
            for t in 0..row.len() - 1 {
                let step = t + 1;
                let inside = match mask {
                    Mask::MlxLm => step <= length,
                    Mask::Corrected => step < length,
                };
                out.push((row[step], step >= offset && inside));
            }
        }
        out
    }
}

/// Each row's cross-entropy against its target, and `∂loss/∂logits` of the mean over `ntoks`
/// targets (a batch's, of which `logits` `[n, vocab]` may be a part), written over `logits`.
/// Rows run on the kernel pool; the caller sums the losses in row order, so the loss does not
/// depend on the thread count.
pub fn cross_entropy(logits: &mut [f32], targets: &[u32], ntoks: usize) -> Vec<f64> {
    let vocab = logits.len() / targets.len().max(1);
    let mut losses = vec![0f64; targets.len()];
    par_rows2(logits, vocab, &mut losses, 1, |r0, rows, losses| {
        math::wide(|| {
            for ((row, &target), loss) in rows.chunks_exact_mut(vocab).zip(&targets[r0..]).zip(losses.iter_mut()) {
                let (max, picked) = (math::max(row), row[target as usize]);
                row.iter_mut().for_each(|l| *l = math::exp(*l - max));
                let sum = math::sum_of(row, |e| e);
                *loss = (max + sum.ln() - picked) as f64;
                let share = 1.0 / ntoks as f32;
                let to_grad = share / sum;
                row.iter_mut().for_each(|e| *e *= to_grad);
                row[target as usize] -= share;
            }
        })
    });
    losses
}

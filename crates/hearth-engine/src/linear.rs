//! Linear layers on our kernels, over host buffers: the weight in its stored format, or
//! repacked into panels where the CPU's integer kernels want them.

use hearth_kernels::panels::QuantPanels;
use hearth_kernels::{MatrixRef, Precision};

use crate::lora::Adapter;
use crate::weights::StoredTensor;
use crate::Result;

pub(crate) struct HostLinear {
    weight: StoredTensor,
    /// Weights in the formats with panels (GGUF's 4-, 5-, 6- and 8-bit blocks, MLX's 4-bit
    /// groups) repacked for the fast path (every instruction set has a panel kernel); they
    /// replace the file's bytes, whose mapped pages are released.
    panels: Option<QuantPanels>,
    bias: Option<Vec<f32>>,
    /// Where adapters keep this layer's delta.
    slot: usize,
}

/// Rows of a forward pass that run with an adapter (one sequence's tokens).
pub(crate) struct AdaptedRows<'a> {
    pub(crate) first: usize,
    pub(crate) count: usize,
    pub(crate) adapter: &'a Adapter,
}

impl HostLinear {
    pub(crate) fn new(weight: StoredTensor, bias: Option<Vec<f32>>, slot: usize, precision: Precision) -> Result<Self> {
        let panels = panels_for(&weight, precision)?;
        Ok(HostLinear { weight, panels, bias, slot })
    }

    /// The repacked weight, where the fast path has one.
    pub(crate) fn panels(&self) -> Option<&QuantPanels> {
        self.panels.as_ref()
    }

    /// Releases every file page of a repacked weight. Reads map a whole large page-cache folio,
    /// so reading later rows or neighbouring tensors brought back pages released while
    /// repacking (35 MB of a 606 MB Q4_K model).
    pub(crate) fn release_repacked_source(&self) {
        if self.panels.is_some() {
            self.weight.data.release_pages(0..self.weight.data.len());
        }
    }

    /// The stored weight, validated when loaded.
    fn matrix(&self) -> MatrixRef<'_> {
        self.weight.matrix().expect("validated when loaded")
    }

    /// `out[t, :] = x[t, :] · Wᵀ (+ bias)`, plus each adapted row's delta.
    pub(crate) fn matmul(&self, x: &[f32], out: &mut [f32], precision: Precision, adapted: &[AdaptedRows]) {
        match &self.panels {
            Some(p) => p.matmul(x, out),
            None => self.matrix().matmul(x, out, precision),
        }
        self.finish(x, out, adapted);
    }

    /// The bias and the adapters' deltas, after the product.
    fn finish(&self, x: &[f32], out: &mut [f32], adapted: &[AdaptedRows]) {
        if let Some(b) = &self.bias {
            out.chunks_exact_mut(b.len()).for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
        }
        for rows in adapted {
            if let Some(delta) = rows.adapter.delta(self.slot) {
                delta.apply_rows(x, out, rows.first, rows.count);
            }
        }
    }

    /// Several layers applied to the same input at once (see `MatrixRef::matmul_group`).
    pub(crate) fn matmul_group(x: &[f32], parts: &mut [(&HostLinear, &mut [f32])], precision: Precision, adapted: &[AdaptedRows]) {
        if parts.iter().all(|(l, _)| l.panels.is_some()) {
            let mut group: Vec<_> = parts.iter_mut().filter_map(|(l, out)| Some((l.panels.as_ref()?, &mut **out))).collect();
            QuantPanels::matmul_group(x, &mut group);
        } else if parts.iter().any(|(l, _)| l.panels.is_some()) {
            // Mixed formats: each on its own.
            for (l, out) in parts.iter_mut() {
                l.matmul(x, out, precision, adapted);
            }
            return;
        } else {
            let mut group: Vec<_> = parts.iter_mut().map(|(l, out)| (l.matrix(), &mut **out)).collect();
            MatrixRef::matmul_group(x, &mut group, precision);
        }
        for (l, out) in parts.iter_mut() {
            l.finish(x, out, adapted);
        }
    }
}

/// Quantised panels for `weight` where they serve: the fast path on the CPU. The file's pages
/// are released as they are repacked (the panels hold the same bytes; nothing reads the
/// originals on this path: an embedding table sharing them reads its rows from the panels),
/// and all once more when the model is loaded, see [`HostLinear::release_repacked_source`].
fn panels_for(weight: &StoredTensor, precision: Precision) -> Result<Option<QuantPanels>> {
    let m = weight.matrix()?;
    if precision != Precision::Fast {
        return Ok(None);
    }
    Ok(QuantPanels::new(&m, |copied| weight.data.release_pages(copied)))
}

//! CPU kernels over weights kept in their stored format. Every format de-quantises exactly
//! (the formulas of gguf-py and MLX), so the "float path" computes with float32 activations on
//! the file's exact weights; matrix products de-quantise a block of rows at a time into a
//! per-thread buffer, never the whole matrix.

pub mod act;
pub mod attend;
pub mod bf16;
mod dequant;
pub mod gemm;
pub mod int8;
pub mod math;
mod matmul;
pub mod panels;
pub mod pool;
pub mod qdot;
pub mod quant;
pub mod sgemm;

pub use dequant::dequantize_row;
pub use matmul::{dot, MatrixRef, Precision};

use hearth_formats::gguf::GgmlType;

/// Float formats used for weights and for MLX's per-group scales and biases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatFormat {
    F32,
    F16,
    BF16,
}

impl FloatFormat {
    pub fn bytes(self) -> usize {
        match self {
            FloatFormat::F32 => 4,
            FloatFormat::F16 | FloatFormat::BF16 => 2,
        }
    }

    #[inline]
    pub(crate) fn read(self, b: &[u8], i: usize) -> f32 {
        match self {
            FloatFormat::F32 => f32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()),
            FloatFormat::F16 => half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            FloatFormat::BF16 => half::bf16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
        }
    }
}

/// How one row of a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFormat {
    Float(FloatFormat),
    /// llama.cpp block quantisation (weights carry their own scales inside each block).
    Ggml(GgmlType),
    /// MLX affine quantisation: `bits`-wide unsigned integers packed little-endian into u32
    /// words, and per group of `group_size` a scale and a bias: w = scale * q + bias.
    MlxAffine {
        bits: u32,
        group_size: usize,
        params: FloatFormat,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{0:?} weights are not supported for computation")]
    Unsupported(RowFormat),
    #[error("weight matrix {rows}x{cols} in {format:?}: {what}")]
    Shape { rows: usize, cols: usize, format: RowFormat, what: String },
}

impl RowFormat {
    /// Bytes of one row of `cols` weights (for MLX: the packed integers only).
    pub fn row_bytes(self, cols: usize) -> Result<usize, KernelError> {
        let bad = |what: &str| KernelError::Shape { rows: 1, cols, format: self, what: what.into() };
        match self {
            RowFormat::Float(f) => Ok(cols * f.bytes()),
            RowFormat::Ggml(t) => {
                if !dequant::ggml_supported(t) {
                    return Err(KernelError::Unsupported(self));
                }
                if !cols.is_multiple_of(t.block_len()) {
                    return Err(bad("row length is not a whole number of blocks"));
                }
                Ok(cols / t.block_len() * t.block_bytes())
            }
            RowFormat::MlxAffine { bits, group_size, .. } => {
                if !matches!(bits, 2..=6 | 8) {
                    return Err(KernelError::Unsupported(self));
                }
                if group_size == 0 || !cols.is_multiple_of(group_size) || !(cols * bits as usize).is_multiple_of(32) {
                    return Err(bad("row length is not a whole number of groups"));
                }
                Ok(cols * bits as usize / 8)
            }
        }
    }
}

/// Deterministic values in [-1, 1] (xorshift from `seed`), for the kernels' tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

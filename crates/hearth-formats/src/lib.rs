//! Model file formats. Parsers never trust a file: every length, count and offset is checked
//! against the bytes actually present before anything is allocated or sliced, so a malformed
//! or hostile file yields a [`FormatError`], never a panic or an unbounded allocation.

mod bytes;
mod error;
pub mod gguf;
pub mod safetensors;
pub mod sentence;

pub use bytes::SharedBytes;
pub use error::FormatError;

/// How a tensor's elements are stored on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I8,
    U8,
    I16,
    I32,
    I64,
    U32,
    /// One of llama.cpp's block-quantised formats.
    Ggml(gguf::GgmlType),
}

impl DType {
    /// Bytes taken by a row of `n` elements, or an error if `n` does not fill whole blocks.
    pub fn row_bytes(self, n: u64) -> Result<u64, FormatError> {
        let (block, size) = match self {
            DType::F32 | DType::I32 | DType::U32 => (1, 4),
            DType::F16 | DType::BF16 | DType::I16 => (1, 2),
            DType::F64 | DType::I64 => (1, 8),
            DType::I8 | DType::U8 => (1, 1),
            DType::Ggml(t) => (t.block_len() as u64, t.block_bytes() as u64),
        };
        if !n.is_multiple_of(block) {
            return Err(FormatError::Invalid(format!("{n} elements do not fill whole {self:?} blocks of {block}")));
        }
        (n / block).checked_mul(size).ok_or_else(|| FormatError::Invalid("tensor size overflows".into()))
    }
}

/// Bytes of a tensor of this shape (innermost dimension first for GGUF, last for safetensors:
/// the caller passes the innermost length as `row_len`).
pub fn tensor_bytes(dtype: DType, row_len: u64, rows: u64) -> Result<u64, FormatError> {
    dtype.row_bytes(row_len)?.checked_mul(rows).ok_or_else(|| FormatError::Invalid("tensor size overflows".into()))
}

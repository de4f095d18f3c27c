//! An encoder's tensors, memory-mapped from its safetensors files and checked against the
//! config's shapes at load, so the forward pass never meets a malformed tensor.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_formats::safetensors::{self, SafeTensors, TensorView};
use hearth_formats::{DType, SharedBytes};
use hearth_kernels::bf16::Bf16Panels;
use hearth_kernels::int8::Int8Weights;
use hearth_kernels::sgemm::{gemm, PackedWeightT, Rhs};
use hearth_kernels::{FloatFormat, MatrixRef, RowFormat};

use crate::math;
use crate::{EmbedError, EmbedPrecision, Result};

/// Every tensor of a model directory, by name.
pub(crate) struct Tensors {
    map: BTreeMap<String, TensorView>,
    /// How linear layers loaded from here multiply.
    precision: EmbedPrecision,
}

impl Tensors {
    /// Tensors whose linear layers multiply in float32 (what rerankers, whose scores are
    /// compared by value, keep).
    pub fn open(dir: &Path) -> Result<Self> {
        let mut map = BTreeMap::new();
        for file in safetensors::model_files(dir)? {
            map.extend(SafeTensors::open(&file)?.tensors);
        }
        Ok(Tensors { map, precision: EmbedPrecision::Float32 })
    }

    /// Linear layers loaded from here multiply as `precision` says. For embeddings, compared
    /// by cosine: bf16 operands stay ≥ 0.99997 to sentence-transformers' float32 vectors on
    /// all-MiniLM, 8-bit ones ≥ 0.999 (tests/minilm.rs).
    pub fn with_precision(self, precision: EmbedPrecision) -> Self {
        Tensors { precision, ..self }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<(FloatFormat, SharedBytes)> {
        let view = self.map.get(name).ok_or_else(|| EmbedError::Weights(format!("missing tensor {name}")))?;
        let format = match view.dtype {
            DType::F32 => FloatFormat::F32,
            DType::F16 => FloatFormat::F16,
            DType::BF16 => FloatFormat::BF16,
            other => return Err(EmbedError::Unsupported(format!("{other:?} weights ({name})"))),
        };
        if view.shape != shape {
            return Err(EmbedError::Weights(format!("{name} has shape {:?}, expected {shape:?}", view.shape)));
        }
        Ok((format, view.data.clone()))
    }

    /// A `rows × cols` matrix (linear weights, embedding tables).
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let (format, data) = self.get(name, &[rows, cols])?;
        let m = Matrix { format: RowFormat::Float(format), rows, cols, data };
        m.view()?;
        Ok(m)
    }

    /// A vector (biases, LayerNorm parameters), converted to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (format, data) = self.get(name, &[len])?;
        let mut out = vec![0f32; len];
        MatrixRef::new(RowFormat::Float(format), 1, len, &data, &[], &[])?.row(0, &mut out);
        Ok(out)
    }

    pub fn layer_norm(&self, prefix: &str, len: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: self.vector(&format!("{prefix}.weight"), len)?, bias: self.vector(&format!("{prefix}.bias"), len)?, eps })
    }

    /// `y = x · Wᵀ + b` with W `out × inp`, named `{prefix}.weight` and `{prefix}.bias`.
    pub fn linear(&self, prefix: &str, out: usize, inp: usize) -> Result<Linear> {
        self.dense(prefix, out, inp, true)
    }

    /// As [`Tensors::linear`], with or without the bias.
    pub fn dense(&self, prefix: &str, out: usize, inp: usize, bias: bool) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), out, inp)?;
        let w = weight.checked();
        let fast = match self.precision {
            EmbedPrecision::Float32 => Fast::F32(PackedWeightT::new(&w)),
            EmbedPrecision::Float => Bf16Panels::new(&w).map_or_else(|| Fast::F32(PackedWeightT::new(&w)), Fast::Bf16),
            EmbedPrecision::Int8 => Int8Weights::new(&w).map_or_else(|| Fast::F32(PackedWeightT::new(&w)), Fast::Int8),
        };
        // Every form above is a copy: the file's pages of this weight are not read again.
        weight.data.release_pages(0..weight.data.len());
        let bias = bias.then(|| self.vector(&format!("{prefix}.bias"), out)).transpose()?;
        Ok(Linear { fast, bias })
    }
}

/// A float matrix kept in its stored format (usually inside the memory map).
pub(crate) struct Matrix {
    format: RowFormat,
    rows: usize,
    cols: usize,
    data: SharedBytes,
}

impl Matrix {
    fn view(&self) -> Result<MatrixRef<'_>> {
        Ok(MatrixRef::new(self.format, self.rows, self.cols, &self.data, &[], &[])?)
    }

    fn checked(&self) -> MatrixRef<'_> {
        self.view().expect("shape validated when loaded")
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Adds row `r` (as f32) to `out`.
    pub fn add_row(&self, r: usize, scratch: &mut [f32], out: &mut [f32]) {
        self.checked().row(r, scratch);
        out.iter_mut().zip(scratch.iter()).for_each(|(o, v)| *o += v);
    }
}

pub(crate) struct Linear {
    /// The weights repacked, once, for the product `precision` asks for.
    fast: Fast,
    bias: Option<Vec<f32>>,
}

enum Fast {
    /// float32 operands and sums (rerankers; embeddings where the CPU has no bf16 dot
    /// product): the register-blocked float GEMM.
    F32(PackedWeightT),
    /// bf16 operands, f32 sums (CPUs with bf16 dot products).
    Bf16(Bf16Panels),
    /// 8-bit weights and activations in blocks of 32 columns, integer sums.
    Int8(Int8Weights),
}

impl Linear {
    /// `out[t] = x[t] · Wᵀ + b` for every token row `t`.
    pub fn forward(&self, x: &[f32], out: &mut [f32]) {
        match &self.fast {
            Fast::F32(w) => gemm(x, w.depth(), x.len() / w.depth(), w, out, w.width(), false),
            Fast::Bf16(panels) => return panels.matmul(x, self.bias.as_deref(), out),
            Fast::Int8(w) => return w.matmul(x, self.bias.as_deref(), out),
        }
        if let Some(bias) = &self.bias {
            math::for_each_row(out, bias.len(), &|_, row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b));
        }
    }
}

pub(crate) struct LayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    pub fn len(&self) -> usize {
        self.weight.len()
    }

    /// Normalises each row of `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let n = self.weight.len() as f32;
        math::wide(
            #[inline(always)]
            || {
                for row in x.chunks_exact_mut(self.weight.len()) {
                    let mean = math::sum_of(row, |v| v) / n;
                    let var = math::sum_of(row, |v| (v - mean) * (v - mean)) / n;
                    let inv = 1.0 / (var + self.eps).sqrt();
                    for ((v, g), b) in row.iter_mut().zip(&self.weight).zip(&self.bias) {
                        *v = (*v - mean) * inv * g + b;
                    }
                }
            },
        )
    }
}

//! Where GGUF blocks and MLX affine groups hold the same numbers, so a conversion can move the
//! codes across as they are instead of de-quantising and quantising again: a Q4_0/Q4_1 block is
//! a 4-bit group of 32 (scale `d`, bias `m`, or `−8·d` for Q4_0), a Q8_0 block an 8-bit one
//! (bias `−128·d`); the other way, any MLX 4-bit group that is a multiple of 32 splits into Q4_1
//! blocks when its scale and bias are float16 values, into Q4_0 blocks when also bias = −8·scale,
//! and an 8-bit one into Q8_0 blocks when bias = −128·scale.

use half::f16;
use hearth_engine::weights::StoredTensor;
use hearth_formats::gguf::GgmlType;
use hearth_kernels::{dequantize_row, RowFormat};

use crate::{Affine, QuantizedRows};

/// The MLX layout a GGUF block type maps onto exactly.
pub(crate) fn affine_of(ty: GgmlType) -> Option<Affine> {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 => Some(Affine { bits: 4, group_size: 32 }),
        GgmlType::Q8_0 => Some(Affine { bits: 8, group_size: 32 }),
        _ => None,
    }
}

/// GGUF blocks of type `ty` (rows as stored) as MLX affine codes, scales and biases; `None` for
/// block types without an exact mapping.
pub(crate) fn ggml_to_affine(ty: GgmlType, data: &[u8]) -> Option<QuantizedRows> {
    affine_of(ty)?;
    let block = if ty == GgmlType::Q8_0 {
        34
    } else if ty == GgmlType::Q4_1 {
        20
    } else {
        18
    };
    let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = QuantizedRows { packed: Vec::with_capacity(data.len()), scales: Vec::new(), biases: Vec::new() };
    for b in data.chunks_exact(block) {
        let d = half(b);
        out.scales.push(d);
        if ty == GgmlType::Q8_0 {
            out.biases.push(-128.0 * d);
            out.packed.extend(b[2..].iter().map(|&v| (v as i8 as i16 + 128) as u8));
            continue;
        }
        let (bias, qs) = if ty == GgmlType::Q4_1 { (half(&b[2..]), &b[4..]) } else { (-8.0 * d, &b[2..]) };
        out.biases.push(bias);
        // llama.cpp keeps element j in the low nibble of byte j and element j + 16 in its high
        // nibble; MLX packs elements in order, two to a byte, low first.
        let code = |k: usize| if k < 16 { qs[k] & 15 } else { qs[k - 16] >> 4 };
        out.packed.extend((0..16).map(|k| code(2 * k) | (code(2 * k + 1) << 4)));
    }
    Some(out)
}

/// An MLX affine matrix as GGUF blocks of type `ty` (rows as stored), where every group maps
/// exactly; `None` otherwise.
pub(crate) fn affine_to_ggml(t: &StoredTensor, ty: GgmlType) -> Option<Vec<u8>> {
    let RowFormat::MlxAffine { bits, group_size, params } = t.format else { return None };
    let (scales, biases) = (t.scales.as_ref()?, t.biases.as_ref()?);
    let groups = scales.len() / params.bytes();
    let mut s = vec![0f32; groups];
    let mut m = vec![0f32; groups];
    dequantize_row(RowFormat::Float(params), scales, &[], &[], &mut s);
    dequantize_row(RowFormat::Float(params), biases, &[], &[], &mut m);
    let is_half = |v: f32| f16::from_f32(v).to_f32() == v;
    let fits = match (ty, bits) {
        (GgmlType::Q4_1, 4) => m.iter().all(|&v| is_half(v)),
        (GgmlType::Q4_0, 4) => s.iter().zip(&m).all(|(&d, &b)| b == -8.0 * d),
        (GgmlType::Q8_0, 8) => s.iter().zip(&m).all(|(&d, &b)| b == -128.0 * d),
        _ => false,
    };
    if !fits || !group_size.is_multiple_of(32) || !s.iter().all(|&v| is_half(v)) {
        return None;
    }
    let per_group = group_size / 32;
    let group_bytes = group_size * bits as usize / 8;
    let mut out = Vec::new();
    for (g, codes) in t.data.chunks_exact(group_bytes).enumerate() {
        let (d, bias) = (f16::from_f32(s[g]).to_le_bytes(), f16::from_f32(m[g]).to_le_bytes());
        for chunk in codes.chunks_exact(32 * bits as usize / 8).take(per_group) {
            out.extend(d);
            if ty == GgmlType::Q8_0 {
                out.extend(chunk.iter().map(|&c| (c as i16 - 128) as i8 as u8));
                continue;
            }
            if ty == GgmlType::Q4_1 {
                out.extend(bias);
            }
            let code = |k: usize| (chunk[k / 2] >> (4 * (k % 2))) & 15;
            out.extend((0..16).map(|j| code(j) | (code(j + 16) << 4)));
        }
    }
    Some(out)
}

//! Exact de-quantisation of one row, format by format (gguf-py's and MLX's formulas).

use half::f16;
use hearth_formats::gguf::GgmlType;

use crate::{FloatFormat, RowFormat};

pub(crate) fn ggml_supported(t: GgmlType) -> bool {
    use GgmlType::*;
    matches!(t, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q4K | Q5K | Q6K)
}

#[inline]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// De-quantises one row. `data` holds exactly the row's bytes; for MLX, `scales` and `biases`
/// hold the row's per-group parameters. `out.len()` is the row length. The caller (see
/// [`crate::MatrixRef`]) has validated the sizes.
pub fn dequantize_row(format: RowFormat, data: &[u8], scales: &[u8], biases: &[u8], out: &mut [f32]) {
    match format {
        RowFormat::Float(f) => float_row(f, data, out),
        RowFormat::Ggml(GgmlType::F32) => float_row(FloatFormat::F32, data, out),
        RowFormat::Ggml(GgmlType::F16) => float_row(FloatFormat::F16, data, out),
        RowFormat::Ggml(GgmlType::BF16) => float_row(FloatFormat::BF16, data, out),
        RowFormat::Ggml(t) => {
            let (n, bb) = (t.block_len(), t.block_bytes());
            for (block, o) in data.chunks_exact(bb).zip(out.chunks_exact_mut(n)) {
                ggml_block(t, block, o);
            }
        }
        RowFormat::MlxAffine { bits, group_size, params } => mlx_row(bits, group_size, params, data, scales, biases, out),
    }
}

/// One block of a GGUF block type (float tensors are read as rows: `float_row`).
fn ggml_block(t: GgmlType, b: &[u8], y: &mut [f32]) {
    match t {
        GgmlType::Q4_0 => {
            let d = f16_at(b, 0);
            for j in 0..16 {
                y[j] = ((b[2 + j] & 0xF) as i32 - 8) as f32 * d;
                y[j + 16] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            for j in 0..16 {
                y[j] = (b[4 + j] & 0xF) as f32 * d + m;
                y[j + 16] = (b[4 + j] >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q5_0 => {
            let d = f16_at(b, 0);
            let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = (((b[6 + j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
                y[j + 16] = (((b[6 + j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
            }
        }
        GgmlType::Q5_1 => {
            let (d, m) = (f16_at(b, 0), f16_at(b, 2));
            let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
            for j in 0..16 {
                let h0 = ((qh >> j) << 4) & 0x10;
                let h1 = (qh >> (j + 12)) & 0x10;
                y[j] = ((b[8 + j] & 0xF) as u32 | h0) as f32 * d + m;
                y[j + 16] = ((b[8 + j] >> 4) as u32 | h1) as f32 * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = f16_at(b, 0);
            for j in 0..32 {
                y[j] = b[2 + j] as i8 as f32 * d;
            }
        }
        GgmlType::Q4K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let mut q = &b[16..144];
            let mut is = 0;
            for chunk in y.chunks_exact_mut(64) {
                let (sc1, m1) = scale_min_k4(is, scales);
                let (sc2, m2) = scale_min_k4(is + 1, scales);
                let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    chunk[l] = d1 * (q[l] & 0xF) as f32 - min1;
                    chunk[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
                }
                q = &q[32..];
                is += 2;
            }
        }
        GgmlType::Q5K => {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let scales = &b[4..16];
            let qh = &b[16..48];
            let mut ql = &b[48..176];
            let (mut is, mut u1, mut u2) = (0, 1u8, 2u8);
            for chunk in y.chunks_exact_mut(64) {
                let (sc1, m1) = scale_min_k4(is, scales);
                let (sc2, m2) = scale_min_k4(is + 1, scales);
                let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
                let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
                for l in 0..32 {
                    let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                    chunk[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - min1;
                    chunk[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - min2;
                }
                ql = &ql[32..];
                is += 2;
                u1 <<= 2;
                u2 <<= 2;
            }
        }
        GgmlType::Q6K => {
            let d = f16_at(b, 208);
            for (half_idx, chunk) in y.chunks_exact_mut(128).enumerate() {
                let ql = &b[half_idx * 64..];
                let qh = &b[128 + half_idx * 32..];
                let sc = &b[192 + half_idx * 8..];
                for l in 0..32 {
                    let is = l / 16;
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                    chunk[l] = d * (sc[is] as i8 as f32) * q1 as f32;
                    chunk[l + 32] = d * (sc[is + 2] as i8 as f32) * q2 as f32;
                    chunk[l + 64] = d * (sc[is + 4] as i8 as f32) * q3 as f32;
                    chunk[l + 96] = d * (sc[is + 6] as i8 as f32) * q4 as f32;
                }
            }
        }
        other => unreachable!("{other:?} is rejected by RowFormat::row_bytes"),
    }
}

/// The 6-bit scale and min of sub-block `j` in a K-quant's packed 12-byte scales.
#[inline]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// A float row, one loop per format (a per-value format dispatch cost more than the copy).
fn float_row(f: FloatFormat, data: &[u8], out: &mut [f32]) {
    match f {
        FloatFormat::F32 => out.iter_mut().zip(data.chunks_exact(4)).for_each(|(o, b)| *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        FloatFormat::F16 => out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = f16::from_le_bytes([b[0], b[1]]).to_f32()),
        FloatFormat::BF16 => {
            out.iter_mut().zip(data.chunks_exact(2)).for_each(|(o, b)| *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
        }
    }
}

fn mlx_row(bits: u32, group_size: usize, params: FloatFormat, data: &[u8], scales: &[u8], biases: &[u8], out: &mut [f32]) {
    for (g, group) in out.chunks_exact_mut(group_size).enumerate() {
        let (s, b) = (params.read(scales, g), params.read(biases, g));
        for (i, o) in group.iter_mut().enumerate() {
            *o = s * mlx_code(data, g * group_size + i, bits) as f32 + b;
        }
    }
}

/// Code `idx` of an MLX affine row: `bits`-wide codes packed LSB first into a little-endian
/// stream (for 2, 4 and 8 bits the same as packing whole codes into u32 words).
#[inline]
pub(crate) fn mlx_code(row: &[u8], idx: usize, bits: u32) -> u32 {
    let bit = idx * bits as usize;
    let pair = u16::from_le_bytes([row[bit / 8], row.get(bit / 8 + 1).copied().unwrap_or(0)]);
    (pair as u32 >> (bit % 8)) & ((1 << bits) - 1)
}

//! Quantisers for writing model files (GGUF K-quants, MLX affine), so tests and benchmarks
//! can build models of any size with the project's own tools.

use half::f16;

/// Appends `x` (a multiple of 256 long) as Q4_K blocks: per 32 values an affine 4-bit grid
/// (scale and minimum), the 8 scales and minimums themselves 6-bit quantised against the
/// block's `d` and `dmin`. A plain min/max fit, not llama.cpp's iterative search.
pub fn quantize_q4k(x: &[f32], out: &mut Vec<u8>) {
    assert_eq!(x.len() % 256, 0, "Q4_K rows are whole blocks of 256");
    for block in x.chunks_exact(256) {
        let mut scale = [0f32; 8];
        let mut min = [0f32; 8];
        for (j, sub) in block.chunks_exact(32).enumerate() {
            let lo = sub.iter().copied().fold(0f32, f32::min);
            let hi = sub.iter().copied().fold(f32::MIN, f32::max);
            scale[j] = (hi - lo) / 15.0;
            min[j] = -lo;
        }
        let d = scale.iter().copied().fold(0f32, f32::max) / 63.0;
        let dmin = min.iter().copied().fold(0f32, f32::max) / 63.0;
        // Round the header to f16 first so the 6-bit codes are fitted to what readers see.
        let (d, dmin) = (f16::from_f32(d), f16::from_f32(dmin));
        let (df, dminf) = (d.to_f32(), dmin.to_f32());
        let code = |v: f32, unit: f32| if unit > 0.0 { (v / unit).round().clamp(0.0, 63.0) as u8 } else { 0 };
        let sc: [u8; 8] = std::array::from_fn(|j| code(scale[j], df));
        let mn: [u8; 8] = std::array::from_fn(|j| code(min[j], dminf));
        let mut packed = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                packed[j] = sc[j] & 63;
                packed[j + 4] = mn[j] & 63;
            } else {
                packed[j + 4] = (sc[j] & 0xF) | ((mn[j] & 0xF) << 4);
                packed[j - 4] |= (sc[j] >> 4) << 6;
                packed[j] |= (mn[j] >> 4) << 6;
            }
        }
        let mut q = [0u8; 256];
        for (j, sub) in block.chunks_exact(32).enumerate() {
            let (s, m) = (df * sc[j] as f32, dminf * mn[j] as f32);
            for (qi, &v) in q[j * 32..(j + 1) * 32].iter_mut().zip(sub) {
                *qi = if s > 0.0 { ((v + m) / s).round().clamp(0.0, 15.0) as u8 } else { 0 };
            }
        }
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&dmin.to_le_bytes());
        out.extend_from_slice(&packed);
        for c in 0..4 {
            for l in 0..32 {
                out.push(q[c * 64 + l] | (q[c * 64 + 32 + l] << 4));
            }
        }
    }
}

/// One row quantised as `mlx.core.quantize` does in affine mode: per group of `group_size`
/// values a scale and a bias, codes of `bits` bits packed LSB first into little-endian bytes.
pub struct MlxAffineRow {
    pub packed: Vec<u8>,
    pub scales: Vec<f32>,
    pub biases: Vec<f32>,
}

/// MLX's affine quantiser on one row (its CPU `quantize`): the group's edge of larger
/// magnitude is the bias and an exact code, so zero stays representable; scales may be
/// negative. `bits` in {2, 3, 4, 5, 6, 8}; `group_size` divides the row.
pub fn quantize_mlx_affine(row: &[f32], bits: u32, group_size: usize) -> MlxAffineRow {
    assert!(matches!(bits, 2..=6 | 8) && group_size > 0 && row.len().is_multiple_of(group_size));
    let n_bins = ((1u32 << bits) - 1) as f32;
    let mut out = MlxAffineRow { packed: Vec::with_capacity(row.len() * bits as usize / 8), scales: Vec::new(), biases: Vec::new() };
    // Codes are gathered into a bit stream, flushed byte by byte (LSB first).
    let (mut acc, mut held) = (0u64, 0u32);
    for group in row.chunks_exact(group_size) {
        let w_min = group.iter().copied().fold(f32::INFINITY, f32::min);
        let w_max = group.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut scale = ((w_max - w_min) / n_bins).max(1e-7);
        let edge = if w_min.abs() > w_max.abs() {
            w_min
        } else {
            scale = -scale;
            w_max
        };
        let q0 = (edge / scale).round_ties_even();
        let bias = if q0 != 0.0 {
            scale = edge / q0;
            edge
        } else {
            0.0
        };
        out.scales.push(scale);
        out.biases.push(bias);
        for &w in group {
            let q = ((w - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u64;
            acc |= q << held;
            held += bits;
            while held >= 8 {
                out.packed.push(acc as u8);
                acc >>= 8;
                held -= 8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{dequantize_row, RowFormat};
    use hearth_formats::gguf::GgmlType;

    #[test]
    fn q4k_round_trips_within_its_grid() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut bytes = Vec::new();
        quantize_q4k(&x, &mut bytes);
        assert_eq!(bytes.len(), 2 * 144);
        let mut y = vec![0f32; 512];
        dequantize_row(RowFormat::Ggml(GgmlType::Q4K), &bytes, &[], &[], &mut y);
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        // Values span 2.0 per 32: a 4-bit grid step is 2/15, plus 6-bit rounding of the scales.
        assert!(worst < 0.12, "max error {worst}");
    }

    /// Codes of any width, read back from the LSB-first stream: within a step of the input
    /// (half a step inside the grid; MLX trades the clamped far end of the range for an exact
    /// zero), zero exact; and for the widths the model reader takes (2, 4, 8) the reader agrees.
    #[test]
    fn mlx_affine_rows_read_back_within_a_step() {
        let row: Vec<f32> = (0..128).map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0).chain([0.0; 64]).collect();
        for bits in [2, 3, 4, 5, 6, 8] {
            for group in [32, 64] {
                let q = quantize_mlx_affine(&row, bits, group);
                assert_eq!(q.packed.len(), row.len() * bits as usize / 8);
                let code = |i: usize| {
                    let bit = i * bits as usize;
                    let pair = u16::from_le_bytes([q.packed[bit / 8], *q.packed.get(bit / 8 + 1).unwrap_or(&0)]);
                    ((pair >> (bit % 8)) & ((1 << bits) - 1)) as f32
                };
                let back: Vec<f32> = (0..row.len()).map(|i| q.scales[i / group] * code(i) + q.biases[i / group]).collect();
                for (i, (o, b)) in row.iter().zip(&back).enumerate() {
                    assert!((o - b).abs() <= q.scales[i / group].abs() + 1e-6, "{bits} bits, group {group}: {o} read back as {b}");
                }
                assert!(back[128..].iter().all(|&v| v == 0.0), "{bits} bits: zero is not exact");
                if matches!(bits, 2 | 4 | 8) {
                    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                    let format = RowFormat::MlxAffine { bits, group_size: group, params: crate::FloatFormat::F32 };
                    let mut read = vec![0f32; row.len()];
                    dequantize_row(format, &q.packed, &f32_bytes(&q.scales), &f32_bytes(&q.biases), &mut read);
                    assert_eq!(read, back, "{bits} bits, group {group}");
                }
            }
        }
    }
}

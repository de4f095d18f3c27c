//! Quantisers for writing model files (GGUF K-quants), so tests and benchmarks can build
//! models of any size with the project's own tools.

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
}

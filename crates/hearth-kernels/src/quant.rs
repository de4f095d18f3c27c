//! Quantisers for writing model files: GGUF's block types as llama.cpp writes them and MLX's
//! affine groups as mlx-lm writes them, for `hearth convert` and for tests and benchmarks that
//! build models with the project's own tools.

use half::f16;
use hearth_formats::gguf::GgmlType;

/// GGUF block types this module writes.
pub const GGUF_QUANTS: [GgmlType; 8] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

/// Appends `x` as blocks of `ty` (one of [`GGUF_QUANTS`]; `x` a multiple of its block) the way
/// llama.cpp's reference quantisers (`quantize_row_*_ref`, what `llama-quantize` runs without an
/// importance matrix) do, operation for operation, so the bytes are the same.
pub fn quantize_ggml(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) {
    let block = ty.block_len();
    assert!(GGUF_QUANTS.contains(&ty) && x.len().is_multiple_of(block), "{ty:?} rows are whole blocks of {block}");
    for b in x.chunks_exact(block) {
        match ty {
            GgmlType::Q4_0 => symmetric_block(b, 4, out),
            GgmlType::Q5_0 => symmetric_block(b, 5, out),
            GgmlType::Q4_1 => min_max_block(b, 4, out),
            GgmlType::Q5_1 => min_max_block(b, 5, out),
            GgmlType::Q8_0 => q8_0_block(b, out),
            GgmlType::Q4K => k_block(b, 15, out),
            GgmlType::Q5K => k_block(b, 31, out),
            _ => q6_k_block(b, out),
        }
    }
}

fn half(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

fn f16_round(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// ggml's `nearest_int`: round half to even through the float's mantissa.
fn nearest_int(v: f32) -> i32 {
    debug_assert!(v.abs() <= 4_194_303.0);
    ((v + 12_582_912.0).to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Q4_0 / Q5_0: the value of largest magnitude is code 0 (`d = max / -2^(bits-1)`); element j
/// and j + 16 share a byte, a 5th bit goes to `qh`.
fn symmetric_block(x: &[f32], bits: u32, out: &mut Vec<u8>) {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let levels = (1 << (bits - 1)) as f32;
    let d = max / -levels;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = (1u8 << bits) - 1;
    // C's `(int8_t)(x + 8.5f)`: truncation toward zero.
    let codes: Vec<u8> = x.iter().map(|&v| ((v * id + levels + 0.5) as i32 as i8 as u8).min(top)).collect();
    out.extend_from_slice(&half(d));
    pack_low_high(&codes, bits, out);
}

/// Q4_1 / Q5_1: `d = (max − min) / (2^bits − 1)`, the minimum as `m`.
fn min_max_block(x: &[f32], bits: u32, out: &mut Vec<u8>) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        min = min.min(v);
        max = max.max(v);
    }
    let d = (max - min) / ((1 << bits) - 1) as f32;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let top = (1u8 << bits) - 1;
    let codes: Vec<u8> = x.iter().map(|&v| (((v - min) * id + 0.5) as i32 as u8).min(top)).collect();
    out.extend_from_slice(&half(d));
    out.extend_from_slice(&half(min));
    pack_low_high(&codes, bits, out);
}

/// 32 codes as llama.cpp's legacy blocks hold them: for 5 bits first `qh` (bit 4 of code j at
/// bit j), then 16 bytes, code j in the low nibble of byte j and code j + 16 in the high one.
fn pack_low_high(codes: &[u8], bits: u32, out: &mut Vec<u8>) {
    if bits == 5 {
        let qh = codes.iter().enumerate().fold(0u32, |acc, (j, &c)| acc | (((c as u32 >> 4) & 1) << j));
        out.extend_from_slice(&qh.to_le_bytes());
    }
    out.extend((0..16).map(|j| (codes[j] & 15) | ((codes[j + 16] & 15) << 4)));
}

fn q8_0_block(x: &[f32], out: &mut Vec<u8>) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out.extend_from_slice(&half(d));
    out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
}

/// ggml's `make_qkx2_quants`: an affine grid `scale · l − min` over `x` whose scale and minimum
/// are searched (`nstep` candidates around the min/max fit) by weighted least squares. Returns
/// the scale and the (positive) minimum.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(nmax: i32, x: &[f32; 32], weights: &[f32; 32], l_out: &mut [u8; 32], rmin: f32, rdelta: f32, nstep: i32) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            aux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&aux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Q4_K / Q5_K (`nmax` 15 / 31): 8 sub-blocks of 32 with a searched affine grid each, their
/// scales and minimums 6-bit codes of the block's `d` and `dmin`.
fn k_block(x: &[f32], nmax: i32, out: &mut Vec<u8>) {
    let mut l = [0u8; 256];
    let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    let (rmin, nstep) = if nmax == 15 { (-1.0, 20) } else { (-0.5, 15) };
    for j in 0..8 {
        let sub: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("a sub-block of 32");
        let sum_x2 = sub.iter().fold(0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|i| av_x + sub[i].abs());
        let codes: &mut [u8; 32] = (&mut l[32 * j..32 * j + 32]).try_into().expect("a sub-block of 32");
        (scales[j], mins[j]) = make_qkx2_quants(nmax, sub, &weights, codes, rmin, 0.1, nstep);
        max_scale = max_scale.max(scales[j]);
        max_min = max_min.max(mins[j]);
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        // `(uint8_t)nearest_int(..)` then MIN(63, ..).
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let (d, dmin) = (max_scale / 63.0, max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = f16_round(d) * sc as f32;
        if dj == 0.0 {
            continue;
        }
        let dm = f16_round(dmin) * m as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    out.extend_from_slice(&half(d));
    out.extend_from_slice(&half(dmin));
    out.extend_from_slice(&packed);
    if nmax == 31 {
        let mut qh = [0u8; 32];
        for (pair, (m1, m2)) in [(1u8, 2u8), (4, 8), (16, 32), (64, 128)].into_iter().enumerate() {
            for j in 0..32 {
                qh[j] |= if l[64 * pair + j] > 15 { m1 } else { 0 } | if l[64 * pair + j + 32] > 15 { m2 } else { 0 };
            }
        }
        out.extend_from_slice(&qh);
    }
    for n in (0..256).step_by(64) {
        out.extend((0..32).map(|j| (l[n + j] & 15) | ((l[n + j + 32] & 15) << 4)));
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and minimum codes.
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml's `make_qx_quants` with `rmse_type` 1 and no weights: a symmetric grid of `2·nmax`
/// levels whose scale is searched around `max / −nmax`; codes are stored offset by `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < 1e-15 {
        l_out.fill(0);
        return 0.0;
    }
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = code(iscale, v);
        l_out[i] = (l + nmax) as i8;
        let (w, lf) = (v * v, l as f32);
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (mut slx, mut sl2) = (0f32, 0f32);
        for &v in x {
            let (w, lf) = (v * v, code(iscale, v) as f32);
            slx += w * v * lf;
            sl2 += w * lf * lf;
        }
        if sl2 > 0.0 && slx * slx > best * sl2 {
            for (i, &v) in x.iter().enumerate() {
                l_out[i] = (code(iscale, v) + nmax) as i8;
            }
            scale = slx / sl2;
            best = scale * slx;
        }
    }
    scale
}

/// Q6_K: 16 sub-blocks of 16 on symmetric 6-bit grids, their scales 8-bit codes of `d`.
fn q6_k_block(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; 256];
    let mut scales = [0f32; 16];
    let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
    for ib in 0..16 {
        scales[ib] = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        if scales[ib].abs() > max_abs_scale {
            max_abs_scale = scales[ib].abs();
            max_scale = scales[ib];
        }
    }
    if max_abs_scale < 1e-15 {
        out.extend_from_slice(&[0u8; 210]);
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = 1.0 / iscale;
    let sc: [i8; 16] = std::array::from_fn(|ib| nearest_int(iscale * scales[ib]).min(127) as i8);
    for j in 0..16 {
        let dj = f16_round(d) * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        for i in 0..16 {
            l[16 * j + i] = (nearest_int(x[16 * j + i] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    let l = l.map(|v| v as u8);
    let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
    for (half_block, j) in (0..256).step_by(128).enumerate() {
        for i in 0..32 {
            let q = |k: usize| l[j + i + 32 * k];
            ql[64 * half_block + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
            ql[64 * half_block + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
            qh[32 * half_block + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&v| v as u8));
    out.extend_from_slice(&half(d));
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
        quantize_ggml(GgmlType::Q4K, &x, &mut bytes);
        assert_eq!(bytes.len(), 2 * 144);
        let mut y = vec![0f32; 512];
        dequantize_row(RowFormat::Ggml(GgmlType::Q4K), &bytes, &[], &[], &mut y);
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        // Values span 2.0 per 32: a 4-bit grid step is 2/15, plus 6-bit rounding of the scales.
        assert!(worst < 0.12, "max error {worst}");
    }

    /// Codes of any width, read back from the LSB-first stream: within a step of the input
    /// (half a step inside the grid; MLX trades the clamped far end of the range for an exact
    /// zero), zero exact; and the model reader agrees, at every width.
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
                let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
                let format = RowFormat::MlxAffine { bits, group_size: group, params: crate::FloatFormat::F32 };
                let mut read = vec![0f32; row.len()];
                dequantize_row(format, &q.packed, &f32_bytes(&q.scales), &f32_bytes(&q.biases), &mut read);
                assert_eq!(read, back, "{bits} bits, group {group}");
            }
        }
    }
}

//! Portable integer dot products of one quantised weight row with 8-bit activations. They
//! define the arithmetic the SIMD versions must reproduce (up to float summation order).

use crate::act::{Q8Block, Q8KBlock};
use crate::FloatFormat;

#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

fn idot(w: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    w.zip(x).map(|(a, &b)| a * b as i32).sum()
}

/// Unsigned 4-bit weights of a 32-block in element order: low nibbles then high nibbles.
fn nibbles(qs: &[u8]) -> impl Iterator<Item = i32> + '_ {
    qs[..16].iter().map(|&b| (b & 0xF) as i32).chain(qs[..16].iter().map(|&b| (b >> 4) as i32))
}

pub fn q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(18).zip(x).map(|(b, a)| f16_at(b, 0) * (a.d * idot(nibbles(&b[2..]), &a.qs) as f32 - 8.0 * a.sum)).sum()
}

pub fn q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(20).zip(x).map(|(b, a)| f16_at(b, 0) * a.d * idot(nibbles(&b[4..]), &a.qs) as f32 + f16_at(b, 2) * a.sum).sum()
}

fn q5_values(qh: u32, qs: &[u8]) -> impl Iterator<Item = i32> + '_ {
    (0..32).map(move |j| {
        let low = if j < 16 { qs[j] & 0xF } else { qs[j - 16] >> 4 } as u32;
        (low | (((qh >> j) & 1) << 4)) as i32
    })
}

pub fn q5_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(22)
        .zip(x)
        .map(|(b, a)| {
            let qh = u32::from_le_bytes(b[2..6].try_into().unwrap());
            f16_at(b, 0) * (a.d * idot(q5_values(qh, &b[6..]), &a.qs) as f32 - 16.0 * a.sum)
        })
        .sum()
}

pub fn q5_1(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(24)
        .zip(x)
        .map(|(b, a)| {
            let qh = u32::from_le_bytes(b[4..8].try_into().unwrap());
            f16_at(b, 0) * a.d * idot(q5_values(qh, &b[8..]), &a.qs) as f32 + f16_at(b, 2) * a.sum
        })
        .sum()
}

pub fn q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
    row.chunks_exact(34).zip(x).map(|(b, a)| f16_at(b, 0) * a.d * idot(b[2..].iter().map(|&v| v as i8 as i32), &a.qs) as f32).sum()
}

/// 6-bit scale and min of sub-block `j` from a K-quant's 12 packed bytes.
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K and Q5_K share their layout of eight 32-weight sub-blocks with 6-bit scales and mins.
fn k_quant(row: &[u8], x: &[Q8KBlock], block_bytes: usize, value: impl Fn(&[u8], usize) -> i32) -> f32 {
    row.chunks_exact(block_bytes)
        .zip(x)
        .map(|(b, a)| {
            let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
            let (mut sum, mut mins) = (0i32, 0i32);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &b[4..16]);
                let dot: i32 = (0..32).map(|l| value(b, j * 32 + l) * a.qs[j * 32 + l] as i32).sum();
                sum += sc as i32 * dot;
                mins += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
            }
            a.d * (d * sum as f32 - dmin * mins as f32)
        })
        .sum()
}

/// Element `i` (0..256) of a Q4_K block: 32-byte groups hold two sub-blocks as nibbles.
pub(crate) fn q4k_value(b: &[u8], i: usize) -> i32 {
    let byte = b[16 + (i / 64) * 32 + i % 32];
    (if i % 64 < 32 { byte & 0xF } else { byte >> 4 }) as i32
}

pub(crate) fn q5k_value(b: &[u8], i: usize) -> i32 {
    let byte = b[48 + (i / 64) * 32 + i % 32];
    let low = if i % 64 < 32 { byte & 0xF } else { byte >> 4 };
    let high = (b[16 + i % 32] >> (i / 32)) & 1;
    (low | (high << 4)) as i32
}

pub fn q4k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    k_quant(row, x, 144, q4k_value)
}

pub fn q5k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    k_quant(row, x, 176, q5k_value)
}

/// Element `i` of a Q6_K block, still offset by 32.
pub(crate) fn q6k_value(b: &[u8], i: usize) -> i32 {
    let (half, l) = (i / 128, i % 128);
    let (ql, qh) = (&b[half * 64..], &b[128 + half * 32..]);
    let quarter = l / 32;
    let l32 = l % 32;
    let low = match quarter {
        0 => ql[l32] & 0xF,
        1 => ql[l32 + 32] & 0xF,
        2 => ql[l32] >> 4,
        _ => ql[l32 + 32] >> 4,
    };
    (low | (((qh[l32] >> (2 * quarter)) & 3) << 4)) as i32
}

pub fn q6k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    row.chunks_exact(210)
        .zip(x)
        .map(|(b, a)| {
            let d = f16_at(b, 208);
            let mut sum = 0i32;
            for j in 0..16 {
                let sc = b[192 + j] as i8 as i32;
                let dot: i32 = (0..16).map(|l| q6k_value(b, j * 16 + l) * a.qs[j * 16 + l] as i32).sum();
                sum += sc * (dot - 32 * a.bsums[j] as i32);
            }
            d * a.d * sum as f32
        })
        .sum()
}

/// MLX affine rows (group a multiple of 32): Σ w·x = Σ_groups s·Σ q·x + b·Σ x.
pub fn mlx(bits: u32, group: usize, params: FloatFormat, row: &[u8], scales: &[u8], biases: &[u8], x: &[Q8Block]) -> f32 {
    let blocks_per_group = group / 32;
    x.chunks_exact(blocks_per_group)
        .enumerate()
        .map(|(g, blocks)| {
            let (s, b) = (params.read(scales, g), params.read(biases, g));
            let mut acc = 0f32;
            let mut sum = 0f32;
            for (k, a) in blocks.iter().enumerate() {
                let base = (g * blocks_per_group + k) * 32;
                let q = (0..32).map(|i| crate::dequant::mlx_code(row, base + i, bits) as i32);
                acc += a.d * idot(q, &a.qs) as f32;
                sum += a.sum;
            }
            s * acc + b * sum
        })
        .sum()
}

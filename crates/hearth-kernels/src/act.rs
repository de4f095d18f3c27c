//! Activations quantised to 8 bits for integer dot products against quantised weights (the
//! "fast path", as llama.cpp does): per block a scale, the rounded int8 values, and the sums
//! the weight formats' offsets need.

/// 32 activations: `x ≈ d · qs`; `sum = d · Σ qs` serves formats with a per-block offset.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(8))]
pub struct Q8Block {
    pub d: f32,
    pub sum: f32,
    pub qs: [i8; 32],
}

/// 256 activations for the K-quants, with the sum of each 16 for their per-sub-block minimums.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(8))]
pub struct Q8KBlock {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
    /// Sums of each 32 (the K-quants' sub-blocks).
    pub bsums32: [i16; 8],
}

impl Default for Q8Block {
    fn default() -> Self {
        Q8Block { d: 0.0, sum: 0.0, qs: [0; 32] }
    }
}

impl Default for Q8KBlock {
    fn default() -> Self {
        Q8KBlock { d: 0.0, qs: [0; 256], bsums: [0; 16], bsums32: [0; 8] }
    }
}

/// Round to nearest (ties to even) without a libm call: adding 1.5·2^23 leaves no fraction
/// bits. Valid for |v| < 2^22, and activations are scaled to ±127.
#[inline]
fn round(v: f32) -> f32 {
    (v + 12_582_912.0) - 12_582_912.0
}

fn scale_for(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    (d, if d > 0.0 { 1.0 / d } else { 0.0 })
}

/// Quantises `x` (a multiple of 32 long) into `out`. Exactly the same blocks on every
/// instruction set.
pub fn quantize_q8(x: &[f32], out: &mut [Q8Block]) {
    debug_assert_eq!(x.len(), out.len() * 32);
    // The AVX-512 instruction set in use (not merely present), so that a forced weaker one
    // runs as it would on a CPU without it.
    #[cfg(target_arch = "x86_64")]
    match crate::qdot::isa().kind {
        // SAFETY: the CPU has AVX-512 F; the lengths match.
        crate::qdot::IsaKind::Avx512Vnni => return unsafe { x86::quantize_q8(x, out) },
        // SAFETY: both need AVX2 (`available()` checked it); the lengths match.
        crate::qdot::IsaKind::Avx2 | crate::qdot::IsaKind::AvxVnni => return unsafe { x86::quantize_q8_avx2(x, out) },
        _ => {}
    }
    quantize_q8_portable(x, out)
}

fn quantize_q8_portable(x: &[f32], out: &mut [Q8Block]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
        let (d, id) = scale_for(xs);
        let mut s = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = round(v * id) as i8;
            s += *q as i32;
        }
        b.d = d;
        b.sum = d * s as f32;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Q8Block;

    /// [`super::quantize_q8_portable`] on 512-bit registers: the same maximum, scale and
    /// round-to-nearest-even conversion, so the same bytes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn quantize_q8(x: &[f32], out: &mut [Q8Block]) {
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
            let v = [_mm512_loadu_ps(xs.as_ptr()), _mm512_loadu_ps(xs.as_ptr().add(16))];
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            let q = v.map(|v| _mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(id))));
            _mm_storeu_si128(b.qs.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(q[0]));
            _mm_storeu_si128(b.qs.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(q[1]));
            b.d = d;
            b.sum = d * _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1])) as f32;
        }
    }

    /// The same on 256-bit registers.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_q8_avx2(x: &[f32], out: &mut [Q8Block]) {
        let sign = _mm256_set1_ps(-0.0);
        for (b, xs) in out.iter_mut().zip(x.chunks_exact(32)) {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xs.as_ptr().add(8 * i)));
            let m = v.iter().fold(_mm256_setzero_ps(), |m, &v| _mm256_max_ps(m, _mm256_andnot_ps(sign, v)));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
            let d = amax / 127.0;
            let id = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, id)));
            // packs works within 128-bit halves: the permute restores the columns' order.
            let q16 = [_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])];
            let q8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(q16[0], q16[1]), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), q8);
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            b.d = d;
            b.sum = d * _mm_cvtsi128_si32(s) as f32;
        }
    }
}

/// Quantises `x` (a multiple of 256 long) into `out`.
pub fn quantize_q8k(x: &[f32], out: &mut [Q8KBlock]) {
    debug_assert_eq!(x.len(), out.len() * 256);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(256)) {
        let (d, id) = scale_for(xs);
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = round(v * id) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        for (j, s) in b.bsums32.iter_mut().enumerate() {
            *s = b.bsums[2 * j] + b.bsums[2 * j + 1];
        }
        b.d = d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_set_quantises_alike() {
        // Random-ish values over several magnitudes, ties at .5 after scaling, and zero blocks.
        let mut x: Vec<f32> = (0..32 * 64).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) * 10f32.powi(i % 7 - 3)).collect();
        x[32..64].fill(0.0);
        x[64..96].iter_mut().enumerate().for_each(|(i, v)| *v = i as f32 - 15.5);
        let (mut a, mut b) = (vec![Q8Block::default(); 64], vec![Q8Block::default(); 64]);
        quantize_q8_portable(&x, &mut b);
        let same = |a: &[Q8Block]| {
            for (a, b) in a.iter().zip(&b) {
                assert_eq!((a.d.to_bits(), a.sum.to_bits(), a.qs), (b.d.to_bits(), b.sum.to_bits(), b.qs));
            }
        };
        quantize_q8(&x, &mut a);
        same(&a);
        // Each vector path this CPU can run, whatever `HEARTH_ISA` chose.
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: checked just above.
                unsafe { x86::quantize_q8_avx2(&x, &mut a) };
                same(&a);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: checked just above.
                unsafe { x86::quantize_q8(&x, &mut a) };
                same(&a);
            }
        }
    }
}

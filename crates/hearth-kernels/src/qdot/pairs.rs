//! Decode kernels for the 32-block formats (Q4_0, Q4_1, Q8_0) on 512-bit registers: two blocks
//! per step, their scales converted together, the offset terms kept in a vector accumulator.

use std::arch::x86_64::*;

use crate::act::{Q8KBlock, Q8Pair};

/// Per format: where the values start, and the factor turning the second header word into
/// the offset coefficient (`[d, m]` for Q4_1; `[d, ·]` with offset −8·d or −128·d otherwise).
macro_rules! pair_kernel {
    ($name:ident, $many:ident, $block:expr, $weights:ident, $coef:expr, $header_mask:expr) => {
        /// [`$name`] for `N` tokens at once: each weight step is decoded once and used `N`
        /// times (batched decode, where re-decoding per token was a third of a step).
        ///
        /// # Safety
        /// As [`$name`], for every `x[t]`, all of the same length.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,avx2,fma")]
        pub unsafe fn $many<const N: usize>(row: &[u8], x: [&[Q8Pair]; N]) -> [f32; N] {
            // Even and odd steps in separate accumulators, as the one-token kernel sums them.
            let mut acc = [[_mm512_setzero_ps(); N]; 2];
            let mut acc_m = [_mm_setzero_ps(); N];
            let spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
            let coef = _mm_setr_ps($coef[0], $coef[1], $coef[0], $coef[1]);
            let mask = _mm_set1_epi32($header_mask);
            let p = row.as_ptr();
            for i in 0..x[0].len() {
                let (b0, b1) = (p.add(2 * i * $block), p.add((2 * i + 1) * $block));
                let h = header(b0, b1, mask);
                let w = $weights(b0, b1);
                let scales = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h));
                let offsets = _mm_mul_ps(h, coef);
                let acc = &mut acc[i % 2];
                for t in 0..N {
                    let a = x[t].get_unchecked(i);
                    let isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(a.qs.as_ptr() as *const __m512i));
                    acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(scales, _mm512_loadu_ps(a.d.as_ptr())), _mm512_cvtepi32_ps(isum), acc[t]);
                    acc_m[t] = _mm_fmadd_ps(offsets, _mm_loadu_ps(a.sums.as_ptr()), acc_m[t]);
                }
            }
            std::array::from_fn(|t| _mm512_reduce_add_ps(_mm512_add_ps(acc[0][t], acc[1][t])) + hsum4(acc_m[t]))
        }

        /// # Safety
        /// The CPU must support AVX-512 F/BW/VL/VNNI and F16C; `row` holds `2 · x.len()` blocks.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,avx2,fma")]
        pub unsafe fn $name(row: &[u8], x: &[Q8Pair]) -> f32 {
            // Two accumulators so consecutive steps' multiply-adds don't wait on each other;
            // the same sums in the same order as [`$many`], so batching never changes a result.
            let mut acc = [_mm512_setzero_ps(); 2];
            let mut acc_m = _mm_setzero_ps();
            let spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
            let coef = _mm_setr_ps($coef[0], $coef[1], $coef[0], $coef[1]);
            let mask = _mm_set1_epi32($header_mask);
            let p = row.as_ptr();
            for (i, a) in x.iter().enumerate() {
                let (b0, b1) = (p.add(2 * i * $block), p.add((2 * i + 1) * $block));
                let h = header(b0, b1, mask);
                let w = $weights(b0, b1);
                let isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, _mm512_loadu_si512(a.qs.as_ptr() as *const __m512i));
                let scale = _mm512_mul_ps(_mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h)), _mm512_loadu_ps(a.d.as_ptr()));
                acc[i % 2] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[i % 2]);
                acc_m = _mm_fmadd_ps(_mm_mul_ps(h, coef), _mm_loadu_ps(a.sums.as_ptr()), acc_m);
            }
            _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + hsum4(acc_m)
        }
    };
}

/// The two blocks' f16 header words `[d0, m0, d1, m1]` as floats (`mask` clears the second
/// word where the format has none).
#[target_feature(enable = "avx512f,f16c,avx2")]
#[inline]
unsafe fn header(b0: *const u8, b1: *const u8, mask: __m128i) -> __m128 {
    let hdr = _mm_and_si128(_mm_setr_epi32((b0 as *const i32).read_unaligned(), 0, (b1 as *const i32).read_unaligned(), 0), mask);
    // Words [d0, m0, ·, ·, d1, m1, ·, ·]: move block 1's up, convert → [d0, m0, d1, m1].
    _mm_cvtph_ps(_mm_shuffle_epi32(hdr, 0b11_10_10_00))
}

#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn hsum4(v: __m128) -> f32 {
    let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Two blocks of 16 nibble bytes at `off` → `[b0 low, b1 low, b0 high, b1 high]`.
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn nibbles<const OFF: usize>(b0: *const u8, b1: *const u8) -> __m512i {
    let v = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128(b0.add(OFF) as *const __m128i)),
        _mm_loadu_si128(b1.add(OFF) as *const __m128i),
        1,
    );
    let m = _mm256_set1_epi8(0x0F);
    let lo = _mm256_and_si256(v, m);
    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn q4_0_weights(b0: *const u8, b1: *const u8) -> __m512i {
    nibbles::<2>(b0, b1)
}

#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn q4_1_weights(b0: *const u8, b1: *const u8) -> __m512i {
    nibbles::<4>(b0, b1)
}

/// Signed bytes made unsigned (+128; the offset term takes the 128 back out).
#[target_feature(enable = "avx512f,avx512bw,avx2")]
#[inline]
unsafe fn q8_0_weights(b0: *const u8, b1: *const u8) -> __m512i {
    let w0 = _mm256_loadu_si256(b0.add(2) as *const __m256i);
    let w1 = _mm256_loadu_si256(b1.add(2) as *const __m256i);
    let lo = _mm256_permute2x128_si256(w0, w1, 0x20);
    let hi = _mm256_permute2x128_si256(w0, w1, 0x31);
    _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8(-128))
}

pair_kernel!(q4_0, q4_0_many, 18, q4_0_weights, [-8.0f32, 0.0], 0xFFFF);
pair_kernel!(q4_1, q4_1_many, 20, q4_1_weights, [0.0f32, 1.0], -1);
pair_kernel!(q8_0, q8_0_many, 34, q8_0_weights, [-128.0f32, 0.0], 0xFFFF);

/// Q4_K against 256-blocks of activations: 64 weights (two sub-blocks) per `vpdpbusd`, the
/// sub-block scales applied in float so the accumulator carries across blocks, the minimums
/// through one multiply-add of the 8 minimums with the activations' per-32 sums.
///
/// # Safety
/// The CPU must support AVX-512 F/BW/VL/VNNI and F16C; `row` holds `x.len()` blocks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,avx2,fma")]
pub unsafe fn q4k(row: &[u8], x: &[Q8KBlock]) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 2];
    let mut mins = 0f32;
    let m4 = _mm256_set1_epi8(0x0F);
    for (i, a) in x.iter().enumerate() {
        let b = row.as_ptr().add(i * 144);
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((b as *const u16).read_unaligned() as i32)));
        let dmin = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128((b.add(2) as *const u16).read_unaligned() as i32)));
        // The 12 packed bytes → 8 scales and 8 minimums (6 bits each), as llama.cpp unpacks them.
        let mut u = [0u32; 4];
        std::ptr::copy_nonoverlapping(b.add(4), u.as_mut_ptr() as *mut u8, 12);
        const K1: u32 = 0x3f3f_3f3f;
        const K2: u32 = 0x0f0f_0f0f;
        const K3: u32 = 0x0303_0303;
        u[3] = ((u[2] >> 4) & K2) | (((u[1] >> 6) & K3) << 4);
        let aux = u[1] & K1;
        u[1] = (u[2] & K2) | (((u[0] >> 6) & K3) << 4);
        u[2] = aux;
        u[0] &= K1;
        let sc = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(u[0] as i32));
        let sc_hi = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(u[1] as i32));
        let scales = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_set_m128i(sc_hi, sc)),
            _mm256_set1_ps(d * a.d),
        );
        let scales = _mm512_castps256_ps512(scales);
        let m = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
        let mdot = _mm_madd_epi16(m, _mm_loadu_si128(a.bsums32.as_ptr() as *const __m128i));
        let mdot = _mm_add_epi32(mdot, _mm_shuffle_epi32(mdot, 0b01_00_11_10));
        let mdot = _mm_add_epi32(mdot, _mm_shuffle_epi32(mdot, 0b10_11_00_01));
        mins += dmin * a.d * _mm_cvtsi128_si32(mdot) as f32;
        for c in 0..4 {
            let q = _mm256_loadu_si256(b.add(16 + 32 * c) as *const __m256i);
            let lo = _mm256_and_si256(q, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            let w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let xs = _mm512_loadu_si512(a.qs.as_ptr().add(64 * c) as *const __m512i);
            let isum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w, xs);
            let (s0, s1) = (2 * c as i32, 2 * c as i32 + 1);
            let idx = _mm512_setr_epi32(s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1);
            let scale = _mm512_permutexvar_ps(idx, scales);
            acc[c & 1] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(isum), acc[c & 1]);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) - mins
}

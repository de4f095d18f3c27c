//! The Q4_K decode kernel on 512-bit registers for rows in the file's layout: two sub-blocks
//! per step. (The engine's layers decode on repacked panels, see [`crate::panels`].)

use std::arch::x86_64::*;

use crate::act::Q8KBlock;

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
        let scales = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_set_m128i(sc_hi, sc)), _mm256_set1_ps(d * a.d));
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

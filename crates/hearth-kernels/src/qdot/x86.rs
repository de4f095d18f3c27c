//! x86-64 SIMD dot products, generated twice from one body: with AVX2 (`maddubs` + `madd`) and
//! with AVX-512 VNNI (`vpdpbusd` on 256-bit registers). Each 32-weight block is expanded to
//! unsigned bytes, multiplied with the signed activation bytes, and its integer sum scaled in
//! float — the scalar module defines the same arithmetic.

use crate::act::{Q8Block, Q8KBlock};
use crate::FloatFormat;

macro_rules! avx2_dot {
    ($w:expr, $x:expr) => {
        _mm256_madd_epi16(_mm256_maddubs_epi16($w, $x), _mm256_set1_epi16(1))
    };
}

macro_rules! vnni_dot {
    ($w:expr, $x:expr) => {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), $w, $x)
    };
}

macro_rules! kernels {
    ($module:ident, $features:literal, $dot:ident) => {
        pub mod $module {
            use std::arch::x86_64::*;

            use super::*;

            /// Eight i32 partial sums of 32 unsigned (≤ 128) × 32 signed bytes.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot32(w: __m256i, x: __m256i) -> __m256i {
                $dot!(w, x)
            }

            /// Signed × signed via |w| × (x with w's sign).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot32_signed(w: __m256i, x: __m256i) -> __m256i {
                dot32(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w))
            }

            /// An f16 scale at byte `i`, converted by the F16C instruction.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn f16_at(b: &[u8], i: usize) -> f32 {
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([b[i], b[i + 1]]) as i32)))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum_i32(v: __m256i) -> i32 {
                let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
                let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
                _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
            }

            /// 16 bytes of nibbles → 32 values: low nibbles first, then high (GGUF order).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn nibbles_split(p: *const u8) -> __m256i {
                let b = _mm_loadu_si128(p as *const __m128i);
                let m = _mm_set1_epi8(0x0F);
                _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m))
            }

            /// 16 bytes of nibbles → 32 values in byte order, low nibble first (MLX order).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn nibbles_interleaved(p: *const u8) -> __m256i {
                let b = _mm_loadu_si128(p as *const __m128i);
                let m = _mm_set1_epi8(0x0F);
                let (lo, hi) = (_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
                _mm256_set_m128i(_mm_unpackhi_epi8(lo, hi), _mm_unpacklo_epi8(lo, hi))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn load(p: *const i8) -> __m256i {
                _mm256_loadu_si256(p as *const __m256i)
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q4_0(row: &[u8], x: &[Q8Block]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut offset = 0f32;
                for (b, a) in row.chunks_exact(18).zip(x) {
                    let d = f16_at(b, 0);
                    let s = dot32(nibbles_split(b.as_ptr().add(2)), load(a.qs.as_ptr()));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(s), acc);
                    offset += d * a.sum;
                }
                hsum(acc) - 8.0 * offset
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q4_1(row: &[u8], x: &[Q8Block]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                let mut offset = 0f32;
                for (b, a) in row.chunks_exact(20).zip(x) {
                    let s = dot32(nibbles_split(b.as_ptr().add(4)), load(a.qs.as_ptr()));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * a.d), _mm256_cvtepi32_ps(s), acc);
                    offset += f16_at(b, 2) * a.sum;
                }
                hsum(acc) + offset
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q8_0(row: &[u8], x: &[Q8Block]) -> f32 {
                let mut acc = _mm256_setzero_ps();
                for (b, a) in row.chunks_exact(34).zip(x) {
                    let s = dot32_signed(load(b.as_ptr().add(2) as *const i8), load(a.qs.as_ptr()));
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * a.d), _mm256_cvtepi32_ps(s), acc);
                }
                hsum(acc)
            }

            /// Q4_K and Q5_K (`five_bit`: the fifth bit of sub-block `j` is bit `j` of `qh`).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn k_quant(row: &[u8], x: &[Q8KBlock], five_bit: bool) -> f32 {
                let (block_bytes, qs_at) = if five_bit { (176, 48) } else { (144, 16) };
                let mut total = 0f32;
                let m4 = _mm256_set1_epi8(0x0F);
                for (b, a) in row.chunks_exact(block_bytes).zip(x) {
                    let qh = load(b.as_ptr().add(16) as *const i8);
                    let mut acc = _mm256_setzero_si256();
                    let mut mins = 0i32;
                    for pair in 0..4 {
                        let q = load(b.as_ptr().add(qs_at + 32 * pair) as *const i8);
                        for (half, w) in [_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4)].into_iter().enumerate() {
                            let j = 2 * pair + half;
                            let (sc, m) = super::super::scalar::scale_min_k4(j, &b[4..16]);
                            let w = if five_bit {
                                let bit = _mm256_set1_epi8((1u8 << j) as i8);
                                let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                                _mm256_or_si256(w, _mm256_and_si256(set, _mm256_set1_epi8(16)))
                            } else {
                                w
                            };
                            let s = dot32(w, load(a.qs.as_ptr().add(32 * j)));
                            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(s, _mm256_set1_epi32(sc as i32)));
                            mins += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
                        }
                    }
                    total += a.d * (f16_at(b, 0) * hsum_i32(acc) as f32 - f16_at(b, 2) * mins as f32);
                }
                total
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q4k(row: &[u8], x: &[Q8KBlock]) -> f32 {
                k_quant(row, x, false)
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q5k(row: &[u8], x: &[Q8KBlock]) -> f32 {
                k_quant(row, x, true)
            }

            #[target_feature(enable = $features)]
            pub unsafe fn q6k(row: &[u8], x: &[Q8KBlock]) -> f32 {
                let mut total = 0f32;
                let m4 = _mm256_set1_epi8(0x0F);
                let m2 = _mm256_set1_epi8(0x03);
                for (b, a) in row.chunks_exact(210).zip(x) {
                    let mut acc = _mm256_setzero_si256();
                    for half in 0..2 {
                        let qh = load(b.as_ptr().add(128 + 32 * half) as *const i8);
                        for quarter in 0..4 {
                            let ql = load(b.as_ptr().add(64 * half + 32 * (quarter % 2)) as *const i8);
                            let low = if quarter < 2 { _mm256_and_si256(ql, m4) } else { _mm256_and_si256(_mm256_srli_epi16(ql, 4), m4) };
                            let hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * quarter as i32)), m2);
                            let w = _mm256_or_si256(low, _mm256_slli_epi16(hi, 4));
                            let e = 128 * half + 32 * quarter;
                            let s = dot32(w, load(a.qs.as_ptr().add(e)));
                            // Lanes 0-3 cover the first 16 elements, lanes 4-7 the next 16.
                            let (sa, sb) = (b[192 + e / 16] as i8 as i32, b[192 + e / 16 + 1] as i8 as i32);
                            let sc = _mm256_setr_epi32(sa, sa, sa, sa, sb, sb, sb, sb);
                            acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(s, sc));
                        }
                    }
                    let offset: i32 = (0..16).map(|j| b[192 + j] as i8 as i32 * a.bsums[j] as i32).sum();
                    total += f16_at(b, 208) * a.d * (hsum_i32(acc) - 32 * offset) as f32;
                }
                total
            }

            #[target_feature(enable = $features)]
            pub unsafe fn mlx(
                bits: u32,
                group: usize,
                params: FloatFormat,
                row: &[u8],
                scales: &[u8],
                biases: &[u8],
                x: &[Q8Block],
            ) -> f32 {
                let per_group = group / 32;
                let block_bytes = 4 * bits as usize;
                let mut acc = _mm256_setzero_ps();
                let mut offset = 0f32;
                for (g, blocks) in x.chunks_exact(per_group).enumerate() {
                    let (s, bias) = (params.read(scales, g), params.read(biases, g));
                    for (k, a) in blocks.iter().enumerate() {
                        let p = row.as_ptr().add((g * per_group + k) * block_bytes);
                        let xs = load(a.qs.as_ptr());
                        let (isum, extra) = match bits {
                            4 => (dot32(nibbles_interleaved(p), xs), 0.0),
                            // Unsigned bytes as (q - 128) signed, the 128·Σx added back in float.
                            _ => (dot32_signed(_mm256_xor_si256(load(p as *const i8), _mm256_set1_epi8(-128)), xs), 128.0 * a.sum),
                        };
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(s * a.d), _mm256_cvtepi32_ps(isum), acc);
                        offset += s * extra + bias * a.sum;
                    }
                }
                hsum(acc) + offset
            }
        }
    };
}

kernels!(avx2, "avx2,fma,f16c", avx2_dot);
kernels!(vnni, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", vnni_dot);

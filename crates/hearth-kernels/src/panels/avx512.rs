//! The panel kernel on AVX-512 VNNI: a whole 16-row panel per 512-bit register, `vpdpbusd`
//! for the products (Q8_0's signed weights made unsigned, the offset taken back in float).

use std::arch::x86_64::*;

use super::kernel::{self, Lanes, Panel};
use super::Line;
use crate::act::Q8Block;

pub(super) struct Avx512;

impl Lanes for Avx512 {
    const LANES: usize = 16;
    const SUBS: usize = 1;
    const TOKENS: usize = 8;
    const Q8_OFFSET: f32 = -128.0;
    type I = __m512i;
    type F = __m512;

    #[inline(always)]
    unsafe fn line(p: *const Line, _: usize) -> __m512i {
        _mm512_load_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: __m512i) -> __m512i {
        _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: __m512i) -> __m512i {
        _mm512_and_si512(_mm512_srli_epi16(v, 4), _mm512_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn q8_weights(p: *const Line, s: usize) -> __m512i {
        _mm512_xor_si512(Self::line(p, s), _mm512_set1_epi8(-128))
    }
    #[inline(always)]
    unsafe fn dot_nibbles(wq: &[__m512i; 8], x: *const i32) -> __m512i {
        // Two chains of four, so the multiply-adds of one token overlap.
        let (mut lo, mut hi) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        for i in 0..4 {
            lo = _mm512_dpbusd_epi32(lo, wq[i], _mm512_set1_epi32(x.add(i).read_unaligned()));
            hi = _mm512_dpbusd_epi32(hi, wq[4 + i], _mm512_set1_epi32(x.add(4 + i).read_unaligned()));
        }
        _mm512_add_epi32(lo, hi)
    }
    #[inline(always)]
    unsafe fn dot_q6(wq: &[__m512i; 8], x: *const i32) -> [__m512i; 2] {
        // Signed × signed as |w| × x·sign(w), the sign taken by negating x where w < 0.
        let mut halves = [_mm512_setzero_si512(); 2];
        for (i, &w) in wq.iter().enumerate() {
            let x = _mm512_set1_epi32(x.add(i).read_unaligned());
            let xs = _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
            halves[i / 4] = _mm512_dpbusd_epi32(halves[i / 4], _mm512_abs_epi8(w), xs);
        }
        halves
    }
    #[inline(always)]
    unsafe fn dot_q8(wq: &[__m512i; 8], x: *const i32) -> __m512i {
        Self::dot_nibbles(wq, x)
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u16) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()))))
    }
    #[inline(always)]
    unsafe fn f16_low(v: __m512i) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(v))
    }
    #[inline(always)]
    unsafe fn f16_high(v: __m512i) -> __m512 {
        Self::f16_low(_mm512_srli_epi32(v, 16))
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m512i) -> __m512 {
        _mm512_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn srl(v: __m512i, bits: i32) -> __m512i {
        _mm512_srl_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sll(v: __m512i, bits: i32) -> __m512i {
        _mm512_sll_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sra(v: __m512i, bits: i32) -> __m512i {
        _mm512_sra_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sub_bytes(a: __m512i, b: __m512i) -> __m512i {
        _mm512_sub_epi8(a, b)
    }
    #[inline(always)]
    unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
        _mm512_and_si512(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m512i, b: __m512i) -> __m512i {
        _mm512_or_si512(a, b)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m512i {
        _mm512_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        _mm512_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512, n: usize) {
        let mask = if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        _mm512_mask_storeu_ps(p, mask, v)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const Line) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

/// # Safety
/// The CPU must have AVX-512 F/BW/VNNI; see [`kernel::panel`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
    kernel::panel::<Avx512, T, F>(w, x, out)
}

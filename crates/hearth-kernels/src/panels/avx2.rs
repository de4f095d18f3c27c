//! The panel kernel on AVX2: a 16-row panel as two 256-bit registers of eight rows. Products
//! by `vpmaddubsw` (unsigned × signed bytes to i16 pairs) and `vpmaddwd` (pairs to i32); a
//! nibble block's eight i16 partial sums cannot overflow (8 · 2 · 15 · 127 < 2¹⁵), so they
//! are added before the one widening step (five-bit weights widen each half apart). Q8_0's
//! signed weights take the sign trick (|w| × x·sign(w)), whose pairs (2 · 128 · 127) fit i16
//! only one at a time; Q6_K's (|w| ≤ 32) four at a time.
//!
//! With AVX-VNNI (Alder Lake, Zen 5) `vpdpbusd` does the four products and their sum in one
//! instruction, as on AVX-512, and Q8_0's weights are made unsigned (the offset taken back in
//! float). CPUs with AVX-512 VNNI run the same 256-bit instruction in its EVEX form, which is
//! how `HEARTH_ISA=avxvnni` is tested on them; the VEX form is chosen where the CPU has it.

use std::arch::x86_64::*;

use super::kernel::{self, Lanes, Panel};
use super::Line;
use crate::act::Q8Block;

/// `DOT`: [`MADD`], [`VEX`] or [`EVEX`], how four byte products are summed.
pub(super) struct Avx2<const DOT: u8>;

pub(super) const MADD: u8 = 0;
pub(super) const VEX: u8 = 1;
pub(super) const EVEX: u8 = 2;

/// `acc + Σ` of each lane's four unsigned × signed byte products, by `vpdpbusd`.
#[inline(always)]
unsafe fn dpbusd<const DOT: u8>(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    if DOT == VEX {
        _mm256_dpbusd_avx_epi32(acc, w, x)
    } else {
        _mm256_dpbusd_epi32(acc, w, x)
    }
}

impl<const DOT: u8> Lanes for Avx2<DOT> {
    const LANES: usize = 8;
    const SUBS: usize = 2;
    const TOKENS: usize = 4;
    const Q8_OFFSET: f32 = if DOT == MADD { 0.0 } else { -128.0 };
    type I = __m256i;
    type F = __m256;

    #[inline(always)]
    unsafe fn line(p: *const Line, s: usize) -> __m256i {
        _mm256_load_si256(p.cast::<__m256i>().add(s))
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: __m256i) -> __m256i {
        _mm256_and_si256(v, _mm256_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: __m256i) -> __m256i {
        _mm256_and_si256(_mm256_srli_epi16(v, 4), _mm256_set1_epi8(0x0F))
    }
    #[inline(always)]
    unsafe fn q8_weights(p: *const Line, s: usize) -> __m256i {
        if DOT == MADD {
            Self::line(p, s)
        } else {
            _mm256_xor_si256(Self::line(p, s), _mm256_set1_epi8(-128))
        }
    }
    #[inline(always)]
    unsafe fn dot_nibbles(wq: &[__m256i; 8], x: *const i32) -> __m256i {
        if DOT != MADD {
            // Two chains of four, so the multiply-adds of one token overlap.
            let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for i in 0..4 {
                lo = dpbusd::<DOT>(lo, wq[i], _mm256_set1_epi32(x.add(i).read_unaligned()));
                hi = dpbusd::<DOT>(hi, wq[4 + i], _mm256_set1_epi32(x.add(4 + i).read_unaligned()));
            }
            return _mm256_add_epi32(lo, hi);
        }
        let mut pairs = _mm256_setzero_si256();
        for (i, &w) in wq.iter().enumerate() {
            pairs = _mm256_add_epi16(pairs, _mm256_maddubs_epi16(w, _mm256_set1_epi32(x.add(i).read_unaligned())));
        }
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn dot_q5(wq: &[__m256i; 8], x: *const i32) -> __m256i {
        if DOT != MADD {
            return Self::dot_nibbles(wq, x);
        }
        // Sixteen products of 31 · 127 would overflow an i16 lane; eight do not.
        let mut halves = [_mm256_setzero_si256(); 2];
        for (i, &w) in wq.iter().enumerate() {
            halves[i / 4] = _mm256_add_epi16(halves[i / 4], _mm256_maddubs_epi16(w, _mm256_set1_epi32(x.add(i).read_unaligned())));
        }
        let ones = _mm256_set1_epi16(1);
        _mm256_add_epi32(_mm256_madd_epi16(halves[0], ones), _mm256_madd_epi16(halves[1], ones))
    }
    #[inline(always)]
    unsafe fn dot_q6(wq: &[__m256i; 8], x: *const i32) -> [__m256i; 2] {
        // Signed × signed by the sign trick: |w| × x·sign(w). Four pairs of 32 · 127 fit an i16.
        let mut halves = [_mm256_setzero_si256(); 2];
        for (i, &w) in wq.iter().enumerate() {
            let xs = _mm256_sign_epi8(_mm256_set1_epi32(x.add(i).read_unaligned()), w);
            halves[i / 4] = if DOT == MADD {
                _mm256_add_epi16(halves[i / 4], _mm256_maddubs_epi16(_mm256_abs_epi8(w), xs))
            } else {
                dpbusd::<DOT>(halves[i / 4], _mm256_abs_epi8(w), xs)
            };
        }
        if DOT == MADD {
            let ones = _mm256_set1_epi16(1);
            halves = [_mm256_madd_epi16(halves[0], ones), _mm256_madd_epi16(halves[1], ones)];
        }
        halves
    }
    #[inline(always)]
    unsafe fn dot_q8(wq: &[__m256i; 8], x: *const i32) -> __m256i {
        if DOT != MADD {
            return Self::dot_nibbles(wq, x);
        }
        let mut sum = _mm256_setzero_si256();
        for (i, &w) in wq.iter().enumerate() {
            let xs = _mm256_sign_epi8(_mm256_set1_epi32(x.add(i).read_unaligned()), w);
            let pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(w), xs);
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        }
        sum
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u16) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()))))
    }
    #[inline(always)]
    unsafe fn f16_low(v: __m256i) -> __m256 {
        halves(v, 0)
    }
    #[inline(always)]
    unsafe fn f16_high(v: __m256i) -> __m256 {
        halves(v, 2)
    }
    #[inline(always)]
    unsafe fn to_f32(v: __m256i) -> __m256 {
        _mm256_cvtepi32_ps(v)
    }
    #[inline(always)]
    unsafe fn srl(v: __m256i, bits: i32) -> __m256i {
        _mm256_srl_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sll(v: __m256i, bits: i32) -> __m256i {
        _mm256_sll_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sra(v: __m256i, bits: i32) -> __m256i {
        _mm256_sra_epi32(v, _mm_cvtsi32_si128(bits))
    }
    #[inline(always)]
    unsafe fn sub_bytes(a: __m256i, b: __m256i) -> __m256i {
        _mm256_sub_epi8(a, b)
    }
    #[inline(always)]
    unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
        _mm256_and_si256(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
        _mm256_or_si256(a, b)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> __m256i {
        _mm256_set1_epi32(v)
    }
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        _mm256_sub_ps(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256, n: usize) {
        if n >= 8 {
            return _mm256_storeu_ps(p, v);
        }
        let mut all = [0f32; 8];
        _mm256_storeu_ps(all.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(all.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const Line) {
        _mm_prefetch::<_MM_HINT_T0>(p.cast())
    }
}

/// The f16 at byte `at` (0: low half, 2: high half) of each lane's dword, as f32.
#[inline(always)]
unsafe fn halves(v: __m256i, at: i8) -> __m256 {
    let pick = |i: i8| [at + 4 * i, at + 4 * i + 1];
    let [a, b, c, d] = [pick(0), pick(1), pick(2), pick(3)];
    #[rustfmt::skip]
    let gather = _mm256_setr_epi8(
        a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1], -1, -1, -1, -1, -1, -1, -1, -1,
        a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1], -1, -1, -1, -1, -1, -1, -1, -1,
    );
    // Each 128-bit half's four f16s in its low quadword; quadwords 0 and 2 brought together.
    let packed = _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_shuffle_epi8(v, gather));
    _mm256_cvtph_ps(_mm256_castsi256_si128(packed))
}

/// # Safety
/// The CPU must have AVX2, FMA and F16C; see [`kernel::panel`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
    kernel::panel::<Avx2<MADD>, T, F>(w, x, out)
}

/// The AVX-VNNI kernels, in the encoding this CPU has.
pub(super) mod vnni {
    use super::*;

    /// # Safety
    /// The CPU must have AVX2, FMA, F16C and AVX-VNNI, or AVX-512 VNNI with VL (see
    /// `qdot::available`); see [`kernel::panel`].
    pub(in crate::panels) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        if std::arch::is_x86_feature_detected!("avxvnni") {
            vex::<T, F>(w, x, out)
        } else {
            evex::<T, F>(w, x, out)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    unsafe fn vex<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        kernel::panel::<Avx2<VEX>, T, F>(w, x, out)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn evex<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        kernel::panel::<Avx2<EVEX>, T, F>(w, x, out)
    }
}

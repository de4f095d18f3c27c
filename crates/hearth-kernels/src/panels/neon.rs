//! The panel kernel on NEON (aarch64): a 16-row panel as four 128-bit registers of four rows.
//! Products by `sdot` where the CPU has the dot-product extension (signed × signed bytes,
//! four per lane: the layout's four weights per row), else by widening multiplies and pairwise
//! adds to the same sums. `sdot` is written as its encoding (its intrinsic is unstable).

use std::arch::aarch64::*;

use super::kernel::{self, Lanes, Panel};
use super::Line;
use crate::act::Q8Block;

/// `DOT`: whether `sdot` is used.
pub(super) struct Neon<const DOT: bool>;

/// `acc + Σ` of each lane's four byte products of `a` and `b` (`sdot v0.4s, v1.16b, v2.16b`).
///
/// # Safety
/// The CPU must have the dot-product extension.
#[inline(always)]
unsafe fn sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    std::arch::asm!(".inst 0x4e829420", inout("v0") acc, in("v1") a, in("v2") b, options(pure, nomem, nostack));
    acc
}

/// The same sums without the extension.
#[inline(always)]
unsafe fn widening_dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let pairs = vpaddq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)), vmull_high_s8(a, b));
    vpadalq_s16(acc, pairs)
}

#[inline(always)]
unsafe fn f32s(v: [f32; 4]) -> float32x4_t {
    vld1q_f32(v.as_ptr())
}

fn f16(bits: u32) -> f32 {
    half::f16::from_bits(bits as u16).to_f32()
}

impl<const DOT: bool> Lanes for Neon<DOT> {
    const LANES: usize = 4;
    const SUBS: usize = 4;
    const TOKENS: usize = 4;
    const Q8_OFFSET: f32 = 0.0;
    type I = int32x4_t;
    type F = float32x4_t;

    #[inline(always)]
    unsafe fn line(p: *const Line, s: usize) -> int32x4_t {
        vld1q_s32(p.cast::<i32>().add(4 * s))
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: int32x4_t) -> int32x4_t {
        vandq_s32(v, vdupq_n_s32(0x0F0F_0F0F))
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: int32x4_t) -> int32x4_t {
        vandq_s32(vreinterpretq_s32_u32(vshrq_n_u32::<4>(vreinterpretq_u32_s32(v))), vdupq_n_s32(0x0F0F_0F0F))
    }
    #[inline(always)]
    unsafe fn q8_weights(p: *const Line, s: usize) -> int32x4_t {
        Self::line(p, s)
    }
    #[inline(always)]
    unsafe fn dot_nibbles(wq: &[int32x4_t; 8], x: *const i32) -> int32x4_t {
        // Nibbles are small non-negative signed bytes: the signed product serves both.
        Self::dot_q8(wq, x)
    }
    #[inline(always)]
    unsafe fn dot_q6(wq: &[int32x4_t; 8], x: *const i32) -> [int32x4_t; 2] {
        let mut halves = [vdupq_n_s32(0); 2];
        for (i, &w) in wq.iter().enumerate() {
            let (w, xs) = (vreinterpretq_s8_s32(w), vreinterpretq_s8_s32(vdupq_n_s32(x.add(i).read_unaligned())));
            halves[i / 4] = if DOT { sdot(halves[i / 4], w, xs) } else { widening_dot(halves[i / 4], w, xs) };
        }
        halves
    }
    #[inline(always)]
    unsafe fn dot_q8(wq: &[int32x4_t; 8], x: *const i32) -> int32x4_t {
        let mut acc = vdupq_n_s32(0);
        for (i, &w) in wq.iter().enumerate() {
            let (w, xs) = (vreinterpretq_s8_s32(w), vreinterpretq_s8_s32(vdupq_n_s32(x.add(i).read_unaligned())));
            acc = if DOT { sdot(acc, w, xs) } else { widening_dot(acc, w, xs) };
        }
        acc
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u16) -> float32x4_t {
        f32s(std::array::from_fn(|i| f16(p.add(i).read_unaligned() as u32)))
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u16) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p)))
    }
    #[inline(always)]
    unsafe fn f16_low(v: int32x4_t) -> float32x4_t {
        let lanes: [u32; 4] = std::mem::transmute(v);
        f32s(lanes.map(f16))
    }
    #[inline(always)]
    unsafe fn f16_high(v: int32x4_t) -> float32x4_t {
        let lanes: [u32; 4] = std::mem::transmute(v);
        f32s(lanes.map(|l| f16(l >> 16)))
    }
    #[inline(always)]
    unsafe fn to_f32(v: int32x4_t) -> float32x4_t {
        vcvtq_f32_s32(v)
    }
    #[inline(always)]
    unsafe fn srl(v: int32x4_t, bits: i32) -> int32x4_t {
        vreinterpretq_s32_u32(vshlq_u32(vreinterpretq_u32_s32(v), vdupq_n_s32(-bits)))
    }
    #[inline(always)]
    unsafe fn sll(v: int32x4_t, bits: i32) -> int32x4_t {
        vreinterpretq_s32_u32(vshlq_u32(vreinterpretq_u32_s32(v), vdupq_n_s32(bits)))
    }
    #[inline(always)]
    unsafe fn sra(v: int32x4_t, bits: i32) -> int32x4_t {
        vshlq_s32(v, vdupq_n_s32(-bits))
    }
    #[inline(always)]
    unsafe fn sub_bytes(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vreinterpretq_s32_s8(vsubq_s8(vreinterpretq_s8_s32(a), vreinterpretq_s8_s32(b)))
    }
    #[inline(always)]
    unsafe fn and(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vandq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn or(a: int32x4_t, b: int32x4_t) -> int32x4_t {
        vorrq_s32(a, b)
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> int32x4_t {
        vdupq_n_s32(v)
    }
    #[inline(always)]
    unsafe fn zero() -> float32x4_t {
        vdupq_n_f32(0.0)
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> float32x4_t {
        vdupq_n_f32(v)
    }
    #[inline(always)]
    unsafe fn mul(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vmulq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: float32x4_t, b: float32x4_t) -> float32x4_t {
        vsubq_f32(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: float32x4_t, b: float32x4_t, c: float32x4_t) -> float32x4_t {
        vfmaq_f32(c, a, b)
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: float32x4_t, n: usize) {
        if n >= 4 {
            return vst1q_f32(p, v);
        }
        let mut all = [0f32; 4];
        vst1q_f32(all.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(all.as_ptr(), p, n);
    }
    #[inline(always)]
    unsafe fn prefetch(_: *const Line) {}
}

pub(super) mod dot {
    use super::*;

    /// # Safety
    /// The CPU must have NEON and the dot-product extension; see [`kernel::panel`].
    #[target_feature(enable = "neon,dotprod")]
    pub(in crate::panels) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        kernel::panel::<Neon<true>, T, F>(w, x, out)
    }
}

pub(super) mod plain {
    use super::*;

    /// # Safety
    /// See [`kernel::panel`].
    #[target_feature(enable = "neon")]
    pub(in crate::panels) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
        kernel::panel::<Neon<false>, T, F>(w, x, out)
    }
}

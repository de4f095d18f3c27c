//! The panel kernel in plain Rust, for CPUs without a SIMD backend here (and `HEARTH_ISA=scalar`):
//! sixteen-lane arrays the compiler vectorises as far as the target allows. Sums in the kernel's
//! order, so a token's result is the same alone or in a batch here too.

use super::kernel::{self, Lanes, Panel};
use super::Line;
use crate::act::Q8Block;

pub(super) struct Portable;

type Ints = [i32; 16];
type Floats = [f32; 16];

#[inline(always)]
fn map_i(a: Ints, f: impl Fn(i32) -> i32) -> Ints {
    a.map(f)
}

#[inline(always)]
fn zip_f(a: Floats, b: Floats, f: impl Fn(f32, f32) -> f32) -> Floats {
    std::array::from_fn(|i| f(a[i], b[i]))
}

/// Per lane, Σᵢ Σₖ weight byte k of `wq[i]` (as `weight`) times activation byte `4i + k`.
#[inline(always)]
unsafe fn dot<const N: usize>(wq: &[Ints; N], x: *const i32, weight: impl Fn(u8) -> i32) -> Ints {
    let xs: [[i8; 4]; N] = std::array::from_fn(|i| x.add(i).read_unaligned().to_le_bytes().map(|b| b as i8));
    std::array::from_fn(|lane| {
        let mut sum = 0;
        for (w, x) in wq.iter().zip(&xs) {
            let w = w[lane].to_le_bytes();
            for k in 0..4 {
                sum += weight(w[k]) * x[k] as i32;
            }
        }
        sum
    })
}

impl Lanes for Portable {
    const LANES: usize = 16;
    const SUBS: usize = 1;
    const TOKENS: usize = 4;
    const Q8_OFFSET: f32 = 0.0;
    type I = Ints;
    type F = Floats;

    #[inline(always)]
    unsafe fn line(p: *const Line, _: usize) -> Ints {
        let bytes = &(*p).0;
        std::array::from_fn(|lane| i32::from_le_bytes(bytes[4 * lane..4 * lane + 4].try_into().unwrap()))
    }
    #[inline(always)]
    unsafe fn low_nibbles(v: Ints) -> Ints {
        map_i(v, |v| v & 0x0F0F_0F0F)
    }
    #[inline(always)]
    unsafe fn high_nibbles(v: Ints) -> Ints {
        map_i(v, |v| ((v as u32 >> 4) & 0x0F0F_0F0F) as i32)
    }
    #[inline(always)]
    unsafe fn q8_weights(p: *const Line, s: usize) -> Ints {
        Self::line(p, s)
    }
    #[inline(always)]
    unsafe fn dot_nibbles(wq: &[Ints; 8], x: *const i32) -> Ints {
        dot(wq, x, |w| w as i32)
    }
    #[inline(always)]
    unsafe fn dot_q6(wq: &[Ints; 8], x: *const i32) -> [Ints; 2] {
        let halves: [[Ints; 4]; 2] = std::array::from_fn(|h| std::array::from_fn(|i| wq[4 * h + i]));
        std::array::from_fn(|h| dot(&halves[h], x.add(4 * h), |w| w as i8 as i32))
    }
    #[inline(always)]
    unsafe fn dot_q8(wq: &[Ints; 8], x: *const i32) -> Ints {
        dot(wq, x, |w| w as i8 as i32)
    }
    #[inline(always)]
    unsafe fn f16s(p: *const u16) -> Floats {
        std::array::from_fn(|i| half::f16::from_bits(p.add(i).read_unaligned()).to_f32())
    }
    #[inline(always)]
    unsafe fn bf16s(p: *const u16) -> Floats {
        std::array::from_fn(|i| f32::from_bits((p.add(i).read_unaligned() as u32) << 16))
    }
    #[inline(always)]
    unsafe fn f16_low(v: Ints) -> Floats {
        v.map(|v| half::f16::from_bits(v as u16).to_f32())
    }
    #[inline(always)]
    unsafe fn f16_high(v: Ints) -> Floats {
        v.map(|v| half::f16::from_bits((v as u32 >> 16) as u16).to_f32())
    }
    #[inline(always)]
    unsafe fn to_f32(v: Ints) -> Floats {
        v.map(|v| v as f32)
    }
    #[inline(always)]
    unsafe fn srl(v: Ints, bits: i32) -> Ints {
        map_i(v, |v| (v as u32 >> bits) as i32)
    }
    #[inline(always)]
    unsafe fn sll(v: Ints, bits: i32) -> Ints {
        map_i(v, |v| ((v as u32) << bits) as i32)
    }
    #[inline(always)]
    unsafe fn sra(v: Ints, bits: i32) -> Ints {
        map_i(v, |v| v >> bits)
    }
    #[inline(always)]
    unsafe fn sub_bytes(a: Ints, b: Ints) -> Ints {
        std::array::from_fn(|i| {
            let (a, b) = (a[i].to_le_bytes(), b[i].to_le_bytes());
            i32::from_le_bytes(std::array::from_fn(|k| a[k].wrapping_sub(b[k])))
        })
    }
    #[inline(always)]
    unsafe fn and(a: Ints, b: Ints) -> Ints {
        std::array::from_fn(|i| a[i] & b[i])
    }
    #[inline(always)]
    unsafe fn or(a: Ints, b: Ints) -> Ints {
        std::array::from_fn(|i| a[i] | b[i])
    }
    #[inline(always)]
    unsafe fn splat_i(v: i32) -> Ints {
        [v; 16]
    }
    #[inline(always)]
    unsafe fn zero() -> Floats {
        [0.0; 16]
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Floats {
        [v; 16]
    }
    #[inline(always)]
    unsafe fn mul(a: Floats, b: Floats) -> Floats {
        zip_f(a, b, |a, b| a * b)
    }
    #[inline(always)]
    unsafe fn sub(a: Floats, b: Floats) -> Floats {
        zip_f(a, b, |a, b| a - b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Floats, b: Floats, c: Floats) -> Floats {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Floats, n: usize) {
        std::ptr::copy_nonoverlapping(v.as_ptr(), p, n.min(16));
    }
    #[inline(always)]
    unsafe fn prefetch(_: *const Line) {}
}

/// # Safety
/// See [`kernel::panel`].
pub(super) unsafe fn panel<const T: usize, const F: u8>(w: &Panel, x: [*const Q8Block; T], out: [*mut f32; T]) {
    kernel::panel::<Portable, T, F>(w, x, out)
}

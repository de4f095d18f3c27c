//! Element-wise functions written without libm calls, so the loops that use them vectorise,
//! and a way to run such loops 16 lanes wide.

/// e^x to 1e-6 relative for |x| < 6, 4e-6 up to |x| = 80 (the rounding of x·log2 e); x
/// beyond ±88 is clamped.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let t = x.clamp(-87.0, 88.0) * std::f32::consts::LOG2_E;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer.
    let whole = (t + 12_582_912.0) - 12_582_912.0;
    let f = t - whole;
    let p = 1.0
        + f * (std::f32::consts::LN_2
            + f * (0.240_226_5 + f * (0.055_504_11 + f * (0.009_618_129 + f * (0.001_333_355 + f * 0.000_154_035_3)))));
    p * f32::from_bits(((whole as i32 + 127) << 23) as u32)
}

/// Lanes of the reductions below: independent accumulators, so their loops vectorise (a
/// single running sum or maximum is one long dependency chain).
const LANES: usize = 16;

/// The largest of `xs` (−∞ for none).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &v)| *l = l.max(v));
    }
    lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// `Σ f(x)` over `xs`, in the same order on every instruction set.
#[inline(always)]
pub fn sum_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        lanes.iter_mut().zip(c).for_each(|(l, &v)| *l += f(v));
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// GELU with the tanh approximation (`gelu_pytorch_tanh`), the tanh through [`exp`] so loops
/// over it vectorise.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    // tanh(u) = 1 - 2 / (e^{2u} + 1)
    let u = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    0.5 * x * (2.0 - 2.0 / (exp(2.0 * u) + 1.0))
}

/// Calls `f` from a function compiled for the instruction set in use — AVX-512, else AVX2 —
/// (`HEARTH_ISA` may force a weaker one): `f` is inlined there (it is called once), so its
/// element-wise loops vectorise 16 or 8 lanes wide. The results are the same bits either way.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::qdot::{isa, IsaKind};
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match isa().kind {
            // SAFETY (both): the instruction set in use was detected on this CPU.
            IsaKind::Avx512Vnni => return unsafe { avx512(f) },
            IsaKind::Avx2 | IsaKind::AvxVnni => return unsafe { avx2(f) },
            _ => {}
        }
    }
    f()
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut x = -80f32;
        while x < 80.0 {
            let want = (x as f64).exp();
            let error = ((super::exp(x) as f64) - want).abs() / want;
            let bound = if x.abs() < 6.0 { 1e-6 } else { 5e-6 };
            assert!(error < bound, "exp({x}) off by {error}");
            x += 0.0137;
        }
    }

    #[test]
    fn gelu_tanh_matches_its_formula() {
        let mut x = -12f32;
        while x < 12.0 {
            let v = x as f64;
            let want = 0.5 * v * (1.0 + (0.797_884_560_802_865_4 * (v + 0.044_715 * v * v * v)).tanh());
            let error = (super::gelu_tanh(x) as f64 - want).abs();
            assert!(error < 1e-5 * (1.0 + want.abs()), "gelu_tanh({x}) off by {error}");
            x += 0.0173;
        }
    }
}

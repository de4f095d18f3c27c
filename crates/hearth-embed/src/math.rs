//! Element-wise functions written without libm calls, so loops over them vectorise, and a
//! helper that spreads row-wise work over the kernels' thread pool.

use hearth_kernels::pool;

pub use hearth_kernels::math::{exp, gelu_tanh, sum_of, wide};

/// erf(x) to 1.5e-7 absolute (Abramowitz & Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Rows handed to one task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 8;

/// Calls `f(row_index, row)` for every `width`-long row of `buf`, in parallel.
pub fn for_each_row(buf: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
    let rows = buf.len() / width;
    let base = SendPtr(buf.as_mut_ptr());
    pool::global().run(rows.div_ceil(ROWS_PER_TASK), &|task| {
        for r in task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(rows) {
            // SAFETY: tasks own disjoint row ranges of `buf`, which outlives the parallel run.
            let row = unsafe { std::slice::from_raw_parts_mut(base.get().add(r * width), width) };
            f(r, row);
        }
    });
}

#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: used only to hand disjoint parts of one buffer to the pool's threads.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_is_accurate() {
        let mut x = -6.0f32;
        while x < 6.0 {
            let e = (super::erf(x) as f64 - libm_erf(x as f64)).abs();
            assert!(e < 5e-7, "erf({x}) off by {e}");
            x += 0.01;
        }
    }

    /// erf by its Taylor series (|x| < 3) or asymptotic tail, in f64: an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() >= 3.0 {
            // erfc(x) < 2.3e-5 at 3 and the float result is 1 ± that; use the continued fraction.
            let a = x.abs();
            let mut cf = 0.0;
            for k in (1..60).rev() {
                cf = (k as f64 / 2.0) / (a + cf);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + cf);
            return (1.0 - erfc).copysign(x);
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }
}

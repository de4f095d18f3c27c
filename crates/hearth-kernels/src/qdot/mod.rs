//! Integer dot products of quantised weight rows with 8-bit activations, dispatched once at
//! run time to the best instruction set the CPU has (`HEARTH_ISA=scalar|avx2|avxvnni|avx512vnni` on
//! x86-64, `scalar|neon|neon-dotprod` on aarch64, forces one, for comparisons and tests).

pub mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::sync::OnceLock;

use hearth_formats::gguf::GgmlType;

use crate::act::{Q8Block, Q8KBlock};
use crate::{FloatFormat, RowFormat};

type Q8Fn = fn(&[u8], &[Q8Block]) -> f32;
type Q8KFn = fn(&[u8], &[Q8KBlock]) -> f32;
type MlxFn = fn(u32, usize, FloatFormat, &[u8], &[u8], &[u8], &[Q8Block]) -> f32;

/// The instruction sets with kernels here, weakest first on each architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IsaKind {
    Scalar,
    Avx2,
    /// AVX2 with the 256-bit VNNI dot product (AVX-VNNI, or AVX-512 VNNI's 256-bit form).
    AvxVnni,
    /// AVX-512 F/BW/VL with the VNNI integer dot product.
    Avx512Vnni,
    /// aarch64's NEON (every aarch64 CPU), and NEON with the dot-product extension (`sdot`).
    Neon,
    NeonDotprod,
}

impl IsaKind {
    /// The name `HEARTH_ISA` takes, also for display.
    pub const fn name(self) -> &'static str {
        match self {
            IsaKind::Scalar => "scalar",
            IsaKind::Avx2 => "avx2",
            IsaKind::AvxVnni => "avxvnni",
            IsaKind::Avx512Vnni => "avx512vnni",
            IsaKind::Neon => "neon",
            IsaKind::NeonDotprod => "neon-dotprod",
        }
    }

    pub fn from_name(name: &str) -> Option<IsaKind> {
        [IsaKind::Scalar, IsaKind::Avx2, IsaKind::AvxVnni, IsaKind::Avx512Vnni, IsaKind::Neon, IsaKind::NeonDotprod]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// The kernels of one instruction set.
pub struct Isa {
    pub kind: IsaKind,
    /// `kind`'s name, for display.
    pub name: &'static str,
    q4_0: Q8Fn,
    q4_1: Q8Fn,
    q5_0: Q8Fn,
    q5_1: Q8Fn,
    q8_0: Q8Fn,
    q4k: Q8KFn,
    q5k: Q8KFn,
    q6k: Q8KFn,
    mlx: MlxFn,
}

const SCALAR: Isa = Isa {
    kind: IsaKind::Scalar,
    name: IsaKind::Scalar.name(),
    q4_0: scalar::q4_0,
    q4_1: scalar::q4_1,
    q5_0: scalar::q5_0,
    q5_1: scalar::q5_1,
    q8_0: scalar::q8_0,
    q4k: scalar::q4k,
    q5k: scalar::q5k,
    q6k: scalar::q6k,
    mlx: scalar::mlx,
};

#[cfg(target_arch = "x86_64")]
macro_rules! x86_isa {
    ($kind:expr, $m:ident) => {
        Isa {
            kind: $kind,
            name: $kind.name(),
            // SAFETY (all): only selected after the CPU reported the module's features.
            q4_0: |r, x| unsafe { x86::$m::q4_0(r, x) },
            q4_1: |r, x| unsafe { x86::$m::q4_1(r, x) },
            q5_0: scalar::q5_0,
            q5_1: scalar::q5_1,
            q8_0: |r, x| unsafe { x86::$m::q8_0(r, x) },
            q4k: |r, x| unsafe { x86::$m::q4k(r, x) },
            q5k: |r, x| unsafe { x86::$m::q5k(r, x) },
            q6k: |r, x| unsafe { x86::$m::q6k(r, x) },
            mlx: |bits, g, p, r, s, b, x| match bits {
                4 | 8 => unsafe { x86::$m::mlx(bits, g, p, r, s, b, x) },
                _ => scalar::mlx(bits, g, p, r, s, b, x),
            },
        }
    };
}

/// Every instruction set this CPU can run, best first (the scalar one always last).
pub fn available() -> Vec<Isa> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx2") && has!("fma") && has!("f16c") && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
            out.push(x86_isa!(IsaKind::Avx512Vnni, vnni));
        }
        if has!("avx2") && has!("fma") && has!("f16c") {
            // Only the panel kernels use VNNI on 256-bit registers; per-row products are AVX2's.
            if has!("avxvnni") || (has!("avx512vnni") && has!("avx512vl")) {
                out.push(x86_isa!(IsaKind::AvxVnni, avx2));
            }
            out.push(x86_isa!(IsaKind::Avx2, avx2));
        }
    }
    // On NEON only the panel kernels have their own code; per-row products stay portable.
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            out.push(Isa { kind: IsaKind::NeonDotprod, name: IsaKind::NeonDotprod.name(), ..SCALAR });
        }
        out.push(Isa { kind: IsaKind::Neon, name: IsaKind::Neon.name(), ..SCALAR });
    }
    out.push(SCALAR);
    out
}

/// For tests of whole models, whose instruction set is chosen once per process: in the test
/// binary's own process, runs the test `name` again in a child process per instruction set this
/// CPU has (`HEARTH_ISA` set), panics if one fails, and returns `false`; inside such a child,
/// returns `true` (the caller then makes its checks, on the child's instruction set).
pub fn in_child_per_isa(name: &str) -> bool {
    const CHILD: &str = "HEARTH_ISA_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let me = std::env::current_exe().expect("the test binary's path");
    for isa in available() {
        let status = std::process::Command::new(&me)
            .args(["--exact", name, "--nocapture"])
            .env(CHILD, "1")
            .env("HEARTH_ISA", isa.name)
            .status()
            .expect("run the test binary");
        assert!(status.success(), "{name} on {}: see the output above", isa.name);
    }
    false
}

/// The instruction set in use: the best available, unless `HEARTH_ISA` names another.
pub fn isa() -> &'static Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut all = available();
        let wanted = std::env::var("HEARTH_ISA").ok().and_then(|w| IsaKind::from_name(&w));
        let at = wanted.and_then(|w| all.iter().position(|i| i.kind == w)).unwrap_or(0);
        all.swap_remove(at)
    })
}

/// Which activation quantisation a weight format's integer kernel takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    Q8,
    Q8K,
    /// Float weights: activations stay f32.
    F32,
}

impl ActFormat {
    pub fn of(format: RowFormat) -> ActFormat {
        match format {
            RowFormat::Float(_) | RowFormat::Ggml(GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) => ActFormat::F32,
            RowFormat::Ggml(GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K) => ActFormat::Q8K,
            RowFormat::Ggml(_) => ActFormat::Q8,
            RowFormat::MlxAffine { group_size, .. } if group_size % 32 == 0 => ActFormat::Q8,
            RowFormat::MlxAffine { .. } => ActFormat::F32,
        }
    }
}

impl Isa {
    /// Dot product of one weight row with 32-blocks of activations.
    #[inline]
    pub fn dot_q8(&self, format: RowFormat, row: &[u8], scales: &[u8], biases: &[u8], x: &[Q8Block]) -> f32 {
        match format {
            RowFormat::Ggml(GgmlType::Q4_0) => (self.q4_0)(row, x),
            RowFormat::Ggml(GgmlType::Q4_1) => (self.q4_1)(row, x),
            RowFormat::Ggml(GgmlType::Q5_0) => (self.q5_0)(row, x),
            RowFormat::Ggml(GgmlType::Q5_1) => (self.q5_1)(row, x),
            RowFormat::Ggml(GgmlType::Q8_0) => (self.q8_0)(row, x),
            RowFormat::MlxAffine { bits, group_size, params } => (self.mlx)(bits, group_size, params, row, scales, biases, x),
            other => unreachable!("{other:?} does not take Q8 activations"),
        }
    }

    /// Dot product of one K-quant weight row with 256-blocks of activations.
    #[inline]
    pub fn dot_q8k(&self, format: RowFormat, row: &[u8], x: &[Q8KBlock]) -> f32 {
        match format {
            RowFormat::Ggml(GgmlType::Q4K) => (self.q4k)(row, x),
            RowFormat::Ggml(GgmlType::Q5K) => (self.q5k)(row, x),
            RowFormat::Ggml(GgmlType::Q6K) => (self.q6k)(row, x),
            other => unreachable!("{other:?} does not take Q8K activations"),
        }
    }
}

//! The bf16 panel product against float64 sums of the same bf16-rounded operands, on random
//! data of odd shapes (partial panels, odd columns, short token blocks) and every weight
//! format it repacks.

use half::{bf16, f16};
use hearth_kernels::bf16::{supported, Bf16Panels};
use hearth_kernels::{FloatFormat, MatrixRef, RowFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn round(v: f32) -> f64 {
    bf16::from_f32(v).to_f64()
}

fn stored(format: FloatFormat, w: &[f32]) -> Vec<u8> {
    match format {
        FloatFormat::F32 => w.iter().flat_map(|v| v.to_le_bytes()).collect(),
        FloatFormat::F16 => w.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        FloatFormat::BF16 => w.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
    }
}

#[test]
fn bf16_panels_match_float64_on_bf16_operands() {
    let mut rng = StdRng::seed_from_u64(7);
    let probe = MatrixRef::new(RowFormat::Float(FloatFormat::F32), 1, 1, &[0; 4], &[], &[]).unwrap();
    if !supported() {
        assert!(Bf16Panels::new(&probe).is_none(), "no panels without the instruction");
        eprintln!("this CPU has no AVX-512 BF16: only the fallback's refusal was checked");
        return;
    }
    for (rows, cols, tokens) in [(1, 1, 1), (16, 32, 8), (17, 33, 9), (40, 70, 20), (33, 384, 131), (5, 3, 70), (64, 96, 1)] {
        for format in [FloatFormat::F32, FloatFormat::F16, FloatFormat::BF16] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-2.0..2.0)).collect();
            let bias: Vec<f32> = (0..rows).map(|_| rng.random_range(-1.0..1.0)).collect();
            let data = stored(format, &w);
            let m = MatrixRef::new(RowFormat::Float(format), rows, cols, &data, &[], &[]).unwrap();
            let panels = Bf16Panels::new(&m).unwrap();
            let mut exact_w = vec![0f32; cols];
            for with_bias in [false, true] {
                let mut out = vec![f32::NAN; tokens * rows];
                panels.matmul(&x, with_bias.then_some(&bias[..]), &mut out);
                for r in 0..rows {
                    m.row(r, &mut exact_w);
                    for t in 0..tokens {
                        let xs = &x[t * cols..(t + 1) * cols];
                        let products = exact_w.iter().zip(xs).map(|(&a, &b)| round(a) * round(b));
                        let (sum, scale) = products.fold((0.0, 0.0), |(s, a), p| (s + p, a + p.abs()));
                        let want = sum + if with_bias { bias[r] as f64 } else { 0.0 };
                        let got = out[t * rows + r] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (scale + 1.0),
                            "{format:?} {rows}x{cols}, {tokens} tokens, [{t}, {r}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

//! Quantised panels against the file layout: rows de-quantise identically, products match float64
//! sums of the exactly de-quantised weights and 8-bit activations, and each token's result is
//! bit-identical whether it runs alone or in a batch — on every instruction set this CPU runs.
//! Random data, odd shapes.

use half::f16;
use hearth_formats::gguf::GgmlType;
use hearth_kernels::act::{quantize_q8, Q8Block};
use hearth_kernels::panels::QuantPanels;
use hearth_kernels::qdot::{available, IsaKind};
use hearth_kernels::{MatrixRef, RowFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random blocks with sane f16 fields: the scale, and the minimum (Q4_1, Q5_1) or dmin (Q4_K,
/// Q5_K).
/// The K-quants' sub-block scales (and minimums) are random bytes, all of their bits in use.
fn random_blocks(t: GgmlType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let bb = t.block_bytes();
    let mut data = vec![0u8; rows * cols / t.block_len() * bb];
    rng.fill(&mut data[..]);
    for b in data.chunks_exact_mut(bb) {
        b[..2].copy_from_slice(&f16::from_f32(rng.random_range(0.001..0.05)).to_le_bytes());
        match t {
            GgmlType::Q4_1 | GgmlType::Q5_1 => b[2..4].copy_from_slice(&f16::from_f32(rng.random_range(-0.5..0.5)).to_le_bytes()),
            GgmlType::Q4K | GgmlType::Q5K => b[2..4].copy_from_slice(&f16::from_f32(rng.random_range(0.0..0.01)).to_le_bytes()),
            // Q6_K's d ends its block.
            GgmlType::Q6K => b[208..].copy_from_slice(&f16::from_f32(rng.random_range(0.001..0.05)).to_le_bytes()),
            _ => {}
        }
    }
    data
}

/// Every instruction set this CPU runs (the portable kernel included).
fn kinds() -> Vec<IsaKind> {
    available().iter().map(|i| i.kind).collect()
}

/// Panels of random `t` weights against the file layout, on each instruction set: rows
/// de-quantise identically, each token's product matches the float64 sum of the exact weights
/// and its 8-bit activations, and is bit-identical when the token runs alone.
fn check_against_the_file_layout(t: GgmlType, rows: usize, cols: usize, token_counts: &[usize], rng: &mut StdRng) {
    let data = random_blocks(t, rows, cols, rng);
    let w = MatrixRef::new(RowFormat::Ggml(t), rows, cols, &data, &[], &[]).unwrap();
    for kind in kinds() {
        let panels = QuantPanels::for_isa(kind, &w, |_| {}).expect("panels on every instruction set");
        check_panels(kind, &w, &panels, token_counts, rng);
    }
}

fn check_panels(kind: IsaKind, w: &MatrixRef<'_>, panels: &QuantPanels, token_counts: &[usize], rng: &mut StdRng) {
    let (t, rows, cols) = (w.format(), w.rows(), w.cols());
    let (mut a, mut b) = (vec![0f32; cols], vec![0f32; cols]);
    for r in 0..rows {
        w.row(r, &mut a);
        panels.row(r, &mut b);
        assert_eq!(a, b, "{kind:?} {t:?} row {r}");
    }
    for &tokens in token_counts {
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut out = vec![f32::NAN; tokens * rows];
        panels.matmul(&x, &mut out);
        let mut q = vec![Q8Block::default(); tokens * cols / 32];
        quantize_q8(&x, &mut q);
        for tok in 0..tokens {
            let xq: Vec<f64> =
                q[tok * cols / 32..(tok + 1) * cols / 32].iter().flat_map(|blk| blk.qs.map(|v| blk.d as f64 * v as f64)).collect();
            for r in 0..rows {
                w.row(r, &mut a);
                let (want, scale) = a.iter().zip(&xq).fold((0.0, 0.0), |(s, m), (&w, &x)| (s + w as f64 * x, m + (w as f64 * x).abs()));
                let got = out[tok * rows + r] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (scale + 1.0),
                    "{kind:?} {t:?} {rows}x{cols}, {tokens} tokens, [{tok}, {r}]: {got} vs {want}"
                );
            }
            let mut alone = vec![0f32; rows];
            panels.matmul(&x[tok * cols..(tok + 1) * cols], &mut alone);
            assert!(
                alone.iter().zip(&out[tok * rows..]).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind:?} {t:?}: token {tok} of {tokens} differs from running alone"
            );
        }
    }
}

#[test]
fn panels_match_the_file_layout() {
    let mut rng = StdRng::seed_from_u64(11);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
        for (rows, cols) in [(1, 32), (16, 64), (17, 96), (45, 160), (64, 576)] {
            check_against_the_file_layout(t, rows, cols, &[1, 3, 8, 9, 70, 131], &mut rng);
        }
    }
}

/// The K-quants' 256-blocks: every kernel width (1 to 8 tokens per call, and the
/// remainders of longer runs), partial panels, and rows several blocks long.
#[test]
fn k_quant_panels_match_the_file_layout() {
    let mut rng = StdRng::seed_from_u64(14);
    let token_counts: Vec<usize> = (1..=13).chain([70]).collect();
    for t in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K] {
        for (rows, cols) in [(1, 256), (16, 512), (17, 256), (45, 768), (70, 1280)] {
            check_against_the_file_layout(t, rows, cols, &token_counts, &mut rng);
        }
    }
}

/// MLX's 4-bit groups of 32 to 128 with f16 and bf16 scales and biases, cut into blocks of 32.
#[test]
fn mlx_4bit_panels_match_the_stored_layout() {
    use hearth_kernels::FloatFormat;
    let mut rng = StdRng::seed_from_u64(15);
    for params in [FloatFormat::F16, FloatFormat::BF16] {
        for (group_size, rows, cols) in [(32, 1, 32), (64, 17, 128), (128, 45, 256), (64, 16, 576)] {
            let mut data = vec![0u8; rows * cols / 2];
            rng.fill(&mut data[..]);
            let groups = rows * cols / group_size;
            let param = |v: f32| match params {
                FloatFormat::F16 => f16::from_f32(v).to_le_bytes(),
                _ => half::bf16::from_f32(v).to_le_bytes(),
            };
            let scales: Vec<u8> = (0..groups).flat_map(|_| param(rng.random_range(0.001..0.05))).collect();
            let biases: Vec<u8> = (0..groups).flat_map(|_| param(rng.random_range(-0.5..0.5))).collect();
            let format = RowFormat::MlxAffine { bits: 4, group_size, params };
            let w = MatrixRef::new(format, rows, cols, &data, &scales, &biases).unwrap();
            for kind in kinds() {
                let panels = QuantPanels::for_isa(kind, &w, |_| {}).expect("panels on every instruction set");
                check_panels(kind, &w, &panels, &[1, 4, 9, 70], &mut rng);
            }
        }
    }
}

#[test]
fn a_group_equals_its_parts() {
    let mut rng = StdRng::seed_from_u64(12);
    let (cols, tokens) = (256, 5);
    // More parts than one parallel section takes, of every format.
    let shapes = [
        (GgmlType::Q4_1, 40),
        (GgmlType::Q4K, 7),
        (GgmlType::Q8_0, 33),
        (GgmlType::Q4_0, 16),
        (GgmlType::Q5_0, 16),
        (GgmlType::Q5_1, 1),
        (GgmlType::Q5K, 3),
        (GgmlType::Q6K, 19),
    ];
    let data: Vec<Vec<u8>> = shapes.iter().map(|&(t, rows)| random_blocks(t, rows, cols, &mut rng)).collect();
    let panels: Vec<QuantPanels> = shapes
        .iter()
        .zip(&data)
        .map(|(&(t, rows), d)| QuantPanels::new(&MatrixRef::new(RowFormat::Ggml(t), rows, cols, d, &[], &[]).unwrap(), |_| {}).unwrap())
        .collect();
    let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-3.0..3.0)).collect();
    let alone: Vec<Vec<f32>> = panels
        .iter()
        .map(|p| {
            let mut out = vec![0f32; tokens * p.rows()];
            p.matmul(&x, &mut out);
            out
        })
        .collect();
    let mut outs: Vec<Vec<f32>> = panels.iter().map(|p| vec![f32::NAN; tokens * p.rows()]).collect();
    let mut parts: Vec<_> = panels.iter().zip(outs.iter_mut()).map(|(p, o)| (p, &mut o[..])).collect();
    QuantPanels::matmul_group(&x, &mut parts);
    assert_eq!(outs, alone);
}

#[test]
fn panels_take_only_their_formats() {
    let w = MatrixRef::new(RowFormat::Float(hearth_kernels::FloatFormat::F16), 1, 32, &[0; 64], &[], &[]).unwrap();
    assert!(QuantPanels::new(&w, |_| {}).is_none());
}

#[test]
fn every_source_byte_is_reported_copied_once() {
    let mut rng = StdRng::seed_from_u64(13);
    for (t, rows, cols) in [(GgmlType::Q4_0, 1, 64), (GgmlType::Q4_0, 1024, 64), (GgmlType::Q4_0, 2100, 64), (GgmlType::Q4K, 2100, 256)] {
        let data = random_blocks(t, rows, cols, &mut rng);
        let w = MatrixRef::new(RowFormat::Ggml(t), rows, cols, &data, &[], &[]).unwrap();
        let mut ranges = Vec::new();
        QuantPanels::new(&w, |r| ranges.push(r)).unwrap();
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next, "{t:?}, {rows} rows: ranges in order, without gaps or overlaps");
            next = r.end;
        }
        assert_eq!(next, data.len());
    }
}

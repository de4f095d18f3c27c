//! Every integer kernel, on every instruction set this CPU has, against the scalar reference
//! and against float arithmetic on exactly de-quantised weights, on random data of odd shapes.

use half::{bf16, f16};
use hearth_formats::gguf::GgmlType;
use hearth_kernels::act::{quantize_q8, quantize_q8k, Q8Block, Q8KBlock};
use hearth_kernels::qdot::{available, ActFormat, IsaKind};
use hearth_kernels::{FloatFormat, MatrixRef, Precision, RowFormat};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GGML: [GgmlType; 8] =
    [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// Random blocks whose scale fields are sane floats (random bytes there could be NaN).
fn random_ggml(t: GgmlType, rows: usize, cols: usize, rng: &mut StdRng) -> Vec<u8> {
    let bb = t.block_bytes();
    let mut data = vec![0u8; rows * cols / t.block_len() * bb];
    rng.fill(&mut data[..]);
    for b in data.chunks_exact_mut(bb) {
        let (d, m) = (rng.random_range(0.001..0.05f32), rng.random_range(-0.5..0.5f32));
        match t {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put_f16(b, 0, d),
            GgmlType::Q4_1 | GgmlType::Q5_1 => {
                put_f16(b, 0, d);
                put_f16(b, 2, m);
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                put_f16(b, 0, d);
                put_f16(b, 2, d.abs());
            }
            GgmlType::Q6K => put_f16(b, 208, d),
            _ => unreachable!(),
        }
    }
    data
}

fn random_params(p: FloatFormat, n: usize, rng: &mut StdRng) -> Vec<u8> {
    (0..n)
        .flat_map(|_| {
            let v = rng.random_range(-0.1..0.1f32);
            match p {
                FloatFormat::F32 => v.to_le_bytes().to_vec(),
                FloatFormat::F16 => f16::from_f32(v).to_le_bytes().to_vec(),
                FloatFormat::BF16 => bf16::from_f32(v).to_le_bytes().to_vec(),
            }
        })
        .collect()
}

struct Case {
    format: RowFormat,
    rows: usize,
    cols: usize,
    data: Vec<u8>,
    scales: Vec<u8>,
    biases: Vec<u8>,
}

fn cases(rng: &mut StdRng) -> Vec<Case> {
    let mut out = Vec::new();
    for t in GGML {
        for (rows, blocks) in [(1, 1), (7, 3), (37, 5)] {
            let cols = blocks * t.block_len();
            out.push(Case {
                format: RowFormat::Ggml(t),
                rows,
                cols,
                data: random_ggml(t, rows, cols, rng),
                scales: vec![],
                biases: vec![],
            });
        }
    }
    for (bits, group) in [(4, 32), (4, 64), (8, 64), (8, 128), (2, 32)] {
        for params in [FloatFormat::F16, FloatFormat::BF16, FloatFormat::F32] {
            let (rows, cols) = (11, group * 3);
            let mut data = vec![0u8; rows * cols * bits / 8];
            rng.fill(&mut data[..]);
            let groups = rows * cols / group;
            out.push(Case {
                format: RowFormat::MlxAffine { bits: bits as u32, group_size: group, params },
                rows,
                cols,
                data,
                scales: random_params(params, groups, rng),
                biases: random_params(params, groups, rng),
            });
        }
    }
    out
}

#[test]
fn simd_kernels_match_the_scalar_reference() {
    let mut rng = StdRng::seed_from_u64(1);
    let isas = available();
    eprintln!("instruction sets: {:?}", isas.iter().map(|i| i.name).collect::<Vec<_>>());
    for case in cases(&mut rng) {
        let m = MatrixRef::new(case.format, case.rows, case.cols, &case.data, &case.scales, &case.biases).unwrap();
        let x: Vec<f32> = (0..case.cols).map(|_| rng.random_range(-2.0..2.0)).collect();
        let rb = case.data.len() / case.rows;
        let pb = case.scales.len() / case.rows;
        for r in 0..case.rows {
            let row = &case.data[r * rb..(r + 1) * rb];
            let (s, b) = (&case.scales[r * pb..(r + 1) * pb], &case.biases[r * pb..(r + 1) * pb]);
            let results: Vec<(&str, f32)> = match ActFormat::of(case.format) {
                ActFormat::Q8 => {
                    let mut q = vec![Q8Block::default(); case.cols / 32];
                    quantize_q8(&x, &mut q);
                    isas.iter().map(|i| (i.name, i.dot_q8(case.format, row, s, b, &q))).collect()
                }
                ActFormat::Q8K => {
                    let mut q = vec![Q8KBlock::default(); case.cols / 256];
                    quantize_q8k(&x, &mut q);
                    isas.iter().map(|i| (i.name, i.dot_q8k(case.format, row, &q))).collect()
                }
                ActFormat::F32 => unreachable!(),
            };
            let reference = results.last().unwrap().1;
            for (name, v) in &results {
                let tol = 1e-4 * (1.0 + reference.abs());
                assert!(
                    (v - reference).abs() <= tol,
                    "{:?} {}x{} row {r}: {name} {v} vs scalar {reference}",
                    case.format,
                    case.rows,
                    case.cols
                );
            }
            // The integer path differs from exact float arithmetic only by activation rounding.
            let mut w = vec![0f32; case.cols];
            m.row(r, &mut w);
            let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
            let scale: f32 = w.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (reference - exact).abs() <= 0.02 * scale + 1e-5,
                "{:?} row {r}: scalar {reference} vs exact {exact} (Σ|w·x| = {scale})",
                case.format
            );
        }
    }
}

#[test]
fn fast_matmul_matches_exact_matmul_for_several_tokens() {
    let mut rng = StdRng::seed_from_u64(2);
    for case in cases(&mut rng) {
        let m = MatrixRef::new(case.format, case.rows, case.cols, &case.data, &case.scales, &case.biases).unwrap();
        // Few tokens take one dot product per token, many the tiled kernel.
        for tokens in [3, 20] {
            let x: Vec<f32> = (0..tokens * case.cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut fast = vec![0f32; tokens * case.rows];
            let mut exact = vec![0f32; tokens * case.rows];
            m.matmul(&x, &mut fast, Precision::Fast);
            m.matmul(&x, &mut exact, Precision::Exact);
            let worst = fast.iter().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = exact.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(
                worst <= 0.03 * scale + 1e-4,
                "{:?} ({tokens} tokens): fast differs from exact by {worst} (max |out| {scale})",
                case.format
            );
        }
    }
}

#[test]
fn batched_decode_gives_each_token_its_own_product() {
    // Up to GEMM size, tokens go through the decode kernels in groups of 8 and 4 with padded
    // lanes: every count must give each token exactly what it gets alone.
    let mut rng = StdRng::seed_from_u64(9);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let (rows, cols) = (19, 128);
        let data = random_ggml(t, rows, cols, &mut rng);
        let m = MatrixRef::new(RowFormat::Ggml(t), rows, cols, &data, &[], &[]).unwrap();
        let x: Vec<f32> = (0..13 * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let alone: Vec<f32> = x
            .chunks_exact(cols)
            .flat_map(|xt| {
                let mut out = vec![0f32; rows];
                m.matmul(xt, &mut out, Precision::Fast);
                out
            })
            .collect();
        for tokens in 1..=13 {
            let mut out = vec![0f32; tokens * rows];
            m.matmul(&x[..tokens * cols], &mut out, Precision::Fast);
            assert_eq!(out, alone[..tokens * rows], "{t:?}, {tokens} tokens");
        }
    }
}

#[test]
fn many_token_kernel_matches_its_scalar_reference_and_exact_products() {
    use hearth_kernels::gemm::{expand_row, supported, tile_scalar, PackedActs, TILE};
    let mut rng = StdRng::seed_from_u64(3);
    let has_vnni = available().iter().any(|i| i.kind == IsaKind::Avx512Vnni);
    for case in cases(&mut rng).into_iter().filter(|c| supported(c.format) && c.cols % 32 == 0) {
        let m = MatrixRef::new(case.format, case.rows, case.cols, &case.data, &case.scales, &case.biases).unwrap();
        let tokens = 21; // one full tile and a partial one
        let x: Vec<f32> = (0..tokens * case.cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let nb = case.cols / 32;
        let mut q = vec![Q8Block::default(); tokens * nb];
        quantize_q8(&x, &mut q);
        let mut packed = PackedActs::default();
        packed.pack(&q, tokens, nb);
        let (rb, pb) = (case.data.len() / case.rows, case.scales.len() / case.rows);
        let (mut eq, mut ea, mut ec) = (vec![0u8; case.cols], vec![0f32; case.cols / 16], vec![0f32; case.cols / 16]);
        let mut w = vec![0f32; case.cols];
        for r in 0..case.rows {
            let (s, b) = (&case.scales[r * pb..(r + 1) * pb], &case.biases[r * pb..(r + 1) * pb]);
            expand_row(case.format, &case.data[r * rb..(r + 1) * rb], s, b, &mut eq, &mut ea, &mut ec);
            m.row(r, &mut w);
            for tile in 0..packed.tiles {
                let mut reference = [0f32; TILE];
                tile_scalar(&eq, &ea, &ec, &packed, tile, &mut reference);
                if has_vnni {
                    let mut simd = [[0f32; TILE]; 2];
                    unsafe { hearth_kernels::gemm::avx512::tile::<2>([(&eq, &ea, &ec), (&eq, &ea, &ec)], &packed, tile, &mut simd) };
                    for lane in 0..TILE {
                        let tol = 1e-4 * (1.0 + reference[lane].abs());
                        assert!((simd[0][lane] - reference[lane]).abs() <= tol && simd[1][lane] == simd[0][lane], "{:?}", case.format);
                    }
                }
                for lane in 0..TILE.min(tokens - tile * TILE) {
                    let xt = &x[(tile * TILE + lane) * case.cols..][..case.cols];
                    let exact: f32 = w.iter().zip(xt).map(|(a, b)| a * b).sum();
                    let scale: f32 = w.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                    assert!(
                        (reference[lane] - exact).abs() <= 0.02 * scale + 1e-5,
                        "{:?} row {r}: {} vs exact {exact}",
                        case.format,
                        reference[lane]
                    );
                }
            }
        }
    }
}

/// The attention product (rows against a strided tile) on the instruction set in use.
#[test]
fn rows_times_tile_matches_its_scalar_reference() {
    use hearth_kernels::gemm::{rows_times_tile, tile_f32_scalar, PackedF32, TILE};
    let mut rng = StdRng::seed_from_u64(4);
    for cols in [1, 7, 64, 385] {
        let tokens = 19;
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows: Vec<f32> = (0..5 * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut packed = PackedF32::default();
        packed.pack(&x, tokens, cols);
        let w: Vec<&[f32]> = rows.chunks_exact(cols).collect();
        for tile in 0..packed.tiles {
            let mut reference = [[0f32; TILE]; 5];
            tile_f32_scalar(&w, packed.tile(tile), &mut reference);
            let mut got = vec![0f32; 5 * 20];
            rows_times_tile(&rows, cols, 5, packed.tile(tile), TILE, TILE, cols, &mut got, 20);
            for r in 0..5 {
                for lane in 0..TILE {
                    assert!((got[r * 20 + lane] - reference[r][lane]).abs() <= 1e-4 * (1.0 + reference[r][lane].abs()));
                }
            }
        }
    }
}

#[test]
fn grouped_products_equal_separate_ones() {
    let mut rng = StdRng::seed_from_u64(6);
    for t in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q4K] {
        let cols = 256;
        let shapes = [13, 5, 29];
        let data: Vec<Vec<u8>> = shapes.iter().map(|&rows| random_ggml(t, rows, cols, &mut rng)).collect();
        let mats: Vec<MatrixRef> =
            shapes.iter().zip(&data).map(|(&rows, d)| MatrixRef::new(RowFormat::Ggml(t), rows, cols, d, &[], &[]).unwrap()).collect();
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut separate: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![0f32; r]).collect();
        for (m, out) in mats.iter().zip(separate.iter_mut()) {
            m.matmul(&x, out, Precision::Fast);
        }
        let mut grouped: Vec<Vec<f32>> = shapes.iter().map(|&r| vec![0f32; r]).collect();
        let mut parts: Vec<(MatrixRef, &mut [f32])> = mats.iter().copied().zip(grouped.iter_mut().map(|v| &mut v[..])).collect();
        MatrixRef::matmul_group(&x, &mut parts, Precision::Fast);
        assert_eq!(separate, grouped, "{t:?}");
    }
}

/// f32 weights are read in place when aligned and copied when not; both, for one token and for
/// the many-token tiles, equal a naive product. F16 and BF16 take the copying path.
#[test]
fn float_weights_in_place_or_copied_match_a_naive_product() {
    let mut rng = StdRng::seed_from_u64(9);
    let (rows, cols) = (7, 33);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    // One byte in: the same values, misaligned.
    let shifted: Vec<u8> = std::iter::once(0).chain(bytes.iter().copied()).collect();
    for data in [&bytes[..], &shifted[1..]] {
        let m = MatrixRef::new(RowFormat::Float(FloatFormat::F32), rows, cols, data, &[], &[]).unwrap();
        for tokens in [1, 40] {
            let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
            for precision in [Precision::Fast, Precision::Exact] {
                let mut out = vec![0f32; tokens * rows];
                m.matmul(&x, &mut out, precision);
                for t in 0..tokens {
                    for r in 0..rows {
                        let want: f32 = (0..cols).map(|c| x[t * cols + c] * w[r * cols + c]).sum();
                        assert!((out[t * rows + r] - want).abs() <= 1e-4 * (1.0 + want.abs()), "{tokens} tokens, row {r}");
                    }
                }
            }
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn eight_row_float_kernel_matches_its_scalar_reference() {
    use hearth_kernels::gemm::{tile_f32_scalar, PackedF32, TILE};
    if !std::arch::is_x86_feature_detected!("avx512f") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(12);
    for cols in [1, 7, 64, 385] {
        let tokens = 37;
        let x: Vec<f32> = (0..tokens * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows: Vec<Vec<f32>> = (0..8).map(|_| (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let mut packed = PackedF32::default();
        packed.pack(&x, tokens, cols);
        let w: [&[f32]; 8] = std::array::from_fn(|i| &rows[i][..]);
        let mut simd = [[0f32; TILE]; 16];
        unsafe { hearth_kernels::gemm::avx512::tile8x2_f32(w, packed.tile(0), packed.tile(1), &mut simd) };
        for (half, tile) in [0, 1].into_iter().enumerate() {
            let mut reference = [[0f32; TILE]; 8];
            tile_f32_scalar(&w, packed.tile(tile), &mut reference);
            for r in 0..8 {
                for lane in 0..TILE {
                    let (got, want) = (simd[half * 8 + r][lane], reference[r][lane]);
                    assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "cols {cols} row {r} lane {lane}");
                }
            }
        }
    }
}

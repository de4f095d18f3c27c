//! The MLX affine quantiser against what `mlx_lm.convert -q` wrote for the tiny fixtures
//! (testdata/tiny/mlx, from testdata/tiny/hf): the same codes, scales and biases, bit for bit.

use std::path::Path;

use half::{bf16, f16};
use hearth_formats::safetensors::SafeTensors;
use hearth_formats::DType;
use hearth_kernels::quant::quantize_mlx_affine;

/// Values as f32 from a float tensor's bytes.
fn floats(dtype: DType, data: &[u8]) -> Vec<f32> {
    match dtype {
        DType::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
        DType::F16 => data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::BF16 => data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        other => panic!("{other:?} is not a float type"),
    }
}

#[test]
fn mlx_affine_quantiser_matches_mlx_lm_convert() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny");
    for (source, converted, bits, group) in [
        ("hf/qwen3", "mlx/qwen3-q4g32-f16", 4, 32),
        ("hf/qwen3", "mlx/qwen3-q8g64-f16", 8, 64),
        ("hf/llama", "mlx/llama-q4g32-bf16", 4, 32),
        ("hf/llama", "mlx/llama-q8g64-bf16", 8, 64),
    ] {
        let hf = SafeTensors::open(&root.join(source).join("model.safetensors")).unwrap().tensors;
        let mlx = SafeTensors::open(&root.join(converted).join("model.safetensors")).unwrap().tensors;
        let mut layers = 0;
        for (name, t) in &hf {
            let Some(base) = name.strip_suffix(".weight") else { continue };
            let Some(scales) = mlx.get(&format!("{base}.scales")) else { continue };
            let biases = &mlx[&format!("{base}.biases")];
            // `--dtype` casts the weights first; the quantiser then works in that type's values.
            let round = |v: f32| if scales.dtype == DType::BF16 { bf16::from_f32(v).to_f32() } else { f16::from_f32(v).to_f32() };
            let values: Vec<f32> = floats(t.dtype, &t.data).into_iter().map(round).collect();
            let (mut packed, mut got_scales, mut got_biases) = (Vec::new(), Vec::new(), Vec::new());
            for row in values.chunks_exact(t.shape[1]) {
                let q = quantize_mlx_affine(row, bits, group);
                packed.extend(q.packed);
                got_scales.extend(q.scales.into_iter().map(round));
                got_biases.extend(q.biases.into_iter().map(round));
            }
            assert!(packed == mlx[name].data[..], "{converted} {name}: codes differ");
            assert_eq!(got_scales, floats(scales.dtype, &scales.data), "{converted} {name}: scales");
            assert_eq!(got_biases, floats(biases.dtype, &biases.data), "{converted} {name}: biases");
            layers += 1;
        }
        assert!(layers > 10, "{converted}: {layers} quantised layers compared");
    }
}

//! `hearth fuse` against the tools whose adapters it reads: mlx-lm's LoRA and DoRA `fuse`
//! (testdata/tiny/lora: fused, fused-q4g32, dora-fused) and PEFT's `merge_and_unload`
//! (lora/peft-lora, lora/peft-dora); bench/make_convert_fixtures.py made them.

mod common;

use std::path::Path;

use common::*;
use hearth_convert::{to_gguf, to_hf, to_mlx, FloatType, GgufFileType, GgufOptions, MlxOptions};
use hearth_formats::gguf::Gguf;
use hearth_formats::safetensors::{SafeTensors, TensorView};

fn floats(t: &TensorView) -> Vec<f32> {
    t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Every tensor of `want` (float32) is in `got`'s weights within `tolerance`; how many.
fn assert_close(got: &Path, want: &Path, tolerance: f32) -> usize {
    let got = SafeTensors::open(&got.join("model.safetensors")).unwrap();
    let want = SafeTensors::open(want).unwrap();
    for (name, w) in &want.tensors {
        let worst = max_diff(&floats(&got.tensors[name]), &floats(w));
        assert!(worst <= tolerance, "{name}: {worst}");
    }
    want.tensors.len()
}

fn fuse(adapter: &str, opts: MlxOptions) -> MlxOptions {
    MlxOptions { adapter: Some(tiny(adapter)), ..opts }
}

/// The fixtures' mlx-lm adapter merged into hf/llama equals what `mlx_lm.fuse` wrote within
/// 1e-6; the same fuse written as GGUF runs with the fused directory's logits.
#[test]
fn fusing_an_adapter_equals_mlx_lm_fuse() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fused");
    to_mlx(&tiny("hf/llama"), &out, &fuse("lora/adapters", MlxOptions::default())).unwrap();
    let changed = assert_close(&out, &tiny("lora/fused/model.safetensors"), 1e-6);
    assert!(changed >= 14, "{changed}");
    let gguf = tmp.path().join("fused.gguf");
    let opts =
        GgufOptions { file_type: Some(GgufFileType::F32), pure: false, force: false, adapter: Some(tiny("lora/adapters")), progress: None };
    to_gguf(&tiny("hf/llama"), &gguf, &opts).unwrap();
    // (lora/fused ships without its tokenizer; `out` holds the same weights within 1e-6.)
    let worst = max_diff(&run(&gguf).1, &run(&out).1);
    assert!(worst < 1e-3, "fused GGUF against the fused directory: {worst}");
    // Phi-3's attention is one fused qkv_proj: an adapter of q_proj/k_proj/v_proj does not fit it.
    let err =
        to_gguf(&tiny("hf/phi3"), &tmp.path().join("phi3.gguf"), &GgufOptions { file_type: Some(GgufFileType::F16), ..opts }).unwrap_err();
    assert!(err.to_string().contains("does not have"), "{err}");
    assert!(!tmp.path().join("phi3.gguf").exists());
}

/// Into a 4-bit MLX base: de-quantised, merged and re-quantised to the base's own layout, as
/// `mlx_lm.fuse` does (lora/fused-q4g32); with `dequantize`, float weights.
#[test]
fn fusing_into_a_quantised_mlx_base_equals_mlx_lm_fuse() {
    let tmp = tempfile::tempdir().unwrap();
    let base = with_tokenizer("mlx/llama-q4g32-bf16", "hf/llama", tmp.path());
    let out = tmp.path().join("fused");
    let report = to_mlx(&base, &out, &fuse("lora/adapters", MlxOptions::default())).unwrap();
    assert!(report.quantized > 10 && report.kept < report.quantized, "{report:?}");
    assert_eq!(config(&out)["quantization"], config(&tiny("lora/fused-q4g32"))["quantization"]);
    // Bit for bit: mx.dequantize's bfloat16 rounding reproduced, the same quantiser after.
    let got = SafeTensors::open(&out.join("model.safetensors")).unwrap();
    let want = SafeTensors::open(&tiny("lora/fused-q4g32/model.safetensors")).unwrap();
    for (name, w) in &want.tensors {
        let g = &got.tensors[name];
        assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "{name}");
        assert!(g.data[..] == w.data[..], "{name}: bytes differ");
    }
    // --dequantize: the base de-quantised (in bfloat16, as mx.dequantize does) with the update
    // added: the same weights as fusing into the de-quantised base.
    let dequantized = tmp.path().join("float");
    to_mlx(&base, &dequantized, &fuse("lora/adapters", MlxOptions { dequantize: true, ..MlxOptions::default() })).unwrap();
    assert!(config(&dequantized).get("quantization").is_none());
    let (float_base, two_steps) = (tmp.path().join("float-base"), tmp.path().join("two-steps"));
    to_hf(&base, &float_base, &MlxOptions::default()).unwrap();
    to_mlx(&float_base, &two_steps, &fuse("lora/adapters", MlxOptions::default())).unwrap();
    let (a, b) = (store(&dequantized), store(&two_steps));
    assert!(a.iter().all(|(name, t)| t.data[..] == b.get(name).unwrap().data[..]));
}

/// DoRA (mlx-lm's `fine_tune_type: dora`, with the magnitude `m`): each fused row rescaled to
/// the magnitude, as `mlx_lm.fuse` does, in float32.
#[test]
fn fusing_a_dora_adapter_equals_mlx_lm_fuse() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dora");
    to_hf(&tiny("hf/llama"), &out, &fuse("lora/dora-adapters", MlxOptions { dtype: Some(FloatType::F32), ..MlxOptions::default() }))
        .unwrap();
    let changed = assert_close(&out, &tiny("lora/dora-fused/touched.safetensors"), 1e-5);
    assert_eq!(changed, 14);
    // A DoRA adapter is not served beside its base (only fused).
    let err = hearth_engine::LoadedModel::load_with(
        &tiny("hf/llama"),
        hearth_engine::LoadOptions { adapter: Some(tiny("lora/dora-adapters")), ..Default::default() },
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("DoRA"), "{err}");
}

/// PEFT's layout (`adapter_model.safetensors`, `lora_A` `[r, in]`, `lora_B` `[out, r]`, scale
/// `lora_alpha / r`), LoRA and DoRA: the merged weights equal `merge_and_unload()`'s.
#[test]
fn fusing_a_peft_adapter_equals_merge_and_unload() {
    let tmp = tempfile::tempdir().unwrap();
    for name in ["peft-lora", "peft-dora"] {
        let out = tmp.path().join(name);
        let opts = fuse(&format!("lora/{name}/adapter"), MlxOptions { dtype: Some(FloatType::F32), ..MlxOptions::default() });
        to_hf(&tiny("hf/llama"), &out, &opts).unwrap();
        let changed = assert_close(&out, &tiny(&format!("lora/{name}/merged.safetensors")), 1e-5);
        assert_eq!(changed, 6, "{name}");
    }
}

/// Into a GGUF base: the tensors the adapter changes are merged and re-quantised to their own
/// block types, the rest kept byte for byte; the file runs as the base with the adapter beside
/// it does, within Q8_0's own error.
#[test]
fn fusing_into_a_gguf_base_keeps_its_types() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tiny("gguf/llama-Q8_0.gguf");
    let out = tmp.path().join("fused.gguf");
    let opts = GgufOptions { file_type: None, pure: false, force: false, adapter: Some(tiny("lora/adapters")), progress: None };
    let report = to_gguf(&base, &out, &opts).unwrap();
    let (a, b) = (Gguf::open(&base).unwrap(), Gguf::open(&out).unwrap());
    let mut changed = 0;
    for t in &a.tensors {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!((u.ggml_type, &u.dims), (t.ggml_type, &t.dims), "{}", t.name);
        changed += usize::from(a.tensor_data(t).unwrap()[..] != b.tensor_data(u).unwrap()[..]);
    }
    assert_eq!(changed, 14, "{report:?}");
    assert_eq!(b.get("general.file_type"), a.get("general.file_type"));
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let logits = |path: &Path, adapter: Option<&str>| {
        let m = LoadedModel::load_with(path, LoadOptions { precision: Precision::Exact, adapter: adapter.map(tiny), ..Default::default() })
            .unwrap();
        let ids = m.tokenizer.encode("The capital of France is", true).unwrap();
        let mut cache = m.model.new_cache(64).unwrap();
        m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0)
    };
    // Q8_0's own error on this random-weight model: the base against its F16 source.
    let f16 = tiny("gguf/llama-F16.gguf");
    let q8 = max_diff(&logits(&base, None), &logits(&f16, None));
    let worst = max_diff(&logits(&out, None), &logits(&base, Some("lora/adapters")));
    assert!(worst <= q8, "fused file against the adapter served beside its base: {worst} (Q8_0's own error {q8})");
    let worst = max_diff(&logits(&out, None), &logits(&f16, Some("lora/adapters")));
    assert!(worst <= 1.5 * q8, "fused file against the adapter beside the F16 source: {worst} (Q8_0's own error {q8})");
}

//! `to_mlx` against what `mlx_lm.convert` wrote for the tiny fixtures (testdata/tiny/mlx, from
//! testdata/tiny/hf; their README says how): every tensor the same, bit for bit, and the
//! config's quantisation the same; the converted model loads and runs as the fixture does.

use std::path::{Path, PathBuf};

use hearth_convert::{to_mlx, Affine, ConvertError, FloatType, MlxOptions};
use hearth_formats::safetensors::SafeTensors;
use serde_json::Value;

fn tiny(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(dir)
}

fn config(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn quantised_conversions_equal_mlx_lm_convert() {
    let tmp = tempfile::tempdir().unwrap();
    for (source, fixture, dtype, bits, group_size) in [
        ("hf/qwen3", "mlx/qwen3-q4g32-f16", FloatType::F16, 4, 32),
        ("hf/qwen3", "mlx/qwen3-q8g64-f16", FloatType::F16, 8, 64),
        ("hf/llama", "mlx/llama-q4g32-bf16", FloatType::BF16, 4, 32),
        ("hf/llama", "mlx/llama-q8g64-bf16", FloatType::BF16, 8, 64),
    ] {
        let out = tmp.path().join(fixture.replace('/', "-"));
        let opts = MlxOptions { dtype: Some(dtype), quantize: Some(Affine { bits, group_size }), ..MlxOptions::default() };
        let report = to_mlx(&tiny(source), &out, &opts).unwrap();
        let got = SafeTensors::open(&out.join("model.safetensors")).unwrap();
        let want = SafeTensors::open(&tiny(fixture).join("model.safetensors")).unwrap();
        assert_eq!(got.tensors.keys().collect::<Vec<_>>(), want.tensors.keys().collect::<Vec<_>>(), "{fixture}: tensor names");
        for (name, w) in &want.tensors {
            let g = &got.tensors[name];
            assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "{fixture} {name}");
            assert!(g.data[..] == w.data[..], "{fixture} {name}: bytes differ");
        }
        assert_eq!(got.metadata.get("format").map(String::as_str), Some("mlx"));
        assert_eq!(config(&out)["quantization"], config(&tiny(fixture))["quantization"], "{fixture}");
        assert!(report.quantized > 10 && report.tensors == want.tensors.len(), "{report:?}");
        // The tokenizer and template travel with it.
        assert!(out.join("tokenizer.json").is_file() && out.join("tokenizer_config.json").is_file());
    }
}

#[test]
fn bad_requests_are_refused_and_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let plain = MlxOptions::default();
    assert!(matches!(to_mlx(&tiny("hf/qwen3"), &out, &plain), Err(ConvertError::Exists(_))), "an existing output needs --force");
    let forced = MlxOptions { force: true, ..MlxOptions::default() };
    to_mlx(&tiny("hf/qwen3"), &out, &forced).unwrap();
    let odd = MlxOptions { quantize: Some(Affine { bits: 7, group_size: 32 }), force: true, ..MlxOptions::default() };
    assert!(matches!(to_mlx(&tiny("hf/qwen3"), &out, &odd), Err(ConvertError::Unsupported(_))));
    let again = tmp.path().join("again");
    let quantised = to_mlx(&tiny("mlx/qwen3-q4g32-f16"), &again, &plain).unwrap_err();
    assert!(quantised.to_string().contains("already quantised"), "{quantised}");
    assert!(!again.exists());
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "no partial outputs are left: {names:?}");
}

/// Cast to float16 without quantising: the MLX directory loads and gives the source's logits
/// within float16's rounding of the weights.
#[test]
fn a_float_conversion_runs_as_its_source() {
    use hearth_engine::model::SeqInput;
    use hearth_engine::LoadedModel;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f16");
    let opts = MlxOptions { dtype: Some(FloatType::F16), ..MlxOptions::default() };
    to_mlx(&tiny("hf/llama"), &out, &opts).unwrap();
    let logits = |dir: &Path| {
        let m = LoadedModel::load(dir).unwrap();
        let ids = m.tokenizer.encode("The capital of France is", false).unwrap();
        let mut cache = m.model.new_cache(64).unwrap();
        m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0)
    };
    let (a, b) = (logits(&tiny("hf/llama")), logits(&out));
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 2e-2, "largest logit difference {worst}");
}

/// SmolLM2's real GGUF (Q4_1; scripts/fetch-test-models.sh) as an MLX float32 directory: the
/// same token ids and chat template, and the same logits on the exact path (the blocks
/// de-quantised exactly, Q/K rows back in Hugging Face's order). As MLX 4-bit in groups of 32
/// its Q4 blocks are kept exactly and the rest re-quantised (the 8-bit tensors lose most): it
/// still ranks the same next token near the top.
#[test]
fn a_gguf_becomes_an_mlx_model_with_the_same_logits() {
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let gguf = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let (float, q4) = (tmp.path().join("f32"), tmp.path().join("q4"));
    to_mlx(&gguf, &float, &MlxOptions::default()).unwrap();
    let report = to_mlx(&gguf, &q4, &MlxOptions { quantize: Some(Affine { bits: 4, group_size: 32 }), ..MlxOptions::default() }).unwrap();
    // Q4_0/Q4_1 blocks are MLX 4-bit groups of 32 as they are: those matrices de-quantise to
    // exactly the float32 conversion's values.
    assert!(report.kept > 100, "{report:?}");
    let store = |dir: &Path| hearth_engine::weights::WeightStore::from_safetensors_dir(dir, &config(dir)).unwrap();
    let (exact, quantised) = (store(&float), store(&q4));
    let mut same = 0;
    for (name, t) in quantised.iter() {
        let values = t.to_f32_vec().unwrap();
        if values == exact.get(name).unwrap().to_f32_vec().unwrap() {
            same += 1;
        }
    }
    assert_eq!(same, report.kept + (report.tensors - 3 * report.quantized), "kept blocks and unquantised tensors are exact");
    let exact = || LoadOptions { precision: Precision::Exact, ..LoadOptions::default() };
    let run = |path: &Path| {
        let m = LoadedModel::load_with(path, exact()).unwrap();
        let chat = [serde_json::json!({"role": "user", "content": "What is the capital of France?"})];
        let opts = hearth_tokenizer::RenderOptions { add_generation_prompt: true, ..Default::default() };
        let text = m.chat_template.as_ref().unwrap().render(&chat, &opts).unwrap();
        let ids = m.tokenizer.encode(&text, false).unwrap();
        let mut cache = m.model.new_cache(256).unwrap();
        let logits = m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0);
        (text, ids, logits)
    };
    let (text, ids, want) = run(&gguf);
    let (float_text, float_ids, got) = run(&float);
    assert_eq!((float_text, float_ids), (text, ids.clone()), "the template and the tokenizer travel with the weights");
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3, "float32 MLX against its GGUF: largest logit difference {worst}");
    let (_, q4_ids, q4_logits) = run(&q4);
    assert_eq!(q4_ids, ids);
    let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    let mut ranked: Vec<usize> = (0..want.len()).collect();
    ranked.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
    let pick = argmax(&q4_logits);
    assert!(ranked[..5].contains(&pick), "4-bit MLX's next token {pick} is not among the GGUF's top 5 {:?}", &ranked[..5]);
}

/// Every legacy block type of the tiny GGUF fixtures (made by llama.cpp), Llama (Q/K rows
/// interleaved) and Qwen2 (not): as MLX groups of 32 of the same width, each block-quantised
/// matrix is kept and de-quantises to exactly what the float32 conversion holds; the F16 file
/// keeps nothing and quantises everything.
#[test]
fn legacy_gguf_blocks_are_kept_exactly() {
    use hearth_engine::weights::WeightStore;
    let tmp = tempfile::tempdir().unwrap();
    for (file, bits) in
        [("llama-Q4_0", 4), ("llama-Q4_1", 4), ("llama-Q8_0", 8), ("qwen2-Q4_0", 4), ("qwen2-Q4_1", 4), ("qwen2-Q8_0", 8), ("llama-F16", 4)]
    {
        let gguf = tiny(&format!("gguf/{file}.gguf"));
        let (float, quantised) = (tmp.path().join(format!("{file}-f32")), tmp.path().join(format!("{file}-q")));
        to_mlx(&gguf, &float, &MlxOptions::default()).unwrap();
        let report =
            to_mlx(&gguf, &quantised, &MlxOptions { quantize: Some(Affine { bits, group_size: 32 }), ..MlxOptions::default() }).unwrap();
        let store = |dir: &Path| WeightStore::from_safetensors_dir(dir, &config(dir)).unwrap();
        let (exact, got) = (store(&float), store(&quantised));
        let same = got.iter().filter(|(name, t)| t.to_f32_vec().unwrap() == exact.get(name).unwrap().to_f32_vec().unwrap()).count();
        let unquantised = report.tensors - 3 * report.quantized;
        if file.ends_with("F16") {
            assert_eq!(report.kept, 0, "{file}");
        } else {
            assert!(report.kept > 0, "{file}: {report:?}");
        }
        assert_eq!(same, report.kept + unquantised, "{file}: {report:?}");
    }
}

//! `to_mlx` against what `mlx_lm.convert` wrote for the tiny fixtures (testdata/tiny/mlx, from
//! testdata/tiny/hf; their README says how): every tensor the same, bit for bit, and the
//! config's quantisation the same; the converted model loads and runs as the fixture does.

mod common;

use std::path::Path;

use common::*;

use hearth_convert::{to_gguf, to_hf, to_mlx, Affine, ConvertError, FloatType, GgufFileType, GgufOptions, MlxOptions, Recipe};
use hearth_formats::gguf::Gguf;
use hearth_formats::safetensors::SafeTensors;

/// Same tensor names, dtypes, shapes and bytes as the fixture's.
fn assert_same_tensors(got: &Path, fixture: &str) {
    let got = SafeTensors::open(&got.join("model.safetensors")).unwrap();
    let want = SafeTensors::open(&tiny(fixture).join("model.safetensors")).unwrap();
    assert_eq!(got.tensors.keys().collect::<Vec<_>>(), want.tensors.keys().collect::<Vec<_>>(), "{fixture}: tensor names");
    for (name, w) in &want.tensors {
        let g = &got.tensors[name];
        assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "{fixture} {name}");
        assert!(g.data[..] == w.data[..], "{fixture} {name}: bytes differ");
    }
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
        assert_same_tensors(&out, fixture);
        let got = SafeTensors::open(&out.join("model.safetensors")).unwrap();
        assert_eq!(got.metadata.get("format").map(String::as_str), Some("mlx"));
        assert_eq!(config(&out)["quantization"], config(&tiny(fixture))["quantization"], "{fixture}");
        assert!(report.quantized > 10 && report.tensors == got.tensors.len(), "{report:?}");
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
    let mixed = MlxOptions { recipe: Some(Recipe::Mixed3_6), force: true, ..MlxOptions::default() };
    assert!(to_mlx(&tiny("hf/qwen3"), &out, &mixed).unwrap_err().to_string().contains("needs quantisation"));
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

/// SmolLM2's real GGUF (Q4_1 and a Q8_0 embedding; scripts/fetch-test-models.sh) as an MLX
/// float32 directory: the same token ids and chat template, and the same logits on the exact
/// path (the blocks de-quantised exactly, Q/K rows back in Hugging Face's order). As MLX groups
/// of 32 every block is kept exactly (the embedding as 8 bits), so it computes the same logits;
/// and written back as GGUF Q4_1 it gives the original file's tensors, byte for byte.
#[test]
fn a_gguf_becomes_an_mlx_model_and_back_losslessly() {
    let gguf = hearth_store::installed_model("smollm2").expect("SmolLM2 is installed (scripts/fetch-test-models.sh)");
    let tmp = tempfile::tempdir().unwrap();
    let (float, q4) = (tmp.path().join("f32"), tmp.path().join("q4"));
    to_mlx(&gguf, &float, &MlxOptions::default()).unwrap();
    let report = to_mlx(&gguf, &q4, &MlxOptions { quantize: Some(Affine { bits: 4, group_size: 32 }), ..MlxOptions::default() }).unwrap();
    // Q4_0/Q4_1 blocks are MLX 4-bit groups of 32 as they are: those matrices de-quantise to
    // exactly the float32 conversion's values.
    assert!(report.kept > 100, "{report:?}");
    let (exact, quantised) = (store(&float), store(&q4));
    let mut same = 0;
    for (name, t) in quantised.iter() {
        let values = t.to_f32_vec().unwrap();
        if values == exact.get(name).unwrap().to_f32_vec().unwrap() {
            same += 1;
        }
    }
    assert_eq!(same, report.kept + (report.tensors - 3 * report.quantized), "kept blocks and unquantised tensors are exact");
    let (ids, want) = run(&gguf);
    let (float_ids, got) = run(&float);
    assert_eq!(float_ids, ids, "the template and the tokenizer travel with the weights");
    let worst = max_diff(&want, &got);
    assert!(worst < 1e-3, "float32 MLX against its GGUF: largest logit difference {worst}");
    // Every matrix kept exactly: the 4-bit MLX model computes what the GGUF does.
    assert_eq!(report.kept, report.quantized, "{report:?}");
    let (q4_ids, q4_logits) = run(&q4);
    assert_eq!(q4_ids, ids);
    let worst = max_diff(&want, &q4_logits);
    assert!(worst < 1e-3, "4-bit MLX against its GGUF: largest logit difference {worst}");
    assert_eq!(config(&q4)["quantization"]["model.embed_tokens"]["bits"], 8);

    // Back to GGUF Q4_1: the same file's tensors, byte for byte (lossless round trip).
    let back = tmp.path().join("back.gguf");
    let opts = GgufOptions { file_type: Some(GgufFileType::Q4_1), pure: false, force: false, adapter: None, progress: None };
    to_gguf(&q4, &back, &opts).unwrap();
    let (a, b) = (Gguf::open(&gguf).unwrap(), Gguf::open(&back).unwrap());
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &a.tensors {
        let u = b.tensor(&t.name).unwrap();
        assert_eq!((u.ggml_type, &u.dims), (t.ggml_type, &t.dims), "{}", t.name);
        assert!(a.tensor_data(t).unwrap()[..] == b.tensor_data(u).unwrap()[..], "{}: bytes differ", t.name);
    }
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

/// mlx-lm's mixed recipes: hf/llama with `--quant-predicate mixed_3_6 --q-group-size 32
/// --dtype bfloat16` equals what `mlx_lm.convert` wrote (3-bit layers, the 6-bit value and down
/// projections of the last block), bit for bit, with the same per-layer config.
#[test]
fn mixed_recipes_equal_mlx_lm_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mixed");
    let opts = MlxOptions {
        dtype: Some(FloatType::BF16),
        quantize: Some(Affine { bits: 4, group_size: 32 }),
        recipe: Some(Recipe::Mixed3_6),
        ..MlxOptions::default()
    };
    to_mlx(&tiny("hf/llama"), &out, &opts).unwrap();
    let fixture = "mlx/llama-mixed_3_6-g32-bf16";
    assert_same_tensors(&out, fixture);
    assert_eq!(config(&out)["quantization"], config(&tiny(fixture))["quantization"]);
    assert_eq!(config(&out)["quantization"]["model.layers.1.mlp.down_proj"]["bits"], 6);
    // It loads and runs as the fixture does.
    let fixture = with_tokenizer(fixture, "hf/llama", tmp.path());
    assert_eq!(max_diff(&run(&out).1, &run(&fixture).1), 0.0);
}

/// An MLX-quantised model as a source: kept as it is (no `-q`), re-quantised to another layout,
/// de-quantised to Hugging Face float32, and written as GGUF Q4_1 with its 4-bit groups moved
/// across as blocks: every conversion runs with the source's logits (the 8-bit re-quantisation
/// within its rounding).
#[test]
fn quantised_mlx_models_convert() {
    let tmp = tempfile::tempdir().unwrap();
    let source = with_tokenizer("mlx/llama-q4g32-bf16", "hf/llama", tmp.path());
    let (_, want) = run(&source);

    let same = tmp.path().join("same");
    let report = to_mlx(&source, &same, &MlxOptions::default()).unwrap();
    assert_eq!(report.kept, report.quantized, "{report:?}");
    assert_same_tensors(&same, "mlx/llama-q4g32-bf16");
    assert_eq!(config(&same)["quantization"], config(&source)["quantization"]);

    let hf = tmp.path().join("hf");
    to_hf(&source, &hf, &MlxOptions { dtype: Some(FloatType::F32), ..MlxOptions::default() }).unwrap();
    assert!(config(&hf).get("quantization").is_none());
    assert!(store(&hf).iter().all(|(_, t)| matches!(t.format, hearth_kernels::RowFormat::Float(_))));
    let worst = max_diff(&want, &run(&hf).1);
    assert!(worst < 1e-3, "de-quantised: {worst}");

    let q8 = tmp.path().join("q8");
    let opts = MlxOptions { dtype: Some(FloatType::F32), quantize: Some(Affine { bits: 8, group_size: 64 }), ..MlxOptions::default() };
    let report = to_mlx(&source, &q8, &opts).unwrap();
    assert_eq!(report.kept, 0);
    // Within what 8-bit groups cost this random-weight model when mlx-lm quantises its floats.
    let mlx_q8 = max_diff(&run(&tiny("hf/llama")).1, &run(&with_tokenizer("mlx/llama-q8g64-bf16", "hf/llama", tmp.path())).1);
    let worst = max_diff(&want, &run(&q8).1);
    assert!(worst <= mlx_q8, "re-quantised to 8 bits: {worst} (mlx-lm's 8 bits of the floats: {mlx_q8})");

    let gguf = tmp.path().join("q4_1.gguf");
    let opts = GgufOptions { file_type: Some(GgufFileType::Q4_1), pure: true, force: false, adapter: None, progress: None };
    let report = to_gguf(&source, &gguf, &opts).unwrap();
    assert_eq!(report.kept, report.quantized, "every 4-bit group is a Q4_1 block: {report:?}");
    let worst = max_diff(&want, &run(&gguf).1);
    assert!(worst < 1e-3, "as Q4_1 blocks: {worst}");
}

/// Past the shard size, weights are split as mlx-lm splits them (`model-0000i-of-0000n`, in
/// name order, a tensor larger than the limit alone), the index names each tensor's file, and
/// the sharded model runs as the single file does.
#[test]
fn large_outputs_are_sharded() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, sharded) = (tmp.path().join("one"), tmp.path().join("sharded"));
    to_mlx(&tiny("hf/llama"), &one, &MlxOptions::default()).unwrap();
    // The embedding (49152 × 64 float16, 6 MB) is bigger than the limit: a shard of its own.
    to_mlx(&tiny("hf/llama"), &sharded, &MlxOptions { shard_bytes: 100_000, ..MlxOptions::default() }).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    assert!(files.len() > 2 && files[0] == format!("model-00001-of-{:05}.safetensors", files.len()), "{files:?}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap()).unwrap();
    let map = index["weight_map"].as_object().unwrap();
    for file in &files {
        let shard = SafeTensors::open(&sharded.join(file)).unwrap();
        let bytes: usize = shard.tensors.values().map(|t| t.data.len()).sum();
        assert!(bytes <= 100_000 || shard.tensors.len() == 1, "{file}: {bytes} bytes in {} tensors", shard.tensors.len());
        assert!(shard.tensors.keys().all(|name| map[name] == file.as_str()), "{file}");
    }
    assert_eq!(map.len(), SafeTensors::open(&one.join("model.safetensors")).unwrap().tensors.len());
    assert_eq!(max_diff(&run(&one).1, &run(&sharded).1), 0.0);
}

/// A conversion that died leaves its temporary output (`.<name>.partial-<pid>`, with a lock
/// file nobody holds any more): the next conversion to that name removes it. One whose writer
/// still holds the lock is left alone.
#[test]
fn a_dead_conversion_s_leftovers_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let dead = tmp.path().join(".model.partial-999999");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("model.safetensors"), b"half").unwrap();
    std::fs::write(tmp.path().join(".model.partial-999999.lock"), b"").unwrap();
    let alive_lock = std::fs::File::create(tmp.path().join(".model.partial-1.lock")).unwrap();
    alive_lock.lock().unwrap();
    std::fs::create_dir(tmp.path().join(".model.partial-1")).unwrap();
    to_mlx(&tiny("hf/qwen3"), &out, &MlxOptions::default()).unwrap();
    let mut left: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, [".model.partial-1", ".model.partial-1.lock", "model"]);
}

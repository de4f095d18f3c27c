//! Every tiny random-weight model of testdata/tiny, in every format, against the outputs the
//! upstream libraries computed on it, within the tolerances of testdata/tiny/MANIFEST.md.

mod common;

use common::*;
use hearth_engine::model::SeqInput;
use hearth_engine::LoadedModel;

const HF: [&str; 6] = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2"];

#[test]
fn hf_models_match_transformers() {
    let refs = json("tiny/refs/hf.json");
    for name in HF {
        let r = &refs["models"][name];
        let model = load_exact(&testdata(&format!("tiny/hf/{name}")));
        for case in r["cases"].as_array().unwrap() {
            check_case(&format!("hf/{name} p{}", case["prompt_index"]), &model, case, 1e-3);
        }
        let p0 = ids(&r["cases"][0]["ids"]);
        let d = full_diff(&last_logits(&model, &p0), &r["p0_full_last_logits"]);
        assert!(d <= 1e-3, "hf/{name}: full-vocabulary logits differ by {d}");
    }
}

#[test]
fn batched_sequences_match_unbatched() {
    let refs = json("tiny/refs/hf.json");
    let prompts = json("tiny/prompts.json");
    for name in HF {
        let r = &refs["models"][name];
        let model = load_exact(&testdata(&format!("tiny/hf/{name}")));
        let a = ids(&prompts["ids"][0]);
        let b = ids(&prompts["ids"][1]);
        let mut ca = model.model.new_cache(64).unwrap();
        let mut cb = model.model.new_cache(64).unwrap();
        let out = model.model.forward(&mut [SeqInput::new(&a, &mut ca), SeqInput::new(&b, &mut cb)], false).unwrap();
        for (i, logits) in out.iter().enumerate() {
            let top = &r["batched_left_padded"]["last_logits_top20"][i];
            let d = top_diff(logits, top);
            assert!(d <= 1e-3, "hf/{name} batched sequence {i}: logits differ by {d}");
            let alone = last_logits(&model, if i == 0 { &a } else { &b });
            let d = logits.iter().zip(&alone).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(d <= 1e-3, "hf/{name} batched sequence {i}: differs from unbatched by {d}");
        }
    }
}

#[test]
fn mlx_models_match_mlx_lm_float32() {
    let refs = json("tiny/refs/mlx.json");
    for (name, r) in refs["models"].as_object().unwrap() {
        let source = if name.starts_with("llama") { "tiny/hf/llama" } else { "tiny/hf/qwen3" };
        let model = load_exact(with_tokenizer(&format!("tiny/mlx/{name}"), source).path());
        assert_eq!(model.format, hearth_engine::ModelFormat::MlxQuantized);
        for (i, case) in r["f32"]["cases"].as_array().unwrap().iter().enumerate() {
            check_case(&format!("mlx/{name} p{i}"), &model, case, 1e-3);
        }
        // mlx-lm's own bf16/f16 activations differ from its float32 run by up to 0.49.
        for (i, case) in r["native"]["cases"].as_array().unwrap().iter().enumerate() {
            let d = top_diff(&last_logits(&model, &ids(&case["ids"])), &case["last_logits_top20"]);
            assert!(d <= 0.6, "mlx/{name} p{i}: differs from mlx-lm native by {d}");
        }
    }
}

#[test]
fn gguf_models_match_their_dequantised_float32_reference() {
    let checks = json("tiny/refs/checks.json");
    let lcpp = json("tiny/refs/gguf.json");
    for (file, r) in lcpp["models"].as_object().unwrap() {
        let model = load_exact(&testdata(&format!("tiny/gguf/{file}")));
        for (i, case) in checks[format!("gguf/{file}")]["dequant_f32_reference"].as_array().unwrap().iter().enumerate() {
            check_case(&format!("gguf/{file} p{i}"), &model, case, 2e-3);
        }
        // llama.cpp itself (8-bit activations, f16 KV cache) is up to 0.26 from that reference.
        for (i, case) in r["cases"].as_array().unwrap().iter().enumerate() {
            let d = top_diff(&last_logits(&model, &ids(&case["ids"])), &case["last_logits_top20"]);
            assert!(d <= 0.3, "gguf/{file} p{i}: differs from llama.cpp by {d}");
        }
    }
}

#[test]
fn gguf_tokenizers_give_the_reference_ids() {
    let lcpp = json("tiny/refs/gguf.json");
    let prompts = json("tiny/prompts.json");
    for (file, r) in lcpp["models"].as_object().unwrap() {
        let model = load_exact(&testdata(&format!("tiny/gguf/{file}")));
        for (i, case) in r["cases"].as_array().unwrap().iter().enumerate() {
            let text = prompts["prompts"][i].as_str().unwrap();
            let got = model.tokenizer.encode(text, false).unwrap();
            assert_eq!(got, ids(&case["ids"]), "gguf/{file}: tokens of prompt {i}");
        }
    }
}

#[test]
fn hidden_states_match_transformers_layer_by_layer() {
    let refs = json("tiny/refs/hf.json");
    for name in HF {
        let r = &refs["models"][name];
        let model = load_exact(&testdata(&format!("tiny/hf/{name}")));
        let trace = model.model.trace_hidden_states(&ids(&r["cases"][0]["ids"])).unwrap();
        let stages = ["embed_tokens", "layer0", "layer1", "final_norm"];
        assert_eq!(trace.len(), stages.len());
        for (stage, ours) in stages.iter().zip(&trace) {
            let want = r["p0_hidden_states"][stage].as_array().unwrap();
            let d = ours
                .iter()
                .zip(want.iter().flat_map(|row| row.as_array().unwrap()))
                .map(|(a, b)| (a - b.as_f64().unwrap() as f32).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-4, "hf/{name} {stage}: hidden states differ by {d}");
        }
    }
}

#[test]
fn host_and_candle_backends_agree() {
    use hearth_engine::model::Backend;
    use hearth_engine::{LoadOptions, Precision};
    // The GGUF Llama keeps llama.cpp's interleaved RoPE layout.
    let files = HF.iter().map(|name| format!("tiny/hf/{name}")).chain(["tiny/hf/gemma3".into(), "tiny/gguf/llama-F16.gguf".into()]);
    for name in files {
        let path = testdata(&name);
        let load =
            |backend| LoadedModel::load_with(&path, LoadOptions { precision: Precision::Exact, backend, ..Default::default() }).unwrap();
        let (host, candle) = (load(Backend::Host), load(Backend::Candle));
        for p in json("tiny/prompts.json")["ids"].as_array().unwrap() {
            let p = ids(p);
            let (a, b) = (last_logits(&host, &p), last_logits(&candle, &p));
            let d = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(d <= 1e-4, "{name}: backends differ by {d}");
            assert_eq!(greedy(&host, &p, 8), greedy(&candle, &p, 8));
        }
    }
}

/// Each decoder type keeps its caches in its own form: a cache from a model on the other
/// backend is refused, and the cache is left as it was.
#[test]
fn a_cache_from_the_other_backend_is_an_error() {
    use hearth_engine::model::Backend;
    use hearth_engine::{EngineError, LoadOptions};
    let path = testdata("tiny/hf/llama");
    let load = |backend| LoadedModel::load_with(&path, LoadOptions { backend, ..Default::default() }).unwrap();
    let (host, candle) = (load(Backend::Host), load(Backend::Candle));
    for (model, other) in [(&host, &candle), (&candle, &host)] {
        let mut cache = other.model.new_cache(16).unwrap();
        let result = model.model.forward(&mut [SeqInput::new(&[1, 2, 3], &mut cache)], false);
        assert!(matches!(result, Err(EngineError::InvalidRequest(_))));
        assert_eq!(cache.len(), 0);
    }
}

#[test]
fn lora_fused_model_matches_mlx_lm() {
    let refs = json("tiny/refs/lora.json");
    let model = load_exact(with_tokenizer("tiny/lora/fused", "tiny/hf/llama").path());
    for (i, case) in refs["fused"]["cases"].as_array().unwrap().iter().enumerate() {
        check_case(&format!("lora/fused p{i}"), &model, case, 1e-3);
    }
}

#[test]
fn lora_adapter_on_the_base_model_matches_mlx_lm() {
    use hearth_engine::{LoadOptions, Precision};
    let refs = json("tiny/refs/lora.json");
    let opts = LoadOptions { precision: Precision::Exact, adapter: Some(testdata("tiny/lora/adapters")), ..Default::default() };
    let model = LoadedModel::load_with(&testdata("tiny/hf/llama"), opts).unwrap();
    for (i, case) in refs["adapter"]["cases"].as_array().unwrap().iter().enumerate() {
        check_case(&format!("lora/adapters p{i}"), &model, case, 1e-3);
    }
    let p0 = ids(&refs["adapter"]["cases"][0]["ids"]);
    let d = full_diff(&last_logits(&model, &p0), &refs["adapter"]["p0_full_last_logits"]);
    assert!(d <= 1e-3, "adapter: full-vocabulary logits differ by {d}");
}

/// An mlx-lm adapter directory touching only `layer`: rank 4 over 64 inputs, `outputs` wide.
fn one_layer_adapter(layer: &str, outputs: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("tiny/lora/adapters/adapter_config.json"), dir.path().join("adapter_config.json")).unwrap();
    let (a, b) = (64 * 4, 4 * outputs);
    let header = serde_json::json!({
        format!("{layer}.lora_a"): {"dtype": "F32", "shape": [64, 4], "data_offsets": [0, 4 * a]},
        format!("{layer}.lora_b"): {"dtype": "F32", "shape": [4, outputs], "data_offsets": [4 * a, 4 * (a + b)]},
    })
    .to_string();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend((0..a + b).flat_map(|i| (i as f32 * 1e-3).to_le_bytes()));
    std::fs::write(dir.path().join("adapters.safetensors"), bytes).unwrap();
    dir
}

/// Sequences naming different adapters (or none) run in one forward pass: each gets its own
/// adapter's logits (mlx-lm's for the adapter, the plain model's otherwise), as if alone.
#[test]
fn adapters_per_sequence_share_one_batch() {
    let refs = json("tiny/refs/lora.json");
    let model = load_exact(&testdata("tiny/hf/llama"));
    let adapter = model.load_adapter(&testdata("tiny/lora/adapters")).unwrap();
    let cases = refs["adapter"]["cases"].as_array().unwrap();
    let (p0, p1) = (ids(&cases[0]["ids"]), ids(&cases[1]["ids"]));
    let mut caches: Vec<_> = (0..3).map(|_| model.model.new_cache(64).unwrap()).collect();
    let [c0, c1, c2] = &mut caches[..] else { unreachable!() };
    let mut batch = [
        SeqInput { adapter: Some(&adapter), ..SeqInput::new(&p0, c0) },
        SeqInput::new(&p0, c1),
        SeqInput { adapter: Some(&adapter), ..SeqInput::new(&p1, c2) },
    ];
    let out = model.model.forward(&mut batch, false).unwrap();
    for (i, case) in [(0, &cases[0]), (2, &cases[1])] {
        let d = top_diff(&out[i], &case["last_logits_top20"]);
        assert!(d <= 1e-3, "sequence {i} with the adapter: top-20 logits differ from mlx-lm by {d}");
    }
    let plain = last_logits(&model, &p0);
    let d = out[1].iter().zip(&plain).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-4, "the sequence without an adapter differs from the plain model by {d}");
    let moved = out[0].iter().zip(&out[1]).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-2, "the adapter changed nothing ({moved})");
}

/// On the fast path (quantised panels, grouped products), a sequence with an adapter gets
/// what the model loaded with that adapter gives, and its batch-mate what the plain model does.
#[test]
fn adapters_per_sequence_on_the_fast_path_match_load_time_adapters() {
    use hearth_engine::LoadOptions;
    let path = testdata("tiny/gguf/llama-Q8_0.gguf");
    let plain = LoadedModel::load(&path).unwrap();
    let adapted =
        LoadedModel::load_with(&path, LoadOptions { adapter: Some(testdata("tiny/lora/adapters")), ..Default::default() }).unwrap();
    let adapter = plain.load_adapter(&testdata("tiny/lora/adapters")).unwrap();
    let p = ids(&json("tiny/prompts.json")["ids"][0]);
    let (mut ca, mut cb) = (plain.model.new_cache(64).unwrap(), plain.model.new_cache(64).unwrap());
    let out = plain
        .model
        .forward(&mut [SeqInput { adapter: Some(&adapter), ..SeqInput::new(&p, &mut ca) }, SeqInput::new(&p, &mut cb)], false)
        .unwrap();
    for (i, want) in [(0, last_logits(&adapted, &p)), (1, last_logits(&plain, &p))] {
        let d = out[i].iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(d <= 1e-3, "sequence {i}: differs from running alone by {d}");
    }
}

/// An adapter naming a layer the model lacks, or made for another model, is refused.
#[test]
fn adapters_that_do_not_belong_are_refused() {
    let model = load_exact(&testdata("tiny/hf/llama"));
    let other = load_exact(&testdata("tiny/hf/llama"));
    let adapter = other.load_adapter(&testdata("tiny/lora/adapters")).unwrap();
    let p = [1, 2, 3];
    let mut cache = model.model.new_cache(16).unwrap();
    let err =
        model.model.forward(&mut [SeqInput { adapter: Some(&adapter), ..SeqInput::new(&p, &mut cache) }], false).expect_err("must fail");
    assert!(err.to_string().contains("another model"), "{err}");
    assert_eq!(cache.len(), 0);

    // The same checks run on a model on disk without loading it (what registering one needs).
    let path = testdata("tiny/hf/llama");
    for (layer, outputs, want) in [
        ("model.layers.99.self_attn.q_proj", 64, "model.layers.99.self_attn.q_proj.lora_a is not for a linear layer"),
        ("model.layers.0.self_attn.q_proj", 32, "model.layers.0.self_attn.q_proj.lora_b is [4, 32]; the layer has 64 outputs"),
    ] {
        let dir = one_layer_adapter(layer, outputs);
        let err = model.load_adapter(dir.path()).expect_err("must fail");
        assert!(err.to_string().contains(want), "{err}");
        let lora = hearth_engine::lora::LoraAdapter::load(dir.path()).unwrap();
        let err = hearth_engine::check_adapter_fits(&path, &lora).expect_err("must fail");
        assert!(err.to_string().contains(want), "{err}");
    }
    let fits = hearth_engine::lora::LoraAdapter::load(&testdata("tiny/lora/adapters/adapters.safetensors")).unwrap();
    hearth_engine::check_adapter_fits(&path, &fits).unwrap();
    hearth_engine::check_adapter_fits(&testdata("tiny/gguf/llama-Q4_0.gguf"), &fits).unwrap();
}

/// The GGUF conversion of the same Llama keeps its Q and K rows in llama.cpp's interleaved
/// RoPE order; an adapter trained on the Hugging Face layout must still apply exactly.
#[test]
fn lora_adapter_on_a_gguf_llama_matches_mlx_lm() {
    use hearth_engine::{LoadOptions, Precision};
    let refs = json("tiny/refs/lora.json");
    let opts = LoadOptions { precision: Precision::Exact, adapter: Some(testdata("tiny/lora/adapters")), ..Default::default() };
    let model = LoadedModel::load_with(&testdata("tiny/gguf/llama-F16.gguf"), opts).unwrap();
    assert!(model.model.config().rope_interleaved);
    // The F16 file rounds the base weights: the bound of the F16 GGUF files' own checks.
    for (i, case) in refs["adapter"]["cases"].as_array().unwrap().iter().enumerate() {
        let d = top_diff(&last_logits(&model, &ids(&case["ids"])), &case["last_logits_top20"]);
        assert!(d <= 2e-2, "lora on gguf p{i}: top-20 logits differ by {d}");
    }
}

/// An adapter whose q delta is not made of whole heads is an error on a GGUF Llama too, where
/// the delta is reordered by head before the layer's shape check.
#[test]
fn a_misshapen_adapter_on_a_gguf_llama_is_an_error() {
    use hearth_engine::LoadOptions;
    // 50 outputs: not whole heads of the 64-wide q_proj.
    let dir = one_layer_adapter("model.layers.0.self_attn.q_proj", 50);
    let opts = LoadOptions { adapter: Some(dir.path().to_path_buf()), ..Default::default() };
    let err = LoadedModel::load_with(&testdata("tiny/gguf/llama-F16.gguf"), opts).err().expect("must fail");
    assert!(err.to_string().contains("q_proj.lora_b is [4, 50]; the layer has 64 outputs"), "{err}");
}

/// Every position's final hidden state, of which the last is what `last_hidden` returns.
#[test]
fn all_hidden_states_end_with_the_last_one() {
    let model = load_exact(&testdata("tiny/hf/qwen3"));
    let p = ids(&json("tiny/prompts.json")["ids"][0]);
    let hid = model.model.config().hidden_size;
    let (mut ca, mut cb) = (model.model.new_cache(64).unwrap(), model.model.new_cache(64).unwrap());
    let all = model.model.all_hidden(&mut [SeqInput::new(&p, &mut ca)]).unwrap().swap_remove(0);
    let last = model.model.last_hidden(&mut [SeqInput::new(&p, &mut cb)]).unwrap().swap_remove(0);
    assert_eq!(all.len(), p.len() * hid);
    assert_eq!(&all[all.len() - hid..], &last[..]);
}

/// Gemma 3 (tiny/hf/gemma3, made with its reference by scripts/make_gemma3_fixture.py): q/k
/// norms, sliding layers on the local RoPE base and the global layer on the scaled global one,
/// a window of 4 that every prompt outgrows.
#[test]
fn gemma3_matches_transformers() {
    let r = json("tiny/refs/gemma3.json");
    let model = load_exact(&testdata("tiny/hf/gemma3"));
    for case in r["cases"].as_array().unwrap() {
        check_case(&format!("hf/gemma3 p{}", case["prompt_index"]), &model, case, 1e-3);
    }
    let p0 = ids(&r["cases"][0]["ids"]);
    let d = full_diff(&last_logits(&model, &p0), &r["p0_full_last_logits"]);
    eprintln!("hf/gemma3: full-vocabulary logits within {d:.1e}");
    assert!(d <= 1e-3, "hf/gemma3: full-vocabulary logits differ by {d}");
}

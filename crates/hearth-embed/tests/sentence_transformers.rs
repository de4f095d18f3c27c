//! The tiny stand-ins of testdata/embedders (Qwen3-Embedding, EmbeddingGemma) against
//! sentence-transformers' own vectors and token ids: every vector within cosine 0.99999.

use std::path::{Path, PathBuf};

use hearth_embed::{EmbedInput, EmbedOptions, Embedder, InputType, Pooling};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/embedders").join(rel)
}

fn fixture(name: &str) -> (Embedder, Value) {
    let refs = serde_json::from_str(&std::fs::read_to_string(testdata(&format!("{name}.json"))).unwrap()).unwrap();
    (Embedder::load(&testdata(name)).unwrap(), refs)
}

fn texts(refs: &Value) -> Vec<EmbedInput> {
    refs["texts"].as_array().unwrap().iter().map(|t| EmbedInput::Text(t.as_str().unwrap().to_string())).collect()
}

fn cosine(a: &[f32], b: &[Value]) -> f64 {
    assert_eq!(a.len(), b.len(), "dimension");
    let b: Vec<f64> = b.iter().map(|v| v.as_f64().unwrap()).collect();
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Each case of `refs[key]` against what `opts` gives; the worst cosine.
fn check(e: &Embedder, refs: &Value, key: &str, opts: &EmbedOptions) -> f64 {
    let got = e.embed(&texts(refs), opts).unwrap().vectors;
    let want = refs[key].as_array().unwrap();
    let worst = got.iter().zip(want).map(|(g, w)| cosine(g, w.as_array().unwrap())).fold(1.0, f64::min);
    assert!(worst >= 0.99999, "{key}: cosine {worst}");
    worst
}

#[test]
fn qwen3_embedding_matches_sentence_transformers() {
    let (e, refs) = fixture("qwen3-embedding-tiny");
    let info = e.info();
    assert_eq!((info.dimension, info.pooling, info.normalize, info.max_tokens), (64, Pooling::LastToken, true, 512));
    assert!(info.prompts["query"].starts_with("Instruct: "));
    let ids = e.tokenize(&texts(&refs), false).unwrap();
    for (got, want) in ids.iter().zip(refs["ids_no_prompt"].as_array().unwrap()) {
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(got.ids, want, "the tokenizer's post-processor appends <|endoftext|>");
    }
    check(&e, &refs, "no_prompt", &EmbedOptions::default());
    check(&e, &refs, "prompt_query", &EmbedOptions { prompt_name: Some("query".into()), ..Default::default() });
    check(&e, &refs, "prompt_query", &EmbedOptions { input_type: Some(InputType::Query), ..Default::default() });
    let cut = EmbedOptions { dimensions: Some(32), ..Default::default() };
    check(&e, &refs, "no_prompt_truncate_dim_32", &cut);
    // OpenAI's reading of `dimensions`: the same direction, re-normalised.
    let v = e.embed(&texts(&refs), &cut).unwrap().vectors;
    assert!(v.iter().all(|v| (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5));
}

/// A copy of the tiny Qwen3-Embedding to break.
fn broken_copy(edit: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = testdata("qwen3-embedding-tiny");
    for entry in walk(&src) {
        let to = dir.path().join(entry.strip_prefix(&src).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, to).unwrap();
    }
    edit(dir.path());
    dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p)
            } else {
                vec![p]
            }
        })
        .collect()
}

fn load_error(dir: &Path) -> String {
    Embedder::load(dir).err().expect("refused").to_string()
}

#[test]
fn what_a_model_declares_wrongly_is_a_clear_error() {
    let modules = |extra: &str| {
        format!(
            r#"[{{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}},
            {{"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}}, {extra}]"#
        )
    };
    let unknown = broken_copy(|d| {
        std::fs::write(
            d.join("modules.json"),
            modules(r#"{"idx": 2, "name": "2", "path": "2_X", "type": "sentence_transformers.models.LSTM"}"#),
        )
        .unwrap()
    });
    assert!(load_error(unknown.path()).contains("unsupported sentence-transformers module \"sentence_transformers.models.LSTM\""));

    let dense = |d: &Path, config: &str| {
        std::fs::write(
            d.join("modules.json"),
            modules(r#"{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}"#),
        )
        .unwrap();
        std::fs::create_dir(d.join("2_Dense")).unwrap();
        std::fs::write(d.join("2_Dense/config.json"), config).unwrap();
        // linear.weight [16, 64] in float32.
        let header = r#"{"linear.weight": {"dtype": "F32", "shape": [16, 64], "data_offsets": [0, 4096]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header.as_bytes());
        bytes.extend(vec![0u8; 4096]);
        std::fs::write(d.join("2_Dense/model.safetensors"), bytes).unwrap();
    };
    let unchained = broken_copy(|d| dense(d, r#"{"in_features": 32, "out_features": 16, "bias": false}"#));
    assert!(load_error(unchained.path()).contains("takes 32 features but the module before it gives 64"));
    let misshapen = broken_copy(|d| dense(d, r#"{"in_features": 64, "out_features": 8, "bias": false}"#));
    assert!(load_error(misshapen.path()).contains("linear.weight has shape [16, 64], expected [8, 64]"));
    let fine = broken_copy(|d| {
        dense(d, r#"{"in_features": 64, "out_features": 16, "bias": false, "activation_function": "torch.nn.modules.activation.Tanh"}"#)
    });
    assert_eq!(Embedder::load(fine.path()).unwrap().info().dimension, 16);

    let (e, _) = fixture("qwen3-embedding-tiny");
    let x = [EmbedInput::Text("x".into())];
    let err = e.embed(&x, &EmbedOptions { dimensions: Some(65), ..Default::default() }).expect_err("refused").to_string();
    assert!(err.contains("dimensions must be between 1 and 64"), "{err}");
    let err = e.embed(&x, &EmbedOptions { prompt_name: Some("passage".into()), ..Default::default() }).expect_err("refused").to_string();
    assert!(err.contains("no prompt named \"passage\""), "{err}");
}

/// `include_prompt: false` pools only the input's own tokens (the prompt's are left out as
/// sentence-transformers counts them); with the prompt included the vectors differ.
#[test]
fn a_model_may_pool_without_its_prompt() {
    let exclude = broken_copy(|d| {
        let cfg = r#"{"word_embedding_dimension": 64, "pooling_mode": "mean", "include_prompt": false}"#;
        std::fs::write(d.join("1_Pooling/config.json"), cfg).unwrap();
    });
    let e = Embedder::load(exclude.path()).unwrap();
    let query = EmbedOptions { prompt_name: Some("query".into()), ..Default::default() };
    let seqs = e.tokenize(&[EmbedInput::Text(format!("{}hello", e.info().prompts["query"]))], false).unwrap();
    let prompt_len = e.tokenize(&[EmbedInput::Text(e.info().prompts["query"].clone())], false).unwrap()[0].ids.len() - 1;
    let model = hearth_engine::LoadedModel::load(exclude.path()).unwrap();
    let mut cache = model.model.new_cache(64).unwrap();
    let states = model.model.all_hidden(&mut [hearth_engine::model::SeqInput::new(&seqs[0].ids, &mut cache)]).unwrap().swap_remove(0);
    let rows: Vec<&[f32]> = states.chunks_exact(64).skip(prompt_len).collect();
    let mut mean: Vec<f32> = (0..64).map(|i| rows.iter().map(|r| r[i]).sum::<f32>() / rows.len() as f32).collect();
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    mean.iter_mut().for_each(|x| *x /= norm);
    let got = e.embed(&[EmbedInput::Text("hello".into())], &query).unwrap().vectors.swap_remove(0);
    assert!(got.iter().zip(&mean).all(|(a, b)| (a - b).abs() < 1e-5), "{got:?} vs {mean:?}");
}

/// EmbeddingGemma's recipe: a bidirectional Gemma 3, mean pooling, two Dense projections,
/// normalisation; saved by sentence-transformers 6 with the message modality, so texts go in as
/// a user turn through the chat template and a prompt as a system turn.
#[test]
fn embeddinggemma_matches_sentence_transformers() {
    let (e, refs) = fixture("embeddinggemma-tiny");
    let info = e.info();
    assert_eq!((info.dimension, info.pooling, info.normalize), (64, Pooling::Mean, true));
    check(&e, &refs, "no_prompt", &EmbedOptions::default());
    for name in ["query", "document", "Clustering"] {
        check(&e, &refs, &format!("prompt_{name}"), &EmbedOptions { prompt_name: Some(name.into()), ..Default::default() });
    }
    check(&e, &refs, "prompt_query", &EmbedOptions { input_type: Some(InputType::Query), ..Default::default() });
    check(&e, &refs, "prompt_document", &EmbedOptions { input_type: Some(InputType::Document), ..Default::default() });
    check(&e, &refs, "no_prompt_truncate_dim_32", &EmbedOptions { dimensions: Some(32), ..Default::default() });
}

/// The tiny Qwen3-Embedding written as a float32 GGUF the way llama.cpp's converter names it
/// (SmolLM2's tokenizer with `add_eos_token` for the appended `<|endoftext|>`, pooling type 3 =
/// last token): the same vectors as sentence-transformers, with llama.cpp's normalisation.
#[test]
fn a_gguf_decoder_embedder_matches_sentence_transformers() {
    use hearth_formats::gguf::{GgmlType, Gguf, GgufWriter, Value as G};
    use hearth_formats::safetensors::SafeTensors;
    let (_, refs) = fixture("qwen3-embedding-tiny");
    let tokenizer = Gguf::open(&testdata("../tiny/gguf/qwen2-F16.gguf")).unwrap();
    let mut w = GgufWriter::new();
    let u = |v: u32| G::U32(v);
    w.metadata("general.architecture", G::String("qwen3".into()));
    for (key, value) in [
        ("context_length", u(2048)),
        ("embedding_length", u(64)),
        ("block_count", u(2)),
        ("feed_forward_length", u(128)),
        ("attention.head_count", u(4)),
        ("attention.head_count_kv", u(2)),
        ("attention.key_length", u(16)),
        ("attention.value_length", u(16)),
        ("rope.freq_base", G::F32(1e6)),
        ("attention.layer_norm_rms_epsilon", G::F32(1e-6)),
        ("pooling_type", u(3)),
    ] {
        w.metadata(format!("qwen3.{key}"), value);
    }
    for (key, value) in tokenizer.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.") && !k.contains("eos")) {
        w.metadata(key.clone(), value.clone());
    }
    w.metadata("tokenizer.ggml.eos_token_id", u(0)).metadata("tokenizer.ggml.add_eos_token", G::Bool(true));
    let st = SafeTensors::open(&testdata("qwen3-embedding-tiny/model.safetensors")).unwrap();
    for (name, t) in &st.tensors {
        let gguf = match name.as_str() {
            "embed_tokens.weight" => "token_embd.weight".to_string(),
            "norm.weight" => "output_norm.weight".to_string(),
            _ => {
                let (layer, part) = name.strip_prefix("layers.").unwrap().split_once('.').unwrap();
                let stem = match part.strip_suffix(".weight").unwrap() {
                    "input_layernorm" => "attn_norm",
                    "post_attention_layernorm" => "ffn_norm",
                    "self_attn.q_proj" => "attn_q",
                    "self_attn.k_proj" => "attn_k",
                    "self_attn.v_proj" => "attn_v",
                    "self_attn.o_proj" => "attn_output",
                    "self_attn.q_norm" => "attn_q_norm",
                    "self_attn.k_norm" => "attn_k_norm",
                    "mlp.gate_proj" => "ffn_gate",
                    "mlp.up_proj" => "ffn_up",
                    "mlp.down_proj" => "ffn_down",
                    other => panic!("unexpected tensor {other}"),
                };
                format!("blk.{layer}.{stem}.weight")
            }
        };
        w.tensor(gguf, &t.shape, GgmlType::F32, t.data.to_vec()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qwen3-embedding-tiny-F32.gguf");
    w.write_file(&path).unwrap();

    let e = Embedder::load(&path).unwrap();
    assert_eq!((e.info().pooling, e.info().normalize), (Pooling::LastToken, true));
    let ids = e.tokenize(&texts(&refs), false).unwrap();
    for (got, want) in ids.iter().zip(refs["ids_no_prompt"].as_array().unwrap()) {
        let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(got.ids, want);
    }
    check(&e, &refs, "no_prompt", &EmbedOptions::default());
}

/// The tiny Qwen3-Embedding converted to MLX affine 4-bit, group 32, by `hearth convert`
/// (`hearth_convert::to_mlx`, bit-identical to `mlx_lm.convert -q` on the decoder fixtures;
/// the sentence-transformers folders travel with it): it loads as an MLX model and embeds as
/// the float model of its de-quantised weights does (the default fast path, 8-bit
/// activations: cosine 0.9995 measured). Against the original float weights 4-bit rounding
/// moves this random-weight model's vectors far (cosine ≈ 0.78): not the loader's doing.
#[test]
fn an_mlx_4bit_decoder_embedder_embeds_as_its_dequantised_weights() {
    use hearth_convert::{to_mlx, Affine, MlxOptions};
    use hearth_formats::safetensors::{SafeTensors, SafeTensorsWriter, TensorSpec};
    use hearth_formats::DType;
    let (_, refs) = fixture("qwen3-embedding-tiny");
    let src = testdata("qwen3-embedding-tiny");
    let tmp = tempfile::tempdir().unwrap();
    let (mlx, dequantised) = (tmp.path().join("mlx"), tmp.path().join("float"));
    to_mlx(&src, &mlx, &MlxOptions { quantize: Some(Affine { bits: 4, group_size: 32 }), ..MlxOptions::default() }).unwrap();
    // The float twin: the same files, each quantised matrix replaced by its de-quantised values.
    to_mlx(&src, &dequantised, &MlxOptions::default()).unwrap();
    let quantised = SafeTensors::open(&mlx.join("model.safetensors")).unwrap().tensors;
    let float32 = |b: &[u8]| b.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect::<Vec<f32>>();
    let mut specs = Vec::new();
    let mut data = Vec::new();
    for (name, t) in &quantised {
        let base = name.strip_suffix(".weight").unwrap_or(name);
        if name.ends_with(".scales") || name.ends_with(".biases") {
            continue;
        }
        let Some(scales) = quantised.get(&format!("{base}.scales")) else {
            specs.push(TensorSpec { name: name.clone(), dtype: t.dtype, shape: t.shape.clone() });
            data.push(t.data.to_vec());
            continue;
        };
        let (scales, biases) = (float32(&scales.data), float32(&quantised[&format!("{base}.biases")].data));
        let values: Vec<f32> =
            t.data.iter().flat_map(|b| [b & 15, b >> 4]).enumerate().map(|(i, q)| scales[i / 32] * q as f32 + biases[i / 32]).collect();
        specs.push(TensorSpec { name: name.clone(), dtype: DType::F32, shape: vec![t.shape[0], t.shape[1] * 8] });
        data.push(values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    let mut w = SafeTensorsWriter::create(&dequantised.join("model.safetensors"), &Default::default(), &specs).unwrap();
    for (spec, bytes) in specs.iter().zip(&data) {
        w.write(&spec.name, bytes).unwrap();
    }
    w.finish().unwrap();

    let e = Embedder::load(&mlx).unwrap();
    let reference = Embedder::load(&dequantised).unwrap();
    let (got, want) =
        (e.embed(&texts(&refs), &EmbedOptions::default()).unwrap(), reference.embed(&texts(&refs), &EmbedOptions::default()).unwrap());
    let cos = |a: &[f32], b: &[f32]| {
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    };
    let worst = got.vectors.iter().zip(&want.vectors).map(|(a, b)| cos(a, b)).fold(1.0, f64::min);
    assert!(worst >= 0.999, "the MLX model against its de-quantised weights: cosine {worst}");
}

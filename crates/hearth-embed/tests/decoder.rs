//! A decoder as a sentence embedder (the Qwen3-Embedding recipe: last-token pooling, then
//! normalisation) on the tiny random Qwen3 of testdata: the vectors are the engine's final
//! hidden state at the last token, whether inputs run alone or batched.

use std::path::{Path, PathBuf};

use hearth_embed::{EmbedError, EmbedInput, EmbedOptions, Embedder, Pooling};

fn tiny_qwen3() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/hf/qwen3")
}

/// The tiny Qwen3 with sentence-transformers' files for `pooling`.
fn embedder_dir(pooling: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(tiny_qwen3()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let modules = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]"#;
    std::fs::write(dir.path().join("modules.json"), modules).unwrap();
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        format!(r#"{{"word_embedding_dimension": 64, "pooling_mode_{pooling}": true}}"#),
    )
    .unwrap();
    dir
}

fn embed(e: &Embedder, texts: &[&str]) -> Vec<Vec<f32>> {
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t.to_string())).collect();
    e.embed(&inputs, &EmbedOptions::default()).unwrap().vectors
}

fn engine_last_state(dir: &Path, text: &str) -> Vec<f32> {
    let model = hearth_engine::LoadedModel::load(dir).unwrap();
    let ids = model.tokenizer.encode(text, true).unwrap();
    let trace = model.model.trace_hidden_states(&ids).unwrap();
    let normed = trace.last().unwrap();
    let h = model.model.config().hidden_size;
    let mut v = normed[normed.len() - h..].to_vec();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

#[test]
fn a_decoder_embeds_its_last_token_state() {
    let dir = embedder_dir("lasttoken");
    let e = Embedder::load(dir.path()).unwrap();
    let info = e.info();
    assert_eq!((info.dimension, info.pooling, info.normalize), (64, Pooling::LastToken, true));
    let texts = ["hello world", "a longer sentence about embeddings and retrieval", "x"];
    let together = embed(&e, &texts);
    for (text, v) in texts.iter().zip(&together) {
        assert!((v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
        let alone = &embed(&e, &[text])[0];
        let reference = engine_last_state(dir.path(), text);
        for ((a, b), r) in v.iter().zip(alone).zip(&reference) {
            assert!((a - b).abs() < 1e-4 && (a - r).abs() < 1e-4, "{text}: batched {a}, alone {b}, engine {r}");
        }
    }
    assert!(e.count_tokens("hello world") > 0);
    let long = "word ".repeat(3000);
    assert!(matches!(e.embed(&[EmbedInput::Text(long.clone())], &EmbedOptions::default()), Err(EmbedError::TooLong { index: 0, .. })));
    let cut = e.embed(&[EmbedInput::Text(long)], &EmbedOptions { truncate: true, ..Default::default() }).unwrap();
    assert_eq!(cut.tokens, info.max_tokens);
}

/// Any pooling runs on a decoder: the mean of every position's final state.
#[test]
fn a_decoder_pools_the_mean_of_its_states() {
    let dir = embedder_dir("mean_tokens");
    let e = Embedder::load(dir.path()).unwrap();
    assert_eq!(e.info().pooling, Pooling::Mean);
    let text = "a longer sentence about embeddings and retrieval";
    let model = hearth_engine::LoadedModel::load(dir.path()).unwrap();
    let ids = model.tokenizer.encode(text, true).unwrap();
    let mut cache = model.model.new_cache(ids.len()).unwrap();
    let states = model.model.all_hidden(&mut [hearth_engine::model::SeqInput::new(&ids, &mut cache)]).unwrap().swap_remove(0);
    let h = model.model.config().hidden_size;
    let mut mean = vec![0f32; h];
    states.chunks_exact(h).for_each(|row| mean.iter_mut().zip(row).for_each(|(m, v)| *m += v / ids.len() as f32));
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    for (a, b) in embed(&e, &[text])[0].iter().zip(&mean) {
        assert!((a - b / norm).abs() < 1e-5, "{a} vs {}", b / norm);
    }
}

#[test]
fn named_prompts_prefix_the_inputs() {
    let dir = embedder_dir("lasttoken");
    let instruction = "Instruct: Given a web search query, retrieve relevant passages\nQuery:";
    std::fs::write(
        dir.path().join("config_sentence_transformers.json"),
        format!(r#"{{"prompts": {{"query": {instruction:?}, "document": ""}}}}"#),
    )
    .unwrap();
    let e = Embedder::load(dir.path()).unwrap();
    assert!(e.info().prompts.contains_key("query"));
    let with_prompt = EmbedOptions { prompt_name: Some("query".into()), ..Default::default() };
    let prompted = e.embed(&[EmbedInput::Text("what is rust".into())], &with_prompt).unwrap().vectors;
    let spelled_out = embed(&e, &[&format!("{instruction}what is rust")]);
    assert_eq!(prompted, spelled_out);
    let unknown = EmbedOptions { prompt_name: Some("passage".into()), ..Default::default() };
    let err = e.embed(&[EmbedInput::Text("x".into())], &unknown).expect_err("refused");
    assert!(matches!(err, EmbedError::InvalidRequest { param: "prompt_name", .. }) && err.to_string().contains("query"), "{err}");
}

//! EmbeddingGemma's encoder — Gemma 3 layers with bidirectional attention, sliding-window and
//! global layers on their own RoPE bases — against sentence-transformers' embeddings of the tiny
//! random-weight model in testdata/embedders. The rest of the pipeline (the input as
//! sentence-transformers 6 builds it, mean pooling, the two Dense projections, normalisation) is
//! written out here in a few lines: the real one is hearth-embed's.

mod common;

use common::*;
use hearth_engine::model::{Backend, SeqInput};
use hearth_engine::{EngineError, LoadOptions, LoadedModel, Precision};
use hearth_formats::safetensors::SafeTensors;
use hearth_formats::DType;
use hearth_tokenizer::RenderOptions;
use serde_json::json;

const MODEL: &str = "embedders/embeddinggemma-tiny";

/// A sentence-transformers Dense module without bias or activation: its weight `[out, in]`.
struct Dense {
    weight: Vec<f32>,
    inputs: usize,
}

impl Dense {
    fn load(module: &str) -> Self {
        let file = SafeTensors::open(&testdata(&format!("{MODEL}/{module}/model.safetensors"))).unwrap();
        let w = &file.tensors["linear.weight"];
        assert_eq!(w.dtype, DType::F32);
        Dense { weight: w.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(), inputs: w.shape[1] }
    }

    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight.chunks_exact(self.inputs).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| *p as f64 * *q as f64).sum::<f64>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// The token ids sentence-transformers 6 embedded for `text`: the model directory has a chat
/// template and its modules accept messages, so the text went in as one user message through
/// that template (SmolLM2's, with its default system turn), not as the bare `ids_no_prompt`;
/// those are checked to be the message's content.
fn embedded_ids(model: &LoadedModel, text: &str, content_ids: &[u32]) -> Vec<u32> {
    let template = model.chat_template.as_ref().expect("the fixture has a chat template");
    let rendered = template.render(&[json!({"role": "user", "content": text})], &RenderOptions::default()).unwrap();
    let ids = model.tokenizer.encode(&rendered, false).unwrap();
    assert!(content_ids.is_empty() || ids.windows(content_ids.len()).any(|w| w == content_ids), "{text:?}: {ids:?}");
    ids
}

/// Every text's embedding within cosine 0.99999 of sentence-transformers' (the fixture's
/// tolerance), all texts in one batch, on both decoder types.
#[test]
fn embeddinggemma_embeddings_match_sentence_transformers() {
    let refs = json(&format!("{MODEL}.json"));
    let dense = [Dense::load("2_Dense"), Dense::load("3_Dense")];
    for backend in [Backend::Host, Backend::Candle] {
        let opts = LoadOptions { precision: Precision::Exact, backend, ..Default::default() };
        let model = LoadedModel::load_with(&testdata(MODEL), opts).unwrap();
        let cfg = model.model.config();
        let cases: Vec<(Vec<u32>, &serde_json::Value)> = (refs["texts"].as_array().unwrap().iter())
            .zip(refs["ids_no_prompt"].as_array().unwrap())
            .zip(refs["no_prompt"].as_array().unwrap())
            .map(|((text, content), want)| (embedded_ids(&model, text.as_str().unwrap(), &ids(content)), want))
            .collect();
        assert!(cfg.bidirectional);
        // Texts longer than the sliding layers' reach, so that the window masks some keys.
        let reach = cfg.layer_windows[0].expect("layer 0 slides");
        assert!(cases.iter().any(|(ids, _)| ids.len() > reach));
        let mut caches: Vec<_> = cases.iter().map(|(ids, _)| model.model.new_cache(ids.len()).unwrap()).collect();
        let mut seqs: Vec<_> = cases.iter().zip(&mut caches).map(|((ids, _), cache)| SeqInput::new(ids, cache)).collect();
        let hidden = model.model.all_hidden(&mut seqs).unwrap();
        let mut worst = 0f64;
        for ((ids, want), states) in cases.iter().zip(&hidden) {
            let h = cfg.hidden_size;
            let mut pooled = vec![0f32; h];
            for row in states.chunks_exact(h) {
                pooled.iter_mut().zip(row).for_each(|(p, v)| *p += v / ids.len() as f32);
            }
            let embedding = dense.iter().fold(pooled, |x, d| d.apply(&x));
            let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let cos = cosine(&embedding, &want);
            assert!(cos >= 0.99999, "{backend:?}, {} tokens: cosine {cos}", ids.len());
            worst = worst.max(1.0 - cos);
        }
        eprintln!("{backend:?}: worst 1 - cosine {worst:.2e}");
    }
}

/// A bidirectional model's positions see later ones: a sequence fed in two passes would give
/// the first part's keys a view they never had, so the second pass is refused.
#[test]
fn a_bidirectional_model_takes_a_sequence_in_one_pass() {
    let model = load_exact(&testdata(MODEL));
    let mut cache = model.model.new_cache(8).unwrap();
    model.model.all_hidden(&mut [SeqInput::new(&[504, 2644], &mut cache)]).unwrap();
    let more = model.model.all_hidden(&mut [SeqInput::new(&[2643], &mut cache)]);
    assert!(matches!(more, Err(EngineError::InvalidRequest(_))), "{more:?}");
    assert_eq!(cache.len(), 2);
}

/// Sequences shorter than the tiled kernel's threshold go through the grouped one: the same
/// hidden states as candle's masked products.
#[test]
fn short_sequences_see_the_same_keys_on_both_decoders() {
    let load =
        |backend| LoadedModel::load_with(&testdata(MODEL), LoadOptions { precision: Precision::Exact, backend, ..Default::default() });
    let (host, candle) = (load(Backend::Host).unwrap(), load(Backend::Candle).unwrap());
    let ids = ids(&json(&format!("{MODEL}.json"))["ids_no_prompt"][0]);
    assert!(ids.len() > host.model.config().layer_windows[0].unwrap() && ids.len() < 8);
    let hidden = |model: &LoadedModel| {
        let mut cache = model.model.new_cache(ids.len()).unwrap();
        model.model.all_hidden(&mut [SeqInput::new(&ids, &mut cache)]).unwrap().swap_remove(0)
    };
    let d = hidden(&host).iter().zip(&hidden(&candle)).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(d <= 1e-4, "decoders differ by {d}");
}

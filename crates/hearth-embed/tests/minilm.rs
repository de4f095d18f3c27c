//! all-MiniLM-L6-v2 against sentence-transformers' own outputs (testdata/minilm); the model
//! comes from scripts/fetch-test-models.sh.

mod support;

use std::sync::Arc;

use hearth_embed::{EmbedError, EmbedInput, EmbedOptions, EmbedPrecision, EmbedQueue, Embedder, Pooling};
use hearth_kernels::qdot::in_child_per_isa;
use support::minilm::{model_dir, reference_cases as cases, Case};

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn texts(cases: &[Case]) -> Vec<EmbedInput> {
    cases.iter().map(|c| EmbedInput::Text(c.text.clone())).collect()
}

#[test]
fn matches_sentence_transformers() {
    let dir = model_dir();
    let model = Embedder::load(&dir).unwrap();
    let info = model.info();
    assert_eq!((info.dimension, info.max_tokens, info.pooling, info.normalize), (384, 256, Pooling::Mean, true));
    let cases = cases();
    assert!(cases.iter().any(|c| c.text.is_empty()), "the fixture covers the empty string");
    // One batch of all cases, and each case alone: batching must not change a vector.
    let batch = model.embed(&texts(&cases), &EmbedOptions::default()).unwrap();
    assert_eq!(batch.tokens, cases.iter().map(|c| c.ids.len()).sum::<usize>(), "token ids differ in count");
    for (case, got) in cases.iter().zip(&batch.vectors) {
        let alone = model.embed(&[EmbedInput::Text(case.text.clone())], &EmbedOptions::default()).unwrap();
        let by_ids = model.embed(&[EmbedInput::Tokens(case.ids.clone())], &EmbedOptions::default()).unwrap();
        for v in [got, &alone.vectors[0], &by_ids.vectors[0]] {
            let cos = cosine(v, &case.embedding);
            assert!(cos >= 0.9999, "{:?}: cosine {cos}", case.text);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "{:?}: norm {norm}", case.text);
        }
        assert_eq!(alone.tokens, case.ids.len(), "{:?}", case.text);
    }
}

/// The 8-bit path (weights quantised when loaded, activations as they come), on every
/// instruction set this CPU has (AVX2 without VNNI multiplies in 16-bit lanes, the others in
/// the integer panels): every vector within cosine 0.999 of sentence-transformers' float32 one
/// and of Hearth's float path (0.9996 or more on these sentences; bench/embed_bench.sh finds
/// 0.9991 at worst over 1000). The empty input, only the two special tokens, has no words to
/// average its rounding out: 0.998 there.
#[test]
fn int8_products_stay_within_cosine_0_999_of_float() {
    if !in_child_per_isa("int8_products_stay_within_cosine_0_999_of_float") {
        return;
    }
    let dir = model_dir();
    let (float, int8) = (Embedder::load(&dir).unwrap(), Embedder::load_with(&dir, EmbedPrecision::Int8).unwrap());
    let cases = cases();
    let (f, q) =
        (float.embed(&texts(&cases), &EmbedOptions::default()).unwrap(), int8.embed(&texts(&cases), &EmbedOptions::default()).unwrap());
    let mut worst = 1f64;
    for ((case, a), b) in cases.iter().zip(&f.vectors).zip(&q.vectors) {
        let (to_reference, to_float) = (cosine(b, &case.embedding), cosine(a, b));
        let bound = if case.text.is_empty() { 0.998 } else { 0.999 };
        assert!(
            to_reference >= bound && to_float >= bound,
            "{:?}: cosine {to_reference} to sentence-transformers, {to_float} to float",
            case.text
        );
        if !case.text.is_empty() {
            worst = worst.min(to_reference).min(to_float);
        }
    }
    eprintln!("int8: lowest cosine {worst:.6} over the non-empty inputs");
}

#[test]
fn token_ids_equal_the_fixture() {
    let dir = model_dir();
    let model = Embedder::load(&dir).unwrap();
    for case in cases() {
        let seqs = model.tokenize(&[EmbedInput::Text(case.text.clone())], false).unwrap();
        assert_eq!(seqs[0].ids, case.ids, "{:?}", case.text);
    }
}

#[test]
fn dimensions_truncate_and_renormalise() {
    let dir = model_dir();
    let model = Embedder::load(&dir).unwrap();
    let input = [EmbedInput::Text("A man is eating food.".into())];
    let full = model.embed(&input, &EmbedOptions::default()).unwrap().vectors.remove(0);
    let short = model.embed(&input, &EmbedOptions { dimensions: Some(64), ..Default::default() }).unwrap().vectors.remove(0);
    assert_eq!(short.len(), 64);
    assert!(cosine(&short, &full[..64]) > 0.99999);
    assert!((short.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5);
    for bad in [0, 385] {
        let err = model.embed(&input, &EmbedOptions { dimensions: Some(bad), ..Default::default() }).unwrap_err();
        assert!(err.is_client_error() && err.to_string().contains("dimensions"), "{err}");
    }
}

#[test]
fn long_inputs_need_truncate_and_errors_name_the_input() {
    let dir = model_dir();
    let model = Embedder::load(&dir).unwrap();
    let long = "word ".repeat(400);
    let inputs = [EmbedInput::Text("short".into()), EmbedInput::Text(long.clone())];
    match model.embed(&inputs, &EmbedOptions::default()) {
        Err(EmbedError::TooLong { index: 1, tokens: 402, limit: 256 }) => {}
        other => panic!("expected input 1 to be too long, got {other:?}"),
    }
    let ok = model.embed(&inputs, &EmbedOptions { truncate: true, ..Default::default() }).unwrap();
    assert_eq!(ok.tokens, 3 + 256);
    // Cut by the tokenizer, the text keeps its final [SEP]: the same as the first 255 ids + [SEP].
    let ids = model.tokenize(&[EmbedInput::Text(long)], true).unwrap().remove(0).ids;
    assert_eq!((ids.len(), ids[0], ids[255]), (256, 101, 102));
    let bad_ids = [EmbedInput::Tokens(vec![101, 40_000, 102])];
    let err = model.embed(&bad_ids, &EmbedOptions::default()).unwrap_err();
    assert!(matches!(err, EmbedError::BadInput { index: 0, .. }), "{err}");
    let empty = model.embed(&[EmbedInput::Tokens(vec![])], &EmbedOptions::default()).unwrap_err();
    assert!(empty.is_client_error(), "{empty}");
    assert!(model.embed(&[], &EmbedOptions::default()).unwrap_err().is_client_error());
}

#[test]
fn queue_merges_concurrent_requests_and_keeps_each_order() {
    let dir = model_dir();
    let model = Arc::new(Embedder::load(&dir).unwrap());
    let cases = cases();
    let queue = EmbedQueue::new(model.clone()).unwrap();
    let requests: Vec<Vec<EmbedInput>> = (0..12).map(|r| texts(&cases).into_iter().cycle().skip(r).take(1 + r % 4).collect()).collect();
    // Submitted back to back while the worker is busy with the first: the rest run together.
    let pending: Vec<_> = requests.iter().map(|r| queue.submit(r, &EmbedOptions::default()).unwrap()).collect();
    for (request, p) in requests.iter().zip(pending) {
        let got = p.wait().unwrap();
        let direct = model.embed(request, &EmbedOptions::default()).unwrap();
        assert_eq!(got.tokens, direct.tokens);
        for (a, b) in got.vectors.iter().zip(&direct.vectors) {
            assert!(cosine(a, b) > 0.99999);
        }
    }
    // And from several threads at once.
    std::thread::scope(|s| {
        for r in &requests {
            let queue = &queue;
            s.spawn(move || assert_eq!(queue.embed(r, &EmbedOptions::default()).unwrap().vectors.len(), r.len()));
        }
    });
    let stats = queue.stats();
    assert_eq!(stats.requests, 24);
    assert!(stats.merged_batches >= 1 && stats.batches < 24, "{stats:?}");
}

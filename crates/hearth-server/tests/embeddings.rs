//! `/v1/embeddings` on all-MiniLM-L6-v2 (a real model; scripts/fetch-test-models.sh installs
//! it) against sentence-transformers' vectors, `/v1/rerank` on the tiny random cross-encoder,
//! and pulling then removing a model through `/api/models` against a fake Hub.

mod common;
#[path = "../../hearth-embed/tests/support/minilm.rs"]
mod minilm;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use common::{metric, sse_data, TestServer};
use hearth_store::fake_hub::{minilm_repo, FakeHub, FakeRepo};
use hearth_store::HubConfig;
use minilm::{model_dir, reference_cases};
use serde_json::{json, Value};

const MINILM_REPO: &str = "sentence-transformers/all-MiniLM-L6-v2";

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let res = client.post(url).json(&body).send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn floats(embedding: &Value) -> Vec<f32> {
    embedding.as_array().expect("a float array").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn decode_base64(embedding: &Value) -> Vec<f32> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(embedding.as_str().expect("a base64 string")).unwrap();
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Matches sentence-transformers' vector within the bound (cosine ≥ 0.9999; the
/// encoder may multiply in bf16).
fn matches_reference(a: &[f32], b: &[f32]) -> bool {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    a.len() == b.len() && dot / (norm(a) * norm(b)) >= 0.9999
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[tokio::test]
async fn embeddings_match_sentence_transformers_as_floats_and_base64() {
    model_dir();
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let cases = reference_cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();

    let (status, float) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": texts})).await;
    assert_eq!(status, 200, "{float}");
    assert_eq!(float["object"], "list");
    assert_eq!(float["model"], "minilm");
    let tokens: usize = cases.iter().map(|c| c.ids.len()).sum();
    assert_eq!(float["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let data = float["data"].as_array().unwrap();
    assert_eq!(data.len(), cases.len());
    for (i, (d, case)) in data.iter().zip(&cases).enumerate() {
        assert_eq!((d["object"].as_str(), d["index"].as_u64()), (Some("embedding"), Some(i as u64)));
        let v = floats(&d["embedding"]);
        assert!(matches_reference(&v, &case.embedding), "case {i} ({:?}) differs from sentence-transformers", case.text);
    }

    let body = json!({"model": "minilm", "input": texts, "encoding_format": "base64"});
    let (status, b64) = post(&c, &s.url("/v1/embeddings"), body).await;
    assert_eq!(status, 200, "{b64}");
    for (f, b) in data.iter().zip(b64["data"].as_array().unwrap()) {
        // JSON floats are written in f32's shortest round-tripping form, so both are exact.
        assert_eq!(floats(&f["embedding"]), decode_base64(&b["embedding"]));
    }

    // Token ids (one list, and a list of lists) are the model input as is.
    let (_, one) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": cases[0].ids})).await;
    assert_eq!(one["usage"]["prompt_tokens"], cases[0].ids.len());
    assert!(matches_reference(&floats(&one["data"][0]["embedding"]), &cases[0].embedding));
    let (_, two) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": [cases[1].ids, cases[2].ids], "user": "u"})).await;
    assert!(matches_reference(&floats(&two["data"][1]["embedding"]), &cases[2].embedding));
}

#[tokio::test]
async fn dimensions_keep_a_renormalised_prefix() {
    model_dir();
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let (status, full) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": "a tiny house"})).await;
    assert_eq!(status, 200, "{full}");
    let (status, cut) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": "a tiny house", "dimensions": 64})).await;
    assert_eq!(status, 200, "{cut}");
    let (full, cut) = (floats(&full["data"][0]["embedding"]), floats(&cut["data"][0]["embedding"]));
    assert_eq!(cut.len(), 64);
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm(&cut) - 1.0).abs() < 1e-5);
    let rescaled: Vec<f32> = full[..64].iter().map(|x| x / norm(&full[..64])).collect();
    assert!(max_abs_diff(&cut, &rescaled) < 1e-6);

    let (status, err) = post(&c, &s.url("/v1/embeddings"), json!({"model": "minilm", "input": "x", "dimensions": 385})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("384"), "{err}");
}

#[tokio::test]
async fn invalid_embedding_requests_are_openai_errors() {
    model_dir();
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let url = s.url("/v1/embeddings");
    let long = "word ".repeat(400);
    let bad = [
        (json!({"model": "minilm", "input": "x", "frobnicate": 1}), "frobnicate"),
        (json!({"model": "minilm", "input": []}), "input"),
        (json!({"model": "minilm"}), "input"),
        (json!({"model": "minilm", "input": 3.5}), "input"),
        (json!({"model": "minilm", "input": ["ok", 7]}), "input[1]"),
        (json!({"model": "minilm", "input": [[101, -1]]}), "input[0]"),
        (json!({"model": "minilm", "input": "x", "encoding_format": "hex"}), "encoding_format"),
        (json!({"model": "minilm", "input": "x", "dimensions": 0}), "dimensions"),
        (json!({"model": "minilm", "input": ["short", long]}), "input[1]"),
        (json!({"model": "tiny", "input": "x"}), "model"),
    ];
    for (body, param) in bad {
        let (status, err) = post(&c, &url, body.clone()).await;
        assert_eq!(status, 400, "{body} gave {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        assert_eq!(err["error"]["param"], param, "{body} gave {err}");
    }
    let (_, err) = post(&c, &url, json!({"model": "minilm", "input": ["short", long]})).await;
    assert!(err["error"]["message"].as_str().unwrap().starts_with("input 1 has"), "{err}");

    let (status, ok) = post(&c, &url, json!({"model": "minilm", "input": ["short", long], "truncate": true})).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["data"].as_array().unwrap().len(), 2);

    let (status, err) = post(&c, &url, json!({"model": "no-such-model", "input": "x"})).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn concurrent_requests_share_model_runs() {
    model_dir();
    let s = TestServer::start(|_| {});
    let c = reqwest::Client::new();
    let inputs: Vec<String> = (0..16).map(|i| format!("sentence number {i} about batching requests together")).collect();
    let (body, url) = (json!({"model": "minilm", "input": inputs}), s.url("/v1/embeddings"));
    let mut sent = 0;
    // Requests that arrive while the model runs are merged into its next run; a few rounds
    // make that certain even on a slow machine.
    for _ in 0..5 {
        let requests = (0..12).map(|_| post(&c, &url, body.clone()));
        for (status, res) in futures_util::future::join_all(requests).await {
            assert_eq!(status, 200, "{res}");
        }
        sent += 12;
        let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert_eq!(metric(&text, "hearth_embedding_requests_total"), sent as f64);
        let batches = metric(&text, "hearth_embedding_batches_total");
        assert!(batches >= 1.0 && batches <= sent as f64);
        if metric(&text, "hearth_embedding_merged_batches_total") > 0.0 {
            assert!(text.contains("hearth_embedding_merged_batches_total{model=\"minilm\"}"), "{text}");
            assert!(batches < sent as f64, "merged runs serve several requests each");
            return;
        }
    }
    panic!("no concurrent requests were merged into one model run");
}

fn cross_encoder() -> PathBuf {
    common::repo_root().join("crates/hearth-embed/tests/data/tiny-cross-encoder")
}

#[tokio::test]
async fn rerank_scores_documents_best_first() {
    let s = TestServer::start(|o| o.model.push(format!("rerank={}", cross_encoder().display())));
    let c = reqwest::Client::new();
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(cross_encoder().join("expected.json")).unwrap()).unwrap();
    let (query, documents) = (&expected["query"], &expected["documents"]);
    let url = s.url("/v1/rerank");

    let (status, all) = post(&c, &url, json!({"model": "rerank", "query": query, "documents": documents, "truncate": true})).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["model"], "rerank");
    let tokens: usize = expected["ids"].as_array().unwrap().iter().map(|ids| ids.as_array().unwrap().len()).sum();
    assert_eq!(all["usage"], json!({"prompt_tokens": tokens, "total_tokens": tokens}));
    let results = all["results"].as_array().unwrap();
    assert_eq!(results.len(), documents.as_array().unwrap().len());
    for r in results {
        let (index, score) = (r["index"].as_u64().unwrap() as usize, r["relevance_score"].as_f64().unwrap());
        assert!((score - expected["scores"][index].as_f64().unwrap()).abs() < 1e-5, "document {index}: {score}");
    }
    let scores: Vec<f64> = results.iter().map(|r| r["relevance_score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");

    let (_, top) = post(&c, &url, json!({"model": "rerank", "query": query, "documents": documents, "truncate": true, "top_n": 2})).await;
    assert_eq!(top["results"].as_array().unwrap()[..], results[..2]);

    let (status, err) = post(&c, &url, json!({"model": "rerank", "query": query, "documents": documents})).await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["param"], "documents[5]", "the long document is named: {err}");
    for (body, param) in [
        (json!({"model": "rerank", "query": "q", "documents": []}), "documents"),
        (json!({"model": "rerank", "query": "q", "documents": "one"}), "documents"),
        (json!({"model": "rerank", "documents": ["d"]}), "query"),
        (json!({"model": "rerank", "query": "q", "documents": ["d"], "top_n": 0}), "top_n"),
        (json!({"model": "rerank", "query": "q", "documents": ["d"], "return_documents": true}), "return_documents"),
    ] {
        let (status, err) = post(&c, &url, body.clone()).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{body} gave {err}");
    }
    // The loaded reranker is not an embedding model.
    let (status, err) = post(&c, &s.url("/v1/embeddings"), json!({"model": "rerank", "input": "x"})).await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"].as_str().unwrap().contains("is a reranker"), "{err}");
    let (status, _) = post(&c, &url, json!({"model": "nope", "query": "q", "documents": ["d"]})).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn pull_streams_progress_then_delete_removes_the_model() {
    let mut hub = FakeHub::start(vec![minilm_repo().expect("run scripts/fetch-test-models.sh")]);
    let hub_config =
        HubConfig { endpoint: hub.endpoint(), token: None, offline: false, timeout: Duration::from_secs(10), attempts: 3, parallel: 4 };
    let s = TestServer::start_configured(tempfile::tempdir().unwrap(), |_| {}, |cfg| cfg.hub = hub_config);
    let c = reqwest::Client::new();
    let pull_url = s.url("/api/models/pull");

    let (status, err) = post(&c, &pull_url, json!({"model": "minilm", "exclude": "README.md"})).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("exclude")), "a list of globs: {err}");
    let (status, _) = post(&c, &pull_url, json!({"model": "not a repo id"})).await;
    assert_eq!(status, 400);

    let res = c.post(&pull_url).json(&json!({"model": "minilm", "exclude": ["README.md"]})).send().await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let events: Vec<Value> = sse_data(&res.text().await.unwrap()).iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "resolved", "{kinds:?}");
    assert_eq!(events[0]["repo"], MINILM_REPO);
    let all_files = minilm_repo().unwrap().files.len();
    assert_eq!(events[0]["files"], all_files - 1, "all but the excluded README");
    assert!(events.iter().all(|e| e["file"] != "README.md"), "{events:?}");
    assert!(kinds.contains(&"progress") && kinds.contains(&"file_verified"), "{kinds:?}");
    let done = events.last().unwrap();
    assert_eq!((done["event"].as_str(), done["name"].as_str()), (Some("done"), Some(MINILM_REPO)), "{done}");
    assert_eq!(done["offline"], false);

    // A repo the Hub does not have ends the stream with a failure event.
    let res = c.post(&pull_url).json(&json!({"model": "nobody/nothing"})).send().await.unwrap();
    let events = sse_data(&res.text().await.unwrap());
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["event"], "failed", "{events:?}");
    assert!(last["message"].as_str().unwrap().contains("not found"), "{last}");

    // Loaded from the store, the model may only be removed by force (which unloads it).
    let (status, res) = post(&c, &s.url("/v1/embeddings"), json!({"model": MINILM_REPO, "input": "pulled"})).await;
    assert_eq!(status, 200, "{res}");
    let encoded = MINILM_REPO.replace('/', "%2F");
    let res = c.delete(s.url(&format!("/api/models/{encoded}"))).send().await.unwrap();
    assert_eq!(res.status(), 409);
    let res = c.delete(s.url(&format!("/api/models/{encoded}?force=maybe"))).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let res = c.delete(s.url(&format!("/api/models/{encoded}?force=true"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["deleted"], json!([MINILM_REPO]));
    let text = c.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains(MINILM_REPO), "the removed model was unloaded:\n{text}");
    let res = c.delete(s.url("/api/models/minilm")).send().await.unwrap();
    assert_eq!(res.status(), 404);

    // Pulled again and not loaded, it is removed without force.
    let res = c.post(&pull_url).json(&json!({"model": MINILM_REPO, "revision": "main"})).send().await.unwrap();
    let last: Value = serde_json::from_str(sse_data(&res.text().await.unwrap()).last().unwrap()).unwrap();
    assert_eq!(last["event"], "done", "{last}");
    let res = c.delete(s.url("/api/models/minilm")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    hub.stop();

    let doc: Value = c.get(s.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for (path, method) in
        [("/v1/embeddings", "post"), ("/v1/rerank", "post"), ("/api/models/pull", "post"), ("/api/models/{model_id}", "delete")]
    {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
}

#[tokio::test]
async fn auto_pull_downloads_a_model_on_first_use_then_serves_it_offline() {
    let mut hub = FakeHub::start(vec![minilm_repo().expect("run scripts/fetch-test-models.sh")]);
    let hub_config =
        HubConfig { endpoint: hub.endpoint(), token: None, offline: false, timeout: Duration::from_secs(10), attempts: 3, parallel: 4 };
    let c = reqwest::Client::new();
    let embed = |s: &TestServer, model: &str| {
        let (url, body) = (s.url("/v1/embeddings"), json!({"model": model, "input": "first use"}));
        let c = c.clone();
        async move { post(&c, &url, body).await }
    };

    // By default only an explicit pull downloads.
    let s = TestServer::start_configured(tempfile::tempdir().unwrap(), |_| {}, |cfg| cfg.hub = hub_config.clone());
    let (status, err) = embed(&s, MINILM_REPO).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("model_not_found")), "{err}");
    let home = s.stop();

    let s = TestServer::start_configured(home, |o| o.auto_pull = true, |cfg| cfg.hub = hub_config.clone());
    let (status, res) = embed(&s, MINILM_REPO).await;
    assert_eq!(status, 200, "{res}");
    assert_eq!(res["data"][0]["embedding"].as_array().unwrap().len(), 384);
    let (status, err) = embed(&s, "nobody/nothing").await;
    assert_eq!(status, 404, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("not found on the Hub"), "{err}");
    let (status, _) = embed(&s, "not a repo id").await;
    assert_eq!(status, 404);
    let home = s.stop();

    // The Hub gone, the cached model loads without a network call.
    hub.stop();
    let s = TestServer::start_configured(home, |o| o.auto_pull = true, |cfg| cfg.hub = hub_config);
    let (status, res) = embed(&s, MINILM_REPO).await;
    assert_eq!(status, 200, "{res}");
}

/// The tiny Qwen3-Embedding stand-in over HTTP: sentence-transformers' vectors without and
/// with the query prompt (by name and by `input_type`), its `truncate_dim` direction under
/// `dimensions`, what `/v1/models/{id}` says of it, and its options' errors naming the field.
#[tokio::test]
async fn a_decoder_embedder_serves_its_prompts_and_dimensions() {
    let dir = common::repo_root().join("testdata/embedders/qwen3-embedding-tiny");
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(dir.with_extension("json")).unwrap()).unwrap();
    let s = TestServer::start(|o| o.model.push(format!("qwen3-embed={}", dir.display())));
    let c = reqwest::Client::new();
    let texts = refs["texts"].clone();
    let cosine = |a: &[f32], b: &Value| {
        let b: Vec<f32> = b.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    };
    for (extra, key) in [
        (json!({}), "no_prompt"),
        (json!({"prompt_name": "query"}), "prompt_query"),
        (json!({"input_type": "query"}), "prompt_query"),
        (json!({"dimensions": 32}), "no_prompt_truncate_dim_32"),
    ] {
        let mut body = json!({"model": "qwen3-embed", "input": texts});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, out) = post(&c, &s.url("/v1/embeddings"), body).await;
        assert_eq!(status, 200, "{out}");
        for (got, want) in out["data"].as_array().unwrap().iter().zip(refs[key].as_array().unwrap()) {
            let c = cosine(&floats(&got["embedding"]), want);
            assert!(c >= 0.99999, "{key}: cosine {c}");
        }
    }
    let model: Value = c.get(s.url("/v1/models/qwen3-embed")).send().await.unwrap().json().await.unwrap();
    let e = &model["embedding"];
    assert_eq!(
        (e["dimension"].as_u64(), e["max_tokens"].as_u64(), e["pooling"].as_str()),
        (Some(64), Some(512), Some("lasttoken")),
        "{model}"
    );
    assert!(e["prompts"]["query"].as_str().unwrap().starts_with("Instruct:"), "{model}");
    for (extra, param) in [
        (json!({"dimensions": 65}), "dimensions"),
        (json!({"prompt_name": "passage"}), "prompt_name"),
        (json!({"input_type": "summary"}), "input_type"),
    ] {
        let mut body = json!({"model": "qwen3-embed", "input": "x"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, err) = post(&c, &s.url("/v1/embeddings"), body).await;
        assert_eq!((status, err["error"]["param"].as_str()), (400, Some(param)), "{err}");
    }
}

/// A causal LM as a judge reranker (Qwen3-Reranker's recipe) on `/v1/rerank`, with and
/// without an instruction; a cross-encoder refuses an instruction, naming the field.
#[tokio::test]
async fn a_causal_lm_reranks_with_its_instruction() {
    let root = common::repo_root().join("testdata");
    let refs: Value = serde_json::from_str(&std::fs::read_to_string(root.join("embedders/qwen3-reranker-tiny.json")).unwrap()).unwrap();
    let judge = root.join("tiny/hf/qwen3");
    let s = TestServer::start(|o| {
        o.model.push(format!("judge={}", judge.display()));
        o.model.push(format!("rerank={}", cross_encoder().display()));
    });
    let c = reqwest::Client::new();
    for case in refs["cases"].as_array().unwrap() {
        let mut body = json!({"model": "judge", "query": refs["query"], "documents": refs["documents"]});
        if let Some(instruction) = case["instruction"].as_str() {
            body["instruction"] = json!(instruction);
        }
        let (status, out) = post(&c, &s.url("/v1/rerank"), body).await;
        assert_eq!(status, 200, "{out}");
        for r in out["results"].as_array().unwrap() {
            let (index, score) = (r["index"].as_u64().unwrap() as usize, r["relevance_score"].as_f64().unwrap());
            assert!((score - case["scores"][index].as_f64().unwrap()).abs() < 1e-4, "document {index}: {score}");
        }
    }
    let body = json!({"model": "rerank", "query": "q", "documents": ["d"], "instruction": "judge"});
    let (status, err) = post(&c, &s.url("/v1/rerank"), body).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("instruction")), "{err}");
}

/// The catalogue's seed embedder by its alias, downloaded on first use: the tiny
/// Qwen3-Embedding, converted to MLX 4-bit by `hearth convert`, stands in on a fake Hub for
/// `mlx-community/Qwen3-Embedding-0.6B-4bit-DWQ`; it embeds, and `/v1/models/{alias}` then says
/// what it declares.
#[tokio::test]
async fn a_catalogued_embedder_is_pulled_by_its_alias_on_first_use() {
    use hearth_convert::{to_mlx, Affine, MlxOptions};
    let alias = "qwen3-embedding-0.6b-4bit";
    let entry = hearth_store::catalogue::lookup(alias).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let converted = tmp.path().join("mlx");
    let opts = MlxOptions { quantize: Some(Affine { bits: 4, group_size: 32 }), ..MlxOptions::default() };
    to_mlx(&common::repo_root().join("testdata/embedders/qwen3-embedding-tiny"), &converted, &opts).unwrap();
    let mut hub = FakeHub::start(vec![FakeRepo::from_dir(entry.spec, &converted).unwrap()]);
    let hub_config =
        HubConfig { endpoint: hub.endpoint(), token: None, offline: false, timeout: Duration::from_secs(10), attempts: 3, parallel: 4 };
    let s = TestServer::start_configured(tempfile::tempdir().unwrap(), |o| o.auto_pull = true, |cfg| cfg.hub = hub_config);
    let c = reqwest::Client::new();
    let (status, res) =
        post(&c, &s.url("/v1/embeddings"), json!({"model": alias, "input": ["first use", "again"], "input_type": "query"})).await;
    assert_eq!(status, 200, "{res}");
    let dimension = res["data"][0]["embedding"].as_array().unwrap().len();
    let info: Value = c.get(s.url(&format!("/v1/models/{alias}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["embedding"]["dimension"], dimension, "{info}");
    assert_eq!(info["embedding"]["pooling"], "lasttoken", "{info}");
    assert!(info["embedding"]["prompts"]["query"].as_str().is_some_and(|p| !p.is_empty()), "{info}");
    hub.stop();
}

//! `/v1/embeddings` (OpenAI's shape) and `/v1/rerank` (llama.cpp's and Cohere's shape) on
//! encoder models. Model runs are blocking, so they happen off the async runtime: embeddings
//! wait for the model's batching queue on a blocking thread, reranking runs on one.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use hearth_embed::{EmbedError, EmbedInput, EmbedOptions, RerankOptions};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::{describe, token_ids, Fields, JsonObject};
use crate::models::{Encoder, EncoderKind};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/embeddings", post(embeddings)).route("/v1/rerank", post(rerank))
}

/// `input`: a string, a list of strings, a list of token ids, or a list of lists of token ids.
fn parse_input(v: Value) -> Result<Vec<EmbedInput>, ApiError> {
    let items = match v {
        Value::String(s) => return Ok(vec![EmbedInput::Text(s)]),
        Value::Array(items) if items.is_empty() => return Err(ApiError::invalid("input", "`input` must not be empty")),
        Value::Array(items) => items,
        other => {
            return Err(ApiError::invalid(
                "input",
                format!("`input` must be a string, a list of strings or a list of token ids, got {}", describe(&other)),
            ))
        }
    };
    if items.iter().all(Value::is_number) {
        let ids = token_ids(&items).ok_or_else(|| ApiError::invalid("input", "token ids must be integers in [0, 2^32)"))?;
        return Ok(vec![EmbedInput::Tokens(ids)]);
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let param = format!("input[{i}]");
            match item {
                Value::String(s) => Ok(EmbedInput::Text(s)),
                Value::Array(ids) => token_ids(&ids)
                    .map(EmbedInput::Tokens)
                    .ok_or_else(|| ApiError::invalid(&param, format!("`{param}` must hold token ids: integers in [0, 2^32)"))),
                other => {
                    Err(ApiError::invalid(&param, format!("`{param}` must be a string or a list of token ids, got {}", describe(&other))))
                }
            }
        })
        .collect()
}

/// A request's fault is a 400, naming the offending item of `list` when there is one; any
/// other failure is the server's.
fn embed_error(e: EmbedError, list: &str) -> ApiError {
    match &e {
        EmbedError::TooLong { index, .. } | EmbedError::BadInput { index, .. } => {
            ApiError::invalid(&format!("{list}[{index}]"), e.to_string())
        }
        _ if e.is_client_error() => ApiError::bad_request(e.to_string()),
        _ => ApiError::internal(e.to_string()),
    }
}

/// Runs `work` on a blocking thread.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(format!("the model run failed: {e}")))?
}

fn usage(tokens: usize) -> Value {
    json!({"prompt_tokens": tokens, "total_tokens": tokens})
}

/// `base64`: the little-endian `f32` bytes, as OpenAI sends them.
fn base64_vector(v: &[f32]) -> Value {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes).into()
}

async fn embeddings(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::new(body);
    let model = f.required_string("model")?;
    let inputs = parse_input(f.take("input").ok_or_else(|| f.missing("input"))?)?;
    let base64 = match f.string("encoding_format")?.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid("encoding_format", format!("`encoding_format` must be \"float\" or \"base64\", got {other:?}")))
        }
    };
    let dimensions = f.int("dimensions", 1..=i64::from(u32::MAX))?.map(|d| d as usize);
    let truncate = f.bool("truncate")?.unwrap_or(false);
    // Extension: one of the model's named prompts (`query` for Qwen3-Embedding).
    let prompt_name = f.string("prompt_name")?;
    // Accepted for compatibility; nothing is tracked per end user.
    f.string("user")?;
    f.finish()?;

    let resident = state.models.encoder(&model, EncoderKind::Embedding).await?;
    let opts = EmbedOptions { dimensions, truncate, prompt_name };
    let out = off_runtime(move || match &resident.encoder {
        Encoder::Embedding(queue) => queue.embed(&inputs, &opts).map_err(|e| embed_error(e, "input")),
        Encoder::Reranker(_) => Err(ApiError::internal("the model resident for embeddings is a reranker")),
    })
    .await?;
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 { base64_vector(v) } else { json!(v) };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": model, "usage": usage(out.tokens)})))
}

async fn rerank(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Json<Value>, ApiError> {
    let mut f = Fields::new(body);
    let model = f.required_string("model")?;
    let query = f.required_string("query")?;
    let documents = f.strings("documents")?.ok_or_else(|| f.missing("documents"))?;
    if documents.is_empty() {
        return Err(ApiError::invalid("documents", "`documents` must not be empty"));
    }
    let top_n = f.int("top_n", 1..=i64::from(u32::MAX))?.map(|n| n as usize);
    let truncate = f.bool("truncate")?.unwrap_or(false);
    f.finish()?;

    let resident = state.models.encoder(&model, EncoderKind::Reranker).await?;
    let opts = RerankOptions { top_n, truncate };
    let ranked = off_runtime(move || match &resident.encoder {
        Encoder::Reranker(reranker) => reranker.rerank(&query, &documents, &opts).map_err(|e| embed_error(e, "documents")),
        Encoder::Embedding(_) => Err(ApiError::internal("the model resident for reranking is an embedding model")),
    })
    .await?;
    let results: Vec<Value> = ranked.results.iter().map(|r| json!({"index": r.index, "relevance_score": r.relevance_score})).collect();
    Ok(Json(json!({"model": model, "results": results, "usage": usage(ranked.tokens)})))
}

//! `/v1/embeddings` (OpenAI's shape) and `/v1/rerank` (llama.cpp's and Cohere's shape) on
//! encoder models. Model runs are blocking, so they happen off the async runtime: embeddings
//! wait for the model's batching queue on a blocking thread, reranking runs on one.

use axum::extract::State;
use axum::Json;
use base64::Engine;
use hearth_embed::{EmbedError, EmbedInput, EmbedOptions, RerankOptions};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::embeddings::{
    Embedding, EmbeddingUsage, Embeddings, EmbeddingsRequest, EncodingFormat, InputType, RerankRequest, RerankResult, Reranked, Vector,
};
use crate::api::{in_range, texts_or_tokens, Body, ModelErrors, TextOrTokens};
use crate::error::ApiError;
use crate::models::{Encoder, EncoderKind};
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(embeddings)).routes(routes!(rerank))
}

/// `input`: a string, a list of strings, a list of token ids, or a list of lists of token ids.
fn inputs(input: crate::api::TextsOrTokens) -> Result<Vec<EmbedInput>, ApiError> {
    Ok(texts_or_tokens(input, "input")?
        .into_iter()
        .map(|i| match i {
            TextOrTokens::Text(s) => EmbedInput::Text(s),
            TextOrTokens::Tokens(ids) => EmbedInput::Tokens(ids),
            TextOrTokens::Token(id) => EmbedInput::Tokens(vec![id]),
        })
        .collect())
}

/// An input's fault names the offending item of `list`; the rest is the error's own mapping.
fn embed_error(e: EmbedError, list: &str) -> ApiError {
    match &e {
        EmbedError::TooLong { index, .. } | EmbedError::BadInput { index, .. } => {
            ApiError::invalid(&format!("{list}[{index}]"), e.to_string())
        }
        _ => e.into(),
    }
}

/// Runs `work` on a blocking thread.
async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| ApiError::internal(format!("the model run failed: {e}")))?
}

/// `base64`: the little-endian `f32` bytes, as OpenAI sends them.
fn base64_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Embeddings, as floats or base64.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = EmbeddingsRequest,
    responses((status = 200, description = "Done", body = Embeddings), ModelErrors))]
async fn embeddings(State(state): State<AppState>, Body(body): Body<EmbeddingsRequest>) -> Result<Json<Embeddings>, ApiError> {
    let inputs = inputs(body.input)?;
    let base64 = body.encoding_format == Some(EncodingFormat::Base64);
    let dimensions = in_range("dimensions", body.dimensions, 1..=i64::from(u32::MAX))?.map(|d| d as usize);
    let model = body.model;
    let resident = state.models.encoder(&model, EncoderKind::Embedding).await?;
    let input_type = body.input_type.map(|t| match t {
        InputType::Query => hearth_embed::InputType::Query,
        InputType::Document => hearth_embed::InputType::Document,
    });
    let opts = EmbedOptions { dimensions, truncate: body.truncate.unwrap_or(false), prompt_name: body.prompt_name, input_type };
    let out = off_runtime(move || match &resident.encoder {
        Encoder::Embedding(queue) => queue.embed(&inputs, &opts).map_err(|e| embed_error(e, "input")),
        Encoder::Reranker(_) => Err(ApiError::internal("the model resident for embeddings is a reranker")),
    })
    .await?;
    let data = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 { Vector::Base64(base64_vector(v)) } else { Vector::Float(v.clone()) };
            Embedding { object: "embedding", index, embedding }
        })
        .collect();
    Ok(Json(Embeddings { object: "list", data, model, usage: EmbeddingUsage::new(out.tokens) }))
}

/// Rerank documents against a query, best first (llama.cpp's and Cohere's shape).
#[utoipa::path(post, path = "/v1/rerank", tag = "openai", request_body = RerankRequest,
    responses((status = 200, description = "Done", body = Reranked), ModelErrors))]
async fn rerank(State(state): State<AppState>, Body(body): Body<RerankRequest>) -> Result<Json<Reranked>, ApiError> {
    let RerankRequest { model, query, documents, top_n, truncate, instruction } = body;
    if documents.is_empty() {
        return Err(ApiError::invalid("documents", "`documents` must not be empty"));
    }
    let top_n = in_range("top_n", top_n, 1..=i64::from(u32::MAX))?.map(|n| n as usize);
    let resident = state.models.encoder(&model, EncoderKind::Reranker).await?;
    let opts = RerankOptions { top_n, truncate: truncate.unwrap_or(false), instruction };
    let ranked = off_runtime(move || match &resident.encoder {
        Encoder::Reranker(reranker) => reranker.rerank(&query, &documents, &opts).map_err(|e| embed_error(e, "documents")),
        Encoder::Embedding(_) => Err(ApiError::internal("the model resident for reranking is an embedding model")),
    })
    .await?;
    let results = ranked.results.iter().map(|r| RerankResult { index: r.index, relevance_score: r.relevance_score }).collect();
    Ok(Json(Reranked { model, results, usage: EmbeddingUsage::new(ranked.tokens) }))
}

//! `/v1/embeddings` (OpenAI's shape) and `/v1/rerank` (llama.cpp's and Cohere's).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::TextsOrTokens;

/// `POST /v1/embeddings`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub model: String,
    /// A string, a list of strings, a list of token ids, or a list of lists of token ids.
    #[schema(inline)]
    pub input: TextsOrTokens,
    /// `float` (the default) or `base64` (little-endian f32 bytes).
    pub encoding_format: Option<EncodingFormat>,
    /// Keep the first this many dimensions (Matryoshka models), re-normalised as OpenAI does
    /// when the model normalises its vectors.
    pub dimensions: Option<i64>,
    /// Cut inputs longer than the model's limit instead of refusing them.
    pub truncate: Option<bool>,
    /// One of the model's named prompts, put before every text (`query` for
    /// Qwen3-Embedding), as sentence-transformers and text-embeddings-inference call it.
    pub prompt_name: Option<String>,
    /// What the inputs are for: the model's prompt for that role is applied where it has one
    /// (`prompt_name` wins; with neither, the model's default prompt).
    pub input_type: Option<InputType>,
    /// An end-user id: accepted, unused.
    #[allow(dead_code)]
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    Query,
    Document,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

/// `POST /v1/rerank`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
    /// Keep the best `top_n`.
    pub top_n: Option<i64>,
    pub truncate: Option<bool>,
    /// The task, for a causal LM reranker (Qwen3-Reranker's `<Instruct>`; default: web
    /// search); a cross-encoder refuses it.
    pub instruction: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

impl EmbeddingUsage {
    pub fn new(tokens: usize) -> Self {
        EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Embeddings {
    /// `list`.
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Serialize, ToSchema)]
pub struct Embedding {
    /// `embedding`.
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vector,
}

/// Floats, or their little-endian bytes in base64.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize, ToSchema)]
pub struct Reranked {
    pub model: String,
    /// Best first.
    pub results: Vec<RerankResult>,
    pub usage: EmbeddingUsage,
}

#[derive(Serialize, ToSchema)]
pub struct RerankResult {
    /// The document's index in the request.
    pub index: usize,
    pub relevance_score: f32,
}

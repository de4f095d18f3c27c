//! The knowledge service's bodies (`/api/v1/*`, `/search/ask`) and the `knowledge_base`
//! extension of `/v1/chat/completions`.

use std::collections::BTreeMap;
use std::ops::Range;

use hearth_kb::answer::Citation;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openai::Usage;

/// Retrieval options of `knowledge_base`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeBaseOptions {
    /// Default `default`.
    pub collection: Option<String>,
    /// Sources to retrieve, in [0, 50]; default 5 (0: only `chunks`).
    pub limit: Option<i64>,
    /// Chunks (a search hit's `chunk_id`) to answer from, numbered first, before what is
    /// retrieved.
    pub chunks: Option<Vec<i64>>,
    /// `bm25`, `vector` or `hybrid` (the default).
    pub mode: Option<String>,
    /// Reorder the candidates with the configured cross-encoder.
    pub rerank: Option<bool>,
}

/// `POST /search/ask`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question (or `query`).
    pub question: Option<String>,
    pub query: Option<String>,
    pub collection: Option<String>,
    pub limit: Option<i64>,
    /// Chunks (a search hit's `chunk_id`) to answer from, before what is retrieved.
    pub chunks: Option<Vec<i64>>,
    pub mode: Option<String>,
    pub rerank: Option<bool>,
    /// Default: the server's first model.
    pub model: Option<String>,
    /// In [1, 65536].
    pub max_tokens: Option<i64>,
    /// In [0, 2]; default 0.
    pub temperature: Option<f64>,
    pub stream: Option<bool>,
}

/// `POST /api/v1/content` as JSON.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContentRequest {
    /// The text (or `content`).
    pub text: Option<String>,
    pub content: Option<String>,
    pub id: Option<String>,
    pub title: Option<String>,
    /// `markdown`, `text`, `html`, …
    pub content_type: Option<String>,
    pub tags: Option<Vec<String>>,
    pub url: Option<String>,
    pub collection: Option<String>,
}

/// `POST /api/v1/content` as a multipart upload (documentation only: the form is read part by
/// part).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub title: Option<String>,
    /// Comma-separated.
    pub tags: Option<String>,
    pub id: Option<String>,
    pub collection: Option<String>,
    pub content_type: Option<String>,
}

/// `POST /api/v1/ingest`: paths relative to the server's `--kb-ingest-dir`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestRequest {
    pub paths: Vec<String>,
    /// Remove documents of these paths that are gone.
    pub sync: Option<bool>,
    pub tags: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    /// Largest file to read, in [1, 2^30] bytes.
    pub max_bytes: Option<i64>,
    /// The field holding the text in JSON and JSONL files.
    pub json_text_field: Option<String>,
    pub collection: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KbHealth {
    pub status: &'static str,
    pub source: &'static str,
    /// Documents and chunks of the default collection.
    pub documents: usize,
    pub chunks: usize,
    pub collections: Vec<String>,
}

/// `{start, end}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// A search hit. `span` and `highlights` are byte ranges (of the document's text and of
/// `chunk_text`); `char_span` and `char_highlights` the same in characters.
#[derive(Serialize, ToSchema)]
pub struct Hit {
    pub content_id: String,
    pub title: Option<String>,
    pub content_type: String,
    pub score: f32,
    pub chunk_text: String,
    pub chunk_id: i64,
    pub chunk_index: usize,
    pub section: Vec<String>,
    pub page: Option<u32>,
    #[schema(value_type = Span)]
    pub span: Range<usize>,
    #[schema(value_type = Span)]
    pub char_span: Range<usize>,
    #[schema(value_type = Vec<Span>)]
    pub highlights: Vec<Range<usize>>,
    #[schema(value_type = Vec<Span>)]
    pub char_highlights: Vec<Range<usize>>,
    pub source: String,
    pub tags: Vec<String>,
    pub bm25_rank: Option<usize>,
    pub vector_rank: Option<usize>,
}

impl From<&hearth_kb::Hit> for Hit {
    fn from(h: &hearth_kb::Hit) -> Self {
        Hit {
            content_id: h.document.id.clone(),
            title: h.document.title.clone(),
            content_type: h.document.content_type.clone(),
            score: h.score,
            chunk_text: h.chunk.text.clone(),
            chunk_id: h.chunk.id,
            chunk_index: h.chunk.index,
            section: h.chunk.section.clone(),
            page: h.chunk.page,
            span: h.chunk.span.clone(),
            char_span: h.chunk.char_span.clone(),
            highlights: h.highlights.clone(),
            char_highlights: h.char_highlights.clone(),
            source: h.document.source.clone(),
            tags: h.document.tags.clone(),
            bm25_rank: h.bm25_rank,
            vector_rank: h.vector_rank,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SearchResponse {
    pub results: Vec<Hit>,
    pub query: String,
    pub total: usize,
    pub source: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct StatsResponse {
    pub total_documents: usize,
    pub total_chunks: usize,
    pub embedded_chunks: usize,
    pub sources: usize,
    pub bytes: u64,
    /// Documents per content type.
    pub content_types: BTreeMap<String, usize>,
    pub source: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ContentAdded {
    /// The first document's id.
    pub content_id: Option<String>,
    pub document_ids: Vec<String>,
    pub chunks: usize,
    /// The same content was there already (answered 200, not 201).
    pub unchanged: bool,
    pub source: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Document {
    pub content_id: String,
    pub title: Option<String>,
    pub content_type: String,
    pub source: String,
    pub key: Option<String>,
    pub tags: Vec<String>,
    pub content_hash: String,
    pub chunks: usize,
    pub created_at: i64,
    pub updated_at: i64,
    /// The extracted text.
    pub text: String,
}

#[derive(Serialize, ToSchema)]
pub struct ContentDeleted {
    pub deleted: bool,
    pub content_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct IngestAccepted {
    pub job_id: i64,
    pub collection: String,
    pub state: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Job {
    pub job_id: i64,
    pub kind: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Progress, documents, chunks and per-file errors.
    pub report: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An answer's citations.
#[derive(Serialize, ToSchema)]
pub struct Citations {
    #[schema(value_type = Vec<Object>)]
    pub citations: Vec<Citation>,
    /// Nothing retrieved is cited: the answer is not grounded in the sources.
    pub unsupported: bool,
    /// `[n]` markers naming no source.
    pub invalid_markers: Vec<usize>,
}

impl Citations {
    pub fn of(answer: &str, sources: &[hearth_kb::Hit]) -> Self {
        let cited = hearth_kb::answer::cite(answer, sources);
        Citations { citations: cited.citations, unsupported: cited.unsupported, invalid_markers: cited.invalid_markers }
    }
}

/// What a `knowledge_base` chat completion adds: the citations and the sources.
#[derive(Serialize, ToSchema)]
pub struct Grounding {
    #[serde(flatten)]
    pub citations: Citations,
    pub sources: Vec<Hit>,
}

impl Grounding {
    pub fn of(answer: &str, sources: &[hearth_kb::Hit]) -> Self {
        Grounding { citations: Citations::of(answer, sources), sources: sources.iter().map(Hit::from).collect() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AskResponse {
    pub question: String,
    pub answer: String,
    pub sources: Vec<Hit>,
    pub model: String,
    pub usage: Usage,
    #[serde(flatten)]
    pub citations: Citations,
}

/// The server-sent events of a streamed answer: the sources, tokens, then `done` (or `error`).
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum AskEvent {
    Sources {
        sources: Vec<Hit>,
    },
    Token {
        text: String,
    },
    Done {
        answer: String,
        usage: Usage,
        #[serde(flatten)]
        citations: Citations,
    },
    Error {
        message: String,
    },
}

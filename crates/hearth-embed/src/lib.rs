//! Embeddings and reranking on BERT-family encoders (all-MiniLM, BGE, E5, GTE; ms-marco
//! cross-encoders) and on the engine's decoders (Qwen3-Embedding, EmbeddingGemma;
//! Qwen3-Reranker as a judge), loaded from Hugging Face / sentence-transformers directories.
//!
//! For a server: load an [`Embedder`] once, wrap it in an [`EmbedQueue`] shared by all
//! request handlers (concurrent requests run as one batch; [`EmbedQueue::stats`] feeds
//! `/metrics`), and map [`EmbedError::is_client_error`] to HTTP 400. [`Reranker::rerank`]
//! serves `/v1/rerank`.

mod bert;
pub mod config;
mod decoder;
mod embedder;
mod encoder;
mod error;
mod math;
mod pipeline;
mod queue;
mod rerank;
mod text;
mod weights;

pub use bert::Encoded;
pub use config::Pooling;
pub use embedder::{EmbedInput, EmbedOptions, EmbedPrecision, Embedder, EmbedderInfo, Embeddings, InputType};
pub use error::{EmbedError, Result};
pub use queue::{EmbedQueue, Pending, QueueStats};
pub use rerank::{Ranked, RerankOptions, Reranker, Reranking};

//! Knowledge-base collections as the server holds them: opened on first use (one SQLite file
//! each under `$HEARTH_HOME/kb/`), embedding through the same resident model and batching
//! queue that `/v1/embeddings` uses, and the retrieval step of answers with citations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hearth_kb::answer::{self, Prompt};
use hearth_kb::{Kb, KbError, SearchOptions, TextEmbedder, TextReranker};

use crate::error::ApiError;
use crate::models::{Encoder, EncoderKind, Models, ResidentEncoder};

pub const DEFAULT_COLLECTION: &str = "default";

pub struct Knowledge {
    home: PathBuf,
    embedding_model: String,
    rerank_model: Option<String>,
    models: Arc<Models>,
    open: tokio::sync::Mutex<HashMap<String, Arc<Kb>>>,
}

/// An embedding model resident in the server, through its batching queue.
struct QueueEmbedder {
    name: String,
    resident: Arc<ResidentEncoder>,
}

impl QueueEmbedder {
    fn queue(&self) -> &hearth_embed::EmbedQueue {
        match &self.resident.encoder {
            Encoder::Embedding(queue) => queue,
            Encoder::Reranker(_) => unreachable!("loaded as an embedding model"),
        }
    }
}

impl TextEmbedder for QueueEmbedder {
    fn name(&self) -> &str {
        &self.name
    }
    fn dimension(&self) -> usize {
        self.queue().embedder().info().dimension
    }
    fn max_tokens(&self) -> usize {
        self.queue().embedder().info().max_tokens
    }
    fn count_tokens(&self, text: &str) -> usize {
        self.queue().embedder().count_tokens(text)
    }
    fn embed(&self, texts: &[String]) -> hearth_kb::Result<Vec<Vec<f32>>> {
        hearth_kb::embed_with(texts, false, |i, o| self.queue().embed(i, o))
    }

    fn embed_query(&self, query: &str) -> hearth_kb::Result<Vec<f32>> {
        Ok(hearth_kb::embed_with(&[query.to_string()], true, |i, o| self.queue().embed(i, o))?.pop().unwrap_or_default())
    }
}

struct ResidentReranker(Arc<ResidentEncoder>);

impl TextReranker for ResidentReranker {
    fn scores(&self, query: &str, passages: &[&str]) -> hearth_kb::Result<Vec<f32>> {
        match &self.0.encoder {
            Encoder::Reranker(r) => r.scores(query, passages),
            Encoder::Embedding(_) => Err(KbError::Invalid("the configured reranker is an embedding model".into())),
        }
    }
}

/// Runs knowledge-base work (SQLite, embedding) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> hearth_kb::Result<T> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the knowledge base task stopped: {e}")))?
        .map_err(ApiError::from)
}

impl Knowledge {
    pub fn new(home: PathBuf, embedding_model: String, rerank_model: Option<String>, models: Arc<Models>) -> Self {
        Knowledge { home, embedding_model, rerank_model, models, open: Default::default() }
    }

    /// The existing collection `name` (404 if there is none): for routes that only read.
    pub async fn collection(&self, name: &str) -> Result<Arc<Kb>, ApiError> {
        self.open(name, false).await
    }

    /// As `collection`, but the default collection before any content is there is `None`
    /// (empty) rather than missing: clients of a fresh server read it before adding to it.
    pub async fn collection_or_empty(&self, name: &str) -> Result<Option<Arc<Kb>>, ApiError> {
        if name == DEFAULT_COLLECTION && !self.collections().iter().any(|c| c == name) {
            return Ok(None);
        }
        self.collection(name).await.map(Some)
    }

    /// The collection `name`, created if new: for routes that add content.
    pub async fn collection_to_write(&self, name: &str) -> Result<Arc<Kb>, ApiError> {
        self.open(name, true).await
    }

    async fn open(&self, name: &str, create: bool) -> Result<Arc<Kb>, ApiError> {
        let path = hearth_kb::collection_path(&self.home, name).map_err(|e| ApiError::invalid("collection", e.to_string()))?;
        let mut open = self.open.lock().await;
        if let Some(kb) = open.get(name) {
            return Ok(kb.clone());
        }
        if !create && !path.is_file() {
            return Err(ApiError {
                param: Some("collection".into()),
                ..ApiError::not_found(format!("there is no collection named `{name}`: add content to create it"))
            });
        }
        let resident = self.models.encoder(&self.embedding_model, EncoderKind::Embedding).await?;
        let embedder = QueueEmbedder { name: hearth_store::catalogue::canonical(&self.embedding_model).to_string(), resident };
        let kb = Arc::new(blocking(move || Kb::open(&path, Arc::new(embedder))).await?);
        open.insert(name.to_string(), kb.clone());
        Ok(kb)
    }

    /// Names of the collections on disk.
    pub fn collections(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.home.join("kb"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".sqlite").map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// The configured cross-encoder, for `rerank=true`.
    pub async fn reranker(&self) -> Result<Arc<dyn TextReranker>, ApiError> {
        let Some(model) = &self.rerank_model else {
            return Err(ApiError::invalid("rerank", "no reranker is configured: start the server with --kb-rerank-model"));
        };
        Ok(Arc::new(ResidentReranker(self.models.encoder(model, EncoderKind::Reranker).await?)))
    }

    /// Finishes ingest jobs a stopped process left running, in every collection on disk.
    pub async fn resume_jobs(&self) {
        for name in self.collections() {
            let kb = match self.collection(&name).await {
                Ok(kb) => kb,
                Err(e) => {
                    tracing::error!(collection = %name, "knowledge base: {}", e.message);
                    continue;
                }
            };
            match blocking(move || kb.resume_jobs(&|_| {})).await {
                Ok(done) => done.iter().for_each(|(id, r)| {
                    tracing::info!(collection = %name, job = %id, documents = r.documents, chunks = r.chunks, "knowledge base job resumed")
                }),
                Err(e) => tracing::error!(collection = %name, "knowledge base: resuming jobs failed: {}", e.message),
            }
        }
    }

    /// The chosen `chunks`, then what is retrieved for `question`, as the answer prompt within
    /// `budget` tokens.
    pub async fn prompt(
        &self,
        collection: &str,
        question: &str,
        opts: SearchOptions,
        chunks: Vec<i64>,
        budget: usize,
        count: impl Fn(&str) -> usize + Send + 'static,
    ) -> Result<Prompt, ApiError> {
        let kb = self.collection(collection).await?;
        let reranker = if opts.rerank { Some(self.reranker().await?) } else { None };
        let question = question.to_string();
        blocking(move || {
            let mut hits = kb.chosen(&chunks)?;
            let found = kb.search(&question, &opts, reranker.as_deref())?;
            hits.extend(found.into_iter().filter(|h| !chunks.contains(&h.chunk.id)));
            Ok(answer::build_prompt(&question, hits, budget, &count))
        })
        .await
    }
}

//! The knowledge base: documents ingested from files, folders and posted content, chunked by
//! structure, embedded, and searched by BM25, vectors or both; answers cite the chunks they
//! used. A collection is one SQLite file under `$HEARTH_HOME/kb/`.

pub mod answer;
mod error;
pub mod eval;
mod ingest;
mod jobs;
pub mod search;
pub mod sqlite;
pub mod store;
mod vectors;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use error::{KbError, Result};
/// How each source is read ([`IngestOptions::extract`]).
pub use hearth_docs::ExtractOptions;
pub use ingest::{IngestOptions, IngestReport, NewContent, Progress, SourceError};
pub use jobs::JobSpec;
pub use search::{Hit, Mode, SearchOptions};
pub use sqlite::SqliteStore;
pub use store::{ChunkRecord, DocumentRecord, Filters, JobRecord, KbStore, Stats};
pub use vectors::{embed_with, GraphFile, LocalEmbedder, TextEmbedder, TextReranker, VectorIndex, ANN_THRESHOLD};

pub struct Kb {
    store: Box<dyn KbStore>,
    embedder: Arc<dyn TextEmbedder>,
    /// Where the HNSW graph is persisted (beside the SQLite file).
    graph_path: Option<PathBuf>,
    ann_threshold: usize,
    /// Rebuilt when the store's generation moves past it.
    index: Mutex<Option<Arc<VectorIndex>>>,
}

/// The file of collection `name` under `home`; names are plain words so they cannot escape.
pub fn collection_path(home: &Path, name: &str) -> Result<PathBuf> {
    let ok = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(KbError::Invalid(format!("invalid collection name {name:?}: use 1-64 letters, digits, '-' or '_'")));
    }
    Ok(home.join("kb").join(format!("{name}.sqlite")))
}

impl Kb {
    /// Opens (creating if needed) the SQLite knowledge base at `path`.
    pub fn open(path: &Path, embedder: Arc<dyn TextEmbedder>) -> Result<Kb> {
        let mut kb = Kb::with_store(Box::new(SqliteStore::open(path)?), embedder)?;
        kb.graph_path = Some(path.with_extension("hnsw"));
        Ok(kb)
    }

    /// Vectors from which search is approximate (HNSW) rather than exact.
    pub fn set_ann_threshold(&mut self, rows: usize) {
        self.ann_threshold = rows;
    }

    /// A knowledge base over any backend; the first embedder to write it is the only one it
    /// accepts afterwards (vectors of two models do not compare).
    pub fn with_store(store: Box<dyn KbStore>, embedder: Arc<dyn TextEmbedder>) -> Result<Kb> {
        let (name, dim) = (embedder.name().to_string(), embedder.dimension());
        match (store.meta("embedding_model")?, store.meta("embedding_dimension")?) {
            (Some(stored), Some(d)) if stored != name || d != dim.to_string() => {
                return Err(KbError::EmbeddingModelMismatch { stored, stored_dim: d.parse().unwrap_or(0), given: name, given_dim: dim });
            }
            (Some(_), Some(_)) => {}
            _ => {
                store.set_meta("embedding_model", &name)?;
                store.set_meta("embedding_dimension", &dim.to_string())?;
            }
        }
        Ok(Kb { store, embedder, graph_path: None, ann_threshold: vectors::ANN_THRESHOLD, index: Mutex::new(None) })
    }

    pub fn store(&self) -> &dyn KbStore {
        self.store.as_ref()
    }

    pub fn embedder(&self) -> &dyn TextEmbedder {
        self.embedder.as_ref()
    }

    pub fn stats(&self) -> Result<Stats> {
        self.store.stats()
    }

    /// A document and its extracted text.
    pub fn document(&self, id: &str) -> Result<Option<(DocumentRecord, String)>> {
        self.store.document(id)
    }

    pub fn delete(&self, id: &str) -> Result<bool> {
        self.store.delete_document(id)
    }

    /// The vector index for the store as it is now.
    pub fn vector_index(&self) -> Result<Arc<VectorIndex>> {
        let generation = self.store.generation()?;
        let mut slot = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(index) if index.generation == generation => Ok(index.clone()),
            _ => {
                let database = self.store.meta("database_id")?.unwrap_or_default();
                let graph = self.graph_path.as_deref().map(|path| GraphFile { path, database: &database });
                let index = Arc::new(VectorIndex::new(generation, self.store.vectors()?, self.ann_threshold, graph)?);
                *slot = Some(index.clone());
                Ok(index)
            }
        }
    }

    /// The chunks with these ids (a search hit's `chunk.id`), in the order given, as hits a
    /// person chose: no score, ranks or highlights.
    pub fn chosen(&self, ids: &[i64]) -> Result<Vec<Hit>> {
        let found = self.store.chunks(ids)?;
        ids.iter()
            .map(|id| {
                let (chunk, document) = found.iter().find(|(c, _)| c.id == *id).ok_or_else(|| KbError::NotFound(format!("chunk {id}")))?;
                let (chunk, document) = (chunk.clone(), document.clone());
                Ok(Hit {
                    chunk,
                    document,
                    score: 0.0,
                    bm25_rank: None,
                    vector_rank: None,
                    highlights: Vec::new(),
                    char_highlights: Vec::new(),
                })
            })
            .collect()
    }

    /// Searches by `opts.mode`; `reranker` reorders the candidates when `opts.rerank`.
    pub fn search(&self, query: &str, opts: &SearchOptions, reranker: Option<&dyn TextReranker>) -> Result<Vec<Hit>> {
        if query.trim().is_empty() {
            return Err(KbError::Invalid("the query is empty".into()));
        }
        if opts.rerank && reranker.is_none() {
            return Err(KbError::Invalid("reranking was asked for, but no reranker was given".into()));
        }
        for (name, weight) in [("bm25", opts.bm25_weight), ("vector", opts.vector_weight)] {
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(KbError::Invalid(format!("the {name} weight must be a number of at least 0, got {weight}")));
            }
        }
        if opts.limit == 0 {
            return Ok(Vec::new());
        }
        let depth = opts.candidates.max(opts.limit);
        let bm25 = match opts.mode {
            Mode::Bm25 | Mode::Hybrid => self.store.bm25(query, &opts.filters, depth)?,
            Mode::Vector => Vec::new(),
        };
        let vector = match opts.mode {
            Mode::Vector | Mode::Hybrid => {
                let q = self.embedder.embed_query(query)?;
                let allowed: Option<HashSet<i64>> =
                    if opts.filters.is_empty() { None } else { Some(self.store.filtered_chunks(&opts.filters)?.into_iter().collect()) };
                self.vector_index()?.search(&q, depth, allowed.as_ref())?
            }
            Mode::Bm25 => Vec::new(),
        };
        let mut ranking = match opts.mode {
            Mode::Bm25 => bm25.clone(),
            Mode::Vector => vector.clone(),
            Mode::Hybrid => search::fuse(&[(&bm25, opts.bm25_weight), (&vector, opts.vector_weight)], opts.rrf_k),
        };
        // Without `rerank` a given reranker is not used.
        let rerank = reranker.filter(|_| opts.rerank);
        ranking.truncate(if rerank.is_some() { depth } else { opts.limit });
        let ids: Vec<i64> = ranking.iter().map(|r| r.0).collect();
        // A chunk deleted since it was ranked is skipped.
        let mut rows: std::collections::HashMap<i64, (ChunkRecord, DocumentRecord)> =
            self.store.chunks(&ids)?.into_iter().map(|r| (r.0.id, r)).collect();
        let rank_in = |list: &search::Ranking, id: i64| list.iter().position(|r| r.0 == id).map(|p| p + 1);
        let terms = search::query_terms(query);
        let mut hits: Vec<Hit> = ranking
            .iter()
            .filter_map(|&(id, score)| {
                let (chunk, document) = rows.remove(&id)?;
                let highlights = search::highlights(&chunk.text, &terms);
                let char_highlights = store::char_ranges(&chunk.text, highlights.iter().cloned());
                Some(Hit {
                    highlights,
                    char_highlights,
                    bm25_rank: rank_in(&bm25, id),
                    vector_rank: rank_in(&vector, id),
                    chunk,
                    document,
                    score,
                })
            })
            .collect();
        if let Some(reranker) = rerank {
            let passages: Vec<&str> = hits.iter().map(|h| h.chunk.text.as_str()).collect();
            if !passages.is_empty() {
                let scores = reranker.scores(query, &passages)?;
                hits.iter_mut().zip(scores).for_each(|(h, s)| h.score = s);
                hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            }
            hits.truncate(opts.limit);
        }
        Ok(hits)
    }
}

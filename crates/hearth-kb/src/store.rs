//! What a knowledge-base backend keeps and answers. SQLite (`sqlite.rs`) is the embedded
//! default; the trait is the seam for a PostgreSQL + pgvector backend.

use std::ops::Range;

use hearth_docs::Chunk;
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: String,
    /// Where it came from: an absolute file path, a URL, or `content:<id>` for posted content.
    pub source: String,
    /// Which document of a file that holds many (a JSONL line); `None` for one per file.
    pub key: Option<String>,
    pub title: Option<String>,
    pub content_type: String,
    pub tags: Vec<String>,
    /// SHA-256 of the extracted text.
    pub content_hash: String,
    pub bytes: u64,
    pub chunk_count: usize,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: i64,
    pub doc_id: String,
    pub index: usize,
    pub text: String,
    pub section: Vec<String>,
    pub page: Option<u32>,
    /// Byte range of `text` in the document's extracted text.
    pub span: Range<usize>,
    /// The same range in characters (Unicode scalar values), as the HTTP API reports it.
    pub char_span: Range<usize>,
}

/// Character (Unicode scalar value) ranges of byte `ranges` in `text`, which lie on char
/// boundaries; counting goes on from one range to the next when they start in order.
pub(crate) fn char_ranges(text: &str, ranges: impl IntoIterator<Item = Range<usize>>) -> Vec<Range<usize>> {
    let chars = |r: Range<usize>| text.get(r).map_or(0, |t| t.chars().count());
    let (mut bytes_before, mut chars_before) = (0, 0);
    ranges
        .into_iter()
        .map(|r| {
            if r.start < bytes_before {
                (bytes_before, chars_before) = (0, 0);
            }
            chars_before += chars(bytes_before..r.start);
            bytes_before = r.start;
            chars_before..chars_before + chars(r)
        })
        .collect()
}

/// A chunk about to be written, with its embedding when embeddings are on.
pub struct NewChunk {
    pub chunk: Chunk,
    /// `chunk.span` in characters.
    pub char_span: Range<usize>,
    /// SHA-256 of what was embedded: an unchanged chunk keeps its vector on re-ingest.
    pub embed_hash: String,
    pub embedding: Option<Vec<f32>>,
}

pub struct NewDocument {
    pub record: DocumentRecord,
    pub text: String,
    pub chunks: Vec<NewChunk>,
}

/// Everything one source (a file, a posted content) holds now; written atomically in place of
/// what it held before.
pub struct SourceWrite {
    pub source: String,
    /// SHA-256 of the source's bytes and the ingest settings: equal means nothing to do.
    pub fingerprint: String,
    pub documents: Vec<NewDocument>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// A document matches if it has any of these tags.
    pub tags: Vec<String>,
    pub content_types: Vec<String>,
    pub documents: Vec<String>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.content_types.is_empty() && self.documents.is_empty()
    }
}

/// Every stored embedding, for the in-memory vector index.
pub struct VectorSet {
    pub ids: Vec<i64>,
    pub dim: usize,
    /// `ids.len() × dim`, row-major.
    pub data: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub documents: usize,
    pub chunks: usize,
    pub embedded_chunks: usize,
    pub sources: usize,
    pub bytes: u64,
    pub content_types: Vec<(String, usize)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: i64,
    pub kind: String,
    /// What to run again if the process stops before the job ends (JSON).
    pub spec: serde_json::Value,
    /// `running`, `done` or `failed`.
    pub state: String,
    pub report: serde_json::Value,
    pub created_at: i64,
    pub updated_at: i64,
}

pub trait KbStore: Send + Sync {
    fn meta(&self, key: &str) -> Result<Option<String>>;
    fn set_meta(&self, key: &str, value: &str) -> Result<()>;
    /// Changes whenever the searchable content changes, in this process or another.
    fn generation(&self) -> Result<u64>;

    fn fingerprint(&self, source: &str) -> Result<Option<String>>;
    /// Embeddings stored for a source's chunks, by `embed_hash`.
    fn embeddings_of(&self, source: &str) -> Result<Vec<(String, Vec<f32>)>>;
    /// Chunks of a source stored without an embedding.
    fn missing_embeddings(&self, source: &str) -> Result<usize>;
    fn write_source(&self, write: SourceWrite) -> Result<()>;
    /// Removes a source and its documents; false if unknown.
    fn delete_source(&self, source: &str) -> Result<bool>;
    /// Sources whose path starts with `prefix`.
    fn sources_under(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes one document; its source stays (with the other documents it holds).
    fn delete_document(&self, id: &str) -> Result<bool>;

    fn document(&self, id: &str) -> Result<Option<(DocumentRecord, String)>>;
    fn documents(&self, filters: &Filters, offset: usize, limit: usize) -> Result<Vec<DocumentRecord>>;
    fn chunks(&self, ids: &[i64]) -> Result<Vec<(ChunkRecord, DocumentRecord)>>;
    /// Chunks matching any term of `query`, best first, with their BM25 score (higher is better).
    fn bm25(&self, query: &str, filters: &Filters, limit: usize) -> Result<Vec<(i64, f32)>>;
    /// Chunk ids that pass `filters`.
    fn filtered_chunks(&self, filters: &Filters) -> Result<Vec<i64>>;
    fn vectors(&self) -> Result<VectorSet>;
    fn stats(&self) -> Result<Stats>;

    /// Records a `running` job with `report` (its owner, so that no other process takes it
    /// over as abandoned before it first reports).
    fn create_job(&self, kind: &str, spec: &serde_json::Value, report: &serde_json::Value) -> Result<i64>;
    fn update_job(&self, id: i64, state: &str, report: &serde_json::Value) -> Result<()>;
    fn job(&self, id: i64) -> Result<Option<JobRecord>>;
    fn jobs(&self, state: Option<&str>) -> Result<Vec<JobRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_ranges_count_unicode_scalars() {
        let text = "naïve café — 東京 ok";
        let bytes = |word: &str| {
            let start = text.find(word).unwrap();
            start..start + word.len()
        };
        let ranges = [bytes("café"), bytes("東京"), bytes("ok"), bytes("naïve")];
        assert_eq!(char_ranges(text, ranges), [6..10, 13..15, 16..18, 0..5]);
    }
}

//! The embedding models a knowledge base uses, and nearest-neighbour search over the stored
//! vectors, held in memory and reloaded when the store's generation moves.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use hearth_embed::{EmbedInput, EmbedOptions, EmbedPrecision, Embedder, InputType, RerankOptions, Reranker};
use hearth_kernels::dot;
use instant_distance::{Builder, HnswMap, Point, Search};
use serde::{Deserialize, Serialize};

use crate::store::VectorSet;
use crate::{KbError, Result};

/// What ingestion and vector search need from an embedding model.
pub trait TextEmbedder: Send + Sync {
    /// Recorded in the store: a knowledge base is searched with the model that built it.
    fn name(&self) -> &str;
    fn dimension(&self) -> usize;
    /// Tokens a passage may take, special tokens included.
    fn max_tokens(&self) -> usize;
    fn count_tokens(&self, text: &str) -> usize;
    /// One vector per text, in order; over-long texts are cut to the model's limit.
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
    /// A search query's vector: with the model's query prompt where it has one (as
    /// Qwen3-Embedding's instruction), else as a passage.
    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        Ok(self.embed(&[query.to_string()])?.pop().unwrap_or_default())
    }
}

/// Embeds queries or passages with the model's prompt for that role, where it has one
/// (Qwen3-Embedding's query instruction; EmbeddingGemma's `query` and `document` prompts).
pub fn embed_with(
    texts: &[String],
    query: bool,
    run: impl FnOnce(&[EmbedInput], &EmbedOptions) -> hearth_embed::Result<hearth_embed::Embeddings>,
) -> Result<Vec<Vec<f32>>> {
    let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t.clone())).collect();
    let input_type = Some(if query { InputType::Query } else { InputType::Document });
    let opts = EmbedOptions { truncate: true, input_type, ..Default::default() };
    Ok(run(&inputs, &opts).map_err(|e| KbError::Embed(e.to_string()))?.vectors)
}

/// Relevance scores of passages for a query (a cross-encoder).
pub trait TextReranker: Send + Sync {
    fn scores(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>>;
}

/// A sentence-embedding model from hearth-embed, under the name it was loaded by.
pub struct LocalEmbedder {
    name: String,
    embedder: Arc<Embedder>,
}

impl LocalEmbedder {
    pub fn new(name: impl Into<String>, embedder: Arc<Embedder>) -> Self {
        LocalEmbedder { name: name.into(), embedder }
    }

    pub fn load(name: impl Into<String>, dir: &Path) -> Result<Self> {
        Self::load_with(name, dir, EmbedPrecision::default())
    }

    /// [`LocalEmbedder::load`] with the encoder's products in `precision`.
    pub fn load_with(name: impl Into<String>, dir: &Path, precision: EmbedPrecision) -> Result<Self> {
        let embedder = Embedder::load_with(dir, precision).map_err(|e| KbError::Embed(format!("{}: {e}", dir.display())))?;
        Ok(Self::new(name, Arc::new(embedder)))
    }
}

impl TextEmbedder for LocalEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.embedder.info().dimension
    }

    fn max_tokens(&self) -> usize {
        self.embedder.info().max_tokens
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.embedder.count_tokens(text)
    }

    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        embed_with(texts, false, |i, o| self.embedder.embed(i, o))
    }

    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        Ok(embed_with(&[query.to_string()], true, |i, o| self.embedder.embed(i, o))?.pop().unwrap_or_default())
    }
}

impl TextReranker for Reranker {
    fn scores(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let ranked = self
            .rerank(query, passages, &RerankOptions { truncate: true, ..Default::default() })
            .map_err(|e| KbError::Embed(e.to_string()))?;
        let mut scores = vec![0.0; passages.len()];
        for r in ranked.results {
            scores[r.index] = r.relevance_score;
        }
        Ok(scores)
    }
}

/// Rows from which searches walk an HNSW graph instead of scanning every row.
pub const ANN_THRESHOLD: usize = 20_000;
/// Share of rows added or removed since the graph was built that makes it rebuilt.
const REBUILD_FRACTION: f64 = 0.2;
/// Neighbours the graph returns per query; deeper searches scan exactly.
const EF_SEARCH: usize = 400;

/// A unit vector; HNSW's distance is 1 − cosine.
#[derive(Clone, Serialize, Deserialize)]
struct Unit(Vec<f32>);

impl Point for Unit {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// The persisted graph: over the rows (chunk ids) it was built from, of one database.
#[derive(Serialize, Deserialize)]
struct Graph {
    database: String,
    dim: usize,
    map: HnswMap<Unit, i64>,
}

/// Where a graph is kept, and the id of the database it must belong to.
pub struct GraphFile<'a> {
    pub path: &'a Path,
    pub database: &'a str,
}

impl Graph {
    fn build(database: &str, ids: &[i64], data: &[f32], dim: usize) -> Graph {
        let points = data.chunks_exact(dim).map(|r| Unit(r.to_vec())).collect();
        let map = Builder::default().ef_search(EF_SEARCH).seed(0x4845_4152_5448).build(points, ids.to_vec());
        Graph { database: database.to_string(), dim, map }
    }

    fn load(path: &Path) -> Option<Graph> {
        postcard::from_bytes(&std::fs::read(path).ok()?).ok()
    }

    /// Written beside the database, atomically: a crash leaves the old graph or none.
    fn save(&self, path: &Path) -> Result<()> {
        // Per process: two processes saving at once must not write into one file.
        let tmp = path.with_extension(format!("hnsw.{}.tmp", std::process::id()));
        let file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        let file = postcard::to_io(self, file).map_err(|e| KbError::Invalid(format!("writing {}: {e}", tmp.display())))?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Cosine search over the stored vectors: an exact scan of every row below
/// [`ANN_THRESHOLD`] rows, above it an HNSW graph (persisted beside the database) plus an
/// exact scan of the rows added since the graph was built.
pub struct VectorIndex {
    pub generation: u64,
    ids: Vec<i64>,
    dim: usize,
    /// Unit rows.
    data: Vec<f32>,
    graph: Option<Graph>,
    /// Rows (positions in `ids`) the graph does not hold.
    delta: Vec<usize>,
    /// Rows present now, to drop the graph's deleted ones.
    live: HashSet<i64>,
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The best `k` of `scored`, best first (ties by id, for stable results).
fn top_k(mut scored: Vec<(i64, f32)>, k: usize) -> Vec<(i64, f32)> {
    let k = k.min(scored.len());
    if k == 0 {
        return Vec::new();
    }
    if k < scored.len() {
        scored.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(k);
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored
}

impl VectorIndex {
    /// An index over `set`; with `ann_threshold` rows or more it uses the graph in `graph`
    /// (or in memory without one), rebuilding it when the rows have moved on too far.
    pub fn new(generation: u64, set: VectorSet, ann_threshold: usize, graph: Option<GraphFile<'_>>) -> Result<Self> {
        let VectorSet { ids, dim, mut data } = set;
        if dim > 0 {
            data.chunks_exact_mut(dim).for_each(normalise);
        }
        let mut index = VectorIndex { generation, ids, dim, data, graph: None, delta: Vec::new(), live: HashSet::new() };
        if index.ids.len() < ann_threshold.max(1) {
            return Ok(index);
        }
        index.live = index.ids.iter().copied().collect();
        let stored = graph
            .as_ref()
            .and_then(|f| Graph::load(f.path))
            .filter(|g| g.dim == dim && graph.as_ref().is_some_and(|f| f.database == g.database));
        let (reused, delta) = match stored {
            Some(g) => {
                let held: HashSet<i64> = g.map.values.iter().copied().collect();
                let delta: Vec<usize> = (0..index.ids.len()).filter(|&i| !held.contains(&index.ids[i])).collect();
                let stale = held.iter().filter(|id| !index.live.contains(id)).count();
                let moved = (delta.len() + stale) as f64 / index.ids.len() as f64;
                if moved > REBUILD_FRACTION {
                    (None, Vec::new())
                } else {
                    (Some(g), delta)
                }
            }
            None => (None, Vec::new()),
        };
        index.graph = match reused {
            Some(g) => Some(g),
            None => {
                let g = Graph::build(graph.as_ref().map_or("", |f| f.database), &index.ids, &index.data, dim);
                if let Some(f) = &graph {
                    g.save(f.path)?;
                }
                Some(g)
            }
        };
        index.delta = delta;
        Ok(index)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether searches go through the HNSW graph.
    pub fn approximate(&self) -> bool {
        self.graph.is_some()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    fn scan(&self, q: &[f32], rows: impl Iterator<Item = usize>, allowed: Option<&HashSet<i64>>) -> Vec<(i64, f32)> {
        rows.filter(|&i| allowed.is_none_or(|a| a.contains(&self.ids[i]))).map(|i| (self.ids[i], dot(q, self.row(i)))).collect()
    }

    /// The `k` rows most similar to `query`, best first, among `allowed` if given.
    pub fn search(&self, query: &[f32], k: usize, allowed: Option<&HashSet<i64>>) -> Result<Vec<(i64, f32)>> {
        if self.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        if query.len() != self.dim {
            return Err(KbError::Invalid(format!("the query vector has {} dimensions, the index {}", query.len(), self.dim)));
        }
        let mut q = query.to_vec();
        normalise(&mut q);
        let exact = || top_k(self.scan(&q, 0..self.ids.len(), allowed), k);
        let Some(graph) = self.graph.as_ref().filter(|_| k <= EF_SEARCH) else { return Ok(exact()) };
        let mut search = Search::default();
        let mut found: Vec<(i64, f32)> = graph
            .map
            .search(&Unit(q.clone()), &mut search)
            .filter(|item| self.live.contains(item.value) && allowed.is_none_or(|a| a.contains(item.value)))
            .map(|item| (*item.value, 1.0 - item.distance))
            .collect();
        found.extend(self.scan(&q, self.delta.iter().copied(), allowed));
        // A narrow filter can leave the graph's neighbourhood short: scan what it allows.
        if found.len() < k && allowed.is_some() {
            return Ok(exact());
        }
        Ok(top_k(found, k))
    }
}

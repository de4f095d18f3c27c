//! Ingestion: files, folders and posted content become documents, chunks and embeddings.
//! A source whose bytes and settings are unchanged costs one lookup; a changed one keeps the
//! vectors of chunks whose text did not change. Sources are embedded in batches across files
//! (the embedder is fastest on full batches) and each is written in its own transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_docs::{ChunkOptions, ContentType, Document, ExtractOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::sqlite::now;
use crate::store::{char_ranges, DocumentRecord, NewChunk, NewDocument, SourceWrite};
use crate::{Kb, KbError, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestOptions {
    pub tags: Vec<String>,
    /// Globs (relative to each folder) of files to take; default every supported type.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Compute embeddings now; without, chunks are searchable by BM25 only until an
    /// ingest with embeddings fills them in.
    pub embed: bool,
    pub max_tokens: Option<usize>,
    pub overlap_tokens: usize,
    /// Limits (a larger file or posted content is refused with an error; the batch goes on)
    /// and JSON field names for reading each source.
    #[serde(flatten)]
    pub extract: ExtractOptions,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            tags: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            embed: true,
            max_tokens: None,
            overlap_tokens: ChunkOptions::default().overlap_tokens,
            extract: ExtractOptions::default(),
        }
    }
}

/// Content posted through the API rather than read from a file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NewContent {
    /// Stable id; default derived from the content.
    pub id: Option<String>,
    pub title: Option<String>,
    pub content_type: Option<String>,
    pub text: String,
    /// An uploaded file's bytes, read by `content_type` instead of `text`.
    #[serde(skip)]
    pub bytes: Option<Vec<u8>>,
    /// URL or path it came from, if any.
    pub source: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceError {
    pub source: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    pub sources: usize,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub documents: usize,
    pub chunks: usize,
    pub chunks_embedded: usize,
    pub chunks_reused: usize,
    pub errors: Vec<SourceError>,
    pub seconds: f64,
    /// Ids of the documents written (posted content reports what it created).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub document_ids: Vec<String>,
}

/// Progress of a running ingest: sources done of those found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub chunks: usize,
}

/// Where a source's bytes come from.
enum Origin {
    File(PathBuf),
    Posted(NewContent),
}

struct Source {
    name: String,
    origin: Origin,
}

/// A changed source, extracted and chunked, waiting for its embeddings.
struct Prepared {
    source: String,
    fingerprint: String,
    /// Chunks whose stored vector is kept.
    reused: usize,
    existed: bool,
    documents: Vec<NewDocument>,
    /// (document, chunk) positions still to embed, and the text to embed for each.
    to_embed: Vec<(usize, usize, String)>,
}

/// Chunks queued before the embedder runs: a few full batches.
const EMBED_BATCH_CHUNKS: usize = 128;

pub(crate) fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the embedder sees for a chunk: its document title and section give it context.
fn embed_text(title: Option<&str>, section: &[String], text: &str) -> String {
    let heading: Vec<&str> = title.into_iter().chain(section.iter().map(String::as_str)).collect();
    if heading.is_empty() {
        text.to_string()
    } else {
        format!("{}\n{text}", heading.join(" / "))
    }
}

impl Kb {
    /// Ingests files and folders (recursively, by `include`/`exclude`).
    pub fn ingest_paths(&self, paths: &[PathBuf], opts: &IngestOptions, progress: &dyn Fn(Progress)) -> Result<IngestReport> {
        let start = Instant::now();
        let mut report = IngestReport::default();
        let mut sources = Vec::new();
        for path in paths {
            match files_under(path, opts) {
                Ok(files) => sources.extend(files.into_iter().map(|f| Source { name: f.display().to_string(), origin: Origin::File(f) })),
                Err(e) => report.errors.push(SourceError { source: path.display().to_string(), message: e.to_string() }),
            }
        }
        self.run(sources, opts, &mut report, progress)?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Makes the knowledge base hold exactly what `folder` holds now: new and changed files
    /// ingested, sources under it that are gone (or no longer included) removed.
    pub fn sync(&self, folder: &Path, opts: &IngestOptions, progress: &dyn Fn(Progress)) -> Result<IngestReport> {
        let start = Instant::now();
        let root = folder.canonicalize().map_err(|e| KbError::Invalid(format!("{}: {e}", folder.display())))?;
        if !root.is_dir() {
            return Err(KbError::Invalid(format!("{} is not a folder", folder.display())));
        }
        let files = files_under(&root, opts)?;
        let keep: std::collections::HashSet<String> = files.iter().map(|f| f.display().to_string()).collect();
        let mut report = IngestReport::default();
        let prefix = format!("{}{}", root.display(), std::path::MAIN_SEPARATOR);
        for gone in self.store.sources_under(&prefix)?.into_iter().filter(|s| !keep.contains(s)) {
            report.deleted += usize::from(self.store.delete_source(&gone)?);
        }
        let sources = files.into_iter().map(|f| Source { name: f.display().to_string(), origin: Origin::File(f) }).collect();
        self.run(sources, opts, &mut report, progress)?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Adds or replaces posted content; each item is its own source (`content:<id>`).
    pub fn add_content(&self, items: Vec<NewContent>, opts: &IngestOptions) -> Result<IngestReport> {
        let start = Instant::now();
        let mut report = IngestReport::default();
        let mut sources = Vec::with_capacity(items.len());
        for mut item in items {
            let body = item.bytes.as_deref().unwrap_or(item.text.as_bytes());
            if body.is_empty() {
                return Err(KbError::Invalid("the content is empty".into()));
            }
            let derived =
                sha256_hex(&[body, item.title.as_deref().unwrap_or("").as_bytes(), item.source.as_deref().unwrap_or("").as_bytes()])[..16]
                    .to_string();
            let id = item.id.get_or_insert(derived);
            if id.is_empty() || id.len() > 200 || id.chars().any(char::is_control) {
                return Err(KbError::Invalid(format!("invalid content id {id:?}")));
            }
            let name = item.source.clone().unwrap_or_else(|| format!("content:{id}"));
            sources.push(Source { name, origin: Origin::Posted(item) });
        }
        self.run(sources, opts, &mut report, &|_| {})?;
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    fn run(&self, sources: Vec<Source>, opts: &IngestOptions, report: &mut IngestReport, progress: &dyn Fn(Progress)) -> Result<()> {
        let total = sources.len();
        report.sources += total;
        let mut batch: Vec<Prepared> = Vec::new();
        let mut queued = 0;
        for (i, source) in sources.into_iter().enumerate() {
            match self.prepare(&source, opts) {
                Ok(None) => report.unchanged += 1,
                Ok(Some(p)) => {
                    queued += p.to_embed.len();
                    batch.push(p);
                }
                Err(e) => report.errors.push(SourceError { source: source.name.clone(), message: e.to_string() }),
            }
            if queued >= EMBED_BATCH_CHUNKS || i + 1 == total {
                self.flush(std::mem::take(&mut batch), report)?;
                queued = 0;
            }
            progress(Progress { done: i + 1, total, chunks: report.chunks });
        }
        Ok(())
    }

    /// Reads, extracts and chunks a source; `None` if it is unchanged.
    fn prepare(&self, source: &Source, opts: &IngestOptions) -> Result<Option<Prepared>> {
        let (bytes, content_type, posted) = match &source.origin {
            Origin::File(path) => {
                let size = std::fs::metadata(path)?.len();
                if size > opts.extract.max_bytes {
                    return Err(KbError::Invalid(format!("{size} bytes is over the {}-byte limit", opts.extract.max_bytes)));
                }
                let ty = ContentType::from_path(path).ok_or_else(|| KbError::Invalid("unsupported file type".into()))?;
                (std::fs::read(path)?, ty, None)
            }
            Origin::Posted(item) => {
                let ty = match item.content_type.as_deref() {
                    None => ContentType::Text,
                    Some(t) => t.parse().map_err(|_| KbError::Invalid(format!("unsupported content type {t:?}")))?,
                };
                (item.bytes.clone().unwrap_or_else(|| item.text.as_bytes().to_vec()), ty, Some(item))
            }
        };
        let mut settings = serde_json::json!([
            opts.tags,
            opts.max_tokens,
            opts.overlap_tokens,
            opts.extract.json_text_field,
            opts.extract.json_title_field,
            self.embedder.name(),
            posted.map(|p| (&p.id, &p.title, &p.tags, &p.content_type))
        ]);
        // Settable only since the options took all of ExtractOptions: the default is left out,
        // so what was ingested before keeps its fingerprint.
        if opts.extract.json_id_field != ExtractOptions::default().json_id_field {
            settings.as_array_mut().expect("an array").push(opts.extract.json_id_field.clone().into());
        }
        let settings = settings.to_string();
        let fingerprint = sha256_hex(&[&bytes, settings.as_bytes()]);
        let previous = self.store.fingerprint(&source.name)?;
        if previous.as_deref() == Some(fingerprint.as_str()) && self.embedded_enough(&source.name, opts)? {
            return Ok(None);
        }
        let docs = hearth_docs::extract_bytes(&bytes, content_type, &opts.extract).map_err(|e| KbError::Invalid(e.to_string()))?;
        let reusable: HashMap<String, Vec<f32>> = self.store.embeddings_of(&source.name)?.into_iter().collect();
        let mut prepared = Prepared {
            source: source.name.clone(),
            fingerprint,
            reused: 0,
            existed: previous.is_some(),
            documents: Vec::new(),
            to_embed: Vec::new(),
        };
        for doc in docs {
            let d = prepared.documents.len();
            let new = self.chunk_document(&source.name, doc, posted, opts);
            for (c, chunk) in new.chunks.iter().enumerate() {
                if opts.embed && !reusable.contains_key(&chunk.embed_hash) {
                    prepared.to_embed.push((d, c, embed_text(new.record.title.as_deref(), &chunk.chunk.section, &chunk.chunk.text)));
                }
            }
            prepared.documents.push(new);
        }
        for doc in &mut prepared.documents {
            for chunk in &mut doc.chunks {
                chunk.embedding = reusable.get(&chunk.embed_hash).cloned();
                prepared.reused += usize::from(chunk.embedding.is_some());
            }
        }
        Ok(Some(prepared))
    }

    /// An unchanged source still needs work if it was ingested without embeddings and these
    /// options want them.
    fn embedded_enough(&self, source: &str, opts: &IngestOptions) -> Result<bool> {
        Ok(!opts.embed || self.store.missing_embeddings(source)? == 0)
    }

    fn chunk_document(&self, source: &str, doc: Document, posted: Option<&NewContent>, opts: &IngestOptions) -> NewDocument {
        let key = doc.key.clone();
        let id = match (posted.and_then(|p| p.id.as_ref()), &key) {
            (Some(id), None) => id.clone(),
            (Some(id), Some(k)) => format!("{id}#{k}"),
            (None, _) => sha256_hex(&[source.as_bytes(), key.as_deref().unwrap_or("").as_bytes()])[..16].to_string(),
        };
        let title = posted.and_then(|p| p.title.clone()).or(doc.title.clone());
        // Leave room for the special tokens and the title/section line embedded with each chunk.
        let budget = opts.max_tokens.unwrap_or_else(|| self.embedder.max_tokens().saturating_sub(32).clamp(16, 512));
        let chunk_opts = ChunkOptions { max_tokens: budget, overlap_tokens: opts.overlap_tokens.min(budget / 2) };
        let count = |t: &str| self.embedder.count_tokens(t);
        let chunks: Vec<hearth_docs::Chunk> = hearth_docs::chunk(&doc, &chunk_opts, &count)
            .into_iter()
            // A heading with nothing under it before the next one says nothing by itself (it
            // is embedded with every chunk of its section).
            .filter(|c| c.section.last().is_none_or(|h| c.text.trim() != h.trim()))
            .collect();
        let char_spans = char_ranges(&doc.text, chunks.iter().map(|c| c.span.clone()));
        let chunks = chunks
            .into_iter()
            .zip(char_spans)
            .enumerate()
            .map(|(index, (c, char_span))| NewChunk {
                embed_hash: sha256_hex(&[self.embedder.name().as_bytes(), embed_text(title.as_deref(), &c.section, &c.text).as_bytes()]),
                chunk: hearth_docs::Chunk { index, ..c },
                char_span,
                embedding: None,
            })
            .collect::<Vec<_>>();
        let mut tags = opts.tags.clone();
        tags.extend(posted.map(|p| p.tags.clone()).unwrap_or_default());
        tags.sort();
        tags.dedup();
        let t = now();
        NewDocument {
            record: DocumentRecord {
                id,
                source: source.to_string(),
                key,
                title,
                content_type: doc.content_type.as_str().to_string(),
                tags,
                content_hash: sha256_hex(&[doc.text.as_bytes()]),
                bytes: doc.text.len() as u64,
                chunk_count: chunks.len(),
                created_at: t,
                updated_at: t,
            },
            text: doc.text,
            chunks,
        }
    }

    /// Embeds what a batch of sources needs in one call, then writes each source.
    fn flush(&self, mut batch: Vec<Prepared>, report: &mut IngestReport) -> Result<()> {
        let texts: Vec<String> = batch.iter().flat_map(|p| p.to_embed.iter().map(|(_, _, t)| t.clone())).collect();
        if !texts.is_empty() {
            let vectors = self.embedder.embed(&texts)?;
            let mut vectors = vectors.into_iter();
            for p in &mut batch {
                for (d, c, _) in std::mem::take(&mut p.to_embed) {
                    p.documents[d].chunks[c].embedding = vectors.next();
                    report.chunks_embedded += 1;
                }
            }
        }
        for p in batch {
            let chunks: usize = p.documents.iter().map(|d| d.chunks.len()).sum();
            report.documents += p.documents.len();
            report.chunks += chunks;
            report.chunks_reused += p.reused;
            report.document_ids.extend(p.documents.iter().map(|d| d.record.id.clone()));
            if p.existed {
                report.updated += 1;
            } else {
                report.added += 1;
            }
            self.store.write_source(SourceWrite { source: p.source, fingerprint: p.fingerprint, documents: p.documents })?;
        }
        Ok(())
    }
}

/// The supported files under `path` (or `path` itself), as absolute paths.
fn files_under(path: &Path, opts: &IngestOptions) -> Result<Vec<PathBuf>> {
    let root = path.canonicalize().map_err(|e| KbError::Invalid(format!("{}: {e}", path.display())))?;
    hearth_docs::walk(&root, &opts.include, &opts.exclude).map_err(|e| KbError::Invalid(e.to_string()))
}

//! The embedded store: one SQLite file holding documents, chunks, an FTS5 index for BM25 and
//! the embeddings. Every source is replaced in one transaction, so a crash never leaves a
//! half-indexed document visible; WAL lets searches run while an ingest writes.

use std::ops::Range;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use hearth_sqlite::{Migration, Schema};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;

use crate::store::{char_ranges, ChunkRecord, DocumentRecord, Filters, JobRecord, KbStore, SourceWrite, Stats, VectorSet};
use crate::{KbError, Result};

/// Versions of a knowledge base's schema (see `hearth_sqlite`).
const SCHEMA: Schema = Schema {
    what: "the knowledge base",
    migrations: &[Migration {
        name: "documents, chunks, full-text index and jobs",
        apply: |tx| {
            tx.execute_batch(TABLES)?;
            add_char_spans(tx)?;
            // Names this database for files derived from it (the HNSW graph), so a graph left
            // beside a recreated database is not mistaken for its own.
            tx.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('database_id', lower(hex(randomblob(16))))", [])?;
            Ok(())
        },
    }],
};

/// Version 1's tables.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources(
    source TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL REFERENCES sources(source) ON DELETE CASCADE,
    key TEXT,
    title TEXT,
    content_type TEXT NOT NULL,
    tags TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS chunks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    section TEXT NOT NULL,
    page INTEGER,
    span_start INTEGER NOT NULL,
    span_end INTEGER NOT NULL,
    char_start INTEGER NOT NULL,
    char_end INTEGER NOT NULL,
    embed_hash TEXT NOT NULL,
    embedding BLOB);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, context, tokenize = 'porter unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    report TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL);
";

/// BM25 weight of the title and section path against the chunk text.
const CONTEXT_WEIGHT: f64 = 0.5;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = hearth_sqlite::open(path, &SCHEMA)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// SQLite's own check plus FTS5's: what a crash test asserts.
    pub fn integrity_check(&self) -> Result<()> {
        let conn = self.conn();
        let ok: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if ok != "ok" {
            return Err(KbError::Invalid(format!("integrity check failed: {ok}")));
        }
        conn.execute("INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)", [])?;
        let orphans: i64 = conn.query_row(
            "SELECT (SELECT count(*) FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks))
                  + (SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunks_fts))
                  + (SELECT count(*) FROM documents d WHERE chunk_count != (SELECT count(*) FROM chunks c WHERE c.doc_id = d.id))",
            [],
            |r| r.get(0),
        )?;
        if orphans != 0 {
            return Err(KbError::Invalid(format!("{orphans} chunks or documents are out of step with the index")));
        }
        Ok(())
    }
}

/// Databases written before chunks had character spans get them, counted from the documents.
fn add_char_spans(tx: &Transaction) -> rusqlite::Result<()> {
    if tx.prepare("SELECT char_start FROM chunks LIMIT 0").is_ok() {
        return Ok(());
    }
    tx.execute_batch("ALTER TABLE chunks ADD COLUMN char_start INTEGER NOT NULL DEFAULT 0; ALTER TABLE chunks ADD COLUMN char_end INTEGER NOT NULL DEFAULT 0;")?;
    let mut documents = tx.prepare("SELECT id, text FROM documents")?;
    let mut spans = tx.prepare("SELECT id, span_start, span_end FROM chunks WHERE doc_id = ? ORDER BY span_start")?;
    let mut update = tx.prepare("UPDATE chunks SET char_start = ?2, char_end = ?3 WHERE id = ?1")?;
    let mut rows = documents.query([])?;
    while let Some(doc) = rows.next()? {
        let (id, text): (String, String) = (doc.get(0)?, doc.get(1)?);
        let chunks: Vec<(i64, Range<usize>)> = spans
            .query_map([&id], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize..r.get::<_, i64>(2)? as usize)))?
            .collect::<rusqlite::Result<_>>()?;
        let char_spans = char_ranges(&text, chunks.iter().map(|c| c.1.clone()));
        for ((chunk, _), chars) in chunks.iter().zip(char_spans) {
            update.execute(params![chunk, chars.start as i64, chars.end as i64])?;
        }
    }
    Ok(())
}

fn bump_generation(tx: &Transaction) -> Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES('generation', '1')
         ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
        [],
    )?;
    Ok(())
}

/// Removes documents (with their chunks and FTS rows) matching `condition` on `documents`.
fn delete_documents(tx: &Transaction, condition: &str, arg: &str) -> Result<usize> {
    tx.execute(
        &format!("DELETE FROM chunks_fts WHERE rowid IN (SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {condition})"),
        [arg],
    )?;
    Ok(tx.execute(&format!("DELETE FROM documents AS d WHERE {condition}"), [arg])?)
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// An FTS5 query matching any word of free text: each term quoted, so nothing in the text is
/// read as query syntax.
fn match_any(query: &str) -> Option<String> {
    let mut terms: Vec<String> =
        query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| format!("\"{}\"", w.to_lowercase())).collect();
    terms.sort();
    terms.dedup();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

/// A SQL condition on documents `d` for `filters`, with its parameters.
fn filter_sql(filters: &Filters) -> (String, Vec<String>) {
    let mut clauses = vec!["1".to_string()];
    let mut args = Vec::new();
    let placeholders = |n: usize| vec!["?"; n].join(",");
    if !filters.tags.is_empty() {
        clauses.push(format!("EXISTS (SELECT 1 FROM json_each(d.tags) WHERE value IN ({}))", placeholders(filters.tags.len())));
        args.extend(filters.tags.iter().cloned());
    }
    if !filters.content_types.is_empty() {
        clauses.push(format!("d.content_type IN ({})", placeholders(filters.content_types.len())));
        args.extend(filters.content_types.iter().cloned());
    }
    if !filters.documents.is_empty() {
        clauses.push(format!("d.id IN ({})", placeholders(filters.documents.len())));
        args.extend(filters.documents.iter().cloned());
    }
    (clauses.join(" AND "), args)
}

const DOC_COLUMNS: &str =
    "d.id, d.source, d.key, d.title, d.content_type, d.tags, d.content_hash, d.bytes, d.chunk_count, d.created_at, d.updated_at";

fn document_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<DocumentRecord> {
    let tags: String = r.get(at + 5)?;
    Ok(DocumentRecord {
        id: r.get(at)?,
        source: r.get(at + 1)?,
        key: r.get(at + 2)?,
        title: r.get(at + 3)?,
        content_type: r.get(at + 4)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        content_hash: r.get(at + 6)?,
        bytes: r.get::<_, i64>(at + 7)? as u64,
        chunk_count: r.get::<_, i64>(at + 8)? as usize,
        created_at: r.get(at + 9)?,
        updated_at: r.get(at + 10)?,
    })
}

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRecord> {
    let json = |i: usize| -> rusqlite::Result<Value> { Ok(serde_json::from_str(&r.get::<_, String>(i)?).unwrap_or(Value::Null)) };
    Ok(JobRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        spec: json(2)?,
        state: r.get(3)?,
        report: json(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

impl KbStore for SqliteStore {
    fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self.conn().query_row("SELECT value FROM meta WHERE key = ?", [key], |r| r.get(0)).optional()?)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn().execute("INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2", [key, value])?;
        Ok(())
    }

    fn generation(&self) -> Result<u64> {
        Ok(self.meta("generation")?.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    fn fingerprint(&self, source: &str) -> Result<Option<String>> {
        Ok(self.conn().query_row("SELECT fingerprint FROM sources WHERE source = ?", [source], |r| r.get(0)).optional()?)
    }

    fn embeddings_of(&self, source: &str) -> Result<Vec<(String, Vec<f32>)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT c.embed_hash, c.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id
             WHERE d.source = ? AND c.embedding IS NOT NULL",
        )?;
        let rows = stmt.query_map([source], |r| Ok((r.get::<_, String>(0)?, from_blob(&r.get::<_, Vec<u8>>(1)?))))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn missing_embeddings(&self, source: &str) -> Result<usize> {
        let sql = "SELECT count(*) FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.source = ? AND c.embedding IS NULL";
        Ok(self.conn().query_row(sql, [source], |r| r.get::<_, i64>(0))? as usize)
    }

    fn write_source(&self, write: SourceWrite) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        delete_documents(&tx, "d.source = ?", &write.source)?;
        // A document id names one document: written again under another source, it moves
        // there, and a source it leaves empty is forgotten (so re-ingesting it adds it back).
        for doc in &write.documents {
            let old: Option<String> =
                tx.query_row("SELECT source FROM documents WHERE id = ?", [&doc.record.id], |r| r.get(0)).optional()?;
            if let Some(old) = old {
                delete_documents(&tx, "d.id = ?", &doc.record.id)?;
                tx.execute("DELETE FROM sources WHERE source = ?1 AND NOT EXISTS (SELECT 1 FROM documents WHERE source = ?1)", [&old])?;
            }
        }
        tx.execute(
            "INSERT INTO sources(source, fingerprint, updated_at) VALUES(?1, ?2, ?3)
             ON CONFLICT(source) DO UPDATE SET fingerprint = ?2, updated_at = ?3",
            params![write.source, write.fingerprint, now()],
        )?;
        for doc in &write.documents {
            let d = &doc.record;
            tx.execute(
                "INSERT INTO documents(id, source, key, title, content_type, tags, content_hash, bytes, chunk_count, created_at, updated_at, text)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    d.id,
                    write.source,
                    d.key,
                    d.title,
                    d.content_type,
                    serde_json::to_string(&d.tags).unwrap_or_default(),
                    d.content_hash,
                    d.bytes as i64,
                    doc.chunks.len() as i64,
                    d.created_at,
                    d.updated_at,
                    doc.text
                ],
            )?;
            let mut insert_chunk = tx.prepare_cached(
                "INSERT INTO chunks(doc_id, idx, text, section, page, span_start, span_end, char_start, char_end, embed_hash, embedding)
                 VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut insert_fts = tx.prepare_cached("INSERT INTO chunks_fts(rowid, text, context) VALUES(?1, ?2, ?3)")?;
            for c in &doc.chunks {
                insert_chunk.execute(params![
                    d.id,
                    c.chunk.index as i64,
                    c.chunk.text,
                    serde_json::to_string(&c.chunk.section).unwrap_or_default(),
                    c.chunk.page,
                    c.chunk.span.start as i64,
                    c.chunk.span.end as i64,
                    c.char_span.start as i64,
                    c.char_span.end as i64,
                    c.embed_hash,
                    c.embedding.as_deref().map(to_blob)
                ])?;
                let context = d.title.iter().chain(&c.chunk.section).cloned().collect::<Vec<_>>().join(" ");
                insert_fts.execute(params![tx.last_insert_rowid(), c.chunk.text, context])?;
            }
        }
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn delete_source(&self, source: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        delete_documents(&tx, "d.source = ?", source)?;
        let gone = tx.execute("DELETE FROM sources WHERE source = ?", [source])? > 0;
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(gone)
    }

    fn sources_under(&self, prefix: &str) -> Result<Vec<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT source FROM sources WHERE substr(source, 1, length(?1)) = ?1 ORDER BY source")?;
        let rows = stmt.query_map([prefix], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_document(&self, id: &str) -> Result<bool> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let gone = delete_documents(&tx, "d.id = ?", id)? > 0;
        // A source left with no document is forgotten, so re-ingesting it adds it back.
        tx.execute("DELETE FROM sources WHERE source NOT IN (SELECT source FROM documents)", [])?;
        bump_generation(&tx)?;
        tx.commit()?;
        Ok(gone)
    }

    fn document(&self, id: &str) -> Result<Option<(DocumentRecord, String)>> {
        let sql = format!("SELECT {DOC_COLUMNS}, d.text FROM documents d WHERE d.id = ?");
        Ok(self.conn().query_row(&sql, [id], |r| Ok((document_row(r, 0)?, r.get(11)?))).optional()?)
    }

    fn documents(&self, filters: &Filters, offset: usize, limit: usize) -> Result<Vec<DocumentRecord>> {
        let (cond, mut args) = filter_sql(filters);
        args.extend([limit.to_string(), offset.to_string()]);
        let sql = format!("SELECT {DOC_COLUMNS} FROM documents d WHERE {cond} ORDER BY d.source, d.id LIMIT ? OFFSET ?");
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| document_row(r, 0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn chunks(&self, ids: &[i64]) -> Result<Vec<(ChunkRecord, DocumentRecord)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT c.id, c.doc_id, c.idx, c.text, c.section, c.page, c.span_start, c.span_end, c.char_start, c.char_end, {DOC_COLUMNS}
             FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id = ?"
        ))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let row = stmt
                .query_row([id], |r| {
                    let section: String = r.get(4)?;
                    let chunk = ChunkRecord {
                        id: r.get(0)?,
                        doc_id: r.get(1)?,
                        index: r.get::<_, i64>(2)? as usize,
                        text: r.get(3)?,
                        section: serde_json::from_str(&section).unwrap_or_default(),
                        page: r.get(5)?,
                        span: r.get::<_, i64>(6)? as usize..r.get::<_, i64>(7)? as usize,
                        char_span: r.get::<_, i64>(8)? as usize..r.get::<_, i64>(9)? as usize,
                    };
                    Ok((chunk, document_row(r, 10)?))
                })
                .optional()?;
            out.extend(row);
        }
        Ok(out)
    }

    fn bm25(&self, query: &str, filters: &Filters, limit: usize) -> Result<Vec<(i64, f32)>> {
        let Some(expr) = match_any(query) else { return Ok(Vec::new()) };
        let (cond, args) = filter_sql(filters);
        let join = if filters.is_empty() {
            String::new()
        } else {
            format!("AND f.rowid IN (SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {cond})")
        };
        let sql = format!(
            "SELECT f.rowid, -bm25(chunks_fts, 1.0, {CONTEXT_WEIGHT}) AS score FROM chunks_fts f
             WHERE chunks_fts MATCH ? {join} ORDER BY score DESC LIMIT ?"
        );
        let conn = self.conn();
        let mut stmt = conn.prepare(&sql)?;
        let all_args = std::iter::once(expr).chain(args).chain([limit.to_string()]);
        let rows = stmt.query_map(params_from_iter(all_args), |r| Ok((r.get(0)?, r.get::<_, f64>(1)? as f32)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn filtered_chunks(&self, filters: &Filters) -> Result<Vec<i64>> {
        let (cond, args) = filter_sql(filters);
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE {cond}"))?;
        let rows = stmt.query_map(params_from_iter(args), |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn vectors(&self) -> Result<VectorSet> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT id, embedding FROM chunks WHERE embedding IS NOT NULL ORDER BY id")?;
        let mut set = VectorSet { ids: Vec::new(), dim: 0, data: Vec::new() };
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let v = from_blob(r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?);
            if set.dim == 0 {
                set.dim = v.len();
            }
            if v.len() != set.dim {
                return Err(KbError::Invalid(format!(
                    "chunk {} has a {}-dimensional embedding, others {}",
                    r.get::<_, i64>(0)?,
                    v.len(),
                    set.dim
                )));
            }
            set.ids.push(r.get(0)?);
            set.data.extend(v);
        }
        Ok(set)
    }

    fn stats(&self) -> Result<Stats> {
        let conn = self.conn();
        let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as usize);
        let mut stmt = conn.prepare("SELECT content_type, count(*) FROM documents GROUP BY content_type ORDER BY content_type")?;
        let content_types = stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize)))?.collect::<rusqlite::Result<_>>()?;
        Ok(Stats {
            documents: count("SELECT count(*) FROM documents")?,
            chunks: count("SELECT count(*) FROM chunks")?,
            embedded_chunks: count("SELECT count(*) FROM chunks WHERE embedding IS NOT NULL")?,
            sources: count("SELECT count(*) FROM sources")?,
            bytes: count("SELECT coalesce(sum(bytes), 0) FROM documents")? as u64,
            content_types,
        })
    }

    fn create_job(&self, kind: &str, spec: &Value, report: &Value) -> Result<i64> {
        let conn = self.conn();
        let t = now();
        conn.execute(
            "INSERT INTO jobs(kind, spec, state, report, created_at, updated_at) VALUES(?1, ?2, 'running', ?3, ?4, ?4)",
            params![kind, spec.to_string(), report.to_string(), t],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn update_job(&self, id: i64, state: &str, report: &Value) -> Result<()> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, report = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, state, report.to_string(), now()],
        )?;
        Ok(())
    }

    fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        let conn = self.conn();
        Ok(conn
            .query_row("SELECT id, kind, spec, state, report, created_at, updated_at FROM jobs WHERE id = ?", [id], job_row)
            .optional()?)
    }

    fn jobs(&self, state: Option<&str>) -> Result<Vec<JobRecord>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT id, kind, spec, state, report, created_at, updated_at FROM jobs WHERE ?1 IS NULL OR state = ?1 ORDER BY id")?;
        let rows = stmt.query_map([state], job_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewChunk, NewDocument};

    #[test]
    fn databases_without_character_spans_get_them_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.sqlite");
        let text = "Café au lait.\n\n東京 is a city.";
        let chunk = |index: usize, word: &str| {
            let start = text.find(word).unwrap();
            NewChunk {
                chunk: hearth_docs::Chunk { index, text: word.into(), section: Vec::new(), page: None, span: start..start + word.len() },
                char_span: 0..0,
                embed_hash: String::new(),
                embedding: None,
            }
        };
        let record = DocumentRecord {
            id: "d".into(),
            source: "s".into(),
            key: None,
            title: None,
            content_type: "text".into(),
            tags: Vec::new(),
            content_hash: String::new(),
            bytes: text.len() as u64,
            chunk_count: 2,
            created_at: 0,
            updated_at: 0,
        };
        let store = SqliteStore::open(&path).unwrap();
        let documents =
            vec![NewDocument { record, text: text.into(), chunks: vec![chunk(0, "Café au lait."), chunk(1, "東京 is a city.")] }];
        store.write_source(SourceWrite { source: "s".into(), fingerprint: String::new(), documents }).unwrap();
        // The schema as it was before character spans (and before schema versions).
        store
            .conn()
            .execute_batch("ALTER TABLE chunks DROP COLUMN char_start; ALTER TABLE chunks DROP COLUMN char_end; PRAGMA user_version = 0;")
            .unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let ids = store.filtered_chunks(&Filters::default()).unwrap();
        let spans: Vec<_> = store.chunks(&ids).unwrap().into_iter().map(|(c, _)| (c.span, c.char_span)).collect();
        assert_eq!(spans, [(0..14, 0..13), (16..33, 15..28)]);
        store.integrity_check().unwrap();
    }

    #[test]
    fn a_database_from_the_release_before_schema_versions_keeps_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.sqlite");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
                CREATE TABLE sources(source TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, updated_at INTEGER NOT NULL);
                CREATE TABLE documents(
                    id TEXT PRIMARY KEY, source TEXT NOT NULL REFERENCES sources(source) ON DELETE CASCADE, key TEXT, title TEXT,
                    content_type TEXT NOT NULL, tags TEXT NOT NULL, content_hash TEXT NOT NULL, bytes INTEGER NOT NULL,
                    chunk_count INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, text TEXT NOT NULL);
                CREATE INDEX documents_source ON documents(source);
                CREATE TABLE chunks(
                    id INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                    idx INTEGER NOT NULL, text TEXT NOT NULL, section TEXT NOT NULL, page INTEGER, span_start INTEGER NOT NULL,
                    span_end INTEGER NOT NULL, char_start INTEGER NOT NULL, char_end INTEGER NOT NULL, embed_hash TEXT NOT NULL,
                    embedding BLOB);
                CREATE INDEX chunks_doc ON chunks(doc_id);
                CREATE VIRTUAL TABLE chunks_fts USING fts5(text, context, tokenize = 'porter unicode61 remove_diacritics 2');
                CREATE TABLE jobs(
                    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL, report TEXT NOT NULL,
                    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
                PRAGMA journal_mode = WAL;
                INSERT INTO meta VALUES ('database_id', 'd1'), ('generation', '1');
                INSERT INTO sources VALUES ('s', 'f', 0);
                INSERT INTO documents VALUES ('d', 's', NULL, 'Bees', 'text', '[]', 'h', 15, 1, 0, 0, 'Bees make honey');
                INSERT INTO chunks VALUES (1, 'd', 0, 'Bees make honey', '[]', NULL, 0, 15, 0, 15, 'e', NULL);
                INSERT INTO chunks_fts(rowid, text, context) VALUES (1, 'Bees make honey', 'Bees');",
            )
            .unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = store.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(
            (version, store.meta("database_id").unwrap().as_deref(), store.generation().unwrap()),
            (SCHEMA.version(), Some("d1"), 1)
        );
        let hits = store.bm25("honey", &Filters::default(), 10).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [1]);
        let (chunk, document) = store.chunks(&[1]).unwrap().remove(0);
        assert_eq!((chunk.text.as_str(), chunk.char_span, document.title.as_deref()), ("Bees make honey", 0..15, Some("Bees")));
        store.integrity_check().unwrap();
    }

    #[test]
    fn a_database_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb.sqlite");
        Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {}", SCHEMA.version() + 1)).unwrap();
        let err = SqliteStore::open(&path).err().expect("refused");
        assert!(err.to_string().contains("the knowledge base has schema version 2"), "{err}");
    }
}

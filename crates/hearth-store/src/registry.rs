//! The registry of known models, in SQLite (`$HEARTH_HOME/hearth.db`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::error::IoContext;
use crate::{Result, StoreError};

/// Where a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Pulled,
    Converted,
    Trained,
    /// Registered by a user from files already on disk.
    RegisteredBy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pulled => "pulled",
            Self::Converted => "converted",
            Self::Trained => "trained",
            Self::RegisteredBy => "registered_by",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Pulled,
            Self::Converted,
            Self::Trained,
            Self::RegisteredBy,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One registered model. Times are Unix seconds.
#[derive(Clone, Debug, Serialize)]
pub struct ModelRecord {
    pub name: String,
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// What the engine loads: a GGUF file or a model directory.
    pub path: PathBuf,
    pub format: String,
    pub architecture: Option<String>,
    pub quantization: Option<String>,
    pub parameter_count: Option<u64>,
    pub size_bytes: u64,
    pub context_length: Option<u64>,
    pub embedding_dim: Option<u64>,
    pub recommended_memory_bytes: u64,
    pub source: Source,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    repo TEXT NOT NULL,
    revision TEXT NOT NULL,
    commit_sha TEXT NOT NULL,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    architecture TEXT,
    quantization TEXT,
    parameter_count INTEGER,
    size_bytes INTEGER NOT NULL,
    context_length INTEGER,
    embedding_dim INTEGER,
    recommended_memory_bytes INTEGER NOT NULL,
    source TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX IF NOT EXISTS models_repo ON models(repo);
";

const COLUMNS: &str = "name, repo, revision, commit_sha, path, format, architecture, quantization, parameter_count, \
    size_bytes, context_length, embedding_dim, recommended_memory_bytes, source, created_at, updated_at, last_used_at";

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) struct Registry {
    conn: Connection,
}

fn from_row(row: &Row) -> rusqlite::Result<ModelRecord> {
    let source: String = row.get(13)?;
    let path: String = row.get(4)?;
    Ok(ModelRecord {
        name: row.get(0)?,
        repo: row.get(1)?,
        revision: row.get(2)?,
        commit: row.get(3)?,
        path: PathBuf::from(path),
        format: row.get(5)?,
        architecture: row.get(6)?,
        quantization: row.get(7)?,
        parameter_count: row.get(8)?,
        size_bytes: row.get(9)?,
        context_length: row.get(10)?,
        embedding_dim: row.get(11)?,
        recommended_memory_bytes: row.get(12)?,
        source: Source::parse(&source).unwrap_or(Source::RegisteredBy),
        created_at: row.get(14)?,
        updated_at: row.get(15)?,
        last_used_at: row.get(16)?,
    })
}

impl Registry {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let mut conn = Connection::open(path)?;
        // Several processes (pulls, a server) share the file.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let tx = conn.transaction()?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        Ok(Self { conn })
    }

    /// Inserts or replaces a record, keeping the original creation time.
    pub fn upsert(&mut self, r: &ModelRecord) -> Result<()> {
        let path = r.path.to_str().ok_or_else(|| {
            StoreError::Invalid(format!("{}: path is not UTF-8", r.path.display()))
        })?;
        let tx = self.conn.transaction()?;
        let created: Option<i64> = tx
            .query_row(
                "SELECT created_at FROM models WHERE name = ?1",
                [&r.name],
                |row| row.get(0),
            )
            .optional()?;
        tx.execute(
            &format!("INSERT OR REPLACE INTO models ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"),
            params![
                r.name,
                r.repo,
                r.revision,
                r.commit,
                path,
                r.format,
                r.architecture,
                r.quantization,
                r.parameter_count,
                r.size_bytes,
                r.context_length,
                r.embedding_dim,
                r.recommended_memory_bytes,
                r.source.as_str(),
                created.unwrap_or(r.created_at),
                r.updated_at,
                r.last_used_at,
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<Option<ModelRecord>> {
        let sql = format!("SELECT {COLUMNS} FROM models WHERE name = ?1");
        Ok(self.conn.query_row(&sql, [name], from_row).optional()?)
    }

    /// Records of one repo, most recently used (or pulled) first.
    pub fn by_repo(&self, repo: &str) -> Result<Vec<ModelRecord>> {
        self.query(
            "WHERE repo = ?1 ORDER BY COALESCE(last_used_at, updated_at) DESC",
            &[&repo],
        )
    }

    pub fn list(&self) -> Result<Vec<ModelRecord>> {
        self.query("ORDER BY name", &[])
    }

    fn query(&self, clause: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<ModelRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM models {clause}"))?;
        let rows = stmt.query_map(args, from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn touch(&self, name: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE models SET last_used_at = ?1 WHERE name = ?2",
            params![now(), name],
        )?;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM models WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }
}

//! The registry of known models, in SQLite (`$HEARTH_HOME/hearth.db`).

use std::path::{Path, PathBuf};

use hearth_sqlite::{Migration, Schema};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;

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
        [Self::Pulled, Self::Converted, Self::Trained, Self::RegisteredBy].into_iter().find(|v| v.as_str() == s)
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
    pub embedding_max_tokens: Option<u64>,
    pub embedding_pooling: Option<String>,
    pub recommended_memory_bytes: u64,
    pub source: Source,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

impl ModelRecord {
    /// Written on this machine (a conversion or a fine-tune) and read where it lies, not a
    /// snapshot in the cache: no manifest, and removing it leaves its files alone.
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Converted | Source::Trained)
    }
}

/// Versions of the registry's schema (see `hearth_sqlite`).
const SCHEMA: Schema = Schema {
    what: "the model registry",
    migrations: &[Migration {
        name: "models",
        apply: |tx| {
            tx.execute_batch(MODELS)?;
            // Registries from before versioning may lack the columns added after the first release.
            for (column, kind) in ADDED_COLUMNS {
                let present: bool =
                    tx.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('models') WHERE name = ?1", [column], |row| row.get(0))?;
                if !present {
                    tx.execute_batch(&format!("ALTER TABLE models ADD COLUMN {column} {kind}"))?;
                }
            }
            Ok(())
        },
    }],
};

/// Version 1's table.
const MODELS: &str = "
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
    last_used_at INTEGER,
    embedding_max_tokens INTEGER,
    embedding_pooling TEXT
);
CREATE INDEX IF NOT EXISTS models_repo ON models(repo);
";

const COLUMNS: &str = "name, repo, revision, commit_sha, path, format, architecture, quantization, parameter_count, \
    size_bytes, context_length, embedding_dim, recommended_memory_bytes, source, created_at, updated_at, last_used_at, \
    embedding_max_tokens, embedding_pooling";

/// Columns added after the first release, for registries created before them.
const ADDED_COLUMNS: [(&str, &str); 2] = [("embedding_max_tokens", "INTEGER"), ("embedding_pooling", "TEXT")];

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
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
        embedding_max_tokens: row.get(17)?,
        embedding_pooling: row.get(18)?,
    })
}

impl Registry {
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self { conn: hearth_sqlite::open(path, &SCHEMA)? })
    }

    /// Inserts or replaces a record, keeping the original creation time.
    pub fn upsert(&mut self, r: &ModelRecord) -> Result<()> {
        let path = r.path.to_str().ok_or_else(|| StoreError::Invalid(format!("{}: path is not UTF-8", r.path.display())))?;
        // The write lock is taken up front (IMMEDIATE): a deferred transaction that has read
        // fails at once with "database is locked" when another connection wrote meanwhile.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let created: Option<i64> = tx.query_row("SELECT created_at FROM models WHERE name = ?1", [&r.name], |row| row.get(0)).optional()?;
        tx.execute(
            &format!("INSERT OR REPLACE INTO models ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
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
                r.embedding_max_tokens,
                r.embedding_pooling,
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
        self.query("WHERE repo = ?1 ORDER BY COALESCE(last_used_at, updated_at) DESC", &[&repo])
    }

    pub fn list(&self) -> Result<Vec<ModelRecord>> {
        self.query("ORDER BY name", &[])
    }

    fn query(&self, clause: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<ModelRecord>> {
        let mut stmt = self.conn.prepare(&format!("SELECT {COLUMNS} FROM models {clause}"))?;
        let rows = stmt.query_map(args, from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn touch(&self, name: &str) -> Result<()> {
        self.conn.execute("UPDATE models SET last_used_at = ?1 WHERE name = ?2", params![now(), name])?;
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM models WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_from_before_the_embedding_columns_gain_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        let old_schema = MODELS.replace(",\n    embedding_max_tokens INTEGER,\n    embedding_pooling TEXT", "");
        assert_ne!(old_schema, MODELS);
        Connection::open(&path).unwrap().execute_batch(&old_schema).unwrap();
        let mut reg = Registry::open(&path).unwrap();
        let record = ModelRecord {
            name: "minilm".into(),
            repo: "sentence-transformers/all-MiniLM-L6-v2".into(),
            revision: "main".into(),
            commit: "abc".into(),
            path: PathBuf::from("/models/minilm"),
            format: "safetensors".into(),
            architecture: Some("BertModel".into()),
            quantization: None,
            parameter_count: None,
            size_bytes: 1,
            context_length: Some(512),
            embedding_dim: Some(384),
            embedding_max_tokens: Some(256),
            embedding_pooling: Some("mean".into()),
            recommended_memory_bytes: 1,
            source: Source::Pulled,
            created_at: 1,
            updated_at: 1,
            last_used_at: None,
        };
        reg.upsert(&record).unwrap();
        drop(reg);
        let got = Registry::open(&path).unwrap().get("minilm").unwrap().unwrap();
        assert_eq!((got.embedding_max_tokens, got.embedding_pooling.as_deref()), (Some(256), Some("mean")));
    }

    #[test]
    fn a_registry_from_the_release_before_schema_versions_keeps_its_models() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE models (
                    name TEXT PRIMARY KEY, repo TEXT NOT NULL, revision TEXT NOT NULL, commit_sha TEXT NOT NULL, path TEXT NOT NULL,
                    format TEXT NOT NULL, architecture TEXT, quantization TEXT, parameter_count INTEGER, size_bytes INTEGER NOT NULL,
                    context_length INTEGER, embedding_dim INTEGER, recommended_memory_bytes INTEGER NOT NULL, source TEXT NOT NULL,
                    created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_used_at INTEGER, embedding_max_tokens INTEGER,
                    embedding_pooling TEXT);
                CREATE INDEX models_repo ON models(repo);
                INSERT INTO models VALUES ('smollm2', 'HuggingFaceTB/SmolLM2-135M-Instruct-GGUF', 'main', 'abc', '/m/smollm2.gguf',
                    'gguf', 'llama', 'Q4_1', 135000000, 100, 2048, NULL, 268435456, 'pulled', 1, 2, 3, NULL, NULL);",
            )
            .unwrap();
        let reg = Registry::open(&path).unwrap();
        let got = reg.get("smollm2").unwrap().unwrap();
        assert_eq!(
            (got.repo.as_str(), got.quantization.as_deref(), got.last_used_at),
            ("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", Some("Q4_1"), Some(3))
        );
        let version: i64 = reg.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA.version());
    }

    #[test]
    fn a_registry_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {}", SCHEMA.version() + 1)).unwrap();
        let err = Registry::open(&path).err().expect("refused");
        assert!(matches!(err, StoreError::Open(hearth_sqlite::OpenError::TooNew { .. })), "{err}");
        assert!(err.to_string().contains("the model registry has schema version 2"), "{err}");
    }
}

//! The hub's SQLite file: datasets, jobs (each a tracked run) and their metrics.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use hearth_sqlite::{Migration, Schema};
use rusqlite::Connection;

const SCHEMA: Schema = Schema {
    what: "the hub",
    migrations: &[
        Migration { name: "hub", apply: |tx| tx.execute_batch(TABLES) },
        Migration { name: "hub models", apply: |tx| tx.execute_batch(MODELS) },
    ],
};

const TABLES: &str = "
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    records INTEGER NOT NULL,
    train INTEGER NOT NULL,
    valid INTEGER NOT NULL,
    test INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    base_model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    iter INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    version INTEGER,
    export_path TEXT,
    registered TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    iter INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_job ON metrics (job, name, iter);
";

/// The models jobs produce: a name's description and tags (its versions are its completed
/// jobs); a job's optional fused export; versions deleted, whose runs stay on record.
const MODELS: &str = "
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
INSERT OR IGNORE INTO models (name, created_at, updated_at) SELECT name, MIN(created_at), MAX(created_at) FROM jobs GROUP BY name;
ALTER TABLE jobs ADD COLUMN fuse TEXT;
ALTER TABLE jobs ADD COLUMN fused_path TEXT;
ALTER TABLE jobs ADD COLUMN removed_at INTEGER;
";

pub struct Db(Mutex<Connection>);

impl Db {
    pub fn open(path: &Path) -> crate::Result<Db> {
        Ok(Db(Mutex::new(hearth_sqlite::open(path, &SCHEMA)?)))
    }

    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

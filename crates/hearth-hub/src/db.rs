//! The hub's SQLite file: datasets, jobs (each a tracked run) and their metrics.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use hearth_sqlite::{Migration, Schema};
use rusqlite::Connection;

const SCHEMA: Schema = Schema { what: "the hub", migrations: &[Migration { name: "hub", apply: |tx| tx.execute_batch(TABLES) }] };

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

pub struct Db(Mutex<Connection>);

impl Db {
    pub fn open(path: &Path) -> crate::Result<Db> {
        Ok(Db(Mutex::new(hearth_sqlite::open(path, &SCHEMA)?)))
    }

    pub fn conn(&self) -> MutexGuard<'_, Connection> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

//! The model hub: what turns a person's data into a model they can chat with.
//!
//! - [`datasets`]: JSONL uploads checked line by line, split into mlx-lm's
//!   `train/valid/test.jsonl`, with token statistics for a model.
//! - [`jobs`]: a queue of fine-tuning jobs, each a [`hearth_train::run::TrainSpec`] run on a
//!   worker thread; every job is a tracked run (parameters, per-step metrics, timing). Jobs
//!   survive a restart: one that was running resumes from its last checkpoint.
//! - [`export`]: a finished run's bundle (`adapters.safetensors`, `adapter_config.json`,
//!   `config.json`, `metadata.json` with hashes, and a fused model if asked for), written whole
//!   or not at all, and its loss curves as SVG; [`mlflow`]: a run in MLflow's file store.
//! - [`models`]: what the jobs of one name make: versions, description, tags; deleting one
//!   unregisters it and removes its bundles.
//!
//! Everything lives under one directory (`$HEARTH_HOME/hub`) and one SQLite file.

pub mod datasets;
mod db;
pub mod export;
pub mod jobs;
pub mod mlflow;
pub mod models;

pub use jobs::{FuseFormat, Hub, HubConfig, Job, JobEvent, JobRequest, JobStatus, Registrar, RunSummary};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The request is wrong (a 400).
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist (a 404).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (a 409).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Open(#[from] hearth_sqlite::OpenError),
    #[error("the hub's database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
}

pub type Result<T, E = HubError> = std::result::Result<T, E>;

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io { path: path.to_path_buf(), source }
}

/// Names of datasets and exported models: what a file name and a model id can both hold.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && !name.starts_with('.')
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Writes `bytes` to `path` through a temporary file in the same folder, synced, then renamed.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

//! A run in MLflow's file-store layout, for people who keep their own tracker:
//! `<mlruns>/<experiment id>/<run id>/` with `meta.yaml`, one file per metric
//! (`<ms> <value> <step>` lines), per parameter and per tag, and `artifacts/` (the bundle, the
//! log, the loss curves). Runs go into the store's `hearth-hub` experiment, made if missing.
//! `mlflow ui --backend-store-uri <mlruns>` and `MlflowClient` read it (MLflow 3 wants
//! `MLFLOW_ALLOW_FILE_STORE=true` for a file store, or `mlflow migrate-filestore` to move it
//! into a database); artifact locations are absolute `file://` URIs, as MLflow writes them, so
//! the store is read where it was written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::export::Metric;
use crate::jobs::JobStatus;
use crate::{export, io, now, write_atomically, Hub, HubError, Job, Result};

const EXPERIMENT: &str = "hearth-hub";

/// Where a run was written.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct MlflowRun {
    pub experiment_id: String,
    pub run_id: String,
    /// The run's folder.
    pub path: String,
}

#[derive(Serialize)]
struct ExperimentMeta {
    artifact_location: String,
    creation_time: i64,
    experiment_id: String,
    last_update_time: i64,
    lifecycle_stage: &'static str,
    name: String,
}

/// MLflow's `RunInfo` as its file store keeps it.
#[derive(Serialize)]
struct RunMeta {
    artifact_uri: String,
    end_time: Option<i64>,
    entry_point_name: &'static str,
    experiment_id: String,
    lifecycle_stage: &'static str,
    run_id: String,
    run_name: String,
    run_uuid: String,
    source_name: &'static str,
    source_type: i64,
    source_version: &'static str,
    start_time: i64,
    /// `RunStatus`: RUNNING 1, SCHEDULED 2, FINISHED 3, FAILED 4, KILLED 5.
    status: i64,
    tags: Vec<String>,
    user_id: &'static str,
}

fn yaml<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_yaml::to_string(value).map(String::into_bytes).map_err(|e| HubError::Invalid(e.to_string()))
}

fn file_uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The id of the store's `hearth-hub` experiment, made (with the next free number) if missing.
fn experiment(mlruns: &Path) -> Result<String> {
    std::fs::create_dir_all(mlruns).map_err(io(mlruns))?;
    let mut highest = 0u64;
    for entry in std::fs::read_dir(mlruns).map_err(io(mlruns))?.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let Ok(number) = id.parse::<u64>() else { continue };
        highest = highest.max(number);
        let meta = std::fs::read(entry.path().join("meta.yaml")).ok();
        let named: Option<BTreeMap<String, serde_yaml::Value>> = meta.and_then(|m| serde_yaml::from_slice(&m).ok());
        if named.and_then(|m| m.get("name").and_then(|n| n.as_str().map(str::to_string))).as_deref() == Some(EXPERIMENT) {
            return Ok(id);
        }
    }
    let id = (highest + 1).to_string();
    let dir = mlruns.join(&id);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ms = now() * 1000;
    let meta = ExperimentMeta {
        artifact_location: file_uri(&dir),
        creation_time: ms,
        experiment_id: id.clone(),
        last_update_time: ms,
        lifecycle_stage: "active",
        name: EXPERIMENT.into(),
    };
    write_atomically(&dir.join("meta.yaml"), &yaml(&meta)?)?;
    Ok(id)
}

/// Writes `job`'s run into the store at `mlruns` (an absolute path), replacing an earlier
/// export of it; `artifacts` are copied under `artifacts/` by the names given.
pub fn write_run(mlruns: &Path, job: &Job, metrics: &[Metric], artifacts: &[(String, PathBuf)]) -> Result<MlflowRun> {
    let experiment_id = experiment(mlruns)?;
    let experiment_dir = mlruns.join(&experiment_id);
    let run_dir = experiment_dir.join(&job.id);
    let staging = experiment_dir.join(format!(".{}.partial", job.id));
    let _ = std::fs::remove_dir_all(&staging);
    let written = write_run_files(&staging, &run_dir, &experiment_id, job, metrics, artifacts);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let old = experiment_dir.join(format!(".{}.replaced", job.id));
    if run_dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&run_dir, &old).map_err(io(&run_dir))?;
    }
    std::fs::rename(&staging, &run_dir).map_err(io(&run_dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(MlflowRun { experiment_id, run_id: job.id.clone(), path: run_dir.display().to_string() })
}

fn write_run_files(
    dir: &Path,
    final_dir: &Path,
    experiment_id: &str,
    job: &Job,
    metrics: &[Metric],
    artifacts: &[(String, PathBuf)],
) -> Result<()> {
    for sub in ["metrics", "params", "tags", "artifacts"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io(dir))?;
    }
    let started = job.started_at.unwrap_or(job.created_at);
    let meta = RunMeta {
        artifact_uri: file_uri(&final_dir.join("artifacts")),
        end_time: job.finished_at.map(|t| t * 1000),
        entry_point_name: "",
        experiment_id: experiment_id.to_string(),
        lifecycle_stage: "active",
        run_id: job.id.clone(),
        run_name: job.name.clone(),
        run_uuid: job.id.clone(),
        source_name: "",
        // SourceType.LOCAL
        source_type: 4,
        source_version: "",
        start_time: started * 1000,
        status: match job.status {
            JobStatus::Running => 1,
            JobStatus::Queued => 2,
            JobStatus::Completed => 3,
            JobStatus::Failed => 4,
            JobStatus::Cancelled => 5,
        },
        tags: Vec::new(),
        user_id: "hearth",
    };
    put(&dir.join("meta.yaml"), &yaml(&meta)?)?;

    // A metric's lines in the order taken; its time is the run's start plus its offset.
    let mut series: BTreeMap<&str, String> = BTreeMap::new();
    for m in metrics.iter().filter(|m| m.value.is_finite()) {
        let ms = started * 1000 + (m.at * 1000.0) as i64;
        series.entry(m.name.as_str()).or_default().push_str(&format!("{ms} {} {}\n", m.value, m.iter));
    }
    for (name, lines) in series {
        put(&dir.join("metrics").join(name), lines.as_bytes())?;
    }

    let mut params: BTreeMap<String, String> = BTreeMap::new();
    if let Value::Object(p) = &job.parameters {
        for (k, v) in p {
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), text);
        }
    }
    params.insert("base_model".into(), job.base_model.clone());
    params.insert("dataset".into(), job.dataset.clone());
    for (k, v) in params {
        put(&dir.join("params").join(k), v.as_bytes())?;
    }

    let mut tags = vec![
        ("mlflow.runName", job.name.clone()),
        ("mlflow.user", "hearth".to_string()),
        ("mlflow.source.name", "hearth-hub".to_string()),
        ("mlflow.source.type", "LOCAL".to_string()),
        ("hearth.status", serde_json::to_value(job.status).ok().and_then(|s| s.as_str().map(str::to_string)).unwrap_or_default()),
    ];
    if let Some(v) = job.version {
        tags.push(("hearth.model", format!("{}@{v}", job.name)));
    }
    if let Some(e) = &job.error {
        tags.push(("hearth.error", e.clone()));
    }
    for (k, v) in tags {
        put(&dir.join("tags").join(k), v.as_bytes())?;
    }

    for (name, from) in artifacts {
        let to = dir.join("artifacts").join(name);
        std::fs::copy(from, &to).map_err(io(from))?;
    }
    Ok(())
}

/// Writes into the run's staging folder (the folder is renamed into place once whole).
fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(io(path))
}

impl Hub {
    /// Writes run `id` into the MLflow file store at `mlruns` (absolute), with its bundle, log
    /// and loss curves as artifacts.
    pub fn export_mlflow(&self, id: &str, mlruns: &Path) -> Result<MlflowRun> {
        if !mlruns.is_absolute() {
            return Err(HubError::Invalid("an MLflow store's path must be absolute".into()));
        }
        let job = self.job(id)?;
        let metrics = self.metrics(id)?;
        let dir = self.job_dir(id);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let curves = dir.join("loss.svg");
        write_atomically(&curves, export::loss_svg(&[(&job.name, &metrics)]).as_bytes())?;
        let mut artifacts = vec![("loss.svg".to_string(), curves)];
        let log = self.job_dir(id).join("log.txt");
        if log.is_file() {
            artifacts.push(("log.txt".into(), log));
        }
        if let Some(bundle) = &job.export_path {
            for file in ["adapters.safetensors", "adapter_config.json", "config.json", "metadata.json"] {
                artifacts.push((file.into(), Path::new(bundle).join(file)));
            }
        }
        write_run(mlruns, &job, &metrics, &artifacts)
    }
}

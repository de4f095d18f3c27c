//! Training jobs: a queue in the database, worked by threads that run each job's
//! [`TrainSpec`] with `hearth_train`, recording its metrics and telling subscribers as it goes;
//! when a job finishes, its bundle is exported and handed to the [`Registrar`].
//!
//! A job's adapter directory keeps `hearth train`'s checkpoints and every job runs with
//! `resume`, so a job that was running when the server stopped (or was killed) continues from
//! its last checkpoint when the hub opens again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hearth_train::run::TrainSpec;
use hearth_train::trainer::Event;
use hearth_train::TrainError;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::datasets::Datasets;
use crate::db::Db;
use crate::export::{self, Metric};
use crate::{now, valid_name, HubError, Result};

#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Where the database, datasets and jobs' files live.
    pub dir: PathBuf,
    /// Where finished jobs' bundles are written (`<name>/v<version>/`).
    pub exports_dir: PathBuf,
    /// Jobs that train at once.
    pub workers: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> JobStatus {
        match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "cancelled" => JobStatus::Cancelled,
            _ => JobStatus::Failed,
        }
    }

    pub fn is_over(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

/// A training job, which is also its tracked run.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// Also the run's id.
    pub id: String,
    /// What the result is registered as (`name`, and `name@version`).
    pub name: String,
    pub base_model: String,
    pub dataset: String,
    pub status: JobStatus,
    pub error: Option<String>,
    /// Iterations done, of `iters`.
    pub iter: usize,
    pub iters: usize,
    /// Unix seconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// 1 for the first completed job of this name, 2 for the next, ….
    pub version: Option<i64>,
    /// The export bundle, once completed.
    pub export_path: Option<String>,
    /// The model ids it was registered as.
    pub registered: Vec<String>,
    /// For a queued job: 1 if it runs next.
    pub queue_position: Option<usize>,
    /// `hearth train`'s settings, as run (mlx_lm.lora's names).
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// The fused model asked for beside the adapter.
    pub fuse: Option<FuseFormat>,
    pub fused_path: Option<String>,
    /// When its model version was deleted (the run stays on record).
    pub removed_at: Option<i64>,
}

/// A fused copy of a job's result (the adapter merged into the base, as `hearth fuse` writes
/// it), kept in the bundle: `fused/` (MLX, keeping an MLX-quantised base's quantisation; or a
/// Hugging Face float directory) or `fused.gguf` (a GGUF base's types, F16 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FuseFormat {
    Mlx,
    Hf,
    Gguf,
}

impl FuseFormat {
    fn as_str(self) -> &'static str {
        match self {
            FuseFormat::Mlx => "mlx",
            FuseFormat::Hf => "hf",
            FuseFormat::Gguf => "gguf",
        }
    }

    fn parse(s: &str) -> Option<FuseFormat> {
        [FuseFormat::Mlx, FuseFormat::Hf, FuseFormat::Gguf].into_iter().find(|f| f.as_str() == s)
    }

    /// Writes `base` with the adapter in `adapters` merged into `dir`; returns the file or
    /// folder name it wrote there.
    fn write(self, base: &Path, adapters: &Path, dir: &Path) -> Result<&'static str> {
        let adapter = Some(adapters.to_path_buf());
        let out = match self {
            FuseFormat::Gguf => "fused.gguf",
            _ => "fused",
        };
        let target = dir.join(out);
        let written = match self {
            FuseFormat::Mlx => hearth_convert::to_mlx(base, &target, &hearth_convert::MlxOptions { adapter, ..Default::default() }),
            FuseFormat::Hf => hearth_convert::to_hf(base, &target, &hearth_convert::MlxOptions { adapter, ..Default::default() }),
            FuseFormat::Gguf => hearth_convert::to_gguf(base, &target, &hearth_convert::GgufOptions { adapter, ..Default::default() }),
        };
        written.map_err(|e| HubError::Invalid(format!("fusing the adapter into {}: {e}", base.display())))?;
        Ok(out)
    }
}

/// A run with the last value of each of its metrics, for listing and comparing runs.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RunSummary {
    #[serde(flatten)]
    pub job: Job,
    /// Each metric's last value (`train_loss`, `val_loss`, `tokens_per_sec`, …).
    pub last: BTreeMap<String, f64>,
    /// From start to end (to now while it runs).
    pub duration_secs: Option<i64>,
}

/// What a new job needs; `model_path` is the base model's files, resolved by the caller from
/// `base_model`, the id its result is registered on.
pub struct JobRequest {
    pub name: String,
    pub base_model: String,
    pub model_path: PathBuf,
    pub dataset: String,
    pub spec: TrainSpec,
    pub fuse: Option<FuseFormat>,
    /// The model's description and tags, replacing what it had when given.
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// A completed job's bundle, for registration.
pub struct Finished {
    /// `name@version`, then `name` (the latest version).
    pub names: Vec<String>,
    pub base_model: String,
    pub bundle: PathBuf,
    pub run_id: String,
    pub metadata: Value,
}

/// Makes a completed job's bundle a servable model (the server registers it as
/// `POST /admin/models` does), and a deleted one no longer servable.
pub trait Registrar: Send + Sync {
    /// Registers the bundle under `finished.names`; returns the ids it registered.
    fn register(&self, finished: &Finished) -> std::result::Result<Vec<String>, String>;
    /// Removes the hub's registrations of `names` (not those someone else made).
    fn unregister(&self, names: &[String]) -> std::result::Result<(), String>;
}

/// What subscribers hear about a job.
#[derive(Clone, Debug, Serialize)]
pub struct JobEvent {
    pub job: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Status {
        status: JobStatus,
        error: Option<String>,
    },
    /// After every iteration.
    Progress {
        iter: usize,
        iters: usize,
        loss: f32,
        trained_tokens: usize,
        tokens_per_sec: f64,
        eta_secs: f64,
    },
    /// A recorded metric (`train_loss`, `val_loss`, `learning_rate`, `tokens_per_sec`,
    /// `peak_memory_bytes`, `test_loss`).
    Metric {
        iter: usize,
        name: String,
        value: f64,
    },
    Log {
        line: String,
    },
}

pub(crate) const JOB_COLUMNS: &str =
    "id, name, base_model, dataset, spec, status, error, iter, created_at, started_at, finished_at, version, \
     export_path, registered, seq, fuse, fused_path, removed_at";

pub(crate) fn job_from_row(r: &Row<'_>) -> rusqlite::Result<(Job, i64)> {
    let spec: String = r.get(4)?;
    let parameters: Value = serde_json::from_str(&spec).unwrap_or(Value::Null);
    let registered: Option<String> = r.get(13)?;
    Ok((
        Job {
            id: r.get(0)?,
            name: r.get(1)?,
            base_model: r.get(2)?,
            dataset: r.get(3)?,
            status: JobStatus::parse(&r.get::<_, String>(5)?),
            error: r.get(6)?,
            iter: r.get::<_, i64>(7)? as usize,
            iters: parameters["iters"].as_u64().unwrap_or(0) as usize,
            created_at: r.get(8)?,
            started_at: r.get(9)?,
            finished_at: r.get(10)?,
            version: r.get(11)?,
            export_path: r.get(12)?,
            registered: registered.map(|s| serde_json::from_str(&s).unwrap_or_default()).unwrap_or_default(),
            queue_position: None,
            parameters,
            fuse: r.get::<_, Option<String>>(15)?.as_deref().and_then(FuseFormat::parse),
            fused_path: r.get(16)?,
            removed_at: r.get(17)?,
        },
        r.get(14)?,
    ))
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) cfg: HubConfig,
    events: broadcast::Sender<JobEvent>,
    /// Woken when a job is queued or the hub shuts down.
    wake: (Mutex<()>, Condvar),
    /// The stop flag of each running job.
    stops: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Running jobs asked to cancel (rather than to pause for a shutdown).
    cancelled: Mutex<HashSet<String>>,
    closing: AtomicBool,
    pub(crate) registrar: Mutex<Option<Arc<dyn Registrar>>>,
    /// What training waits on between blocks (the server's inference, see [`Hub::start`]).
    yield_to: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

impl Hub {
    /// Opens (or creates) the hub in `cfg.dir`.
    pub fn open(cfg: HubConfig) -> Result<Hub> {
        for dir in [cfg.dir.join("datasets"), cfg.dir.join("jobs")] {
            std::fs::create_dir_all(&dir).map_err(crate::io(&dir))?;
        }
        let db = Db::open(&cfg.dir.join("hub.db"))?;
        let inner = Inner {
            db,
            cfg,
            events: broadcast::channel(1024).0,
            wake: (Mutex::new(()), Condvar::new()),
            stops: Mutex::default(),
            cancelled: Mutex::default(),
            closing: AtomicBool::new(false),
            registrar: Mutex::new(None),
            yield_to: Mutex::new(None),
        };
        Ok(Hub { inner: Arc::new(inner) })
    }

    /// Starts the workers (in the one process that runs the queue); finished jobs are
    /// registered through `registrar`, if one is given. Jobs that were running when the
    /// process stopped are queued again, ahead of the rest (the queue is in submission order),
    /// and resume from their checkpoints.
    /// `yield_to` runs before each block of every training pass and returns when training may
    /// go on: the server waits there while it has requests to serve.
    pub fn start(&self, registrar: Option<Arc<dyn Registrar>>, yield_to: Option<Arc<dyn Fn() + Send + Sync>>) -> Result<()> {
        *self.inner.yield_to.lock().unwrap_or_else(|p| p.into_inner()) = yield_to;
        let resumed = self.inner.db.conn().execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'", [])?;
        if resumed > 0 {
            tracing::info!(jobs = resumed, "training jobs interrupted by a restart resume from their checkpoints");
        }
        *self.inner.registrar.lock().unwrap_or_else(|p| p.into_inner()) = registrar;
        for i in 0..self.inner.cfg.workers.max(1) {
            let hub = self.clone();
            let spawned = std::thread::Builder::new().name(format!("hub-train-{i}")).spawn(move || hub.work());
            if let Err(e) = spawned {
                tracing::error!("starting a training worker failed: {e}");
            }
        }
        Ok(())
    }

    /// Stops the running jobs after their current iteration, each with a checkpoint saved;
    /// they stay `running` in the database and resume when the hub opens again.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Relaxed);
        for stop in self.inner.stops.lock().unwrap_or_else(|p| p.into_inner()).values() {
            stop.store(true, Ordering::Relaxed);
        }
        self.inner.wake.1.notify_all();
    }

    pub fn datasets(&self) -> Datasets<'_> {
        Datasets { db: &self.inner.db, dir: self.inner.cfg.dir.join("datasets") }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    fn tell(&self, job: &str, kind: EventKind) {
        let _ = self.inner.events.send(JobEvent { job: job.to_string(), kind });
    }

    pub(crate) fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.cfg.dir.join("jobs").join(id)
    }

    /// Queues a job after checking everything that can be checked before it runs.
    pub fn submit(&self, req: JobRequest) -> Result<Job> {
        let JobRequest { name, base_model, model_path, dataset, mut spec, fuse, description, tags } = req;
        if !valid_name(&name) {
            return Err(HubError::Invalid(format!("`{name}` is not a valid model name: 1-64 letters, digits and `._-`")));
        }
        crate::models::check_labels(description.as_deref(), tags.as_deref())?;
        let found = self.datasets().get(&dataset)?;
        if found.train == 0 {
            return Err(HubError::Invalid(format!("the dataset `{dataset}` has no training records")));
        }
        if spec.iters == 0 {
            return Err(HubError::Invalid("`iters` must be at least 1".into()));
        }
        if spec.resume_adapter_file.is_some() {
            return Err(HubError::Invalid("`resume_adapter_file` is not a hub job's setting".into()));
        }
        // The bundle holds mlx-lm's layout, and the server serves LoRA beside its base: anything
        // else would only fail once trained.
        if spec.format != hearth_train::AdapterFormat::Mlx {
            return Err(HubError::Invalid("`format`: the hub exports mlx-lm's layout; convert with hearth train --format".into()));
        }
        if spec.fine_tune_type != hearth_train::run::FineTuneType::Lora {
            return Err(HubError::Invalid(
                "`fine_tune_type`: hub jobs train LoRA, which is served beside its base (DoRA is fused: hearth train)".into(),
            ));
        }
        let id = format!("run-{:x}{:04x}", now(), rand_suffix());
        spec.model = model_path.display().to_string();
        spec.data = self.datasets().path(&dataset);
        spec.adapter_path = self.job_dir(&id).join("adapters");
        // Every job continues from its checkpoint if it has one: that is how a restart resumes it.
        spec.resume = true;
        spec.test = spec.test && found.test > 0;
        spec.check().and_then(|_| spec.check_model(&model_path)).map_err(|e| HubError::Invalid(e.to_string()))?;
        let parameters = serde_json::to_string(&spec).map_err(|e| HubError::Invalid(e.to_string()))?;
        {
            let conn = self.inner.db.conn();
            let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", [], |r| r.get(0))?;
            conn.execute(
                "INSERT INTO jobs (id, seq, name, base_model, dataset, spec, status, created_at, fuse) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8)",
                params![id, seq, name, base_model, dataset, parameters, now(), fuse.map(FuseFormat::as_str)],
            )?;
            crate::models::note(&conn, &name, description.as_deref(), tags.as_deref())?;
        }
        self.tell(&id, EventKind::Status { status: JobStatus::Queued, error: None });
        self.inner.wake.1.notify_all();
        self.job(&id)
    }

    pub fn jobs(&self) -> Result<Vec<Job>> {
        let rows: Vec<(Job, i64)> = {
            let conn = self.inner.db.conn();
            let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY seq"))?;
            let rows = stmt.query_map([], job_from_row)?.collect::<rusqlite::Result<_>>()?;
            rows
        };
        let mut position = 0;
        Ok(rows
            .into_iter()
            .map(|(mut job, _)| {
                if job.status == JobStatus::Queued {
                    position += 1;
                    job.queue_position = Some(position);
                }
                job
            })
            .collect())
    }

    pub fn job(&self, id: &str) -> Result<Job> {
        self.jobs()?.into_iter().find(|j| j.id == id).ok_or_else(|| HubError::NotFound(format!("no training job `{id}`")))
    }

    /// Cancels a queued job, or stops a running one after its current iteration.
    pub fn cancel(&self, id: &str) -> Result<Job> {
        let job = self.job(id)?;
        match job.status {
            JobStatus::Queued => {
                self.finish(id, JobStatus::Cancelled, None)?;
            }
            JobStatus::Running => {
                self.inner.cancelled.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
                if let Some(stop) = self.inner.stops.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            _ => return Err(HubError::Conflict(format!("the job `{id}` is already {}", job.status.as_str()))),
        }
        self.job(id)
    }

    /// A job's recorded metrics, in the order they were taken.
    pub fn metrics(&self, id: &str) -> Result<Vec<Metric>> {
        self.job(id)?;
        let conn = self.inner.db.conn();
        let mut stmt = conn.prepare("SELECT iter, name, value, at FROM metrics WHERE job = ?1 ORDER BY rowid")?;
        let rows = stmt
            .query_map([id], |r| Ok(Metric { iter: r.get::<_, i64>(0)? as usize, name: r.get(1)?, value: r.get(2)?, at: r.get(3)? }))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// Runs (all, or those named in `ids`, in that order) with their metrics' last values.
    pub fn runs(&self, ids: &[String]) -> Result<Vec<RunSummary>> {
        let jobs = self.jobs()?;
        let chosen: Vec<Job> = if ids.is_empty() {
            jobs
        } else {
            ids.iter()
                .map(|id| jobs.iter().find(|j| &j.id == id).cloned().ok_or_else(|| HubError::NotFound(format!("no run `{id}`"))))
                .collect::<Result<_>>()?
        };
        chosen
            .into_iter()
            .map(|job| {
                let last = self.last_metrics(&job.id)?;
                let end = job.finished_at.or(job.started_at.map(|_| now()));
                let duration_secs = job.started_at.zip(end).map(|(s, e)| e - s);
                Ok(RunSummary { job, last, duration_secs })
            })
            .collect()
    }

    /// The job's log: `hearth train`'s output lines.
    pub fn log(&self, id: &str) -> Result<String> {
        self.job(id)?;
        Ok(std::fs::read_to_string(self.job_dir(id).join("log.txt")).unwrap_or_default())
    }

    fn finish(&self, id: &str, status: JobStatus, error: Option<String>) -> Result<()> {
        self.inner.db.conn().execute(
            "UPDATE jobs SET status = ?2, error = ?3, finished_at = ?4 WHERE id = ?1",
            params![id, status.as_str(), error, now()],
        )?;
        self.tell(id, EventKind::Status { status, error });
        Ok(())
    }

    /// Takes the next queued job, marking it running.
    fn claim(&self) -> Result<Option<Job>> {
        let id: Option<String> = {
            let conn = self.inner.db.conn();
            let id = conn.query_row("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1", [], |r| r.get(0)).optional()?;
            if let Some(id) = &id {
                conn.execute(
                    "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?2) WHERE id = ?1",
                    params![id, now()],
                )?;
            }
            id
        };
        match id {
            Some(id) => {
                self.tell(&id, EventKind::Status { status: JobStatus::Running, error: None });
                Ok(Some(self.job(&id)?))
            }
            None => Ok(None),
        }
    }

    fn work(&self) {
        let inner = &self.inner;
        while !inner.closing.load(Ordering::Relaxed) {
            // Claims go one at a time, so two workers never take the same job.
            let claimed = {
                let _one = inner.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                self.claim()
            };
            match claimed {
                Ok(Some(job)) => self.run(job),
                Ok(None) => {
                    let guard = inner.wake.0.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = inner.wake.1.wait_timeout(guard, Duration::from_millis(500));
                }
                Err(e) => {
                    tracing::error!("the training queue: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn run(&self, job: Job) {
        let id = job.id.clone();
        let stop = Arc::new(AtomicBool::new(self.inner.closing.load(Ordering::Relaxed)));
        self.inner.stops.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), stop.clone());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train(&job, stop)));
        self.inner.stops.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let cancelled = self.inner.cancelled.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let done = match outcome {
            Ok(Ok(true)) => self.complete(&job),
            Ok(Ok(false)) => {
                if cancelled {
                    self.finish(&id, JobStatus::Cancelled, None)
                } else {
                    // Paused for a shutdown: it stays running, to resume at the next start.
                    Ok(())
                }
            }
            Ok(Err(e)) => self.finish(&id, JobStatus::Failed, Some(e.to_string())),
            Err(_) => self.finish(&id, JobStatus::Failed, Some("training stopped with an internal error (a panic)".into())),
        };
        if let Err(e) = done {
            tracing::error!(job = id, "recording the job's end failed: {e}");
        }
    }

    /// Runs the job's training; `false` if it stopped before the end (cancelled or paused).
    fn train(&self, job: &Job, stop: Arc<AtomicBool>) -> Result<bool> {
        let spec: TrainSpec = serde_json::from_value(job.parameters.clone()).map_err(|e| HubError::Invalid(e.to_string()))?;
        let dir = self.job_dir(&job.id);
        std::fs::create_dir_all(&dir).map_err(crate::io(&dir))?;
        let log_path = dir.join("log.txt");
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(crate::io(&log_path))?;
        let started = Instant::now();
        let mut first: Option<(usize, Instant)> = None;
        let db = &self.inner.db;
        let mut on_event = |event: Event| {
            use std::io::Write;
            if let Some(text) = event.line() {
                let _ = writeln!(log, "{text}");
                self.tell(&job.id, EventKind::Log { line: text });
            }
            let metric = |iter: usize, name: &str, value: f64| {
                let at = started.elapsed().as_secs_f64();
                let stored = db.conn().execute(
                    "INSERT INTO metrics (job, iter, name, value, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![job.id, iter as i64, name, value, at],
                );
                if let Err(e) = stored {
                    tracing::warn!(job = job.id, "recording a metric failed: {e}");
                }
                self.tell(&job.id, EventKind::Metric { iter, name: name.into(), value });
            };
            match event {
                Event::Iteration { iter, of, loss, trained_tokens } => {
                    let (from, at) = *first.get_or_insert((iter.saturating_sub(1), Instant::now()));
                    let secs = at.elapsed().as_secs_f64().max(1e-9);
                    let per_iter = secs / (iter - from).max(1) as f64;
                    let _ = db.conn().execute("UPDATE jobs SET iter = ?2 WHERE id = ?1", params![job.id, iter as i64]);
                    let tokens_per_sec = if iter > from + 1 { trained_tokens as f64 / started.elapsed().as_secs_f64() } else { 0.0 };
                    let progress = EventKind::Progress {
                        iter,
                        iters: of,
                        loss,
                        trained_tokens,
                        tokens_per_sec,
                        eta_secs: per_iter * (of - iter) as f64,
                    };
                    self.tell(&job.id, progress);
                }
                Event::Report { iter, loss, learning_rate, tokens_per_sec, .. } => {
                    metric(iter, "train_loss", loss as f64);
                    metric(iter, "learning_rate", learning_rate as f64);
                    metric(iter, "tokens_per_sec", tokens_per_sec);
                    metric(iter, "peak_memory_bytes", hearth_train::peak_rss_bytes().unwrap_or(0) as f64);
                }
                Event::Validation { iter, loss, .. } => metric(iter, "val_loss", loss as f64),
                Event::Tested { loss } => metric(job.iter.max(spec.iters), "test_loss", loss as f64),
                Event::Saved { .. } | Event::Note(_) => {}
            }
        };
        let yield_to = self.inner.yield_to.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let controls = hearth_train::run::Controls { stop: Some(stop), yield_to };
        match hearth_train::run::run(&spec, Path::new(&spec.model), &mut on_event, controls) {
            Ok(()) => Ok(true),
            Err(TrainError::Stopped { .. }) => Ok(false),
            Err(e) => Err(HubError::Invalid(e.to_string())),
        }
    }

    /// Exports the bundle of a job that trained to the end, registers it, marks it completed.
    fn complete(&self, job: &Job) -> Result<()> {
        let spec: TrainSpec = serde_json::from_value(job.parameters.clone()).map_err(|e| HubError::Invalid(e.to_string()))?;
        let version: i64 = self.inner.db.conn().query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM jobs WHERE name = ?1 AND version IS NOT NULL",
            [&job.name],
            |r| r.get(0),
        )?;
        let metrics = self.metrics(&job.id)?;
        let last = |name: &str| metrics.iter().rev().find(|m| m.name == name).map(|m| m.value);
        let metadata = json!({
            "name": format!("{}@{version}", job.name),
            "base_model": job.base_model,
            "dataset": job.dataset,
            "run_id": job.id,
            "version": version,
            "metrics": {"train_loss": last("train_loss"), "val_loss": last("val_loss"), "test_loss": last("test_loss")},
            "created_at": now(),
        });
        let bundle = self.inner.cfg.exports_dir.join(&job.name).join(format!("v{version}"));
        let fuse = job.fuse.map(|format| move |staging: &Path| format.write(Path::new(&spec.model), staging, staging));
        let metadata = export::write_bundle(&spec.adapter_path, &job.parameters, metadata, &bundle, fuse)?;
        let fused_path = metadata["fused"].as_str().map(|f| bundle.join(f).display().to_string());
        self.inner.db.conn().execute(
            "UPDATE jobs SET version = ?2, export_path = ?3, fused_path = ?4 WHERE id = ?1",
            params![job.id, version, bundle.display().to_string(), fused_path],
        )?;
        let registrar = self.inner.registrar.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(registrar) = registrar {
            let finished = Finished {
                names: vec![format!("{}@{version}", job.name), job.name.clone()],
                base_model: job.base_model.clone(),
                bundle: bundle.clone(),
                run_id: job.id.clone(),
                metadata,
            };
            match registrar.register(&finished) {
                Ok(names) => {
                    let versioned: Vec<&String> = names.iter().filter(|n| **n != job.name).collect();
                    let versioned = serde_json::to_string(&versioned).unwrap_or_default();
                    self.inner.db.conn().execute("UPDATE jobs SET registered = ?2 WHERE id = ?1", params![job.id, versioned])?;
                    if names.contains(&job.name) {
                        self.alias_moved(&job.name, &job.id)?;
                    }
                }
                Err(e) => return self.finish(&job.id, JobStatus::Failed, Some(format!("the bundle was exported but not registered: {e}"))),
            }
        }
        // Checkpoints are for resuming; the bundle keeps the result.
        let _ = std::fs::remove_dir_all(spec.adapter_path.join("checkpoint"));
        self.finish(&job.id, JobStatus::Completed, None)
    }
}

/// A few random bits for job ids made in the same second.
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(now() as u64);
    h.finish() as u32 & 0xffff
}

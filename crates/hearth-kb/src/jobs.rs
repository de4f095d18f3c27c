//! Ingest jobs: recorded before they start and marked done when they end, so a process that
//! stops mid-job (crash, kill, restart) leaves a `running` job that the next one resumes.
//! Resuming is re-running: sources already written are unchanged and skipped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{IngestOptions, IngestReport, Kb, Progress, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub paths: Vec<PathBuf>,
    /// Also remove what the folder no longer holds (`hearth kb sync`).
    pub sync: bool,
    pub options: IngestOptions,
}

/// How often a running job records its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Whether the process that ran a job is gone (so the job will never finish by itself).
fn owner_gone(pid: u64) -> bool {
    if pid == u64::from(std::process::id()) {
        return false;
    }
    if cfg!(target_os = "linux") {
        !std::path::Path::new("/proc").join(pid.to_string()).exists()
    } else {
        // Without a cheap liveness check, a job is taken over once it stops reporting.
        true
    }
}

impl Kb {
    /// Records the job, runs it, and marks it done (or failed) with its report.
    pub fn run_job(&self, spec: &JobSpec, progress: &dyn Fn(Progress)) -> Result<(i64, IngestReport)> {
        let id = self.create_job(spec)?;
        let report = self.execute(id, spec, progress)?;
        Ok((id, report))
    }

    /// Records a job to [`Kb::execute`] later (a server answers with its id at once).
    pub fn create_job(&self, spec: &JobSpec) -> Result<i64> {
        self.store.create_job(if spec.sync { "sync" } else { "ingest" }, &serde_json::to_value(spec).unwrap_or_default())
    }

    /// Runs the recorded job `id`, its progress saved about every second.
    pub fn execute(&self, id: i64, spec: &JobSpec, progress: &dyn Fn(Progress)) -> Result<IngestReport> {
        let pid = std::process::id();
        let last = std::cell::Cell::new(Instant::now());
        let record = |p: Progress| {
            progress(p);
            if last.get().elapsed() >= PROGRESS_EVERY || p.done == p.total {
                last.set(Instant::now());
                // Progress is advisory: a failed write must not stop the ingest.
                let _ = self.store.update_job(id, "running", &json!({"pid": pid, "progress": p}));
            }
        };
        self.store.update_job(id, "running", &json!({"pid": pid}))?;
        let mut total = IngestReport::default();
        let result = spec.paths.iter().try_for_each(|path| -> Result<()> {
            let report = if spec.sync { self.sync(path, &spec.options, &record)? } else { self.ingest_paths(std::slice::from_ref(path), &spec.options, &record)? };
            merge(&mut total, report);
            Ok(())
        });
        match result {
            Ok(()) => {
                self.store.update_job(id, "done", &serde_json::to_value(&total).unwrap_or_default())?;
                Ok(total)
            }
            Err(e) => {
                self.store.update_job(id, "failed", &json!({"error": e.to_string()}))?;
                Err(e)
            }
        }
    }

    /// Runs again every job left `running` by a process that is gone.
    pub fn resume_jobs(&self, progress: &dyn Fn(Progress)) -> Result<Vec<(i64, IngestReport)>> {
        let mut resumed = Vec::new();
        for job in self.store.jobs(Some("running"))? {
            let pid = job.report.get("pid").and_then(|p| p.as_u64());
            if pid.is_some_and(|p| !owner_gone(p)) {
                continue;
            }
            let Ok(spec) = serde_json::from_value::<JobSpec>(job.spec.clone()) else {
                self.store.update_job(job.id, "failed", &json!({"error": "unreadable job spec"}))?;
                continue;
            };
            resumed.push((job.id, self.execute(job.id, &spec, progress)?));
        }
        Ok(resumed)
    }
}

fn merge(total: &mut IngestReport, r: IngestReport) {
    total.sources += r.sources;
    total.added += r.added;
    total.updated += r.updated;
    total.unchanged += r.unchanged;
    total.deleted += r.deleted;
    total.documents += r.documents;
    total.chunks += r.chunks;
    total.chunks_embedded += r.chunks_embedded;
    total.chunks_reused += r.chunks_reused;
    total.errors.extend(r.errors);
    total.seconds += r.seconds;
    total.document_ids.extend(r.document_ids);
}

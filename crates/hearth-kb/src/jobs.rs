//! Ingest jobs: recorded before they start and marked done when they end, so a process that
//! stops mid-job (crash, kill, restart) leaves a `running` job that the next one resumes.
//! Resuming is re-running: sources already written are unchanged and skipped.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::path::PathBuf;
use std::sync::OnceLock;
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

/// This process as the owner of the jobs it runs. A process id alone would not do: a restarted
/// container's process gets the same one (PID 1) and would never resume the jobs its
/// predecessor left. Where Linux tells anyone a process's boot and start time, those complete
/// the id; elsewhere a random token does, and only the process itself can vouch for its jobs.
fn this_process() -> &'static str {
    static IDENTITY: OnceLock<String> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let pid = std::process::id();
        process_identity(pid).unwrap_or_else(|| format!("{pid}/{:016x}", RandomState::new().build_hasher().finish()))
    })
}

/// `boot/pid/start` for a running process (start in clock ticks since boot); `None` if it is
/// gone or the system does not say.
fn process_identity(pid: u32) -> Option<String> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing one, from the state (field 3) to the start time (field 22).
    let started = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{}/{pid}/{started}", boot.trim()))
}

/// What a running job's record says: who runs it, and how far it got.
fn running(progress: Option<Progress>) -> serde_json::Value {
    json!({"pid": std::process::id(), "owner": this_process(), "progress": progress})
}

/// Whether the process recorded as running a job still runs (so the job will finish by itself).
fn owner_alive(report: &serde_json::Value) -> bool {
    let Some(owner) = report.get("owner").and_then(|o| o.as_str()) else { return false };
    let pid = report.get("pid").and_then(|p| p.as_u64()).and_then(|p| u32::try_from(p).ok());
    owner == this_process() || pid.and_then(process_identity).as_deref() == Some(owner)
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
        self.store.create_job(if spec.sync { "sync" } else { "ingest" }, &serde_json::to_value(spec).unwrap_or_default(), &running(None))
    }

    /// Runs the recorded job `id`, its progress saved about every second; a finished job's
    /// report shows every source done.
    pub fn execute(&self, id: i64, spec: &JobSpec, progress: &dyn Fn(Progress)) -> Result<IngestReport> {
        let last = std::cell::Cell::new(Instant::now());
        let record = |p: Progress| {
            progress(p);
            if last.get().elapsed() >= PROGRESS_EVERY || p.done == p.total {
                last.set(Instant::now());
                // Progress is advisory: a failed write must not stop the ingest.
                let _ = self.store.update_job(id, "running", &running(Some(p)));
            }
        };
        self.store.update_job(id, "running", &running(None))?;
        let mut total = IngestReport::default();
        let result = spec.paths.iter().try_for_each(|path| -> Result<()> {
            let report = if spec.sync {
                self.sync(path, &spec.options, &record)?
            } else {
                self.ingest_paths(std::slice::from_ref(path), &spec.options, &record)?
            };
            merge(&mut total, report);
            Ok(())
        });
        match result {
            Ok(()) => {
                let mut report = serde_json::to_value(&total).unwrap_or_default();
                report["progress"] = json!(Progress { done: total.sources, total: total.sources, chunks: total.chunks });
                self.store.update_job(id, "done", &report)?;
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
            if owner_alive(&job.report) {
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

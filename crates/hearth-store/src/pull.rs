//! What a pull asks for, what it reports, and which of a repo's files it fetches.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::cache::{refuse_symlink, RepoDir};
use crate::download::fetch_blob;
use crate::hub::{Hub, RemoteFile};
use crate::name::ModelSpec;
use crate::{Result, StoreError};

/// A pull: which model, and which of its files.
#[derive(Clone, Debug)]
pub struct PullRequest {
    pub model: ModelSpec,
    /// Only files matching one of these globs (default: everything the model needs).
    pub include: Vec<String>,
    /// Never files matching these globs.
    pub exclude: Vec<String>,
}

impl PullRequest {
    /// `spec` is a catalogue alias or a [`ModelSpec`] (`org/name[@revision][:QUANT]`).
    pub fn new(spec: &str) -> Result<Self> {
        let spec = crate::catalogue::lookup(spec).map_or(spec, |e| e.spec);
        Ok(Self { model: ModelSpec::parse(spec)?, include: Vec::new(), exclude: Vec::new() })
    }

    pub fn revision(&self) -> &str {
        self.model.revision.as_deref().unwrap_or("main")
    }
}

/// Progress of a pull, in order: `Waiting`?, `Resolved`, then per file `FileStarted`,
/// `Progress`*, `FileVerified` (files already cached report `FileCached` instead), and
/// finally `Done` or `Failed`. Serialises as `{"event": "progress", ...}` for SSE or JSON lines.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    /// Another process is pulling the same repo; this one waits for it.
    Waiting {
        repo: String,
    },
    Resolved {
        name: String,
        repo: String,
        revision: String,
        commit: String,
        files: usize,
        total_bytes: u64,
    },
    FileStarted {
        file: String,
        size: u64,
    },
    /// `done` counts the bytes of the file present so far, including any resumed partial.
    Progress {
        file: String,
        done: u64,
        total: u64,
    },
    FileVerified {
        file: String,
    },
    FileCached {
        file: String,
    },
    Done {
        name: String,
        path: String,
        offline: bool,
    },
    Failed {
        message: String,
    },
}

fn glob_set(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| StoreError::Invalid(format!("bad glob {p:?}: {e}")))?);
    }
    b.build().map_err(|e| StoreError::Invalid(format!("bad globs: {e}")))
}

/// Other copies of the weights that a safetensors model does not need.
const ALTERNATE_WEIGHTS: &[&str] = &[
    "*.bin",
    "*.pt",
    "*.pth",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "*.onnx_data",
    "*.tflite",
    "*.mlmodel",
    "*.gguf",
    "onnx/**",
    "openvino/**",
    "coreml/**",
];

/// Picks the files to download: the user's globs, then for a GGUF repo exactly one model
/// (by quantisation), otherwise everything but alternate copies of the weights.
pub(crate) fn select_files(req: &PullRequest, files: &[RemoteFile]) -> Result<Vec<RemoteFile>> {
    let include = glob_set(&req.include)?;
    let exclude = glob_set(&req.exclude)?;
    let candidates: Vec<&RemoteFile> =
        files.iter().filter(|f| (req.include.is_empty() || include.is_match(&f.path)) && !exclude.is_match(&f.path)).collect();
    let ggufs: Vec<&RemoteFile> = candidates.iter().copied().filter(|f| f.path.ends_with(".gguf")).collect();
    let has_safetensors = candidates.iter().any(|f| f.path.ends_with(".safetensors"));
    let chosen: Vec<RemoteFile> = if !ggufs.is_empty() && !has_safetensors {
        let matching: Vec<&RemoteFile> = match &req.model.quant {
            Some(q) => ggufs.iter().copied().filter(|f| f.path.to_ascii_lowercase().contains(&q.to_ascii_lowercase())).collect(),
            None => ggufs.clone(),
        };
        let names = || ggufs.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join(", ");
        // A model split into shards (`-00001-of-00003.gguf`) is one choice.
        let models: HashSet<&str> = matching.iter().map(|f| f.path.split("-0000").next().unwrap_or(&f.path)).collect();
        match models.len() {
            0 => {
                return Err(StoreError::Invalid(format!(
                    "no GGUF file in {} matches {:?}; available: {}",
                    req.model.repo,
                    req.model.quant.as_deref().unwrap_or(""),
                    names()
                )))
            }
            1 => matching.into_iter().cloned().collect(),
            _ => {
                return Err(StoreError::Invalid(format!(
                    "{} has several GGUF files; choose one with --quant or --include: {}",
                    req.model.repo,
                    names()
                )))
            }
        }
    } else {
        let alternates = glob_set(&ALTERNATE_WEIGHTS.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        candidates.into_iter().filter(|f| !req.include.is_empty() || !has_safetensors || !alternates.is_match(&f.path)).cloned().collect()
    };
    if chosen.is_empty() {
        return Err(StoreError::Invalid(format!("no files of {} match the include/exclude patterns", req.model.repo)));
    }
    Ok(chosen)
}

/// Downloads the blobs `files` need that the cache lacks, `parallel` at a time. Files with the
/// same content share one blob and one download.
pub(crate) fn fetch_missing(
    hub: &Hub,
    repo_id: &str,
    repo: &RepoDir,
    commit: &str,
    files: &[RemoteFile],
    emit: &(dyn Fn(PullEvent) + Sync),
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut queue = Vec::new();
    for f in files {
        let blob = repo.blob(&f.hash);
        refuse_symlink(&blob)?;
        if blob.is_file() {
            emit(PullEvent::FileCached { file: f.path.clone() });
        } else if seen.insert(f.hash.clone()) {
            queue.push(f);
        }
    }
    let queue = Mutex::new(queue.into_iter());
    let failed = AtomicBool::new(false);
    let first_error = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..hub.config().parallel.max(1) {
            s.spawn(|| {
                // Stop taking new files once one has failed.
                while !failed.load(Ordering::Relaxed) {
                    let Some(file) = queue.lock().expect("queue lock").next() else {
                        break;
                    };
                    emit(PullEvent::FileStarted { file: file.path.clone(), size: file.size });
                    let url = hub.file_url(repo_id, commit, &file.path);
                    let progress = |done| emit(PullEvent::Progress { file: file.path.clone(), done, total: file.size });
                    match fetch_blob(hub, repo, &url, file, &progress) {
                        Ok(()) => emit(PullEvent::FileVerified { file: file.path.clone() }),
                        Err(e) => {
                            failed.store(true, Ordering::Relaxed);
                            first_error.lock().expect("error lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("error lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

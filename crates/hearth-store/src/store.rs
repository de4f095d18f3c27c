//! The store: one Hearth home's cache and registry, plus read-only use of a Hugging Face cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::cache::{model_entry, Manifest, ManifestFile, RepoDir};
use crate::download::hash_file;
use crate::error::IoContext;
use crate::hub::{hf_home, Hub, HubConfig};
use crate::lock::{FileLock, LockKind};
use crate::metadata::read_model_info;
use crate::name::{check_blob_hash, ModelSpec};
use crate::pull::{fetch_missing, select_files, PullEvent, PullRequest};
use crate::registry::{now, ModelRecord, Registry, Source};
use crate::{Result, StoreError};

/// A model found locally.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// What the engine loads: a GGUF file or a model directory.
    pub path: PathBuf,
    /// `None` for a model read from a Hugging Face cache.
    pub record: Option<ModelRecord>,
}

/// Held by a server while a model is loaded; `hearth rm` refuses to remove it meanwhile.
#[derive(Debug)]
pub struct InUseGuard {
    _lock: FileLock,
}

/// What [`Store::verify`] found.
#[derive(Debug, Default)]
pub struct CacheReport {
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// One line per corrupt blob, broken link or unreadable manifest.
    pub problems: Vec<String>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Default)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    pub freed_bytes: u64,
    /// Repos skipped because a pull or removal holds their lock.
    pub busy: Vec<String>,
}

pub struct Store {
    home: PathBuf,
    hub: HubConfig,
    registry: Mutex<Registry>,
    /// A Hugging Face cache to read models from in place.
    hf_cache: Option<PathBuf>,
}

/// `$HF_HUB_CACHE`, else `$HF_HOME/hub`.
fn hf_hub_cache() -> Option<PathBuf> {
    match std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(hf_home()?.join("hub")),
    }
}

fn recommended_memory(size: u64) -> u64 {
    // Weights plus room for the KV cache and activations, rounded up to 256 MiB.
    let quantum = 256 << 20;
    (size + size / 5).div_ceil(quantum).max(1) * quantum
}

fn file_size(path: &Path) -> u64 {
    fs::symlink_metadata(path).map_or(0, |m| m.len())
}

impl Store {
    /// Opens (creating) the store under `home` (see [`crate::hearth_home`]).
    pub fn open(home: &Path, hub: HubConfig) -> Result<Self> {
        let registry = Registry::open(&home.join("hearth.db"))?;
        Ok(Self { home: home.to_path_buf(), hub, registry: Mutex::new(registry), hf_cache: hf_hub_cache() })
    }

    /// Reads models from this Hugging Face cache instead of the one the environment names.
    pub fn with_hf_cache(mut self, dir: Option<PathBuf>) -> Self {
        self.hf_cache = dir;
        self
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn hub_config(&self) -> &HubConfig {
        &self.hub
    }

    fn hub_dir(&self) -> PathBuf {
        self.home.join("hub")
    }

    fn repo_dir(&self, repo: &str) -> RepoDir {
        RepoDir::new(&self.hub_dir(), repo)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().expect("registry lock poisoned")
    }

    /// Downloads a model (or finds it complete in the cache when offline), reporting
    /// progress through `emit`, and registers it.
    pub fn pull(&self, req: &PullRequest, emit: &(dyn Fn(PullEvent) + Sync)) -> Result<ModelRecord> {
        let result = self.pull_inner(req, emit);
        if let Err(e) = &result {
            emit(PullEvent::Failed { message: e.to_string() });
        }
        result
    }

    fn pull_inner(&self, req: &PullRequest, emit: &(dyn Fn(PullEvent) + Sync)) -> Result<ModelRecord> {
        if self.hub.offline {
            let found = self
                .find_local(&req.model)?
                .ok_or_else(|| StoreError::Offline(format!("{} is not completely in the cache", req.model.name())))?;
            let record = found
                .record
                .ok_or_else(|| StoreError::Offline(format!("{} is only in the Hugging Face cache; use it by name", req.model.name())))?;
            emit(PullEvent::Done { name: record.name.clone(), path: record.path.display().to_string(), offline: true });
            return Ok(record);
        }
        let repo_id = &req.model.repo;
        let repo = self.repo_dir(repo_id);
        fs::create_dir_all(&repo.root).at(&repo.root)?;
        let _lock = match FileLock::try_acquire(&repo.lock_path(), LockKind::Exclusive)? {
            Some(lock) => lock,
            None => {
                emit(PullEvent::Waiting { repo: repo_id.clone() });
                FileLock::acquire(&repo.lock_path(), LockKind::Exclusive)?
            }
        };
        let hub = Hub::new(self.hub.clone())?;
        let listing = hub.listing(repo_id, req.revision())?;
        let files = select_files(req, &listing.files)?;
        let name = req.model.name();
        emit(PullEvent::Resolved {
            name: name.clone(),
            repo: repo_id.clone(),
            revision: req.revision().to_string(),
            commit: listing.commit.clone(),
            files: files.len(),
            total_bytes: files.iter().map(|f| f.size).sum(),
        });
        fetch_missing(&hub, repo_id, &repo, &listing.commit, &files, emit)?;

        // Publish: links, then the manifest (the snapshot is complete from here), then refs.
        for f in &files {
            repo.link(&listing.commit, &f.path, &f.hash)?;
        }
        let mut manifest = repo.read_manifest(&listing.commit)?.unwrap_or(Manifest {
            repo: repo_id.clone(),
            commit: listing.commit.clone(),
            files: Vec::new(),
        });
        for f in &files {
            manifest.files.retain(|m| m.path != f.path);
            manifest.files.push(ManifestFile { path: f.path.clone(), size: f.size, hash: f.hash.clone() });
        }
        manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
        repo.write_manifest(&manifest)?;
        repo.write_ref(req.revision(), &listing.commit)?;

        let snapshot = repo.snapshot(&listing.commit);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let entry = model_entry(&snapshot, &paths);
        let size = files.iter().map(|f| f.size).sum();
        let where_from =
            Origin { name: name.clone(), repo: repo_id.clone(), revision: req.revision().to_string(), commit: listing.commit.clone() };
        let record = new_record(where_from, entry, size, Source::Pulled);
        self.registry().upsert(&record)?;
        emit(PullEvent::Done { name, path: record.path.display().to_string(), offline: false });
        Ok(record)
    }

    /// Finds a model by alias, registry name or repo id (`org/name[@rev][:QUANT]`) in this
    /// store or in the Hugging Face cache, without any network call. `Ok(None)` if absent.
    /// Finding a model does not mark it used: whoever loads or runs it calls
    /// [`Store::mark_used`] (or [`Store::hold`]).
    pub fn resolve(&self, spec: &str) -> Result<Option<Resolved>> {
        self.find_local(&ModelSpec::parse(crate::catalogue::canonical(spec))?)
    }

    /// Records that a model was just loaded or run, for `hearth list`'s "last used".
    pub fn mark_used(&self, record: &ModelRecord) -> Result<()> {
        self.registry().touch(&record.name)
    }

    fn find_local(&self, spec: &ModelSpec) -> Result<Option<Resolved>> {
        let Some((record, manifest)) = self.find_registered(spec)? else {
            return self.find_in_hf_cache(spec);
        };
        // The registry row alone is not trusted: each file must still be a link to its blob
        // inside the cache.
        let repo = self.repo_dir(&record.repo);
        for f in manifest.iter().flat_map(|m| &m.files) {
            repo.check_file(&record.commit, f)?;
        }
        Ok(Some(Resolved { path: record.path.clone(), record: Some(record) }))
    }

    /// The registered model `spec` names whose snapshot is complete, with its manifest (`None`
    /// for a local model whose files are there).
    fn find_registered(&self, spec: &ModelSpec) -> Result<Option<(ModelRecord, Option<Manifest>)>> {
        let candidates = {
            let registry = self.registry();
            match (registry.get(&spec.name())?, &spec.quant) {
                (Some(r), _) => vec![r],
                (None, None) => registry.by_repo(&spec.repo)?,
                (None, Some(_)) => Vec::new(),
            }
        };
        let repo = self.repo_dir(&spec.repo);
        // A branch or tag resolves to the commit a pull last found it at (a commit to itself).
        let commit = spec.revision.as_deref().and_then(|rev| repo.read_ref(rev));
        let wanted = |r: &ModelRecord| spec.revision.as_ref().is_none_or(|v| *v == r.revision || commit.as_ref() == Some(&r.commit));
        for record in candidates.into_iter().filter(wanted) {
            if record.is_local() {
                if record.path.exists() {
                    return Ok(Some((record, None)));
                }
                continue;
            }
            // The manifest, not the registry row, is what says "complete". The entry is not
            // followed: where its link leads is for `check_file` to judge.
            if let Some(manifest) = repo.read_manifest(&record.commit)? {
                if fs::symlink_metadata(&record.path).is_ok() {
                    return Ok(Some((record, Some(manifest))));
                }
            }
        }
        Ok(None)
    }

    /// Registers a model written on this machine (`source`: a conversion or a fine-tune) as
    /// `local/<name>`, read where it lies at `path`; replaces an earlier local model of that
    /// name.
    pub fn register_local(&self, name: &str, path: &Path, source: Source) -> Result<ModelRecord> {
        let full = format!("local/{name}");
        let spec = ModelSpec::parse(&full)?;
        if spec.name() != full || spec.quant.is_some() || spec.revision.is_some() {
            return Err(StoreError::Invalid(format!("{name:?} is not a usable model name (letters, digits, '.', '-', '_')")));
        }
        if let Some(old) = self.registry().get(&full)? {
            if !old.is_local() {
                return Err(StoreError::Invalid(format!("{full} names a downloaded model")));
            }
        }
        let path = fs::canonicalize(path).at(path)?;
        let size = local_files(&path).iter().map(|(_, size)| size).sum();
        let where_from = Origin { name: full.clone(), repo: full, revision: "local".into(), commit: "local".into() };
        let record = new_record(where_from, path, size, source);
        self.registry().upsert(&record)?;
        Ok(record)
    }

    /// A snapshot `huggingface_hub` downloaded, read in place. It links each file into the
    /// snapshot once complete, so a snapshot missing weights is an interrupted download.
    fn find_in_hf_cache(&self, spec: &ModelSpec) -> Result<Option<Resolved>> {
        let Some(cache) = &self.hf_cache else {
            return Ok(None);
        };
        let repo = RepoDir::new(cache, &spec.repo);
        let Some(commit) = repo.read_ref(spec.revision.as_deref().unwrap_or("main")) else {
            return Ok(None);
        };
        let Ok(root) = fs::canonicalize(&repo.root) else {
            return Ok(None);
        };
        let snapshot = repo.snapshot(&commit);
        let mut files = hf_snapshot_files(&snapshot, &root)?;
        if let Some(q) = &spec.quant {
            let q = q.to_ascii_lowercase();
            files.retain(|f| !f.ends_with(".gguf") || f.to_ascii_lowercase().contains(&q));
        }
        let refs: Vec<&str> = files.iter().map(String::as_str).collect();
        let path = model_entry(&snapshot, &refs);
        let usable = path.is_file() || (files.iter().any(|f| f == "config.json") && has_all_weights(&snapshot, &files));
        Ok(usable.then_some(Resolved { path, record: None }))
    }

    pub fn get(&self, name: &str) -> Result<Option<ModelRecord>> {
        Ok(self.resolve(name)?.and_then(|r| r.record))
    }

    pub fn list(&self) -> Result<Vec<ModelRecord>> {
        self.registry().list()
    }

    /// The files of a registered model's snapshot (or a local model's files), with sizes.
    pub fn files(&self, record: &ModelRecord) -> Result<Vec<(String, u64)>> {
        if record.is_local() {
            return Ok(local_files(&record.path));
        }
        let manifest = self.repo_dir(&record.repo).read_manifest(&record.commit)?;
        Ok(manifest.map_or_else(Vec::new, |m| m.files.into_iter().map(|f| (f.path, f.size)).collect()))
    }

    /// Marks a model as loaded for as long as the guard lives (a server calls this), and as
    /// used.
    pub fn hold(&self, record: &ModelRecord) -> Result<InUseGuard> {
        let repo = self.repo_dir(&record.repo);
        fs::create_dir_all(&repo.root).at(&repo.root)?;
        let lock = FileLock::acquire(&repo.in_use_path(), LockKind::Shared)?;
        self.mark_used(record)?;
        Ok(InUseGuard { _lock: lock })
    }

    /// Removes a model's snapshot, every registry name that uses it, and the blobs no other
    /// snapshot needs; a local model is only unregistered (its files stay where they are).
    /// Refuses while a server holds the model, unless `force`. Returns the registry names
    /// removed.
    pub fn remove(&self, spec: &str, force: bool) -> Result<Vec<String>> {
        // Not `resolve`: a model whose links were tampered with must still be removable.
        let (record, _) = self
            .find_registered(&ModelSpec::parse(crate::catalogue::canonical(spec))?)?
            .ok_or_else(|| StoreError::NotFound(spec.to_string()))?;
        let repo = self.repo_dir(&record.repo);
        // A local model's lock folder exists only once a server has held it.
        fs::create_dir_all(&repo.root).at(&repo.root)?;
        let in_use = FileLock::try_acquire(&repo.in_use_path(), LockKind::Exclusive)?;
        if in_use.is_none() && !force {
            return Err(StoreError::InUse(record.name));
        }
        let _lock = FileLock::acquire(&repo.lock_path(), LockKind::Exclusive)?;
        if record.is_local() {
            self.registry().remove(&record.name)?;
            remove_path(&repo.root)?;
            return Ok(vec![record.name]);
        }
        // Unpublish first: once the manifest is gone nothing treats the snapshot as complete.
        repo.remove_manifest(&record.commit)?;
        let names: Vec<String> = {
            let mut registry = self.registry();
            let names: Vec<String> =
                registry.by_repo(&record.repo)?.into_iter().filter(|r| r.commit == record.commit).map(|r| r.name).collect();
            names.iter().try_for_each(|n| registry.remove(n))?;
            names
        };
        remove_path(&repo.snapshot(&record.commit))?;
        self.remove_unreferenced_blobs(&repo, false)?;
        Ok(names)
    }

    /// Deletes blobs no manifest names (and, if `partials`, interrupted downloads).
    fn remove_unreferenced_blobs(&self, repo: &RepoDir, partials: bool) -> Result<Vec<(PathBuf, u64)>> {
        let mut keep = std::collections::HashSet::new();
        for commit in repo.complete_commits() {
            if let Some(m) = repo.read_manifest(&commit)? {
                keep.extend(m.files.into_iter().map(|f| f.hash));
            }
        }
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(repo.blobs()) else {
            return Ok(removed);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let partial = name.ends_with(".partial") || name.ends_with(".tmp");
            if (partial && !partials) || keep.contains(&name) {
                continue;
            }
            let path = entry.path();
            let size = file_size(&path);
            fs::remove_file(&path).at(&path)?;
            removed.push((path, size));
        }
        Ok(removed)
    }

    fn repo_dirs(&self) -> Vec<RepoDir> {
        let Ok(entries) = fs::read_dir(self.hub_dir()) else {
            return Vec::new();
        };
        let mut dirs: Vec<RepoDir> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("models--"))
            .map(|e| RepoDir { root: e.path() })
            .collect();
        dirs.sort_by(|a, b| a.root.cmp(&b.root));
        dirs
    }

    /// Re-hashes every blob and checks every complete snapshot's links. Interrupted
    /// downloads (`.partial`) and snapshots without a manifest are not corruption.
    pub fn verify(&self) -> Result<CacheReport> {
        let mut report = CacheReport::default();
        for repo in self.repo_dirs() {
            if let Ok(entries) = fs::read_dir(repo.blobs()) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.ends_with(".partial") || name.ends_with(".tmp") {
                        continue;
                    }
                    let path = entry.path();
                    if check_blob_hash(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_file()) {
                        report.problems.push(format!("{}: not a blob (unexpected name or not a regular file)", path.display()));
                        continue;
                    }
                    let actual = hash_file(&path, &name)?;
                    report.files_checked += 1;
                    report.bytes_checked += file_size(&path);
                    if actual != name {
                        report.problems.push(format!("{}: corrupt: content hashes to {actual}", path.display()));
                    }
                }
            }
            for commit in repo.complete_commits() {
                let manifest = match repo.read_manifest(&commit) {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => {
                        report.problems.push(e.to_string());
                        continue;
                    }
                };
                for f in &manifest.files {
                    if let Err(e) = repo.check_file(&commit, f) {
                        report.problems.push(e.to_string());
                    }
                }
            }
        }
        Ok(report)
    }

    /// Removes what no complete model needs: interrupted downloads, incomplete snapshots,
    /// unreferenced blobs, and registry rows whose snapshot is gone.
    pub fn prune(&self) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for repo in self.repo_dirs() {
            let Some(_lock) = FileLock::try_acquire(&repo.lock_path(), LockKind::Exclusive)? else {
                report.busy.push(repo.root.display().to_string());
                continue;
            };
            let complete = repo.complete_commits();
            if let Ok(entries) = fs::read_dir(repo.root.join("snapshots")) {
                for entry in entries.flatten() {
                    if !complete.iter().any(|c| *c == entry.file_name().to_string_lossy()) {
                        let path = entry.path();
                        remove_path(&path)?;
                        report.removed.push(path);
                    }
                }
            }
            for (path, size) in self.remove_unreferenced_blobs(&repo, true)? {
                report.freed_bytes += size;
                report.removed.push(path);
            }
        }
        let stale = |r: &ModelRecord| match r.is_local() {
            true => !r.path.exists(),
            false => self.repo_dir(&r.repo).read_manifest(&r.commit).ok().flatten().is_none(),
        };
        let stale: Vec<ModelRecord> = self.list()?.into_iter().filter(stale).collect();
        let mut registry = self.registry();
        for r in stale {
            registry.remove(&r.name)?;
            report.removed.push(PathBuf::from(format!("registry:{}", r.name)));
        }
        Ok(report)
    }
}

/// A model's registry name and where it came from.
struct Origin {
    name: String,
    repo: String,
    revision: String,
    commit: String,
}

/// A new registry row for the model at `path` (`size` bytes), its details read from its files.
fn new_record(origin: Origin, path: PathBuf, size: u64, source: Source) -> ModelRecord {
    let info = read_model_info(&path);
    ModelRecord {
        name: origin.name,
        repo: origin.repo,
        revision: origin.revision,
        commit: origin.commit,
        path,
        format: info.format,
        architecture: info.architecture,
        quantization: info.quantization,
        parameter_count: info.parameter_count,
        size_bytes: size,
        context_length: info.context_length,
        embedding_dim: info.embedding_dim,
        embedding_max_tokens: info.embedding_max_tokens,
        embedding_pooling: info.embedding_pooling,
        recommended_memory_bytes: recommended_memory(size),
        source,
        created_at: now(),
        updated_at: now(),
        last_used_at: None,
    }
}

/// A local model's files (the file itself, or every file under its directory) with sizes.
fn local_files(path: &Path) -> Vec<(String, u64)> {
    if path.is_file() {
        let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        return vec![(name, file_size(path))];
    }
    let mut files = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(path).unwrap_or(&p).to_string_lossy().into_owned();
                files.push((rel, file_size(&p)));
            }
        }
    }
    files.sort();
    files
}

/// The files of a Hugging Face cache snapshot whose links resolve, as paths relative to it.
/// A link resolving outside `root` (the repo's folder, canonical) is an error.
fn hf_snapshot_files(snapshot: &Path, root: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![snapshot.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            // Only real directories are walked: huggingface_hub never links one, and a link
            // could loop.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
                continue;
            }
            // A dangling link is a file that is not there.
            let Ok(target) = fs::canonicalize(&path) else {
                continue;
            };
            if !target.starts_with(root) {
                return Err(StoreError::Invalid(format!(
                    "{}: links to {}, outside the Hugging Face cache's {}",
                    path.display(),
                    target.display(),
                    root.display()
                )));
            }
            if let (true, Ok(rel)) = (target.is_file(), path.strip_prefix(snapshot)) {
                files.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether a snapshot has the safetensors weights its config needs: every shard its index
/// names, or else a single `*.safetensors`.
fn has_all_weights(snapshot: &Path, files: &[String]) -> bool {
    const INDEX: &str = "model.safetensors.index.json";
    if !files.iter().any(|f| f == INDEX) {
        return files.iter().any(|f| f.ends_with(".safetensors"));
    }
    let index: Option<serde_json::Value> = fs::read(snapshot.join(INDEX)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    index
        .as_ref()
        .and_then(|i| i["weight_map"].as_object())
        .is_some_and(|map| map.values().all(|shard| shard.as_str().is_some_and(|s| files.iter().any(|f| f == s))))
}

fn remove_path(path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(path),
        _ => Ok(()),
    }
}

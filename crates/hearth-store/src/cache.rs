//! The on-disk layout of one repo in a cache (ours, or an existing Hugging Face cache, which
//! has the same shape), and the atomic file operations everything else is built on.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::IoContext;
use crate::name::{check_blob_hash, check_file_name, check_repo_id, check_revision, is_commit, repo_folder};
use crate::{Result, StoreError};

/// Writes `path` so that it is either absent/old or complete: temp file, fsync, rename, fsync dir.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    fs::create_dir_all(dir).at(dir)?;
    let tmp = temp_sibling(path);
    let mut f = File::create(&tmp).at(&tmp)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).at(&tmp)?;
    fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)
}

/// A name next to `path` that no other process uses and no reader mistakes for the real thing.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().expect("cache paths have a file name").to_string_lossy();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Fails if `path` is a symlink. Blobs and partials are only ever regular files that a pull
/// wrote; following a link planted in their place would read or write outside the cache.
pub(crate) fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Invalid(format!(
            "{}: is a symlink, where the cache only holds files it downloaded; remove it and pull again",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Makes a rename or creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// What a complete snapshot holds; its presence is what makes the snapshot complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub repo: String,
    pub commit: String,
    pub files: Vec<ManifestFile>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub hash: String,
}

impl Manifest {
    /// Rejects a manifest (from disk, so untrusted) naming paths outside the snapshot.
    fn check(&self) -> Result<()> {
        check_repo_id(&self.repo)?;
        if !is_commit(&self.commit) {
            return Err(StoreError::Invalid(format!("manifest has an invalid commit {:?}", self.commit)));
        }
        for f in &self.files {
            check_file_name(&f.path)?;
            check_blob_hash(&f.hash)?;
        }
        Ok(())
    }
}

/// `{cache}/models--{org}--{name}`.
#[derive(Clone, Debug)]
pub(crate) struct RepoDir {
    pub root: PathBuf,
}

impl RepoDir {
    pub fn new(cache: &Path, repo: &str) -> Self {
        Self { root: cache.join(repo_folder(repo)) }
    }

    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, hash: &str) -> PathBuf {
        self.blobs().join(hash)
    }

    pub fn partial(&self, hash: &str) -> PathBuf {
        self.blobs().join(format!("{hash}.partial"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }

    fn manifest_path(&self, commit: &str) -> PathBuf {
        self.manifests().join(format!("{commit}.json"))
    }

    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    pub fn in_use_path(&self) -> PathBuf {
        self.root.join(".in-use.lock")
    }

    /// The commit a branch or tag points to, if this cache has seen it (a commit is itself).
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        check_revision(revision).ok()?;
        let commit = fs::read_to_string(self.root.join("refs").join(revision)).ok()?;
        let commit = commit.trim();
        is_commit(commit).then(|| commit.to_string())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if is_commit(revision) {
            return Ok(());
        }
        write_atomic(&self.root.join("refs").join(revision), commit.as_bytes())
    }

    pub fn read_manifest(&self, commit: &str) -> Result<Option<Manifest>> {
        let path = self.manifest_path(commit);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(&path),
        };
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid(format!("{}: unreadable manifest: {e}", path.display())))?;
        m.check()?;
        if m.commit != commit {
            return Err(StoreError::Invalid(format!("{}: manifest is for commit {}", path.display(), m.commit)));
        }
        Ok(Some(m))
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let json = serde_json::to_vec_pretty(m).expect("manifests serialise");
        write_atomic(&self.manifest_path(&m.commit), &json)
    }

    pub fn remove_manifest(&self, commit: &str) -> Result<()> {
        let path = self.manifest_path(commit);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&path),
            _ => sync_dir(&self.manifests()),
        }
    }

    /// Every commit with a manifest, i.e. every complete snapshot.
    pub fn complete_commits(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.manifests()) else {
            return Vec::new();
        };
        entries.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".json").map(str::to_string)).filter(|c| is_commit(c)).collect()
    }

    /// Points `snapshots/{commit}/{file}` at its blob with a relative symlink, replacing any
    /// previous link atomically.
    pub fn link(&self, commit: &str, file: &str, hash: &str) -> Result<()> {
        let link = self.snapshot(commit).join(file);
        let dir = link.parent().expect("snapshot files have a parent");
        fs::create_dir_all(dir).at(dir)?;
        let depth = file.split('/').count() + 1; // up from the file's dir to the repo root
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(hash);
        let tmp = temp_sibling(&link);
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).at(&tmp)?;
        fs::rename(&tmp, &link).at(&link)?;
        sync_dir(dir)
    }

    /// Checks that a snapshot entry is our symlink to the blob with `hash`, which exists:
    /// anything else (a regular file, a link leaving the cache) is rejected.
    pub fn check_link(&self, commit: &str, file: &str, hash: &str) -> Result<PathBuf> {
        let link = self.snapshot(commit).join(file);
        let target = fs::read_link(&link).at(&link)?;
        let resolved = normalise(&link.parent().expect("has parent").join(&target));
        if target.is_absolute() || resolved != normalise(&self.blob(hash)) {
            return Err(StoreError::Invalid(format!(
                "{}: unexpected symlink to {} (expected the blob {hash})",
                link.display(),
                target.display()
            )));
        }
        Ok(resolved)
    }

    /// Checks a manifest's file: our link (see [`Self::check_link`]) to a blob that is a
    /// regular file of the right size. Returns the blob.
    pub fn check_file(&self, commit: &str, file: &ManifestFile) -> Result<PathBuf> {
        let blob = self.check_link(commit, &file.path, &file.hash)?;
        match fs::symlink_metadata(&blob) {
            Ok(m) if m.is_file() && m.len() == file.size => Ok(blob),
            _ => Err(StoreError::Invalid(format!(
                "{}: missing, not a regular file, or not {} bytes (for {})",
                blob.display(),
                file.size,
                file.path
            ))),
        }
    }
}

/// Resolves `.` and `..` lexically, so a link (or a path a request names) can be checked
/// without following it.
pub fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The path the engine loads: the single GGUF file of a GGUF snapshot, else the directory.
pub(crate) fn model_entry(snapshot: &Path, files: &[&str]) -> PathBuf {
    let ggufs: Vec<&&str> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [one] if !files.contains(&"config.json") => snapshot.join(one),
        _ => snapshot.to_path_buf(),
    }
}

//! Downloading one file into the cache's blobs: resumable (HTTP range from a `.partial`),
//! verified (size and hash) and atomic (renamed into `blobs/` only once verified).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::cache::{refuse_symlink, sync_dir, RepoDir};
use crate::error::IoContext;
use crate::hub::{network_error, Hub, RemoteFile};
use crate::{Result, StoreError};

/// The Hub's two content hashes: SHA-256 for LFS files, git's blob SHA-1 for the rest.
enum ContentHasher {
    Sha256(Sha256),
    GitSha1(Sha1),
}

impl ContentHasher {
    /// Picks the algorithm from the expected digest's length.
    fn for_hash(hash: &str, size: u64) -> Self {
        if hash.len() == 64 {
            Self::Sha256(Sha256::new())
        } else {
            let mut h = Sha1::new();
            h.update(format!("blob {size}\0").as_bytes());
            Self::GitSha1(h)
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(bytes),
            Self::GitSha1(h) => h.update(bytes),
        }
    }

    fn finish(self) -> String {
        let bytes = match self {
            Self::Sha256(h) => h.finalize().to_vec(),
            Self::GitSha1(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Feeds the first `len` bytes of `file` (a partial being resumed, or a blob re-verified).
    fn feed(&mut self, file: &mut File, len: u64, path: &Path) -> Result<()> {
        file.seek(SeekFrom::Start(0)).at(path)?;
        let mut reader = file.take(len);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).at(path)?;
            if n == 0 {
                return Ok(());
            }
            self.update(&buf[..n]);
        }
    }
}

/// Re-hashes a file the way the Hub hashed it.
pub(crate) fn hash_file(path: &Path, expected_hash: &str) -> Result<String> {
    let mut f = File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    let mut h = ContentHasher::for_hash(expected_hash, len);
    h.feed(&mut f, len, path)?;
    Ok(h.finish())
}

/// Makes `blobs/{file.hash}` exist with the right content, resuming any `.partial`.
/// `progress` gets the number of bytes of the file present so far.
pub(crate) fn fetch_blob(hub: &Hub, repo: &RepoDir, url: &reqwest::Url, file: &RemoteFile, progress: &dyn Fn(u64)) -> Result<()> {
    let blobs = repo.blobs();
    fs::create_dir_all(&blobs).at(&blobs)?;
    let partial = repo.partial(&file.hash);
    refuse_symlink(&partial)?;
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        // A link planted after the check fails the open instead of being followed.
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&partial)
        .at(&partial)?;
    let mut have = out.metadata().at(&partial)?.len();
    if have > file.size {
        out.set_len(0).at(&partial)?;
        have = 0;
    }
    let mut hasher = ContentHasher::for_hash(&file.hash, file.size);
    hasher.feed(&mut out, have, &partial)?;
    progress(have);

    hub.with_retries(|| {
        if have == file.size {
            return Ok(());
        }
        let mut resp = hub.get(url, have)?;
        let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
            && resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).is_some_and(|r| r.starts_with(&format!("bytes {have}-")));
        if !resumed && have > 0 {
            // The server ignored or refused the range: start the file over.
            out.set_len(0).at(&partial)?;
            have = 0;
            hasher = ContentHasher::for_hash(&file.hash, file.size);
            progress(0);
            if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                return Err(StoreError::Network { url: url.to_string(), message: "range not satisfiable; restarting".into() });
            }
        }
        out.seek(SeekFrom::Start(have)).at(&partial)?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = resp.read(&mut buf).map_err(|e| network_error(url.as_str(), &e, hub.config().timeout))?;
            if n == 0 {
                break;
            }
            if have + n as u64 > file.size {
                out.set_len(0).at(&partial)?;
                return Err(StoreError::Corrupt {
                    file: file.path.clone(),
                    expected: format!("{} bytes", file.size),
                    actual: "more bytes".into(),
                });
            }
            out.write_all(&buf[..n]).at(&partial)?;
            hasher.update(&buf[..n]);
            have += n as u64;
            progress(have);
        }
        if have < file.size {
            return Err(StoreError::Network {
                url: url.to_string(),
                message: format!("connection closed after {have} of {} bytes", file.size),
            });
        }
        Ok(())
    })?;

    out.sync_all().at(&partial)?;
    let actual = hasher.finish();
    if actual != file.hash {
        fs::remove_file(&partial).at(&partial)?;
        return Err(StoreError::Corrupt { file: file.path.clone(), expected: file.hash.clone(), actual });
    }
    let blob = repo.blob(&file.hash);
    fs::rename(&partial, &blob).at(&blob)?;
    sync_dir(&blobs)
}

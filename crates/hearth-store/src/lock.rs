//! Advisory file locks (flock): released by the kernel when the holder exits, even on SIGKILL,
//! so a killed pull never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use crate::error::IoContext;
use crate::Result;

/// Held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

#[derive(Clone, Copy)]
pub(crate) enum LockKind {
    Shared,
    Exclusive,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).at(path)
}

impl FileLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path, kind: LockKind) -> Result<Self> {
        let file = open(path)?;
        let op = match kind {
            LockKind::Shared => FlockOperation::LockShared,
            LockKind::Exclusive => FlockOperation::LockExclusive,
        };
        flock(&file, op).map_err(std::io::Error::from).at(path)?;
        Ok(Self { _file: file })
    }

    /// Takes the lock if nobody holds a conflicting one, else `None`.
    pub fn try_acquire(path: &Path, kind: LockKind) -> Result<Option<Self>> {
        let file = open(path)?;
        let op = match kind {
            LockKind::Shared => FlockOperation::NonBlockingLockShared,
            LockKind::Exclusive => FlockOperation::NonBlockingLockExclusive,
        };
        match flock(&file, op) {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(std::io::Error::from(e)).at(path),
        }
    }
}

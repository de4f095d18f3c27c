use std::fmt;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

use crate::FormatError;

/// A cheaply clonable window onto bytes that live elsewhere: a memory-mapped file (the usual
/// case, so weights stay on disk pages the OS can share and evict) or an owned buffer.
#[derive(Clone)]
pub struct SharedBytes {
    owner: Arc<Owner>,
    range: Range<usize>,
}

enum Owner {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Owner {
    fn bytes(&self) -> &[u8] {
        match self {
            Owner::Mapped(map) => map,
            Owner::Owned(data) => data,
        }
    }
}

impl SharedBytes {
    /// Memory-maps a file read-only.
    pub fn map_file(path: &Path) -> Result<Self, FormatError> {
        let file = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap-based loader we rely on model files not
        // being truncated underneath a running process.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
        let len = map.len();
        Ok(SharedBytes { owner: Arc::new(Owner::Mapped(map)), range: 0..len })
    }

    /// Drops the pages of `range` (relative to this window) of a memory-mapped file from the
    /// process's resident set, for data that has been copied elsewhere (repacked weights); a
    /// later read faults them back in from the file. Does nothing for owned buffers, for a
    /// range outside the window, or where the OS cannot.
    pub fn release_pages(&self, range: Range<usize>) {
        #[cfg(unix)]
        if let (Owner::Mapped(map), true) = (&*self.owner, range.start <= range.end && range.end <= self.range.len()) {
            // SAFETY: the map is a shared read-only file mapping: released pages read back the
            // file's (unchanged) bytes, so every borrowed slice keeps seeing the same data. A
            // failed hint changes nothing.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, self.range.start + range.start, range.len()) };
        }
    }

    pub fn from_vec(data: Vec<u8>) -> Self {
        let len = data.len();
        SharedBytes { owner: Arc::new(Owner::Owned(data)), range: 0..len }
    }

    /// A sub-window; `range` is relative to this window and must lie inside it.
    pub fn slice(&self, range: Range<usize>) -> Result<Self, FormatError> {
        if range.start > range.end || range.end > self.range.len() {
            return Err(FormatError::Truncated {
                offset: range.start as u64,
                needed: range.end.saturating_sub(range.start) as u64,
                len: self.range.len() as u64,
            });
        }
        let start = self.range.start + range.start;
        Ok(SharedBytes { owner: self.owner.clone(), range: start..start + range.len() })
    }
}

impl Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.owner.bytes()[self.range.clone()]
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBytes({} bytes)", self.range.len())
    }
}

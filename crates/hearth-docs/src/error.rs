use std::path::{Path, PathBuf};
use std::time::Duration;

/// Everything that can go wrong turning a file or posted content into documents. Messages are
/// written for the person who owns the file: [`extract_file`](crate::extract_file) and
/// [`walk`](crate::walk) put the file's path in front, [`extract_bytes`](crate::extract_bytes)
/// has no name to give.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("{}: {error}", path.display())]
    File { path: PathBuf, error: Box<DocError> },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported file type")]
    UnsupportedType,
    #[error("unknown content type {0:?} (expected text, markdown, html, pdf, docx or json)")]
    UnknownContentType(String),
    #[error("{size} bytes is over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("unpacks to more than {limit} bytes")]
    UnpacksTooLarge { limit: u64 },
    #[error("not valid UTF-8 (byte {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("{format} parser failed: {message}")]
    Parse { format: &'static str, message: String },
    #[error("{format} parsing timed out after {timeout:?}")]
    Timeout { format: &'static str, timeout: Duration },
    #[error(
        "{format} parsing refused: {stuck} parsers that timed out on earlier files are still running (restart the process to reclaim them)"
    )]
    ParsersStuck { format: &'static str, stuck: usize },
    /// One record of a file that holds many (a JSON array item, a JSONL line) is bad.
    #[error("{record}: {message}")]
    Record { record: String, message: String },
    #[error("invalid glob {pattern:?}: {message}")]
    InvalidGlob { pattern: String, message: String },
}

impl DocError {
    /// Names the file the error is about (once: an error that already names one is kept).
    pub fn in_file(self, path: &Path) -> DocError {
        match self {
            named @ DocError::File { .. } => named,
            error => DocError::File { path: path.to_path_buf(), error: Box::new(error) },
        }
    }
}

pub type Result<T, E = DocError> = std::result::Result<T, E>;

use std::path::PathBuf;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName { what: &'static str, value: String, reason: &'static str },
    #[error("{url}: access denied ({status}); the repo is gated or private: accept its terms on the Hub and set HF_TOKEN")]
    Unauthorized { url: String, status: u16 },
    #[error("{url}: not found on the Hub (404): check the repo id, revision and file name")]
    NotFoundOnHub { url: String },
    #[error("{url}: the Hub answered {status}{}", if .message.is_empty() { String::new() } else { format!(": {}", .message) })]
    Http { url: String, status: u16, message: String },
    #[error("{url}: timed out after {secs}s without data from the Hub (is HF_ENDPOINT reachable?)")]
    Timeout { url: String, secs: u64 },
    #[error("{url}: network error: {message}")]
    Network { url: String, message: String },
    #[error("{file}: verification failed: expected {expected}, got {actual}; the download was discarded")]
    Corrupt { file: String, expected: String, actual: String },
    #[error("offline (HF_HUB_OFFLINE or --offline) and {0}")]
    Offline(String),
    #[error("no such model {0:?}: not in the store (pull it with `hearth pull`)")]
    NotFound(String),
    #[error(
        "no such model {spec:?}: not a path, not in the store and not in {} (`hearth pull` downloads a Hub model; \
         scripts/fetch-test-models.sh installs the small test models)",
        .models.display()
    )]
    NoSuchModel { spec: String, models: PathBuf },
    #[error("model {0:?} is loaded by a running server; stop it or use --force")]
    InUse(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("registry database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("opening the registry: {0}")]
    Open(#[from] hearth_sqlite::OpenError),
}

/// Attaches the path to an I/O error, so every message says which file.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| StoreError::Io { path: path.to_path_buf(), source })
    }
}

use std::path::PathBuf;

/// Everything that can go wrong loading or running an encoder. Errors about one request input
/// name its index, so an HTTP handler can answer 400 with a useful message as is.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Format(#[from] hearth_formats::FormatError),
    #[error(transparent)]
    Kernel(#[from] hearth_kernels::KernelError),
    #[error("weights: {0}")]
    Weights(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("input {index} has {tokens} tokens, more than the model's limit of {limit} (ask for truncation to cut it)")]
    TooLong { index: usize, tokens: usize, limit: usize },
    #[error("input {index}: {message}")]
    BadInput { index: usize, message: String },
    /// A request option (`param`, as an API names it) is wrong.
    #[error("invalid {param}: {message}")]
    InvalidRequest { param: &'static str, message: String },
    #[error("the embedding worker has stopped")]
    WorkerStopped,
    #[error("embedding failed: {0}")]
    Failed(String),
}

impl EmbedError {
    /// Whether the request (not the model or the server) is at fault: HTTP 400 rather than 500.
    pub fn is_client_error(&self) -> bool {
        matches!(self, EmbedError::TooLong { .. } | EmbedError::BadInput { .. } | EmbedError::InvalidRequest { .. })
    }
}

pub type Result<T, E = EmbedError> = std::result::Result<T, E>;

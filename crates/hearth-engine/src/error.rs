use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Format(#[from] hearth_formats::FormatError),
    #[error(transparent)]
    Kernel(#[from] hearth_kernels::KernelError),
    #[error(transparent)]
    Tokenizer(#[from] hearth_tokenizer::TokenizerError),
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model config: {0}")]
    Config(String),
    #[error("weights: {0}")]
    Weights(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context of {context} tokens")]
    ContextOverflow { prompt: usize, max_tokens: usize, context: usize },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

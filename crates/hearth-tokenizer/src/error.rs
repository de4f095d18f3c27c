use std::path::PathBuf;

/// Everything that can go wrong in this crate; every message names the problem and, where one
/// exists, the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid JSON in {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("cannot load tokenizer from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("unsupported GGUF tokenizer model {0:?} (supported: \"gpt2\", \"llama\")")]
    UnsupportedModel(String),
    #[error("unknown or unsupported GGUF pre-tokenizer {0:?}; refusing to guess its split rules")]
    UnknownPreTokenizer(String),
    #[error("invalid GGUF vocabulary: {0}")]
    InvalidVocab(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("invalid chat template: {0}")]
    TemplateSyntax(String),
    #[error("chat template rendering failed: {0}")]
    TemplateRender(String),
    #[error("invalid tokenizer config {path}: {message}")]
    Config { path: PathBuf, message: String },
}

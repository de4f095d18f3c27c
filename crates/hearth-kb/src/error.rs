use thiserror::Error;

#[derive(Debug, Error)]
pub enum KbError {
    #[error("knowledge base database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Open(#[from] hearth_sqlite::OpenError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("embedding: {0}")]
    Embed(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("this knowledge base was built with the embedding model `{stored}` ({stored_dim} dimensions); it cannot be searched or extended with `{given}` ({given_dim})")]
    EmbeddingModelMismatch { stored: String, stored_dim: usize, given: String, given_dim: usize },
}

pub type Result<T> = std::result::Result<T, KbError>;

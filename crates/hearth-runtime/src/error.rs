/// Why the runtime refused or ended a request. A front end maps each case to its own error
/// shape once (the server: status and OpenAI error code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuntimeError {
    /// A request the model cannot run as given; `param` names the request field at fault.
    #[error("{message}")]
    Invalid { param: &'static str, message: String },
    #[error("the prompt ({prompt} tokens) plus max_tokens ({max_tokens}) exceeds the context of {context} tokens")]
    ContextOverflow { prompt: usize, max_tokens: usize, context: usize },
    /// Every place in the queue is taken; retry later.
    #[error("the server is busy: the request queue is full")]
    QueueFull,
    /// The model's scheduler thread is gone (it was unloaded or failed).
    #[error("the model's scheduler has stopped")]
    Stopped,
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The forward pass failed (the engine's message).
    #[error("the model failed: {0}")]
    Model(String),
    #[error("detokenizing failed: {0}")]
    Detokenize(String),
    /// A sequence's logits processor refused a token (a broken constraint).
    #[error("the logits processor failed: {0}")]
    Processor(String),
}

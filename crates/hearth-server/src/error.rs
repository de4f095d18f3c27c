//! Every error the server returns, in OpenAI's body shape
//! `{"error": {"message", "type", "param", "code"}}`, whatever the route.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use hearth_runtime::RuntimeError;

use crate::api::{ErrorBody, ErrorDetail};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), param: None, code: None, retry_after: None }
    }

    /// 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError { param: Some(param.to_string()), code: Some("invalid_value"), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { code: Some("invalid_request"), ..Self::new(StatusCode::BAD_REQUEST, message) }
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError {
            param: Some("model".into()),
            code: Some("model_not_found"),
            ..Self::new(StatusCode::NOT_FOUND, format!("The model `{model}` does not exist"))
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { code: Some("not_found"), ..Self::new(StatusCode::NOT_FOUND, message) }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError { code: Some("conflict"), ..Self::new(StatusCode::CONFLICT, message) }
    }

    /// 502: something upstream (the Hub) failed.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        ApiError { code: Some("upstream_error"), ..Self::new(StatusCode::BAD_GATEWAY, message) }
    }

    pub fn unauthorized() -> Self {
        ApiError { code: Some("invalid_api_key"), ..Self::new(StatusCode::UNAUTHORIZED, "Incorrect or missing API key") }
    }

    /// 403: the key is known but may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError { code: Some("insufficient_scope"), ..Self::new(StatusCode::FORBIDDEN, message) }
    }

    pub fn too_large() -> Self {
        ApiError { code: Some("body_too_large"), ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large") }
    }

    pub fn busy(message: impl Into<String>) -> Self {
        ApiError { code: Some("rate_limit_exceeded"), retry_after: Some(1), ..Self::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError { code: Some("unavailable"), retry_after: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { code: Some("internal_error"), ..Self::new(StatusCode::INTERNAL_SERVER_ERROR, message) }
    }

    pub fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail { message: self.message.clone(), kind: self.kind(), param: self.param.clone(), code: self.code }
    }

    /// The JSON body (also sent inside SSE streams and WebSocket messages).
    pub fn body(&self) -> ErrorBody {
        ErrorBody { kind: "error", error: self.detail() }
    }
}

/// The runtime's refusals and failures, each to its one status.
impl From<RuntimeError> for ApiError {
    fn from(e: RuntimeError) -> Self {
        let message = e.to_string();
        match e {
            RuntimeError::Invalid { param, .. } => ApiError::invalid(param, message),
            RuntimeError::ContextOverflow { .. } => ApiError::invalid("max_tokens", message),
            RuntimeError::QueueFull => ApiError::busy(message),
            RuntimeError::Stopped | RuntimeError::ShuttingDown => ApiError::unavailable(message),
            RuntimeError::Model(_) | RuntimeError::Detokenize(_) | RuntimeError::Processor(_) => ApiError::internal(message),
        }
    }
}

/// The hub's refusals, each to its one status.
impl From<hearth_hub::HubError> for ApiError {
    fn from(e: hearth_hub::HubError) -> Self {
        use hearth_hub::HubError as E;
        let message = e.to_string();
        match e {
            E::Invalid(_) => ApiError::bad_request(message),
            E::NotFound(_) => ApiError::not_found(message),
            E::Conflict(_) => ApiError::conflict(message),
            E::Open(_) | E::Sqlite(_) | E::Io { .. } => ApiError::internal(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// 400 for a model this server cannot run (an unsupported architecture or encoder): the
/// request named it.
fn not_supported(message: String) -> ApiError {
    ApiError { param: Some("model".into()), code: Some("model_not_supported"), ..ApiError::new(StatusCode::BAD_REQUEST, message) }
}

impl From<hearth_runtime::EngineError> for ApiError {
    fn from(e: hearth_runtime::EngineError) -> Self {
        use hearth_runtime::EngineError as E;
        match e {
            E::Unsupported(_) => not_supported(e.to_string()),
            E::InvalidRequest(_) | E::ContextOverflow { .. } | E::Tokenizer(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<hearth_embed::EmbedError> for ApiError {
    fn from(e: hearth_embed::EmbedError) -> Self {
        use hearth_embed::EmbedError as E;
        match e {
            E::Unsupported(_) => not_supported(e.to_string()),
            E::WorkerStopped => ApiError::unavailable(e.to_string()),
            E::InvalidRequest { param, message } => ApiError::invalid(param, message),
            _ if e.is_client_error() => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<hearth_store::StoreError> for ApiError {
    fn from(e: hearth_store::StoreError) -> Self {
        use hearth_store::StoreError as E;
        match e {
            E::InvalidName { .. } | E::Invalid(_) => ApiError::bad_request(e.to_string()),
            E::NotFound(_) | E::NotFoundOnHub { .. } | E::NoSuchModel { .. } => {
                ApiError { code: Some("model_not_found"), ..ApiError::new(StatusCode::NOT_FOUND, e.to_string()) }
            }
            E::InUse(_) => ApiError::conflict(e.to_string()),
            E::Unauthorized { .. } | E::Http { .. } | E::Timeout { .. } | E::Network { .. } | E::Corrupt { .. } => {
                ApiError::bad_gateway(e.to_string())
            }
            E::Offline(_) => ApiError::unavailable(e.to_string()),
            E::Io { .. } | E::Db(_) | E::Open(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<hearth_kb::KbError> for ApiError {
    fn from(e: hearth_kb::KbError) -> Self {
        use hearth_kb::KbError as E;
        match e {
            E::Invalid(m) => ApiError::bad_request(m),
            E::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            E::EmbeddingModelMismatch { .. } => ApiError::conflict(e.to_string()),
            E::Db(_) | E::Io(_) | E::Embed(_) | E::Open(_) => ApiError::internal(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        ApiError::internal(format!("the registry database failed: {e}"))
    }
}

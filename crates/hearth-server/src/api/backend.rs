//! The chat backend's bodies (`/api/*`): health, models and load/unload, and chat replies as
//! one message, as server-sent events or over the WebSocket.

use serde::Serialize;
use utoipa::ToSchema;

use super::openai::{chat_request, AssistantMessage, ChatMessage, FinishReason, ToolCall, Usage};
use super::ErrorDetail;

chat_request! {
    /// `POST /api/chat/completions` and `…/stream`, and the WebSocket's `chat` messages (with
    /// `"type": "chat"`): the OpenAI chat fields for one reply.
    pub struct BackendChatRequest {
        /// Default: the server's first model.
        pub model: Option<String>,
        pub messages: Vec<ChatMessage>,
        /// Must be 1: one reply.
        pub n: Option<i64>,
        pub logprobs: Option<bool>,
        pub top_logprobs: Option<i64>,
    }
}

#[derive(Serialize, ToSchema)]
pub struct BackendHealth {
    pub status: &'static str,
    pub model_loaded: bool,
    pub loaded_models: Vec<String>,
    pub default_model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BackendModel {
    pub id: String,
    pub name: String,
    pub loaded: bool,
}

#[derive(Serialize, ToSchema)]
pub struct BackendModels {
    pub models: Vec<BackendModel>,
    pub default_model: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Loaded {
    /// `loaded`.
    pub status: &'static str,
    pub model_id: String,
    pub memory_bytes: usize,
}

#[derive(Serialize, ToSchema)]
pub struct Unloaded {
    /// `unloaded`, or `not_loaded` for a model that was not loaded.
    pub status: &'static str,
    pub model_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct BackendReply {
    pub id: String,
    pub model: String,
    pub message: AssistantMessage,
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}

/// A streamed reply's messages (server-sent events, or WebSocket text messages): tokens, then
/// `done`, or an `error` (after which a WebSocket stays open). A WebSocket `ping` gets `pong`.
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum BackendEvent {
    Token {
        content: String,
    },
    /// Reasoning before the answer, for models that think aloud.
    Reasoning {
        content: String,
    },
    /// The reply's tool calls, once it is complete (before `done`).
    #[serde(rename = "tool_calls")]
    ToolCalls {
        tool_calls: Vec<ToolCall>,
    },
    Done {
        model: String,
        finish_reason: FinishReason,
        usage: Usage,
    },
    Error {
        error: ErrorDetail,
        status: u16,
        message: String,
    },
    Pong,
}

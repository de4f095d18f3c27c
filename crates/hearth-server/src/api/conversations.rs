//! The web UI's conversations (`/api/conversations`): kept on the server, per API key.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /api/conversations` and `PATCH /api/conversations/{id}`: what is given replaces what
/// was.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationBody {
    /// At most 200 characters; a new conversation without one is titled by its first message.
    pub title: Option<String>,
    pub model: Option<String>,
    /// At most 10000.
    pub messages: Option<Vec<ConversationMessage>>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
    /// What the UI keeps beside a message (its model, stats, sources, citations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Conversation {
    pub id: String,
    pub title: String,
    pub model: Option<String>,
    pub messages: Vec<ConversationMessage>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationSummary {
    pub id: String,
    pub title: String,
    pub model: Option<String>,
    /// How many messages it holds.
    pub messages: usize,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct Conversations {
    pub conversations: Vec<ConversationSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationDeleted {
    pub deleted: String,
}

//! `/v1/messages` and `/v1/messages/count_tokens`: Anthropic's Messages API bodies.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::StringOr;

/// `POST /v1/messages`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    pub model: String,
    /// Most tokens to generate, in [1, 2^24].
    pub max_tokens: i64,
    pub messages: Vec<Message>,
    /// A string, or text blocks (joined).
    #[schema(inline)]
    pub system: Option<StringOr<Vec<TextBlock>>>,
    /// Up to 16 non-empty strings that end the reply (not included in it).
    pub stop_sequences: Option<Vec<String>>,
    /// Answer as server-sent events.
    pub stream: Option<bool>,
    /// In [0, 1] (Anthropic's range).
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    /// Accepted, unused.
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    pub tools: Option<Vec<ToolDefinition>>,
    pub tool_choice: Option<ToolChoice>,
    /// For models that reason: `enabled`, `adaptive` or `between_tools` turn the template's
    /// `enable_thinking` on, `disabled` off.
    pub thinking: Option<Thinking>,
    /// The output's JSON schema (enforced token by token) and the reasoning effort.
    pub output_config: Option<OutputConfig>,
    /// `auto` or `standard_only`: there is one tier.
    pub service_tier: Option<String>,
    /// Accepted, unused: the prompt cache needs no hints.
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    pub cache_control: Option<Value>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// `low`, `medium`, `high`, `xhigh` or `max`: passed to templates that read
    /// `reasoning_effort` (the last two as `high`).
    pub effort: Option<String>,
    pub format: Option<JsonOutputFormat>,
}

/// `{"type": "json_schema", "schema"}`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JsonOutputFormat {
    JsonSchema {
        #[schema(value_type = Object)]
        schema: Value,
    },
}

/// `POST /v1/messages/count_tokens`: what a request's prompt would be.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[schema(inline)]
    pub system: Option<StringOr<Vec<TextBlock>>>,
    pub tools: Option<Vec<ToolDefinition>>,
    pub tool_choice: Option<ToolChoice>,
    pub thinking: Option<Thinking>,
    pub output_config: Option<OutputConfig>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCount {
    pub input_tokens: usize,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: MessageRole,
    /// A string, or content blocks.
    #[schema(inline)]
    pub content: StringOr<Vec<InputBlock>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextBlock {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: TextType,
    pub text: String,
    /// Accepted, unused: the prompt cache needs no hints.
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    pub cache_control: Option<Value>,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TextType {
    Text,
}

/// A block of a message: text, a call the assistant made, a call's result, or reasoning.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputBlock {
    Text {
        text: String,
        #[allow(dead_code)]
        #[schema(value_type = Option<Object>)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        #[schema(value_type = Object)]
        input: Value,
        #[allow(dead_code)]
        #[schema(value_type = Option<Object>)]
        cache_control: Option<Value>,
    },
    ToolResult {
        tool_use_id: String,
        /// A string, or text blocks (joined).
        #[schema(inline)]
        content: Option<StringOr<Vec<TextBlock>>>,
        is_error: Option<bool>,
        #[allow(dead_code)]
        #[schema(value_type = Option<Object>)]
        cache_control: Option<Value>,
    },
    Thinking {
        thinking: String,
        #[allow(dead_code)]
        signature: Option<String>,
    },
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDefinition {
    /// Letters, digits, `_` and `-`, at most 64.
    pub name: String,
    pub description: Option<String>,
    /// The input's JSON schema (an object).
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// `custom` (the default) only.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[allow(dead_code)]
    #[schema(value_type = Option<Object>)]
    pub cache_control: Option<Value>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ToolChoice {
    Auto {
        disable_parallel_tool_use: Option<bool>,
    },
    /// Some tool must be called.
    Any {
        disable_parallel_tool_use: Option<bool>,
    },
    /// This tool must be called.
    Tool {
        name: String,
        disable_parallel_tool_use: Option<bool>,
    },
    None {},
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Thinking {
    Enabled {
        /// Accepted, unused: the reasoning runs to its end within `max_tokens`.
        #[allow(dead_code)]
        budget_tokens: Option<i64>,
        /// Accepted, unused: reasoning is returned whole.
        #[allow(dead_code)]
        display: Option<String>,
    },
    Adaptive {
        #[allow(dead_code)]
        display: Option<String>,
    },
    BetweenTools {},
    Disabled {},
}

/// A reply.
#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    pub id: String,
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always `assistant`.
    pub role: &'static str,
    pub model: String,
    pub content: Vec<OutputBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`; null in `message_start`.
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
    pub usage: MessageUsage,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[schema(value_type = Object)]
        input: Value,
    },
    /// Reasoning; `signature` is empty (nothing is signed here).
    Thinking {
        thinking: String,
        signature: String,
    },
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct MessageUsage {
    pub input_tokens: usize,
    pub output_tokens: usize,
    /// Prompt tokens served from the prompt cache.
    pub cache_read_input_tokens: usize,
    pub cache_creation_input_tokens: usize,
}

/// One server-sent event of a streamed reply (its SSE `event:` is its `type`).
#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart { message: MessageResponse },
    ContentBlockStart { index: usize, content_block: OutputBlock },
    ContentBlockDelta { index: usize, delta: BlockDelta },
    ContentBlockStop { index: usize },
    MessageDelta { delta: MessageDeltaBody, usage: MessageUsage },
    MessageStop,
    Ping,
    Error { error: AnthropicError },
}

impl StreamEvent {
    /// Its `type`, which is its SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Serialize, ToSchema)]
#[serde(tag = "type")]
pub enum BlockDelta {
    #[serde(rename = "text_delta")]
    Text { text: String },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: String },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: String },
}

#[derive(Serialize, ToSchema)]
pub struct MessageDeltaBody {
    pub stop_reason: Option<&'static str>,
    pub stop_sequence: Option<String>,
}

/// An error as Anthropic's API shapes it (inside a stream).
#[derive(Serialize, ToSchema)]
pub struct AnthropicError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub message: String,
}

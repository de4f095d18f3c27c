//! `/v1/responses`: OpenAI's Responses API bodies.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::openai::FunctionType;
use super::StringOr;

/// `POST /v1/responses`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateResponse {
    pub model: String,
    /// A user message's text, or items: messages, function calls and their outputs.
    #[schema(inline)]
    pub input: StringOr<Vec<InputItem>>,
    /// A system message for this response (not carried to the next by `previous_response_id`).
    pub instructions: Option<String>,
    /// Continue the conversation of this stored response (its input and output come first).
    pub previous_response_id: Option<String>,
    pub tools: Option<Vec<FunctionTool>>,
    /// `none`, `auto`, `required` or `{"type": "function", "name"}`.
    #[schema(inline)]
    pub tool_choice: Option<StringOr<NamedFunction>>,
    pub parallel_tool_calls: Option<bool>,
    /// The output's format: `text`, `json_object` or `json_schema` (enforced token by token).
    pub text: Option<TextConfig>,
    pub reasoning: Option<ReasoningConfig>,
    /// Most tokens to generate, in [1, 2^24].
    pub max_output_tokens: Option<i64>,
    /// In [0, 2].
    pub temperature: Option<f64>,
    /// In (0, 1].
    pub top_p: Option<f64>,
    pub stream: Option<bool>,
    /// Keep the response (default true) for `GET`, `DELETE` and `previous_response_id`.
    pub store: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// Accepted, unused.
    #[allow(dead_code)]
    pub user: Option<String>,
    /// Accepted, unused: nothing extra is included.
    #[allow(dead_code)]
    pub include: Option<Vec<String>>,
    /// `auto` or `default`: there is one tier.
    pub service_tier: Option<String>,
    /// `disabled` (the default): a conversation longer than the context is refused.
    pub truncation: Option<String>,
}

/// An input item: a message (`type` omitted or `message`), a `function_call` the model made,
/// its `function_call_output`, or a `reasoning` item (kept out of the prompt).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InputItem {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<ItemType>,
    /// A message's: `user`, `assistant`, `system` or `developer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// A message's text, or its parts.
    #[schema(inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<StringOr<Vec<ContentPart>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// A function call's (and its output's) id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A function call's arguments, as JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    /// A function call's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// A reasoning item's.
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encrypted_content: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemType {
    Message,
    FunctionCall,
    FunctionCallOutput,
    Reasoning,
}

/// `input_text` (what users write), `output_text` (an earlier reply) or `reasoning_text`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: PartType,
    pub text: String,
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Value>>,
}

// The wire's names.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartType {
    InputText,
    OutputText,
    ReasoningText,
}

/// A function the model may call.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: FunctionType,
    /// Letters, digits, `_` and `-`, at most 64.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The arguments' JSON schema (an object).
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Accepted either way: the schema is always enforced in full, or refused.
    pub strict: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedFunction {
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub name: String,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    pub format: Option<TextFormat>,
    /// Accepted, unused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        /// Letters, digits, `_` and `-`, at most 64.
        name: String,
        #[schema(value_type = Object)]
        schema: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasoningConfig {
    /// `low`, `medium` or `high`: passed to templates that read it.
    pub effort: Option<String>,
    /// Accepted, unused: reasoning is returned whole, not summarised.
    pub summary: Option<String>,
}

/// A response, as created, streamed (`response.completed`) and stored.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ResponseObject {
    pub id: String,
    /// Always `response`.
    pub object: &'static str,
    pub created_at: u64,
    /// `completed`, or `incomplete` (cut at `max_output_tokens`).
    pub status: &'static str,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub usage: ResponseUsage,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Option<ReasoningConfig>,
    pub store: bool,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub text: TextConfig,
    /// As the request gave it (`auto` by default).
    #[schema(value_type = Object)]
    pub tool_choice: Value,
    pub tools: Vec<FunctionTool>,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Reasoning {
        id: String,
        #[schema(value_type = Vec<Object>)]
        summary: Vec<Value>,
        content: Vec<OutputText>,
    },
    Message {
        id: String,
        status: &'static str,
        role: &'static str,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: &'static str,
    },
}

/// `output_text` in a message, `reasoning_text` in reasoning.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: PartType,
    pub text: String,
    #[schema(value_type = Vec<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Vec<Value>>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct ResponseUsage {
    pub input_tokens: usize,
    pub output_tokens: usize,
    pub total_tokens: usize,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens_details: OutputTokensDetails,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct InputTokensDetails {
    /// Prompt tokens served from the prompt cache.
    pub cached_tokens: usize,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: usize,
}

/// `DELETE /v1/responses/{id}`.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    /// Always `response`.
    pub object: &'static str,
    pub deleted: bool,
}

/// One server-sent event of a streamed response: `response.created`, `response.in_progress`,
/// `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`,
/// `response.reasoning_text.delta`, `response.function_call_arguments.delta`, their `.done`
/// events, then `response.completed` (or `response.incomplete`, or `error`).
#[derive(Serialize, ToSchema)]
pub struct StreamEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sequence_number: usize,
    /// The event's own fields (`response`, `item`, `delta`, `output_index`, …).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
}

//! `/v1/models`, `/v1/chat/completions` and `/v1/completions`: OpenAI's bodies, with Hearth's
//! `knowledge_base` extension.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::knowledge::{Grounding, KnowledgeBaseOptions};
use super::{StringOr, TextsOrTokens};

/// Declares a generation request: its own fields, then the ones every generation request has
/// (`Sampling` is the latter alone).
macro_rules! generation_request {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, serde::Deserialize, utoipa::ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            /// Most tokens to generate, in [1, 2^24]; by default the server's `--max-tokens`
            /// within the context.
            pub max_tokens: Option<i64>,
            /// OpenAI's newer name for `max_tokens`; give one of the two.
            pub max_completion_tokens: Option<i64>,
            /// In [0, 2]; 0 is greedy.
            pub temperature: Option<f64>,
            /// In (0, 1].
            pub top_p: Option<f64>,
            /// In [0, 2^20]; 0 turns it off.
            pub top_k: Option<i64>,
            /// In [0, 1].
            pub min_p: Option<f64>,
            /// In [-2, 2].
            pub presence_penalty: Option<f64>,
            /// In [-2, 2].
            pub frequency_penalty: Option<f64>,
            /// In (0, 10].
            pub repetition_penalty: Option<f64>,
            /// Token id (as a string) to a bias in [-100, 100].
            pub logit_bias: Option<::std::collections::HashMap<String, f64>>,
            /// Any integer; the same seed gives the same choices.
            pub seed: Option<i64>,
            /// Up to 16 non-empty strings that end a choice (not included in it).
            #[schema(inline)]
            pub stop: Option<$crate::api::StringOr<Vec<String>>>,
            /// An end-user id: accepted, unused.
            #[allow(dead_code)]
            pub user: Option<String>,
            /// Must be `false`: nothing is stored.
            pub store: Option<bool>,
            /// `auto` or `default`: there is one tier.
            pub service_tier: Option<String>,
            /// What the output must be: `text`, any JSON object, or JSON valid under a schema;
            /// enforced token by token, so it always parses (see the README).
            pub response_format: Option<$crate::api::openai::ResponseFormat>,
            /// vLLM's extension: JSON valid under this schema.
            #[schema(value_type = Option<Object>)]
            pub guided_json: Option<::serde_json::Value>,
            /// vLLM's extension: the output matches this regular expression.
            pub guided_regex: Option<String>,
            /// vLLM's extension: the output is one of these strings.
            pub guided_choice: Option<Vec<String>>,
            /// vLLM's extension: the output follows this Lark grammar (llguidance's dialect).
            pub guided_grammar: Option<String>,
            /// vLLM's extension: generate past the end-of-sequence token up to the token limit
            /// (benchmarks compare equal lengths with it).
            pub ignore_eos: Option<bool>,
        }

        impl $name {
            /// The fields every generation request has (unused on `Sampling` itself).
            #[allow(dead_code)]
            pub fn sampling(&self) -> $crate::api::openai::Sampling {
                $crate::api::openai::Sampling {
                    max_tokens: self.max_tokens,
                    max_completion_tokens: self.max_completion_tokens,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    top_k: self.top_k,
                    min_p: self.min_p,
                    presence_penalty: self.presence_penalty,
                    frequency_penalty: self.frequency_penalty,
                    repetition_penalty: self.repetition_penalty,
                    logit_bias: self.logit_bias.clone(),
                    seed: self.seed,
                    stop: self.stop.clone(),
                    user: self.user.clone(),
                    store: self.store,
                    service_tier: self.service_tier.clone(),
                    response_format: self.response_format.clone(),
                    guided_json: self.guided_json.clone(),
                    guided_regex: self.guided_regex.clone(),
                    guided_choice: self.guided_choice.clone(),
                    guided_grammar: self.guided_grammar.clone(),
                    ignore_eos: self.ignore_eos,
                }
            }
        }
    };
}

pub(crate) use generation_request;

/// Declares a chat request: a generation request with the fields every chat request has
/// (tools, reasoning, template variables).
macro_rules! chat_request {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $crate::api::openai::generation_request! {
            $(#[$meta])*
            pub struct $name {
                $($(#[$fmeta])* pub $field: $ty,)*
                /// Functions the model may call; each call is held to its `parameters` schema.
                pub tools: Option<Vec<$crate::api::openai::ToolDefinition>>,
                /// `none`, `auto` (the default with tools), `required`, or
                /// `{"type": "function", "function": {"name"}}`.
                #[schema(inline)]
                pub tool_choice: Option<$crate::api::StringOr<$crate::api::openai::NamedToolChoice>>,
                /// Several calls in one reply (default true).
                pub parallel_tool_calls: Option<bool>,
                /// Further variables for the chat template (e.g. `enable_thinking`).
                #[schema(value_type = Option<Object>)]
                pub chat_template_kwargs: Option<::serde_json::Map<String, ::serde_json::Value>>,
                /// `low`, `medium` or `high`: passed to templates that read it.
                pub reasoning_effort: Option<String>,
            }
        }

        impl $name {
            /// The chat fields, taken out of the request.
            pub fn chat_options(&mut self) -> $crate::api::openai::ChatOptions {
                $crate::api::openai::ChatOptions {
                    tools: self.tools.take(),
                    tool_choice: self.tool_choice.take(),
                    parallel_tool_calls: self.parallel_tool_calls,
                    chat_template_kwargs: self.chat_template_kwargs.take(),
                    reasoning_effort: self.reasoning_effort.take(),
                }
            }
        }
    };
}

pub(crate) use chat_request;

/// The fields every chat request has beyond generation's.
#[derive(Clone, Debug, Default)]
pub struct ChatOptions {
    pub tools: Option<Vec<ToolDefinition>>,
    pub tool_choice: Option<StringOr<NamedToolChoice>>,
    pub parallel_tool_calls: Option<bool>,
    pub chat_template_kwargs: Option<serde_json::Map<String, serde_json::Value>>,
    pub reasoning_effort: Option<String>,
}

/// A function the model may call.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: FunctionType,
    pub function: FunctionDefinition,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionType {
    Function,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionDefinition {
    /// Letters, digits, `_` and `-`, at most 64.
    pub name: String,
    pub description: Option<String>,
    /// The arguments' JSON schema (an object); absent: no arguments.
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<serde_json::Value>,
    /// Accepted either way: the schema is always enforced in full, or refused.
    #[allow(dead_code)]
    pub strict: Option<bool>,
}

/// `tool_choice` naming one function.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedToolChoice {
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: FunctionType,
    pub function: FunctionName,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionName {
    pub name: String,
}

/// A call the assistant made (in a reply, or sent back in `messages`).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments, as JSON text.
    pub arguments: String,
}

/// A streamed piece of a call: the first has its id and name, the rest more of its arguments.
#[derive(Serialize, ToSchema)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionType>,
    pub function: FunctionCallDelta,
}

#[derive(Serialize, ToSchema)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

generation_request! {
    /// The fields every generation request has; unset ones take the server's defaults.
    #[derive(Default)]
    pub struct Sampling {}
}

chat_request! {
    /// `POST /v1/chat/completions`.
    pub struct ChatCompletionRequest {
        pub model: String,
        pub messages: Vec<ChatMessage>,
        /// Choices to generate, in [1, 16].
        pub n: Option<i64>,
        /// Report each token's log-prob.
        pub logprobs: Option<bool>,
        /// Alternatives per token, in [0, 20]; needs `logprobs`.
        pub top_logprobs: Option<i64>,
        /// Answer as server-sent events.
        pub stream: Option<bool>,
        pub stream_options: Option<StreamOptions>,
        /// Hearth's extension: answer from a knowledge-base collection (its name, or options),
        /// with citations.
        #[schema(inline)]
        pub knowledge_base: Option<StringOr<KnowledgeBaseOptions>>,
    }
}

generation_request! {
    /// `POST /v1/completions`.
    pub struct CompletionRequest {
        pub model: String,
        /// A string, an array of token ids, or several of either (one job each, their
        /// choices numbered prompt by prompt).
        #[schema(inline)]
        pub prompt: TextsOrTokens,
        /// Choices per prompt, in [1, 16].
        pub n: Option<i64>,
        /// Alternatives reported per token, in [0, 20].
        pub logprobs: Option<i64>,
        /// Each choice's text starts with its prompt.
        pub echo: Option<bool>,
        pub stream: Option<bool>,
        pub stream_options: Option<StreamOptions>,
    }
}

/// OpenAI's `response_format`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    /// Letters, digits, `_` and `-`, at most 64.
    pub name: String,
    #[allow(dead_code)]
    pub description: Option<String>,
    /// The JSON schema; absent: any JSON value.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    /// Accepted either way: the schema is always enforced in full, or refused.
    #[allow(dead_code)]
    pub strict: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a last chunk with the usage of the whole request.
    pub include_usage: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    pub role: Role,
    /// A string, or text parts (joined); null in an assistant message that only calls tools.
    #[schema(inline)]
    #[serde(default)]
    pub content: Option<StringOr<Vec<ContentPart>>>,
    pub name: Option<String>,
    /// An assistant message's calls.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    /// An assistant message's reasoning, for templates that show it again.
    pub reasoning_content: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    /// OpenAI's newer name for `system`, rendered as it.
    Developer,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentPart {
    /// Only text parts are supported: the type admits no other, so nothing reads it.
    #[allow(dead_code)]
    #[serde(rename = "type")]
    pub kind: PartType,
    pub text: String,
}

#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PartType {
    Text,
}

#[derive(Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// The sampling a request gets for each field it leaves out (the operator's settings, then
    /// the model's own, then llama.cpp's); known once the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling_defaults: Option<SamplingDefaults>,
    /// An embedding model's declared settings; known once the model is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingModel>,
}

impl Model {
    pub fn new(id: String) -> Self {
        Model { id, object: "model", created: 0, owned_by: "hearth", sampling_defaults: None, embedding: None }
    }
}

/// What an embedding model declares (sentence-transformers' files).
#[derive(Serialize, ToSchema)]
pub struct EmbeddingModel {
    /// The vectors' length; `dimensions` may ask for a prefix.
    pub dimension: usize,
    /// The longest input, in tokens (special tokens included).
    pub max_tokens: usize,
    /// `cls`, `mean`, `max`, `mean_sqrt_len_tokens`, `weightedmean` or `lasttoken`.
    pub pooling: &'static str,
    pub normalized: bool,
    /// Named prompts, for `prompt_name`.
    pub prompts: std::collections::BTreeMap<String, String>,
    pub default_prompt_name: Option<String>,
}

impl From<hearth_embed::EmbedderInfo> for EmbeddingModel {
    fn from(i: hearth_embed::EmbedderInfo) -> Self {
        EmbeddingModel {
            dimension: i.dimension,
            max_tokens: i.max_tokens,
            pooling: i.pooling.name(),
            normalized: i.normalize,
            prompts: i.prompts,
            default_prompt_name: i.default_prompt_name,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SamplingDefaults {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub repetition_penalty: f32,
}

impl From<hearth_runtime::SamplingDefaults> for SamplingDefaults {
    fn from(d: hearth_runtime::SamplingDefaults) -> Self {
        let p = hearth_runtime::SamplingParams::from_settings(d);
        SamplingDefaults {
            temperature: p.temperature,
            top_p: p.top_p,
            top_k: p.top_k,
            min_p: p.min_p,
            repetition_penalty: p.repetition_penalty,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prompt cache.
    pub cached_tokens: usize,
}

/// `length` (hit `max_tokens`), `stop` (end of text or a stop string) or `tool_calls`.
pub type FinishReason = &'static str;

/// A chat completion, or (`object` `text_completion`) a text completion.
#[derive(Serialize, ToSchema)]
pub struct Completion<C> {
    pub id: String,
    /// `chat.completion` or `text_completion`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<C>,
    pub usage: Usage,
    /// With `knowledge_base`: the answer's citations and its sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_base: Option<Grounding>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Serialize, ToSchema)]
pub struct AssistantMessage {
    pub role: Role,
    /// Null when the reply only calls tools.
    pub content: Option<String>,
    /// The reasoning before the answer, for models that think aloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

#[derive(Serialize, ToSchema)]
pub struct TextChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<TextLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatLogprobs {
    pub content: Vec<TokenLogprob>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative to a token.
#[derive(Serialize, ToSchema)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// The completions API's parallel lists, one entry per token.
#[derive(Serialize, ToSchema)]
pub struct TextLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<HashMap<String, f32>>,
    /// Where each token starts in the choice's text, in bytes.
    pub text_offset: Vec<usize>,
}

/// One server-sent event of a streamed completion; the last (with `stream_options.include_usage`)
/// has no choices and the usage. The stream ends with `data: [DONE]`.
#[derive(Serialize, ToSchema)]
pub struct Chunk<C> {
    pub id: String,
    /// `chat.completion.chunk` or `text_completion`.
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: Option<String>,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub knowledge_base: Option<Grounding>,
}

#[derive(Serialize, ToSchema)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to its choice's message.
#[derive(Default, Serialize, ToSchema)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

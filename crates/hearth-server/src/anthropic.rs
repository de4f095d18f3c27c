//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`) on the same
//! generation: the request becomes the one chat request (tools, reasoning and all), the reply
//! is read back into text, thinking and tool-use blocks, streamed as Anthropic's events.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use hearth_runtime::{FinishReason, Usage};
use hearth_tools::{Delta, Reply};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::anthropic::{
    AnthropicError, BlockDelta, CountTokensRequest, MessageDeltaBody, MessageResponse, MessageUsage, MessagesRequest, OutputBlock,
    StreamEvent, TokenCount,
};
use crate::api::{Body, ModelErrors};
use crate::error::ApiError;
use crate::generation::{self, Started};
use crate::request;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(messages)).routes(routes!(count_tokens))
}

/// A reply to a conversation; server-sent events when `stream`.
#[utoipa::path(post, path = "/v1/messages", tag = "anthropic", request_body = MessagesRequest, responses(
    (status = 200, description = "JSON, or server-sent events with `stream`", content((MessageResponse = "application/json"), (StreamEvent = "text/event-stream"))),
    ModelErrors,
))]
async fn messages(State(state): State<AppState>, Body(body): Body<MessagesRequest>) -> Result<Response, ApiError> {
    let streaming = body.stream.unwrap_or(false);
    let mut started = generation::start(&state, request::anthropic(body)?, "msg").await?;
    if streaming {
        return Ok(sse(started).into_response());
    }
    let (reply, reason, usage) = generation::collect_reply(&mut started).await?;
    let content = blocks(&reply);
    let stop = stop_reason(reason, !reply.calls.is_empty());
    Ok(Json(MessageResponse { content, stop_reason: Some(stop), usage: message_usage(&usage), ..message(&started) }).into_response())
}

/// The prompt's length in tokens, as `/v1/messages` would render it.
#[utoipa::path(post, path = "/v1/messages/count_tokens", tag = "anthropic", request_body = CountTokensRequest, responses(
    (status = 200, description = "Done", body = TokenCount),
    ModelErrors,
))]
async fn count_tokens(State(state): State<AppState>, Body(body): Body<CountTokensRequest>) -> Result<Json<TokenCount>, ApiError> {
    // Rendered only: a count compiles no grammar and is not refused for exceeding the context.
    let rendered = generation::render(&state, request::anthropic_count(body)?).await?;
    Ok(Json(TokenCount { input_tokens: rendered.prompt_tokens() }))
}

/// The reply as content blocks: thinking, text, then each call.
fn blocks(reply: &Reply) -> Vec<OutputBlock> {
    let mut out = Vec::new();
    if let Some(thinking) = &reply.reasoning {
        out.push(OutputBlock::Thinking { thinking: thinking.clone(), signature: String::new() });
    }
    if !reply.content.is_empty() {
        out.push(OutputBlock::Text { text: reply.content.clone() });
    }
    for call in &reply.calls {
        let input = serde_json::from_str(&call.arguments).unwrap_or(Value::Object(Default::default()));
        out.push(OutputBlock::ToolUse { id: call.id.clone(), name: call.name.clone(), input });
    }
    out
}

/// A message with no content yet.
fn message(started: &Started) -> MessageResponse {
    MessageResponse {
        id: started.id.clone(),
        kind: "message",
        role: "assistant",
        model: started.resident.id.clone(),
        content: Vec::new(),
        stop_reason: None,
        stop_sequence: None,
        usage: MessageUsage { input_tokens: started.prompt_tokens, ..Default::default() },
    }
}

/// `tool_use` when the reply called, else why it ended. The runtime does not say which stop
/// string ended a reply, so a stop string reads as `end_turn`.
fn stop_reason(reason: FinishReason, called: bool) -> &'static str {
    match reason {
        FinishReason::Length => "max_tokens",
        _ if called => "tool_use",
        _ => "end_turn",
    }
}

fn message_usage(u: &Usage) -> MessageUsage {
    MessageUsage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cache_read_input_tokens: u.cached_tokens,
        cache_creation_input_tokens: 0,
    }
}

/// A streamed reply's content blocks: which is open, and how many there were.
#[derive(Default)]
struct Blocks {
    /// The open block's index and kind.
    open: Option<(usize, Kind)>,
    count: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thinking,
    Text,
    ToolUse,
}

impl Blocks {
    fn open_block(&mut self, kind: Kind, content_block: OutputBlock, out: &mut Vec<StreamEvent>) {
        out.extend(self.close());
        let index = self.count;
        self.count += 1;
        self.open = Some((index, kind));
        out.push(StreamEvent::ContentBlockStart { index, content_block });
    }

    fn close(&mut self) -> Option<StreamEvent> {
        self.open.take().map(|(index, _)| StreamEvent::ContentBlockStop { index })
    }
}

impl generation::ReplyFormat for Blocks {
    type Message = StreamEvent;

    /// A block opens where the kind of piece changes (each call is its own), then its delta.
    fn piece(&mut self, _: &Reply, d: Delta) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        let (kind, delta) = match d {
            Delta::Call { id, name, .. } => {
                let input = Value::Object(Default::default());
                self.open_block(Kind::ToolUse, OutputBlock::ToolUse { id, name, input }, &mut out);
                return out;
            }
            Delta::Arguments { text, .. } => (Kind::ToolUse, BlockDelta::InputJson { partial_json: text }),
            Delta::Reasoning(thinking) => (Kind::Thinking, BlockDelta::Thinking { thinking }),
            Delta::Content(text) => (Kind::Text, BlockDelta::Text { text }),
        };
        if self.open.map(|(_, k)| k) != Some(kind) {
            let start = match kind {
                Kind::Thinking => OutputBlock::Thinking { thinking: String::new(), signature: String::new() },
                _ => OutputBlock::Text { text: String::new() },
            };
            self.open_block(kind, start, &mut out);
        }
        let index = self.open.map_or(0, |(i, _)| i);
        out.push(StreamEvent::ContentBlockDelta { index, delta });
        out
    }

    fn end(&mut self, _: &Started, reply: &Reply, reason: FinishReason, usage: &Usage) -> Vec<StreamEvent> {
        let mut out: Vec<StreamEvent> = self.close().into_iter().collect();
        let delta = MessageDeltaBody { stop_reason: Some(stop_reason(reason, !reply.calls.is_empty())), stop_sequence: None };
        out.push(StreamEvent::MessageDelta { delta, usage: message_usage(usage) });
        out.push(StreamEvent::MessageStop);
        out
    }

    fn failed(&mut self, e: ApiError) -> Vec<StreamEvent> {
        vec![StreamEvent::Error { error: AnthropicError { kind: e.kind(), message: e.message } }]
    }
}

fn sse_event(e: &StreamEvent) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(e.name()).data(serde_json::to_string(e).unwrap_or_default()))
}

fn sse(started: Started) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let head = vec![StreamEvent::MessageStart { message: message(&started) }, StreamEvent::Ping];
    let events = stream::iter(head).chain(generation::stream_reply(started, Blocks::default())).map(|e| sse_event(&e));
    Sse::new(events).keep_alive(KeepAlive::default())
}

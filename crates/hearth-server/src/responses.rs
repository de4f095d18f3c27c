//! OpenAI's Responses API (`/v1/responses`) on the same generation: items become the one chat
//! request, the reply is read back into reasoning, message and function-call items, streamed
//! as the API's events; responses are stored in the server's database (unless `store` is
//! false) for `GET`, `DELETE` and `previous_response_id`.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use hearth_runtime::{FinishReason, Usage};
use hearth_tools::{Delta, Reply};
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::responses::{
    CreateResponse, Deleted, IncompleteDetails, InputItem, InputTokensDetails, ItemType, OutputItem, OutputText, OutputTokensDetails,
    PartType, ResponseObject, ResponseUsage, StreamEvent, TextConfig, TextFormat,
};
use crate::api::{Body, Errors, ModelErrors, StringOr};
use crate::error::ApiError;
use crate::generation::{self, Started};
use crate::request;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create)).routes(routes!(get, delete))
}

/// Create a response; server-sent events when `stream`.
#[utoipa::path(post, path = "/v1/responses", tag = "openai", request_body = CreateResponse, responses(
    (status = 200, description = "JSON, or server-sent events with `stream`", content((ResponseObject = "application/json"), (StreamEvent = "text/event-stream"))),
    ModelErrors,
))]
async fn create(State(state): State<AppState>, Body(body): Body<CreateResponse>) -> Result<Response, ApiError> {
    // The stored conversation comes first, then this request's items.
    let mut items = match &body.previous_response_id {
        None => Vec::new(),
        Some(id) => match state.models.registry.conversation(id)? {
            None => return Err(ApiError::invalid("previous_response_id", format!("no stored response has id {id:?}"))),
            Some(Err(gone)) => {
                return Err(ApiError::invalid(
                    "previous_response_id",
                    format!("the conversation of {id:?} continues {gone:?}, which was deleted"),
                ))
            }
            Some(Ok(conversation)) => crate::api::from_value::<Vec<InputItem>>(Value::Array(conversation))
                .map_err(|e| ApiError::internal(format!("a stored conversation does not read back: {}", e.message)))?,
        },
    };
    let earlier = items.len();
    items.extend(match body.input.clone() {
        StringOr::String(text) => vec![user_message(text)],
        StringOr::Other(list) => list,
    });
    let req = request::responses(&body, &items, earlier)?;
    let streaming = body.stream.unwrap_or(false);
    let started = generation::start(&state, req, "resp").await?;
    let turn = Turn { state: state.clone(), request: body, items: items.split_off(earlier) };
    if streaming {
        return Ok(sse(turn, started).into_response());
    }
    let mut started = started;
    let (reply, reason, usage) = generation::collect_reply(&mut started).await?;
    let response = turn.finish(&started, &reply, reason, &usage)?;
    Ok(Json(response).into_response())
}

/// A stored response.
#[utoipa::path(get, path = "/v1/responses/{id}", tag = "openai", params(("id" = String, Path)), responses((status = 200, description = "Done", body = ResponseObject), Errors))]
async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.models.registry.response(&id)?.ok_or_else(|| not_found(&id))?))
}

/// Delete a stored response.
#[utoipa::path(delete, path = "/v1/responses/{id}", tag = "openai", params(("id" = String, Path)), responses((status = 200, description = "Done", body = Deleted), Errors))]
async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Deleted>, ApiError> {
    if !state.models.registry.delete_response(&id)? {
        return Err(not_found(&id));
    }
    Ok(Json(Deleted { id, object: "response", deleted: true }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no stored response has id {id:?}"))
}

fn user_message(text: String) -> InputItem {
    InputItem {
        kind: None,
        role: Some("user".into()),
        content: Some(StringOr::String(text)),
        id: None,
        status: None,
        call_id: None,
        name: None,
        arguments: None,
        output: None,
        summary: None,
        encrypted_content: None,
    }
}

/// What a response needs besides the reply: the request (echoed in the response) and its
/// input items (stored with it; the conversation before them is its parent's).
struct Turn {
    state: AppState,
    request: CreateResponse,
    items: Vec<InputItem>,
}

impl Turn {
    /// The response before any output.
    fn response(&self, started: &Started, status: &'static str) -> ResponseObject {
        let r = &self.request;
        ResponseObject {
            id: started.id.clone(),
            object: "response",
            created_at: started.created,
            status,
            model: started.resident.id.clone(),
            output: Vec::new(),
            usage: ResponseUsage::default(),
            error: None,
            incomplete_details: None,
            instructions: r.instructions.clone(),
            max_output_tokens: r.max_output_tokens,
            parallel_tool_calls: r.parallel_tool_calls.unwrap_or(true),
            previous_response_id: r.previous_response_id.clone(),
            reasoning: r.reasoning.clone(),
            store: r.store.unwrap_or(true),
            temperature: r.temperature,
            top_p: r.top_p,
            text: r.text.clone().unwrap_or(TextConfig { format: Some(TextFormat::Text), verbosity: None }),
            tool_choice: match &r.tool_choice {
                None => json!("auto"),
                Some(StringOr::String(s)) => json!(s),
                Some(StringOr::Other(named)) => serde_json::to_value(named).unwrap_or_default(),
            },
            tools: r.tools.clone().unwrap_or_default(),
            metadata: r.metadata.clone().unwrap_or_else(|| json!({})),
        }
    }

    /// The finished response, stored unless the request said not to.
    fn finish(self, started: &Started, reply: &Reply, reason: FinishReason, usage: &Usage) -> Result<ResponseObject, ApiError> {
        let cut = reason == FinishReason::Length;
        let mut response = self.response(started, if cut { "incomplete" } else { "completed" });
        response.incomplete_details = cut.then_some(IncompleteDetails { reason: "max_output_tokens" });
        response.output = output_items(started, reply);
        response.usage = ResponseUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens: usage.cached_tokens },
            output_tokens_details: OutputTokensDetails::default(),
        };
        if response.store {
            // The conversation goes on from this turn's items and its output, as input items.
            let mut turn = serde_json::to_value(&self.items).unwrap_or_default();
            if let Value::Array(list) = &mut turn {
                list.extend(response.output.iter().map(|o| serde_json::to_value(o).unwrap_or_default()));
            }
            let json = serde_json::to_value(&response).unwrap_or_default();
            let parent = self.request.previous_response_id.as_deref();
            self.state.models.registry.store_response(&response.id, response.created_at, &json, &turn, parent)?;
        }
        Ok(response)
    }
}

/// The reply as output items: reasoning, the message, then each call. Item ids derive from the
/// response's, so a stored conversation reads back the same.
fn output_items(started: &Started, reply: &Reply) -> Vec<OutputItem> {
    let suffix = started.id.trim_start_matches("resp-");
    let mut out = Vec::new();
    if let Some(text) = &reply.reasoning {
        out.push(OutputItem::Reasoning {
            id: format!("rs_{suffix}"),
            summary: Vec::new(),
            content: vec![part(PartType::ReasoningText, text)],
        });
    }
    if !reply.content.is_empty() || reply.calls.is_empty() {
        out.push(message_item(suffix, &reply.content));
    }
    for (i, c) in reply.calls.iter().enumerate() {
        out.push(call_item(suffix, i, &c.id, &c.name, &c.arguments));
    }
    out
}

fn part(kind: PartType, text: &str) -> OutputText {
    OutputText { kind, text: text.to_string(), annotations: (kind == PartType::OutputText).then(Vec::new) }
}

fn message_item(suffix: &str, text: &str) -> OutputItem {
    OutputItem::Message {
        id: format!("msg_{suffix}"),
        status: "completed",
        role: "assistant",
        content: vec![part(PartType::OutputText, text)],
    }
}

fn call_item(suffix: &str, index: usize, call_id: &str, name: &str, arguments: &str) -> OutputItem {
    OutputItem::FunctionCall {
        id: format!("fc_{suffix}_{index}"),
        call_id: call_id.to_string(),
        name: name.to_string(),
        arguments: arguments.to_string(),
        status: "completed",
    }
}

struct Open {
    output_index: usize,
    kind: ItemType,
    text: String,
    call: usize,
}

/// A streamed response's items: the open one, how many there were, and the events' numbering.
struct Items {
    /// Taken when the response ends (it is finished and stored then).
    turn: Option<Turn>,
    /// The response id's suffix, which item ids share.
    suffix: String,
    sequence: usize,
    /// The open item: its output index, kind, text so far and (a call's) index among the calls.
    open: Option<Open>,
    count: usize,
    /// Each call's id and name, as they began.
    calls: Vec<(String, String)>,
}

impl Items {
    fn event(&mut self, kind: &'static str, fields: Value) -> StreamEvent {
        let fields = match fields {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        self.sequence += 1;
        StreamEvent { kind, sequence_number: self.sequence - 1, fields }
    }

    fn item_id(&self, kind: ItemType, index: usize) -> String {
        let suffix = &self.suffix;
        match kind {
            ItemType::Reasoning => format!("rs_{suffix}"),
            ItemType::FunctionCall => format!("fc_{suffix}_{index}"),
            _ => format!("msg_{suffix}"),
        }
    }

    /// Opens an item of `kind` (closing another) unless one is open; `call`: a call's index.
    fn ensure(&mut self, kind: ItemType, call: usize, item: Value) -> Vec<StreamEvent> {
        if matches!(&self.open, Some(o) if o.kind == kind && o.call == call) {
            return Vec::new();
        }
        let mut out = self.close();
        let index = self.count;
        self.count += 1;
        self.open = Some(Open { output_index: index, kind, text: String::new(), call });
        out.push(self.event("response.output_item.added", json!({"output_index": index, "item": item})));
        if kind == ItemType::Message {
            let id = self.item_id(kind, 0);
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            out.push(
                self.event("response.content_part.added", json!({"item_id": id, "output_index": index, "content_index": 0, "part": part})),
            );
        }
        out
    }

    /// The events that end the open item.
    fn close(&mut self) -> Vec<StreamEvent> {
        let Some(Open { output_index: index, kind, text, call }) = self.open.take() else { return Vec::new() };
        let suffix = self.suffix.clone();
        let mut out = Vec::new();
        let item = match kind {
            ItemType::Reasoning => {
                let id = self.item_id(kind, 0);
                out.push(self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                ));
                OutputItem::Reasoning { id, summary: Vec::new(), content: vec![part(PartType::ReasoningText, &text)] }
            }
            ItemType::FunctionCall => {
                let id = self.item_id(kind, call);
                out.push(
                    self.event("response.function_call_arguments.done", json!({"item_id": id, "output_index": index, "arguments": text})),
                );
                let (call_id, name) = self.calls.get(call).cloned().unwrap_or_default();
                call_item(&suffix, call, &call_id, &name, &text)
            }
            _ => {
                let id = self.item_id(kind, 0);
                let done = json!({"item_id": id, "output_index": index, "content_index": 0, "text": text});
                out.push(self.event("response.output_text.done", done));
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                out.push(
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                    ),
                );
                message_item(&suffix, &text)
            }
        };
        out.push(self.event("response.output_item.done", json!({"output_index": index, "item": item})));
        out
    }

    fn piece_events(&mut self, d: Delta) -> Vec<StreamEvent> {
        let (kind, delta_type, delta, has_part) = match d {
            Delta::Reasoning(text) => (ItemType::Reasoning, "response.reasoning_text.delta", text, true),
            Delta::Content(text) => (ItemType::Message, "response.output_text.delta", text, true),
            Delta::Call { index, id, name } => {
                let item = json!({"type": "function_call", "id": self.item_id(ItemType::FunctionCall, index), "call_id": id, "name": name,
                                  "arguments": "", "status": "in_progress"});
                self.calls.push((id, name));
                return self.ensure(ItemType::FunctionCall, index, item);
            }
            Delta::Arguments { text, .. } => (ItemType::FunctionCall, "response.function_call_arguments.delta", text, false),
        };
        let mut out = match kind {
            ItemType::Reasoning => {
                let item = json!({"type": "reasoning", "id": self.item_id(kind, 0), "summary": [], "content": []});
                self.ensure(kind, 0, item)
            }
            ItemType::Message => {
                let item =
                    json!({"type": "message", "id": self.item_id(kind, 0), "status": "in_progress", "role": "assistant", "content": []});
                self.ensure(kind, 0, item)
            }
            _ => Vec::new(),
        };
        let Some(open) = self.open.as_mut() else { return out };
        open.text.push_str(&delta);
        let (index, call) = (open.output_index, open.call);
        let id = self.item_id(kind, call);
        let mut fields = json!({"item_id": id, "output_index": index, "delta": delta});
        if has_part {
            fields["content_index"] = 0.into();
        }
        out.push(self.event(delta_type, fields));
        out
    }
}

impl generation::ReplyFormat for Items {
    type Message = StreamEvent;

    fn piece(&mut self, _: &Reply, d: Delta) -> Vec<StreamEvent> {
        self.piece_events(d)
    }

    /// The last item closed, then the finished (and stored) response.
    fn end(&mut self, started: &Started, reply: &Reply, reason: FinishReason, usage: &Usage) -> Vec<StreamEvent> {
        // A reply with neither text nor calls still has its (empty) message, as `output_items` says.
        let mut out = Vec::new();
        if reply.content.is_empty() && reply.calls.is_empty() {
            let item = json!({"type": "message", "id": self.item_id(ItemType::Message, 0), "status": "in_progress", "role": "assistant", "content": []});
            out.extend(self.ensure(ItemType::Message, 0, item));
        }
        out.extend(self.close());
        let Some(turn) = self.turn.take() else { return out };
        match turn.finish(started, reply, reason, usage) {
            Ok(response) => {
                let kind = if response.status == "completed" { "response.completed" } else { "response.incomplete" };
                out.push(self.event(kind, json!({"response": response})));
            }
            Err(e) => out.extend(self.failed(e)),
        }
        out
    }

    fn failed(&mut self, e: ApiError) -> Vec<StreamEvent> {
        vec![self.event("error", json!({"code": e.code, "message": e.message, "param": e.param}))]
    }
}

fn sse_event(e: &StreamEvent) -> Result<SseEvent, Infallible> {
    Ok(SseEvent::default().event(e.kind).data(serde_json::to_string(e).unwrap_or_default()))
}

fn sse(turn: Turn, started: Started) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let created = turn.response(&started, "in_progress");
    let suffix = started.id.trim_start_matches("resp-").to_string();
    let mut items = Items { turn: Some(turn), suffix, sequence: 0, open: None, count: 0, calls: Vec::new() };
    let head = vec![
        items.event("response.created", json!({"response": created})),
        items.event("response.in_progress", json!({"response": created})),
    ];
    let events = stream::iter(head).chain(generation::stream_reply(started, items)).map(|e| sse_event(&e));
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two calls streamed one after the other: each call's closing events carry its own item
    /// id, call id and name, and each output index is used once.
    #[test]
    fn each_streamed_call_closes_as_itself() {
        let mut items = Items { turn: None, suffix: "x".into(), sequence: 0, open: None, count: 0, calls: Vec::new() };
        let mut events = Vec::new();
        for (i, (id, name)) in [("call_a", "f"), ("call_b", "g")].into_iter().enumerate() {
            events.extend(items.piece_events(Delta::Call { index: i, id: id.into(), name: name.into() }));
            events.extend(items.piece_events(Delta::Arguments { index: i, text: format!("{{\"n\": {i}}}") }));
        }
        events.extend(items.close());
        let done: Vec<&StreamEvent> = events.iter().filter(|e| e.kind == "response.output_item.done").collect();
        assert_eq!(done.len(), 2);
        for (i, e) in done.iter().enumerate() {
            let item = &e.fields["item"];
            let (id, name) = [("call_a", "f"), ("call_b", "g")][i];
            assert_eq!(
                (item["id"].as_str(), item["call_id"].as_str(), item["name"].as_str()),
                (Some(format!("fc_x_{i}").as_str()), Some(id), Some(name))
            );
            assert_eq!(item["arguments"], format!("{{\"n\": {i}}}"));
            assert_eq!(e.fields["output_index"], i);
        }
        let args_done: Vec<&Value> =
            events.iter().filter(|e| e.kind == "response.function_call_arguments.done").map(|e| &e.fields["item_id"]).collect();
        assert_eq!(args_done, [&json!("fc_x_0"), &json!("fc_x_1")]);
    }
}

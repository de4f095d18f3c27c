//! The chat backend's routes (`/api/*`): health, models with load/unload, chat completions as
//! one message, as SSE, and over a WebSocket that reports errors without closing.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::backend::{BackendChatRequest, BackendEvent, BackendHealth, BackendModel, BackendModels, BackendReply, Loaded, Unloaded};
use crate::api::{Body, Errors, ModelErrors};
use crate::error::ApiError;
use crate::generation::{self, chat_finish, Started};
use crate::request::{self, GenRequest};
use crate::AppState;
use hearth_runtime::{FinishReason, Usage};
use hearth_tools::{Delta, Reply};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(models))
        .routes(routes!(load))
        .routes(routes!(unload))
        .routes(routes!(chat))
        .routes(routes!(chat_stream))
        .routes(routes!(ws))
}

/// Health and the loaded models.
#[utoipa::path(get, path = "/api/health", operation_id = "backend_health", tag = "chat backend", responses((status = 200, description = "Done", body = BackendHealth), Errors))]
async fn health(State(state): State<AppState>) -> Json<BackendHealth> {
    let loaded_models: Vec<String> = state.models.residents().iter().map(|r| r.id.clone()).collect();
    Json(BackendHealth {
        status: "ok",
        model_loaded: !loaded_models.is_empty(),
        loaded_models,
        default_model: state.models.default_id().map(str::to_string),
    })
}

/// Models and whether they are loaded.
#[utoipa::path(get, path = "/api/models", tag = "chat backend", responses((status = 200, description = "Done", body = BackendModels), Errors))]
async fn models(State(state): State<AppState>) -> Json<BackendModels> {
    let models =
        state.models.known_ids().into_iter().map(|id| BackendModel { loaded: state.models.is_loaded(&id), name: id.clone(), id }).collect();
    Json(BackendModels { models, default_model: state.models.default_id().map(str::to_string) })
}

/// A model id from an `/api/models/{id}` path. The chat backend writes a repo id's `/` as `__`
/// (`mlx-community__Llama-3.2-3B-Instruct-4bit`); the id as given wins when it names a model.
pub fn path_model_id(state: &AppState, id: String) -> String {
    if !id.contains("__") || state.models.is_loaded(&id) || state.models.locate(&id).is_ok() {
        return id;
    }
    id.replacen("__", "/", 1)
}

/// Load a model (a repo id's `/` may be written `__`).
#[utoipa::path(post, path = "/api/models/{model_id}/load", tag = "chat backend", params(("model_id" = String, Path)),
    responses((status = 200, description = "Done", body = Loaded), ModelErrors))]
async fn load(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Loaded>, ApiError> {
    let id = path_model_id(&state, id);
    let r = state.models.get(&id, None).await?;
    Ok(Json(Loaded { status: "loaded", model_id: r.id.clone(), memory_bytes: r.memory_bytes() }))
}

/// Unload a model (a repo id's `/` may be written `__`).
#[utoipa::path(post, path = "/api/models/{model_id}/unload", tag = "chat backend", params(("model_id" = String, Path)),
    responses((status = 200, description = "Done", body = Unloaded), Errors))]
async fn unload(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Unloaded>, ApiError> {
    let id = path_model_id(&state, id);
    if state.models.unload(&id) {
        return Ok(Json(Unloaded { status: "unloaded", model_id: id }));
    }
    state.models.locate(&id)?;
    Ok(Json(Unloaded { status: "not_loaded", model_id: id }))
}

/// Chat reply as one message.
#[utoipa::path(post, path = "/api/chat/completions", tag = "chat backend", request_body = BackendChatRequest,
    responses((status = 200, description = "Done", body = BackendReply), ModelErrors))]
async fn chat(State(state): State<AppState>, Body(body): Body<BackendChatRequest>) -> Result<Json<BackendReply>, ApiError> {
    let mut started = generation::start(&state, request::backend(body)?, "chat").await?;
    let (choices, usage) = generation::collect(&mut started).await?;
    let choice = choices.into_iter().next().unwrap_or_default();
    let (message, finish_reason) = generation::assistant_message(started.reading, choice.text, choice.finish);
    Ok(Json(BackendReply {
        id: started.id.clone(),
        model: started.resident.id.clone(),
        message,
        finish_reason,
        usage: generation::usage(&usage),
    }))
}

/// The backend's streamed messages: text and reasoning as they come, the calls whole at the
/// end, then `done` (or an `error`).
struct Backend;

impl generation::ReplyFormat for Backend {
    type Message = BackendEvent;

    fn piece(&mut self, _: &Reply, d: Delta) -> Vec<BackendEvent> {
        match d {
            Delta::Content(content) => vec![BackendEvent::Token { content }],
            Delta::Reasoning(content) => vec![BackendEvent::Reasoning { content }],
            Delta::Call { .. } | Delta::Arguments { .. } => Vec::new(),
        }
    }

    fn end(&mut self, started: &Started, reply: &Reply, reason: FinishReason, usage: &Usage) -> Vec<BackendEvent> {
        let mut out = Vec::new();
        if !reply.calls.is_empty() {
            out.push(BackendEvent::ToolCalls { tool_calls: reply.calls.iter().cloned().map(generation::tool_call).collect() });
        }
        let finish_reason = chat_finish(reason, !reply.calls.is_empty());
        out.push(BackendEvent::Done { model: started.resident.id.clone(), finish_reason, usage: generation::usage(usage) });
        out
    }

    fn failed(&mut self, e: ApiError) -> Vec<BackendEvent> {
        vec![error_message(e)]
    }
}

fn error_message(e: ApiError) -> BackendEvent {
    BackendEvent::Error { status: e.status.as_u16(), message: e.message.clone(), error: e.detail() }
}

/// Chat reply as server-sent token messages, then `done`.
#[utoipa::path(post, path = "/api/chat/completions/stream", tag = "chat backend", request_body = BackendChatRequest,
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = BackendEvent), ModelErrors))]
async fn chat_stream(State(state): State<AppState>, Body(body): Body<BackendChatRequest>) -> Result<Response, ApiError> {
    let started = generation::start(&state, request::backend(body)?, "chat").await?;
    let events = generation::stream_reply(started, Backend).map(|m| Ok::<_, std::convert::Infallible>(SseEvent::default().data(text(&m))));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// WebSocket chat: send `{"type": "chat", …chat fields}` (or `{"type": "ping"}`), receive
/// token messages then `done`; a bad message gets an `error` message and the socket stays open.
#[utoipa::path(get, path = "/api/chat/ws", tag = "chat backend",
    responses((status = 101, description = "Switching to the WebSocket protocol; messages are `BackendEvent`s", body = BackendEvent), Errors))]
async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(state, socket))
}

/// One chat request of the WebSocket: its `type` taken out, the rest read as a chat request.
fn socket_request(text: &str) -> Result<Option<GenRequest>, ApiError> {
    let mut value: Value = serde_json::from_str(text).map_err(|e| ApiError::bad_request(format!("the message is not valid JSON: {e}")))?;
    let kind = value.as_object_mut().and_then(|o| o.remove("type"));
    match kind.as_ref().and_then(Value::as_str) {
        Some("ping") => Ok(None),
        Some("chat") => Ok(Some(request::backend(crate::api::from_value(value)?)?)),
        _ => Err(ApiError::invalid("type", "`type` must be \"chat\" or \"ping\"")),
    }
}

/// One conversation per socket: each `{"type": "chat", …}` message gets token messages then
/// `done`; a bad message gets an `error` message and the socket stays open.
async fn serve_socket(state: AppState, mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return,
            _ => continue,
        };
        let reply = match socket_request(text.as_str()) {
            Ok(None) => {
                if send(&mut socket, BackendEvent::Pong).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Some(req)) => generation::start(&state, req, "chat").await,
            Err(e) => Err(e),
        };
        let result = match reply {
            Ok(started) => stream_reply(&mut socket, started).await,
            Err(e) => send(&mut socket, error_message(e)).await,
        };
        if result.is_err() {
            // The client left; dropping the reply's receiver frees its sequence.
            return;
        }
    }
}

async fn stream_reply(socket: &mut WebSocket, started: Started) -> Result<(), axum::Error> {
    let mut messages = std::pin::pin!(generation::stream_reply(started, Backend));
    while let Some(msg) = messages.next().await {
        send(socket, msg).await?;
    }
    Ok(())
}

fn text(event: &BackendEvent) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

async fn send(socket: &mut WebSocket, event: BackendEvent) -> Result<(), axum::Error> {
    socket.send(Message::Text(text(&event).into())).await
}

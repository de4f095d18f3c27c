//! The chat backend's routes (`/api/*`): health, models with load/unload, chat completions as
//! one message, as SSE, and over a WebSocket that reports errors without closing.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::fields::{parse_object, JsonObject};
use crate::generation::{self, add_usage, finish_str, usage_json, Started};
use crate::request::{self, Endpoint, GenRequest};
use crate::scheduler::{Event, Usage};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/models", get(models))
        .route("/api/models/{model_id}/load", post(load))
        .route("/api/models/{model_id}/unload", post(unload))
        .route("/api/chat/completions", post(chat))
        .route("/api/chat/completions/stream", post(chat_stream))
        .route("/api/chat/ws", get(ws))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let loaded: Vec<String> = state.models.residents().iter().map(|r| r.id.clone()).collect();
    Json(json!({"status": "ok", "model_loaded": !loaded.is_empty(), "loaded_models": loaded, "default_model": state.models.default_id()}))
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    let models: Vec<Value> = state
        .models
        .known_ids()
        .into_iter()
        .map(|id| {
            let loaded = state.models.is_loaded(&id);
            json!({"id": id, "name": id, "loaded": loaded})
        })
        .collect();
    Json(json!({"models": models, "default_model": state.models.default_id()}))
}

/// A model id from an `/api/models/{id}` path. The chat backend writes a repo id's `/` as `__`
/// (`mlx-community__Llama-3.2-3B-Instruct-4bit`); the id as given wins when it names a model.
pub fn path_model_id(state: &AppState, id: String) -> String {
    if !id.contains("__") || state.models.is_loaded(&id) || state.models.locate(&id).is_ok() {
        return id;
    }
    id.replacen("__", "/", 1)
}

async fn load(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = path_model_id(&state, id);
    let r = state.models.get(&id, None).await?;
    Ok(Json(json!({"status": "loaded", "model_id": r.id, "memory_bytes": r.memory_bytes()})))
}

async fn unload(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let id = path_model_id(&state, id);
    if state.models.unload(&id) {
        return Ok(Json(json!({"status": "unloaded", "model_id": id})));
    }
    state.models.locate(&id)?;
    Ok(Json(json!({"status": "not_loaded", "model_id": id})))
}

/// A backend chat request: the OpenAI chat fields, one choice.
fn parse(body: Map<String, Value>) -> Result<GenRequest, ApiError> {
    let req = request::parse(body, Endpoint::Backend)?;
    if req.n != 1 {
        return Err(ApiError::invalid("n", "the chat backend returns one message; use /v1/chat/completions for `n` > 1"));
    }
    Ok(req)
}

async fn chat(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Json<Value>, ApiError> {
    let mut started = generation::start(&state, parse(body)?, "chat").await?;
    let (choices, usage) = generation::collect(&mut started).await?;
    let choice = &choices[0];
    Ok(Json(json!({
        "id": started.id,
        "model": started.resident.id,
        "message": {"role": "assistant", "content": choice.text},
        "finish_reason": choice.finish.map(finish_str),
        "usage": usage_json(&usage),
    })))
}

/// The backend's streaming messages for one scheduler event; `None` when the reply is over
/// (after a `done` or `error` message).
fn backend_message(event: Option<Event>, usage: &mut Usage, model: &str) -> (Option<Value>, bool) {
    match event {
        Some(Event::Token { text, .. }) if text.is_empty() => (None, false),
        Some(Event::Token { text, .. }) => (Some(json!({"type": "token", "content": text})), false),
        Some(Event::Finished { reason, usage: u, .. }) => {
            add_usage(usage, u);
            (Some(json!({"type": "done", "model": model, "finish_reason": finish_str(reason), "usage": usage_json(usage)})), true)
        }
        Some(Event::Failed(m)) => (Some(error_message(&ApiError::internal(m))), true),
        None => (Some(error_message(&ApiError::internal("the model's scheduler stopped"))), true),
    }
}

fn error_message(e: &ApiError) -> Value {
    let mut v = e.body();
    v["type"] = "error".into();
    v["status"] = e.status.as_u16().into();
    v["message"] = e.message.clone().into();
    v
}

async fn chat_stream(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let started = generation::start(&state, parse(body)?, "chat").await?;
    let events = stream::unfold((started, Usage::default(), false), |(mut s, mut usage, over)| async move {
        if over {
            return None;
        }
        let event = s.events.recv().await;
        let (msg, over) = backend_message(event, &mut usage, &s.resident.id);
        Some((msg, (s, usage, over)))
    })
    .filter_map(|m| async move { m.map(|m| Ok::<_, std::convert::Infallible>(SseEvent::default().data(m.to_string()))) });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

async fn ws(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| serve_socket(state, socket))
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
        let reply = match parse_object(text.as_bytes()) {
            Err(e) => Err(e),
            Ok(mut obj) => match obj.remove("type") {
                Some(Value::String(t)) if t == "ping" => {
                    if send(&mut socket, json!({"type": "pong"})).await.is_err() {
                        return;
                    }
                    continue;
                }
                Some(Value::String(t)) if t == "chat" => match parse(obj) {
                    Ok(req) => generation::start(&state, req, "chat").await,
                    Err(e) => Err(e),
                },
                _ => Err(ApiError::invalid("type", "`type` must be \"chat\" or \"ping\"")),
            },
        };
        let result = match reply {
            Ok(started) => stream_reply(&mut socket, started).await,
            Err(e) => send(&mut socket, error_message(&e)).await,
        };
        if result.is_err() {
            // The client left; dropping the reply's receiver frees its sequence.
            return;
        }
    }
}

async fn stream_reply(socket: &mut WebSocket, mut started: Started) -> Result<(), axum::Error> {
    let mut usage = Usage::default();
    loop {
        let event = started.events.recv().await;
        let (msg, over) = backend_message(event, &mut usage, &started.resident.id);
        if let Some(msg) = msg {
            send(socket, msg).await?;
        }
        if over {
            return Ok(());
        }
    }
}

async fn send(socket: &mut WebSocket, v: Value) -> Result<(), axum::Error> {
    socket.send(Message::Text(v.to_string().into())).await
}

//! The OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//! each streaming (SSE) or not.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use hearth_kb::Hit;
use hearth_runtime::TokenLogprob;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::JsonObject;
use crate::generation::{self, add_usage, chat_logprobs, completion_logprobs, finish_str, usage_json, Started};
use crate::kb_api;
use crate::request::{self, Endpoint};
use crate::AppState;
use hearth_runtime::{Event, Usage};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{id}", get(get_model))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 0, "owned_by": "hearth"})
}

async fn list_models(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state.models.known_ids().iter().map(|id| model_object(id)).collect();
    Json(json!({"object": "list", "data": data}))
}

async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if state.models.known_ids().contains(&id) || state.models.locate(&id).is_ok() {
        Ok(Json(model_object(&id)))
    } else {
        Err(ApiError::model_not_found(&id))
    }
}

async fn chat_completions(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    complete(state, body, Endpoint::Chat).await
}

async fn completions(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    complete(state, body, Endpoint::Completion).await
}

async fn complete(state: AppState, mut body: serde_json::Map<String, Value>, endpoint: Endpoint) -> Result<Response, ApiError> {
    // Hearth's extension: answer from a knowledge-base collection, with citations.
    let rag = body.remove("knowledge_base").map(kb_api::rag_options).transpose()?;
    let mut req = request::parse(body, endpoint)?;
    let (streaming, include_usage) = (req.stream, req.include_usage);
    let chat = endpoint == Endpoint::Chat;
    let sources = match rag {
        None => None,
        Some(_) if !chat => return Err(ApiError::invalid("knowledge_base", "`knowledge_base` is for /v1/chat/completions")),
        Some(rag) => Some(kb_api::augment(&state, &mut req, rag).await?),
    };
    let mut started = generation::start(&state, req, if chat { "chatcmpl" } else { "cmpl" }).await?;
    if streaming {
        return Ok(sse(started, chat, include_usage, sources).into_response());
    }
    let (choices, usage) = generation::collect(&mut started).await?;
    let r = &started.resident;
    let choices: Vec<Value> = choices
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let finish = c.finish.map(finish_str);
            if chat {
                let logprobs = (!c.logprobs.is_empty()).then(|| chat_logprobs(r, &c.logprobs));
                json!({"index": index, "message": {"role": "assistant", "content": c.text}, "logprobs": logprobs, "finish_reason": finish})
            } else {
                let logprobs = (!c.logprobs.is_empty()).then(|| completion_logprobs(r, &c.logprobs, 0));
                json!({"index": index, "text": c.text, "logprobs": logprobs, "finish_reason": finish})
            }
        })
        .collect();
    let object = if chat { "chat.completion" } else { "text_completion" };
    let mut out = json!({
        "id": started.id, "object": object, "created": started.created, "model": r.id,
        "system_fingerprint": null, "choices": choices, "usage": usage_json(&usage),
    });
    if let Some(sources) = sources {
        out["knowledge_base"] = kb_api::grounding_json(&choices_text(&out), &sources);
    }
    Ok(Json(out).into_response())
}

/// The first choice's message text.
fn choices_text(response: &Value) -> String {
    response["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

/// The state of one SSE response.
struct Streaming {
    started: Started,
    chat: bool,
    include_usage: bool,
    open: usize,
    usage: Usage,
    /// Per choice, bytes streamed so far (completions' `text_offset`).
    offsets: Vec<usize>,
    done: bool,
    /// With `knowledge_base`: the sources, and the first choice's text so far, for the
    /// citations sent after it finishes.
    grounding: Option<(Vec<Hit>, String)>,
}

impl Streaming {
    fn chunk(&self, choices: Value) -> String {
        let object = if self.chat { "chat.completion.chunk" } else { "text_completion" };
        let s = &self.started;
        json!({"id": s.id, "object": object, "created": s.created, "model": s.resident.id, "system_fingerprint": null, "choices": choices})
            .to_string()
    }

    fn token(&mut self, index: usize, text: String, logprob: Option<(u32, TokenLogprob)>) -> String {
        let r = &self.started.resident;
        let lp: Vec<_> = logprob.into_iter().collect();
        let choice = if self.chat {
            let logprobs = (!lp.is_empty()).then(|| chat_logprobs(r, &lp));
            json!({"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": null})
        } else {
            let logprobs = (!lp.is_empty()).then(|| completion_logprobs(r, &lp, self.offsets[index]));
            json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": null})
        };
        self.offsets[index] += text.len();
        self.chunk(json!([choice]))
    }

    /// The data lines one scheduler event turns into.
    fn on(&mut self, event: Option<Event>) -> Vec<String> {
        match event {
            Some(Event::Token { index, text, token }) => {
                let logprob = token.and_then(|t| Some((t.id, t.logprob?)));
                if text.is_empty() && logprob.is_none() {
                    return Vec::new();
                }
                if let (0, Some((_, answer))) = (index, &mut self.grounding) {
                    answer.push_str(&text);
                }
                vec![self.token(index, text, logprob)]
            }
            Some(Event::Finished { index, reason, usage }) => {
                add_usage(&mut self.usage, usage);
                self.open -= 1;
                let finish = finish_str(reason);
                let choice = if self.chat {
                    json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish})
                } else {
                    json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish})
                };
                let mut out = vec![self.chunk(json!([choice]))];
                if self.open == 0 {
                    if let Some((sources, answer)) = &self.grounding {
                        let mut last: Value = serde_json::from_str(&self.chunk(json!([]))).unwrap_or_default();
                        last["knowledge_base"] = kb_api::grounding_json(answer, sources);
                        out.push(last.to_string());
                    }
                    if self.include_usage {
                        let mut last: Value = serde_json::from_str(&self.chunk(json!([]))).unwrap_or_default();
                        last["usage"] = usage_json(&self.usage);
                        out.push(last.to_string());
                    }
                    out.push("[DONE]".into());
                    self.done = true;
                }
                out
            }
            Some(Event::Failed(e)) => {
                self.done = true;
                vec![ApiError::from(e).body().to_string()]
            }
            None => {
                self.done = true;
                vec![ApiError::internal("the model's scheduler stopped").body().to_string()]
            }
        }
    }
}

/// Dropping this stream (the client went away) drops the event receiver, which frees the
/// sequences at the scheduler's next step.
fn sse(
    started: Started,
    chat: bool,
    include_usage: bool,
    sources: Option<Vec<Hit>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let n = started.n;
    let grounding = sources.map(|s| (s, String::new()));
    let st = Streaming { started, chat, include_usage, open: n, usage: Usage::default(), offsets: vec![0; n], done: false, grounding };
    let head: Vec<String> = if chat {
        (0..n)
            .map(|i| {
                st.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
            })
            .collect()
    } else {
        Vec::new()
    };
    let body = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let event = st.started.events.recv().await;
        Some((st.on(event), st))
    });
    let events = stream::iter(head).chain(body.flat_map(stream::iter)).map(|data| Ok(SseEvent::default().data(data)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

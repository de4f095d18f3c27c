//! The OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//! each streaming (SSE) or not.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use hearth_engine::TokenLogprob;
use hearth_kb::Hit;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::fields::JsonObject;
use crate::generation::{self, add_usage, chat_logprobs, completion_logprobs, finish_str, usage_json, Started};
use crate::kb_api;
use crate::models::Resident;
use crate::request::{self, Endpoint, GenRequest, Prompt};
use crate::scheduler::{Event, Usage};
use crate::AppState;

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
    // Each prompt of a batch is its own job; their choices follow in prompt order.
    let prompts: Vec<Prompt> = std::iter::once(req.prompt.clone()).chain(std::mem::take(&mut req.more_prompts)).collect();
    let mut jobs = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let echo = req.echo.then(|| prompt.clone());
        let started = generation::start(&state, GenRequest { prompt, ..req.clone() }, if chat { "chatcmpl" } else { "cmpl" }).await?;
        let echo = echo.map_or(String::new(), |p| echo_text(&started.resident, &p));
        jobs.push(Job { started, echo });
    }
    if streaming {
        return Ok(sse(jobs, chat, include_usage, sources).into_response());
    }
    let mut choices = Vec::new();
    let mut usage = Usage::default();
    for (p, job) in jobs.iter_mut().enumerate() {
        let (done, job_usage) = generation::collect(&mut job.started).await?;
        sum_usage(&mut usage, job_usage);
        let r = &job.started.resident;
        for (i, c) in done.iter().enumerate() {
            let index = p * job.started.n + i;
            let finish = c.finish.map(finish_str);
            choices.push(if chat {
                let logprobs = (!c.logprobs.is_empty()).then(|| chat_logprobs(r, &c.logprobs));
                json!({"index": index, "message": {"role": "assistant", "content": c.text}, "logprobs": logprobs, "finish_reason": finish})
            } else {
                let logprobs = (!c.logprobs.is_empty()).then(|| completion_logprobs(r, &c.logprobs, 0));
                json!({"index": index, "text": format!("{}{}", job.echo, c.text), "logprobs": logprobs, "finish_reason": finish})
            });
        }
    }
    let first = &jobs[0].started;
    let object = if chat { "chat.completion" } else { "text_completion" };
    let mut out = json!({
        "id": first.id, "object": object, "created": first.created, "model": first.resident.id,
        "system_fingerprint": null, "choices": choices, "usage": usage_json(&usage),
    });
    if let Some(sources) = sources {
        out["knowledge_base"] = kb_api::grounding_json(&choices_text(&out), &sources);
    }
    Ok(Json(out).into_response())
}

/// One prompt's job, and the text its choices start with (`echo`).
struct Job {
    started: Started,
    echo: String,
}

/// A prompt as `echo` repeats it.
fn echo_text(resident: &Resident, prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Tokens(ids) => resident.model.tokenizer.decode(ids, false).unwrap_or_default(),
        Prompt::Chat(_) => String::new(),
    }
}

/// Adds one prompt's usage to a batch's: prompts and completions add up.
fn sum_usage(total: &mut Usage, job: Usage) {
    total.prompt_tokens += job.prompt_tokens;
    total.cached_tokens += job.cached_tokens;
    total.completion_tokens += job.completion_tokens;
}

/// The first choice's message text.
fn choices_text(response: &Value) -> String {
    response["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_string()
}

/// The state of one SSE response. A batch's jobs run together; their events are sent one
/// job after another (each job's channel holds its events meanwhile).
struct Streaming {
    jobs: Vec<Job>,
    /// The job whose events are being sent, and its choices still open.
    current: usize,
    open: usize,
    chat: bool,
    include_usage: bool,
    /// The current job's usage, and the finished jobs' total.
    job_usage: Usage,
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
        let s = &self.jobs[0].started;
        json!({"id": s.id, "object": object, "created": s.created, "model": s.resident.id, "system_fingerprint": null, "choices": choices})
            .to_string()
    }

    /// The choice's index in the response: a batch numbers its jobs' choices in order.
    fn index(&self, index: usize) -> usize {
        self.current * self.jobs[0].started.n + index
    }

    fn token(&mut self, index: usize, text: String, logprob: Option<(u32, TokenLogprob)>) -> String {
        let r = &self.jobs[self.current].started.resident;
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
            Some(Event::Token { text, logprob: None, .. }) if text.is_empty() => Vec::new(),
            Some(Event::Token { index, text, logprob }) => {
                let index = self.index(index);
                if let (0, Some((_, answer))) = (index, &mut self.grounding) {
                    answer.push_str(&text);
                }
                vec![self.token(index, text, logprob)]
            }
            Some(Event::Finished { index, reason, usage }) => {
                add_usage(&mut self.job_usage, usage);
                let index = self.index(index);
                self.open -= 1;
                let finish = finish_str(reason);
                let choice = if self.chat {
                    json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish})
                } else {
                    json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish})
                };
                let mut out = vec![self.chunk(json!([choice]))];
                if self.open == 0 {
                    sum_usage(&mut self.usage, std::mem::take(&mut self.job_usage));
                    if self.current + 1 < self.jobs.len() {
                        self.current += 1;
                        self.open = self.jobs[self.current].started.n;
                        return out;
                    }
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
            Some(Event::Failed(message)) => {
                self.done = true;
                vec![ApiError::internal(message).body().to_string()]
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
    jobs: Vec<Job>,
    chat: bool,
    include_usage: bool,
    sources: Option<Vec<Hit>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let n = jobs[0].started.n;
    let choices = n * jobs.len();
    let grounding = sources.map(|s| (s, String::new()));
    let st = Streaming {
        jobs,
        current: 0,
        open: n,
        chat,
        include_usage,
        job_usage: Usage::default(),
        usage: Usage::default(),
        offsets: vec![0; choices],
        done: false,
        grounding,
    };
    let head: Vec<String> = if chat {
        (0..n)
            .map(|i| {
                st.chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]))
            })
            .collect()
    } else {
        // `echo`: each choice starts with its prompt.
        (0..choices)
            .filter_map(|i| {
                let echo = &st.jobs[i / n].echo;
                (!echo.is_empty()).then(|| st.chunk(json!([{"index": i, "text": echo, "logprobs": null, "finish_reason": null}])))
            })
            .collect()
    };
    let body = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let event = st.jobs[st.current].started.events.recv().await;
        Some((st.on(event), st))
    });
    let events = stream::iter(head).chain(body.flat_map(stream::iter)).map(|data| Ok(SseEvent::default().data(data)));
    Sse::new(events).keep_alive(KeepAlive::default())
}

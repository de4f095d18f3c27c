//! The OpenAI-compatible routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions`,
//! each streaming (SSE) or not.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream, StreamExt};
use hearth_kb::Hit;
use hearth_runtime::TokenLogprob;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::knowledge::Grounding;
use crate::api::openai::{
    self as api, ChatChoice, ChatChunkChoice, ChatCompletionRequest, Chunk, Completion, CompletionRequest, Delta, FunctionCallDelta,
    FunctionType, Model, ModelList, Role, TextChoice, ToolCallDelta,
};
use crate::api::{Body, Errors, ModelErrors};
use crate::error::ApiError;
use crate::generation::{self, add_usage, assistant_message, chat_finish, chat_logprobs, completion_logprobs, finish_str, Started};
use crate::kb_api;
use crate::models::Resident;
use crate::request::{self, GenRequest, Prompt};
use crate::AppState;
use hearth_runtime::{Event, Usage};
use hearth_tools::Reader;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(get_model))
        .routes(routes!(chat_completions))
        .routes(routes!(completions))
}

/// List models: configured, registered and in the store.
#[utoipa::path(get, path = "/v1/models", tag = "openai", responses((status = 200, description = "Done", body = ModelList), Errors))]
async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList { object: "list", data: state.models.known_ids().into_iter().map(Model::new).collect() })
}

/// One model; once loaded, with the sampling defaults in force (or, for an embedding model,
/// what it declares).
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai", params(("id" = String, Path)), responses((status = 200, description = "Done", body = Model), Errors))]
async fn get_model(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Model>, ApiError> {
    if let Some(r) = state.models.resident(&id) {
        Ok(Json(Model { sampling_defaults: Some(r.sampling.into()), ..Model::new(id) }))
    } else if let Some(info) = state.models.embedding_info(&id) {
        Ok(Json(Model { embedding: Some(info.into()), ..Model::new(id) }))
    } else if state.models.known_ids().contains(&id) || state.models.locate(&id).is_ok() {
        Ok(Json(Model::new(id)))
    } else {
        Err(ApiError::model_not_found(&id))
    }
}

/// Chat completion; server-sent chunks when `stream`.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = ChatCompletionRequest, responses(
    (status = 200, description = "JSON, or server-sent events with `stream`", content((Completion<ChatChoice> = "application/json"), (Chunk<ChatChunkChoice> = "text/event-stream"))),
    ModelErrors,
))]
async fn chat_completions(State(state): State<AppState>, Body(body): Body<ChatCompletionRequest>) -> Result<Response, ApiError> {
    // Hearth's extension: answer from a knowledge-base collection, with citations.
    let rag = body.knowledge_base.clone().map(kb_api::rag_options).transpose()?;
    let mut req = request::chat(body)?;
    let sources = match rag {
        None => None,
        Some(rag) => Some(kb_api::augment(&state, &mut req, rag).await?),
    };
    complete(state, req, true, sources).await
}

/// Text completion of one prompt or several; server-sent chunks when `stream`.
#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = CompletionRequest, responses(
    (status = 200, description = "JSON, or server-sent events with `stream`", content((Completion<TextChoice> = "application/json"), (Chunk<TextChoice> = "text/event-stream"))),
    ModelErrors,
))]
async fn completions(State(state): State<AppState>, Body(body): Body<CompletionRequest>) -> Result<Response, ApiError> {
    complete(state, request::completion(body)?, false, None).await
}

async fn complete(state: AppState, mut req: GenRequest, chat: bool, sources: Option<Vec<Hit>>) -> Result<Response, ApiError> {
    let (streaming, include_usage) = (req.stream, req.include_usage);
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
    let mut chat_choices = Vec::new();
    let mut text_choices = Vec::new();
    let mut usage = Usage::default();
    for (p, job) in jobs.iter_mut().enumerate() {
        let (done, job_usage) = generation::collect(&mut job.started).await?;
        sum_usage(&mut usage, job_usage);
        let r = &job.started.resident;
        for (i, c) in done.into_iter().enumerate() {
            let index = p * job.started.n + i;
            if chat {
                let logprobs = (!c.logprobs.is_empty()).then(|| chat_logprobs(r, &c.logprobs));
                let (message, finish_reason) = assistant_message(job.started.reading, c.text, c.finish);
                chat_choices.push(ChatChoice { index, message, logprobs, finish_reason });
            } else {
                let finish_reason = c.finish.map(finish_str);
                let logprobs = (!c.logprobs.is_empty()).then(|| completion_logprobs(r, &c.logprobs, 0));
                text_choices.push(TextChoice { index, text: format!("{}{}", job.echo, c.text), logprobs, finish_reason });
            }
        }
    }
    let first = &jobs[0].started;
    let usage = generation::usage(&usage);
    if !chat {
        return Ok(Json(completion(first, "text_completion", text_choices, usage, None)).into_response());
    }
    let answer = chat_choices.first().and_then(|c| c.message.content.clone()).unwrap_or_default();
    let grounding = sources.map(|s| Grounding::of(&answer, &s));
    Ok(Json(completion(first, "chat.completion", chat_choices, usage, grounding)).into_response())
}

fn completion<C>(first: &Started, object: &'static str, choices: Vec<C>, usage: api::Usage, grounding: Option<Grounding>) -> Completion<C> {
    Completion {
        id: first.id.clone(),
        object,
        created: first.created,
        model: first.resident.id.clone(),
        system_fingerprint: None,
        choices,
        usage,
        knowledge_base: grounding,
    }
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
    /// Per chat choice, its reader (tool calls, reasoning, or the text as it is).
    readers: Vec<Reader>,
    done: bool,
    /// With `knowledge_base`: the sources, for the citations of the first choice's answer sent
    /// after it finishes.
    grounding: Option<Vec<Hit>>,
}

impl Streaming {
    fn chunk<C>(&self, choices: Vec<C>) -> Chunk<C> {
        let s = &self.jobs[0].started;
        Chunk {
            id: s.id.clone(),
            object: if self.chat { "chat.completion.chunk" } else { "text_completion" },
            created: s.created,
            model: s.resident.id.clone(),
            system_fingerprint: None,
            choices,
            usage: None,
            knowledge_base: None,
        }
    }

    /// The choice's index in the response: a batch numbers its jobs' choices in order.
    fn index(&self, index: usize) -> usize {
        self.current * self.jobs[0].started.n + index
    }

    fn token(&mut self, index: usize, text: String, logprob: Option<(u32, TokenLogprob)>) -> Vec<String> {
        let r = &self.jobs[self.current].started.resident;
        let lp: Vec<_> = logprob.into_iter().collect();
        let offset = self.offsets[index];
        self.offsets[index] += text.len();
        if !self.chat {
            let logprobs = (!lp.is_empty()).then(|| completion_logprobs(r, &lp, offset));
            return vec![data(self.chunk(vec![TextChoice { index, text, logprobs, finish_reason: None }]))];
        }
        let mut logprobs = (!lp.is_empty()).then(|| chat_logprobs(r, &lp));
        let deltas: Vec<Delta> = self.readers[index].push(&text).into_iter().map(delta).collect();
        // A token whose text is held back (it may start a call's marker) still reports its log-prob.
        let deltas = if deltas.is_empty() && logprobs.is_some() { vec![Delta::default()] } else { deltas };
        deltas
            .into_iter()
            .map(|delta| data(self.chunk(vec![ChatChunkChoice { index, delta, logprobs: logprobs.take(), finish_reason: None }])))
            .collect()
    }

    /// The data lines one scheduler event turns into.
    fn on(&mut self, event: Option<Event>) -> Vec<String> {
        match event {
            Some(Event::Token { index, text, token }) => {
                let logprob = token.and_then(|t| Some((t.id, t.logprob?)));
                if text.is_empty() && logprob.is_none() {
                    return Vec::new();
                }
                let index = self.index(index);
                self.token(index, text, logprob)
            }
            Some(Event::Finished { index, reason, usage }) => {
                add_usage(&mut self.job_usage, usage);
                let index = self.index(index);
                self.open -= 1;
                let mut out = Vec::new();
                let finish_reason = if self.chat {
                    let reader = &mut self.readers[index];
                    let (last, called) = (reader.finish(), !reader.reply().calls.is_empty());
                    for delta in last.into_iter().map(delta) {
                        out.push(data(self.chunk(vec![ChatChunkChoice { index, delta, logprobs: None, finish_reason: None }])));
                    }
                    chat_finish(reason, called)
                } else {
                    finish_str(reason)
                };
                let finish_reason = Some(finish_reason);
                out.push(if self.chat {
                    data(self.chunk(vec![ChatChunkChoice { index, delta: Delta::default(), logprobs: None, finish_reason }]))
                } else {
                    data(self.chunk(vec![TextChoice { index, text: String::new(), logprobs: None, finish_reason }]))
                });
                if self.open == 0 {
                    sum_usage(&mut self.usage, std::mem::take(&mut self.job_usage));
                    if self.current + 1 < self.jobs.len() {
                        self.current += 1;
                        self.open = self.jobs[self.current].started.n;
                        return out;
                    }
                    if let Some(sources) = &self.grounding {
                        // The answer as read back: its content, not reasoning or call markup.
                        let answer = self.readers.first().map_or("", |r| r.reply().content.as_str());
                        out.push(data(Chunk {
                            knowledge_base: Some(Grounding::of(answer, sources)),
                            ..self.chunk::<TextChoice>(Vec::new())
                        }));
                    }
                    if self.include_usage {
                        out.push(data(Chunk { usage: Some(generation::usage(&self.usage)), ..self.chunk::<TextChoice>(Vec::new()) }));
                    }
                    out.push("[DONE]".into());
                    self.done = true;
                }
                out
            }
            failed @ (Some(Event::Failed(_)) | None) => {
                self.done = true;
                vec![data(generation::failure(failed).body())]
            }
        }
    }
}

/// A piece of a read-back reply as a chunk's delta.
fn delta(d: hearth_tools::Delta) -> Delta {
    use hearth_tools::Delta as D;
    let call = |index, id: Option<String>, name: Option<String>, arguments| {
        let kind = id.as_ref().map(|_| FunctionType::Function);
        Some(vec![ToolCallDelta { index, id, kind, function: FunctionCallDelta { name, arguments } }])
    };
    match d {
        D::Reasoning(r) => Delta { reasoning_content: Some(r), ..Delta::default() },
        D::Content(c) => Delta { content: Some(c), ..Delta::default() },
        D::Call { index, id, name } => Delta { tool_calls: call(index, Some(id), Some(name), String::new()), ..Delta::default() },
        D::Arguments { index, text } => Delta { tool_calls: call(index, None, None, text), ..Delta::default() },
    }
}

fn data(chunk: impl Serialize) -> String {
    serde_json::to_string(&chunk).unwrap_or_default()
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
    let grounding = sources;
    let readers = jobs.iter().flat_map(|j| (0..n).map(|_| j.started.reader())).collect();
    let st = Streaming {
        jobs,
        current: 0,
        open: n,
        chat,
        include_usage,
        job_usage: Usage::default(),
        usage: Usage::default(),
        offsets: vec![0; choices],
        readers,
        done: false,
        grounding,
    };
    let head: Vec<String> = if chat {
        (0..n)
            .map(|i| {
                let delta = Delta { role: Some(Role::Assistant), content: Some(String::new()), ..Delta::default() };
                data(st.chunk(vec![ChatChunkChoice { index: i, delta, logprobs: None, finish_reason: None }]))
            })
            .collect()
    } else {
        // `echo`: each choice starts with its prompt.
        (0..choices)
            .filter_map(|i| {
                let echo = &st.jobs[i / n].echo;
                let choice = TextChoice { index: i, text: echo.clone(), logprobs: None, finish_reason: None };
                (!echo.is_empty()).then(|| data(st.chunk(vec![choice])))
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

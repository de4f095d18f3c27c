//! From a parsed request to a running job: resolve and load the model, render and tokenize
//! the prompt, check it against the context, queue it; then the ways to consume its events.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_constrain::Grammar;
use hearth_runtime::{Event, FinishReason, GenerateParams, Request, RuntimeError, TokenLogprob, Usage};
use hearth_tokenizer::RenderOptions;
use hearth_tools::{Delta, Format, Reader, Reasoning, Reply, Tool};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::openai as api;
use crate::error::ApiError;
use crate::models::Resident;
use crate::request::{sampling_params, Constraint, GenRequest, Prompt};
use crate::AppState;

/// A queued job and what responses need to describe it.
pub struct Started {
    pub resident: Arc<Resident>,
    pub events: UnboundedReceiver<Event>,
    pub id: String,
    pub created: u64,
    pub n: usize,
    pub prompt_tokens: usize,
    /// How the reply is read back (as plain text for text completions).
    pub reading: Reading,
}

/// A request made ready to run: its model, prompt, constraint and how its reply is read.
pub struct Prepared {
    resident: Arc<Resident>,
    prompt: Vec<u32>,
    /// The request field the prompt came from (`messages` or `prompt`).
    param: &'static str,
    processor: Option<Box<dyn hearth_runtime::LogitsProcessor>>,
    params: GenerateParams,
    n: usize,
    reading: Reading,
}

impl Started {
    /// A reader for the reply: its calls and reasoning as `reading` says, else its text.
    pub fn reader(&self) -> Reader {
        self.reading.reader()
    }
}

/// How a front end streams one reply (n = 1): the messages each piece of it, its end and a
/// failure make.
pub trait ReplyFormat: Send + 'static {
    type Message: Send + 'static;
    /// `reply`: what has been read so far, this piece included.
    fn piece(&mut self, reply: &Reply, piece: Delta) -> Vec<Self::Message>;
    fn end(&mut self, started: &Started, reply: &Reply, reason: FinishReason, usage: &Usage) -> Vec<Self::Message>;
    fn failed(&mut self, e: ApiError) -> Vec<Self::Message>;
}

/// A reply's messages in `format`, event by event, until it is over. Dropping the stream (the
/// client went away) drops the event receiver, which frees the sequence at the scheduler's
/// next step.
pub fn stream_reply<F: ReplyFormat>(started: Started, format: F) -> impl futures_util::Stream<Item = F::Message> + Send {
    use futures_util::stream::{self, StreamExt};
    struct State<F> {
        started: Started,
        reader: Reader,
        usage: Usage,
        format: F,
        over: bool,
    }
    let reader = started.reader();
    let state = State { started, reader, usage: Usage::default(), format, over: false };
    stream::unfold(state, |mut s| async move {
        if s.over {
            return None;
        }
        let (pieces, end) = match s.started.events.recv().await {
            Some(Event::Token { text, .. }) => (s.reader.push(&text), None),
            Some(Event::Finished { reason, usage, .. }) => {
                add_usage(&mut s.usage, usage);
                (s.reader.finish(), Some(reason))
            }
            failed => {
                s.over = true;
                return Some((s.format.failed(failure(failed)), s));
            }
        };
        let mut out = Vec::new();
        for d in pieces {
            out.extend(s.format.piece(s.reader.reply(), d));
        }
        if let Some(reason) = end {
            out.extend(s.format.end(&s.started, s.reader.reply(), reason, &s.usage));
            s.over = true;
        }
        Some((out, s))
    })
    .flat_map(stream::iter)
}

/// How a reply is read back: its tool calls in the model's format (when it was offered
/// tools), its reasoning split off (when its template has a block the prompt left to it);
/// by default, as the text it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    pub format: Option<Format>,
    pub reasoning: Option<Reasoning>,
    /// The prompt opened the reasoning block.
    pub opened: bool,
}

impl Reading {
    pub fn reader(&self) -> Reader {
        Reader::new(self.format, self.reasoning, self.opened)
    }
}

pub async fn start(state: &AppState, req: GenRequest, id_prefix: &str) -> Result<Started, ApiError> {
    let Prepared { resident, prompt, param, processor, params, n, reading } = prepare(state, req).await?;
    let prompt_tokens = prompt.len();
    let adapter = resident.adapter.as_ref().map(|a| a.adapter.clone());
    let request = Request { prompt, params, n, processor, adapter };
    // The runtime names the prompt `prompt`; chat requests carry it as `messages`.
    let events = resident.scheduler.submit(request).map_err(|e| match e {
        RuntimeError::Invalid { param: "prompt", message } => ApiError::invalid(param, message),
        e => ApiError::from(e),
    })?;
    resident.touch();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(Started { resident, events, id: format!("{id_prefix}-{}", unique_suffix()), created, n, prompt_tokens, reading })
}

/// A request's prompt made for its model: rendered and tokenized, its constraint's grammar
/// (tools, and the reasoning block before it) built, and how its reply will be read.
pub struct Rendered {
    resident: Arc<Resident>,
    prompt: Vec<u32>,
    /// The request field the prompt came from.
    param: &'static str,
    reading: Reading,
    /// The rest of the request, its constraint now the one to compile.
    req: GenRequest,
    /// Whether a marker the reply is read by is a special token, so special tokens stay in its text.
    special_markers: bool,
}

impl Rendered {
    pub fn prompt_tokens(&self) -> usize {
        self.prompt.len()
    }
}

/// The model loaded and the prompt rendered and tokenized: what counting a prompt's tokens needs.
pub async fn render(state: &AppState, mut req: GenRequest) -> Result<Rendered, ApiError> {
    let model_id = match req.model.as_deref().or(state.models.default_id()) {
        Some(id) => id.to_string(),
        None => return Err(ApiError::invalid("model", "`model` is required: this server has no default model")),
    };
    let resident = state.models.get(&model_id, None).await?;
    let model = &resident.model;
    let mut reading = Reading::default();
    let mut special_markers = false;
    let (prompt, param) = match std::mem::replace(&mut req.prompt, Prompt::Tokens(Vec::new())) {
        Prompt::Chat(messages) => {
            let param = req.fields.prompt;
            let template = model
                .chat_template
                .as_ref()
                .ok_or_else(|| ApiError::invalid("model", format!("`{model_id}` has no chat template; use /v1/completions")))?;
            let format = state.cfg.tool_format.unwrap_or_else(|| Format::detect(template.source()));
            let offered = req.tools.as_ref().map(|t| (t.list.as_slice(), &t.choice));
            let messages = hearth_tools::prepare_messages(format, messages, offered).map_err(|e| ApiError::invalid(&e.param, e.message))?;
            let tools = req.tools.as_ref().filter(|_| format.native()).map(|t| t.list.iter().map(Tool::to_openai).collect());
            let opts =
                RenderOptions { add_generation_prompt: true, tools, extra: std::mem::take(&mut req.template_kwargs), ..Default::default() };
            let text = template.render(&messages, &opts).map_err(|e| ApiError::invalid(param, e.to_string()))?;
            // A block the prompt already closed is not in the reply.
            let reasoning = Reasoning::detect(template.source()).filter(|r| !r.closed_by(&text));
            let opened = reasoning.is_some_and(|r| r.opened_by(&text));
            let special = |marker: &str| model.tokenizer.token_to_id(marker).filter(|&id| model.tokenizer.is_special(id));
            if let Some(t) = &req.tools {
                req.constraint = Some(Constraint { param: "tools", grammar: format.grammar(&t.list, &t.choice, t.parallel, &special) });
            }
            if let (Some(r), Some(c)) = (reasoning, req.constraint.as_mut()) {
                c.grammar = r.then(&c.grammar, opened, &special);
            }
            let format = req.tools.as_ref().map(|_| format);
            let markers = format.iter().flat_map(|f| f.markers().iter().copied()).chain(reasoning.iter().flat_map(|r| [r.open, r.close]));
            special_markers = markers.into_iter().any(|m| special(m).is_some());
            reading = Reading { format, reasoning, opened };
            (model.tokenizer.encode(&text, false).map_err(|e| ApiError::invalid(param, e.to_string()))?, param)
        }
        Prompt::Text(text) => (model.tokenizer.encode(&text, true).map_err(|e| ApiError::invalid("prompt", e.to_string()))?, "prompt"),
        Prompt::Tokens(ids) => (ids, "prompt"),
    };
    Ok(Rendered { resident, prompt, param, reading, req, special_markers })
}

/// Everything short of queueing: the prompt rendered, checked against the context, the
/// constraint compiled.
pub async fn prepare(state: &AppState, req: GenRequest) -> Result<Prepared, ApiError> {
    let Rendered { resident, prompt, param, reading, req, special_markers } = render(state, req).await?;
    let sampling = sampling_params(&req.sampling, resident.sampling)?;
    let context = resident.context;
    if !prompt.is_empty() && prompt.len() >= context {
        return Err(ApiError::invalid(param, format!("the prompt has {} tokens; this model's context is {context}", prompt.len())));
    }
    let limit = req.fields.max_tokens;
    let max_tokens = req.max_tokens.unwrap_or(state.cfg.default_max_tokens.min(context - prompt.len()));
    if prompt.len() + max_tokens > context {
        return Err(ApiError::invalid(
            limit,
            format!("the prompt ({} tokens) plus {limit} ({max_tokens}) exceeds this model's context of {context}", prompt.len()),
        ));
    }
    let processor = match &req.constraint {
        None => None,
        Some(c) => {
            // A model whose vocabulary cannot be constrained refuses the field, as an unsupported model does.
            let unsupported = |e: &str| ApiError {
                code: Some("model_not_supported"),
                ..ApiError::invalid(c.param, format!("constrained decoding is unavailable for this model: {e}"))
            };
            let grammars = resident.grammars().map_err(unsupported)?;
            match grammars.constraint(&c.grammar, max_tokens) {
                Ok(processor) => Some(processor),
                Err(e) => {
                    // The tools' grammar failed: the schema at fault is found alone, so that the
                    // error names its tool.
                    let tools = req.tools.iter().flat_map(|t| t.list.iter().zip(&t.schema_paths));
                    for (tool, path) in tools {
                        grammars
                            .constraint(&Grammar::JsonSchema(tool.parameters.clone()), 1)
                            .map_err(|e| ApiError::invalid(path, e.to_string()))?;
                    }
                    return Err(ApiError::invalid(c.param, e.to_string()));
                }
            }
        }
    };
    let params = GenerateParams {
        max_tokens,
        sampling,
        stop: req.stop,
        logprobs: req.logprobs,
        ignore_eos: req.sampling.ignore_eos.unwrap_or(false),
        special_tokens: special_markers,
    };
    Ok(Prepared { resident, prompt, param, processor, params, n: req.n, reading })
}

/// 24 random letters and digits: ids stay unique across restarts (stored responses are keyed
/// by them).
fn unique_suffix() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

#[derive(Clone, Debug, Default)]
pub struct Choice {
    pub text: String,
    pub finish: Option<FinishReason>,
    pub logprobs: Vec<(u32, TokenLogprob)>,
}

/// Waits for every choice to finish.
pub async fn collect(started: &mut Started) -> Result<(Vec<Choice>, Usage), ApiError> {
    let mut choices = vec![Choice::default(); started.n];
    let mut usage = Usage::default();
    let mut open = started.n;
    while open > 0 {
        match started.events.recv().await {
            Some(Event::Token { index, text, token }) => {
                choices[index].text += &text;
                choices[index].logprobs.extend(token.and_then(|t| Some((t.id, t.logprob?))));
            }
            Some(Event::Finished { index, reason, usage: u }) => {
                choices[index].finish = Some(reason);
                add_usage(&mut usage, u);
                open -= 1;
            }
            failed @ (Some(Event::Failed(_)) | None) => return Err(failure(failed)),
        }
    }
    Ok((choices, usage))
}

/// Waits for a one-choice reply and reads it back: the reply, why it ended, and its usage.
pub async fn collect_reply(started: &mut Started) -> Result<(Reply, FinishReason, Usage), ApiError> {
    let (choices, usage) = collect(started).await?;
    let choice = choices.into_iter().next().unwrap_or_default();
    let mut reader = started.reader();
    reader.push(&choice.text);
    reader.finish();
    Ok((reader.reply().clone(), choice.finish.unwrap_or(FinishReason::Stop), usage))
}

/// Adds one choice's usage: the prompt is shared, completions add up.
pub fn add_usage(total: &mut Usage, choice: Usage) {
    total.prompt_tokens = choice.prompt_tokens;
    total.cached_tokens = choice.cached_tokens;
    total.completion_tokens += choice.completion_tokens;
}

/// Why a job ended unfinished: its failure, or its scheduler stopping (the channel closed).
pub fn failure(event: Option<Event>) -> ApiError {
    match event {
        Some(Event::Failed(e)) => e.into(),
        _ => RuntimeError::Stopped.into(),
    }
}

pub fn usage(u: &Usage) -> api::Usage {
    api::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details: api::PromptTokensDetails { cached_tokens: u.cached_tokens },
    }
}

/// A chat choice as the assistant's message, read back as `reading` says, and its finish
/// reason.
pub fn assistant_message(reading: Reading, text: String, finish: Option<FinishReason>) -> (api::AssistantMessage, Option<&'static str>) {
    let mut reader = reading.reader();
    reader.push(&text);
    reader.finish();
    let reply = reader.reply().clone();
    let called = !reply.calls.is_empty();
    let message = api::AssistantMessage {
        role: api::Role::Assistant,
        // OpenAI's: a reply that only calls has null content.
        content: (!called || !reply.content.is_empty()).then_some(reply.content),
        reasoning_content: reply.reasoning,
        tool_calls: called.then(|| reply.calls.into_iter().map(tool_call).collect()),
    };
    (message, finish.map(|f| chat_finish(f, called)))
}

pub fn tool_call(c: hearth_tools::Call) -> api::ToolCall {
    api::ToolCall { id: c.id, kind: api::FunctionType::Function, function: api::FunctionCall { name: c.name, arguments: c.arguments } }
}

/// A chat choice's finish reason: `tool_calls` when it called, unless cut short.
pub fn chat_finish(r: FinishReason, called: bool) -> &'static str {
    match r {
        FinishReason::Stop if called => "tool_calls",
        r => finish_str(r),
    }
}

pub fn finish_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

/// A token's text as OpenAI's log-prob entries show it.
pub fn token_text(resident: &Resident, id: u32) -> String {
    resident.model.tokenizer.decode(&[id], false).unwrap_or_default()
}

/// `logprobs.content` entries of the chat API.
pub fn chat_logprobs(resident: &Resident, items: &[(u32, TokenLogprob)]) -> api::ChatLogprobs {
    let entry = |id: u32, logprob: f32| {
        let token = token_text(resident, id);
        api::TopLogprob { bytes: token.as_bytes().to_vec(), token, logprob }
    };
    let content = items
        .iter()
        .map(|(id, lp)| {
            let api::TopLogprob { token, logprob, bytes } = entry(*id, lp.logprob);
            api::TokenLogprob { token, logprob, bytes, top_logprobs: lp.top.iter().map(|&(t, l)| entry(t, l)).collect() }
        })
        .collect();
    api::ChatLogprobs { content }
}

/// The completions API's log-prob lists; `offset` is where this text starts in the choice.
pub fn completion_logprobs(resident: &Resident, items: &[(u32, TokenLogprob)], mut offset: usize) -> api::TextLogprobs {
    let mut out = api::TextLogprobs { tokens: Vec::new(), token_logprobs: Vec::new(), top_logprobs: Vec::new(), text_offset: Vec::new() };
    for (id, lp) in items {
        let text = token_text(resident, *id);
        out.text_offset.push(offset);
        offset += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(lp.top.iter().map(|&(t, l)| (token_text(resident, t), l)).collect());
    }
    out
}

//! From a parsed request to a running job: resolve and load the model, render and tokenize
//! the prompt, check it against the context, queue it; then the ways to consume its events.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hearth_runtime::{Event, FinishReason, GenerateParams, Request, RuntimeError, TokenLogprob, Usage};
use hearth_tokenizer::RenderOptions;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::openai as api;
use crate::error::ApiError;
use crate::models::Resident;
use crate::request::{sampling_params, GenRequest, Prompt};
use crate::AppState;

/// A queued job and what responses need to describe it.
pub struct Started {
    pub resident: Arc<Resident>,
    pub events: UnboundedReceiver<Event>,
    pub id: String,
    pub created: u64,
    pub n: usize,
}

pub async fn start(state: &AppState, req: GenRequest, id_prefix: &str) -> Result<Started, ApiError> {
    let model_id = match req.model.as_deref().or(state.models.default_id()) {
        Some(id) => id.to_string(),
        None => return Err(ApiError::invalid("model", "`model` is required: this server has no default model")),
    };
    let resident = state.models.get(&model_id, None).await?;
    let model = &resident.model;
    let (prompt, param) = match &req.prompt {
        Prompt::Chat(messages) => {
            let template = model
                .chat_template
                .as_ref()
                .ok_or_else(|| ApiError::invalid("model", format!("`{model_id}` has no chat template; use /v1/completions")))?;
            let opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
            let text = template.render(messages, &opts).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
            (model.tokenizer.encode(&text, false).map_err(|e| ApiError::invalid("messages", e.to_string()))?, "messages")
        }
        Prompt::Text(text) => (model.tokenizer.encode(text, true).map_err(|e| ApiError::invalid("prompt", e.to_string()))?, "prompt"),
        Prompt::Tokens(ids) => (ids.clone(), "prompt"),
    };
    let sampling = sampling_params(&req.sampling, resident.sampling)?;
    let context = resident.context;
    if !prompt.is_empty() && prompt.len() >= context {
        return Err(ApiError::invalid(param, format!("the prompt has {} tokens; this model's context is {context}", prompt.len())));
    }
    let max_tokens = req.max_tokens.unwrap_or(state.cfg.default_max_tokens.min(context - prompt.len()));
    if prompt.len() + max_tokens > context {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("the prompt ({} tokens) plus max_tokens ({max_tokens}) exceeds this model's context of {context}", prompt.len()),
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
            Some(grammars.constraint(&c.grammar, max_tokens).map_err(|e| ApiError::invalid(c.param, e.to_string()))?)
        }
    };
    let params = GenerateParams { max_tokens, sampling, stop: req.stop, logprobs: req.logprobs, ignore_eos: false };
    let request = Request { prompt, params, n: req.n, processor, adapter: None };
    // The runtime names the prompt `prompt`; chat requests carry it as `messages`.
    let events = resident.scheduler.submit(request).map_err(|e| match e {
        RuntimeError::Invalid { param: "prompt", message } => ApiError::invalid(param, message),
        e => ApiError::from(e),
    })?;
    resident.touch();
    let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(Started { resident, events, id: format!("{id_prefix}-{}", unique_suffix()), created, n: req.n })
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", NEXT.fetch_add(1, Ordering::Relaxed), nanos)
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

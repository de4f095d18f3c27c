//! The generation request shared by `/v1/chat/completions`, `/v1/completions` and the chat
//! backend's routes: every field parsed, range-checked and named in its error.

use std::collections::HashMap;

use hearth_engine::SamplingParams;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::fields::{describe, token_ids, Fields, Result};

/// Most choices one request may ask for (they share a batch with everyone else's).
pub const MAX_N: i64 = 16;
/// Most alternatives reported per token.
pub const MAX_TOP_LOGPROBS: i64 = 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Endpoint {
    /// OpenAI chat: `messages`, `logprobs` a boolean plus `top_logprobs`.
    Chat,
    /// OpenAI completions: `prompt`, `logprobs` the number of alternatives.
    Completion,
    /// The chat backend (`/api/chat/*`): chat without `stream` (the route decides), and
    /// `model` optional.
    Backend,
}

#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, normalised to `{"role", "content": string}` for the template.
    Chat(Vec<Value>),
    Text(String),
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct GenRequest {
    pub model: Option<String>,
    pub prompt: Prompt,
    /// Completions' further prompts, each answered like `prompt` (OpenAI batches a list).
    pub more_prompts: Vec<Prompt>,
    /// Completions: each choice's text starts with its prompt.
    pub echo: bool,
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub n: usize,
    /// Report log-probs with this many alternatives per token.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
}

pub fn parse(body: Map<String, Value>, endpoint: Endpoint) -> Result<GenRequest> {
    let mut f = Fields::new(body);
    let model = f.string("model")?;
    if model.is_none() && endpoint != Endpoint::Backend {
        return Err(f.missing("model"));
    }
    let prompts = match endpoint {
        Endpoint::Chat | Endpoint::Backend => vec![Prompt::Chat(messages(f.take("messages").ok_or_else(|| f.missing("messages"))?)?)],
        Endpoint::Completion => completion_prompts(f.take("prompt").ok_or_else(|| f.missing("prompt"))?)?,
    };
    let (prompt, more_prompts) = (prompts[0].clone(), prompts[1..].to_vec());
    let max_tokens = f.int("max_tokens", 1..=1 << 24)?;
    let max_completion_tokens = f.int("max_completion_tokens", 1..=1 << 24)?;
    if max_tokens.is_some() && max_completion_tokens.is_some() {
        return Err(ApiError::invalid("max_tokens", "give `max_tokens` or `max_completion_tokens`, not both"));
    }
    let d = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: f.number("temperature", |x| (0.0..=2.0).contains(&x), "a number in [0, 2]")?.map_or(1.0, |x| x as f32),
        top_p: f.number("top_p", |x| x > 0.0 && x <= 1.0, "a number in (0, 1]")?.map_or(d.top_p, |x| x as f32),
        top_k: f.int("top_k", 0..=1 << 20)?.map_or(d.top_k, |k| k as usize),
        min_p: f.number("min_p", |x| (0.0..=1.0).contains(&x), "a number in [0, 1]")?.map_or(d.min_p, |x| x as f32),
        presence_penalty: f
            .number("presence_penalty", |x| (-2.0..=2.0).contains(&x), "a number in [-2, 2]")?
            .map_or(d.presence_penalty, |x| x as f32),
        frequency_penalty: f
            .number("frequency_penalty", |x| (-2.0..=2.0).contains(&x), "a number in [-2, 2]")?
            .map_or(d.frequency_penalty, |x| x as f32),
        repetition_penalty: f
            .number("repetition_penalty", |x| x > 0.0 && x <= 10.0, "a number in (0, 10]")?
            .map_or(d.repetition_penalty, |x| x as f32),
        logit_bias: f.object("logit_bias")?.map(logit_bias).transpose()?.unwrap_or_default(),
        // Seeds are any integer; negative ones are reinterpreted, not rejected.
        seed: f.int("seed", i64::MIN..=i64::MAX)?.map(|s| s as u64),
    };
    let stop = f.take("stop").map(stop_strings).transpose()?.unwrap_or_default();
    let n = f.int("n", 1..=MAX_N)?.unwrap_or(1) as usize;
    let logprobs = match endpoint {
        Endpoint::Completion => f.int("logprobs", 0..=MAX_TOP_LOGPROBS)?.map(|k| k as usize),
        Endpoint::Chat | Endpoint::Backend => {
            let wanted = f.bool("logprobs")?.unwrap_or(false);
            let top = f.int("top_logprobs", 0..=MAX_TOP_LOGPROBS)?;
            if top.is_some() && !wanted {
                return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs` set to true"));
            }
            wanted.then_some(top.unwrap_or(0) as usize)
        }
    };
    let stream = match endpoint {
        Endpoint::Backend => false,
        _ => f.bool("stream")?.unwrap_or(false),
    };
    let include_usage = match f.object("stream_options")? {
        None => false,
        Some(_) if !stream => return Err(ApiError::invalid("stream_options", "`stream_options` is only allowed when `stream` is true")),
        Some(opts) => {
            let mut o = Fields::nested(opts, "stream_options");
            let include = o.bool("include_usage")?.unwrap_or(false);
            o.finish()?;
            include
        }
    };
    let echo = match endpoint {
        Endpoint::Completion => f.bool("echo")?.unwrap_or(false),
        Endpoint::Chat | Endpoint::Backend => false,
    };
    if echo && logprobs.is_some() {
        return Err(ApiError::invalid("echo", "`echo` with `logprobs` is not supported: the prompt's log-probs are not computed"));
    }
    // An end-user id for abuse monitoring: accepted, nothing to do with it locally.
    f.string("user")?;
    // Values some clients send by default; they change nothing here. Any other is refused.
    if let Some(store) = f.bool("store")? {
        if store {
            return Err(ApiError::invalid("store", "this server does not store completions; `store` must be false"));
        }
    }
    if let Some(tier) = f.string("service_tier")? {
        if !["auto", "default"].contains(&tier.as_str()) {
            return Err(ApiError::invalid("service_tier", format!("`service_tier` must be \"auto\" or \"default\", got {tier:?}")));
        }
    }
    f.finish()?;
    Ok(GenRequest {
        model,
        prompt,
        more_prompts,
        echo,
        max_tokens: max_tokens.or(max_completion_tokens).map(|m| m as usize),
        sampling,
        stop,
        n,
        logprobs,
        stream,
        include_usage,
    })
}

const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

fn messages(v: Value) -> Result<Vec<Value>> {
    let Value::Array(items) = v else {
        return Err(ApiError::invalid("messages", format!("`messages` must be an array, got {}", describe(&v))));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let path = format!("messages[{i}]");
            let Value::Object(obj) = m else {
                return Err(ApiError::invalid(&path, format!("`{path}` must be an object, got {}", describe(&m))));
            };
            let mut f = Fields::nested(obj, &path);
            let role = f.required_string("role")?;
            if !ROLES.contains(&role.as_str()) {
                return Err(ApiError::invalid(&f.name("role"), format!("`{}` must be one of {ROLES:?}, got {role:?}", f.name("role"))));
            }
            let content = match f.take("content") {
                None => return Err(f.missing("content")),
                Some(Value::String(s)) => s,
                Some(Value::Array(parts)) => text_parts(parts, &f.name("content"))?,
                Some(other) => {
                    let name = f.name("content");
                    return Err(ApiError::invalid(
                        &name,
                        format!("`{name}` must be a string or an array of parts, got {}", describe(&other)),
                    ));
                }
            };
            let name = f.string("name")?;
            f.finish()?;
            // OpenAI's newer name for the system role; templates know only `system`.
            let role = if role == "developer" { "system".to_string() } else { role };
            let mut out = json!({"role": role, "content": content});
            if let Some(name) = name {
                out["name"] = name.into();
            }
            Ok(out)
        })
        .collect()
}

/// Content parts: only text is supported; the texts are joined.
fn text_parts(parts: Vec<Value>, path: &str) -> Result<String> {
    let mut text = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Value::Object(obj) = p else {
            return Err(ApiError::invalid(&path, format!("`{path}` must be an object, got {}", describe(&p))));
        };
        let mut f = Fields::nested(obj, &path);
        let kind = f.required_string("type")?;
        if kind != "text" {
            return Err(ApiError::invalid(&f.name("type"), format!("content parts of type {kind:?} are not supported; only \"text\"")));
        }
        text.push_str(&f.required_string("text")?);
        f.finish()?;
    }
    Ok(text)
}

/// Most prompts one completions request may batch.
pub const MAX_PROMPTS: usize = 64;

/// A string, an array of token ids, or an array of several of either.
fn completion_prompts(v: Value) -> Result<Vec<Prompt>> {
    let bad = |v: &Value| {
        ApiError::invalid(
            "prompt",
            format!("`prompt` must be a string, an array of token ids, or an array of strings or of token-id arrays, got {}", describe(v)),
        )
    };
    let items = match v {
        Value::String(s) => return Ok(vec![Prompt::Text(s)]),
        Value::Array(ref items) if items.is_empty() => return Err(ApiError::invalid("prompt", "`prompt` must not be empty")),
        Value::Array(ref items) if items.iter().all(Value::is_number) => {
            return token_ids(items).map(|ids| vec![Prompt::Tokens(ids)]).ok_or_else(|| bad(&v))
        }
        Value::Array(items) => items,
        other => return Err(bad(&other)),
    };
    if items.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompt", format!("at most {MAX_PROMPTS} prompts per request")));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(Prompt::Text(s)),
            Value::Array(ref ids) if !ids.is_empty() => token_ids(ids).map(Prompt::Tokens).ok_or_else(|| bad_item(i, &item)),
            other => Err(bad_item(i, &other)),
        })
        .collect()
}

fn bad_item(i: usize, v: &Value) -> ApiError {
    let param = format!("prompt[{i}]");
    ApiError::invalid(&param, format!("`{param}` must be a string or a non-empty array of token ids, got {}", describe(v)))
}

fn stop_strings(v: Value) -> Result<Vec<String>> {
    let list = match v {
        Value::String(s) => vec![s],
        Value::Array(items) if items.len() <= 16 => items
            .into_iter()
            .map(|s| match s {
                Value::String(s) => Ok(s),
                other => Err(ApiError::invalid("stop", format!("`stop` entries must be strings, got {}", describe(&other)))),
            })
            .collect::<Result<_>>()?,
        other => return Err(ApiError::invalid("stop", format!("`stop` must be a string or up to 16 strings, got {}", describe(&other)))),
    };
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    Ok(list)
}

fn logit_bias(map: Map<String, Value>) -> Result<HashMap<u32, f32>> {
    map.into_iter()
        .map(|(k, v)| {
            let id =
                k.parse::<u32>().map_err(|_| ApiError::invalid("logit_bias", format!("`logit_bias` keys must be token ids, got {k:?}")))?;
            match v.as_f64() {
                Some(b) if (-100.0..=100.0).contains(&b) => Ok((id, b as f32)),
                _ => {
                    Err(ApiError::invalid("logit_bias", format!("`logit_bias[{k}]` must be a number in [-100, 100], got {}", describe(&v))))
                }
            }
        })
        .collect()
}

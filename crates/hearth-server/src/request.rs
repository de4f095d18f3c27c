//! From the typed generation requests (`/v1/chat/completions`, `/v1/completions`, the chat
//! backend's routes, `/search/ask`) to the one request generation runs: ranges checked and
//! named in their errors, and the engine's sampling parameters built in one place.

use std::collections::HashMap;

use hearth_runtime::{SamplingDefaults, SamplingParams};
use serde_json::{json, Value};

use crate::api::anthropic::{
    CountTokensRequest, InputBlock, JsonOutputFormat, Message as AnthropicMessage, MessageRole, MessagesRequest, OutputConfig, TextBlock,
    Thinking, ToolChoice as AnthropicChoice, ToolDefinition as AnthropicTool,
};
use crate::api::backend::BackendChatRequest;
use crate::api::openai::{
    ChatCompletionRequest, ChatMessage, ChatOptions, CompletionRequest, ResponseFormat, Role, Sampling, StreamOptions,
};
use crate::api::responses::{CreateResponse, InputItem, ItemType, TextFormat};
use crate::api::{in_range, texts_or_tokens, Result, StringOr, TextOrTokens};
use crate::error::ApiError;
use hearth_constrain::Grammar;
use hearth_tools::{Choice, Tool};

/// Most choices one request may ask for (they share a batch with everyone else's).
pub const MAX_N: i64 = 16;
/// Most alternatives reported per token.
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Most prompts one completions request may batch.
pub const MAX_PROMPTS: usize = 64;

#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, normalised to `{"role", "content": string}` for the template.
    Chat(Vec<Value>),
    Text(String),
    Tokens(Vec<u32>),
}

/// What the output must be, and the request field that said so (errors name it).
#[derive(Debug, Clone)]
pub struct Constraint {
    pub param: &'static str,
    pub grammar: Grammar,
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
    /// As the request gave them; `sampling_params` makes the engine's.
    pub sampling: Sampling,
    pub stop: Vec<String>,
    pub n: usize,
    /// Report log-probs with this many alternatives per token.
    pub logprobs: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    pub constraint: Option<Constraint>,
    /// The tools a chat reply may call (none with `tool_choice: "none"`).
    pub tools: Option<Tools>,
    /// Further chat-template variables.
    pub template_kwargs: serde_json::Map<String, Value>,
    /// What the front end calls the prompt and the output limit, for errors found later.
    pub fields: Fields,
}

/// The request fields that hold the prompt, the output limit and the stop strings, as a front
/// end names them.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    pub prompt: &'static str,
    pub max_tokens: &'static str,
    pub stop: &'static str,
}

impl Fields {
    const CHAT: Fields = Fields { prompt: "messages", max_tokens: "max_tokens", stop: "stop" };
    const RESPONSES: Fields = Fields { prompt: "input", max_tokens: "max_output_tokens", stop: "stop" };
    const ANTHROPIC: Fields = Fields { prompt: "messages", max_tokens: "max_tokens", stop: "stop_sequences" };
}

/// A request's tools and how they may be called.
#[derive(Debug, Clone)]
pub struct Tools {
    pub list: Vec<Tool>,
    pub choice: Choice,
    pub parallel: bool,
    /// Where each tool's schema is in the request (`tools[0].function.parameters`), for errors.
    pub schema_paths: Vec<String>,
}

impl GenRequest {
    /// The checks every generation request gets; the endpoint fills in the rest.
    fn new(model: Option<String>, prompts: Vec<Prompt>, sampling: Sampling, n: Option<i64>) -> Result<GenRequest> {
        let s = &sampling;
        let max_tokens = in_range("max_tokens", s.max_tokens, 1..=1 << 24)?;
        let max_completion_tokens = in_range("max_completion_tokens", s.max_completion_tokens, 1..=1 << 24)?;
        if max_tokens.is_some() && max_completion_tokens.is_some() {
            return Err(ApiError::invalid("max_tokens", "give `max_tokens` or `max_completion_tokens`, not both"));
        }
        // Values some clients send by default; they change nothing here. Any other is refused.
        if s.store == Some(true) {
            return Err(ApiError::invalid("store", "this server does not store completions; `store` must be false"));
        }
        if let Some(tier) = s.service_tier.as_deref().filter(|t| !["auto", "default"].contains(t)) {
            return Err(ApiError::invalid("service_tier", format!("`service_tier` must be \"auto\" or \"default\", got {tier:?}")));
        }
        // Checked now, so that a bad value is refused before the model loads.
        sampling_params(s, SamplingDefaults::default())?;
        let stop = s.stop.clone().map(|v| stop_strings(v, "stop")).transpose()?.unwrap_or_default();
        let constraint = constraint(s)?;
        let mut prompts = prompts.into_iter();
        let prompt = prompts.next().ok_or_else(|| ApiError::invalid("prompt", "`prompt` must not be empty"))?;
        Ok(GenRequest {
            model,
            prompt,
            more_prompts: prompts.collect(),
            echo: false,
            max_tokens: max_tokens.or(max_completion_tokens).map(|m| m as usize),
            sampling,
            stop,
            n: in_range("n", n, 1..=MAX_N)?.unwrap_or(1) as usize,
            logprobs: None,
            stream: false,
            include_usage: false,
            constraint,
            tools: None,
            template_kwargs: serde_json::Map::new(),
            fields: Fields::CHAT,
        })
    }

    /// Chat's tools, reasoning effort and template variables.
    fn chat_options(mut self, o: ChatOptions) -> Result<GenRequest> {
        self.template_kwargs = o.chat_template_kwargs.unwrap_or_default();
        self.effort("reasoning_effort", o.reasoning_effort, &[])?;
        let defs = o.tools.map(|defs| defs.into_iter().map(|d| (d.function.name, d.function.description, d.function.parameters)).collect());
        let choice = o.tool_choice.map(|c| c.map(|named| named.function.name));
        self.tools = tools(defs, "tools[{i}].function", choice, o.parallel_tool_calls)?;
        self.with_tools()
    }

    /// A reasoning effort (`param`), as the chat template's `reasoning_effort`: low, medium or
    /// high, or one of `aliases` (a name and the level it means).
    fn effort(&mut self, param: &str, effort: Option<String>, aliases: &[(&str, &str)]) -> Result<()> {
        let Some(effort) = effort else { return Ok(()) };
        let level = match aliases.iter().find(|(alias, _)| *alias == effort) {
            Some((_, level)) => level,
            None if ["low", "medium", "high"].contains(&effort.as_str()) => effort.as_str(),
            None => {
                let names: Vec<&str> = ["low", "medium", "high"].into_iter().chain(aliases.iter().map(|(a, _)| *a)).collect();
                return Err(ApiError::invalid(param, format!("`{param}` must be one of {}, got {effort:?}", names.join(", "))));
            }
        };
        self.template_kwargs.insert("reasoning_effort".into(), level.into());
        Ok(())
    }

    /// The checks a request offering tools gets once they are known: a reply is text or calls,
    /// so no other constraint; and no stop strings, which could cut a call's arguments short.
    fn with_tools(self) -> Result<GenRequest> {
        if self.tools.is_none() {
            return Ok(self);
        }
        if let Some(c) = &self.constraint {
            return Err(ApiError::invalid(c.param, format!("`{}` cannot be combined with `tools`: the reply is text or calls", c.param)));
        }
        if !self.stop.is_empty() {
            let param = self.fields.stop;
            return Err(ApiError::invalid(
                param,
                format!("`{param}` cannot be combined with `tools`: a stop string could cut a call short"),
            ));
        }
        Ok(self)
    }

    fn streaming(mut self, stream: Option<bool>, options: Option<StreamOptions>) -> Result<GenRequest> {
        self.stream = stream.unwrap_or(false);
        if options.is_some() && !self.stream {
            return Err(ApiError::invalid("stream_options", "`stream_options` is only allowed when `stream` is true"));
        }
        self.include_usage = options.and_then(|o| o.include_usage).unwrap_or(false);
        Ok(self)
    }

    /// Chat's `logprobs` (a boolean) and `top_logprobs`.
    fn chat_logprobs(mut self, wanted: Option<bool>, top: Option<i64>) -> Result<GenRequest> {
        let top = in_range("top_logprobs", top, 0..=MAX_TOP_LOGPROBS)?;
        if top.is_some() && wanted != Some(true) {
            return Err(ApiError::invalid("top_logprobs", "`top_logprobs` needs `logprobs` set to true"));
        }
        self.logprobs = (wanted == Some(true)).then_some(top.unwrap_or(0) as usize);
        Ok(self)
    }
}

/// The one constraint among `response_format` and vLLM's `guided_*` fields, if any; giving
/// two is refused. Grammars are compiled against the model when the job starts.
fn constraint(s: &Sampling) -> Result<Option<Constraint>> {
    let mut found = Vec::new();
    match &s.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => found.push(Constraint { param: "response_format", grammar: Grammar::JsonObject }),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            schema_name("response_format.json_schema.name", &json_schema.name)?;
            let schema = json_schema.schema.clone().unwrap_or_else(|| json!({}));
            found.push(Constraint { param: "response_format.json_schema.schema", grammar: Grammar::JsonSchema(schema) });
        }
    }
    if let Some(schema) = &s.guided_json {
        found.push(Constraint { param: "guided_json", grammar: Grammar::JsonSchema(schema.clone()) });
    }
    if let Some(rx) = &s.guided_regex {
        found.push(Constraint { param: "guided_regex", grammar: Grammar::Regex(rx.clone()) });
    }
    if let Some(options) = &s.guided_choice {
        if options.is_empty() {
            return Err(ApiError::invalid("guided_choice", "`guided_choice` needs at least one string"));
        }
        found.push(Constraint { param: "guided_choice", grammar: Grammar::Choice(options.clone()) });
    }
    if let Some(lark) = &s.guided_grammar {
        found.push(Constraint { param: "guided_grammar", grammar: Grammar::Lark(lark.clone()) });
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => Err(ApiError::invalid(
            found[1].param,
            format!("give one of `response_format` and the `guided_*` fields, not both `{}` and `{}`", found[0].param, found[1].param),
        )),
    }
}

/// A function as OpenAI's chat and Responses APIs define one: name, description, parameters.
type FunctionDef = (String, Option<String>, Option<Value>);

/// The tools a request offers (each at `at(i)` in it), checked; `None` when it offers none or
/// says `none`. `choice`: `none`, `auto`, `required` or a function's name.
fn tools(defs: Option<Vec<FunctionDef>>, at: &str, choice: Option<StringOr<String>>, parallel: Option<bool>) -> Result<Option<Tools>> {
    if defs.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid("tools", "`tools` must hold at least one function (or be left out)"));
    }
    let mut list = ToolList::default();
    for (i, (name, description, parameters)) in defs.unwrap_or_default().into_iter().enumerate() {
        list.add(&at.replace("{i}", &i.to_string()), "parameters", name, description, parameters)?;
    }
    let choice = match choice {
        None => Some(Choice::Auto),
        Some(StringOr::String(s)) => match s.as_str() {
            "none" => None,
            "auto" => Some(Choice::Auto),
            "required" => Some(Choice::Required),
            other => {
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!("`tool_choice` must be none, auto, required or a function, got {other:?}"),
                ))
            }
        },
        Some(StringOr::Other(name)) => Some(Choice::Function(name)),
    };
    list.offer(choice, parallel.unwrap_or(true))
}

/// Function definitions as a request lists them, checked one by one.
#[derive(Default)]
struct ToolList {
    list: Vec<Tool>,
    schema_paths: Vec<String>,
}

impl ToolList {
    /// Adds the function at `at` (its path in the request); `schema` names its schema's field.
    fn add(&mut self, at: &str, schema: &str, name: String, description: Option<String>, parameters: Option<Value>) -> Result<()> {
        if !valid_name(&name) {
            let message = format!("`{at}.name` must be 1 to 64 letters, digits, `_` or `-`, got {name:?}");
            return Err(ApiError::invalid(&format!("{at}.name"), message));
        }
        if self.list.iter().any(|t| t.name == name) {
            return Err(ApiError::invalid(&format!("{at}.name"), format!("`{at}.name`: two tools are named {name:?}")));
        }
        let parameters = parameters.unwrap_or_else(hearth_tools::no_parameters);
        // Arguments are a JSON object: a schema of anything else cannot be called with.
        let object = parameters.as_object().is_some_and(|o| o.get("type").is_none_or(|t| t == "object"));
        if !object {
            let message = format!("`{at}.{schema}` must be a JSON schema of an object (`\"type\": \"object\"`)");
            return Err(ApiError::invalid(&format!("{at}.{schema}"), message));
        }
        self.list.push(Tool { name, description, parameters });
        self.schema_paths.push(format!("{at}.{schema}"));
        Ok(())
    }

    /// The tools under `choice` (`None`: the request said none).
    fn offer(self, choice: Option<Choice>, parallel: bool) -> Result<Option<Tools>> {
        let Some(choice) = choice else { return Ok(None) };
        if let Choice::Function(name) = &choice {
            if !self.list.iter().any(|t| &t.name == name) {
                return Err(ApiError::invalid("tool_choice", format!("`tool_choice` names {name:?}, which is not in `tools`")));
            }
        }
        if self.list.is_empty() {
            return match choice {
                Choice::Auto => Ok(None),
                _ => Err(ApiError::invalid("tool_choice", "`tool_choice` needs `tools`")),
            };
        }
        Ok(Some(Tools { list: self.list, choice, parallel, schema_paths: self.schema_paths }))
    }
}

/// OpenAI's rule for function and schema names.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A JSON schema's name (`param`), checked by that rule.
fn schema_name(param: &str, name: &str) -> Result<()> {
    if valid_name(name) {
        return Ok(());
    }
    Err(ApiError::invalid(param, format!("the schema's name must be 1 to 64 letters, digits, `_` or `-`, got {name:?}")))
}

pub fn chat(mut req: ChatCompletionRequest) -> Result<GenRequest> {
    let sampling = req.sampling();
    let options = req.chat_options();
    GenRequest::new(Some(req.model), vec![Prompt::Chat(messages(req.messages)?)], sampling, req.n)?
        .chat_logprobs(req.logprobs, req.top_logprobs)?
        .chat_options(options)?
        .streaming(req.stream, req.stream_options)
}

/// A chat-backend request: the chat fields for one reply, which the route streams or not.
pub fn backend(mut req: BackendChatRequest) -> Result<GenRequest> {
    let sampling = req.sampling();
    let options = req.chat_options();
    let gen = GenRequest::new(req.model, vec![Prompt::Chat(messages(req.messages)?)], sampling, req.n)?
        .chat_logprobs(req.logprobs, req.top_logprobs)?
        .chat_options(options)?;
    if gen.n != 1 {
        return Err(ApiError::invalid("n", "the chat backend returns one message; use /v1/chat/completions for `n` > 1"));
    }
    Ok(gen)
}

/// An Anthropic Messages request as the one chat request.
pub fn anthropic(req: MessagesRequest) -> Result<GenRequest> {
    if let Some(tier) = req.service_tier.as_deref().filter(|t| !["auto", "standard_only"].contains(t)) {
        return Err(ApiError::invalid("service_tier", format!("`service_tier` must be \"auto\" or \"standard_only\", got {tier:?}")));
    }
    // Anthropic's range, narrower than OpenAI's.
    in_range("temperature", req.temperature, 0.0..=1.0)?;
    let sampling = Sampling {
        max_tokens: Some(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        ..Default::default()
    };
    let mut gen =
        anthropic_request(req.model, req.system, req.messages, sampling, req.tools, req.tool_choice, req.thinking, req.output_config)?;
    gen.stop = req.stop_sequences.map(|s| stop_strings(StringOr::Other(s), "stop_sequences")).transpose()?.unwrap_or_default();
    gen.with_tools()
}

/// What `/v1/messages/count_tokens` counts: the prompt such a request would have.
pub fn anthropic_count(req: CountTokensRequest) -> Result<GenRequest> {
    anthropic_request(req.model, req.system, req.messages, Sampling::default(), req.tools, req.tool_choice, req.thinking, req.output_config)
}

/// The fields a Messages request and a token count share.
#[allow(clippy::too_many_arguments)]
fn anthropic_request(
    model: String,
    system: Option<StringOr<Vec<TextBlock>>>,
    messages: Vec<AnthropicMessage>,
    sampling: Sampling,
    tools: Option<Vec<AnthropicTool>>,
    tool_choice: Option<AnthropicChoice>,
    thinking_config: Option<Thinking>,
    config: Option<OutputConfig>,
) -> Result<GenRequest> {
    let messages = anthropic_messages(system, messages)?;
    let mut gen = GenRequest::new(Some(model), vec![Prompt::Chat(messages)], sampling, None)?;
    gen.fields = Fields::ANTHROPIC;
    gen.tools = anthropic_tools(tools, tool_choice)?;
    gen.template_kwargs = thinking(thinking_config);
    if let Some(config) = config {
        gen.effort("output_config.effort", config.effort, &[("xhigh", "high"), ("max", "high")])?;
        if let Some(JsonOutputFormat::JsonSchema { schema }) = config.format {
            gen.constraint = Some(Constraint { param: "output_config.format.schema", grammar: Grammar::JsonSchema(schema) });
        }
    }
    gen.with_tools()
}

fn thinking(t: Option<Thinking>) -> serde_json::Map<String, Value> {
    let mut kwargs = serde_json::Map::new();
    if let Some(t) = t {
        kwargs.insert("enable_thinking".into(), (!matches!(t, Thinking::Disabled {})).into());
    }
    kwargs
}

fn anthropic_tools(defs: Option<Vec<AnthropicTool>>, choice: Option<AnthropicChoice>) -> Result<Option<Tools>> {
    let mut list = ToolList::default();
    for (i, d) in defs.unwrap_or_default().into_iter().enumerate() {
        if d.kind.as_deref().is_some_and(|k| k != "custom") {
            return Err(ApiError::invalid(&format!("tools[{i}].type"), "only custom tools (functions this client runs) are supported"));
        }
        list.add(&format!("tools[{i}]"), "input_schema", d.name, d.description, Some(d.input_schema))?;
    }
    let (choice, single) = match choice {
        None => (Some(Choice::Auto), None),
        Some(AnthropicChoice::Auto { disable_parallel_tool_use }) => (Some(Choice::Auto), disable_parallel_tool_use),
        Some(AnthropicChoice::Any { disable_parallel_tool_use }) => (Some(Choice::Required), disable_parallel_tool_use),
        Some(AnthropicChoice::Tool { name, disable_parallel_tool_use }) => (Some(Choice::Function(name)), disable_parallel_tool_use),
        Some(AnthropicChoice::None {}) => (None, None),
    };
    list.offer(choice, !single.unwrap_or(false))
}

/// Anthropic's system and content blocks as chat messages: tool results become `tool`
/// messages, an assistant's `tool_use` blocks its calls, `thinking` its reasoning.
fn anthropic_messages(system: Option<StringOr<Vec<TextBlock>>>, messages: Vec<AnthropicMessage>) -> Result<Vec<Value>> {
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty"));
    }
    let joined = |v: StringOr<Vec<TextBlock>>| match v {
        StringOr::String(s) => s,
        StringOr::Other(blocks) => blocks.into_iter().map(|b| b.text).collect(),
    };
    let mut out = Vec::new();
    if let Some(s) = system {
        out.push(json!({"role": "system", "content": joined(s)}));
    }
    let mut calls = Vec::new();
    for (i, m) in messages.into_iter().enumerate() {
        let assistant = m.role == MessageRole::Assistant;
        let role = if assistant { "assistant" } else { "user" };
        let blocks = match m.content {
            StringOr::String(text) => {
                out.push(json!({"role": role, "content": text}));
                continue;
            }
            StringOr::Other(blocks) => blocks,
        };
        let (mut text, mut tool_calls, mut reasoning, mut has_results) = (String::new(), Vec::new(), None, false);
        for (j, b) in blocks.into_iter().enumerate() {
            let at = format!("messages[{i}].content[{j}]");
            match b {
                InputBlock::Text { text: t, .. } => text.push_str(&t),
                InputBlock::ToolUse { id, name, input, .. } if assistant => {
                    calls.push(id.clone());
                    tool_calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input.to_string()}}));
                }
                InputBlock::ToolResult { tool_use_id, content, is_error, .. } if !assistant => {
                    if !calls.contains(&tool_use_id) {
                        let message = format!("no earlier tool_use block has id {tool_use_id:?}");
                        return Err(ApiError::invalid(&format!("{at}.tool_use_id"), message));
                    }
                    let result = content.map(joined).unwrap_or_default();
                    let result = if is_error == Some(true) { format!("Error: {result}") } else { result };
                    out.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": result}));
                    has_results = true;
                }
                InputBlock::Thinking { thinking, .. } if assistant => reasoning = Some(thinking),
                _ => return Err(ApiError::invalid(&at, format!("a {role} message cannot hold this block"))),
            }
        }
        if assistant {
            let mut message =
                json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { text.into() }});
            if !tool_calls.is_empty() {
                message["tool_calls"] = tool_calls.into();
            }
            if let Some(r) = reasoning {
                message["reasoning_content"] = r.into();
            }
            out.push(message);
        } else if !text.is_empty() {
            out.push(json!({"role": "user", "content": text}));
        } else if !has_results {
            return Err(ApiError::invalid(&format!("messages[{i}].content"), "a user message needs text or a tool result"));
        }
    }
    Ok(out)
}

/// A Responses API request as the one chat request. `items`: the conversation, the stored
/// one's first (`earlier` of them, which errors name by `previous_response_id`).
pub fn responses(req: &CreateResponse, items: &[InputItem], earlier: usize) -> Result<GenRequest> {
    if req.truncation.as_deref().is_some_and(|t| t != "disabled") {
        return Err(ApiError::invalid(
            "truncation",
            "`truncation` must be \"disabled\": a conversation too long for the context is refused",
        ));
    }
    let sampling = Sampling {
        max_tokens: in_range("max_output_tokens", req.max_output_tokens, 1..=1 << 24)?,
        temperature: req.temperature,
        top_p: req.top_p,
        service_tier: req.service_tier.clone(),
        ..Default::default()
    };
    let mut messages = Vec::new();
    if let Some(instructions) = &req.instructions {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    let mut calls = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = if i < earlier { "previous_response_id".to_string() } else { format!("input[{}]", i - earlier) };
        let missing = |field: &str| ApiError::invalid(&format!("{at}.{field}"), format!("`{field}` is required"));
        match item.kind.unwrap_or(ItemType::Message) {
            ItemType::Message => {
                let role = item.role.as_deref().ok_or_else(|| missing("role"))?;
                let role = match role {
                    "user" | "assistant" | "system" => role,
                    "developer" => "system",
                    other => return Err(ApiError::invalid(&format!("{at}.role"), format!("unknown role {other:?}"))),
                };
                let content = match item.content.clone().ok_or_else(|| missing("content"))? {
                    StringOr::String(s) => s,
                    StringOr::Other(parts) => parts.into_iter().map(|p| p.text).collect(),
                };
                messages.push(json!({"role": role, "content": content}));
            }
            ItemType::FunctionCall => {
                let call_id = item.call_id.clone().ok_or_else(|| missing("call_id"))?;
                let name = item.name.clone().ok_or_else(|| missing("name"))?;
                let arguments = item.arguments.clone().ok_or_else(|| missing("arguments"))?;
                if let Err(e) = serde_json::from_str::<Value>(&arguments) {
                    return Err(ApiError::invalid(&format!("{at}.arguments"), format!("the arguments must be JSON: {e}")));
                }
                let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
                calls.push(call_id);
                // Calls after a reply's text belong to the same assistant turn.
                match messages.last_mut() {
                    Some(last) if last["role"] == "assistant" => {
                        if last["tool_calls"].is_null() {
                            last["tool_calls"] = json!([]);
                        }
                        if let Some(list) = last["tool_calls"].as_array_mut() {
                            list.push(call);
                        }
                    }
                    _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            ItemType::FunctionCallOutput => {
                let call_id = item.call_id.clone().ok_or_else(|| missing("call_id"))?;
                if !calls.contains(&call_id) {
                    return Err(ApiError::invalid(&format!("{at}.call_id"), format!("no earlier function_call has call_id {call_id:?}")));
                }
                let output = item.output.clone().ok_or_else(|| missing("output"))?;
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": output}));
            }
            // Earlier reasoning is not shown to the model again.
            ItemType::Reasoning => {}
        }
    }
    if messages.iter().all(|m| m["role"] == "system") {
        return Err(ApiError::invalid("input", "`input` must hold a message"));
    }
    let mut gen = GenRequest::new(Some(req.model.clone()), vec![Prompt::Chat(messages)], sampling, None)?;
    gen.fields = Fields::RESPONSES;
    if let Some(format) = req.text.as_ref().and_then(|t| t.format.clone()) {
        gen.constraint = match format {
            TextFormat::Text => None,
            TextFormat::JsonObject => Some(Constraint { param: "text.format", grammar: Grammar::JsonObject }),
            TextFormat::JsonSchema { name, schema, .. } => {
                schema_name("text.format.name", &name)?;
                Some(Constraint { param: "text.format.schema", grammar: Grammar::JsonSchema(schema) })
            }
        };
    }
    let defs = req.tools.clone().map(|defs| defs.into_iter().map(|t| (t.name, t.description, t.parameters)).collect());
    let choice = req.tool_choice.clone().map(|c| c.map(|named| named.name));
    gen.tools = tools(defs, "tools[{i}]", choice, req.parallel_tool_calls)?;
    gen.effort("reasoning.effort", req.reasoning.as_ref().and_then(|r| r.effort.clone()), &[])?;
    gen.with_tools()
}

pub fn completion(req: CompletionRequest) -> Result<GenRequest> {
    let sampling = req.sampling();
    let prompts = texts_or_tokens(req.prompt, "prompt")?;
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::invalid("prompt", format!("at most {MAX_PROMPTS} prompts per request")));
    }
    let prompts = prompts
        .into_iter()
        .map(|p| match p {
            TextOrTokens::Text(s) => Prompt::Text(s),
            TextOrTokens::Tokens(ids) => Prompt::Tokens(ids),
            TextOrTokens::Token(id) => Prompt::Tokens(vec![id]),
        })
        .collect();
    let mut gen = GenRequest::new(Some(req.model), prompts, sampling, req.n)?.streaming(req.stream, req.stream_options)?;
    gen.logprobs = in_range("logprobs", req.logprobs, 0..=MAX_TOP_LOGPROBS)?.map(|k| k as usize);
    gen.echo = req.echo.unwrap_or(false);
    if gen.echo && gen.logprobs.is_some() {
        return Err(ApiError::invalid("echo", "`echo` with `logprobs` is not supported: the prompt's log-probs are not computed"));
    }
    Ok(gen)
}

/// A one-question chat (`/search/ask`), greedy unless `temperature` says otherwise.
pub fn question(model: Option<String>, question: String, max_tokens: Option<i64>, temperature: Option<f64>) -> Result<GenRequest> {
    let sampling = Sampling { max_tokens, temperature: Some(temperature.unwrap_or(0.0)), ..Default::default() };
    GenRequest::new(model, vec![Prompt::Chat(vec![json!({"role": "user", "content": question})])], sampling, None)
}

/// The runtime's sampling for a request: each value it gives (range-checked, naming the
/// field), else `defaults` — the operator's, then the model's own, then llama.cpp's.
pub fn sampling_params(s: &Sampling, defaults: SamplingDefaults) -> Result<SamplingParams> {
    let number = |param: &str, v: Option<f64>, ok: fn(f64) -> bool, expected: &str| match v {
        None => Ok(None),
        Some(x) if x.is_finite() && ok(x) => Ok(Some(x as f32)),
        Some(x) => Err(ApiError::invalid(param, format!("`{param}` must be {expected}, got {x}"))),
    };
    let penalty = |param: &str, v: Option<f64>| number(param, v, |x| (-2.0..=2.0).contains(&x), "a number in [-2, 2]");
    let given = SamplingDefaults {
        temperature: number("temperature", s.temperature, |x| (0.0..=2.0).contains(&x), "a number in [0, 2]")?,
        top_p: number("top_p", s.top_p, |x| x > 0.0 && x <= 1.0, "a number in (0, 1]")?,
        top_k: in_range("top_k", s.top_k, 0..=1 << 20)?.map(|k| k as usize),
        min_p: number("min_p", s.min_p, |x| (0.0..=1.0).contains(&x), "a number in [0, 1]")?,
        repetition_penalty: number("repetition_penalty", s.repetition_penalty, |x| x > 0.0 && x <= 10.0, "a number in (0, 10]")?,
    };
    Ok(SamplingParams {
        presence_penalty: penalty("presence_penalty", s.presence_penalty)?.unwrap_or(0.0),
        frequency_penalty: penalty("frequency_penalty", s.frequency_penalty)?.unwrap_or(0.0),
        logit_bias: s.logit_bias.as_ref().map(logit_bias).transpose()?.unwrap_or_default(),
        // Seeds are any integer; negative ones are reinterpreted, not rejected.
        seed: s.seed.map(|s| s as u64),
        ..SamplingParams::from_settings(given.or(defaults))
    })
}

/// Chat messages as templates read them: `content` a string (text parts joined) or null,
/// calls and results kept for the tool-call format to shape.
fn messages(items: Vec<ChatMessage>) -> Result<Vec<Value>> {
    if items.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match m.content {
                None if m.role == Role::Assistant && m.tool_calls.is_some() => Value::Null,
                None => return Err(ApiError::invalid(&format!("messages[{i}].content"), "`content` is required")),
                Some(StringOr::String(s)) => s.into(),
                // Only text parts exist (the type admits no other): their texts are joined.
                Some(StringOr::Other(parts)) => parts.into_iter().map(|p| p.text).collect::<String>().into(),
            };
            // OpenAI's newer name for the system role; templates know only `system`.
            let role = if m.role == Role::Developer { Role::System } else { m.role };
            let mut out = json!({"role": role, "content": content});
            if let Some(name) = m.name {
                out["name"] = name.into();
            }
            if let Some(calls) = m.tool_calls {
                if role != Role::Assistant {
                    return Err(ApiError::invalid(&format!("messages[{i}].tool_calls"), "only assistant messages make tool calls"));
                }
                out["tool_calls"] = serde_json::to_value(calls).unwrap_or_default();
            }
            match (role, m.tool_call_id) {
                (Role::Tool, Some(id)) => out["tool_call_id"] = id.into(),
                (Role::Tool, None) => {
                    return Err(ApiError::invalid(&format!("messages[{i}].tool_call_id"), "a tool message needs `tool_call_id`"))
                }
                (_, Some(_)) => return Err(ApiError::invalid(&format!("messages[{i}].tool_call_id"), "only tool messages answer a call")),
                (_, None) => {}
            }
            if let Some(r) = m.reasoning_content {
                out["reasoning_content"] = r.into();
            }
            Ok(out)
        })
        .collect()
}

fn stop_strings(v: StringOr<Vec<String>>, param: &str) -> Result<Vec<String>> {
    let list = match v {
        StringOr::String(s) => vec![s],
        StringOr::Other(list) if list.len() <= 16 => list,
        StringOr::Other(_) => return Err(ApiError::invalid(param, format!("`{param}` must be a string or up to 16 strings"))),
    };
    if list.iter().any(String::is_empty) {
        return Err(ApiError::invalid(param, "stop strings must not be empty"));
    }
    Ok(list)
}

fn logit_bias(map: &HashMap<String, f64>) -> Result<HashMap<u32, f32>> {
    map.iter()
        .map(|(k, &b)| {
            let id =
                k.parse::<u32>().map_err(|_| ApiError::invalid("logit_bias", format!("`logit_bias` keys must be token ids, got {k:?}")))?;
            if !(-100.0..=100.0).contains(&b) {
                return Err(ApiError::invalid("logit_bias", format!("`logit_bias[{k}]` must be a number in [-100, 100], got {b}")));
            }
            Ok((id, b as f32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use hearth_runtime::SamplingDefaults;

    use super::sampling_params;
    use crate::api::openai::Sampling;

    #[test]
    fn a_request_value_wins_and_defaults_fill_the_rest() {
        let defaults = SamplingDefaults { temperature: Some(0.6), top_k: Some(20), ..Default::default() };
        let explicit = Sampling { temperature: Some(1.0), ..Default::default() };
        let p = sampling_params(&explicit, defaults).unwrap();
        assert_eq!((p.temperature, p.top_k), (1.0, 20), "an explicit temperature 1 is honoured, top_k is the model's");
        assert_eq!((p.top_p, p.min_p), (0.95, 0.05), "what neither sets is llama.cpp's");
        let p = sampling_params(&Sampling::default(), defaults).unwrap();
        assert_eq!(p.temperature, 0.6);
        assert!(sampling_params(&Sampling { temperature: Some(3.0), ..Default::default() }, defaults).is_err());
    }
}

//! A conversation with tool calls and results, made ready for a chat template: as the template
//! expects them where it knows tools, as text where it does not.

use serde_json::{json, Value as Json};

use crate::format::Format;
use crate::{Choice, Tool};

/// A message the conversation cannot hold, and the request field at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct MessageError {
    pub param: String,
    pub message: String,
}

/// `messages` (OpenAI's shape: `content` a string or null, `tool_calls` with arguments as JSON
/// text, `role: tool` with `tool_call_id`) for a template of `format`; `offered`: the
/// request's tools, which a template without tools learns of in a system message.
pub fn prepare_messages(format: Format, messages: Vec<Json>, offered: Option<(&[Tool], &Choice)>) -> Result<Vec<Json>, MessageError> {
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(messages.len() + 1);
    for (i, mut m) in messages.into_iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default().to_string();
        if m["content"].is_null() {
            // Templates concatenate content; an assistant turn that only calls has none.
            m["content"] = "".into();
        }
        if let Some(list) = m.get_mut("tool_calls").and_then(Json::as_array_mut) {
            for (j, call) in list.iter_mut().enumerate() {
                let function = &mut call["function"];
                let param = || format!("messages[{i}].tool_calls[{j}].function.arguments");
                // Templates write the arguments with `tojson`: they need the object, not its text.
                let arguments: Json = match &function["arguments"] {
                    Json::String(text) => serde_json::from_str(text)
                        .map_err(|e| MessageError { param: param(), message: format!("the arguments must be JSON: {e}") })?,
                    Json::Null => json!({}),
                    object @ Json::Object(_) => object.clone(),
                    _ => return Err(MessageError { param: param(), message: "the arguments must be a JSON object or its text".into() }),
                };
                function["arguments"] = arguments;
                let name = function["name"].as_str().unwrap_or_default().to_string();
                calls.push((call["id"].as_str().unwrap_or_default().to_string(), name));
            }
        }
        if role == "tool" {
            let id = m["tool_call_id"].as_str().unwrap_or_default();
            let Some((_, name)) = calls.iter().find(|(c, _)| c == id) else {
                return Err(MessageError {
                    param: format!("messages[{i}].tool_call_id"),
                    message: format!("no earlier assistant message made a tool call with id {id:?}"),
                });
            };
            m["name"] = name.clone().into();
        }
        out.push(if format.native() { m } else { as_text(m) });
    }
    let Some((tools, choice)) = offered else { return Ok(out) };
    match format {
        // Phi-4-mini's template reads the tools off the system message, as JSON text.
        Format::Phi4 => {
            let list = Json::Array(tools.iter().map(Tool::to_openai).collect()).to_string();
            system_message(&mut out)["tools"] = list.into();
        }
        Format::Generic => {
            let system = system_message(&mut out);
            let instructions = Format::generic_instructions(tools, choice);
            let content = system["content"].as_str().unwrap_or_default();
            system["content"] = if content.is_empty() { instructions } else { format!("{content}\n\n{instructions}") }.into();
        }
        _ => {}
    }
    Ok(out)
}

/// The conversation's system message, added first if it has none.
fn system_message(messages: &mut Vec<Json>) -> &mut Json {
    if messages.first().is_none_or(|m| m["role"] != "system") {
        messages.insert(0, json!({"role": "system", "content": ""}));
    }
    &mut messages[0]
}

/// A message with calls or a tool's result, as plain text in the generic format.
fn as_text(mut m: Json) -> Json {
    if let Some(list) = m.get("tool_calls").and_then(Json::as_array) {
        let calls: Vec<Json> =
            list.iter().map(|c| json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})).collect();
        let text = json!({"tool_calls": calls}).to_string();
        // Text the turn had besides its calls comes first.
        let content = match m["content"].as_str().filter(|c| !c.is_empty()) {
            Some(c) => format!("{c}\n{text}"),
            None => text,
        };
        return json!({"role": "assistant", "content": content});
    }
    if m["role"] == "tool" {
        let result = json!({"tool_response": {"name": m["name"], "content": m["content"]}});
        return json!({"role": "user", "content": result.to_string()});
    }
    if let Some(object) = m.as_object_mut() {
        object.remove("tool_call_id");
    }
    m
}

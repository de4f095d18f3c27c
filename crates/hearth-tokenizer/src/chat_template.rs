//! Chat templates rendered the way transformers' `apply_chat_template` renders them (Jinja2
//! with trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `strftime_now` and its
//! own `tojson`), on minijinja plus its Python-compatibility methods.

use std::borrow::Cow;
use std::fmt::Write;

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, Value};

use crate::pyjson::{self, DumpOptions};
use crate::TokenizerError;

const TEMPLATE_NAME: &str = "chat";

/// What the template sees besides the messages.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    pub add_generation_prompt: bool,
    pub tools: Option<Vec<serde_json::Value>>,
    pub documents: Option<Vec<serde_json::Value>>,
    /// Further template variables (e.g. `enable_thinking`); they may override bos/eos_token.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A model's chat template, compiled once.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template's text, as the model ships it (its family's tool-call format is read from it).
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: Option<String>, eos_token: Option<String>) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, strip_generation_tags(source).into_owned())
            .map_err(|e| TokenizerError::TemplateSyntax(error_message(&e)))?;
        Ok(Self { env, source: source.to_string(), bos_token, eos_token })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn render(&self, messages: &[serde_json::Value], opts: &RenderOptions) -> Result<String, TokenizerError> {
        let mut ctx = serde_json::Map::new();
        if let Some(bos) = &self.bos_token {
            ctx.insert("bos_token".into(), bos.clone().into());
        }
        if let Some(eos) = &self.eos_token {
            ctx.insert("eos_token".into(), eos.clone().into());
        }
        ctx.extend(opts.extra.clone());
        ctx.insert("messages".into(), messages.to_vec().into());
        // transformers always passes tools/documents, as None when absent, so templates testing
        // `tools is not none` or `tools is defined` behave as they do there.
        ctx.insert("tools".into(), opts.tools.clone().into());
        ctx.insert("documents".into(), opts.documents.clone().into());
        ctx.insert("add_generation_prompt".into(), opts.add_generation_prompt.into());
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|e| TokenizerError::TemplateRender(error_message(&e)))?;
        template.render(Value::from_serialize(&ctx)).map_err(|e| TokenizerError::TemplateRender(error_message(&e)))
    }
}

/// The error and its causes on one line (a `raise_exception` message is the detail).
fn error_message(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(message, ": {cause}");
        source = cause.source();
    }
    message
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> Result<String, Error> {
    let mut out = String::new();
    // Writing (not `to_string`) turns a bad format into an error instead of a panic.
    write!(out, "{}", chrono::Local::now().format(&format))
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {format:?}")))?;
    Ok(out)
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`, unescaped (minijinja's own escapes HTML).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let invalid = |msg: String| Error::new(ErrorKind::InvalidOperation, msg);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match (v.as_str(), i64::try_from(v.clone())) {
            (Some(s), _) => Some(s.to_string()),
            (None, Ok(n)) => Some(" ".repeat(n.max(0) as usize)),
            _ => return Err(invalid(format!("tojson: bad indent {v}"))),
        },
    };
    let mut opts = DumpOptions::new(indent);
    if let Some(separators) = kwargs.get::<Option<Value>>("separators")? {
        if !separators.is_none() {
            let pair: Vec<String> = separators
                .try_iter()?
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .filter(|v: &Vec<String>| v.len() == 2)
                .ok_or_else(|| invalid("tojson: separators must be two strings".into()))?;
            opts.item_separator = pair[0].clone();
            opts.key_separator = pair[1].clone();
        }
    }
    opts.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    opts.ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value).map_err(|e| invalid(format!("tojson: value is not JSON-serialisable: {e}")))?;
    Ok(Value::from_safe_string(pyjson::dumps(&json, &opts)))
}

/// transformers' `{% generation %}` / `{% endgeneration %}` only mark assistant spans for
/// training masks; minijinja has no such tag, so they become an always-true `if`, which keeps the
/// whitespace control of the original tags.
fn strip_generation_tags(source: &str) -> Cow<'_, str> {
    if !source.contains("generation") {
        return Cow::Borrowed(source);
    }
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let body = &tag[2..];
        let lead = body.find(|c: char| !(c == '-' || c == '+' || c.is_whitespace())).unwrap_or(body.len());
        let word_len = body[lead..].find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(body.len() - lead);
        let replacement = match &body[lead..lead + word_len] {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        out.push_str("{%");
        out.push_str(&body[..lead]);
        match replacement {
            Some(r) => {
                out.push_str(r);
                rest = &body[lead + word_len..];
            }
            None => rest = &body[lead..],
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks() {
        let src = "{%- generation -%}x{% endgeneration %}{% if generation %}y{% endif %}";
        assert_eq!(strip_generation_tags(src), "{%- if true -%}x{% endif %}{% if generation %}y{% endif %}");
    }
}

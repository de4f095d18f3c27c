//! How each model family writes tool calls, the grammar that holds a reply to it, and how
//! text in it is read back.

use hearth_constrain::{compact, Grammar};
use serde_json::{json, Value as Json};

use crate::scan::{self, CallObject};
use crate::{Choice, Tool};

/// A family's way of writing tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `<tool_call>\n{"name": …, "arguments": …}\n</tool_call>`, a block per call: Hermes 2/3,
    /// Qwen 2.5 and 3, QwQ, SmolLM3.
    Hermes,
    /// `{"name": …, "parameters": …}` (maybe after `<|python_tag|>`), calls joined by `; `:
    /// Llama 3.1 to 3.3.
    Llama3,
    /// `[TOOL_CALLS][{"name": …, "arguments": …}, …]`: Mistral 7B v0.3, Nemo.
    Mistral,
    /// `[TOOL_CALLS]name[ARGS]{…}` per call: Mistral Small 3.2, Devstral, Magistral.
    MistralArgs,
    /// `<|tool_call|>[{"name": …, "arguments": …}, …]<|/tool_call|>`: Phi-4-mini.
    Phi4,
    /// The whole reply is JSON, `{"tool_calls": [{"name": …, "arguments": …}, …]}` or
    /// `{"response": "…"}`, as a system message tells the model: for templates that know
    /// nothing of tools (llama.cpp's generic handler does the same).
    Generic,
}

/// Marker strings some vocabularies hold as single (often special) tokens.
const MARKERS: [&str; 6] = ["<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "<|tool_call|>", "<|/tool_call|>"];

/// Where calls go: `list_open call_open CALL call_close (separator call_open CALL call_close)* list_close`.
struct Layout {
    list_open: &'static str,
    call_open: &'static str,
    call_close: &'static str,
    separator: &'static str,
    list_close: &'static str,
}

impl Format {
    pub const NAMES: [&'static str; 6] = ["hermes", "llama3", "mistral", "mistral-args", "phi4", "generic"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn from_name(name: &str) -> Option<Format> {
        let all = [Format::Hermes, Format::Llama3, Format::Mistral, Format::MistralArgs, Format::Phi4, Format::Generic];
        all.into_iter().find(|f| f.name() == name)
    }

    /// The format a chat template teaches its model, from the markers it writes.
    pub fn detect(template: &str) -> Format {
        if template.contains("[ARGS]") {
            Format::MistralArgs
        } else if template.contains("[TOOL_CALLS]") {
            Format::Mistral
        } else if template.contains("<|tool_call|>") || template.contains("<|tool|>") {
            Format::Phi4
        } else if template.contains("<tool_call>") {
            Format::Hermes
        } else if template.contains("<|start_header_id|>") && template.contains("tool_calls") {
            Format::Llama3
        } else {
            Format::Generic
        }
    }

    /// Whether the template itself renders `tools`, calls and results (else
    /// [`prepare_messages`](crate::prepare_messages) writes them as text).
    pub fn native(self) -> bool {
        self != Format::Generic
    }

    fn layout(self) -> Layout {
        let (list_open, call_open, call_close, separator, list_close) = match self {
            Format::Hermes => ("", "<tool_call>\n", "\n</tool_call>", "\n", ""),
            Format::Llama3 => ("", "", "", "; ", ""),
            Format::Mistral => ("[TOOL_CALLS][", "", "", ", ", "]"),
            Format::MistralArgs => ("", "[TOOL_CALLS]", "", "", ""),
            Format::Phi4 => ("<|tool_call|>[", "", "", ", ", "]<|/tool_call|>"),
            Format::Generic => ("{\"tool_calls\": [", "", "", ", ", "]}"),
        };
        Layout { list_open, call_open, call_close, separator, list_close }
    }

    /// What starts the calls: with `auto`, the constraint begins here. Llama's calls start
    /// with the reply itself; a generic reply is constrained throughout.
    fn trigger(self) -> Option<&'static str> {
        match self {
            Format::Hermes => Some("<tool_call>"),
            Format::Mistral | Format::MistralArgs => Some("[TOOL_CALLS]"),
            Format::Phi4 => Some("<|tool_call|>"),
            Format::Llama3 | Format::Generic => None,
        }
    }

    /// The grammar a reply offering `tools` follows under `choice`. `special` gives the token
    /// id of a marker the vocabulary holds as a special token (those are matched as tokens,
    /// since no text produces them).
    pub fn grammar(self, tools: &[Tool], choice: &Choice, parallel: bool, special: &dyn Fn(&str) -> Option<u32>) -> Grammar {
        let lit = |s: &str| literal(s, special);
        let l = self.layout();
        let offered: Vec<&Tool> = match choice {
            Choice::Function(name) => tools.iter().filter(|t| &t.name == name).collect(),
            _ => tools.iter().collect(),
        };
        let mut rules = vec![format!("call: {}", (0..offered.len()).map(|i| format!("call_{i}")).collect::<Vec<_>>().join(" | "))];
        for (i, tool) in offered.iter().enumerate() {
            let name = Json::String(tool.name.clone()).to_string();
            let body = match self {
                Format::MistralArgs => format!("{} {}", lit(&tool.name), lit("[ARGS]")),
                Format::Llama3 => lit(&format!("{{\"name\": {name}, \"parameters\": ")),
                _ => lit(&format!("{{\"name\": {name}, \"arguments\": ")),
            };
            let close = if self == Format::MistralArgs { "" } else { " \"}\"" };
            rules.push(format!("call_{i}: {body} %json {}{close}", compact(tool.parameters.clone())));
        }
        let block = format!("{} call {}", lit(l.call_open), lit(l.call_close));
        let more =
            if parallel && !matches!(choice, Choice::Function(_)) { format!("({} {block})*", lit(l.separator)) } else { String::new() };
        rules.push(format!("calls: {} {block} {more} {}", lit(l.list_open), lit(l.list_close)));
        let start = match (choice, self.trigger()) {
            (Choice::Required | Choice::Function(_), _) => "start: calls".to_string(),
            (Choice::Auto, None) if self == Format::Generic => {
                format!("start: calls | {} %json {{\"type\": \"string\"}} \"}}\"", lit("{\"response\": "))
            }
            // Llama: a call is the whole reply; text must not start like one.
            (Choice::Auto, None) => "start: calls | TEXT?\nTEXT: /[^{\\s](.|\\n)*/".to_string(),
            (Choice::Auto, Some(trigger)) => {
                // The calls once their first marker is out; a block is shorter by it.
                let opening = format!("{}{}", l.list_open, l.call_open);
                let after = lit(&opening[trigger.len()..]);
                let calls_after = format!("after_trigger: {after} call {} {more} {}", lit(l.call_close), lit(l.list_close));
                match special(trigger) {
                    // No text produces a special token: free text is anything, then the token.
                    Some(id) => format!("start: TEXT? | TEXT? <[{id}]> after_trigger\nTEXT: /(.|\\n)+/\n{calls_after}"),
                    // Free text up to the marker, lazily: a greedy lexeme would run past it.
                    None => {
                        let rx = regex_escape(trigger);
                        format!(
                            "start: TEXT | prefix after_trigger\nTEXT: /(.|\\n)*/ & ~/(.|\\n)*{rx}(.|\\n)*/\nprefix[lazy]: /(.|\\n)*{rx}/\n{calls_after}"
                        )
                    }
                }
            }
        };
        Grammar::Lark(format!("%llguidance {{}}\n{start}\n{}\n", rules.join("\n")))
    }

    /// The instructions a template without tools gets in a system message ([`Format::Generic`]).
    pub fn generic_instructions(tools: &[Tool], choice: &Choice) -> String {
        let list: Vec<String> = tools.iter().map(|t| t.to_openai()["function"].to_string()).collect();
        let answer = match choice {
            Choice::Auto => "\nTo answer without a tool, reply {\"response\": \"your answer\"}.",
            _ => "",
        };
        format!(
            "You can call these tools:\n{}\n\nTo call tools, reply {{\"tool_calls\": [{{\"name\": \"tool_name\", \"arguments\": {{…}}}}]}}.{answer}",
            list.join("\n")
        )
    }

    /// A new call id: OpenAI's `call_` and 24 characters; Mistral's templates insist on 9.
    pub fn call_id(self) -> String {
        use rand::distr::{Alphanumeric, SampleString};
        let mut rng = rand::rng();
        match self {
            Format::Mistral | Format::MistralArgs => Alphanumeric.sample_string(&mut rng, 9),
            _ => format!("call_{}", Alphanumeric.sample_string(&mut rng, 24)),
        }
    }

    /// Splits a reply (after any reasoning) into its text and its calls so far. Unless
    /// `finished`, text that may yet turn into a call's marker is held back.
    pub(crate) fn read(self, text: &str, finished: bool) -> Answer {
        let start = match self {
            Format::Llama3 => {
                let body = text.trim_start();
                let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim_start();
                if body.starts_with('{') {
                    Some(text.len() - body.len())
                } else if body.is_empty() && !finished {
                    // Nothing yet says whether this is a call.
                    return Answer::default();
                } else {
                    None
                }
            }
            Format::Generic => return read_generic(text, finished),
            _ => {
                let trigger = self.trigger().unwrap_or_default();
                match text.find(trigger) {
                    Some(at) => Some(at),
                    None => {
                        let keep = if finished { text.len() } else { text.len() - partial_suffix(text, trigger) };
                        return Answer { content: text[..keep].to_string(), calls: Vec::new() };
                    }
                }
            }
        };
        let Some(at) = start else { return Answer { content: text.to_string(), calls: Vec::new() } };
        let mut rest = text[at..].trim_start();
        if self == Format::Llama3 {
            rest = rest.strip_prefix("<|python_tag|>").unwrap_or(rest);
        }
        Answer { content: text[..at].trim_end().to_string(), calls: self.read_calls(rest) }
    }

    /// The calls laid out from the start of `text`, the last maybe incomplete.
    fn read_calls(self, text: &str) -> Vec<CallObject> {
        let l = self.layout();
        let mut calls = Vec::new();
        let Some(mut rest) = strip(text, l.list_open) else { return calls };
        while let Some(after) = strip(rest.trim_start(), l.call_open).map(str::trim_start).filter(|a| !a.is_empty()) {
            let call = if self == Format::MistralArgs { mistral_args(after) } else { scan::call_object(after) };
            let Some(call) = call else { break };
            let len = call.len;
            calls.push(call);
            let Some(len) = len else { break };
            rest = &after[len..];
            let Some(r) = strip(rest.trim_start(), l.call_close) else { break };
            let Some(r) = strip(r.trim_start(), l.separator) else { break };
            rest = r;
        }
        calls
    }
}

/// A reply's text and calls so far.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub content: String,
    pub calls: Vec<CallObject>,
}

/// `s` after `prefix` (ignoring whitespace in the prefix, which models vary); `None` when `s`
/// does not start with it. At the text's end, a partial prefix leaves nothing.
fn strip<'s>(s: &'s str, prefix: &str) -> Option<&'s str> {
    let prefix = prefix.trim();
    if let Some(rest) = s.strip_prefix(prefix) {
        return Some(rest);
    }
    prefix.starts_with(s).then_some("")
}

/// `name[ARGS]{…}` (Mistral Small 3.2), with `[CALL_ID]…` before `[ARGS]` where a model writes one.
fn mistral_args(s: &str) -> Option<CallObject> {
    let Some(at) = s.find('[') else {
        return Some(CallObject::default());
    };
    let name = s[..at].trim().to_string();
    let rest = &s[at..];
    let Some(args_at) = rest.find("[ARGS]") else {
        return Some(CallObject::default());
    };
    let args = &rest[args_at + "[ARGS]".len()..];
    let (arguments, len) = match scan::value(args) {
        scan::Extent::Complete(n) => (args[..n].to_string(), Some(at + args_at + "[ARGS]".len() + n)),
        scan::Extent::Partial => (args.to_string(), None),
        scan::Extent::Invalid => return None,
    };
    Some(CallObject { name: Some(name), arguments, len })
}

/// `{"tool_calls": [...]}` or `{"response": "..."}`, the response's text decoded as it grows.
fn read_generic(text: &str, finished: bool) -> Answer {
    const RESPONSE: &str = "{\"response\": ";
    let body = text.trim_start();
    if let Some(rest) = body.strip_prefix(RESPONSE) {
        return Answer { content: partial_string(rest.trim_start()), calls: Vec::new() };
    }
    if body.starts_with("{\"tool_calls\"") {
        return Answer { content: String::new(), calls: Format::Generic.read_calls(body) };
    }
    // Not yet telling which (or not the format at all: the text as it is).
    let undecided = !finished && (RESPONSE.starts_with(body) || "{\"tool_calls\"".starts_with(body));
    Answer { content: if undecided { String::new() } else { text.to_string() }, calls: Vec::new() }
}

/// The decoded text of a JSON string so far (escapes cut short wait for their end).
fn partial_string(s: &str) -> String {
    let Some(body) = s.strip_prefix('"') else { return String::new() };
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let escape = &body[i..];
                let len = if escape[1..].starts_with('u') { 6 } else { 2 };
                let Some(code) = escape.get(..len) else { break };
                match serde_json::from_str::<String>(&format!("\"{code}\"")) {
                    Ok(s) => out.push_str(&s),
                    // A surrogate half waits for its pair.
                    Err(_) => break,
                }
                for _ in 1..len {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// How many bytes at the end of `text` could begin `marker`.
pub(crate) fn partial_suffix(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

/// A Lark expression matching `s`: quoted text, with markers the vocabulary holds as special
/// tokens matched as those tokens.
fn literal(s: &str, special: &dyn Fn(&str) -> Option<u32>) -> String {
    let mut parts = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let next = MARKERS.iter().filter_map(|m| rest.find(m).map(|at| (at, *m))).min();
        match next {
            Some((at, marker)) => {
                if at > 0 {
                    parts.push(Json::String(rest[..at].to_string()).to_string());
                }
                parts.push(match special(marker) {
                    Some(id) => format!("<[{id}]>"),
                    None => Json::String(marker.to_string()).to_string(),
                });
                rest = &rest[at + marker.len()..];
            }
            None => {
                parts.push(Json::String(rest.to_string()).to_string());
                rest = "";
            }
        }
    }
    if parts.is_empty() {
        return "\"\"".to_string();
    }
    parts.join(" ")
}

pub(crate) fn regex_escape(s: &str) -> String {
    s.chars().map(|c| if r"\.+*?()|[]{}^$#&-~/".contains(c) { format!("\\{c}") } else { c.to_string() }).collect()
}

/// An argument schema for a function declared without one: no arguments.
pub fn no_parameters() -> Json {
    json!({"type": "object", "properties": {}, "additionalProperties": false})
}

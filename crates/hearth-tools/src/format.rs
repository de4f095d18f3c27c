//! How each model family writes tool calls, the grammar that holds a reply to it, and how
//! text in it is read back.

use hearth_constrain::{compact, Grammar};
use hearth_runtime::partial_suffix;
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

/// Every format and its name (`--tool-format`).
const ALL: [(Format, &str); 6] = [
    (Format::Hermes, "hermes"),
    (Format::Llama3, "llama3"),
    (Format::Mistral, "mistral"),
    (Format::MistralArgs, "mistral-args"),
    (Format::Phi4, "phi4"),
    (Format::Generic, "generic"),
];

impl Format {
    pub fn names() -> impl Iterator<Item = &'static str> {
        ALL.iter().map(|(_, n)| *n)
    }

    pub fn name(self) -> &'static str {
        ALL.iter().find(|(f, _)| *f == self).map_or("generic", |(_, n)| n)
    }

    pub fn from_name(name: &str) -> Option<Format> {
        ALL.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
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

    /// The markers its calls are written with (which a vocabulary may hold as special tokens).
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            Format::Hermes => &["<tool_call>", "</tool_call>"],
            Format::Llama3 => &["<|python_tag|>"],
            Format::Mistral => &["[TOOL_CALLS]"],
            Format::MistralArgs => &["[TOOL_CALLS]", "[ARGS]"],
            Format::Phi4 => &["<|tool_call|>", "<|/tool_call|>"],
            Format::Generic => &[],
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
                let rx = regex_escape(trigger);
                match special(trigger) {
                    // No text produces a special token: free text is anything, then the token.
                    // Nor may the text spell the marker out: the reader would take it for a call.
                    Some(id) => {
                        format!("start: TEXT? | TEXT? <[{id}]> after_trigger\nTEXT: /(.|\\n)+/ & ~/(.|\\n)*{rx}(.|\\n)*/\n{calls_after}")
                    }
                    // Free text up to the marker, lazily: a greedy lexeme would run past it.
                    None => {
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
    /// `finished`, text that may yet turn into a call's marker is held back. `p` carries what
    /// earlier reads of the same (grown) text found, so each read only looks at what is new.
    pub(crate) fn read<'t>(self, text: &'t str, finished: bool, p: &mut Progress) -> Answer<'t> {
        if self == Format::Generic {
            return read_generic(text, finished, p);
        }
        if p.calls_at.is_none() {
            match self.trigger() {
                // Llama: the reply is a call if it starts as one (after `<|python_tag|>`).
                None => {
                    const TAG: &str = "<|python_tag|>";
                    let body = text.trim_start();
                    if !finished && TAG.starts_with(body) {
                        // Maybe the tag, not yet whole.
                        return Answer::default();
                    }
                    let body = body.strip_prefix(TAG).unwrap_or(body).trim_start();
                    if body.starts_with('{') {
                        p.calls_at = Some(text.len() - text.trim_start().len());
                    } else if body.is_empty() && !finished {
                        // Nothing yet says whether this is a call.
                        return Answer::default();
                    } else {
                        return Answer { content: Content::Text(text), ..Answer::default() };
                    }
                }
                Some(trigger) => {
                    let from = floor_boundary(text, p.searched.saturating_sub(trigger.len() - 1));
                    match text[from..].find(trigger) {
                        Some(at) => p.calls_at = Some(from + at),
                        None => {
                            p.searched = text.len();
                            let keep = if finished { text.len() } else { text.len() - partial_suffix(text, trigger) };
                            return Answer { content: Content::Text(&text[..keep]), ..Answer::default() };
                        }
                    }
                }
            }
        }
        let at = p.calls_at.unwrap_or_default();
        let mut rest = text[at..].trim_start();
        if self == Format::Llama3 {
            rest = rest.strip_prefix("<|python_tag|>").unwrap_or(rest).trim_start();
        }
        let (calls_from, calls) = self.read_calls(rest, p);
        Answer { content: Content::Text(text[..at].trim_end()), calls_from, calls }
    }

    /// The calls laid out from the start of `text`, the last maybe incomplete: those after the
    /// ones `p` has seen complete, and the index of the first.
    fn read_calls<'t>(self, text: &'t str, p: &mut Progress) -> (usize, Vec<CallObject<'t>>) {
        let l = self.layout();
        let first = p.calls_done;
        let mut calls = Vec::new();
        let mut rest = match p.calls_resume {
            Some(at) => &text[at..],
            None => match strip(text, l.list_open) {
                Some(rest) => rest,
                None => return (first, calls),
            },
        };
        while let Some(after) = strip(rest.trim_start(), l.call_open).map(str::trim_start).filter(|a| !a.is_empty()) {
            let call = if self == Format::MistralArgs { mistral_args(after) } else { scan::call_object(after) };
            let Some(call) = call else { break };
            let len = call.len;
            calls.push(call);
            let Some(len) = len else { break };
            rest = &after[len..];
            let Some(r) = strip(rest.trim_start(), l.call_close) else { break };
            let Some(r) = strip(r.trim_start(), l.separator) else { break };
            // Text after the separator: this call and its separator are whole, and later reads
            // start after them.
            if !r.is_empty() {
                p.calls_done = first + calls.len();
                p.calls_resume = Some(text.len() - r.len());
            }
            rest = r;
        }
        (first, calls)
    }
}

/// A reply's text and calls so far.
#[derive(Debug, Default)]
pub(crate) struct Answer<'t> {
    pub content: Content<'t>,
    /// The index of the first of `calls` (those before it are complete and were read before).
    pub calls_from: usize,
    pub calls: Vec<CallObject<'t>>,
}

/// A reply's text so far: a part of it, or (a generic reply's) the decoded response string,
/// kept in [`Progress::decoded`].
#[derive(Debug, Default)]
pub(crate) enum Content<'t> {
    #[default]
    None,
    Text(&'t str),
    Decoded,
}

/// What reading a growing reply has found so far, so that each read only looks at new text.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Where the calls start, once found.
    calls_at: Option<usize>,
    /// How much of the reply was searched for them.
    searched: usize,
    /// Calls read complete, and where (in the calls' text) the next one starts.
    calls_done: usize,
    calls_resume: Option<usize>,
    /// A generic reply's response string decoded so far, and the bytes of its body decoded.
    pub decoded: String,
    decoded_bytes: usize,
}

/// The nearest character boundary at or before `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
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
fn mistral_args(s: &str) -> Option<CallObject<'_>> {
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
        scan::Extent::Complete(n) => (&args[..n], Some(at + args_at + "[ARGS]".len() + n)),
        scan::Extent::Partial => (args, None),
        scan::Extent::Invalid => return None,
    };
    Some(CallObject { name: Some(name), arguments, len })
}

/// `{"tool_calls": [...]}` or `{"response": "..."}`, the response's text decoded as it grows.
fn read_generic<'t>(text: &'t str, finished: bool, p: &mut Progress) -> Answer<'t> {
    const RESPONSE: &str = "{\"response\": ";
    let body = text.trim_start();
    if let Some(rest) = body.strip_prefix(RESPONSE) {
        if let Some(string) = rest.trim_start().strip_prefix('"') {
            p.decoded_bytes = decode_string(string, p.decoded_bytes, &mut p.decoded);
        }
        return Answer { content: Content::Decoded, ..Answer::default() };
    }
    if body.starts_with("{\"tool_calls\"") {
        let (calls_from, calls) = Format::Generic.read_calls(body, p);
        return Answer { calls_from, calls, ..Answer::default() };
    }
    // Not yet telling which (or not the format at all: the text as it is).
    let undecided = !finished && (RESPONSE.starts_with(body) || "{\"tool_calls\"".starts_with(body));
    Answer { content: if undecided { Content::None } else { Content::Text(text) }, ..Answer::default() }
}

/// Decodes more of a JSON string's body (what follows its opening quote) from byte `at`:
/// whole characters and escapes (a surrogate pair as one) are appended to `out`. Returns where
/// it stopped: the closing quote, the text's end, or an escape not yet complete.
fn decode_string(body: &str, mut at: usize, out: &mut String) -> usize {
    let hex = |from: usize| body.get(from..from + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
    let bytes = body.as_bytes();
    while let Some(&b) = bytes.get(at) {
        match b {
            b'"' => break,
            b'\\' => {
                let simple = match bytes.get(at + 1) {
                    None => break,
                    Some(b'u') => None,
                    Some(b'n') => Some('\n'),
                    Some(b't') => Some('\t'),
                    Some(b'r') => Some('\r'),
                    Some(b'b') => Some('\u{8}'),
                    Some(b'f') => Some('\u{c}'),
                    Some(&c @ (b'"' | b'\\' | b'/')) => Some(c as char),
                    // Not JSON (the grammar allows none): the text ends here.
                    Some(_) => break,
                };
                if let Some(c) = simple {
                    out.push(c);
                    at += 2;
                    continue;
                }
                let Some(high) = hex(at + 2) else { break };
                if !(0xD800..0xDC00).contains(&high) {
                    out.push(char::from_u32(high).unwrap_or('\u{FFFD}'));
                    at += 6;
                    continue;
                }
                // A high surrogate: its low half follows as another \uXXXX.
                if body.len() < at + 12 {
                    break;
                }
                let low = (body.get(at + 6..at + 8) == Some("\\u")).then(|| hex(at + 8)).flatten().filter(|l| (0xDC00..0xE000).contains(l));
                match low {
                    Some(low) => {
                        out.push(char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).unwrap_or('\u{FFFD}'));
                        at += 12;
                    }
                    None => {
                        out.push('\u{FFFD}');
                        at += 6;
                    }
                }
            }
            _ => {
                let c = body[at..].chars().next().unwrap_or_default();
                out.push(c);
                at += c.len_utf8();
            }
        }
    }
    at
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

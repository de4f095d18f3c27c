//! A reply read as it streams: reasoning, then text or calls, each sent once as it becomes
//! certain. The whole reply is read the same way, so streamed pieces always add up to it.

use hearth_constrain::Grammar;

use crate::format::{partial_suffix, regex_escape, Format};
use crate::Call;

/// A reasoning block's markers (`<think>…</think>`: Qwen3, QwQ, DeepSeek-R1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reasoning {
    pub open: &'static str,
    pub close: &'static str,
}

impl Reasoning {
    const THINK: Reasoning = Reasoning { open: "<think>", close: "</think>" };

    /// The block a chat template's model writes, if it writes one.
    pub fn detect(template: &str) -> Option<Reasoning> {
        template.contains(Self::THINK.close).then_some(Self::THINK)
    }

    /// Whether a rendered prompt leaves the block open (DeepSeek-R1's template does).
    pub fn opened_by(self, prompt: &str) -> bool {
        prompt.trim_end().ends_with(self.open)
    }

    /// Whether a rendered prompt has already closed the block, so the reply has none (Qwen3's
    /// template with `enable_thinking` false writes an empty one).
    pub fn closed_by(self, prompt: &str) -> bool {
        prompt.trim_end().ends_with(self.close)
    }

    /// `answer` held only after the reasoning block: the block is free text up to its close
    /// (and the whitespace after it). `opened`: the prompt opened it.
    pub fn then(self, answer: &Grammar, opened: bool) -> Grammar {
        let (open, close) = (regex_escape(self.open), regex_escape(self.close));
        let body = answer.lark();
        let renamed: Vec<String> = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("%llguidance"))
            .map(|l| match l.trim_start().strip_prefix("start") {
                Some(rest) if rest.trim_start().starts_with(':') => format!("answer{rest}"),
                _ => l.to_string(),
            })
            .collect();
        let (lead, optional) = if opened { (String::new(), "") } else { (open, "?") };
        // The block ends at its first close: one with a second close inside cannot end later.
        Grammar::Lark(format!(
            "%llguidance {{}}\nstart: THINK{optional} answer\nTHINK: /{lead}(.|\\n)*{close}[ \\n]*/ & ~/(.|\\n)*{close}(.|\\n)*{close}(.|\\n)*/\n{}\n",
            renamed.join("\n")
        ))
    }
}

/// A piece of a streamed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    Reasoning(String),
    Content(String),
    /// A call begins: its index among the reply's calls, id and name.
    Call {
        index: usize,
        id: String,
        name: String,
    },
    /// More of a call's arguments.
    Arguments {
        index: usize,
        text: String,
    },
}

/// A whole reply, read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub reasoning: Option<String>,
    pub content: String,
    pub calls: Vec<Call>,
}

/// Reads one reply as its text arrives. With neither a call format nor a reasoning block, the
/// text passes through as it comes.
pub struct Reader {
    /// Tool calls are read in this format; `None`: the reply is text.
    format: Option<Format>,
    reasoning: Option<Reasoning>,
    /// The prompt left the reasoning block open.
    opened: bool,
    text: String,
    sent: Reply,
}

impl Reader {
    pub fn new(format: Option<Format>, reasoning: Option<Reasoning>, opened: bool) -> Self {
        Reader { format, reasoning, opened, text: String::new(), sent: Reply::default() }
    }

    /// The pieces `more` makes certain.
    pub fn push(&mut self, more: &str) -> Vec<Delta> {
        if self.format.is_none() && self.reasoning.is_none() {
            self.sent.content.push_str(more);
            return if more.is_empty() { Vec::new() } else { vec![Delta::Content(more.to_string())] };
        }
        self.text.push_str(more);
        self.advance(false)
    }

    /// The pieces the end of the reply makes certain.
    pub fn finish(&mut self) -> Vec<Delta> {
        if self.format.is_none() && self.reasoning.is_none() {
            return Vec::new();
        }
        self.advance(true)
    }

    /// Everything sent so far: after [`Reader::finish`], the whole reply. A call its reply cut
    /// short (at `max_tokens`) is kept as sent.
    pub fn reply(&self) -> &Reply {
        &self.sent
    }

    fn advance(&mut self, finished: bool) -> Vec<Delta> {
        let mut out = Vec::new();
        let (reasoning, answer) = self.split(finished);
        // Whitespace at either end is dropped: held back until what follows shows it inside.
        let reasoning = reasoning.map(|r| r.trim().to_string());
        let answer = match self.format {
            Some(format) => format.read(answer, finished),
            None => crate::format::Answer { content: answer.to_string(), calls: Vec::new() },
        };
        if let Some(r) = reasoning {
            let sent = self.sent.reasoning.as_deref().unwrap_or_default();
            if let Some(new) = r.strip_prefix(sent).filter(|n| !n.is_empty()) {
                out.push(Delta::Reasoning(new.to_string()));
                self.sent.reasoning.get_or_insert_with(String::new).push_str(new);
            }
        }
        let content = answer.content.trim();
        if let Some(new) = content.strip_prefix(self.sent.content.as_str()).filter(|n| !n.is_empty()) {
            out.push(Delta::Content(new.to_string()));
            self.sent.content.push_str(new);
        }
        let format = self.format.unwrap_or(Format::Generic);
        for (index, call) in answer.calls.into_iter().enumerate() {
            let Some(name) = call.name else { break };
            if index == self.sent.calls.len() {
                let id = format.call_id();
                out.push(Delta::Call { index, id: id.clone(), name: name.clone() });
                self.sent.calls.push(Call { id, name, arguments: String::new() });
            }
            let sent = &mut self.sent.calls[index].arguments;
            if let Some(new) = call.arguments.strip_prefix(sent.as_str()).filter(|n| !n.is_empty()) {
                out.push(Delta::Arguments { index, text: new.to_string() });
                sent.push_str(new);
            }
        }
        out
    }

    /// The reasoning so far (if the reply has a block) and the answer after it.
    fn split(&self, finished: bool) -> (Option<&str>, &str) {
        let Some(r) = self.reasoning else { return (None, &self.text) };
        let text = self.text.as_str();
        let inner = if self.opened {
            text
        } else {
            let body = text.trim_start();
            match body.strip_prefix(r.open) {
                Some(inner) => inner,
                // Too little yet to tell whether the reply opens a block.
                None if !finished && r.open.starts_with(body) => return (None, ""),
                None => return (None, text),
            }
        };
        match inner.find(r.close) {
            Some(at) => (Some(&inner[..at]), inner[at + r.close.len()..].trim_start()),
            None if finished => (Some(inner), ""),
            None => (Some(&inner[..inner.len() - partial_suffix(inner, r.close)]), ""),
        }
    }
}

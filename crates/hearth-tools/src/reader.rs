//! A reply read as it streams: reasoning, then text or calls, each sent once as it becomes
//! certain. The whole reply is read the same way, so streamed pieces always add up to it. Each
//! piece costs only a look at what is new: where the reasoning ends, where the calls start and
//! which calls are complete are remembered, and what was sent is compared by length.

use hearth_constrain::Grammar;
use hearth_runtime::partial_suffix;

use crate::format::{regex_escape, Answer, Content, Format, Progress};
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
    /// (and the whitespace after it). `opened`: the prompt opened it. `special` gives the token
    /// id of a marker the vocabulary holds as a special token, matched as that token.
    pub fn then(self, answer: &Grammar, opened: bool, special: &dyn Fn(&str) -> Option<u32>) -> Grammar {
        let close = regex_escape(self.close);
        let token = |marker: &str| special(marker).map(|id| format!("<[{id}]>"));
        // The opening marker: none where the prompt opened the block; a special token as that
        // token; text inside the block's lexeme below.
        let (open_token, open_text) = match (opened, token(self.open)) {
            (true, _) => (String::new(), String::new()),
            (false, Some(t)) => (t, String::new()),
            (false, None) => (String::new(), regex_escape(self.open)),
        };
        // The block ends at its first close: its text never holds a close.
        let lead = match token(self.close) {
            Some(close_token) => format!(
                "lead: {open_token} {open_text_rule} BODY? {close_token} WS?\nBODY: /(.|\\n)+/ & ~/(.|\\n)*{close}(.|\\n)*/\nWS: /[ \\n]+/",
                open_text_rule = if open_text.is_empty() { String::new() } else { format!("/{open_text}/") },
            ),
            // One lexeme through the close: a greedy text lexeme would run into it.
            None => {
                format!("lead: {open_token} THINK\nTHINK: /{open_text}(.|\\n)*{close}[ \\n]*/ & ~/(.|\\n)*{close}(.|\\n)*{close}(.|\\n)*/")
            }
        };
        Grammar::After { lead, optional: !opened, answer: Box::new(answer.clone()) }
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
    /// Where in `text` the reasoning starts (after its opening marker), once known.
    reasoning_at: Option<usize>,
    /// Where the block's close ends, once found, and how far `text` was searched for it.
    close_end: Option<usize>,
    close_searched: usize,
    /// Where the answer starts, once known: at once without a block.
    answer_at: Option<usize>,
    answer: Progress,
}

impl Reader {
    pub fn new(format: Option<Format>, reasoning: Option<Reasoning>, opened: bool) -> Self {
        Reader {
            format,
            reasoning,
            opened,
            text: String::new(),
            sent: Reply::default(),
            reasoning_at: None,
            close_end: None,
            close_searched: 0,
            answer_at: reasoning.is_none().then_some(0),
            answer: Progress::default(),
        }
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
        if let Some(r) = self.reasoning.filter(|_| self.answer_at.is_none()) {
            self.read_reasoning(r, finished, &mut out);
        }
        let Some(at) = self.answer_at else { return out };
        let answer = match self.format {
            Some(format) => format.read(&self.text[at..], finished, &mut self.answer),
            None => Answer { content: Content::Text(&self.text[at..]), ..Answer::default() },
        };
        // Whitespace at either end is dropped: held back until what follows shows it inside.
        let content = match answer.content {
            Content::None => "",
            Content::Text(t) => t.trim(),
            Content::Decoded => self.answer.decoded.trim(),
        };
        if let Some(new) = content.get(self.sent.content.len()..).filter(|n| !n.is_empty()) {
            out.push(Delta::Content(new.to_string()));
            self.sent.content.push_str(new);
        }
        let format = self.format.unwrap_or(Format::Generic);
        for (k, call) in answer.calls.into_iter().enumerate() {
            let index = answer.calls_from + k;
            let Some(name) = call.name else { break };
            if index == self.sent.calls.len() {
                let id = format.call_id();
                out.push(Delta::Call { index, id: id.clone(), name: name.clone() });
                self.sent.calls.push(Call { id, name, arguments: String::new() });
            }
            let sent = &mut self.sent.calls[index].arguments;
            if let Some(new) = call.arguments.get(sent.len()..).filter(|n| !n.is_empty()) {
                out.push(Delta::Arguments { index, text: new.to_string() });
                sent.push_str(new);
            }
        }
        out
    }

    /// Sends the reasoning that is certain and finds where the answer starts.
    fn read_reasoning(&mut self, r: Reasoning, finished: bool, out: &mut Vec<Delta>) {
        let text = self.text.as_str();
        let start = match self.reasoning_at {
            Some(start) => start,
            None if self.opened => 0,
            None => {
                let body = text.trim_start();
                match body.strip_prefix(r.open) {
                    Some(inner) => text.len() - inner.len(),
                    // Too little yet to tell whether the reply opens a block.
                    None if !finished && r.open.starts_with(body) => return,
                    // No block: the reply is all answer.
                    None => {
                        self.answer_at = Some(0);
                        return;
                    }
                }
            }
        };
        self.reasoning_at = Some(start);
        if self.close_end.is_none() {
            let from = self.close_searched.saturating_sub(r.close.len() - 1).max(start);
            let from = (0..=from).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(start);
            match text[from..].find(r.close) {
                Some(at) => self.close_end = Some(from + at + r.close.len()),
                None => self.close_searched = text.len(),
            }
        }
        let end = match self.close_end {
            Some(end) => end - r.close.len(),
            None if finished => text.len(),
            None => text.len() - partial_suffix(&text[start..], r.close),
        };
        let reasoning = text[start..end].trim();
        let sent = self.sent.reasoning.as_ref().map_or(0, String::len);
        if let Some(new) = reasoning.get(sent..).filter(|n| !n.is_empty()) {
            out.push(Delta::Reasoning(new.to_string()));
            self.sent.reasoning.get_or_insert_with(String::new).push_str(new);
        }
        // The answer starts after the close and the whitespace after it, once something follows.
        if let Some(end) = self.close_end {
            let rest = &text[end..];
            let blank = rest.len() - rest.trim_start().len();
            if blank < rest.len() || finished {
                self.answer_at = Some(end + blank);
            }
        } else if finished {
            self.answer_at = Some(text.len());
        }
    }
}

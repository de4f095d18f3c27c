//! The shortest text that completes a prefix of a `json_object` output ([`crate::JSON_OBJECT`]'s
//! layout: `", "` and `": "` between items, no other whitespace): what a constraint forces when
//! `max_tokens` is about to run out, so the output still parses.

#[derive(Clone, Copy)]
enum State {
    /// A value must come (the top level: an object).
    Value,
    /// Just after `{`: a key or `}`.
    ObjectStart,
    /// Just after `[`: a value or `]`.
    ArrayStart,
    /// After `, ` in an object: a key must come.
    Key,
    String {
        key: bool,
        escaped: bool,
        hex: u8,
    },
    /// After a key: `: ` must come; `colon` once its `:` is there.
    AfterKey {
        colon: bool,
    },
    Number {
        complete: bool,
    },
    /// Inside `true`/`false`/`null`: the bytes still to come.
    Literal(&'static [u8]),
    AfterValue,
    /// After `,`: the space must come.
    Comma,
}

/// A `json_object` output followed byte by byte (the state is kept, not re-read from the start
/// each token), and what completes it.
#[derive(Clone)]
pub(crate) struct JsonTail {
    /// The open containers, `{` or `[`.
    stack: Vec<u8>,
    state: State,
}

impl JsonTail {
    pub(crate) fn new() -> Self {
        JsonTail { stack: Vec::new(), state: State::Value }
    }

    /// Follows the output's next bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = step(self.state, b, &mut self.stack);
        }
    }

    /// What completes the output so far.
    pub(crate) fn closing(&self) -> String {
        let stack = &self.stack;
        let mut out = String::new();
        let value = |out: &mut String| out.push_str(if stack.is_empty() { "{}" } else { "null" });
        match self.state {
            State::Value => value(&mut out),
            State::ObjectStart => out.push('}'),
            State::ArrayStart => out.push(']'),
            State::Key => out.push_str("\"\": null"),
            State::String { key, escaped, hex } => {
                out.push_str(&"0".repeat(hex as usize));
                if escaped {
                    out.push('n');
                }
                out.push('"');
                if key {
                    out.push_str(": null");
                }
            }
            State::AfterKey { colon } => out.push_str(if colon { " null" } else { ": null" }),
            State::Number { complete } => {
                if !complete {
                    out.push('0');
                }
            }
            State::Literal(rest) => out.push_str(std::str::from_utf8(rest).unwrap_or_default()),
            State::AfterValue => {}
            State::Comma => {
                out.push(' ');
                out.push_str(if stack.last() == Some(&b'{') { "\"\": null" } else { "null" });
            }
        }
        // The ObjectStart/ArrayStart closers above closed the innermost container already.
        let closed = usize::from(matches!(self.state, State::ObjectStart | State::ArrayStart));
        for &open in stack.iter().rev().skip(closed) {
            out.push(if open == b'{' { '}' } else { ']' });
        }
        out
    }
}

fn step(state: State, b: u8, stack: &mut Vec<u8>) -> State {
    match state {
        State::Value | State::ArrayStart if b == b']' && matches!(state, State::ArrayStart) => {
            stack.pop();
            State::AfterValue
        }
        State::Value | State::ArrayStart => match b {
            b'{' => {
                stack.push(b'{');
                State::ObjectStart
            }
            b'[' => {
                stack.push(b'[');
                State::ArrayStart
            }
            b'"' => State::String { key: false, escaped: false, hex: 0 },
            b't' => State::Literal(b"rue"),
            b'f' => State::Literal(b"alse"),
            b'n' => State::Literal(b"ull"),
            b'-' => State::Number { complete: false },
            _ => State::Number { complete: true },
        },
        State::ObjectStart if b == b'}' => {
            stack.pop();
            State::AfterValue
        }
        State::ObjectStart | State::Key => State::String { key: true, escaped: false, hex: 0 },
        State::String { key, escaped, hex } => match (escaped, hex, b) {
            (_, 1.., _) => State::String { key, escaped, hex: hex - 1 },
            (true, _, b'u') => State::String { key, escaped: false, hex: 4 },
            (true, _, _) => State::String { key, escaped: false, hex: 0 },
            (false, _, b'\\') => State::String { key, escaped: true, hex: 0 },
            (false, _, b'"') if key => State::AfterKey { colon: false },
            (false, _, b'"') => State::AfterValue,
            _ => State::String { key, escaped, hex },
        },
        State::AfterKey { colon: false } => State::AfterKey { colon: true },
        State::AfterKey { colon: true } => State::Value,
        State::Number { .. } => match b {
            b'0'..=b'9' => State::Number { complete: true },
            b'.' | b'e' | b'E' | b'+' | b'-' => State::Number { complete: false },
            _ => step(State::AfterValue, b, stack),
        },
        State::Literal(rest) => match rest {
            [_] | [] => State::AfterValue,
            [_, tail @ ..] => State::Literal(tail),
        },
        State::AfterValue => match b {
            b',' => State::Comma,
            _ => {
                stack.pop();
                State::AfterValue
            }
        },
        State::Comma => {
            if stack.last() == Some(&b'{') {
                State::Key
            } else {
                State::Value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::JsonTail;

    #[test]
    fn every_prefix_of_an_output_closes_into_json() {
        let output = r#"{"a": [1, -2.5e+3, "x\"y\u00e9", true, null, {}], "b": {"c": false, "d": []}, "e": "tail"}"#;
        for end in 0..=output.len() {
            let prefix = &output[..end];
            let mut tail = JsonTail::new();
            tail.push(prefix.as_bytes());
            let closed = format!("{prefix}{}", tail.closing());
            let v: serde_json::Value = serde_json::from_str(&closed).unwrap_or_else(|e| panic!("{prefix:?} → {closed:?}: {e}"));
            assert!(v.is_object(), "{closed}");
        }
    }
}

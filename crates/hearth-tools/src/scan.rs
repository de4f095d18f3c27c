//! Reading JSON as it arrives: how far a value goes, and a call object's name and arguments
//! before it is complete.

/// Where a JSON value that starts `s` ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Extent {
    /// It ends after this many bytes.
    Complete(usize),
    /// The text ends inside it.
    Partial,
    Invalid,
}

/// The extent of the JSON value at the start of `s` (no leading whitespace).
pub fn value(s: &str) -> Extent {
    let bytes = s.as_bytes();
    match bytes.first() {
        None => Extent::Partial,
        Some(b'{' | b'[') => nested(bytes),
        Some(b'"') => string(bytes),
        Some(b'-' | b'0'..=b'9') => {
            let end = bytes.iter().position(|b| !matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')).unwrap_or(bytes.len());
            // A number has no end of its own: only what follows ends it.
            if end == bytes.len() {
                Extent::Partial
            } else {
                Extent::Complete(end)
            }
        }
        Some(_) => {
            for word in ["true", "false", "null"] {
                if s.starts_with(word) {
                    return Extent::Complete(word.len());
                }
                if word.starts_with(s) {
                    return Extent::Partial;
                }
            }
            Extent::Invalid
        }
    }
}

fn string(bytes: &[u8]) -> Extent {
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match (escaped, b) {
            (true, _) => escaped = false,
            (false, b'\\') => escaped = true,
            (false, b'"') => return Extent::Complete(i + 1),
            _ => {}
        }
    }
    Extent::Partial
}

fn nested(bytes: &[u8]) -> Extent {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Extent::Complete(i + 1);
                }
            }
            _ => {}
        }
    }
    Extent::Partial
}

/// A call object `{"name": …, "arguments": …}` read so far (keys in any order; `parameters`
/// is Llama's name for the arguments).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CallObject<'a> {
    /// Once its string is complete.
    pub name: Option<String>,
    /// The arguments' text so far, as written.
    pub arguments: &'a str,
    /// Bytes of the whole object, once it is complete.
    pub len: Option<usize>,
}

/// Reads the call object at the start of `s`; `None` if it is not one.
pub fn call_object(s: &str) -> Option<CallObject<'_>> {
    let mut out = CallObject::default();
    let mut at = expect(s, 0, b'{')?;
    loop {
        at = skip_ws(s, at);
        if at == s.len() {
            return Some(out);
        }
        if s.as_bytes()[at] == b'}' {
            out.len = Some(at + 1);
            return Some(out);
        }
        let key_len = match value(&s[at..]) {
            Extent::Complete(n) if s.as_bytes()[at] == b'"' => n,
            Extent::Partial => return Some(out),
            _ => return None,
        };
        let key: String = serde_json::from_str(&s[at..at + key_len]).ok()?;
        at = expect(s, at + key_len, b':')?;
        at = skip_ws(s, at);
        let rest = &s[at..];
        let len = match value(rest) {
            Extent::Complete(n) => Some(n),
            Extent::Partial => None,
            Extent::Invalid => return None,
        };
        match key.as_str() {
            "name" => out.name = len.and_then(|n| serde_json::from_str(&rest[..n]).ok()),
            "arguments" | "parameters" => out.arguments = &rest[..len.unwrap_or(rest.len())],
            _ => {}
        }
        let Some(n) = len else { return Some(out) };
        at = skip_ws(s, at + n);
        match s.as_bytes().get(at) {
            None => return Some(out),
            Some(b',') => at += 1,
            Some(b'}') => {}
            Some(_) => return None,
        }
    }
}

fn skip_ws(s: &str, at: usize) -> usize {
    at + s[at..].len() - s[at..].trim_start().len()
}

/// Past `byte` after optional whitespace; at the text's end, the end (it may come next).
fn expect(s: &str, at: usize, byte: u8) -> Option<usize> {
    let at = skip_ws(s, at);
    match s.as_bytes().get(at) {
        None => Some(at),
        Some(&b) if b == byte => Some(at + 1),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_where_json_says() {
        assert_eq!(value(r#"{"a": "}", "b": [1, {"c": 2}]} tail"#), Extent::Complete(30));
        assert_eq!(value(r#"{"a": "\"}"#), Extent::Partial);
        assert_eq!(value(r#""x\"y" z"#), Extent::Complete(6));
        assert_eq!(value("12"), Extent::Partial);
        assert_eq!(value("12,"), Extent::Complete(2));
        assert_eq!(value("tr"), Extent::Partial);
        assert_eq!(value("x"), Extent::Invalid);
    }

    #[test]
    fn a_call_object_is_read_as_it_grows() {
        let full = r#"{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}}"#;
        let mut last = CallObject::default();
        for end in 1..=full.len() {
            let now = call_object(&full[..end]).unwrap_or_else(|| panic!("{:?}", &full[..end]));
            assert!(now.arguments.starts_with(last.arguments), "the arguments only grow");
            assert!(last.name.is_none() || now.name == last.name);
            last = now;
        }
        assert_eq!(last.name.as_deref(), Some("get_weather"));
        assert_eq!(last.arguments, r#"{"city": "Paris", "days": [1, 2]}"#);
        assert_eq!(last.len, Some(full.len()));
        let llama = call_object(r#"{"parameters": {}, "name": "f", "id": "x"} rest"#).unwrap();
        assert_eq!((llama.name.as_deref(), llama.arguments, llama.len), (Some("f"), "{}", Some(42)));
        assert!(call_object("[1]").is_none());
    }
}

//! JSON text exactly as Python's `json.dumps` writes it, which is what chat templates' `tojson`
//! produces under transformers (serde_json differs in separators, escapes and float format).

use std::fmt::Write;

use serde_json::Value;

pub(crate) struct DumpOptions {
    /// `None`: everything on one line.
    pub indent: Option<String>,
    pub item_separator: String,
    pub key_separator: String,
    pub sort_keys: bool,
    pub ensure_ascii: bool,
}

impl DumpOptions {
    /// Python's defaults for the given indent: `", "` between items on one line, `","` when
    /// indenting (the newline separates), `": "` between key and value.
    pub fn new(indent: Option<String>) -> Self {
        let item_separator = if indent.is_some() { "," } else { ", " };
        Self { indent, item_separator: item_separator.into(), key_separator: ": ".into(), sort_keys: false, ensure_ascii: false }
    }
}

pub(crate) fn dumps(value: &Value, opts: &DumpOptions) -> String {
    let mut out = String::new();
    write_value(value, opts, 0, &mut out);
    out
}

fn write_value(value: &Value, opts: &DumpOptions, depth: usize, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => out.push_str(&float_repr(f)),
            None => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(s, opts.ensure_ascii, out),
        Value::Array(items) => {
            write_container(out, opts, depth, '[', ']', items.iter(), |item, out| write_value(item, opts, depth + 1, out))
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            write_container(out, opts, depth, '{', '}', entries.into_iter(), |(k, v), out| {
                write_string(k, opts.ensure_ascii, out);
                out.push_str(&opts.key_separator);
                write_value(v, opts, depth + 1, out);
            })
        }
    }
}

fn write_container<T>(
    out: &mut String,
    opts: &DumpOptions,
    depth: usize,
    open: char,
    close: char,
    items: impl ExactSizeIterator<Item = T>,
    mut write_item: impl FnMut(T, &mut String),
) {
    out.push(open);
    if items.len() == 0 {
        out.push(close);
        return;
    }
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = &opts.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push_str(&opts.item_separator);
        }
        newline(out, depth + 1);
        write_item(item, out);
    }
    newline(out, depth);
    out.push(close);
}

fn write_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation outside
/// 1e-4 <= |x| < 1e16, and always a fractional part otherwise ("1.0").
fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "-1.25e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if !(-4..16).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}{fraction}e{exp_sign}{:02}", exp.abs());
    }
    if exp < 0 {
        let zeros = "0".repeat((-exp - 1) as usize);
        return format!("{sign}0.{zeros}{digits}");
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        let zeros = "0".repeat(int_len - digits.len());
        format!("{sign}{digits}{zeros}.0")
    } else {
        let (int, fraction) = digits.split_at(int_len);
        format!("{sign}{int}.{fraction}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_match_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-2.5, "-2.5"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e16, "1.5e+16"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123.456, "123.456"),
            (0.0, "0.0"),
            (1e100, "1e+100"),
        ] {
            assert_eq!(float_repr(f), want, "{f}");
        }
    }

    #[test]
    fn layout_matches_python() {
        let v: Value = serde_json::from_str(r#"{"a": [1, 2.0, {}], "é": "x\u0001\"", "b": []}"#).unwrap();
        assert_eq!(dumps(&v, &DumpOptions::new(None)), r#"{"a": [1, 2.0, {}], "é": "x\u0001\"", "b": []}"#);
        assert_eq!(
            dumps(&v, &DumpOptions::new(Some("  ".into()))),
            "{\n  \"a\": [\n    1,\n    2.0,\n    {}\n  ],\n  \"é\": \"x\\u0001\\\"\",\n  \"b\": []\n}"
        );
        let ascii = DumpOptions { ensure_ascii: true, ..DumpOptions::new(None) };
        assert_eq!(dumps(&Value::from("é🚀"), &ascii), r#""\u00e9\ud83d\ude80""#);
    }
}

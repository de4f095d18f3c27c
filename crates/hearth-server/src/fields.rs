//! Reading JSON request bodies field by field, so that every wrong type, out-of-range value or
//! unsupported field becomes a 400 that names the field (serde's messages name none), and no
//! field is ever silently ignored.

use std::ops::RangeInclusive;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;

pub type Result<T> = std::result::Result<T, ApiError>;

/// A JSON object body; bad JSON is a 400, an oversized body a 413.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        parse_object(&bytes).map(JsonObject)
    }
}

pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the request body is not valid JSON: {e}"))),
    }
}

/// The fields of one JSON object, taken one at a time; `finish` rejects whatever is left.
pub struct Fields {
    map: Map<String, Value>,
    /// Prefix for field names in messages (e.g. `messages[2].`).
    path: String,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Fields { map, path: String::new() }
    }

    pub fn nested(map: Map<String, Value>, path: &str) -> Self {
        Fields { map, path: format!("{path}.") }
    }

    pub fn name(&self, field: &str) -> String {
        format!("{}{field}", self.path)
    }

    /// The raw value; JSON `null` counts as absent, as OpenAI treats it.
    pub fn take(&mut self, field: &str) -> Option<Value> {
        self.map.remove(field).filter(|v| !v.is_null())
    }

    fn wrong(&self, field: &str, expected: &str, got: &Value) -> ApiError {
        let name = self.name(field);
        ApiError::invalid(&name, format!("`{name}` must be {expected}, got {}", describe(got)))
    }

    pub fn string(&mut self, field: &str) -> Result<Option<String>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(field, "a string", &v)),
        }
    }

    pub fn required_string(&mut self, field: &str) -> Result<String> {
        self.string(field)?.ok_or_else(|| self.missing(field))
    }

    pub fn missing(&self, field: &str) -> ApiError {
        let name = self.name(field);
        ApiError::invalid(&name, format!("`{name}` is required"))
    }

    pub fn bool(&mut self, field: &str) -> Result<Option<bool>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.wrong(field, "a boolean", &v)),
        }
    }

    pub fn int(&mut self, field: &str, range: RangeInclusive<i64>) -> Result<Option<i64>> {
        let Some(v) = self.take(field) else { return Ok(None) };
        let expected = format!("an integer in [{}, {}]", range.start(), range.end());
        match v.as_i64() {
            Some(i) if range.contains(&i) => Ok(Some(i)),
            _ => Err(self.wrong(field, &expected, &v)),
        }
    }

    /// A finite number accepted by `ok`, described by `expected` in the error.
    pub fn number(&mut self, field: &str, ok: impl Fn(f64) -> bool, expected: &str) -> Result<Option<f64>> {
        let Some(v) = self.take(field) else { return Ok(None) };
        match v.as_f64() {
            Some(x) if x.is_finite() && ok(x) => Ok(Some(x)),
            _ => Err(self.wrong(field, expected, &v)),
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, field: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.take(field) else { return Ok(None) };
        let list = match &v {
            Value::Array(items) => items.iter().map(|s| s.as_str().map(str::to_string)).collect::<Option<Vec<_>>>(),
            _ => None,
        };
        list.map(Some).ok_or_else(|| self.wrong(field, "a list of strings", &v))
    }

    pub fn object(&mut self, field: &str) -> Result<Option<Map<String, Value>>> {
        match self.take(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.wrong(field, "an object", &v)),
        }
    }

    /// Fails on the first field nobody took.
    pub fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => {
                let name = format!("{}{k}", self.path);
                Err(ApiError {
                    code: Some("unsupported_parameter"),
                    ..ApiError::invalid(&name, format!("`{name}` is not supported by this server"))
                })
            }
        }
    }
}

/// Token ids: non-negative integers that fit a `u32`; `None` if any is not one.
pub fn token_ids(items: &[Value]) -> Option<Vec<u32>> {
    items.iter().map(|t| t.as_u64().and_then(|id| u32::try_from(id).ok())).collect()
}

/// A value's JSON type and (shortened) text, for error messages.
pub fn describe(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let mut text = v.to_string();
    if text.len() > 40 {
        let cut = (0..=40).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{kind} {text}")
}

//! Every request and response body, one module per route family, as typed structs: requests
//! are read with serde (unknown fields refused) and checked for ranges after; the OpenAPI
//! document (`/openapi.json`) is generated from these types and the handlers' annotations.

pub mod admin;
pub mod anthropic;
pub mod backend;
pub mod conversations;
pub mod embeddings;
pub mod hub;
pub mod knowledge;
pub mod openai;
pub mod responses;
pub mod store;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::RangeInclusive;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{DeserializeOwned, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::RefOr;
// The trait derived schemas are built with; implemented here for the hand-written unions.
use utoipa::__dev::ComposeSchema;
use utoipa::ToSchema;

use crate::error::ApiError;

pub type Result<T> = std::result::Result<T, ApiError>;

/// A JSON body read as `T`: bad JSON, a wrong type, a missing or unknown field is a 400 whose
/// `param` is the field's path (`messages[2].content`); an oversized body is a 413.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large()
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        parse(&bytes).map(Body)
    }
}

/// Reads `bytes` as `T`, naming the failing field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(field_error)?;
    de.end().map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    Ok(value)
}

/// Reads an already parsed JSON value as `T` (a WebSocket message), naming the failing field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(field_error)
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() || inner.is_io() {
        return ApiError::bad_request(format!("the request body is not valid JSON: {inner}"));
    }
    let mut message = inner.to_string();
    // serde_json's position is of no use to a client that sent a one-line body.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    let parent = if path == "." { "" } else { path.trim_end_matches(".?").trim_end_matches('?') };
    // An unknown field's path already ends with it; a missing field's is its object's.
    let join = |field: &str| match parent.rsplit('.').next() {
        Some(last) if last == field => parent.to_string(),
        _ if parent.is_empty() => field.to_string(),
        _ => format!("{parent}.{field}"),
    };
    if let Some(field) = quoted_after(&message, "unknown field `") {
        let name = join(field);
        return ApiError {
            code: Some("unsupported_parameter"),
            ..ApiError::invalid(&name, format!("`{name}` is not supported by this server"))
        };
    }
    if let Some(field) = quoted_after(&message, "missing field `") {
        let name = join(field);
        return ApiError::invalid(&name, format!("`{name}` is required"));
    }
    if parent.is_empty() {
        return ApiError::bad_request(format!("the request body must be a JSON object: {message}"));
    }
    ApiError::invalid(parent, format!("`{parent}`: {message}"))
}

/// The text between `prefix` and the next backtick.
fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// A number in `range`, or a 400 naming `param`.
pub fn in_range<T: PartialOrd + fmt::Display + Copy>(param: &str, value: Option<T>, range: RangeInclusive<T>) -> Result<Option<T>> {
    match value {
        Some(v) if !range.contains(&v) => {
            Err(ApiError::invalid(param, format!("`{param}` must be in [{}, {}], got {v}", range.start(), range.end())))
        }
        v => Ok(v),
    }
}

/// A JSON string, or a `T` (an array or an object): OpenAI's bodies mix the two in one field.
/// Deserialised by the value's JSON type, so errors inside `T` keep their paths.
#[derive(Clone, Debug)]
pub enum StringOr<T> {
    String(String),
    Other(T),
}

impl<T> StringOr<T> {
    /// The same string, or `f` of the other value.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> StringOr<U> {
        match self {
            StringOr::String(s) => StringOr::String(s),
            StringOr::Other(t) => StringOr::Other(f(t)),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StringOr<T> {
    fn deserialize<D: Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StringOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, an array or an object")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(StringOr::String(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(SeqAccessDeserializer::new(seq)).map(StringOr::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(StringOr::Other)
            }
        }
        de.deserialize_any(V(PhantomData))
    }
}

impl<T: Serialize> Serialize for StringOr<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            StringOr::String(v) => s.serialize_str(v),
            StringOr::Other(v) => v.serialize(s),
        }
    }
}

impl<T: ComposeSchema> ComposeSchema for StringOr<T> {
    fn compose(mut generics: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        let other = if generics.is_empty() { T::compose(Vec::new()) } else { generics.swap_remove(0) };
        OneOfBuilder::new().item(ObjectBuilder::new().schema_type(Type::String)).item(other).into()
    }
}

impl<T: ToSchema + ComposeSchema> ToSchema for StringOr<T> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("StringOr{}", T::name()))
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        T::schemas(schemas);
    }
}

/// One item of a prompt or an embedding input: a string, a token id, or a list of token ids.
#[derive(Clone, Debug)]
pub enum TextOrTokens {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for TextOrTokens {
    fn deserialize<D: Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TextOrTokens;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id or a list of token ids")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(TextOrTokens::Text(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                u32::try_from(v).map(TextOrTokens::Token).map_err(|_| E::custom(format!("token id {v} is not in [0, 2^32)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Err(E::custom(format!("token id {v} is not in [0, 2^32)")))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self::Value, A::Error> {
                // Checked here, so that the error names the list rather than the id in it.
                let mut ids = Vec::new();
                while let Some(v) = seq.next_element::<serde_json::Value>()? {
                    let id = v.as_u64().and_then(|id| u32::try_from(id).ok());
                    ids.push(id.ok_or_else(|| A::Error::custom(format!("token ids must be integers in [0, 2^32), got {v}")))?);
                }
                Ok(TextOrTokens::Tokens(ids))
            }
        }
        de.deserialize_any(V)
    }
}

impl ComposeSchema for TextOrTokens {
    fn compose(_: Vec<RefOr<Schema>>) -> RefOr<Schema> {
        let token = || ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0));
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(token())
            .item(utoipa::openapi::schema::ArrayBuilder::new().items(token()))
            .into()
    }
}

impl ToSchema for TextOrTokens {}

/// A string, an array of token ids, or an array of several of either: `/v1/completions`'
/// `prompt` and `/v1/embeddings`' `input`.
pub type TextsOrTokens = StringOr<Vec<TextOrTokens>>;

/// The inputs `TextsOrTokens` holds: one list of token ids, or one text or id list per item.
pub fn texts_or_tokens(v: TextsOrTokens, param: &str) -> Result<Vec<TextOrTokens>> {
    let items = match v {
        StringOr::String(s) => return Ok(vec![TextOrTokens::Text(s)]),
        StringOr::Other(items) => items,
    };
    if items.is_empty() {
        return Err(ApiError::invalid(param, format!("`{param}` must not be empty")));
    }
    if items.iter().all(|i| matches!(i, TextOrTokens::Token(_))) {
        let ids = items.into_iter().filter_map(|i| if let TextOrTokens::Token(id) = i { Some(id) } else { None }).collect();
        return Ok(vec![TextOrTokens::Tokens(ids)]);
    }
    for (i, item) in items.iter().enumerate() {
        if matches!(item, TextOrTokens::Token(_)) || matches!(item, TextOrTokens::Tokens(ids) if ids.is_empty()) {
            let p = format!("{param}[{i}]");
            return Err(ApiError::invalid(&p, format!("`{p}` must be a string or a non-empty list of token ids")));
        }
    }
    Ok(items)
}

/// OpenAI's error body, as every route's errors have it; its top-level `type` is what
/// Anthropic's clients look for (OpenAI's ignore it).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`, `rate_limit_error`
    /// or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The request field at fault, as a path (`messages[2].content`).
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

/// The errors a route may answer with, listed on every operation of the document (only a
/// description: `ApiError` makes the responses).
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum Errors {
    /// A wrong type, an out-of-range value or an unknown field, named in `param`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// An API key is configured and the request did not present it.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such model, collection, document or route.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is over the configured limit.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The server failed.
    #[response(status = 500)]
    Internal(ErrorBody),
}

/// The errors of routes that run models: a full queue and an exhausted memory budget besides.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub enum ModelErrors {
    /// A wrong type, an out-of-range value or an unknown field, named in `param`.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// An API key is configured and the request did not present it.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such model.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The body is over the configured limit.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The model's queue is full; retry after `Retry-After` seconds.
    #[response(status = 429)]
    Busy(ErrorBody),
    /// The server or the model failed.
    #[response(status = 500)]
    Internal(ErrorBody),
    /// A Hub download failed (`--auto-pull`).
    #[response(status = 502)]
    Upstream(ErrorBody),
    /// The memory budget is taken by busy models; retry after `Retry-After` seconds.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

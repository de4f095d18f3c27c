//! The web UI's conversations (`/api/conversations`): listed, read, saved, renamed, deleted and
//! exported as Markdown. Each is its owner's: with API keys on, the key it was made with (kept
//! as a hash, never the key); without keys, the one person the server serves.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::conversations::{
    Conversation, ConversationBody, ConversationDeleted, ConversationMessage, ConversationSummary, Conversations,
};
use crate::api::{Body, Errors};
use crate::error::ApiError;
use crate::registry::ConversationRow;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_conversations, create_conversation)).routes(routes!(
        show_conversation,
        edit_conversation,
        delete_conversation
    ))
}

/// Whose conversations a request sees, set by the key check.
#[derive(Clone)]
pub struct Owner(String);

impl Owner {
    pub fn of_key(key: &str) -> Owner {
        Owner(Sha256::digest(key.as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect())
    }
}

fn owner(found: Option<Extension<Owner>>) -> String {
    found.map(|Extension(Owner(o))| o).unwrap_or_default()
}

const MAX_TITLE: usize = 200;
const MAX_MESSAGES: usize = 10_000;

fn check(body: &ConversationBody) -> Result<(), ApiError> {
    if body.title.as_ref().is_some_and(|t| t.chars().count() > MAX_TITLE || t.trim().is_empty()) {
        return Err(ApiError::invalid("title", format!("`title` is 1 to {MAX_TITLE} characters")));
    }
    if body.model.as_ref().is_some_and(|m| m.len() > 256) {
        return Err(ApiError::invalid("model", "`model` is at most 256 bytes"));
    }
    let messages = body.messages.as_deref().unwrap_or_default();
    if messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid("messages", format!("at most {MAX_MESSAGES} messages")));
    }
    if let Some(i) = messages.iter().position(|m| !["system", "user", "assistant"].contains(&m.role.as_str())) {
        return Err(ApiError::invalid(&format!("messages[{i}].role"), "`role` is system, user or assistant"));
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn messages_of(row: &ConversationRow) -> Vec<ConversationMessage> {
    serde_json::from_str(&row.3).unwrap_or_default()
}

fn conversation(row: ConversationRow) -> Conversation {
    let messages = messages_of(&row);
    let (id, title, model, _, created_at, updated_at) = row;
    Conversation { id, title, model, messages, created_at, updated_at }
}

fn found(state: &AppState, owner: &str, id: &str) -> Result<ConversationRow, ApiError> {
    state.models.registry.saved_conversation(owner, id)?.ok_or_else(|| ApiError::not_found(format!("no conversation `{id}`")))
}

/// Your conversations, the most recently changed first.
#[utoipa::path(get, path = "/api/conversations", tag = "conversations", responses((status = 200, description = "Done", body = Conversations), Errors))]
async fn list_conversations(State(state): State<AppState>, who: Option<Extension<Owner>>) -> Result<Json<Conversations>, ApiError> {
    let rows = state.models.registry.saved_conversations(&owner(who))?;
    let conversations = rows
        .into_iter()
        .map(|row| {
            let messages = messages_of(&row).len();
            let (id, title, model, _, created_at, updated_at) = row;
            ConversationSummary { id, title, model, messages, created_at, updated_at }
        })
        .collect();
    Ok(Json(Conversations { conversations }))
}

/// Save a new conversation; untitled, it is named by its first message.
#[utoipa::path(post, path = "/api/conversations", tag = "conversations", request_body = ConversationBody,
    responses((status = 201, description = "Created", body = Conversation), Errors))]
async fn create_conversation(
    State(state): State<AppState>,
    who: Option<Extension<Owner>>,
    Body(body): Body<ConversationBody>,
) -> Result<(StatusCode, Json<Conversation>), ApiError> {
    check(&body)?;
    let messages = body.messages.unwrap_or_default();
    let title = body.title.unwrap_or_else(|| {
        let first = messages.iter().find(|m| m.role == "user").map_or("", |m| m.content.trim());
        let title: String = first.chars().take(60).collect();
        if title.is_empty() {
            "New chat".into()
        } else {
            title
        }
    });
    use rand::distr::{Alphanumeric, SampleString};
    let id = format!("conv-{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
    let at = now();
    let row = (id, title, body.model, serde_json::to_string(&messages).unwrap_or_default(), at, at);
    state.models.registry.save_conversation(&owner(who), &row)?;
    Ok((StatusCode::CREATED, Json(conversation(row))))
}

/// A conversation; `format=markdown` gives it as a Markdown file.
#[utoipa::path(get, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path), ("format" = Option<String>, Query)),
    responses((status = 200, description = "JSON, or Markdown with `format=markdown`", content((Conversation = "application/json"), (String = "text/markdown"))), Errors))]
async fn show_conversation(
    State(state): State<AppState>,
    who: Option<Extension<Owner>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "format") {
        return Err(ApiError::invalid(k, format!("unknown query parameter `{k}`")));
    }
    let c = conversation(found(&state, &owner(who), &id)?);
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(Json(c).into_response()),
        Some("markdown") => {
            let disposition = format!("attachment; filename=\"{}.md\"", c.id);
            Ok((
                [(header::CONTENT_TYPE, "text/markdown; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
                markdown(&c),
            )
                .into_response())
        }
        Some(other) => Err(ApiError::invalid("format", format!("`format` is json or markdown, not `{other}`"))),
    }
}

fn markdown(c: &Conversation) -> String {
    let mut out = format!("# {}\n\n", c.title);
    if let Some(m) = &c.model {
        out += &format!("Model: `{m}`\n\n");
    }
    for m in &c.messages {
        let who = match m.role.as_str() {
            "user" => "You",
            "system" => "System",
            _ => "Assistant",
        };
        out += &format!("## {who}\n\n{}\n\n", m.content.trim_end());
    }
    out
}

/// Rename a conversation, or save its messages.
#[utoipa::path(patch, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path)), request_body = ConversationBody,
    responses((status = 200, description = "Done", body = Conversation), Errors))]
async fn edit_conversation(
    State(state): State<AppState>,
    who: Option<Extension<Owner>>,
    Path(id): Path<String>,
    Body(body): Body<ConversationBody>,
) -> Result<Json<Conversation>, ApiError> {
    check(&body)?;
    let owner = owner(who);
    let (id, title, model, messages, created_at, _) = found(&state, &owner, &id)?;
    let messages = body.messages.map_or(messages, |m| serde_json::to_string(&m).unwrap_or_default());
    let row = (id, body.title.unwrap_or(title), body.model.or(model), messages, created_at, now());
    state.models.registry.save_conversation(&owner, &row)?;
    Ok(Json(conversation(row)))
}

/// Delete a conversation.
#[utoipa::path(delete, path = "/api/conversations/{id}", tag = "conversations", params(("id" = String, Path)),
    responses((status = 200, description = "Done", body = ConversationDeleted), Errors))]
async fn delete_conversation(
    State(state): State<AppState>,
    who: Option<Extension<Owner>>,
    Path(id): Path<String>,
) -> Result<Json<ConversationDeleted>, ApiError> {
    if !state.models.registry.delete_saved_conversation(&owner(who), &id)? {
        return Err(ApiError::not_found(format!("no conversation `{id}`")));
    }
    Ok(Json(ConversationDeleted { deleted: id }))
}

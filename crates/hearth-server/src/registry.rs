//! The server's database: models and LoRA adapters registered through `/admin/models`, and
//! the Responses API's stored responses and the web UI's conversations, in SQLite so they
//! survive restarts.

use std::path::Path;
use std::sync::Mutex;

use hearth_sqlite::{Migration, OpenError, Schema};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Another id for a model the store or a path provides (`model_id`).
    Model,
    /// A LoRA adapter (`adapter_path`) on top of `base_model`.
    Lora,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Lora => "lora",
        }
    }
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Registration {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub base_model: Option<String>,
    pub adapter_path: Option<String>,
    pub model_id: Option<String>,
    /// `{lora_rank, lora_alpha}` for adapters.
    pub config: Value,
    pub metadata: Value,
    pub registered_by: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

impl Registration {
    /// The scale a registration's `{lora_rank, lora_alpha}` imply (`lora_alpha / lora_rank`),
    /// for an adapter whose own files give none.
    pub fn given_scale(&self) -> Option<f32> {
        let rank = self.config.get("lora_rank")?.as_f64()?;
        let alpha = self.config.get("lora_alpha")?.as_f64()?;
        Some((alpha / rank) as f32)
    }
}

/// Versions of the registry's schema (see `hearth_sqlite`).
const SCHEMA: Schema = Schema {
    what: "the server's registry",
    migrations: &[
        Migration { name: "registrations", apply: |tx| tx.execute_batch(REGISTRATIONS) },
        Migration { name: "responses", apply: |tx| tx.execute_batch(RESPONSES) },
        Migration { name: "response chains", apply: |tx| tx.execute_batch(RESPONSE_PARENTS) },
        Migration { name: "conversations", apply: |tx| tx.execute_batch(CONVERSATIONS) },
    ],
};

/// Version 1's table.
const REGISTRATIONS: &str = "
CREATE TABLE IF NOT EXISTS registrations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    base_model TEXT,
    adapter_path TEXT,
    model_id TEXT,
    config TEXT NOT NULL,
    metadata TEXT NOT NULL,
    registered_by TEXT,
    created_at INTEGER NOT NULL
);";

/// Version 2: stored responses, each with the conversation it ends (input items).
const RESPONSES: &str = "
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL
);";

/// Version 3: a response stores only its own turn (its request's items and its output) and the
/// response it continues; a conversation is read back along the chain, so storage grows with
/// the turns, not with their square. Rows of version 2 hold their whole conversation and no
/// parent, and read back as before.
const RESPONSE_PARENTS: &str = "ALTER TABLE responses ADD COLUMN parent TEXT;";

/// Version 4: the web UI's conversations, each its owner's (a hash of the API key it was
/// made with; empty without keys), with its messages as JSON.
const CONVERSATIONS: &str = "
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    model TEXT,
    messages TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX conversations_by_owner ON conversations (owner, updated_at);";

/// Longest chain of `previous_response_id`s read back (a guard against a cycle in a damaged file).
const MAX_CHAIN: usize = 100_000;

pub struct Registry {
    conn: Mutex<Connection>,
}

pub type Result<T> = rusqlite::Result<T>;

impl Registry {
    pub fn open(path: &Path) -> std::result::Result<Self, OpenError> {
        Ok(Registry { conn: Mutex::new(hearth_sqlite::open(path, &SCHEMA)?) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `r`; `false` if the name is taken.
    pub fn insert(&self, r: &Registration) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO registrations VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.name,
                r.kind.as_str(),
                r.base_model,
                r.adapter_path,
                r.model_id,
                r.config.to_string(),
                r.metadata.to_string(),
                r.registered_by,
                r.created_at
            ],
        )?;
        Ok(n == 1)
    }

    pub fn get(&self, name: &str) -> Result<Option<Registration>> {
        self.conn().query_row("SELECT * FROM registrations WHERE name = ?1", [name], from_row).optional()
    }

    pub fn list(&self, registered_by: Option<&str>) -> Result<Vec<Registration>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT * FROM registrations WHERE ?1 IS NULL OR registered_by = ?1 ORDER BY name")?;
        let rows = stmt.query_map([registered_by], from_row)?;
        rows.collect()
    }

    /// `false` if there was no such registration.
    pub fn remove(&self, name: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM registrations WHERE name = ?1", [name])? == 1)
    }
}

fn from_row(row: &Row<'_>) -> Result<Registration> {
    let json = |i: usize| -> Result<Value> {
        let text: String = row.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    };
    let kind: String = row.get(1)?;
    Ok(Registration {
        name: row.get(0)?,
        kind: if kind == "lora" { Kind::Lora } else { Kind::Model },
        base_model: row.get(2)?,
        adapter_path: row.get(3)?,
        model_id: row.get(4)?,
        config: json(5)?,
        metadata: json(6)?,
        registered_by: row.get(7)?,
        created_at: row.get(8)?,
    })
}

/// Stored responses (`/v1/responses`).
impl Registry {
    /// Stores a response and its turn's items, continuing `parent`'s conversation. An id is
    /// stored once: a second response with the same id is refused, not written over the first.
    pub fn store_response(&self, id: &str, created_at: u64, response: &Value, turn: &Value, parent: Option<&str>) -> Result<()> {
        self.conn().execute(
            "INSERT INTO responses (id, created_at, response, conversation, parent) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, created_at as i64, response.to_string(), turn.to_string(), parent],
        )?;
        Ok(())
    }

    /// A stored response.
    pub fn response(&self, id: &str) -> Result<Option<Value>> {
        let row: Option<String> = self.conn().query_row("SELECT response FROM responses WHERE id = ?1", [id], |r| r.get(0)).optional()?;
        row.map(|text| parse_json(&text)).transpose()
    }

    /// The conversation a stored response ends: the items of every turn along its chain, first
    /// turn first. `Err(missing id)` inside when an earlier response of the chain was deleted.
    pub fn conversation(&self, id: &str) -> Result<Option<std::result::Result<Vec<Value>, String>>> {
        let conn = self.conn();
        let mut turns = Vec::new();
        let mut next = Some(id.to_string());
        while let Some(at) = next.take() {
            let row: Option<(String, Option<String>)> = conn
                .query_row("SELECT conversation, parent FROM responses WHERE id = ?1", [&at], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((items, parent)) = row else {
                return Ok(if turns.is_empty() { None } else { Some(Err(at)) });
            };
            turns.push(parse_json(&items)?);
            if turns.len() > MAX_CHAIN {
                return Err(rusqlite::Error::InvalidQuery);
            }
            next = parent;
        }
        let items = turns.into_iter().rev().flat_map(|t| match t {
            Value::Array(items) => items,
            _ => Vec::new(),
        });
        Ok(Some(Ok(items.collect())))
    }

    /// Whether there was one to delete.
    pub fn delete_response(&self, id: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM responses WHERE id = ?1", [id])? > 0)
    }
}

/// A JSON column's value; text that is not JSON (a damaged file) is an error, not a null.
fn parse_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

/// A stored conversation: `(id, title, model, messages as JSON, created_at, updated_at)`.
pub type ConversationRow = (String, String, Option<String>, String, i64, i64);

fn conversation_row(r: &rusqlite::Row<'_>) -> Result<ConversationRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
}

/// The web UI's conversations, each seen only by its owner.
impl Registry {
    pub fn saved_conversations(&self, owner: &str) -> Result<Vec<ConversationRow>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, title, model, messages, created_at, updated_at FROM conversations WHERE owner = ?1 ORDER BY updated_at DESC, id",
        )?;
        let rows = stmt.query_map([owner], conversation_row)?;
        rows.collect()
    }

    pub fn saved_conversation(&self, owner: &str, id: &str) -> Result<Option<ConversationRow>> {
        self.conn()
            .query_row(
                "SELECT id, title, model, messages, created_at, updated_at FROM conversations WHERE owner = ?1 AND id = ?2",
                [owner, id],
                conversation_row,
            )
            .optional()
    }

    /// Inserts or replaces conversation `row.0` of `owner`.
    pub fn save_conversation(&self, owner: &str, row: &ConversationRow) -> Result<()> {
        let (id, title, model, messages, created_at, updated_at) = row;
        self.conn().execute(
            "INSERT INTO conversations (id, owner, title, model, messages, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (id) DO UPDATE SET title = ?3, model = ?4, messages = ?5, updated_at = ?7 WHERE owner = ?2",
            params![id, owner, title, model, messages, created_at, updated_at],
        )?;
        Ok(())
    }

    /// `false` if `owner` has no such conversation.
    pub fn delete_saved_conversation(&self, owner: &str, id: &str) -> Result<bool> {
        Ok(self.conn().execute("DELETE FROM conversations WHERE owner = ?1 AND id = ?2", [owner, id])? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_from_the_release_before_schema_versions_keeps_its_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE registrations (
                    name TEXT PRIMARY KEY, kind TEXT NOT NULL, base_model TEXT, adapter_path TEXT, model_id TEXT,
                    config TEXT NOT NULL, metadata TEXT NOT NULL, registered_by TEXT, created_at INTEGER NOT NULL);
                INSERT INTO registrations VALUES ('tuned', 'lora', 'smollm2', '/a/adapter.safetensors', NULL,
                    '{\"lora_rank\":8}', '{}', 'alice', 7);",
            )
            .unwrap();
        let registry = Registry::open(&path).unwrap();
        let r = registry.get("tuned").unwrap().unwrap();
        assert_eq!(
            (r.kind, r.base_model.as_deref(), r.config["lora_rank"].as_u64(), r.created_at),
            (Kind::Lora, Some("smollm2"), Some(8), 7)
        );
        let version: i64 = registry.conn().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, SCHEMA.version());
    }

    #[test]
    fn a_registry_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.db");
        Connection::open(&path).unwrap().execute_batch(&format!("PRAGMA user_version = {}", SCHEMA.version() + 1)).unwrap();
        let err = Registry::open(&path).err().expect("refused");
        let expected = format!("the server's registry has schema version {}", SCHEMA.version() + 1);
        assert!(matches!(err, OpenError::TooNew { .. }) && err.to_string().contains(&expected), "{err}");
    }
}

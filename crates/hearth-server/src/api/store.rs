//! The model store's bodies: `POST /api/models/pull` and `DELETE /api/models/{model_id}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/models/pull`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    /// A repo id or catalogue alias, optionally with `@revision` and `:QUANT`.
    pub model: String,
    /// Overrides the model's `@revision`.
    pub revision: Option<String>,
    /// Overrides the model's `:QUANT`.
    pub quant: Option<String>,
    /// Globs of the files to fetch.
    pub include: Option<Vec<String>>,
    /// Globs of files to skip.
    pub exclude: Option<Vec<String>>,
}

/// One server-sent event of a pull: hearth-store's progress events as JSON, `event` naming the
/// kind (`resolved`, `progress`, `file_verified`, …); the last is `done` or `failed`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PullEvent {
    pub event: String,
}

#[derive(Serialize, ToSchema)]
pub struct Removed {
    /// The store models removed.
    pub deleted: Vec<String>,
}

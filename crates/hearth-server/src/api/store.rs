//! The model store's bodies: `GET /api/store`, `POST /api/models/pull`, `GET` and `DELETE
//! /api/models/{model_id}`.

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

/// `GET /api/store`: the store's models, the disk they take, and the catalogue of aliases.
#[derive(Serialize, ToSchema)]
pub struct StoreListing {
    #[schema(value_type = Vec<Object>)]
    pub models: Vec<hearth_store::ModelRecord>,
    /// Bytes the store's models take on disk.
    pub total_bytes: u64,
    #[schema(value_type = Vec<Object>)]
    pub catalogue: Vec<hearth_store::catalogue::CatalogueEntry>,
}

/// `GET /api/models/{model_id}`: what a model's files say, and how it runs once loaded.
#[derive(Serialize, ToSchema)]
pub struct ModelDetails {
    pub id: String,
    pub path: String,
    /// `gguf`, `safetensors` or `mlx` (MLX-quantised safetensors).
    pub format: &'static str,
    pub architecture: String,
    pub layers: usize,
    pub hidden_size: usize,
    /// The context the model was trained for.
    pub context_length: usize,
    pub vocab_size: usize,
    /// How the weights are stored: `Q4_1`, `4-bit, group 64`, `bfloat16`, ….
    pub quantization: Option<String>,
    /// Its files and their sizes.
    pub files: Vec<ModelFile>,
    pub size_bytes: u64,
    pub chat_template: Option<String>,
    /// A LoRA adapter's folder, served on the base at `path`.
    pub adapter: Option<String>,
    pub loaded: bool,
    /// Once loaded: the context it runs with and the memory its weights take.
    pub running_context: Option<usize>,
    pub memory_bytes: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelFile {
    pub name: String,
    pub bytes: u64,
}

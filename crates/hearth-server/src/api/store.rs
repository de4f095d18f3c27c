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

/// `POST /api/models/convert`: a model written in another format or precision, into the
/// store as `local/<name>` (`hearth convert` / `hearth quantize` over HTTP).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConvertBody {
    /// The model to convert: a model this server can run (not an adapter).
    pub model: String,
    /// `mlx`, `hf` or `gguf`.
    pub to: String,
    /// The result's name in the store (`local/<name>`): letters, digits, `.`, `-` and `_`.
    pub name: String,
    /// GGUF: llama.cpp's file type (`Q4_K_M`, `Q8_0`, `F16`, …); default: a GGUF source keeps
    /// its types, a directory is written as F16.
    pub gguf_type: Option<String>,
    /// MLX: quantise to this many bits (2, 3, 4, 5, 6, 8), in groups of `group_size` (32, 64,
    /// 128; default 64).
    pub bits: Option<u32>,
    pub group_size: Option<usize>,
    /// MLX and Hugging Face: cast the floats to `float32`, `float16` or `bfloat16`.
    pub dtype: Option<String>,
}

/// One server-sent event of a conversion: `progress` (`done` of `total` tensors), then `done`
/// (with the store's record of the result) or `failed` (with a `message`).
#[derive(Serialize, ToSchema)]
pub struct ConvertEvent {
    pub event: &'static str,
    pub done: Option<usize>,
    pub total: Option<usize>,
    #[schema(value_type = Option<Object>)]
    pub model: Option<hearth_store::ModelRecord>,
    pub message: Option<String>,
}

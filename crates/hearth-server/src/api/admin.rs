//! The registry's bodies (`/admin/*`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::registry::{Kind, Registration};

/// `POST /admin/models`: a LoRA adapter (`adapter_path` on `base_model`) or another name for a
/// model (`model_id`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// 1-128 letters, digits and `._:-`.
    pub name: String,
    /// Default: `lora` with an `adapter_path`, else `model`.
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
    pub base_model: Option<String>,
    /// The adapter's safetensors file, or its bundle directory.
    pub adapter_path: Option<String>,
    pub model_id: Option<String>,
    /// LoRA adapters only.
    pub config: Option<LoraConfig>,
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    pub registered_by: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    /// In [1, 65536].
    pub lora_rank: Option<i64>,
    /// Positive.
    pub lora_alpha: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct AdminHealth {
    pub status: &'static str,
    pub registered: usize,
    pub loaded: Vec<String>,
}

/// `registered`, `loading` or `loaded`, with the memory a loaded model takes.
#[derive(Serialize, ToSchema)]
pub struct LoadStatus {
    pub status: &'static str,
    pub memory_bytes: usize,
}

/// A registration with its load status.
#[derive(Serialize, ToSchema)]
pub struct RegisteredModel {
    #[serde(flatten)]
    pub registration: Registration,
    #[serde(flatten)]
    pub status: LoadStatus,
}

#[derive(Serialize, ToSchema)]
pub struct RegisteredModels {
    pub models: Vec<RegisteredModel>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(flatten)]
    pub status: LoadStatus,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The registration's name.
    pub deleted: String,
}

#[derive(Serialize, ToSchema)]
pub struct Preloaded {
    pub name: String,
    /// `loaded`.
    pub status: &'static str,
    pub memory_bytes: usize,
}

#[derive(Serialize, ToSchema)]
pub struct ScanReport {
    /// Names registered now.
    pub registered: Vec<String>,
    /// Bundles registered before.
    pub skipped: Vec<String>,
    pub errors: Vec<ScanError>,
}

#[derive(Serialize, ToSchema)]
pub struct ScanError {
    pub path: String,
    pub error: String,
}

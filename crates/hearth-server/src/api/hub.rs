//! The hub's bodies (`/hub/*`); datasets, jobs and metrics are the hub's own types.

use hearth_hub::datasets::{Dataset, TokenStats};
use hearth_hub::export::Metric;
use hearth_hub::models::HubModel;
use hearth_hub::{FuseFormat, Job, RunSummary};
use hearth_train::run::TrainSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /hub/jobs`: fine-tune `model` on `dataset`; the result is registered as `name`
/// (and `name@version`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// Letters, digits and `._-`.
    pub name: String,
    /// The base model: a configured, registered or stored model id.
    pub model: String,
    pub dataset: String,
    /// `hearth train`'s settings by mlx_lm.lora's names (`iters`, `learning_rate`, `rank`,
    /// `scale`, `batch_size`, `num_layers`, `mask_prompt`, `lr_schedule`, …); what is left out
    /// takes `hearth train`'s defaults. The hub sets `model`, `data`, `adapter_path` and `resume`.
    #[schema(value_type = Object)]
    pub train: Option<TrainSpec>,
    /// Also write the adapter fused into the base, in the bundle: `mlx`, `hf` or `gguf`.
    pub fuse: Option<FuseFormat>,
    /// The model's description and tags (replacing what the name had).
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// `PATCH /hub/models/{name}`: what is given replaces what was.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelEdit {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// `POST /hub/runs/{id}/mlflow`: the MLflow file store (`mlruns` folder) to write the run into.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MlflowExport {
    /// An absolute path under the server's allowed roots; `$HEARTH_HOME/mlruns` by default.
    pub path: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HubModels {
    pub models: Vec<HubModel>,
}

#[derive(Serialize, ToSchema)]
pub struct Runs {
    pub runs: Vec<RunSummary>,
}

/// A multipart dataset upload.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DatasetForm {
    /// JSONL: chat, tools, completions or text records.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub name: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Datasets {
    pub datasets: Vec<Dataset>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetDetail {
    #[serde(flatten)]
    pub dataset: Dataset,
    /// The first records of the train split.
    #[schema(value_type = Vec<Object>)]
    pub preview: Vec<Value>,
    /// With `?model=`: token counts with that model's tokenizer and chat template.
    pub tokens: Option<TokenStats>,
}

#[derive(Serialize, ToSchema)]
pub struct DatasetDeleted {
    pub deleted: String,
}

#[derive(Serialize, ToSchema)]
pub struct Jobs {
    pub jobs: Vec<Job>,
}

#[derive(Serialize, ToSchema)]
pub struct Metrics {
    pub run_id: String,
    pub metrics: Vec<Metric>,
}

//! The hub's routes (`/hub/*`): datasets (upload, list, show with token statistics, delete),
//! fine-tuning jobs (create, list, show, cancel, live progress as server-sent events, log) and
//! their runs' metrics (JSON or CSV) and loss curves (SVG). A finished job's bundle is
//! registered through the registry's own code ([`HubRegistrar`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use hearth_hub::datasets::SplitShares;
use hearth_hub::jobs::Finished;
use hearth_hub::models::HubModel;
use hearth_hub::{export, Hub, JobRequest, Registrar};
use hearth_train::run::TrainSpec;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::admin::{LoraConfig, RegisterRequest};
use crate::api::hub::{
    DatasetDeleted, DatasetDetail, DatasetForm, Datasets, HubModels, Jobs, Metrics, MlflowExport, ModelEdit, NewJob, Runs,
};
use crate::api::{Body, Errors};
use crate::error::ApiError;
use crate::registry::Kind;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    let (schemas, paths, upload) = routes!(add_dataset, list_datasets);
    OpenApiRouter::new()
        // Uploads have their own limit (--max-dataset-mb), counted as they are read.
        .routes((schemas, paths, upload.layer(axum::extract::DefaultBodyLimit::disable())))
        .routes(routes!(show_dataset, remove_dataset))
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_events))
        .routes(routes!(job_log))
        .routes(routes!(list_hub_models))
        .routes(routes!(show_hub_model, edit_hub_model, delete_hub_model))
        .routes(routes!(list_runs))
        .routes(routes!(run_metrics))
        .routes(routes!(export_mlflow))
        .routes(routes!(loss_curves))
}

/// The query's keys, refusing any not in `known`.
fn query(q: HashMap<String, String>, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid(k, format!("unknown query parameter `{k}`"))),
        None => Ok(q),
    }
}

fn share(q: &HashMap<String, String>, key: &str, default: f64) -> Result<f64, ApiError> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| (0.0..0.5).contains(s))
            .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a number in [0, 0.5)"))),
    }
}

/// Runs hub work that touches files and the database off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::internal(format!("the hub stopped: {e}")))?
}

/// Upload a dataset: a JSONL body (or a multipart `file`), checked line by line and split into
/// train, valid and test (`valid_share`, `test_share`: 0.1 each by default).
#[utoipa::path(post, path = "/hub/datasets", tag = "hub",
    params(("name" = Option<String>, Query, description = "required unless the form gives it"), ("valid_share" = Option<f64>, Query), ("test_share" = Option<f64>, Query)),
    request_body(content((String = "application/jsonl"), (DatasetForm = "multipart/form-data"))),
    responses((status = 201, description = "Created", body = hearth_hub::datasets::Dataset), (status = 409, description = "The name is taken", body = crate::api::ErrorBody), Errors))]
async fn add_dataset(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>, req: Request) -> Result<Response, ApiError> {
    let q = query(q, &["name", "valid_share", "test_share"])?;
    let shares = SplitShares { valid: share(&q, "valid_share", 0.1)?, test: share(&q, "test_share", 0.1)? };
    let limit = state.cfg.max_dataset_bytes;
    let too_large =
        || ApiError { message: format!("the dataset is over the {} MiB limit (--max-dataset-mb)", limit >> 20), ..ApiError::too_large() };
    let is_multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut name = q.get("name").cloned();
    let content = if is_multipart {
        let mut form = Multipart::from_request(req, &state).await.map_err(|e| ApiError::bad_request(format!("bad multipart body: {e}")))?;
        let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(format!("bad multipart body: {e}"));
        let mut file = None;
        while let Some(mut field) = form.next_field().await.map_err(bad)? {
            match field.name().unwrap_or_default() {
                "file" => {
                    let mut bytes = Vec::new();
                    while let Some(chunk) = field.chunk().await.map_err(bad)? {
                        bytes.extend_from_slice(&chunk);
                        if bytes.len() > limit {
                            return Err(too_large());
                        }
                    }
                    file = Some(bytes);
                }
                "name" => name = Some(field.text().await.map_err(bad)?),
                other => return Err(ApiError::invalid(other, format!("unknown form field `{other}`"))),
            }
        }
        file.ok_or_else(|| ApiError::invalid("file", "the form has no `file` part"))?
    } else {
        axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large())?.to_vec()
    };
    let name = name.ok_or_else(|| ApiError::invalid("name", "`name` is required"))?;
    let hub = state.hub.clone();
    let dataset = blocking(move || Ok(hub.datasets().add(&name, &content, shares)?)).await?;
    Ok((StatusCode::CREATED, Json(dataset)).into_response())
}

/// Datasets.
#[utoipa::path(get, path = "/hub/datasets", tag = "hub", responses((status = 200, description = "Done", body = Datasets), Errors))]
async fn list_datasets(State(state): State<AppState>) -> Result<Json<Datasets>, ApiError> {
    Ok(Json(Datasets { datasets: state.hub.datasets().list()? }))
}

/// A dataset with its first records; with `model`, token counts with that model's tokenizer.
#[utoipa::path(get, path = "/hub/datasets/{name}", tag = "hub",
    params(("name" = String, Path), ("model" = Option<String>, Query), ("max_seq_length" = Option<usize>, Query)),
    responses((status = 200, description = "Done", body = DatasetDetail), Errors))]
async fn show_dataset(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DatasetDetail>, ApiError> {
    let q = query(q, &["model", "max_seq_length"])?;
    let max_seq_length = match q.get("max_seq_length") {
        None => 2048,
        Some(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ApiError::invalid("max_seq_length", "`max_seq_length` must be a positive integer"))?,
    };
    let model_path = match q.get("model") {
        None => None,
        Some(m) => Some(state.models.locate(m)?.path),
    };
    let hub = state.hub.clone();
    blocking(move || {
        let datasets = hub.datasets();
        let dataset = datasets.get(&name)?;
        let preview = datasets.preview(&name, 5)?;
        let tokens = model_path.map(|p| datasets.token_stats(&name, &p, max_seq_length)).transpose()?;
        Ok(Json(DatasetDetail { dataset, preview, tokens }))
    })
    .await
}

/// Delete a dataset (refused while a queued or running job uses it).
#[utoipa::path(delete, path = "/hub/datasets/{name}", tag = "hub", params(("name" = String, Path)),
    responses((status = 200, description = "Done", body = DatasetDeleted), (status = 409, description = "In use", body = crate::api::ErrorBody), Errors))]
async fn remove_dataset(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<DatasetDeleted>, ApiError> {
    state.hub.datasets().remove(&name)?;
    Ok(Json(DatasetDeleted { deleted: name }))
}

/// Start a fine-tuning job; it is queued behind the jobs before it (`queue_position`).
#[utoipa::path(post, path = "/hub/jobs", tag = "hub", request_body = NewJob,
    responses((status = 201, description = "Queued", body = hearth_hub::Job), Errors))]
async fn create_job(State(state): State<AppState>, Body(body): Body<NewJob>) -> Result<(StatusCode, Json<hearth_hub::Job>), ApiError> {
    let NewJob { name, model, dataset, train, fuse, description, tags } = body;
    let spec = train.unwrap_or_default();
    let defaults = TrainSpec::default();
    let hubs = [
        ("model", spec.model != defaults.model),
        ("data", spec.data != defaults.data),
        ("adapter_path", spec.adapter_path != defaults.adapter_path),
        ("resume", spec.resume),
        ("resume_adapter_file", spec.resume_adapter_file.is_some()),
    ];
    if let Some((key, _)) = hubs.iter().find(|(_, given)| *given) {
        return Err(ApiError::invalid(&format!("train.{key}"), format!("`train.{key}` is set by the hub")));
    }
    state.hub.datasets().get(&dataset).map_err(|e| ApiError { param: Some("dataset".into()), ..ApiError::from(e) })?;
    let located = state.models.locate(&model)?;
    if located.adapter.is_some() {
        return Err(ApiError::invalid("model", format!("`{model}` is a LoRA adapter; fine-tune its base model")));
    }
    let req = JobRequest { name, base_model: model, model_path: located.path, dataset, spec, fuse, description, tags };
    let hub = state.hub.clone();
    let job = blocking(move || Ok(hub.submit(req)?)).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Jobs, oldest first.
#[utoipa::path(get, path = "/hub/jobs", tag = "hub", responses((status = 200, description = "Done", body = Jobs), Errors))]
async fn list_jobs(State(state): State<AppState>) -> Result<Json<Jobs>, ApiError> {
    Ok(Json(Jobs { jobs: state.hub.jobs()? }))
}

/// A job: status, progress, parameters, export and registration.
#[utoipa::path(get, path = "/hub/jobs/{id}", tag = "hub", params(("id" = String, Path)), responses((status = 200, description = "Done", body = hearth_hub::Job), Errors))]
async fn show_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<hearth_hub::Job>, ApiError> {
    Ok(Json(state.hub.job(&id)?))
}

/// Cancel a queued job, or stop a running one after its current iteration.
#[utoipa::path(post, path = "/hub/jobs/{id}/cancel", tag = "hub", params(("id" = String, Path)),
    responses((status = 200, description = "Done", body = hearth_hub::Job), (status = 409, description = "Already over", body = crate::api::ErrorBody), Errors))]
async fn cancel_job(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<hearth_hub::Job>, ApiError> {
    Ok(Json(state.hub.cancel(&id)?))
}

/// A job's progress as server-sent events: first its state (`type: job`), then `status`,
/// `progress` (every iteration: loss, tokens/s, ETA), `metric` and `log` events, until it ends.
#[utoipa::path(get, path = "/hub/jobs/{id}/events", tag = "hub", params(("id" = String, Path)),
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = String), Errors))]
async fn job_events(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    // Subscribed before the state is read, so nothing between the two is missed.
    let events = state.hub.subscribe();
    let job = state.hub.job(&id)?;
    let over = job.status.is_over();
    let first = serde_json::json!({"type": "job", "job": job});
    let live = stream::unfold((events, over), move |(mut events, over)| {
        let id = id.clone();
        async move {
            if over {
                return None;
            }
            loop {
                match events.recv().await {
                    Ok(e) if e.job == id => {
                        let ends = matches!(&e.kind, hearth_hub::jobs::EventKind::Status { status, .. } if status.is_over());
                        return Some((serde_json::to_value(&e).unwrap_or_default(), (events, ends)));
                    }
                    Ok(_) => {}
                    // A slow reader missed some; progress events are superseded by the next.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let stream = stream::iter([first]).chain(live).map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string())));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// A job's log: `hearth train`'s output.
#[utoipa::path(get, path = "/hub/jobs/{id}/log", tag = "hub", params(("id" = String, Path)),
    responses((status = 200, description = "Done", content_type = "text/plain", body = String), Errors))]
async fn job_log(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let log = state.hub.log(&id)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], log).into_response())
}

/// The hub's models: what jobs were submitted for, each with its versions (newest first).
#[utoipa::path(get, path = "/hub/models", tag = "hub", responses((status = 200, description = "Done", body = HubModels), Errors))]
async fn list_hub_models(State(state): State<AppState>) -> Result<Json<HubModels>, ApiError> {
    let hub = state.hub.clone();
    blocking(move || Ok(Json(HubModels { models: hub.models()? }))).await
}

/// A hub model: description, tags, versions with their runs, bundles and registrations.
#[utoipa::path(get, path = "/hub/models/{name}", tag = "hub", params(("name" = String, Path)),
    responses((status = 200, description = "Done", body = HubModel), Errors))]
async fn show_hub_model(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<HubModel>, ApiError> {
    Ok(Json(state.hub.model(&name)?))
}

/// Change a hub model's description or tags.
#[utoipa::path(patch, path = "/hub/models/{name}", tag = "hub", params(("name" = String, Path)), request_body = ModelEdit,
    responses((status = 200, description = "Done", body = HubModel), Errors))]
async fn edit_hub_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Body(edit): Body<ModelEdit>,
) -> Result<Json<HubModel>, ApiError> {
    Ok(Json(state.hub.edit_model(&name, edit.description, edit.tags)?))
}

/// Delete a hub model, or with `version` one of its versions: unregistered, its bundles
/// removed (its runs stay on record). `name` moves to the newest version left. Answers the
/// model as it was.
#[utoipa::path(delete, path = "/hub/models/{name}", tag = "hub", params(("name" = String, Path), ("version" = Option<i64>, Query)),
    responses((status = 200, description = "Done", body = HubModel), (status = 409, description = "A job for it is queued or running", body = crate::api::ErrorBody), Errors))]
async fn delete_hub_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<HubModel>, ApiError> {
    let q = query(q, &["version"])?;
    let version = match q.get("version") {
        None => None,
        Some(v) => {
            Some(v.parse::<i64>().ok().filter(|&v| v > 0).ok_or_else(|| ApiError::invalid("version", "`version` is a positive integer"))?)
        }
    };
    let hub = state.hub.clone();
    blocking(move || Ok(Json(hub.delete_model(&name, version)?))).await
}

/// Runs (every job is one) with the last value of each metric; `ids` (comma-separated) picks
/// runs to compare, in that order.
#[utoipa::path(get, path = "/hub/runs", tag = "hub", params(("ids" = Option<String>, Query)),
    responses((status = 200, description = "Done", body = Runs), Errors))]
async fn list_runs(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Runs>, ApiError> {
    let q = query(q, &["ids"])?;
    let ids: Vec<String> = q.get("ids").map(|r| r.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default();
    let hub = state.hub.clone();
    blocking(move || Ok(Json(Runs { runs: hub.runs(&ids)? }))).await
}

/// Write a run into an MLflow file store (`mlflow ui --backend-store-uri <path>` shows it;
/// MLflow 3 asks for `MLFLOW_ALLOW_FILE_STORE=true`):
/// parameters, every metric step by step, tags, and the bundle, log and loss curves as
/// artifacts. Writing it again replaces it.
#[utoipa::path(post, path = "/hub/runs/{id}/mlflow", tag = "hub", params(("id" = String, Path)), request_body = MlflowExport,
    responses((status = 201, description = "Written", body = hearth_hub::mlflow::MlflowRun), Errors))]
async fn export_mlflow(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<hearth_hub::mlflow::MlflowRun>), ApiError> {
    // The body is optional: no body writes to the default store.
    let body: MlflowExport = if body.is_empty() { MlflowExport::default() } else { crate::api::parse(&body)? };
    let store = match body.path {
        None => state.cfg.home.join("mlruns"),
        Some(given) => crate::paths::confine_new(&state.cfg.allowed_roots, &given, "path")?,
    };
    let hub = state.hub.clone();
    let run = blocking(move || Ok(hub.export_mlflow(&id, &store)?)).await?;
    Ok((StatusCode::CREATED, Json(run)))
}

/// A run's metrics (`train_loss`, `val_loss`, `learning_rate`, `tokens_per_sec`,
/// `peak_memory_bytes`, `test_loss`), as JSON or, with `format=csv`, CSV.
#[utoipa::path(get, path = "/hub/runs/{id}/metrics", tag = "hub", params(("id" = String, Path), ("format" = Option<String>, Query)),
    responses((status = 200, description = "JSON, or CSV with `format=csv`", content((Metrics = "application/json"), (String = "text/csv"))), Errors))]
async fn run_metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let q = query(q, &["format"])?;
    let metrics = state.hub.metrics(&id)?;
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(Json(Metrics { run_id: id, metrics }).into_response()),
        Some("csv") => Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], export::metrics_csv(&metrics)).into_response()),
        Some(other) => Err(ApiError::invalid("format", format!("`format` is json or csv, not `{other}`"))),
    }
}

/// Loss curves as an SVG image: the runs named in `runs` (comma-separated) overlaid.
#[utoipa::path(get, path = "/hub/runs/loss.svg", tag = "hub", params(("runs" = String, Query)),
    responses((status = 200, description = "Done", content_type = "image/svg+xml", body = String), Errors))]
async fn loss_curves(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Response, ApiError> {
    let q = query(q, &["runs"])?;
    let ids: Vec<&str> = q.get("runs").map(|r| r.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
    if ids.is_empty() {
        return Err(ApiError::invalid("runs", "`runs` names one or more run ids"));
    }
    let mut runs = Vec::new();
    for id in &ids {
        runs.push((*id, state.hub.metrics(id)?));
    }
    let refs: Vec<(&str, &[export::Metric])> = runs.iter().map(|(id, m)| (*id, m.as_slice())).collect();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], export::loss_svg(&refs)).into_response())
}

/// Registers finished jobs' bundles as `POST /admin/models` does, `registered_by:
/// "hearth-hub"` and the run id as `model_id`: `name@version` for good, and `name` moved to
/// the newest version (unless the operator registered `name` themselves).
pub struct HubRegistrar {
    pub state: AppState,
    pub runtime: tokio::runtime::Handle,
}

impl Registrar for HubRegistrar {
    fn unregister(&self, names: &[String]) -> Result<(), String> {
        let state = &self.state;
        for name in names {
            let ours = state.models.registry.get(name).map_err(|e| e.to_string())?.is_some_and(|r| r.registered_by.as_deref() == Some(HUB));
            if ours {
                state.models.unload(name);
                state.models.registry.remove(name).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn register(&self, finished: &Finished) -> Result<Vec<String>, String> {
        let state = &self.state;
        let mut registered = Vec::new();
        for name in &finished.names {
            if let Some(existing) = state.models.registry.get(name).map_err(|e| e.to_string())? {
                if existing.registered_by.as_deref() != Some(HUB) {
                    tracing::warn!(name, "not moving a name registered by someone else to the new fine-tune");
                    continue;
                }
                state.models.unload(name);
                state.models.registry.remove(name).map_err(|e| e.to_string())?;
            }
            let metadata = match &finished.metadata {
                Value::Object(m) => Some(m.clone()),
                _ => None,
            };
            let req = RegisterRequest {
                name: name.clone(),
                kind: Some(Kind::Lora),
                base_model: Some(finished.base_model.clone()),
                adapter_path: Some(finished.bundle.display().to_string()),
                model_id: Some(finished.run_id.clone()),
                config: Some(LoraConfig::default()),
                metadata,
                registered_by: Some(HUB.into()),
            };
            self.runtime.block_on(crate::admin::register_model(state, req)).map_err(|e| e.message)?;
            registered.push(name.clone());
        }
        Ok(registered)
    }
}

pub const HUB: &str = "hearth-hub";

/// Training yields to inference: before each block, a training pass waits while any loaded
/// model has sequences running or queued (up to 10 s at a time, so a busy server still
/// trains, slowly).
pub fn inference_first(models: Arc<crate::models::Models>) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let started = std::time::Instant::now();
        while models.residents().iter().any(|r| !r.idle()) && started.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    })
}

/// The hub under `$HEARTH_HOME/hub`, its bundles in the exports directory.
pub fn open_hub(cfg: &crate::ServerConfig) -> anyhow::Result<Arc<Hub>> {
    let hub_cfg = hearth_hub::HubConfig { dir: cfg.home.join("hub"), exports_dir: cfg.exports_dir.clone(), workers: cfg.train_jobs };
    Ok(Arc::new(Hub::open(hub_cfg)?))
}

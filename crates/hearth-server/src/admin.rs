//! The registry routes (`/admin/*`): register models and LoRA adapters, see their status,
//! preload, delete, and scan the exports directory for adapter bundles.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::admin::{
    AdminHealth, Deleted, LoadStatus, ModelStatus, Preloaded, RegisterRequest, RegisteredModel, RegisteredModels, ScanError, ScanReport,
};
use crate::api::{in_range, Body, Errors, ModelErrors};
use crate::error::ApiError;
use crate::paths::confine;
use crate::registry::{Kind, Registration};
use crate::AppState;
use hearth_runtime::{check_adapter_fits, EngineError, LoraAdapter};

/// The files of an adapter export bundle.
const BUNDLE: [&str; 3] = ["adapters.safetensors", "config.json", "metadata.json"];

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(list, register))
        .routes(routes!(remove))
        .routes(routes!(status))
        .routes(routes!(preload))
        .routes(routes!(scan))
}

/// Registry health.
#[utoipa::path(get, path = "/admin/health", operation_id = "admin_health", tag = "registry", responses((status = 200, description = "Done", body = AdminHealth), Errors))]
async fn health(State(state): State<AppState>) -> Result<Json<AdminHealth>, ApiError> {
    let registered = state.models.registry.list(None)?.len();
    let loaded: Vec<String> = state.models.residents().iter().map(|r| r.id.clone()).collect();
    Ok(Json(AdminHealth { status: "ok", registered, loaded }))
}

/// `registered`, `loading` or `loaded`, with the memory a loaded model takes.
fn status_of(state: &AppState, name: &str) -> LoadStatus {
    match state.models.resident(name) {
        Some(r) => LoadStatus { status: "loaded", memory_bytes: r.memory_bytes() },
        None if state.models.is_loading(name) => LoadStatus { status: "loading", memory_bytes: 0 },
        None => LoadStatus { status: "registered", memory_bytes: 0 },
    }
}

fn with_status(state: &AppState, r: Registration) -> RegisteredModel {
    RegisteredModel { status: status_of(state, &r.name), registration: r }
}

/// Registered models.
#[utoipa::path(get, path = "/admin/models", tag = "registry", params(("registered_by" = Option<String>, Query)),
    responses((status = 200, description = "Done", body = RegisteredModels), Errors))]
async fn list(State(state): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<RegisteredModels>, ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "registered_by") {
        return Err(ApiError::invalid(k, format!("unknown query parameter `{k}`")));
    }
    let regs = state.models.registry.list(q.get("registered_by").map(String::as_str))?;
    Ok(Json(RegisteredModels { models: regs.into_iter().map(|r| with_status(&state, r)).collect() }))
}

/// Letters, digits and `._:-`, with `@` for a hub model's versions (`name@2`).
fn valid_name(name: &str) -> bool {
    (1..=128).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || "._:-@".contains(c))
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// An adapter path names the safetensors file or the bundle directory holding it.
fn adapter_file(p: &FsPath) -> Option<PathBuf> {
    let file = if p.is_dir() { p.join(BUNDLE[0]) } else { p.to_path_buf() };
    file.is_file().then_some(file)
}

/// Register a model or a LoRA adapter.
#[utoipa::path(post, path = "/admin/models", tag = "registry", request_body = RegisterRequest,
    responses((status = 201, description = "Created", body = RegisteredModel), (status = 409, description = "The name is taken", body = crate::api::ErrorBody), Errors))]
async fn register(
    State(state): State<AppState>,
    Body(body): Body<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisteredModel>), ApiError> {
    let reg = register_model(&state, body).await?;
    Ok((StatusCode::CREATED, Json(with_status(&state, reg))))
}

/// Checks and stores a registration: what `POST /admin/models` and the hub's finished jobs do.
pub(crate) async fn register_model(state: &AppState, body: RegisterRequest) -> Result<Registration, ApiError> {
    let RegisterRequest { name, kind, base_model, adapter_path, model_id, config, metadata, registered_by } = body;
    if !valid_name(&name) {
        return Err(ApiError::invalid("name", "`name` must be 1-128 characters of letters, digits and `._:-@`"));
    }
    let kind = kind.unwrap_or(if adapter_path.is_some() { Kind::Lora } else { Kind::Model });
    let config = match (kind, config) {
        (Kind::Lora, Some(c)) => {
            in_range("config.lora_rank", c.lora_rank, 1..=65536)?;
            if c.lora_alpha.is_some_and(|a| a <= 0.0 || !a.is_finite()) {
                return Err(ApiError::invalid("config.lora_alpha", "`config.lora_alpha` must be a positive number"));
            }
            json!(c)
        }
        (Kind::Model, Some(_)) => return Err(ApiError::invalid("config", "`config` is for LoRA adapters")),
        (_, None) => json!({}),
    };
    let metadata = Value::Object(metadata.unwrap_or_default());
    match kind {
        Kind::Lora if base_model.is_none() => return Err(ApiError::invalid("base_model", "a LoRA adapter needs `base_model`")),
        Kind::Lora if adapter_path.is_none() => return Err(ApiError::invalid("adapter_path", "a LoRA adapter needs `adapter_path`")),
        Kind::Model if model_id.is_none() => return Err(ApiError::invalid("model_id", "a model registration needs `model_id`")),
        Kind::Model if adapter_path.is_some() => return Err(ApiError::invalid("adapter_path", "`adapter_path` is for LoRA adapters")),
        _ => {}
    }
    let registry = &state.models.registry;
    if state.models.is_configured(&name) || registry.get(&name)?.is_some() {
        return Err(ApiError::conflict(format!("a model named `{name}` is already registered")));
    }
    let adapter_path = match kind {
        Kind::Lora => {
            let base = base_model.as_deref().unwrap_or_default();
            let located = state.models.locate(base).map_err(|e| match e.status {
                StatusCode::NOT_FOUND => {
                    ApiError { param: Some("base_model".into()), ..ApiError::not_found(format!("the base model `{base}` does not exist")) }
                }
                _ => ApiError::invalid("base_model", format!("`{base}` cannot be a base model: {}", e.message)),
            })?;
            if located.adapter.is_some() {
                return Err(ApiError::invalid("base_model", format!("`{base}` is itself a LoRA adapter; register adapters on a model")));
            }
            let given = adapter_path.unwrap_or_default();
            let real = confine(&state.cfg.allowed_roots, &given, "adapter_path")?;
            let file = adapter_file(&real).ok_or_else(|| ApiError {
                param: Some("adapter_path".into()),
                ..ApiError::not_found(format!("no adapter file at `{given}`"))
            })?;
            let (rank, alpha) = (config.get("lora_rank").and_then(Value::as_i64), config.get("lora_alpha").and_then(Value::as_f64));
            let (checked, model) = (file.clone(), located.path);
            tokio::task::spawn_blocking(move || check_adapter(&checked, &model, rank, alpha))
                .await
                .map_err(|e| ApiError::internal(format!("checking the adapter failed: {e}")))??;
            Some(file.display().to_string())
        }
        Kind::Model => {
            let id = model_id.as_deref().unwrap_or_default();
            // A name or repo id of the store; else a path, which must lie where the server may read.
            let named = state.models.resolve(id, false)?.is_some();
            if !named && FsPath::new(id).is_absolute() {
                confine(&state.cfg.allowed_roots, id, "model_id")?;
            }
            if !named && state.models.resolve(id, FsPath::new(id).is_absolute())?.is_none() {
                return Err(ApiError { param: Some("model_id".into()), ..ApiError::not_found(format!("the model `{id}` does not exist")) });
            }
            None
        }
    };
    let reg = Registration { name, kind, base_model, adapter_path, model_id, config, metadata, registered_by, created_at: now() };
    if !registry.insert(&reg)? {
        return Err(ApiError::conflict(format!("a model named `{}` is already registered", reg.name)));
    }
    Ok(reg)
}

/// Checks that an adapter will load on the base model at `base` (a GGUF file or a model
/// directory) before it is registered: it opens, its scale is known (from its own settings,
/// else `lora_alpha / lora_rank`), its rank is `rank` where that is given, and every layer it
/// adapts is one of the base's linear layers and fits it.
fn check_adapter(file: &FsPath, base: &FsPath, rank: Option<i64>, alpha: Option<f64>) -> Result<(), ApiError> {
    let given = rank.zip(alpha).map(|(r, a)| (a / r as f64) as f32);
    let lora = LoraAdapter::load_scaled(file, given).map_err(|e| match e {
        EngineError::Config(m) if given.is_none() => {
            ApiError::invalid("config", format!("{m}; give `config.lora_rank` and `config.lora_alpha`"))
        }
        e => ApiError::invalid("adapter_path", format!("the adapter cannot be read: {e}")),
    })?;
    if lora.is_dora() {
        return Err(ApiError::invalid("adapter_path", "a DoRA adapter is merged into its base with `hearth fuse`, not served beside it"));
    }
    match (rank, lora.rank()) {
        (Some(given), Some(found)) if given as usize != found => {
            return Err(ApiError::invalid("config.lora_rank", format!("`config.lora_rank` is {given}, but the adapter's rank is {found}")))
        }
        (Some(_), None) => return Err(ApiError::invalid("config.lora_rank", "the adapter's layers have different ranks")),
        _ => {}
    }
    check_adapter_fits(base, &lora).map_err(|e| ApiError::invalid("adapter_path", format!("the adapter does not fit the base model: {e}")))
}

fn registered(state: &AppState, name: &str) -> Result<Registration, ApiError> {
    state.models.registry.get(name)?.ok_or_else(|| ApiError::not_found(format!("no model named `{name}` is registered")))
}

/// `registered`, `loading` or `loaded`, with memory.
#[utoipa::path(get, path = "/admin/models/{name}/status", tag = "registry", params(("name" = String, Path)),
    responses((status = 200, description = "Done", body = ModelStatus), Errors))]
async fn status(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<ModelStatus>, ApiError> {
    let kind = match state.models.registry.get(&name)? {
        Some(r) => r.kind,
        None if state.models.is_configured(&name) || state.models.resident(&name).is_some() => Kind::Model,
        None => return Err(ApiError::not_found(format!("no model named `{name}` is registered"))),
    };
    Ok(Json(ModelStatus { status: status_of(&state, &name), name, kind }))
}

/// Delete a registration.
#[utoipa::path(delete, path = "/admin/models/{name}", operation_id = "unregister", tag = "registry", params(("name" = String, Path)),
    responses((status = 200, description = "Done", body = Deleted), Errors))]
async fn remove(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Deleted>, ApiError> {
    registered(&state, &name)?;
    state.models.unload(&name);
    state.models.registry.remove(&name)?;
    Ok(Json(Deleted { deleted: name }))
}

/// Load a registered model now.
#[utoipa::path(post, path = "/admin/models/{name}/preload", tag = "registry", params(("name" = String, Path)),
    responses((status = 200, description = "Done", body = Preloaded), ModelErrors))]
async fn preload(State(state): State<AppState>, Path(name): Path<String>) -> Result<Json<Preloaded>, ApiError> {
    if !state.models.is_configured(&name) {
        registered(&state, &name)?;
    }
    let r = state.models.get(&name, None).await?;
    Ok(Json(Preloaded { name, status: "loaded", memory_bytes: r.memory_bytes() }))
}

/// Register every adapter bundle under the exports directory not registered yet.
#[utoipa::path(post, path = "/admin/scan", tag = "registry", responses((status = 200, description = "Done", body = ScanReport), Errors))]
async fn scan(State(state): State<AppState>) -> Result<Json<ScanReport>, ApiError> {
    let dir = state.cfg.exports_dir.clone();
    if !dir.is_dir() {
        return Err(ApiError::not_found(format!("the exports directory {} does not exist", dir.display())));
    }
    let report = tokio::task::spawn_blocking(move || {
        let mut bundles = Vec::new();
        find_bundles(&dir, 3, &mut bundles);
        let (mut registered, mut skipped, mut errors) = (Vec::new(), Vec::new(), Vec::new());
        for bundle in bundles {
            match register_bundle(&state, &bundle) {
                Ok(Some(name)) => registered.push(name),
                Ok(None) => skipped.push(bundle.display().to_string()),
                Err(error) => errors.push(ScanError { path: bundle.display().to_string(), error }),
            }
        }
        ScanReport { registered, skipped, errors }
    });
    Ok(Json(report.await.map_err(|e| ApiError::internal(format!("the scan stopped: {e}")))?))
}

fn find_bundles(dir: &FsPath, depth: usize, out: &mut Vec<PathBuf>) {
    if BUNDLE.iter().all(|f| dir.join(f).is_file()) {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for d in dirs.iter().filter(|_| depth > 0) {
        find_bundles(d, depth - 1, out);
    }
}

/// `Ok(None)`: already registered. The name and base model come from `metadata.json`
/// (`name`, `base_model`); the adapter's scale from `config.json` as mlx-lm writes it
/// (`lora_parameters.scale`), else its `lora_alpha / lora_rank`. The bundle is checked as a
/// registration is.
fn register_bundle(state: &AppState, bundle: &FsPath) -> Result<Option<String>, String> {
    // A bundle reached through a link out of the allowed directories is not read.
    confine(&state.cfg.allowed_roots, &bundle.display().to_string(), "path").map_err(|e| e.message)?;
    let read = |f: &str| -> Result<Map<String, Value>, String> {
        let text = std::fs::read_to_string(bundle.join(f)).map_err(|e| format!("{f}: {e}"))?;
        match serde_json::from_str(&text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!("{f} is not a JSON object")),
        }
    };
    let metadata = read("metadata.json")?;
    let config = read("config.json")?;
    let dir_name = bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = metadata.get("name").and_then(Value::as_str).map_or(dir_name, str::to_string);
    if !valid_name(&name) {
        return Err(format!("`{name}` is not a valid model name"));
    }
    if state.models.is_configured(&name) || state.models.registry.get(&name).map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    let base = ["base_model", "model"]
        .iter()
        .find_map(|k| metadata.get(*k).or_else(|| config.get(*k)).and_then(Value::as_str))
        .ok_or("metadata.json names no base_model")?
        .to_string();
    let located = state.models.locate(&base).map_err(|e| format!("base model `{base}`: {}", e.message))?;
    if located.adapter.is_some() {
        return Err(format!("base model `{base}` is itself a LoRA adapter"));
    }
    let rank = config.get("lora_rank").or_else(|| config.get("lora_parameters")?.get("rank")).and_then(Value::as_i64);
    let alpha = config.get("lora_alpha").and_then(Value::as_f64);
    check_adapter(&bundle.join(BUNDLE[0]), &located.path, rank, alpha).map_err(|e| e.message)?;
    let reg = Registration {
        name: name.clone(),
        kind: Kind::Lora,
        base_model: Some(base),
        adapter_path: Some(bundle.join(BUNDLE[0]).display().to_string()),
        model_id: None,
        config: json!({"lora_rank": rank, "lora_alpha": alpha}),
        metadata: Value::Object(metadata),
        registered_by: Some("scan".into()),
        created_at: now(),
    };
    state.models.registry.insert(&reg).map_err(|e| e.to_string())?;
    Ok(Some(name))
}

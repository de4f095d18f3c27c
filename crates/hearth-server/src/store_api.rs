//! The model store over HTTP: `GET /api/store` lists it with its disk use and the catalogue,
//! `POST /api/models/pull` downloads a model from the Hub, streaming the store's progress
//! events as SSE, `POST /api/models/convert` writes one in another format into the store,
//! `GET /api/models/{model_id}` describes any model the server can run, and
//! `DELETE /api/models/{model_id}` removes one from the store (a repo id's `/`
//! percent-encoded as `%2F`).

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::StreamExt;
use hearth_store::name::ModelSpec;
use hearth_store::{PullEvent, PullRequest, StoreError};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::store::{ConvertBody, ConvertEvent, ModelDetails, ModelFile, PullBody, PullEvent as PullEventBody, Removed, StoreListing};
use crate::api::{Body, Errors};
use crate::chat_api;
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(listing)).routes(routes!(pull)).routes(routes!(convert)).routes(routes!(details, remove))
}

/// The pull a body asks for: `model` (a repo id or catalogue alias, optionally with
/// `@revision` and `:QUANT`), `revision` and `quant` that override it, and `include` and
/// `exclude` globs.
fn pull_request(body: PullBody) -> Result<PullRequest, ApiError> {
    let PullBody { model, revision, quant, include, exclude } = body;
    let (include, exclude) = (include.unwrap_or_default(), exclude.unwrap_or_default());
    let mut req = PullRequest::new(&model).map_err(|e| ApiError::invalid("model", e.to_string()))?;
    req.model.revision = revision.or(req.model.revision);
    req.model.quant = quant.or(req.model.quant);
    // The overrides are checked like the spec itself.
    req.model = ModelSpec::parse(&req.model.to_string()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    req.include = include;
    req.exclude = exclude;
    Ok(req)
}

/// Pull a model from the Hub into the store, streaming progress as server-sent events.
#[utoipa::path(post, path = "/api/models/pull", tag = "model store", request_body = PullBody,
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = PullEventBody), Errors))]
/// The pull runs on a blocking thread and outlives a client that disconnects (a later pull
/// would resume it anyway); the stream ends after the store's `done` or `failed` event.
async fn pull(State(state): State<AppState>, Body(body): Body<PullBody>) -> Result<Response, ApiError> {
    let req = pull_request(body)?;
    let store = state.models.store()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PullEvent>();
    let on_panic = tx.clone();
    let task = tokio::task::spawn_blocking(move || {
        // A send fails only once the client has gone; the pull goes on regardless.
        let _ = store.pull(&req, &|event| drop(tx.send(event)));
    });
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let _ = on_panic.send(PullEvent::Failed { message: format!("the pull stopped: {e}") });
        }
    });
    Ok(event_stream(rx))
}

/// The store's models (format, architecture, quantisation, size, context), the disk they
/// take, and the catalogue's aliases.
#[utoipa::path(get, path = "/api/store", tag = "model store", responses((status = 200, description = "Done", body = StoreListing), Errors))]
async fn listing(State(state): State<AppState>) -> Result<Json<StoreListing>, ApiError> {
    let store = state.models.store()?;
    let models = tokio::task::spawn_blocking(move || store.list())
        .await
        .map_err(|e| ApiError::internal(format!("listing the store stopped: {e}")))??;
    let total_bytes = models.iter().map(|m| m.size_bytes).sum();
    Ok(Json(StoreListing { models, total_bytes, catalogue: hearth_store::catalogue::CATALOGUE.to_vec() }))
}

/// What a blocking task sends on `rx`, as server-sent events (JSON), until it hangs up.
fn event_stream<T: serde::Serialize + Send + 'static>(rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> Response {
    let events = futures_util::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) }).map(|event| {
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, Infallible>(SseEvent::default().data(data))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// A conversion checked before it starts: what to run on the blocking thread, and where.
struct Conversion {
    src: std::path::PathBuf,
    out: std::path::PathBuf,
    name: String,
    target: Target,
}

enum Target {
    Mlx(hearth_convert::MlxOptions),
    Hf(hearth_convert::MlxOptions),
    Gguf(hearth_convert::GgufOptions),
}

fn conversion(state: &AppState, body: ConvertBody) -> Result<Conversion, ApiError> {
    let ConvertBody { model, to, name, gguf_type, bits, group_size, dtype } = body;
    let usable =
        (1..=64).contains(&name.len()) && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !usable {
        return Err(ApiError::invalid("name", "`name` is 1-64 letters, digits, `.`, `-` and `_`"));
    }
    let dtype = match dtype.as_deref() {
        None => None,
        Some(d) => {
            Some(hearth_convert::FloatType::parse(d).ok_or_else(|| ApiError::invalid("dtype", "`dtype` is float32, float16 or bfloat16"))?)
        }
    };
    let quantize = match (bits, group_size) {
        (None, None) => None,
        (None, Some(_)) => return Err(ApiError::invalid("bits", "`group_size` needs `bits`")),
        (Some(bits), g) => Some(
            hearth_convert::Affine { bits, group_size: g.unwrap_or(64) }.check().map_err(|e| ApiError::invalid("bits", e.to_string()))?,
        ),
    };
    let mlx = hearth_convert::MlxOptions { dtype, quantize, ..Default::default() };
    let only = |field: &str, given: bool, target: &str| match given {
        true => Err(ApiError::invalid(field, format!("`{field}` does not apply to {target} output"))),
        false => Ok(()),
    };
    let (target, file) = match to.as_str() {
        "mlx" => {
            only("gguf_type", gguf_type.is_some(), "MLX")?;
            (Target::Mlx(mlx), name.clone())
        }
        "hf" => {
            only("gguf_type", gguf_type.is_some(), "Hugging Face")?;
            only("bits", quantize.is_some(), "Hugging Face (float)")?;
            (Target::Hf(mlx), name.clone())
        }
        "gguf" => {
            only("bits", quantize.is_some(), "GGUF (use `gguf_type`)")?;
            only("dtype", dtype.is_some(), "GGUF (use `gguf_type`)")?;
            let file_type = match gguf_type.as_deref() {
                None => None,
                Some(t) => Some(hearth_convert::GgufFileType::parse(t).ok_or_else(|| {
                    ApiError::invalid(
                        "gguf_type",
                        format!("`gguf_type` is one of {}", hearth_convert::GgufFileType::all_names().join(", ")),
                    )
                })?),
            };
            (Target::Gguf(hearth_convert::GgufOptions { file_type, ..Default::default() }), format!("{name}.gguf"))
        }
        other => return Err(ApiError::invalid("to", format!("`to` is mlx, hf or gguf, not `{other}`"))),
    };
    let located = state.models.locate(&model).map_err(|e| ApiError { param: Some("model".into()), ..e })?;
    if located.adapter.is_some() {
        return Err(ApiError::invalid("model", format!("`{model}` is a LoRA adapter: fuse it with hearth fuse, or convert its base")));
    }
    let out = state.cfg.home.join("converted").join(file);
    if out.exists() || state.models.store()?.list()?.iter().any(|r| r.name == format!("local/{name}")) {
        return Err(ApiError::conflict(format!("a converted model named `{name}` exists")));
    }
    Ok(Conversion { src: located.path, out, name, target })
}

/// Write a model in another format or precision — MLX (float or affine-quantised), Hugging
/// Face, or GGUF of llama.cpp's types — into the store as `local/<name>`, streaming progress
/// as server-sent events. Everything is checked before the stream starts; the output is
/// written under a temporary name and renamed once whole.
#[utoipa::path(post, path = "/api/models/convert", tag = "model store", request_body = ConvertBody,
    responses((status = 200, description = "Server-sent events", content_type = "text/event-stream", body = ConvertEvent),
        (status = 409, description = "The name is taken", body = crate::api::ErrorBody), Errors))]
async fn convert(State(state): State<AppState>, Body(body): Body<ConvertBody>) -> Result<Response, ApiError> {
    let job = conversion(&state, body)?;
    let store = state.models.store()?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ConvertEvent>();
    let event = |event, done, total, model, message| ConvertEvent { event, done, total, model, message };
    let on_panic = tx.clone();
    let task = tokio::task::spawn_blocking(move || {
        let progress_tx = tx.clone();
        let progress = hearth_convert::Progress(std::sync::Arc::new(move |done, total| {
            let _ = progress_tx.send(ConvertEvent { event: "progress", done: Some(done), total: Some(total), model: None, message: None });
        }));
        if let Some(parent) = job.out.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let written = match job.target {
            Target::Mlx(o) => hearth_convert::to_mlx(&job.src, &job.out, &hearth_convert::MlxOptions { progress: Some(progress), ..o }),
            Target::Hf(o) => hearth_convert::to_hf(&job.src, &job.out, &hearth_convert::MlxOptions { progress: Some(progress), ..o }),
            Target::Gguf(o) => hearth_convert::to_gguf(&job.src, &job.out, &hearth_convert::GgufOptions { progress: Some(progress), ..o }),
        };
        let last = match written
            .map_err(|e| e.to_string())
            .and_then(|_| store.register_local(&job.name, &job.out, hearth_store::Source::Converted).map_err(|e| e.to_string()))
        {
            Ok(record) => event("done", None, None, Some(record), None),
            Err(message) => event("failed", None, None, None, Some(message)),
        };
        let _ = tx.send(last);
    });
    tokio::spawn(async move {
        if let Err(e) = task.await {
            let _ = on_panic.send(ConvertEvent {
                event: "failed",
                done: None,
                total: None,
                model: None,
                message: Some(format!("the conversion stopped: {e}")),
            });
        }
    });
    Ok(event_stream(rx))
}

/// What a model's files say about it (format, architecture, quantisation, context, files,
/// chat template), and once loaded, the context it runs with and its memory; a repo id's `/`
/// may be written `%2F` or `__`.
#[utoipa::path(get, path = "/api/models/{model_id}", operation_id = "describe_model", tag = "model store", params(("model_id" = String, Path)),
    responses((status = 200, description = "Done", body = ModelDetails), Errors))]
async fn details(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<ModelDetails>, ApiError> {
    let id = chat_api::path_model_id(&state, id);
    let located = state.models.locate(&id)?;
    let resident = state.models.resident(&id);
    let path = located.path.clone();
    let (facts, files) = tokio::task::spawn_blocking(move || {
        let facts = hearth_runtime::describe(&path);
        (facts, model_files(&path))
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading the model stopped: {e}")))?;
    let facts = facts.map_err(|e| ApiError::internal(format!("{}: {e}", located.path.display())))?;
    let format = match facts.format {
        hearth_runtime::ModelFormat::Gguf => "gguf",
        hearth_runtime::ModelFormat::Safetensors => "safetensors",
        hearth_runtime::ModelFormat::MlxQuantized => "mlx",
    };
    let cfg = facts.config;
    Ok(Json(ModelDetails {
        id,
        path: located.path.display().to_string(),
        format,
        architecture: format!("{:?}", cfg.arch).to_lowercase(),
        layers: cfg.num_layers,
        hidden_size: cfg.hidden_size,
        context_length: cfg.context_length,
        vocab_size: cfg.vocab_size,
        quantization: facts.storage,
        size_bytes: files.iter().map(|f| f.bytes).sum(),
        files,
        chat_template: facts.chat_template,
        adapter: located.adapter.map(|a| a.display().to_string()),
        loaded: resident.is_some(),
        running_context: resident.as_ref().map(|r| r.context),
        memory_bytes: resident.map(|r| r.memory_bytes()),
    }))
}

/// A GGUF file, or a directory's files (not its subfolders), with sizes.
fn model_files(path: &std::path::Path) -> Vec<ModelFile> {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if !path.is_dir() {
        return vec![ModelFile { name: name(path), bytes: std::fs::metadata(path).map_or(0, |m| m.len()) }];
    }
    let mut files: Vec<ModelFile> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = std::fs::metadata(e.path()).ok().filter(|m| m.is_file())?;
            Some(ModelFile { name: name(&e.path()), bytes: meta.len() })
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files
}

/// Remove a model from the store (409 while a server has it loaded, unless `force`); a repo
/// id's `/` may be written `%2F` or `__`.
#[utoipa::path(delete, path = "/api/models/{model_id}", operation_id = "remove_from_store", tag = "model store",
    params(("model_id" = String, Path), ("force" = Option<bool>, Query)),
    responses((status = 200, description = "Done", body = Removed), (status = 409, description = "In use", body = crate::api::ErrorBody), Errors))]
async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Removed>, ApiError> {
    if let Some(k) = q.keys().find(|k| *k != "force") {
        return Err(ApiError::invalid(k, format!("unknown query parameter `{k}`")));
    }
    let force = match q.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::invalid("force", format!("`force` must be true or false, got {other:?}"))),
    };
    let id = chat_api::path_model_id(&state, id);
    let store = state.models.store()?;
    let spec = id.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(&spec, force))
        .await
        .map_err(|e| ApiError::internal(format!("the removal stopped: {e}")))?
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::model_not_found(&id),
            StoreError::InUse(_) => ApiError::conflict(format!("`{id}` is loaded by a server; unload it first, or pass ?force=true")),
            // The rest as the store's errors map, about the path's id.
            e => ApiError { param: Some("model_id".into()), ..e.into() },
        })?;
    // A forced removal may take models this server has loaded: stop using their files.
    state.models.unload_store_models(&removed);
    Ok(Json(Removed { deleted: removed }))
}

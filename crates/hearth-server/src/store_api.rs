//! The model store over HTTP: `POST /api/models/pull` downloads a model from the Hub,
//! streaming the store's progress events as SSE, and `DELETE /api/models/{model_id}` removes
//! one (a repo id's `/` percent-encoded as `%2F`).

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

use crate::api::store::{PullBody, PullEvent as PullEventBody, Removed};
use crate::api::{Body, Errors};
use crate::chat_api;
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(pull)).routes(routes!(remove))
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
    let events = futures_util::stream::unfold(rx, |mut rx| async move { Some((rx.recv().await?, rx)) }).map(|event| {
        let data = serde_json::to_string(&event).unwrap_or_default();
        Ok::<_, Infallible>(SseEvent::default().data(data))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
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

//! `hearth serve`: one process, one port, for the clients of three servers — the
//! OpenAI-compatible API (`/v1/*`, the Responses API and Anthropic's Messages API included), the chat backend (`/api/*`, with a WebSocket) and the model
//! registry (`/admin/*`) — with embeddings, reranking, the model store's pulls, the knowledge base and the hub (`/hub/*`) — plus
//! `/health`, `/metrics`, `/docs` and the web UI (`/`, [`ui`]). Each loaded model runs a
//! continuously batching `hearth_runtime::Scheduler` on its own thread.

mod admin;
mod anthropic;
mod api;
mod chat_api;
pub mod config;
mod conversations_api;
mod docs;
mod embeddings;
mod error;
mod generation;
mod hub_api;
mod kb_api;
mod knowledge;
mod metrics;
mod models;
mod openai;
mod paths;
mod registry;
mod request;
mod responses;
mod store_api;
mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{ServeOptions, ServerConfig};
use error::ApiError;
use knowledge::Knowledge;
use metrics::{Metrics, ResidentSnapshot};
use models::Models;
use registry::Registry;

#[derive(Clone)]
pub struct AppState {
    cfg: Arc<ServerConfig>,
    models: Arc<Models>,
    metrics: Arc<Metrics>,
    knowledge: Arc<Knowledge>,
    hub: Arc<hearth_hub::Hub>,
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    router: Router,
    state: AppState,
}

impl Server {
    pub async fn bind(cfg: ServerConfig) -> anyhow::Result<Server> {
        let registry = Registry::open(&cfg.db).with_context(|| format!("opening the registry {}", cfg.db.display()))?;
        let cfg = Arc::new(cfg);
        let metrics = Arc::new(Metrics::default());
        let models = Arc::new(Models::new(cfg.clone(), Arc::new(registry), metrics.clone()));
        let knowledge =
            Arc::new(Knowledge::new(cfg.home.clone(), cfg.kb_embedding_model.clone(), cfg.kb_rerank_model.clone(), models.clone()));
        let hub = hub_api::open_hub(&cfg).with_context(|| format!("opening the hub in {}", cfg.home.join("hub").display()))?;
        let state = AppState { cfg: cfg.clone(), models, metrics, knowledge, hub };
        let registrar = cfg.auto_register.then(|| {
            Arc::new(hub_api::HubRegistrar { state: state.clone(), runtime: tokio::runtime::Handle::current() })
                as Arc<dyn hearth_hub::Registrar>
        });
        state.hub.start(registrar, Some(hub_api::inference_first(state.models.clone()))).context("starting the hub's training queue")?;
        if cfg.preload {
            for m in &cfg.models {
                state.models.get(&m.id, None).await.map_err(|e| anyhow::anyhow!("preloading {}: {e}", m.id))?;
            }
        }
        let listener = tokio::net::TcpListener::bind(cfg.addr).await.with_context(|| format!("listening on {}", cfg.addr))?;
        Ok(Server { router: router(state.clone()), listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `signal` resolves, then stops accepting and lets in-flight requests finish
    /// for the shutdown timeout before cancelling them.
    pub async fn run_until(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let models = self.state.models.clone();
        let timeout = self.state.cfg.shutdown_timeout;
        let expiry = tokio::spawn(expire_idle_models(models.clone()));
        // Ingest jobs a stopped process left running finish in the background.
        let knowledge = self.state.knowledge.clone();
        let resume = tokio::spawn(async move { knowledge.resume_jobs().await });
        let hub = self.state.hub.clone();
        let graceful = async move {
            signal.await;
            // Running fine-tunes save a checkpoint and resume at the next start.
            hub.close();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                models.shutdown.store(true, Ordering::Relaxed);
            });
        };
        let served = axum::serve(self.listener, self.router).with_graceful_shutdown(graceful).await;
        expiry.abort();
        resume.abort();
        Ok(served?)
    }
}

async fn expire_idle_models(models: Arc<Models>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        models.expire_idle();
    }
}

/// Runs `hearth serve` until Ctrl-C or SIGTERM.
pub async fn serve(cfg: ServerConfig) -> anyhow::Result<()> {
    let server = Server::bind(cfg).await?;
    tracing::info!("hearth serving on http://{} (docs at /docs)", server.local_addr()?);
    server.run_until(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Every route the key guards, each documented where it is routed: the router and
/// `/openapi.json` are built from this one list (and `/health`).
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(openai::routes())
        .merge(responses::routes())
        .merge(anthropic::routes())
        .merge(embeddings::routes())
        .merge(chat_api::routes())
        .merge(conversations_api::routes())
        .merge(store_api::routes())
        .merge(kb_api::routes())
        .merge(admin::routes())
        .merge(hub_api::routes())
        .routes(routes!(metrics_text))
}

fn router(state: AppState) -> Router {
    let (routes, doc) =
        api().route_layer(middleware::from_fn_with_state(state.clone(), require_key)).routes(routes!(health)).split_for_parts();
    let mut app = routes
        .merge(docs::viewers(docs::finish(doc)))
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(DefaultBodyLimit::max(state.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests));
    if let Some(cors) = cors(&state.cfg.cors_origins) {
        app = app.layer(cors);
    }
    app.with_state(state)
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

/// Liveness (no key needed).
#[utoipa::path(get, path = "/health", tag = "server", security(()), responses((status = 200, description = "Done", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, "x-api-key".parse().expect("valid header name")]),
    )
}

/// The key a request presents: `Authorization: Bearer`, `x-api-key`, or (for browsers'
/// WebSockets, which cannot set headers) `?api_key=`.
fn presented_key(req: &Request) -> Option<String> {
    let headers = req.headers();
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|k| k.trim().to_string());
    }
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.to_string());
    }
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("api_key=")).map(str::to_string)
}

async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let keys = &state.cfg.api_keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    let given = presented_key(&req).unwrap_or_default();
    // Every key is compared, in constant time, so timing tells nothing about which matched.
    let mut admin = subtle::Choice::from(0);
    let mut any = subtle::Choice::from(0);
    for k in keys {
        let hit = k.key.as_bytes().ct_eq(given.as_bytes());
        any |= hit;
        admin |= hit & subtle::Choice::from(u8::from(k.admin));
    }
    if !bool::from(any) {
        return ApiError::unauthorized().into_response();
    }
    let route = req.extensions().get::<MatchedPath>().map_or("", |p| p.as_str());
    if !bool::from(admin) && manages_server(req.method(), route) {
        return ApiError::forbidden(
            "this API key may only run inference: the registry, the model store, the hub and ingestion need an admin key",
        )
        .into_response();
    }
    req.extensions_mut().insert(conversations_api::Owner::of_key(&given));
    next.run(req).await
}

/// Whether a route changes what the server holds (and so needs an admin key where keys have
/// scopes): the registry, the model store's pulls and deletions, the hub, ingestion.
fn manages_server(method: &Method, route: &str) -> bool {
    let writes = *method == Method::POST || *method == Method::DELETE;
    route.starts_with("/admin/")
        || route.starts_with("/hub/")
        || route == "/api/models/pull"
        || route == "/api/models/convert"
        || (*method == Method::DELETE && route == "/api/models/{model_id}")
        || route == "/api/v1/ingest"
        || (writes && route.starts_with("/api/v1/content"))
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let res = next.run(req).await;
    state.metrics.count_request(&route, res.status().as_u16());
    res
}

/// Prometheus metrics, in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "server", responses((status = 200, description = "Done", content_type = "text/plain", body = String), api::Errors))]
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let residents = state.models.residents();
    // An adapter's sequences are counted with its base model's, which runs them.
    let snapshots: Vec<ResidentSnapshot<'_>> = residents
        .iter()
        .filter(|r| r.adapter.is_none())
        .map(|r| ResidentSnapshot { id: &r.id, weight_bytes: r.weight_bytes, gauges: r.scheduler.gauges() })
        .collect();
    let embedding_stats = state.models.embedding_stats();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render(&snapshots, &embedding_stats))
}

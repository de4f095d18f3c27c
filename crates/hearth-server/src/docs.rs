//! The OpenAPI 3.1 document (`/openapi.json`), generated from the API types and the handlers'
//! annotations, and two viewers of it served from the binary: Swagger UI at `/docs` and again
//! at `/redoc` (the chat backend's link). Swagger UI's assets are compiled in, nothing is
//! fetched from a CDN.

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::AppState;

/// The document's frame; the paths and schemas come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "Hearth", description = "A private LLM platform: OpenAI-compatible, chat-backend, registry, knowledge and model-store routes."),
    security(("bearer" = [])),
    tags(
        (name = "openai", description = "OpenAI-compatible: models, chat and text completions, responses, embeddings, reranking"),
        (name = "anthropic", description = "Anthropic's Messages API"),
        (name = "chat backend", description = "The chat backend's routes, WebSocket included"),
        (name = "model store", description = "Pulls from the Hub and removals"),
        (name = "registry", description = "Registered models and LoRA adapters"),
        (name = "hub", description = "Datasets, fine-tuning jobs and their runs, export bundles"),
        (name = "knowledge", description = "Knowledge-base collections, search and answers with citations"),
        (name = "conversations", description = "The web UI's saved conversations, per API key"),
        (name = "server", description = "Liveness and metrics"),
    ),
)]
pub struct ApiDoc;

/// Adds what the routes cannot say: the API key's scheme.
pub fn finish(mut doc: Document) -> Document {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    doc
}

pub fn viewers(doc: Document) -> Router<AppState> {
    Router::new()
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(SwaggerUi::new("/redoc").config(Config::new(["/openapi.json"])))
}

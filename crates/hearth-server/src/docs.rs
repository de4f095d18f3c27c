//! The OpenAPI 3 description of every route (`/openapi.json`) and Swagger UI (`/docs`).

use axum::response::Html;
use axum::Json;
use serde_json::{json, Map, Value};

/// (method, path, tag, summary)
const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/health", "server", "Liveness"),
    ("get", "/metrics", "server", "Prometheus metrics"),
    ("get", "/v1/models", "openai", "List models"),
    ("get", "/v1/models/{id}", "openai", "One model"),
    ("post", "/v1/chat/completions", "openai", "Chat completion (SSE when `stream`)"),
    ("post", "/v1/completions", "openai", "Text completion (SSE when `stream`)"),
    ("post", "/v1/embeddings", "openai", "Embeddings (`encoding_format` float or base64; `truncate` extension)"),
    ("post", "/v1/rerank", "openai", "Rerank documents against a query (llama.cpp / Cohere shape)"),
    ("get", "/api/health", "chat backend", "Health and loaded models"),
    ("get", "/api/models", "chat backend", "Models and whether they are loaded"),
    ("post", "/api/models/{model_id}/load", "chat backend", "Load a model"),
    ("post", "/api/models/{model_id}/unload", "chat backend", "Unload a model"),
    ("post", "/api/models/pull", "chat backend", "Pull a model from the Hub into the store, streaming progress as SSE"),
    ("delete", "/api/models/{model_id}", "chat backend", "Remove a model from the store (409 while loaded unless ?force=true)"),
    ("post", "/api/chat/completions", "chat backend", "Chat reply as one message"),
    ("post", "/api/chat/completions/stream", "chat backend", "Chat reply as SSE token messages"),
    ("get", "/api/chat/ws", "chat backend", "WebSocket chat: send {type: chat, messages}, receive token messages then done"),
    ("get", "/admin/health", "registry", "Registry health"),
    ("get", "/admin/models", "registry", "Registered models (?registered_by=)"),
    ("post", "/admin/models", "registry", "Register a model or a LoRA adapter"),
    ("delete", "/admin/models/{name}", "registry", "Delete a registration"),
    ("get", "/admin/models/{name}/status", "registry", "registered / loading / loaded, with memory"),
    ("post", "/admin/models/{name}/preload", "registry", "Load a registered model now"),
    ("post", "/admin/scan", "registry", "Register every adapter bundle in the exports directory"),
    ("get", "/api/v1/health", "knowledge", "Knowledge base health with document and chunk counts"),
    ("get", "/api/v1/search", "knowledge", "Search (?q=&limit=&mode=bm25|vector|hybrid&rerank=&tag=&content_type=&collection=)"),
    ("get", "/api/v1/stats", "knowledge", "Documents, chunks and content types of a collection"),
    ("post", "/api/v1/content", "knowledge", "Add content: JSON {text, title, content_type, tags, id, url} or a multipart file upload"),
    ("get", "/api/v1/content/{id}", "knowledge", "One document with its extracted text"),
    ("delete", "/api/v1/content/{id}", "knowledge", "Remove a document"),
    ("post", "/api/v1/ingest", "knowledge", "Ingest files under the configured ingest folder as a background job (202 with its id)"),
    ("get", "/api/v1/jobs/{id}", "knowledge", "An ingest job's state and progress"),
    ("post", "/search/ask", "knowledge", "Answer a question from a collection with citations (SSE when `stream`)"),
];

pub async fn openapi() -> Json<Value> {
    let mut paths = Map::new();
    for (method, path, tag, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if *method == "post"
            && !path.ends_with("/load")
            && !path.ends_with("/unload")
            && !path.ends_with("/preload")
            && !path.ends_with("/scan")
        {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    Json(json!({
        "openapi": "3.0.3",
        "info": {"title": "Hearth", "version": env!("CARGO_PKG_VERSION"), "description": "A private LLM platform: OpenAI-compatible, chat-backend and registry routes."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "message": {"type": "string"}, "type": {"type": "string"}, "param": {"type": "string", "nullable": true}, "code": {"type": "string", "nullable": true}
            }}}}},
        },
        "security": [{"bearer": []}],
    }))
}

/// Swagger UI's page; its script and style come from a CDN, so the page needs internet access
/// in the browser (the document itself is served locally).
pub async fn swagger_ui() -> Html<&'static str> {
    Html(
        r##"<!doctype html>
<html><head><meta charset="utf-8"><title>Hearth API</title>
<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>"##,
    )
}

//! The knowledge service's routes, built in: `/api/v1/health`, `/api/v1/search`,
//! `/api/v1/stats`, `/api/v1/content` (JSON or multipart upload) and `/search/ask` (answers
//! with citations, streaming or not); and retrieval for `/v1/chat/completions` requests that
//! name a collection in `knowledge_base`.

use std::convert::Infallible;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, StreamExt};
use hearth_kb::{Filters, Hit, Mode, NewContent, SearchOptions, Stats};
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::api::knowledge::{
    self as api, AskEvent, AskRequest, AskResponse, Citations, ContentAdded, ContentDeleted, Document, IngestAccepted, IngestRequest, Job,
    KbHealth, KnowledgeBaseOptions, NewContentRequest, SearchResponse, StatsResponse, UploadForm,
};
use crate::api::{in_range, Body, Errors, ModelErrors, StringOr};
use crate::error::ApiError;
use crate::generation;
use crate::knowledge::{blocking, DEFAULT_COLLECTION};
use crate::request::{self, GenRequest, Prompt};
use crate::AppState;
use hearth_runtime::Event;

/// The collection a route reads (`default` unless named).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct Collection {
    collection: Option<String>,
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(search))
        .routes(routes!(stats))
        .routes(routes!(add_content))
        .routes(routes!(get_content, delete_content))
        .routes(routes!(ingest))
        .routes(routes!(job))
        .routes(routes!(ask))
}

/// The most a client may raise the per-file limit of an ingest to: extraction holds a whole
/// file in memory.
const MAX_INGEST_FILE_BYTES: i64 = 1 << 30;

/// Ingest files under the server's `--kb-ingest-dir` as a background job: answers 202 with
/// the job's id at once (`GET /api/v1/jobs/{id}` shows its progress); a restarted server
/// resumes it.
#[utoipa::path(post, path = "/api/v1/ingest", tag = "knowledge", request_body = IngestRequest,
    responses((status = 202, description = "Accepted: the job runs in the background", body = IngestAccepted), Errors))]
async fn ingest(State(state): State<AppState>, Body(body): Body<IngestRequest>) -> Result<Response, ApiError> {
    let Some(root) = &state.cfg.kb_ingest_dir else {
        return Err(ApiError::bad_request("ingesting server files is disabled: start the server with --kb-ingest-dir"));
    };
    let root = root.canonicalize().map_err(|e| ApiError::internal(format!("the ingest folder {}: {e}", root.display())))?;
    let paths = body.paths;
    if paths.is_empty() {
        return Err(ApiError::invalid("paths", "`paths` must not be empty"));
    }
    let defaults = hearth_kb::IngestOptions::default();
    let json_text_field = match body.json_text_field {
        Some(name) if name.is_empty() => return Err(ApiError::invalid("json_text_field", "`json_text_field` must name a field")),
        Some(name) => name,
        None => defaults.extract.json_text_field.clone(),
    };
    let options = hearth_kb::IngestOptions {
        tags: body.tags.unwrap_or_default(),
        include: body.include.unwrap_or_default(),
        exclude: body.exclude.unwrap_or_default(),
        extract: hearth_kb::ExtractOptions {
            max_bytes: in_range("max_bytes", body.max_bytes, 1..=MAX_INGEST_FILE_BYTES)?.map_or(defaults.extract.max_bytes, |n| n as u64),
            json_text_field,
            ..defaults.extract
        },
        ..defaults
    };
    let sync = body.sync.unwrap_or(false);
    let collection = body.collection.unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    // Only what lies inside the folder, after resolving `..` and links.
    let mut resolved = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let param = format!("paths[{i}]");
        let inside =
            std::path::Path::new(p).is_relative().then(|| root.join(p).canonicalize().ok()).flatten().filter(|c| c.starts_with(&root));
        resolved.push(inside.ok_or_else(|| ApiError::invalid(&param, format!("{p:?} is not an existing path inside the ingest folder")))?);
    }
    let kb = state.knowledge.collection_to_write(&collection).await?;
    let spec = hearth_kb::JobSpec { paths: resolved, sync, options };
    let (kb2, spec2) = (kb.clone(), spec.clone());
    let id = blocking(move || kb2.create_job(&spec2)).await?;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = kb.execute(id, &spec, &|_| {}) {
            tracing::error!(job = %id, "knowledge base job failed: {e}");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(IngestAccepted { job_id: id, collection, state: "running" })).into_response())
}

/// An ingest job's state and progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "knowledge", params(("id" = i64, Path), Collection),
    responses((status = 200, description = "Done", body = Job), Errors))]
async fn job(State(state): State<AppState>, Path(id): Path<String>, Query(q): Query<Vec<(String, String)>>) -> Result<Json<Job>, ApiError> {
    // Parsed here so a bad id gets the API's error body, not axum's plain-text rejection.
    let id: i64 = id.parse().map_err(|_| ApiError::invalid("id", format!("job ids are integers, got {id:?}")))?;
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let job = blocking(move || kb.store().job(id)).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(Job {
        job_id: job.id,
        kind: job.kind,
        state: job.state,
        report: serde_json::to_value(job.report).unwrap_or_default(),
        created_at: job.created_at,
        updated_at: job.updated_at,
    }))
}

/// Query parameters, each checked; repeated `tag` and `content_type` are allowed.
struct Params(Vec<(String, String)>);

impl Params {
    fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        let first = found.next().map(|(_, v)| v.as_str());
        if found.next().is_some() {
            return Err(ApiError::invalid(name, format!("`{name}` is given more than once")));
        }
        Ok(first)
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ApiError::invalid(k, format!("unknown query parameter `{k}`"))),
            None => Ok(()),
        }
    }

    fn collection(&self) -> Result<String, ApiError> {
        Ok(self.one("collection")?.unwrap_or(DEFAULT_COLLECTION).to_string())
    }
}

fn parse_num<T>(name: &str, v: &str, range: std::ops::RangeInclusive<T>) -> Result<T, ApiError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match v.parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(name, format!("`{name}` must be a number in [{}, {}], got {v:?}", range.start(), range.end()))),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::invalid(name, format!("`{name}` must be true or false, got {v:?}"))),
    }
}

fn parse_mode(name: &str, v: &str) -> Result<Mode, ApiError> {
    v.parse().map_err(|e: hearth_kb::KbError| ApiError::invalid(name, e.to_string()))
}

/// Health, with the default collection's document and chunk counts.
#[utoipa::path(get, path = "/api/v1/health", operation_id = "knowledge_health", tag = "knowledge", responses((status = 200, description = "Done", body = KbHealth), Errors))]
async fn health(State(state): State<AppState>) -> Result<Json<KbHealth>, ApiError> {
    let collections = state.knowledge.collections();
    let stats = match state.knowledge.collection_or_empty(DEFAULT_COLLECTION).await? {
        Some(kb) => blocking(move || kb.stats()).await?,
        None => Stats::default(),
    };
    Ok(Json(KbHealth { status: "healthy", source: "hearth", documents: stats.documents, chunks: stats.chunks, collections }))
}

/// Documents, chunks and content types of a collection.
#[utoipa::path(get, path = "/api/v1/stats", tag = "knowledge", params(Collection), responses((status = 200, description = "Done", body = StatsResponse), Errors))]
async fn stats(State(state): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Result<Json<StatsResponse>, ApiError> {
    let q = Params(q);
    q.only(&["collection"])?;
    let stats = match state.knowledge.collection_or_empty(&q.collection()?).await? {
        Some(kb) => blocking(move || kb.stats()).await?,
        None => Stats::default(),
    };
    Ok(Json(StatsResponse {
        total_documents: stats.documents,
        total_chunks: stats.chunks,
        embedded_chunks: stats.embedded_chunks,
        sources: stats.sources,
        bytes: stats.bytes,
        content_types: stats.content_types.into_iter().collect(),
        source: "hearth",
    }))
}

/// Search a collection.
#[utoipa::path(get, path = "/api/v1/search", tag = "knowledge", params(
    ("q" = String, Query, description = "The query (or `query`)"),
    ("limit" = Option<usize>, Query, description = "In [1, 1000]"),
    ("mode" = Option<String>, Query, description = "`bm25`, `vector` or `hybrid`"),
    ("rerank" = Option<bool>, Query),
    ("tag" = Option<Vec<String>>, Query, description = "Repeatable"),
    ("content_type" = Option<Vec<String>>, Query, description = "Repeatable"),
    ("document" = Option<Vec<String>>, Query, description = "Repeatable"),
    ("bm25_weight" = Option<f32>, Query, description = "In [0, 100]"),
    ("vector_weight" = Option<f32>, Query, description = "In [0, 100]"),
    Collection,
), responses((status = 200, description = "Done", body = SearchResponse), Errors))]

async fn search(State(state): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Result<Json<SearchResponse>, ApiError> {
    let q = Params(q);
    q.only(&["q", "query", "limit", "mode", "rerank", "collection", "tag", "content_type", "document", "bm25_weight", "vector_weight"])?;
    let query = match (q.one("q")?, q.one("query")?) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("query", "give `q` or `query`, not both")),
        (Some(v), None) | (None, Some(v)) if !v.trim().is_empty() => v.to_string(),
        _ => return Err(ApiError::invalid("q", "`q` (the query) is required")),
    };
    let mut opts = SearchOptions::default();
    if let Some(v) = q.one("limit")? {
        opts.limit = parse_num("limit", v, 1..=1000)?;
    }
    if let Some(v) = q.one("mode")? {
        opts.mode = parse_mode("mode", v)?;
    }
    if let Some(v) = q.one("rerank")? {
        opts.rerank = parse_bool("rerank", v)?;
    }
    if let Some(v) = q.one("bm25_weight")? {
        opts.bm25_weight = parse_num("bm25_weight", v, 0.0..=100.0)?;
    }
    if let Some(v) = q.one("vector_weight")? {
        opts.vector_weight = parse_num("vector_weight", v, 0.0..=100.0)?;
    }
    opts.filters = Filters { tags: q.all("tag"), content_types: q.all("content_type"), documents: q.all("document") };
    let hits = match state.knowledge.collection_or_empty(&q.collection()?).await? {
        Some(kb) => {
            let reranker = if opts.rerank { Some(state.knowledge.reranker().await?) } else { None };
            let q2 = query.clone();
            blocking(move || kb.search(&q2, &opts, reranker.as_deref())).await?
        }
        None => Vec::new(),
    };
    let results: Vec<api::Hit> = hits.iter().map(api::Hit::from).collect();
    Ok(Json(SearchResponse { total: results.len(), results, query, source: "hearth" }))
}

/// One posted item: `text` (or `content`), optional `id`, `title`, `content_type`, `tags`, `url`.
fn content_item(body: NewContentRequest, collection: &mut Option<String>) -> Result<NewContent, ApiError> {
    let text = match (body.text, body.content) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("content", "give `text` or `content`, not both")),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return Err(ApiError::invalid("text", "`text` is required")),
    };
    if body.collection.is_some() {
        *collection = body.collection;
    }
    Ok(NewContent {
        id: body.id,
        title: body.title,
        content_type: body.content_type,
        tags: body.tags.unwrap_or_default(),
        source: body.url,
        text,
        bytes: None,
    })
}

/// A multipart upload: a `file` part (its name's extension gives the type unless
/// `content_type` says), and optional `title`, `tags` (comma-separated), `id`, `collection`.
async fn multipart_item(mut form: Multipart, collection: &mut Option<String>) -> Result<NewContent, ApiError> {
    let mut item = NewContent::default();
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(format!("bad multipart body: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                let file_name = field.file_name().map(str::to_string);
                let bytes = field.bytes().await.map_err(bad)?;
                if item.content_type.is_none() {
                    item.content_type = file_name
                        .as_deref()
                        .and_then(|n| hearth_docs::ContentType::from_path(std::path::Path::new(n)))
                        .map(|t| t.as_str().to_string());
                }
                // Two uploads of one file name are two documents: the name is only the title.
                item.title = item.title.or(file_name);
                item.bytes = Some(bytes.to_vec());
            }
            "title" | "tags" | "id" | "collection" | "content_type" => {
                let v = field.text().await.map_err(bad)?;
                match name.as_str() {
                    "title" => item.title = Some(v),
                    "tags" => item.tags = v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
                    "id" => item.id = Some(v),
                    "collection" => *collection = Some(v),
                    _ => item.content_type = Some(v),
                }
            }
            other => return Err(ApiError::invalid(other, format!("unknown form field `{other}`"))),
        }
    }
    if item.bytes.is_none() {
        return Err(ApiError::invalid("file", "the form has no `file` part"));
    }
    Ok(item)
}

/// Add content: JSON, or a multipart file upload (its extension gives the type unless
/// `content_type` says); 201, or 200 when the same content was there.
#[utoipa::path(post, path = "/api/v1/content", tag = "knowledge",
    request_body(content((NewContentRequest = "application/json"), (UploadForm = "multipart/form-data"))),
    responses((status = 201, description = "Created", body = ContentAdded), (status = 200, description = "Unchanged", body = ContentAdded), Errors))]
async fn add_content(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let is_multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut collection = None;
    let item = if is_multipart {
        let form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        multipart_item(form, &mut collection).await?
    } else {
        let Body(body) = Body::<NewContentRequest>::from_request(req, &()).await?;
        content_item(body, &mut collection)?
    };
    let kb = state.knowledge.collection_to_write(collection.as_deref().unwrap_or(DEFAULT_COLLECTION)).await?;
    let report = blocking(move || kb.add_content(vec![item], &Default::default())).await?;
    if let Some(e) = report.errors.first() {
        return Err(ApiError::bad_request(e.message.clone()));
    }
    let status = if report.added > 0 { StatusCode::CREATED } else { StatusCode::OK };
    let added = ContentAdded {
        content_id: report.document_ids.first().cloned(),
        document_ids: report.document_ids,
        chunks: report.chunks,
        unchanged: report.unchanged > 0,
        source: "hearth",
    };
    Ok((status, Json(added)).into_response())
}

fn collection_param(q: Vec<(String, String)>) -> Result<String, ApiError> {
    let q = Params(q);
    q.only(&["collection"])?;
    q.collection()
}

/// One document with its extracted text.
#[utoipa::path(get, path = "/api/v1/content/{id}", tag = "knowledge", params(("id" = String, Path), Collection),
    responses((status = 200, description = "Done", body = Document), Errors))]
async fn get_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Document>, ApiError> {
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let found = blocking(move || kb.document(&id)).await?;
    let (doc, text) = found.ok_or_else(|| ApiError::not_found("no content with that id"))?;
    Ok(Json(Document {
        content_id: doc.id,
        title: doc.title,
        content_type: doc.content_type,
        source: doc.source,
        key: doc.key,
        tags: doc.tags,
        content_hash: doc.content_hash,
        chunks: doc.chunk_count,
        created_at: doc.created_at,
        updated_at: doc.updated_at,
        text,
    }))
}

/// Remove a document.
#[utoipa::path(delete, path = "/api/v1/content/{id}", tag = "knowledge", params(("id" = String, Path), Collection),
    responses((status = 200, description = "Done", body = ContentDeleted), Errors))]
async fn delete_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<ContentDeleted>, ApiError> {
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let id2 = id.clone();
    if !blocking(move || kb.delete(&id2)).await? {
        return Err(ApiError::not_found("no content with that id"));
    }
    Ok(Json(ContentDeleted { deleted: true, content_id: id }))
}

/// Retrieval options of `knowledge_base` (a collection name, or an object).
pub struct RagOptions {
    pub collection: String,
    pub search: SearchOptions,
    /// Chunks chosen by id, sources before the retrieved ones.
    pub chunks: Vec<i64>,
}

pub fn rag_options(v: StringOr<KnowledgeBaseOptions>) -> Result<RagOptions, ApiError> {
    rag_options_at(v, "knowledge_base.")
}

/// `prefix` names the options' object in errors.
fn rag_options_at(v: StringOr<KnowledgeBaseOptions>, prefix: &str) -> Result<RagOptions, ApiError> {
    let mut search = SearchOptions { limit: 5, ..Default::default() };
    let o = match v {
        StringOr::String(collection) => return Ok(RagOptions { collection, search, chunks: Vec::new() }),
        StringOr::Other(o) => o,
    };
    search.limit = in_range(&format!("{prefix}limit"), o.limit, 0..=50)?.map_or(search.limit, |n| n as usize);
    let chunks = o.chunks.unwrap_or_default();
    if chunks.len() > 50 {
        return Err(ApiError::invalid(&format!("{prefix}chunks"), format!("`{prefix}chunks`: at most 50")));
    }
    if let Some(m) = o.mode {
        search.mode = parse_mode(&format!("{prefix}mode"), &m)?;
    }
    search.rerank = o.rerank.unwrap_or(false);
    Ok(RagOptions { collection: o.collection.unwrap_or_else(|| DEFAULT_COLLECTION.to_string()), search, chunks })
}

/// Turns a chat request into one grounded in retrieved sources: the last user message is the
/// question, replaced by the numbered sources and the question; the instructions join the
/// system message. Returns the sources, for the citations.
pub async fn augment(state: &AppState, req: &mut GenRequest, rag: RagOptions) -> Result<Vec<Hit>, ApiError> {
    let Prompt::Chat(messages) = &mut req.prompt else {
        return Err(ApiError::invalid("knowledge_base", "`knowledge_base` needs chat messages"));
    };
    let last_user = messages
        .iter()
        .rposition(|m| m["role"] == "user")
        .ok_or_else(|| ApiError::invalid("messages", "`knowledge_base` needs a user message to answer"))?;
    let question = messages[last_user]["content"].as_str().unwrap_or_default().to_string();
    let model_id = req
        .model
        .clone()
        .or(state.models.default_id().map(str::to_string))
        .ok_or_else(|| ApiError::invalid("model", "`model` is required"))?;
    let resident = state.models.get(&model_id, None).await?;
    let max_tokens = *req.max_tokens.get_or_insert(state.cfg.default_max_tokens.min(resident.context / 4));
    let counter = resident.clone();
    let count = move |t: &str| counter.model.tokenizer.encode(t, false).map_or(t.len() / 3, |ids| ids.len());
    let others: usize =
        messages.iter().enumerate().filter(|(i, _)| *i != last_user).map(|(_, m)| count(m["content"].as_str().unwrap_or_default())).sum();
    // Room for the chat template's own tokens.
    let budget = resident.context.saturating_sub(max_tokens + others + 64);
    let prompt = state.knowledge.prompt(&rag.collection, &question, rag.search, rag.chunks, budget, count).await?;
    messages[last_user]["content"] = json!(prompt.user);
    match messages.first_mut().filter(|m| m["role"] == "system") {
        Some(system) => system["content"] = json!(format!("{}\n\n{}", prompt.system, system["content"].as_str().unwrap_or_default())),
        None => messages.insert(0, json!({"role": "system", "content": prompt.system})),
    }
    Ok(prompt.sources)
}

/// Answer a question from a collection, with citations; server-sent events when `stream`.
#[utoipa::path(post, path = "/search/ask", tag = "knowledge", request_body = AskRequest, responses(
    (status = 200, description = "JSON, or server-sent events with `stream`", content((AskResponse = "application/json"), (AskEvent = "text/event-stream"))),
    ModelErrors,
))]
async fn ask(State(state): State<AppState>, Body(body): Body<AskRequest>) -> Result<Response, ApiError> {
    let question = match (body.question, body.query) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("query", "give `question` or `query`, not both")),
        (Some(q), None) | (None, Some(q)) if !q.trim().is_empty() => q,
        _ => return Err(ApiError::invalid("question", "`question` is required")),
    };
    let options =
        KnowledgeBaseOptions { collection: body.collection, limit: body.limit, mode: body.mode, rerank: body.rerank, chunks: body.chunks };
    let rag = rag_options_at(StringOr::Other(options), "")?;
    let stream = body.stream.unwrap_or(false);
    let max_tokens = in_range("max_tokens", body.max_tokens, 1..=1 << 16)?;
    let mut req = request::question(body.model, question.clone(), max_tokens, body.temperature)?;
    let sources = augment(&state, &mut req, rag).await?;
    let mut started = generation::start(&state, req, "ask").await?;
    let hits = || sources.iter().map(api::Hit::from).collect::<Vec<_>>();
    if !stream {
        let (choices, usage) = generation::collect(&mut started).await?;
        let answer = choices.into_iter().next().map(|c| c.text).unwrap_or_default();
        let citations = Citations::of(&answer, &sources);
        let usage = generation::usage(&usage);
        return Ok(
            Json(AskResponse { question, sources: hits(), model: started.resident.id.clone(), usage, citations, answer }).into_response()
        );
    }
    // Sources first, then tokens, then the answer's citations.
    let head = AskEvent::Sources { sources: hits() };
    let body = stream::unfold((started, String::new(), false), move |(mut started, mut text, done)| {
        let sources = sources.clone();
        async move {
            if done {
                return None;
            }
            match started.events.recv().await {
                Some(Event::Token { text: t, .. }) => {
                    text.push_str(&t);
                    Some((AskEvent::Token { text: t }, (started, text, false)))
                }
                Some(Event::Finished { usage, .. }) => {
                    let last = AskEvent::Done {
                        citations: Citations::of(&text, &sources),
                        answer: text.clone(),
                        usage: generation::usage(&usage),
                    };
                    Some((last, (started, text, true)))
                }
                failed @ (Some(Event::Failed(_)) | None) => {
                    Some((AskEvent::Error { message: generation::failure(failed).message }, (started, text, true)))
                }
            }
        }
    });
    let events = stream::iter([head])
        .chain(body)
        .map(|event| Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&event).unwrap_or_default())));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

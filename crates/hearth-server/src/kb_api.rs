//! The knowledge service's routes, built in: `/api/v1/health`, `/api/v1/search`,
//! `/api/v1/stats`, `/api/v1/content` (JSON or multipart upload) and `/search/ask` (answers
//! with citations, streaming or not); and retrieval for `/v1/chat/completions` requests that
//! name a collection in `knowledge_base`.

use std::convert::Infallible;

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use hearth_kb::answer;
use hearth_kb::{Filters, Hit, Mode, NewContent, SearchOptions};
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::fields::{describe, Fields, JsonObject};
use crate::generation::{self, usage_json};
use crate::knowledge::{blocking, hit_json, DEFAULT_COLLECTION};
use crate::request::{GenRequest, Prompt};
use crate::scheduler::Event;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/search", get(search))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/content", post(add_content))
        .route("/api/v1/content/{id}", get(get_content).delete(delete_content))
        .route("/api/v1/ingest", post(ingest))
        .route("/api/v1/jobs/{id}", get(job))
        .route("/search/ask", post(ask))
}

/// The most a client may raise the per-file limit of an ingest to: extraction holds a whole
/// file in memory.
const MAX_INGEST_FILE_BYTES: i64 = 1 << 30;

/// `POST /api/v1/ingest`: `{paths, sync?, tags?, include?, exclude?, max_bytes?,
/// json_text_field?, collection?}`, paths relative to the configured ingest folder. Answers
/// 202 with the job's id at once; the job runs in the background (`GET /api/v1/jobs/{id}`
/// shows its progress) and a restarted server resumes it.
async fn ingest(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let Some(root) = &state.cfg.kb_ingest_dir else {
        return Err(ApiError::bad_request("ingesting server files is disabled: start the server with --kb-ingest-dir"));
    };
    let root = root.canonicalize().map_err(|e| ApiError::internal(format!("the ingest folder {}: {e}", root.display())))?;
    let mut f = Fields::new(body);
    let paths =
        f.strings("paths")?.filter(|p| !p.is_empty()).ok_or_else(|| ApiError::invalid("paths", "`paths` must list at least one path"))?;
    let sync = f.bool("sync")?.unwrap_or(false);
    let defaults = hearth_kb::IngestOptions::default();
    let json_text_field = match f.string("json_text_field")? {
        Some(name) if name.is_empty() => return Err(ApiError::invalid("json_text_field", "`json_text_field` must name a field")),
        Some(name) => name,
        None => defaults.extract.json_text_field.clone(),
    };
    let options = hearth_kb::IngestOptions {
        tags: f.strings("tags")?.unwrap_or_default(),
        include: f.strings("include")?.unwrap_or_default(),
        exclude: f.strings("exclude")?.unwrap_or_default(),
        extract: hearth_kb::ExtractOptions {
            max_bytes: f.int("max_bytes", 1..=MAX_INGEST_FILE_BYTES)?.map_or(defaults.extract.max_bytes, |n| n as u64),
            json_text_field,
            ..defaults.extract
        },
        ..defaults
    };
    let collection = f.string("collection")?.unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
    f.finish()?;
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
            eprintln!("knowledge base job {id}: {e}");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": id, "collection": collection, "state": "running"}))).into_response())
}

async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    // Parsed here so a bad id gets the API's error body, not axum's plain-text rejection.
    let id: i64 = id.parse().map_err(|_| ApiError::invalid("id", format!("job ids are integers, got {id:?}")))?;
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let job = blocking(move || kb.store().job(id)).await?.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(
        json!({"job_id": job.id, "kind": job.kind, "state": job.state, "report": job.report, "created_at": job.created_at, "updated_at": job.updated_at}),
    ))
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

async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let collections = state.knowledge.collections();
    // Before any content there is nothing to open: the counts are zero.
    let (documents, chunks) = if collections.iter().any(|c| c == DEFAULT_COLLECTION) {
        let kb = state.knowledge.collection(DEFAULT_COLLECTION).await?;
        let stats = blocking(move || kb.stats()).await?;
        (stats.documents, stats.chunks)
    } else {
        (0, 0)
    };
    Ok(Json(json!({"status": "healthy", "source": "hearth", "documents": documents, "chunks": chunks, "collections": collections})))
}

async fn stats(State(state): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Result<Json<Value>, ApiError> {
    let q = Params(q);
    q.only(&["collection"])?;
    let kb = state.knowledge.collection(&q.collection()?).await?;
    let stats = blocking(move || kb.stats()).await?;
    let types: Map<String, Value> = stats.content_types.iter().map(|(t, n)| (t.clone(), json!(n))).collect();
    Ok(Json(json!({
        "total_documents": stats.documents, "total_chunks": stats.chunks, "embedded_chunks": stats.embedded_chunks,
        "sources": stats.sources, "bytes": stats.bytes, "content_types": types, "source": "hearth",
    })))
}

async fn search(State(state): State<AppState>, Query(q): Query<Vec<(String, String)>>) -> Result<Json<Value>, ApiError> {
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
    let kb = state.knowledge.collection(&q.collection()?).await?;
    let reranker = if opts.rerank { Some(state.knowledge.reranker().await?) } else { None };
    let q2 = query.clone();
    let hits = blocking(move || kb.search(&q2, &opts, reranker.as_deref())).await?;
    let results: Vec<Value> = hits.iter().map(hit_json).collect();
    Ok(Json(json!({"results": results, "query": query, "total": results.len(), "source": "hearth"})))
}

/// One posted item: `text` (or `content`), optional `id`, `title`, `content_type`, `tags`, `url`.
fn content_item(map: Map<String, Value>, collection: &mut Option<String>) -> Result<NewContent, ApiError> {
    let mut f = Fields::new(map);
    let text = match (f.string("text")?, f.string("content")?) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("content", "give `text` or `content`, not both")),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return Err(f.missing("text")),
    };
    let item = NewContent {
        id: f.string("id")?,
        title: f.string("title")?,
        content_type: f.string("content_type")?,
        tags: f.strings("tags")?.unwrap_or_default(),
        source: f.string("url")?,
        text,
        bytes: None,
    };
    if let Some(c) = f.string("collection")? {
        *collection = Some(c);
    }
    f.finish()?;
    Ok(item)
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

async fn add_content(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let is_multipart =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut collection = None;
    let item = if is_multipart {
        let form = Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        multipart_item(form, &mut collection).await?
    } else {
        let JsonObject(body) = JsonObject::from_request(req, &()).await?;
        content_item(body, &mut collection)?
    };
    let kb = state.knowledge.collection_to_write(collection.as_deref().unwrap_or(DEFAULT_COLLECTION)).await?;
    let report = blocking(move || kb.add_content(vec![item], &Default::default())).await?;
    if let Some(e) = report.errors.first() {
        return Err(ApiError::bad_request(e.message.clone()));
    }
    let status = if report.added > 0 { StatusCode::CREATED } else { StatusCode::OK };
    let id = report.document_ids.first().cloned();
    Ok((status, Json(json!({"content_id": id, "document_ids": report.document_ids, "chunks": report.chunks, "unchanged": report.unchanged > 0, "source": "hearth"}))).into_response())
}

fn collection_param(q: Vec<(String, String)>) -> Result<String, ApiError> {
    let q = Params(q);
    q.only(&["collection"])?;
    q.collection()
}

async fn get_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let found = blocking(move || kb.document(&id)).await?;
    let (doc, text) = found.ok_or_else(|| ApiError::not_found("no content with that id"))?;
    Ok(Json(json!({
        "content_id": doc.id, "title": doc.title, "content_type": doc.content_type, "source": doc.source, "key": doc.key,
        "tags": doc.tags, "content_hash": doc.content_hash, "chunks": doc.chunk_count, "created_at": doc.created_at,
        "updated_at": doc.updated_at, "text": text,
    })))
}

async fn delete_content(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let kb = state.knowledge.collection(&collection_param(q)?).await?;
    let id2 = id.clone();
    if !blocking(move || kb.delete(&id2)).await? {
        return Err(ApiError::not_found("no content with that id"));
    }
    Ok(Json(json!({"deleted": true, "content_id": id})))
}

/// Retrieval options of `knowledge_base` (a collection name, or an object).
pub struct RagOptions {
    pub collection: String,
    pub search: SearchOptions,
}

pub fn rag_options(v: Value) -> Result<RagOptions, ApiError> {
    let mut search = SearchOptions { limit: 5, ..Default::default() };
    match v {
        Value::String(collection) => Ok(RagOptions { collection, search }),
        Value::Object(map) => {
            let mut f = Fields::nested(map, "knowledge_base");
            let collection = f.string("collection")?.unwrap_or_else(|| DEFAULT_COLLECTION.to_string());
            search.limit = f.int("limit", 1..=50)?.map_or(search.limit, |n| n as usize);
            if let Some(m) = f.string("mode")? {
                search.mode = parse_mode("knowledge_base.mode", &m)?;
            }
            search.rerank = f.bool("rerank")?.unwrap_or(false);
            f.finish()?;
            Ok(RagOptions { collection, search })
        }
        other => Err(ApiError::invalid(
            "knowledge_base",
            format!("`knowledge_base` must be a collection name or an object, got {}", describe(&other)),
        )),
    }
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
    let prompt = state.knowledge.prompt(&rag.collection, &question, rag.search, budget, count).await?;
    messages[last_user]["content"] = json!(prompt.user);
    match messages.first_mut().filter(|m| m["role"] == "system") {
        Some(system) => system["content"] = json!(format!("{}\n\n{}", prompt.system, system["content"].as_str().unwrap_or_default())),
        None => messages.insert(0, json!({"role": "system", "content": prompt.system})),
    }
    Ok(prompt.sources)
}

pub fn citations_json(answer_text: &str, sources: &[Hit]) -> Value {
    let cited = answer::cite(answer_text, sources);
    json!({"citations": cited.citations, "unsupported": cited.unsupported, "invalid_markers": cited.invalid_markers})
}

/// What `/v1/chat/completions` adds under `knowledge_base`: the citations and the sources.
pub fn grounding_json(answer_text: &str, sources: &[Hit]) -> Value {
    let mut out = citations_json(answer_text, sources);
    out["sources"] = sources.iter().map(hit_json).collect();
    out
}

/// `POST /search/ask`: `{question, collection?, model?, limit?, mode?, rerank?, max_tokens?,
/// temperature?, stream?}`.
async fn ask(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Response, ApiError> {
    let mut f = Fields::new(body);
    let question = match (f.string("question")?, f.string("query")?) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("query", "give `question` or `query`, not both")),
        (Some(q), None) | (None, Some(q)) if !q.trim().is_empty() => q,
        _ => return Err(ApiError::invalid("question", "`question` is required")),
    };
    let mut rag = Map::new();
    for key in ["collection", "limit", "mode", "rerank"] {
        if let Some(v) = f.take(key) {
            rag.insert(key.to_string(), v);
        }
    }
    let model = f.string("model")?;
    let max_tokens = f.int("max_tokens", 1..=1 << 16)?.map(|n| n as usize);
    let temperature = f.number("temperature", |x| (0.0..=2.0).contains(&x), "a number in [0, 2]")?.unwrap_or(0.0) as f32;
    let stream = f.bool("stream")?.unwrap_or(false);
    f.finish()?;
    let rag = rag_options(Value::Object(rag))
        .map_err(|e| ApiError { param: e.param.map(|p| p.trim_start_matches("knowledge_base.").to_string()), ..e })?;
    let mut req = GenRequest {
        model,
        prompt: Prompt::Chat(vec![json!({"role": "user", "content": question})]),
        max_tokens,
        sampling: hearth_engine::SamplingParams { temperature, ..Default::default() },
        stop: Vec::new(),
        n: 1,
        logprobs: None,
        stream,
        include_usage: false,
    };
    let sources = augment(&state, &mut req, rag).await?;
    let mut started = generation::start(&state, req, "ask").await?;
    let sources_json: Vec<Value> = sources.iter().map(hit_json).collect();
    if !stream {
        let (choices, usage) = generation::collect(&mut started).await?;
        let text = choices.into_iter().next().map(|c| c.text).unwrap_or_default();
        let mut out = json!({"question": question, "answer": text, "sources": sources_json, "model": started.resident.id, "usage": usage_json(&usage)});
        merge(&mut out, citations_json(&text, &sources));
        return Ok(Json(out).into_response());
    }
    // Sources first, then tokens, then the answer's citations.
    let head = json!({"type": "sources", "sources": sources_json}).to_string();
    let body = stream::unfold((started, String::new(), false), move |(mut started, mut text, done)| {
        let sources = sources.clone();
        async move {
            if done {
                return None;
            }
            match started.events.recv().await {
                Some(Event::Token { text: t, .. }) => {
                    text.push_str(&t);
                    Some((json!({"type": "token", "text": t}).to_string(), (started, text, false)))
                }
                Some(Event::Finished { usage, .. }) => {
                    let mut last = json!({"type": "done", "answer": text, "usage": usage_json(&usage)});
                    merge(&mut last, citations_json(&text, &sources));
                    Some((last.to_string(), (started, text, true)))
                }
                Some(Event::Failed(m)) => Some((json!({"type": "error", "message": m}).to_string(), (started, text, true))),
                None => Some((json!({"type": "error", "message": "the model's scheduler stopped"}).to_string(), (started, text, true))),
            }
        }
    });
    let events = stream::iter([head]).chain(body).map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

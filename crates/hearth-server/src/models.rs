//! Which models exist, which are loaded, and loading them: on first use or preload, within a
//! memory budget (the least recently used idle model is unloaded to make room), each unloaded
//! again after its keep-alive. A loaded model gets its own scheduler thread and holds the
//! store's in-use lock so `hearth rm` will not delete it meanwhile. Encoder models (embeddings,
//! reranking) resolve the same way and stay loaded until unloaded, outside the budget.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use hearth_constrain::Grammars;
use hearth_embed::{EmbedPrecision, EmbedQueue, Embedder, QueueStats, Reranker};
use hearth_runtime::{Adapter, LoadOptions, LoadedModel, LoraAdapter, SamplingDefaults, Scheduler, LLAMA_CPP_SAMPLING};
use hearth_store::{InUseGuard, ModelRecord, ModelResolver, Store, StoreError};

use crate::config::ServerConfig;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::{Kind, Registration, Registry};

pub struct Resident {
    pub id: String,
    pub model: Arc<LoadedModel>,
    /// KV-cache tokens per sequence.
    pub context: usize,
    /// Sampling for what a request leaves out: the operator's settings, then the model's own,
    /// then llama.cpp's (every field set).
    pub sampling: SamplingDefaults,
    /// Shared by a base model and the adapters served on it: their sequences decode together.
    pub scheduler: Arc<Scheduler>,
    /// The weights', or for an adapter its deltas'.
    pub weight_bytes: usize,
    last_used: Mutex<Instant>,
    keep_alive: Option<Duration>,
    in_use: Option<Held>,
    /// The vocabulary made ready for constrained decoding, on the first request that asks
    /// (shared with the adapters served on the model).
    grammars: Arc<OnceLock<Result<Grammars, String>>>,
    /// Set for a registered LoRA adapter, which runs on its loaded base model.
    pub adapter: Option<ServedAdapter>,
}

/// A LoRA adapter made ready for its base model: requests naming it run its deltas, in the
/// same batch as the base model's other sequences.
pub struct ServedAdapter {
    pub adapter: Arc<Adapter>,
    pub base: Arc<Resident>,
}

impl Resident {
    /// The model's grammar compiler (built once, on first use); the error says why this
    /// model's vocabulary cannot be constrained.
    pub fn grammars(&self) -> Result<&Grammars, &str> {
        let built = self.grammars.get_or_init(|| {
            let model = &self.model;
            // The end of the output: the tokenizer's end token where it is one of the model's.
            let named = model.tokenizer.eos_token().and_then(|t| model.tokenizer.token_to_id(&t)).filter(|id| model.eos_ids.contains(id));
            let eos = named.or(model.eos_ids.first().copied()).ok_or("the model has no end-of-sequence token")?;
            Grammars::new(model.tokenizer.clone(), eos).map_err(|e| e.to_string())
        });
        built.as_ref().map_err(String::as_str)
    }

    /// Marks it used now (an adapter's base with it).
    pub fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        if let Some(a) = &self.adapter {
            a.base.touch();
        }
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn idle(&self) -> bool {
        self.scheduler.gauges().queued.load(Relaxed) == 0 && self.scheduler.gauges().running.load(Relaxed) == 0
    }

    /// Weights plus the KV caches held now; for an adapter, its deltas (the caches are its base's).
    pub fn memory_bytes(&self) -> usize {
        if self.adapter.is_some() {
            return self.weight_bytes;
        }
        let g = self.scheduler.gauges();
        self.weight_bytes + g.kv_running_bytes.load(Relaxed) + g.kv_prompt_cache_bytes.load(Relaxed)
    }
}

/// The store model a resident was loaded from, held so it is not removed meanwhile.
struct Held {
    name: String,
    _guard: InUseGuard,
}

/// What an encoder model is for; a request for the other use is refused.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    Embedding,
    Reranker,
}

impl EncoderKind {
    fn describe(self) -> &'static str {
        match self {
            EncoderKind::Embedding => "an embedding model",
            EncoderKind::Reranker => "a reranker",
        }
    }
}

pub enum Encoder {
    /// Behind a queue, so concurrent requests run as one batch.
    Embedding(EmbedQueue),
    Reranker(Box<Reranker>),
}

impl Encoder {
    /// Loads `path` as `kind` (an embedder's products in `precision`); hearth-embed refuses a
    /// directory that is not such a model.
    fn load(kind: EncoderKind, path: &Path, precision: EmbedPrecision) -> hearth_embed::Result<Encoder> {
        Ok(match kind {
            EncoderKind::Embedding => Encoder::Embedding(EmbedQueue::new(Arc::new(Embedder::load_with(path, precision)?))?),
            EncoderKind::Reranker => Encoder::Reranker(Box::new(Reranker::load(path)?)),
        })
    }

    fn kind(&self) -> EncoderKind {
        match self {
            Encoder::Embedding(_) => EncoderKind::Embedding,
            Encoder::Reranker(_) => EncoderKind::Reranker,
        }
    }
}

pub struct ResidentEncoder {
    id: String,
    pub encoder: Encoder,
    in_use: Option<Held>,
}

/// Where a model id points.
pub struct Located {
    pub path: PathBuf,
    pub record: Option<ModelRecord>,
    /// A LoRA adapter directory applied on top of the weights at `path`.
    pub adapter: Option<PathBuf>,
}

pub struct Models {
    cfg: Arc<ServerConfig>,
    store: Option<Arc<Store>>,
    pub registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    pub shutdown: Arc<AtomicBool>,
    resident: Mutex<HashMap<String, Arc<Resident>>>,
    encoders: Mutex<HashMap<String, Arc<ResidentEncoder>>>,
    loading: Mutex<HashSet<String>>,
    /// Loads run one at a time, so the budget check sees every model already loaded.
    load_lock: tokio::sync::Mutex<()>,
}

impl Models {
    pub fn new(cfg: Arc<ServerConfig>, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Self {
        // Resolving a model never touches the network; downloads happen in `POST
        // /api/models/pull`, or on first use with `--auto-pull`.
        let store = Store::open(&cfg.home, cfg.hub.clone()).ok().map(Arc::new);
        Models {
            cfg,
            store,
            registry,
            metrics,
            shutdown: Arc::new(AtomicBool::new(false)),
            resident: Mutex::default(),
            encoders: Mutex::default(),
            loading: Mutex::default(),
            load_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn residents_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Resident>>> {
        self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn resident(&self, id: &str) -> Option<Arc<Resident>> {
        self.residents_map().get(id).cloned()
    }

    fn encoders_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ResidentEncoder>>> {
        self.encoders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The store, for pulls and removals.
    pub fn store(&self) -> Result<Arc<Store>, ApiError> {
        self.store.clone().ok_or_else(|| ApiError::internal(format!("the model store at {} could not be opened", self.cfg.home.display())))
    }

    /// Whether `id` is loaded, as a chat model or an encoder.
    pub fn is_loaded(&self, id: &str) -> bool {
        self.resident(id).is_some() || self.encoders_map().contains_key(id)
    }

    /// What a loaded embedding model declares (dimension, token limit, pooling, prompts).
    pub fn embedding_info(&self, id: &str) -> Option<hearth_embed::EmbedderInfo> {
        match &self.encoders_map().get(id)?.encoder {
            Encoder::Embedding(queue) => Some(queue.embedder().info()),
            Encoder::Reranker(_) => None,
        }
    }

    /// Queue counters of every loaded embedding model, by id.
    pub fn embedding_stats(&self) -> Vec<(String, QueueStats)> {
        let mut all: Vec<_> = self
            .encoders_map()
            .values()
            .filter_map(|r| match &r.encoder {
                Encoder::Embedding(queue) => Some((r.id.clone(), queue.stats())),
                Encoder::Reranker(_) => None,
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn residents(&self) -> Vec<Arc<Resident>> {
        let mut all: Vec<_> = self.residents_map().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn is_loading(&self, id: &str) -> bool {
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// The id used when a chat-backend request names no model.
    pub fn default_id(&self) -> Option<&str> {
        self.cfg.models.first().map(|m| m.id.as_str())
    }

    /// Every id a client may use: configured models, registrations and the store's models.
    pub fn known_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.cfg.models.iter().map(|m| m.id.clone()).collect();
        ids.extend(self.registry.list(None).unwrap_or_default().into_iter().map(|r| r.name));
        if let Some(store) = &self.store {
            ids.extend(store.list().unwrap_or_default().into_iter().map(|r| r.name));
        }
        ids.extend(self.residents().iter().map(|r| r.id.clone()));
        let mut seen = HashSet::new();
        ids.retain(|id| seen.insert(id.clone()));
        ids
    }

    pub fn is_configured(&self, id: &str) -> bool {
        self.cfg.models.iter().any(|m| m.id == id)
    }

    /// Finds what `id` loads, without loading it (404 if nothing). A registered LoRA adapter
    /// loads its base model's weights with the adapter applied on top.
    pub fn locate(&self, id: &str) -> Result<Located, ApiError> {
        if let Some(m) = self.cfg.models.iter().find(|m| m.id == id) {
            return self.resolve(&m.spec, true)?.ok_or_else(|| ApiError::model_not_found(id));
        }
        match self.registry.get(id)? {
            Some(r) if r.kind == Kind::Lora => {
                let base = r.base_model.unwrap_or_default();
                let located =
                    self.locate(&base).map_err(|e| ApiError { message: format!("`{id}`'s base model `{base}`: {}", e.message), ..e })?;
                if located.adapter.is_some() {
                    return Err(ApiError::invalid("model", format!("`{id}`'s base model `{base}` is itself an adapter")));
                }
                // The registry keeps the adapter file; its settings sit beside it.
                let adapter = r.adapter_path.map(PathBuf::from).and_then(|f| f.parent().map(Path::to_path_buf));
                Ok(Located { adapter, ..located })
            }
            Some(r) => match r.model_id {
                Some(m) => self.resolve(&m, true)?,
                None => None,
            }
            .ok_or_else(|| ApiError::model_not_found(id)),
            None => self.resolve(id, false)?.ok_or_else(|| ApiError::model_not_found(id)),
        }
    }

    /// A model name, alias or repo id (from the store or `$HEARTH_HOME/models`), or a path
    /// when `allow_path` (only for ids the operator configured, never from a request).
    pub fn resolve(&self, spec: &str, allow_path: bool) -> Result<Option<Located>, ApiError> {
        let found = self
            .resolver(allow_path)
            .find(spec)
            .map_err(|e| ApiError::internal(format!("the cached model `{spec}` cannot be used: {e}")))?;
        Ok(found.map(|f| Located { path: f.path, record: f.record, adapter: None }))
    }

    fn resolver(&self, allow_paths: bool) -> ModelResolver<'_> {
        ModelResolver { store: self.store.as_deref(), allow_paths }
    }

    /// Like `locate`, but with `--auto-pull` a Hub model missing from the cache is downloaded
    /// first (a configured id pulls its spec; a request's id must name a repo or an alias).
    async fn locate_or_pull(&self, id: &str) -> Result<Located, ApiError> {
        let missing = match self.locate(id) {
            Err(e) if e.status == StatusCode::NOT_FOUND && self.cfg.auto_pull => e,
            found => return found,
        };
        let spec = self.cfg.models.iter().find(|m| m.id == id).map_or(id, |m| m.spec.as_str());
        let Some(req) = self.resolver(false).pull_request(spec) else { return Err(missing) };
        let store = self.store()?;
        tracing::info!(model = spec, "not in the cache: pulling it from the Hub");
        tokio::task::spawn_blocking(move || store.pull(&req, &|_| {}))
            .await
            .map_err(|e| ApiError::internal(format!("the pull stopped: {e}")))?
            .map_err(|e| match e {
                StoreError::NotFoundOnHub { .. } => ApiError { message: format!("The model `{id}` does not exist: {e}"), ..missing },
                e => ApiError::bad_gateway(format!("pulling `{spec}` failed: {e}")),
            })?;
        self.locate(id)
    }

    /// The resident model `id`, loading it first if needed; a registered adapter is made ready
    /// on its base model, which is loaded first if needed.
    pub async fn get(&self, id: &str, keep_alive: Option<Duration>) -> Result<Arc<Resident>, ApiError> {
        if let Some(r) = self.resident(id) {
            r.touch();
            return Ok(r);
        }
        if !self.is_configured(id) {
            if let Some(reg) = self.registry.get(id)?.filter(|r| r.kind == Kind::Lora) {
                return self.get_adapter(reg, keep_alive).await;
            }
        }
        let located = self.locate_or_pull(id).await?;
        let _one_at_a_time = self.load_lock.lock().await;
        if let Some(r) = self.resident(id) {
            return Ok(r);
        }
        self.make_room(disk_bytes(&located.path), None)?;
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_string());
        let result = self.load(id, located, keep_alive.or(self.cfg.keep_alive)).await;
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        let resident = Arc::new(result?);
        self.residents_map().insert(id.to_string(), resident.clone());
        Ok(resident)
    }

    /// A registered adapter on its base model (loaded first if needed). Registration checked
    /// that it loads there, so a failure now means its files changed since: a 500 that says so.
    async fn get_adapter(&self, reg: Registration, keep_alive: Option<Duration>) -> Result<Arc<Resident>, ApiError> {
        let (id, base_id) = (reg.name.clone(), reg.base_model.clone().unwrap_or_default());
        let base = Box::pin(self.get(&base_id, None))
            .await
            .map_err(|e| ApiError { message: format!("`{id}`'s base model `{base_id}`: {}", e.message), ..e })?;
        if base.adapter.is_some() {
            return Err(ApiError::invalid("model", format!("`{id}`'s base model `{base_id}` is itself an adapter")));
        }
        let _one_at_a_time = self.load_lock.lock().await;
        if let Some(r) = self.resident(&id) {
            return Ok(r);
        }
        let file = PathBuf::from(reg.adapter_path.clone().unwrap_or_default());
        self.make_room(disk_bytes(&file), Some(&base_id))?;
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
        let (model, given) = (base.model.clone(), reg.given_scale());
        let loaded =
            tokio::task::spawn_blocking(move || LoraAdapter::load_scaled(&file, given).and_then(|l| model.model.adapter(&l))).await;
        self.loading.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let adapter = loaded.map_err(|e| ApiError::internal(format!("loading failed: {e}")))?.map_err(|e| {
            ApiError::internal(format!("the adapter `{id}` no longer loads on `{base_id}`; its files changed since it was registered: {e}"))
        })?;
        let adapter = Arc::new(adapter);
        let resident = Arc::new(Resident {
            id: id.clone(),
            model: base.model.clone(),
            context: base.context,
            sampling: base.sampling,
            scheduler: base.scheduler.clone(),
            weight_bytes: adapter.bytes(),
            last_used: Mutex::new(Instant::now()),
            keep_alive: keep_alive.or(self.cfg.keep_alive),
            in_use: None,
            grammars: base.grammars.clone(),
            adapter: Some(ServedAdapter { adapter, base }),
        });
        tracing::info!(model = id, base = base_id, bytes = resident.weight_bytes, "adapter ready on its base model");
        let mut map = self.residents_map();
        map.insert(id, resident.clone());
        drop_orphans(&mut map);
        Ok(resident)
    }

    /// The encoder `id`, loading it (as `kind`) first if needed.
    pub async fn encoder(&self, id: &str, kind: EncoderKind) -> Result<Arc<ResidentEncoder>, ApiError> {
        let loaded = self.encoders_map().get(id).cloned();
        let resident = match loaded {
            Some(r) => r,
            None => self.load_encoder(id, kind).await?,
        };
        if resident.encoder.kind() != kind {
            return Err(ApiError::invalid("model", format!("`{id}` is {}, not {}", resident.encoder.kind().describe(), kind.describe())));
        }
        Ok(resident)
    }

    async fn load_encoder(&self, id: &str, kind: EncoderKind) -> Result<Arc<ResidentEncoder>, ApiError> {
        let located = self.locate_or_pull(id).await?;
        let _one_at_a_time = self.load_lock.lock().await;
        if let Some(r) = self.encoders_map().get(id) {
            return Ok(r.clone());
        }
        let in_use = self.hold(&located)?;
        let (path, precision) = (located.path.clone(), self.cfg.embed_precision);
        let encoder = tokio::task::spawn_blocking(move || Encoder::load(kind, &path, precision))
            .await
            .map_err(|e| ApiError::internal(format!("loading failed: {e}")))?
            .map_err(|e| ApiError {
                code: Some("model_not_supported"),
                ..ApiError::invalid("model", format!("`{id}` cannot be used as {}: {e}", kind.describe()))
            })?;
        let resident = Arc::new(ResidentEncoder { id: id.to_string(), encoder, in_use });
        self.encoders_map().insert(id.to_string(), resident.clone());
        Ok(resident)
    }

    /// Takes the store's in-use lock on a store model for as long as it stays loaded.
    fn hold(&self, located: &Located) -> Result<Option<Held>, ApiError> {
        match (&self.store, &located.record) {
            (Some(store), Some(record)) => {
                let guard = store.hold(record)?;
                Ok(Some(Held { name: record.name.clone(), _guard: guard }))
            }
            _ => Ok(None),
        }
    }

    async fn load(&self, id: &str, located: Located, keep_alive: Option<Duration>) -> Result<Resident, ApiError> {
        let in_use = self.hold(&located)?;
        let path = located.path.clone();
        let opts = LoadOptions { device: self.cfg.device, ..Default::default() };
        let model = tokio::task::spawn_blocking(move || LoadedModel::load_with(&path, opts))
            .await
            .map_err(|e| ApiError::internal(format!("loading failed: {e}")))?
            .map_err(|e| {
                // The engine's error decides the status (an unsupported architecture is a 400).
                let e = ApiError::from(e);
                ApiError { message: format!("loading {} failed: {}", located.path.display(), e.message), ..e }
            })?;
        let weight_bytes = model.model.weight_bytes();
        let scheduler =
            Scheduler::start(id, Arc::new(model), self.cfg.scheduler.clone(), self.cfg.queue, self.metrics.clone(), self.shutdown.clone())
                .map_err(|e| ApiError::internal(format!("starting the scheduler failed: {e}")))?;
        let scheduler = Arc::new(scheduler);
        // The thread holds its own reference; this one serves tokenization and templates.
        let model = scheduler.model().clone();
        let context = scheduler.context();
        let sampling = self.cfg.sampling.or(model.sampling).or(LLAMA_CPP_SAMPLING);
        tracing::info!(
            model = id,
            path = %located.path.display(),
            context,
            temperature = sampling.temperature,
            top_p = sampling.top_p,
            top_k = sampling.top_k,
            min_p = sampling.min_p,
            repetition_penalty = sampling.repetition_penalty,
            "model loaded; sampling defaults for what requests leave out"
        );
        Ok(Resident {
            id: id.to_string(),
            model,
            context,
            sampling,
            scheduler,
            weight_bytes,
            last_used: Mutex::new(Instant::now()),
            keep_alive,
            in_use,
            grammars: Arc::default(),
            adapter: None,
        })
    }

    /// Unloads least recently used idle models until `incoming` more bytes fit the budget,
    /// never `keep` (the base model an adapter is being made ready on).
    fn make_room(&self, incoming: u64, keep: Option<&str>) -> Result<(), ApiError> {
        let Some(budget) = self.cfg.memory_budget_bytes else { return Ok(()) };
        loop {
            let mut map = self.residents_map();
            let used: u64 = map.values().map(|r| r.weight_bytes as u64).sum();
            if used + incoming <= budget {
                return Ok(());
            }
            let victim =
                map.values().filter(|r| r.idle() && Some(r.id.as_str()) != keep).min_by_key(|r| r.last_used()).map(|r| r.id.clone());
            match victim {
                Some(id) => {
                    map.remove(&id);
                    drop_orphans(&mut map);
                }
                None if map.is_empty() => {
                    return Err(ApiError::bad_request(format!(
                        "the model needs {} MiB, more than the whole memory budget of {} MiB",
                        incoming >> 20,
                        budget >> 20
                    )))
                }
                None => return Err(ApiError::unavailable("the memory budget is taken by models that are busy; retry shortly")),
            }
        }
    }

    /// `false` if it was not loaded. Running requests finish first: they hold the model.
    pub fn unload(&self, id: &str) -> bool {
        let chat = {
            let mut map = self.residents_map();
            let removed = map.remove(id).is_some();
            drop_orphans(&mut map);
            removed
        };
        self.encoders_map().remove(id).is_some() || chat
    }

    /// Unloads whatever was loaded from these store models (removed from under the server).
    pub fn unload_store_models(&self, names: &[String]) {
        let removed = |held: &Option<Held>| held.as_ref().is_some_and(|h| names.contains(&h.name));
        let mut map = self.residents_map();
        map.retain(|_, r| !removed(&r.in_use));
        drop_orphans(&mut map);
        drop(map);
        self.encoders_map().retain(|_, r| !removed(&r.in_use));
    }

    /// Unloads idle models whose keep-alive has passed.
    pub fn expire_idle(&self) {
        let now = Instant::now();
        let mut map = self.residents_map();
        map.retain(|_, r| !(r.idle() && r.keep_alive.is_some_and(|k| now.duration_since(r.last_used()) >= k)));
        drop_orphans(&mut map);
    }
}

/// Removes the adapters whose base model is no longer resident: each was made for that
/// loaded model and holds it.
fn drop_orphans(map: &mut HashMap<String, Arc<Resident>>) {
    let bases: Vec<Arc<Resident>> = map.values().filter(|r| r.adapter.is_none()).cloned().collect();
    map.retain(|_, r| r.adapter.as_ref().is_none_or(|a| bases.iter().any(|b| Arc::ptr_eq(b, &a.base))));
}

/// Bytes a model takes on disk (a file, or a directory's files).
fn disk_bytes(path: &Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.filter_map(|e| std::fs::metadata(e.ok()?.path()).ok()).filter(|m| m.is_file()).map(|m| m.len()).sum(),
        Err(_) => std::fs::metadata(path).map_or(0, |m| m.len()),
    }
}

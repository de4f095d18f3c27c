//! `hearth serve`'s settings. Each can be a flag, an environment variable or a key of the TOML
//! config file (`--config`, else `$HEARTH_HOME/server.toml` if present), in that precedence.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use hearth_store::HubConfig;
use serde::Deserialize;

use hearth_runtime::{DeviceChoice, RuntimeConfig, SamplingDefaults, SamplingParams};

#[derive(Args, Deserialize, Default, Debug, Clone)]
#[serde(default, deny_unknown_fields)]
pub struct ServeOptions {
    /// TOML file with any of these settings (keys as the long flags, with underscores).
    #[arg(long, env = "HEARTH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "HEARTH_HOST")]
    pub host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 8080].
    #[arg(long, env = "HEARTH_PORT")]
    pub port: Option<u16>,
    /// A model to serve: `name`, or `id=path-or-name` to serve it under another id. The first
    /// is the default for routes that name none. Repeatable (or comma-separated).
    #[arg(long = "model", short, env = "HEARTH_MODELS", value_delimiter = ',')]
    pub model: Vec<String>,
    /// Load the configured models at start instead of on first use.
    #[arg(long)]
    pub preload: bool,
    /// Download a model from the Hub (`HF_ENDPOINT`) the first time a request or the
    /// configuration names one that is not in the cache [default: only `POST /api/models/pull`
    /// downloads].
    #[arg(long, env = "HEARTH_AUTO_PULL")]
    pub auto_pull: bool,
    /// API key clients must send (`Authorization: Bearer …`). Repeatable.
    #[arg(long = "api-key", env = "HEARTH_API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<String>,
    /// File with one API key per line, optionally followed by its scope (`admin` or
    /// `inference`).
    #[arg(long, env = "HEARTH_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// API key that may also manage the server: `/admin/*`, pulls and deletions, the hub,
    /// ingestion. Once one is set, the other keys only run inference. Repeatable.
    #[arg(long = "admin-api-key", env = "HEARTH_ADMIN_API_KEY", value_delimiter = ',', hide_env_values = true)]
    pub admin_api_key: Vec<String>,
    /// A directory whose files registrations may name (adapters, models), besides
    /// $HEARTH_HOME and the exports directory. Repeatable.
    #[arg(long = "allow-path", env = "HEARTH_ALLOW_PATHS", value_delimiter = ',')]
    pub allow_path: Vec<PathBuf>,
    /// Listen on a non-loopback address even without an API key.
    #[arg(long)]
    pub allow_unauthenticated_remote: bool,
    /// Browser origins allowed by CORS (`*` for any). Repeatable.
    #[arg(long = "cors-origin", env = "HEARTH_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Largest request body in bytes [default: 4 MiB].
    #[arg(long, env = "HEARTH_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Memory for resident models' weights in MiB; the least recently used idle model is
    /// unloaded to make room [default: unlimited].
    #[arg(long, env = "HEARTH_MEMORY_BUDGET_MB")]
    pub memory_budget_mb: Option<u64>,
    /// Seconds an idle model stays loaded [default: forever].
    #[arg(long, env = "HEARTH_KEEP_ALIVE")]
    pub keep_alive: Option<u64>,
    /// Where models run: cpu, cuda[:N] or metal[:N] (GPUs in builds with that feature)
    /// [default: cpu].
    #[arg(long, env = "HEARTH_DEVICE")]
    pub device: Option<String>,
    /// Most sequences decoding together per model [default: 16].
    #[arg(long, env = "HEARTH_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// Requests waiting per model beyond the batch before a 429 [default: 64].
    #[arg(long, env = "HEARTH_QUEUE")]
    pub queue: Option<usize>,
    /// Prompt tokens prefilled per scheduler step [default: 256].
    #[arg(long, env = "HEARTH_PREFILL_CHUNK")]
    pub prefill_chunk: Option<usize>,
    /// Context per sequence, capped at the model's [default: 4096].
    #[arg(long, env = "HEARTH_CTX")]
    pub ctx: Option<usize>,
    /// Prompt-cache size per model in MiB; 0 disables it [default: 1024].
    #[arg(long, env = "HEARTH_PROMPT_CACHE_MB")]
    pub prompt_cache_mb: Option<usize>,
    /// Sampling temperature for requests that give none [default: the model's, else 0.8].
    #[arg(long, env = "HEARTH_TEMP")]
    pub temp: Option<f32>,
    /// top_p for requests that give none [default: the model's, else 0.95].
    #[arg(long, env = "HEARTH_TOP_P")]
    pub top_p: Option<f32>,
    /// top_k for requests that give none; 0 disables [default: the model's, else 40].
    #[arg(long, env = "HEARTH_TOP_K")]
    pub top_k: Option<usize>,
    /// min_p for requests that give none [default: the model's, else 0.05].
    #[arg(long, env = "HEARTH_MIN_P")]
    pub min_p: Option<f32>,
    /// repetition_penalty for requests that give none [default: the model's, else 1 (off)].
    #[arg(long, env = "HEARTH_REPEAT_PENALTY")]
    pub repeat_penalty: Option<f32>,
    /// Tokens generated when a request gives no `max_tokens` [default: 512].
    #[arg(long, env = "HEARTH_DEFAULT_MAX_TOKENS")]
    pub default_max_tokens: Option<usize>,
    /// How models write tool calls: hermes, llama3, mistral, mistral-args, phi4 or generic
    /// [default: read from each model's chat template].
    #[arg(long, env = "HEARTH_TOOL_FORMAT")]
    pub tool_format: Option<String>,
    /// SQLite file of `/admin` registrations [default: $HEARTH_HOME/server.db].
    #[arg(long, env = "HEARTH_DB")]
    pub db: Option<PathBuf>,
    /// Where the hub writes finished fine-tunes' bundles and `POST /admin/scan` looks for
    /// bundles [default: $HEARTH_HOME/exports].
    #[arg(long, env = "HEARTH_EXPORTS_DIR")]
    pub exports_dir: Option<PathBuf>,
    /// Fine-tuning jobs that train at once [default: 1].
    #[arg(long, env = "HEARTH_TRAIN_JOBS")]
    pub train_jobs: Option<usize>,
    /// Leave finished fine-tunes unregistered (by default each is registered as its name).
    #[arg(long, env = "HEARTH_NO_AUTO_REGISTER")]
    pub no_auto_register: bool,
    /// Largest dataset upload in MiB [default: 256].
    #[arg(long, env = "HEARTH_MAX_DATASET_MB")]
    pub max_dataset_mb: Option<usize>,
    /// Embedding model of the knowledge-base collections [default: minilm].
    #[arg(long, env = "HEARTH_KB_EMBEDDING_MODEL")]
    pub kb_embedding_model: Option<String>,
    /// Cross-encoder for knowledge-base searches that ask for `rerank`.
    #[arg(long, env = "HEARTH_KB_RERANK_MODEL")]
    pub kb_rerank_model: Option<String>,
    /// How embedding encoders multiply: `float` (bf16 operands where the CPU has bf16 dot
    /// products) or `int8` (8-bit weights and activations, integer products: faster than
    /// float on the x86 CPUs measured, all-MiniLM 1.4× on AVX-512 VNNI and 1.1–1.7× on plain
    /// AVX2; vectors within cosine 0.999) [default: float].
    #[arg(long, env = "HEARTH_EMBED_PRECISION")]
    pub embed_precision: Option<String>,
    /// Folder whose files `POST /api/v1/ingest` may ingest (paths relative to it) [default:
    /// none: the route is disabled].
    #[arg(long, env = "HEARTH_KB_INGEST_DIR")]
    pub kb_ingest_dir: Option<PathBuf>,
    /// Seconds in-flight requests get to finish at shutdown before they are cancelled
    /// [default: 10].
    #[arg(long, env = "HEARTH_SHUTDOWN_TIMEOUT")]
    pub shutdown_timeout: Option<u64>,
}

/// The command line's list where it gives one, else the file's.
fn or_vec<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// An API key and what it may do: run inference, or manage the server too (`admin`).
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub key: String,
    pub admin: bool,
}

/// A configured model: the id clients use and what it resolves from.
#[derive(Clone, Debug)]
pub struct ModelEntry {
    pub id: String,
    pub spec: String,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub models: Vec<ModelEntry>,
    pub preload: bool,
    pub auto_pull: bool,
    pub api_keys: Vec<ApiKey>,
    /// Where registrations may point: $HEARTH_HOME, the exports directory, --allow-path.
    pub allowed_roots: Vec<PathBuf>,
    pub cors_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub memory_budget_bytes: Option<u64>,
    pub keep_alive: Option<Duration>,
    pub device: DeviceChoice,
    pub scheduler: RuntimeConfig,
    /// Requests waiting per model beyond the running batch before new ones get a 429.
    pub queue: usize,
    pub default_max_tokens: usize,
    /// The tool-call format of every model; `None`: each model's, from its chat template.
    pub tool_format: Option<hearth_tools::Format>,
    /// Sampling settings the operator gave, for what a request leaves out (before the model's
    /// own and llama.cpp's).
    pub sampling: SamplingDefaults,
    /// The store's home: models by name, and the default database.
    pub home: PathBuf,
    pub db: PathBuf,
    pub exports_dir: PathBuf,
    pub train_jobs: usize,
    pub auto_register: bool,
    pub max_dataset_bytes: usize,
    pub kb_embedding_model: String,
    pub kb_rerank_model: Option<String>,
    pub kb_ingest_dir: Option<PathBuf>,
    pub embed_precision: hearth_embed::EmbedPrecision,
    pub shutdown_timeout: Duration,
    /// Where `POST /api/models/pull` downloads from (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`).
    pub hub: HubConfig,
}

impl ServeOptions {
    /// Fills what flags and environment left unset from the config file, then defaults.
    pub fn resolve(self, home: &Path) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => Some(path.clone()),
            None => Some(home.join("server.toml")).filter(|p| p.exists()),
        };
        let file: ServeOptions = match file {
            None => ServeOptions::default(),
            Some(path) => {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
            }
        };
        // (key, scope given): keys without a scope are admin keys unless admin keys exist.
        let mut keys: Vec<(String, Option<bool>)> = or_vec(self.api_key, file.api_key).into_iter().map(|k| (k, None)).collect();
        keys.extend(or_vec(self.admin_api_key, file.admin_api_key).into_iter().map(|k| (k, Some(true))));
        if let Some(path) = self.api_key_file.or(file.api_key_file) {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading the API key file {}", path.display()))?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let mut parts = line.split_whitespace();
                let key = parts.next().unwrap_or_default().to_string();
                let scope = match parts.next() {
                    None => None,
                    Some("admin") => Some(true),
                    Some("inference") => Some(false),
                    Some(other) => bail!("{}: the scope {other:?} is not admin or inference", path.display()),
                };
                keys.push((key, scope));
            }
        }
        keys.retain(|(k, _)| !k.is_empty());
        let scoped = keys.iter().any(|(_, s)| *s == Some(true));
        let api_keys: Vec<ApiKey> = keys.into_iter().map(|(key, scope)| ApiKey { key, admin: scope.unwrap_or(!scoped) }).collect();
        let host = self.host.or(file.host).unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if api_keys.is_empty() && !host.is_loopback() && !(self.allow_unauthenticated_remote || file.allow_unauthenticated_remote) {
            bail!("refusing to listen on {host} without an API key: set --api-key, or pass --allow-unauthenticated-remote");
        }
        let models = or_vec(self.model, file.model)
            .into_iter()
            .map(|m| match m.split_once('=') {
                Some((id, spec)) => ModelEntry { id: id.to_string(), spec: spec.to_string() },
                None => ModelEntry { id: m.clone(), spec: m },
            })
            .collect::<Vec<_>>();
        if let Some(m) = models.iter().find(|m| m.id.is_empty() || m.spec.is_empty()) {
            bail!("--model {}={}: both the id and the model must be given", m.id, m.spec);
        }
        let positive = |name: &str, v: usize| if v == 0 { bail!("--{name} must be at least 1") } else { Ok(v) };
        let max_batch = positive("max-batch", self.max_batch.or(file.max_batch).unwrap_or(16))?;
        Ok(ServerConfig {
            addr: SocketAddr::new(host, self.port.or(file.port).unwrap_or(8080)),
            models,
            preload: self.preload || file.preload,
            auto_pull: self.auto_pull || file.auto_pull,
            api_keys,
            allowed_roots: {
                let exports = self.exports_dir.clone().or(file.exports_dir.clone()).unwrap_or_else(|| home.join("exports"));
                [home.to_path_buf(), exports].into_iter().chain(or_vec(self.allow_path, file.allow_path)).collect()
            },
            cors_origins: or_vec(self.cors_origin, file.cors_origin),
            max_body_bytes: positive("max-body-bytes", self.max_body_bytes.or(file.max_body_bytes).unwrap_or(4 << 20))?,
            memory_budget_bytes: self.memory_budget_mb.or(file.memory_budget_mb).map(|mb| mb << 20),
            keep_alive: self.keep_alive.or(file.keep_alive).map(Duration::from_secs),
            device: match self.device.or(file.device) {
                Some(d) => d.parse().map_err(|e: String| anyhow::anyhow!("--device: {e}"))?,
                None => DeviceChoice::Cpu,
            },
            scheduler: RuntimeConfig {
                max_batch,
                prefill_chunk: positive("prefill-chunk", self.prefill_chunk.or(file.prefill_chunk).unwrap_or(256))?,
                context: positive("ctx", self.ctx.or(file.ctx).unwrap_or(4096))?,
                prompt_cache_bytes: self.prompt_cache_mb.or(file.prompt_cache_mb).unwrap_or(1024) << 20,
            },
            queue: self.queue.or(file.queue).unwrap_or(64),
            sampling: {
                let sampling = SamplingDefaults {
                    temperature: self.temp.or(file.temp),
                    top_p: self.top_p.or(file.top_p),
                    top_k: self.top_k.or(file.top_k),
                    min_p: self.min_p.or(file.min_p),
                    repetition_penalty: self.repeat_penalty.or(file.repeat_penalty),
                };
                // Checked now: a bad default would fail every request later.
                SamplingParams::from_settings(sampling).validate().map_err(|e| anyhow::anyhow!("the default sampling settings: {e}"))?;
                sampling
            },
            tool_format: match self.tool_format.or(file.tool_format) {
                None => None,
                Some(name) => Some(hearth_tools::Format::from_name(&name).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--tool-format must be one of {}, got {name:?}",
                        hearth_tools::Format::names().collect::<Vec<_>>().join(", ")
                    )
                })?),
            },
            default_max_tokens: positive("default-max-tokens", self.default_max_tokens.or(file.default_max_tokens).unwrap_or(512))?,
            home: home.to_path_buf(),
            db: self.db.or(file.db).unwrap_or_else(|| home.join("server.db")),
            exports_dir: self.exports_dir.or(file.exports_dir).unwrap_or_else(|| home.join("exports")),
            train_jobs: positive("train-jobs", self.train_jobs.or(file.train_jobs).unwrap_or(1))?,
            auto_register: !(self.no_auto_register || file.no_auto_register),
            max_dataset_bytes: positive("max-dataset-mb", self.max_dataset_mb.or(file.max_dataset_mb).unwrap_or(256))? << 20,
            kb_embedding_model: self.kb_embedding_model.or(file.kb_embedding_model).unwrap_or_else(|| "minilm".into()),
            kb_rerank_model: self.kb_rerank_model.or(file.kb_rerank_model),
            kb_ingest_dir: self.kb_ingest_dir.or(file.kb_ingest_dir),
            embed_precision: match self.embed_precision.or(file.embed_precision) {
                Some(name) => hearth_embed::EmbedPrecision::from_name(&name)
                    .with_context(|| format!("--embed-precision {name:?}: expected float or int8"))?,
                None => hearth_embed::EmbedPrecision::default(),
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout.or(file.shutdown_timeout).unwrap_or(10)),
            hub: HubConfig::from_env(),
        })
    }
}

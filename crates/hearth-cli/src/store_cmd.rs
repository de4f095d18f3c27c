//! `hearth pull`, `list`, `show`, `rm` and `cache`: the model store on the command line, and
//! resolving `--model` through it (downloading a Hub model on first use).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use hearth_store::catalogue::CATALOGUE;
use hearth_store::name::ModelSpec;
use hearth_store::{HubConfig, ModelRecord, ModelResolver, PullEvent, PullRequest, Store};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Download a model from the Hugging Face Hub (HF_ENDPOINT, HF_TOKEN) into the cache.
    Pull(PullArgs),
    /// List the models in the store, or the catalogue of recommended ones.
    List(ListArgs),
    /// Show a model's details: registry fields, files, config.json, chat template.
    Show(ShowArgs),
    /// Remove a model from the store.
    Rm(RmArgs),
    /// Check or clean the cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Args)]
pub struct PullArgs {
    /// `org/name[@revision][:QUANT]` or a catalogue alias (`hearth list --catalogue`).
    model: String,
    /// Branch, tag or commit (default: main).
    #[arg(long)]
    revision: Option<String>,
    /// Only files matching this glob (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Never files matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// For GGUF repos: the quantisation to download, e.g. Q4_K_M.
    #[arg(long)]
    quant: Option<String>,
    /// Use only the cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Print progress as JSON lines on stdout instead of a progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Show the catalogue of recommended models instead.
    #[arg(long)]
    catalogue: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    model: String,
}

#[derive(Args)]
pub struct RmArgs {
    model: String,
    /// Remove even if a running server has the model loaded.
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Re-hash every cached file and report corruption (exit status 1 if any).
    Verify,
    /// Delete interrupted downloads, incomplete snapshots and unreferenced files.
    Prune,
}

pub(crate) fn open_store(offline: bool) -> anyhow::Result<Store> {
    let mut hub = HubConfig::from_env();
    hub.offline |= offline;
    let home = hearth_store::hearth_home();
    Store::open(&home, hub).with_context(|| format!("opening the model store in {}", home.display()))
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    match cmd {
        StoreCommand::Pull(args) => pull(args),
        StoreCommand::List(args) => list(args),
        StoreCommand::Show(args) => show(args),
        StoreCommand::Rm(args) => {
            let store = open_store(false)?;
            let local = store.get(&args.model)?.filter(|r| r.is_local());
            for name in store.remove(&args.model, args.force)? {
                println!("removed {name}");
            }
            if let Some(r) = local {
                println!("(unregistered only: its files at {} are left in place)", r.path.display());
            }
            Ok(())
        }
        StoreCommand::Cache(CacheCommand::Verify) => verify(),
        StoreCommand::Cache(CacheCommand::Prune) => prune(),
    }
}

fn pull(args: PullArgs) -> anyhow::Result<()> {
    let mut req = PullRequest::new(&args.model)?;
    req.model.revision = args.revision.or(req.model.revision);
    req.model.quant = args.quant.or(req.model.quant);
    // Flags are validated like the spec itself.
    req.model = ModelSpec::parse(&req.model.to_string())?;
    req.include = args.include;
    req.exclude = args.exclude;
    let store = open_store(args.offline)?;
    let record = if args.json {
        store.pull(&req, &|e| println!("{}", serde_json::to_string(&e).expect("events serialise")))?
    } else {
        pull_with_progress(&store, &req)?
    };
    if !args.json {
        println!("{}", record.path.display());
    }
    Ok(())
}

/// Pulls with a progress bar on a terminal (indicatif hides it otherwise) and a line per step.
fn pull_with_progress(store: &Store, req: &PullRequest) -> hearth_store::Result<ModelRecord> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let done_per_file = Mutex::new(HashMap::<String, u64>::new());
    let record = store.pull(req, &|event| match event {
        PullEvent::Waiting { repo } => bar.println(format!("waiting for another pull of {repo}")),
        PullEvent::Resolved { repo, commit, files, total_bytes, .. } => {
            bar.println(format!("pulling {repo} at {} ({files} files, {})", &commit[..12], human_bytes(total_bytes)));
            bar.set_length(total_bytes);
            bar.set_message(repo);
        }
        PullEvent::FileCached { file } => {
            done_per_file.lock().expect("progress lock").insert(file, u64::MAX);
        }
        PullEvent::Progress { file, done, .. } => {
            let mut map = done_per_file.lock().expect("progress lock");
            map.insert(file, done);
            bar.set_position(map.values().filter(|&&d| d != u64::MAX).sum());
        }
        PullEvent::Done { .. } | PullEvent::Failed { .. } => bar.finish_and_clear(),
        PullEvent::FileStarted { .. } | PullEvent::FileVerified { .. } => {}
    });
    bar.finish_and_clear();
    record
}

pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn ago(unix: Option<i64>) -> String {
    let Some(t) = unix else { return "never".into() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let secs = (now - t).max(0);
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    if args.catalogue {
        println!("{:<18} {:<10} {:>7}  {:<48} DESCRIPTION", "ALIAS", "USE", "MEMORY", "MODEL");
        for e in CATALOGUE {
            println!("{:<18} {:<10} {:>5}GB  {:<48} {}", e.alias, e.use_case.as_str(), e.memory_gb, e.spec, e.description);
        }
        return Ok(());
    }
    let models = open_store(false)?.list()?;
    println!("{:<52} {:>9}  {:<12} {:<10} LAST USED", "NAME", "SIZE", "FORMAT", "QUANT");
    for m in models {
        println!(
            "{:<52} {:>9}  {:<12} {:<10} {}",
            m.name,
            human_bytes(m.size_bytes),
            m.format,
            m.quantization.as_deref().unwrap_or("-"),
            ago(m.last_used_at)
        );
    }
    Ok(())
}

fn show(args: ShowArgs) -> anyhow::Result<()> {
    let store = open_store(false)?;
    let found = store.resolve(&args.model)?.ok_or_else(|| hearth_store::StoreError::NotFound(args.model.clone()))?;
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    println!("path:          {}", found.path.display());
    if let Some(m) = &found.record {
        println!("name:          {}", m.name);
        println!("repo:          {} @ {} ({})", m.repo, m.revision, m.commit);
        println!("format:        {}", m.format);
        println!("architecture:  {}", m.architecture.as_deref().unwrap_or("-"));
        println!("quantisation:  {}", m.quantization.as_deref().unwrap_or("-"));
        println!("parameters:    {}", opt(m.parameter_count));
        println!("context:       {}", opt(m.context_length));
        if let Some(dim) = m.embedding_dim {
            println!("embedding dim: {dim}");
        }
        if let (Some(max), Some(pooling)) = (m.embedding_max_tokens, &m.embedding_pooling) {
            println!("embedding:     {pooling} pooling, at most {max} tokens");
        }
        if let Some(sentence) = hearth_embed::config::SentenceConfig::load(&found.path).ok().filter(|_| m.embedding_dim.is_some()) {
            println!("normalised:    {}", if sentence.normalizes() { "yes" } else { "no" });
            for (name, prompt) in &sentence.prompts {
                let default = if sentence.default_prompt_name.as_ref() == Some(name) { " (default)" } else { "" };
                println!("prompt {name}{default}: {prompt:?}");
            }
        }
        if let Some(entry) = hearth_store::catalogue::CATALOGUE.iter().find(|e| e.spec.split(':').next() == Some(m.repo.as_str())) {
            println!("catalogue:     {} — {}", entry.alias, entry.description);
        }
        println!("size:          {}", human_bytes(m.size_bytes));
        println!("memory:        {} recommended", human_bytes(m.recommended_memory_bytes));
        println!("source:        {}", m.source.as_str());
        println!("last used:     {}", ago(m.last_used_at));
        println!("files:");
        for (file, size) in store.files(m)? {
            println!("  {file:<40} {:>10}", human_bytes(size));
        }
    } else {
        println!("source:        Hugging Face cache (read in place)");
    }
    // A GGUF file has none: its header's fields are the ones above.
    if let Ok(config) = std::fs::read_to_string(found.path.join("config.json")) {
        println!("config.json:\n{}", config.trim_end());
    }
    match hearth_store::chat_template(&found.path) {
        Some(t) => println!("chat template:\n{t}"),
        None => println!("chat template: none"),
    }
    Ok(())
}

fn verify() -> anyhow::Result<()> {
    let report = open_store(false)?.verify()?;
    for p in &report.problems {
        eprintln!("corrupt: {p}");
    }
    println!("checked {} files ({})", report.files_checked, human_bytes(report.bytes_checked));
    if !report.problems.is_empty() {
        bail!("{} problems found; `hearth rm` the affected models and pull them again", report.problems.len());
    }
    println!("no corruption");
    Ok(())
}

fn prune() -> anyhow::Result<()> {
    let report = open_store(false)?.prune()?;
    for path in &report.removed {
        println!("removed {}", path.display());
    }
    for repo in &report.busy {
        println!("skipped {repo}: a pull is running");
    }
    println!("freed {}", human_bytes(report.freed_bytes));
    Ok(())
}

/// `--model` for generate, chat, bench, embed and kb: a path, a model in the store or the
/// Hugging Face cache, a name under $HEARTH_HOME/models, or else a Hub repo (or alias)
/// downloaded now unless offline.
pub fn resolve_model(spec: &str) -> anyhow::Result<PathBuf> {
    let store = open_store(false)?;
    let found = ModelResolver { store: Some(&store), allow_paths: true }.find_or_pull(spec, pull_with_progress)?;
    if let Some(record) = &found.record {
        store.mark_used(record)?;
    }
    Ok(found.path)
}

//! `hearth`: the command line for every Hearth job.

mod bench;
mod chat;
mod convert;
mod dataset;
mod embed;
mod generate;
mod kb;
mod perplexity;
mod serve;
mod stats;
mod store_cmd;
mod train;

use clap::{Args, Parser, Subcommand};
use hearth_runtime::{GenerateParams, Runtime, RuntimeConfig, SamplingDefaults, SamplingParams};

#[derive(Parser)]
#[command(name = "hearth", version, about = "A private LLM platform on your own machine")]
struct Cli {
    /// Worker threads for the kernels (default: one per available core; also HEARTH_THREADS).
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it, then print speed and memory.
    Generate(generate::GenerateArgs),
    /// Chat interactively; the conversation's KV cache is kept between turns.
    Chat(chat::ChatArgs),
    /// Measure prompt-processing and decode speed (medians over repetitions).
    Bench(bench::BenchArgs),
    /// Perplexity over a text, and with --kl-divergence how far the fast path is from the float
    /// path (as llama-perplexity --kl-divergence reports it).
    Perplexity(perplexity::PerplexityArgs),
    /// Embed texts with a sentence-embedding model.
    Embed(embed::EmbedArgs),
    /// Score documents against a query with a cross-encoder, best first.
    Rerank(embed::RerankArgs),
    /// Knowledge base: ingest documents, search them, answer questions with citations.
    Kb(kb::KbArgs),
    /// Write a model in another format: MLX (float or affine-quantised), Hugging Face, or GGUF.
    Convert(convert::ConvertArgs),
    /// Merge a LoRA adapter into its base model and write the result (any format, as `convert`).
    Fuse(convert::ConvertArgs),
    /// Quantise a model in its own format: a GGUF to another type, a float directory to MLX affine.
    Quantize(convert::QuantizeArgs),
    /// Fine-tune LoRA adapters on a model (mlx_lm.lora's flags and data formats).
    Train(train::TrainArgs),
    /// The hub's datasets: add, list, show (with token counts), rm.
    Dataset(dataset::DatasetArgs),
    /// Serve the OpenAI-compatible, chat-backend and registry HTTP APIs.
    Serve(Box<serve::ServeArgs>),
    #[command(flatten)]
    Store(store_cmd::StoreCommand),
}

/// Model and sampling options shared by `generate` and `chat`.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model path (GGUF file, or HF/MLX directory) or name under $HEARTH_HOME/models.
    #[arg(long, short, default_value = hearth_store::DEFAULT_MODEL)]
    model: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy [default: the model's, else 0.8].
    #[arg(long = "temp")]
    temperature: Option<f32>,
    /// [default: the model's, else 0.95]
    #[arg(long)]
    top_p: Option<f32>,
    /// 0 disables [default: the model's, else 40].
    #[arg(long)]
    top_k: Option<usize>,
    /// [default: the model's, else 0.05]
    #[arg(long)]
    min_p: Option<f32>,
    /// [default: the model's, else 1 (off)]
    #[arg(long)]
    repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    #[arg(long)]
    seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Context window to allocate (default: the model's, at most 4096).
    #[arg(long)]
    ctx: Option<usize>,
    /// An mlx-lm LoRA adapter directory (adapter_config.json + adapters.safetensors).
    #[arg(long)]
    adapter: Option<std::path::PathBuf>,
    /// Float activations on exactly de-quantised weights instead of 8-bit activations.
    #[arg(long)]
    exact: bool,
    /// Where the model runs: cpu, cuda[:N] or metal[:N] (GPUs in builds with that feature).
    #[arg(long, default_value = "cpu")]
    device: hearth_engine::DeviceChoice,
}

impl ModelArgs {
    /// What to generate with: each sampling flag given, else the model's own setting, else
    /// llama.cpp's default.
    fn params(&self, model: &hearth_engine::LoadedModel) -> GenerateParams {
        let given = SamplingDefaults {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
        };
        GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                seed: self.seed,
                ..SamplingParams::from_settings(given.or(model.sampling))
            },
            stop: self.stop.clone(),
            ..Default::default()
        }
    }

    /// As `params`, but greedy unless `--temp` is given: an answer from cited sources should be
    /// reproducible (the knowledge service's ask route does the same).
    fn grounded_params(&self, model: &hearth_engine::LoadedModel) -> GenerateParams {
        let mut params = self.params(model);
        if self.temperature.is_none() {
            params.sampling.temperature = 0.0;
        }
        params
    }

    fn load(&self) -> anyhow::Result<hearth_engine::LoadedModel> {
        let path = store_cmd::resolve_model(&self.model)?;
        let precision = if self.exact { hearth_engine::Precision::Exact } else { hearth_engine::Precision::Fast };
        let opts = hearth_engine::LoadOptions { precision, adapter: self.adapter.clone(), device: self.device, ..Default::default() };
        Ok(hearth_engine::LoadedModel::load_with(&path, opts)?)
    }

    fn context(&self, model: &hearth_engine::LoadedModel) -> usize {
        self.ctx.unwrap_or_else(|| model.model.config().context_length.min(4096))
    }

    /// The runtime the command line generates on: one sequence at a time, keeping the last
    /// conversation's KV cache so a next turn prefills only its new tokens.
    fn runtime<'m>(&self, model: &'m hearth_engine::LoadedModel) -> Runtime<'m> {
        Runtime::new(model, RuntimeConfig::single(self.context(model)), std::sync::Arc::new(()), Default::default())
    }
}

/// `RUST_LOG` if set, else `default` for every crate.
fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // Commands print their own results; logs are for warnings unless RUST_LOG asks.
        tracing_subscriber::fmt().with_env_filter(log_filter("warn")).with_writer(std::io::stderr).init();
    }
    if let Some(t) = cli.threads {
        // Read once, when the kernels' pool starts.
        std::env::set_var("HEARTH_THREADS", t.to_string());
    }
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Perplexity(args) => perplexity::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Rerank(args) => embed::rerank(args),
        Command::Kb(args) => kb::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Convert(args) => convert::run(args),
        Command::Fuse(args) => convert::fuse(args),
        Command::Quantize(args) => convert::quantize(args),
        Command::Train(args) => train::run(args),
        Command::Dataset(args) => dataset::run(args),
        Command::Store(cmd) => store_cmd::run(cmd),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

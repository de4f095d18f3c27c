//! `hearth`: the command line for every Hearth job.

mod chat;
mod generate;
mod stats;

use clap::{Args, Parser, Subcommand};
use hearth_engine::{GenerateParams, SamplingParams};

#[derive(Parser)]
#[command(name = "hearth", version, about = "A private LLM platform on your own machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it, then print speed and memory.
    Generate(generate::GenerateArgs),
    /// Chat interactively; the conversation's KV cache is kept between turns.
    Chat(chat::ChatArgs),
}

/// Model and sampling options shared by `generate` and `chat`.
#[derive(Args, Clone)]
struct ModelArgs {
    /// Model path (GGUF file, or HF/MLX directory) or name under $HEARTH_HOME/models.
    #[arg(long, short, default_value = hearth_engine::paths::DEFAULT_MODEL)]
    model: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long = "temp", default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 disables.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
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
}

impl ModelArgs {
    fn params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                logit_bias: Default::default(),
                seed: self.seed,
            },
            stop: self.stop.clone(),
            logprobs: None,
            ignore_eos: false,
        }
    }

    fn load(&self) -> anyhow::Result<hearth_engine::LoadedModel> {
        let path = hearth_engine::paths::resolve_model(&self.model)?;
        Ok(hearth_engine::LoadedModel::load(&path)?)
    }

    fn context(&self, model: &hearth_engine::LoadedModel) -> usize {
        self.ctx.unwrap_or_else(|| model.model.config().context_length.min(4096))
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Chat(args) => chat::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! `hearth train`: LoRA fine-tuning as `mlx_lm.lora --train` runs it, with its flags, its data
//! directory and its report lines; the adapters it writes load in Hearth, mlx-lm and `hearth fuse`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hearth_train::data::{batches, load_split, BatchOrder, Text};
use hearth_train::loss::Mask;
use hearth_train::trainer::{adapter_config, check_rank, evaluate, has_checkpoint, init_dora, init_lora, train, Event, TrainOptions};
use hearth_train::{AdapterFormat, Lora, Rule, Schedule, TrainModel};
use serde_json::json;

#[derive(Clone, Copy, ValueEnum)]
pub enum Order {
    /// By token count (less padding).
    Length,
    /// mlx-lm 0.32.2's actual order (the records' file order), for batches identical to its.
    MlxLm,
}

/// mlx-lm's optimisers (no bias correction in Adam and AdamW, as mlx-lm runs them).
#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerName {
    Adam,
    Adamw,
    Sgd,
}

/// What is trained (mlx-lm's --fine-tune-type).
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FineTuneType {
    Lora,
    /// LoRA plus a learned magnitude per output (mlx-lm's DoRALinear).
    Dora,
}

/// The layout the adapters are written in.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// mlx-lm's adapters.safetensors + adapter_config.json (Hearth, mlx-lm, hearth fuse).
    Mlx,
    /// PEFT's adapter_model.safetensors + adapter_config.json (PeftModel.from_pretrained).
    Peft,
    /// llama.cpp's adapters.gguf (llama-server --lora), Llama's Q/K rows in its order.
    Gguf,
}

#[derive(Args)]
pub struct TrainArgs {
    /// mlx-lm's YAML configuration (its keys, lora_parameters and lr_schedule included); what
    /// the command line gives wins over it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Base model: a Hugging Face or MLX directory (float or MLX-quantised), a GGUF file (QLoRA on
    /// its blocks as they are), or a name the store resolves.
    #[arg(long, short)]
    model: String,
    /// A directory of train.jsonl, valid.jsonl and test.jsonl (chat, completions or text records).
    #[arg(long)]
    data: PathBuf,
    /// Where adapters.safetensors and adapter_config.json are written.
    #[arg(long, default_value = "adapters")]
    adapter_path: PathBuf,
    /// Adapt the last N blocks; -1 for all.
    #[arg(long, default_value_t = 16, allow_hyphen_values = true)]
    num_layers: i64,
    /// Only these layers of each block (e.g. self_attn.q_proj; repeatable) [default: every linear].
    #[arg(long = "keys")]
    keys: Vec<String>,
    #[arg(long, value_enum, default_value = "lora")]
    fine_tune_type: FineTuneType,
    /// LoRA rank (mlx-lm's lora_parameters.rank).
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA scale, used as is (mlx-lm's lora_parameters.scale).
    #[arg(long, default_value_t = 20.0)]
    scale: f32,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 1000)]
    iters: usize,
    /// Validation batches per evaluation; -1 for all.
    #[arg(long, default_value_t = 25, allow_hyphen_values = true)]
    val_batches: i64,
    #[arg(long, default_value_t = 1e-5)]
    learning_rate: f32,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerName,
    /// AdamW's weight decay (mlx's default 0.01).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f32,
    /// mlx-lm's lr_schedule as JSON: {"name": "cosine_decay"|"linear_schedule", "arguments":
    /// [...], "warmup": N, "warmup_init": x} [default: the constant --learning-rate].
    #[arg(long)]
    lr_schedule: Option<String>,
    #[arg(long, default_value_t = 10)]
    steps_per_report: usize,
    #[arg(long, default_value_t = 200)]
    steps_per_eval: usize,
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    #[arg(long, default_value_t = 1)]
    grad_accumulation_steps: usize,
    #[arg(long, default_value_t = 2048)]
    max_seq_length: usize,
    /// Seeds the adapters' initial values and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep only each block's input between the forward and backward passes and recompute the
    /// rest: memory bounded by one block's activations on long sequences, for one more forward
    /// pass of each block per step.
    #[arg(long)]
    grad_checkpoint: bool,
    /// Train only on the completion (chat and completions data): the prompt is masked out.
    #[arg(long)]
    mask_prompt: bool,
    /// Leave out the padding target mlx-lm's loss counts once per padded row (mlx-lm#1697);
    /// losses then differ slightly from mlx-lm's.
    #[arg(long)]
    corrected_mask: bool,
    #[arg(long, value_enum, default_value = "length")]
    batch_order: Order,
    /// The adapters' layout; checkpoints for --resume keep mlx-lm's.
    #[arg(long, value_enum, default_value = "mlx")]
    format: Format,
    /// Start from these adapter weights (an adapters.safetensors; mlx-lm's option: the optimiser
    /// starts afresh).
    #[arg(long)]
    resume_adapter_file: Option<PathBuf>,
    /// Continue an interrupted run from the checkpoint in --adapter-path (adapters, optimiser
    /// state, iteration and data order), exactly where it stopped; without a checkpoint yet, the
    /// run starts from the beginning.
    #[arg(long, conflicts_with = "resume_adapter_file")]
    resume: bool,
    /// After training (or alone with --iters 0), report the test split's loss and perplexity.
    #[arg(long)]
    test: bool,
    /// Test batches; -1 for all.
    #[arg(long, default_value_t = 500, allow_hyphen_values = true)]
    test_batches: i64,
}

/// On a terminal, a line rewritten after every iteration: a bar, the iteration, its loss,
/// trained tokens per second, the time left and the peak memory. Report lines clear it first.
struct ProgressLine {
    on: bool,
    started: std::time::Instant,
    /// The first iteration seen, and the tokens trained by its end.
    first: Option<(usize, usize)>,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        use std::io::IsTerminal;
        ProgressLine { on: std::io::stderr().is_terminal(), started: std::time::Instant::now(), first: None }
    }

    fn handle(&mut self, event: &Event) {
        use std::io::Write;
        if !self.on {
            return;
        }
        let Event::Iteration { iter, of, loss, trained_tokens } = *event else {
            eprint!("\r\x1b[2K");
            return;
        };
        // Rates are measured from the first iteration's end (a resumed run starts late).
        if self.first.is_none() {
            (self.first, self.started) = (Some((iter, trained_tokens)), std::time::Instant::now());
        }
        let (from, before) = self.first.expect("set above");
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let done = (iter - from).max(1) as f64;
        let left = (of - iter) as f64 * secs / done;
        let filled = iter * 24 / of.max(1);
        eprint!(
            "\r[{}{}] {iter}/{of} loss {loss:.3} {:.1} tok/s ETA {}:{:02} peak {:.2} GB",
            "#".repeat(filled),
            " ".repeat(24 - filled),
            (trained_tokens - before) as f64 / secs,
            left as u64 / 60,
            left as u64 % 60,
            crate::stats::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
        );
        let _ = std::io::stderr().flush();
    }
}

/// `{:.3e}` as Python prints it (`1.000e-05`), as mlx-lm's report lines have it.
fn python_exp(v: f32) -> String {
    let s = format!("{v:.3e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn count(n: i64) -> Option<usize> {
    (n >= 0).then_some(n as usize)
}

/// Fills what the command line left at its default from mlx-lm's YAML configuration at `path`
/// (mlx-lm's rule: command line, then the file, then the defaults).
fn apply_config(args: &mut TrainArgs, path: &Path) -> anyhow::Result<()> {
    use clap::parser::ValueSource;
    use clap::CommandFactory;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: serde_yaml::Value = serde_yaml::from_str(&text).with_context(|| format!("{}: not YAML", path.display()))?;
    let serde_yaml::Value::Mapping(map) = config else { anyhow::bail!("{}: expected a mapping of mlx-lm's keys", path.display()) };
    let matches = crate::Cli::command().get_matches_from(std::env::args_os());
    let given = |id: &str| matches.subcommand_matches("train").and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
    let field = |key: &str, value: &serde_yaml::Value| anyhow::anyhow!("{}: {key}: {value:?} is not a valid value", path.display());
    macro_rules! take {
        ($key:expr, $value:expr, $id:literal, $field:expr) => {
            if !given($id) {
                $field = serde_yaml::from_value(serde_yaml::Value::clone($value)).map_err(|_| field($key, $value))?;
            }
        };
    }
    for (key, value) in &map {
        let key = key.as_str().with_context(|| format!("{}: a key is not a string", path.display()))?;
        match key {
            "model" => take!(key, value, "model", args.model),
            "data" => take!(key, value, "data", args.data),
            "adapter_path" => take!(key, value, "adapter_path", args.adapter_path),
            "num_layers" => take!(key, value, "num_layers", args.num_layers),
            "batch_size" => take!(key, value, "batch_size", args.batch_size),
            "iters" => take!(key, value, "iters", args.iters),
            "val_batches" => take!(key, value, "val_batches", args.val_batches),
            "learning_rate" => take!(key, value, "learning_rate", args.learning_rate),
            "steps_per_report" => take!(key, value, "steps_per_report", args.steps_per_report),
            "steps_per_eval" => take!(key, value, "steps_per_eval", args.steps_per_eval),
            "save_every" => take!(key, value, "save_every", args.save_every),
            "grad_accumulation_steps" => take!(key, value, "grad_accumulation_steps", args.grad_accumulation_steps),
            "max_seq_length" => take!(key, value, "max_seq_length", args.max_seq_length),
            "seed" => take!(key, value, "seed", args.seed),
            "mask_prompt" => take!(key, value, "mask_prompt", args.mask_prompt),
            "test" => take!(key, value, "test", args.test),
            "test_batches" => take!(key, value, "test_batches", args.test_batches),
            "resume_adapter_file" => {
                if !given("resume_adapter_file") && !value.is_null() {
                    args.resume_adapter_file = Some(serde_yaml::from_value(value.clone()).map_err(|_| field(key, value))?);
                }
            }
            "optimizer" if !given("optimizer") => {
                let name = value.as_str().ok_or_else(|| field(key, value))?;
                args.optimizer = OptimizerName::from_str(name, true).map_err(|_| field(key, value))?;
            }
            "lr_schedule" if !given("lr_schedule") && !value.is_null() => {
                args.lr_schedule = Some(serde_json::to_string(value).map_err(|_| field(key, value))?);
            }
            "optimizer_config" => {
                // {adamw: {weight_decay: x}}: the only optimiser setting Hearth takes.
                let decay = value.get("adamw").and_then(|a| a.get("weight_decay"));
                if let (Some(d), false) = (decay, given("weight_decay")) {
                    args.weight_decay = serde_yaml::from_value(d.clone()).map_err(|_| field(key, value))?;
                }
            }
            "lora_parameters" => {
                let serde_yaml::Value::Mapping(lora) = value else { return Err(field(key, value)) };
                for (k, v) in lora {
                    match k.as_str().unwrap_or_default() {
                        "rank" => take!("lora_parameters.rank", v, "rank", args.rank),
                        "scale" => take!("lora_parameters.scale", v, "scale", args.scale),
                        "keys" => take!("lora_parameters.keys", v, "keys", args.keys),
                        "dropout" if v.as_f64() == Some(0.0) => {}
                        "dropout" => anyhow::bail!("{}: lora_parameters.dropout: Hearth trains without dropout", path.display()),
                        other => println!("[WARNING] {}: lora_parameters.{other} is not used", path.display()),
                    }
                }
            }
            "fine_tune_type" if !given("fine_tune_type") => {
                let name = value.as_str().ok_or_else(|| field(key, value))?;
                args.fine_tune_type = FineTuneType::from_str(name, true)
                    .map_err(|_| anyhow::anyhow!("{}: fine_tune_type {name:?}: Hearth trains \"lora\" and \"dora\"", path.display()))?;
            }
            "grad_checkpoint" => take!(key, value, "grad_checkpoint", args.grad_checkpoint),
            // Settled above, or meaningless here (mlx-lm's train flag, its loggers).
            "train" | "fine_tune_type" | "optimizer" | "lr_schedule" | "report_to" | "project_name" | "wandb" => {}
            other => println!("[WARNING] {}: {other} is not an option of hearth train; ignored", path.display()),
        }
    }
    Ok(())
}

pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    if let Some(path) = args.config.clone() {
        apply_config(&mut args, &path)?;
    }
    let dir = crate::store_cmd::resolve_model(&args.model)?;
    println!("Loading pretrained model");
    let mut model = TrainModel::load(&dir)?;
    model.set_grad_checkpoint(args.grad_checkpoint);
    let text = Text::load(&dir)?;
    println!("Loading datasets");
    let order = match args.batch_order {
        Order::Length => BatchOrder::Length,
        Order::MlxLm => BatchOrder::MlxLm,
    };
    let split = |name: &str| -> anyhow::Result<Option<Vec<hearth_train::Batch>>> {
        let Some((_, examples)) = load_split(&args.data, name, &text)? else { return Ok(None) };
        let (batches, truncated) = batches(&examples, args.batch_size, args.max_seq_length, args.mask_prompt, order)?;
        if truncated {
            println!("[WARNING] Some sequences are longer than {} tokens and were truncated.", args.max_seq_length);
        }
        Ok(Some(batches))
    };
    let mask = if args.corrected_mask { Mask::Corrected } else { Mask::MlxLm };
    let num_layers = count(args.num_layers);
    let layers = model.adaptable(num_layers, &args.keys)?;
    if args.resume_adapter_file.is_none() {
        check_rank(&layers, args.rank)?;
    }
    let dora = args.fine_tune_type == FineTuneType::Dora;
    if dora && !matches!(args.format, Format::Mlx) {
        anyhow::bail!("--fine-tune-type dora: DoRA adapters are written in mlx-lm's layout only (--format mlx)");
    }
    let mut lora = match &args.resume_adapter_file {
        Some(file) => Lora::load(file, args.scale).with_context(|| format!("resuming from {}", file.display()))?,
        None => {
            let mut lora = init_lora(&layers, args.rank, args.scale, args.seed);
            if dora {
                init_dora(&model, &mut lora)?;
            }
            lora
        }
    };
    if lora.is_dora() != dora {
        anyhow::bail!("--resume-adapter-file holds {} adapters; pass --fine-tune-type to match", if dora { "LoRA" } else { "DoRA" });
    }
    if args.iters > 0 {
        let train_batches = split("train")?.with_context(|| format!("{} has no train.jsonl", args.data.display()))?;
        let valid = split("valid")?.unwrap_or_else(|| {
            println!("[WARNING] no valid.jsonl: training without validation");
            Vec::new()
        });
        let trainable: usize = lora.layers.values().map(|l| l.a.len() + l.b.len()).sum();
        let total = model.parameter_count();
        println!("Training");
        println!(
            "Trainable parameters: {:.3}% ({:.3}M/{:.3}M)",
            100.0 * trainable as f64 / total as f64,
            trainable as f64 / 1e6,
            total as f64 / 1e6
        );
        println!("Starting training..., iters: {}", args.iters);
        let lr_schedule =
            args.lr_schedule.as_deref().map(serde_json::from_str::<serde_json::Value>).transpose().context("--lr-schedule is not JSON")?;
        let schedule = Schedule::from_mlx_lm(lr_schedule.as_ref(), args.learning_rate).map_err(anyhow::Error::msg)?;
        let rule = match args.optimizer {
            OptimizerName::Adam => Rule::Adam,
            OptimizerName::Adamw => Rule::AdamW { weight_decay: args.weight_decay },
            OptimizerName::Sgd => Rule::Sgd,
        };
        let mut run_args = serde_json::Map::new();
        for (key, value) in [
            ("model", json!(dir)),
            ("data", json!(args.data)),
            ("adapter_path", json!(args.adapter_path)),
            ("batch_size", json!(args.batch_size)),
            ("iters", json!(args.iters)),
            // As typed (0.001), not as the nearest float32 spelled out in full.
            ("learning_rate", json!(args.learning_rate.to_string().parse::<f64>().unwrap_or_default())),
            ("max_seq_length", json!(args.max_seq_length)),
            ("mask_prompt", json!(args.mask_prompt)),
            ("grad_checkpoint", json!(args.grad_checkpoint)),
            ("fine_tune_type", json!(if dora { "dora" } else { "lora" })),
            ("seed", json!(args.seed)),
            ("optimizer", json!(["adam", "adamw", "sgd"][args.optimizer as usize])),
            ("lr_schedule", lr_schedule.clone().unwrap_or_default()),
        ] {
            run_args.insert(key.into(), value);
        }
        let config = adapter_config(args.num_layers, args.rank, args.scale, run_args);
        let opts = TrainOptions {
            iters: args.iters,
            rule,
            schedule,
            steps_per_report: args.steps_per_report,
            steps_per_eval: args.steps_per_eval,
            val_batches: count(args.val_batches),
            save_every: args.save_every,
            grad_accumulation_steps: args.grad_accumulation_steps,
            seed: args.seed,
            mask,
            adapter_dir: args.adapter_path.clone(),
            adapter_config: config,
            resume: args.resume && has_checkpoint(&args.adapter_path),
            format: match args.format {
                Format::Mlx => AdapterFormat::Mlx,
                Format::Peft => AdapterFormat::Peft,
                Format::Gguf => AdapterFormat::Gguf,
            },
        };
        if args.resume && !opts.resume {
            // A supervisor restarting a run that died before its first save just reruns it.
            println!("No checkpoint in {} yet: starting from the beginning.", args.adapter_path.display());
        }
        let mut progress = ProgressLine::new();
        let mut on_event = |event: Event| {
            progress.handle(&event);
            match event {
            Event::Iteration { .. } => {}
            Event::Validation { iter, loss, secs } => println!("Iter {iter}: Val loss {loss:.3}, Val took {secs:.3}s"),
            Event::Report { iter, loss, learning_rate, iters_per_sec, tokens_per_sec, trained_tokens } => println!(
                "Iter {iter}: Train loss {loss:.3}, Learning Rate {}, It/sec {iters_per_sec:.3}, Tokens/sec {tokens_per_sec:.3}, Trained Tokens {trained_tokens}, Peak mem {:.3} GB",
                python_exp(learning_rate),
                crate::stats::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
            ),
            Event::Saved { iter, path } => println!("Iter {iter}: Saved adapter weights to {}.", path.display()),
        }
        };
        train(&model, &mut lora, &train_batches, &valid, &opts, &mut on_event)?;
        println!("Saved final weights to {}.", args.adapter_path.join(opts.format.file()).display());
    }
    if args.test {
        println!("Testing");
        let test = split("test")?.with_context(|| format!("{} has no test.jsonl", args.data.display()))?;
        let test = &test[..count(args.test_batches).unwrap_or(test.len()).min(test.len())];
        model.check(&lora)?;
        let loss = evaluate(&model, &lora, test, mask)?;
        println!("Test loss {loss:.3}, Test ppl {:.3}.", loss.exp());
    }
    Ok(())
}

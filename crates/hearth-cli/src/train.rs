//! `hearth train`: LoRA fine-tuning as `mlx_lm.lora --train` runs it, with its flags, its data
//! directory and its report lines; the adapters it writes load in Hearth, mlx-lm and `hearth fuse`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use hearth_train::run::{FineTuneType, OptimizerName, TrainSpec};
use hearth_train::trainer::Event;

#[derive(Args)]
pub struct TrainArgs {
    /// mlx-lm's YAML configuration (its keys, lora_parameters and lr_schedule included); what
    /// the command line gives wins over it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    #[command(flatten)]
    spec: TrainSpec,
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

/// Fills what the command line left at its default from mlx-lm's YAML configuration at `path`
/// (mlx-lm's rule: command line, then the file, then the defaults).
fn apply_config(args: &mut TrainSpec, path: &Path) -> anyhow::Result<()> {
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
                args.lr_schedule = Some(serde_json::to_value(value).map_err(|_| field(key, value))?);
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
            "exact" => take!(key, value, "exact", args.exact),
            // Settled above, or meaningless here (mlx-lm's train flag, its loggers).
            "train" | "fine_tune_type" | "optimizer" | "lr_schedule" | "report_to" | "project_name" | "wandb" => {}
            other => println!("[WARNING] {}: {other} is not an option of hearth train; ignored", path.display()),
        }
    }
    Ok(())
}

pub fn run(mut args: TrainArgs) -> anyhow::Result<()> {
    if let Some(path) = args.config.clone() {
        apply_config(&mut args.spec, &path)?;
    }
    let dir = crate::store_cmd::resolve_model(&args.spec.model)?;
    let mut progress = ProgressLine::new();
    let mut on_event = |event: Event| {
        progress.handle(&event);
        if let Some(line) = event.line() {
            println!("{line}");
        }
    };
    hearth_train::run::run(&args.spec, &dir, &mut on_event, Default::default())?;
    Ok(())
}

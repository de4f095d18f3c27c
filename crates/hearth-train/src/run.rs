//! A whole fine-tuning run from `mlx_lm.lora`'s settings ([`TrainSpec`]): the data read and
//! batched, the adapters made or resumed, the loop run, the test split scored. `hearth train`
//! runs one from its flags, the hub from a job; both follow it through its [`Event`]s.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Args, FromArgMatches, ValueEnum};
use hearth_kernels::Precision;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::data::{batches, load_split, BatchOrder, Text};
use crate::loss::Mask;
use crate::trainer::{adapter_config, check_rank, evaluate, has_checkpoint, init_dora, init_lora, train, Event, TrainOptions};
use crate::{AdapterFormat, Batch, Lora, Result, Rule, Schedule, TrainError, TrainModel};

/// mlx-lm's optimisers (no bias correction in Adam and AdamW, as mlx-lm runs them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerName {
    Adam,
    Adamw,
    Sgd,
}

/// What is trained (mlx-lm's `fine_tune_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneType {
    Lora,
    /// LoRA plus a learned magnitude per output (mlx-lm's DoRALinear).
    Dora,
}

fn json_arg(s: &str) -> std::result::Result<Value, String> {
    serde_json::from_str(s).map_err(|e| format!("not JSON: {e}"))
}

/// A fine-tuning run: `mlx_lm.lora`'s settings, as `hearth train`'s flags or a hub job's JSON
/// (the same names, with underscores; what a job leaves out takes the flags' defaults).
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSpec {
    /// Base model: a Hugging Face or MLX directory (float or MLX-quantised), a GGUF file (QLoRA on
    /// its blocks as they are), or a name the store resolves.
    #[arg(long, short)]
    pub model: String,
    /// A directory of train.jsonl, valid.jsonl and test.jsonl (chat, completions or text records).
    #[arg(long)]
    pub data: PathBuf,
    /// Where adapters.safetensors and adapter_config.json are written.
    #[arg(long, default_value = "adapters")]
    pub adapter_path: PathBuf,
    /// Adapt the last N blocks; -1 for all.
    #[arg(long, default_value_t = 16, allow_hyphen_values = true)]
    pub num_layers: i64,
    /// Only these layers of each block (e.g. self_attn.q_proj; repeatable) [default: every linear].
    #[arg(long = "keys")]
    pub keys: Vec<String>,
    #[arg(long, value_enum, default_value = "lora")]
    pub fine_tune_type: FineTuneType,
    /// LoRA rank (mlx-lm's lora_parameters.rank).
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA scale, used as is (mlx-lm's lora_parameters.scale).
    #[arg(long, default_value_t = 20.0)]
    pub scale: f32,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 1000)]
    pub iters: usize,
    /// Validation batches per evaluation; -1 for all.
    #[arg(long, default_value_t = 25, allow_hyphen_values = true)]
    pub val_batches: i64,
    #[arg(long, default_value_t = 1e-5)]
    pub learning_rate: f32,
    #[arg(long, value_enum, default_value = "adam")]
    pub optimizer: OptimizerName,
    /// AdamW's weight decay (mlx's default 0.01).
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f32,
    /// mlx-lm's lr_schedule as JSON: {"name": "cosine_decay"|"linear_schedule", "arguments":
    /// [...], "warmup": N, "warmup_init": x} [default: the constant --learning-rate].
    #[arg(long, value_parser = json_arg)]
    pub lr_schedule: Option<Value>,
    #[arg(long, default_value_t = 10)]
    pub steps_per_report: usize,
    #[arg(long, default_value_t = 200)]
    pub steps_per_eval: usize,
    #[arg(long, default_value_t = 100)]
    pub save_every: usize,
    #[arg(long, default_value_t = 1)]
    pub grad_accumulation_steps: usize,
    #[arg(long, default_value_t = 2048)]
    pub max_seq_length: usize,
    /// Seeds the adapters' initial values and the batch order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep only each block's input between the forward and backward passes and recompute the
    /// rest: memory bounded by one block's activations on long sequences, for one more forward
    /// pass of each block per step.
    #[arg(long)]
    pub grad_checkpoint: bool,
    /// Float32 products on exactly de-quantised weights (mlx-lm's numbers, slower) instead of
    /// 8-bit activations where the base's format has integer panels (Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q4_K, Q5_K, Q6_K; MLX 4-bit with f16/bf16 scales), as inference multiplies them.
    #[arg(long)]
    pub exact: bool,
    /// Train only on the completion (chat and completions data): the prompt is masked out.
    #[arg(long)]
    pub mask_prompt: bool,
    /// Leave out the padding target mlx-lm's loss counts once per padded row (mlx-lm#1697);
    /// losses then differ slightly from mlx-lm's.
    #[arg(long)]
    pub corrected_mask: bool,
    #[arg(long, value_enum, default_value = "length")]
    pub batch_order: BatchOrder,
    /// The adapters' layout; checkpoints for --resume keep mlx-lm's.
    #[arg(long, value_enum, default_value = "mlx")]
    pub format: AdapterFormat,
    /// Start from these adapter weights (an adapters.safetensors; mlx-lm's option: the optimiser
    /// starts afresh).
    #[arg(long)]
    pub resume_adapter_file: Option<PathBuf>,
    /// Continue an interrupted run from the checkpoint in --adapter-path (adapters, optimiser
    /// state, iteration and data order), exactly where it stopped; without a checkpoint yet, the
    /// run starts from the beginning.
    #[arg(long, conflicts_with = "resume_adapter_file")]
    pub resume: bool,
    /// After training (or alone with --iters 0), report the test split's loss and perplexity.
    #[arg(long)]
    pub test: bool,
    /// Test batches; -1 for all.
    #[arg(long, default_value_t = 500, allow_hyphen_values = true)]
    pub test_batches: i64,
}

impl Default for TrainSpec {
    /// The flags' defaults (model and data empty), so that a job's JSON can leave them out.
    fn default() -> Self {
        let cmd = TrainSpec::augment_args(clap::Command::new("train").no_binary_name(true));
        let matches = cmd.try_get_matches_from(["--model", "-", "--data", "-"]).expect("the defaults parse");
        let spec = TrainSpec::from_arg_matches(&matches).expect("the defaults parse");
        TrainSpec { model: String::new(), data: PathBuf::new(), ..spec }
    }
}

fn count(n: i64) -> Option<usize> {
    (n >= 0).then_some(n as usize)
}

impl TrainSpec {
    /// Everything a run can refuse before it starts, beyond what the data and the model check.
    pub fn check(&self) -> Result<()> {
        let invalid = |m: &str| Err(TrainError::Invalid(m.into()));
        if self.batch_size == 0 {
            return invalid("--batch-size must be at least 1");
        }
        if self.fine_tune_type == FineTuneType::Dora && self.format != AdapterFormat::Mlx {
            return invalid("--fine-tune-type dora: DoRA adapters are written in mlx-lm's layout only (--format mlx)");
        }
        if !(self.learning_rate.is_finite() && self.scale.is_finite()) {
            return invalid("--learning-rate and --scale must be finite numbers");
        }
        Schedule::from_mlx_lm(self.lr_schedule.as_ref(), self.learning_rate).map_err(TrainError::Invalid)?;
        Ok(())
    }

    /// What the base model's configuration refuses, read without loading its weights: more
    /// blocks to adapt than it has.
    pub fn check_model(&self, model: &Path) -> Result<()> {
        let total = hearth_engine::loader::read_config(model)?.num_layers;
        crate::model::layers_to_adapt(count(self.num_layers), total).map(drop)
    }
}

/// How a caller steers a run from outside.
#[derive(Clone, Default)]
pub struct Controls {
    /// Once set, the loop stops after the current iteration with a checkpoint saved
    /// ([`TrainError::Stopped`]).
    pub stop: Option<Arc<AtomicBool>>,
    /// Runs before each block of every pass; it returns when training may go on.
    pub yield_to: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Runs `spec` on the base model at `model_dir` (resolved by the caller).
pub fn run(spec: &TrainSpec, model_dir: &Path, on_event: &mut dyn FnMut(Event), controls: Controls) -> Result<()> {
    spec.check()?;
    let Controls { stop, yield_to } = controls;
    let note = |on_event: &mut dyn FnMut(Event), text: String| on_event(Event::Note(text));
    note(on_event, "Loading pretrained model".into());
    let mut model = TrainModel::load(model_dir)?;
    model.set_grad_checkpoint(spec.grad_checkpoint);
    model.set_precision(if spec.exact { Precision::Exact } else { Precision::Fast });
    model.set_yield(yield_to);
    let text = Text::load(model_dir)?;
    note(on_event, "Loading datasets".into());
    let split = |name: &str, on_event: &mut dyn FnMut(Event)| -> Result<Option<Vec<Batch>>> {
        let Some((_, examples)) = load_split(&spec.data, name, &text)? else { return Ok(None) };
        let (batches, truncated) = batches(&examples, spec.batch_size, spec.max_seq_length, spec.mask_prompt, spec.batch_order)?;
        if truncated {
            on_event(Event::Note(format!("[WARNING] Some sequences are longer than {} tokens and were truncated.", spec.max_seq_length)));
        }
        Ok(Some(batches))
    };
    let mask = if spec.corrected_mask { Mask::Corrected } else { Mask::MlxLm };
    let layers = model.adaptable(count(spec.num_layers), &spec.keys)?;
    if spec.resume_adapter_file.is_none() {
        check_rank(&layers, spec.rank)?;
    }
    let dora = spec.fine_tune_type == FineTuneType::Dora;
    let mut lora = match &spec.resume_adapter_file {
        Some(file) => Lora::load(file, spec.scale).map_err(|e| TrainError::Invalid(format!("resuming from {}: {e}", file.display())))?,
        None => {
            let mut lora = init_lora(&layers, spec.rank, spec.scale, spec.seed);
            if dora {
                init_dora(&model, &mut lora)?;
            }
            lora
        }
    };
    if lora.is_dora() != dora {
        let holds = if dora { "LoRA" } else { "DoRA" };
        return Err(TrainError::Invalid(format!("--resume-adapter-file holds {holds} adapters; pass --fine-tune-type to match")));
    }
    let missing = |name: &str| TrainError::Invalid(format!("{} has no {name}.jsonl", spec.data.display()));
    if spec.iters > 0 {
        let train_batches = split("train", on_event)?.ok_or_else(|| missing("train"))?;
        let valid = match split("valid", on_event)? {
            Some(v) => v,
            None => {
                note(on_event, "[WARNING] no valid.jsonl: training without validation".into());
                Vec::new()
            }
        };
        let trainable: usize = lora.layers.values().map(|l| l.a.len() + l.b.len()).sum();
        let total = model.parameter_count();
        note(on_event, "Training".into());
        note(
            on_event,
            format!(
                "Trainable parameters: {:.3}% ({:.3}M/{:.3}M)",
                100.0 * trainable as f64 / total as f64,
                trainable as f64 / 1e6,
                total as f64 / 1e6
            ),
        );
        note(on_event, format!("Starting training..., iters: {}", spec.iters));
        let schedule = Schedule::from_mlx_lm(spec.lr_schedule.as_ref(), spec.learning_rate).map_err(TrainError::Invalid)?;
        let rule = match spec.optimizer {
            OptimizerName::Adam => Rule::Adam,
            OptimizerName::Adamw => Rule::AdamW { weight_decay: spec.weight_decay },
            OptimizerName::Sgd => Rule::Sgd,
        };
        let mut run_args = serde_json::Map::new();
        for (key, value) in [
            ("model", json!(model_dir)),
            ("data", json!(spec.data)),
            ("adapter_path", json!(spec.adapter_path)),
            ("batch_size", json!(spec.batch_size)),
            ("iters", json!(spec.iters)),
            // As typed (0.001), not as the nearest float32 spelled out in full.
            ("learning_rate", json!(spec.learning_rate.to_string().parse::<f64>().unwrap_or_default())),
            ("max_seq_length", json!(spec.max_seq_length)),
            ("mask_prompt", json!(spec.mask_prompt)),
            ("grad_checkpoint", json!(spec.grad_checkpoint)),
            ("fine_tune_type", json!(if dora { "dora" } else { "lora" })),
            ("seed", json!(spec.seed)),
            ("optimizer", json!(spec.optimizer)),
            ("lr_schedule", spec.lr_schedule.clone().unwrap_or_default()),
        ] {
            run_args.insert(key.into(), value);
        }
        let opts = TrainOptions {
            iters: spec.iters,
            rule,
            schedule,
            steps_per_report: spec.steps_per_report,
            steps_per_eval: spec.steps_per_eval,
            val_batches: count(spec.val_batches),
            save_every: spec.save_every,
            grad_accumulation_steps: spec.grad_accumulation_steps,
            seed: spec.seed,
            mask,
            adapter_dir: spec.adapter_path.clone(),
            adapter_config: adapter_config(spec.num_layers, spec.rank, spec.scale, run_args),
            resume: spec.resume && has_checkpoint(&spec.adapter_path),
            format: spec.format,
            stop,
        };
        if spec.resume && !opts.resume {
            // A supervisor restarting a run that died before its first save just reruns it.
            note(on_event, format!("No checkpoint in {} yet: starting from the beginning.", spec.adapter_path.display()));
        }
        train(&model, &mut lora, &train_batches, &valid, &opts, on_event)?;
        note(on_event, format!("Saved final weights to {}.", spec.adapter_path.join(opts.format.file()).display()));
    }
    if spec.test {
        note(on_event, "Testing".into());
        let test = split("test", on_event)?.ok_or_else(|| missing("test"))?;
        let test = &test[..count(spec.test_batches).unwrap_or(test.len()).min(test.len())];
        model.check(&lora)?;
        let loss = evaluate(&model, &lora, test, mask)?;
        on_event(Event::Tested { loss });
    }
    Ok(())
}

//! The training loop as `mlx_lm.lora` runs it: batches in a shuffled order epoch after epoch,
//! gradients accumulated over `grad_accumulation_steps` and averaged, an Adam update, a report
//! every `steps_per_report` iterations (the plain mean of the batch losses since the last one),
//! validation before the first update, every `steps_per_eval` and at the end (token-weighted),
//! and the adapters saved every `save_every` and at the end: `adapters.safetensors` with
//! `adapter_config.json`, each written to a temporary name and renamed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::adapter::{Lora, LoraLayer};
use crate::data::Shuffle;
use crate::export::{self, AdapterFormat};
use crate::loss::{Batch, Mask};
use crate::model::TrainModel;
use crate::optim::{Optimizer, Rule, Schedule};
use crate::{Result, TrainError};

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub iters: usize,
    pub rule: Rule,
    pub schedule: Schedule,
    pub steps_per_report: usize,
    pub steps_per_eval: usize,
    /// Validation batches per evaluation; `None`: all of them.
    pub val_batches: Option<usize>,
    pub save_every: usize,
    pub grad_accumulation_steps: usize,
    pub seed: u64,
    pub mask: Mask,
    /// Where the adapters are saved, and the `adapter_config.json` saved beside them.
    pub adapter_dir: PathBuf,
    pub adapter_config: Value,
    /// Continue from the checkpoint in `adapter_dir` (`checkpoint/`: the adapters, the
    /// optimiser's state, the iteration and the data order), exactly where it stopped.
    pub resume: bool,
    /// The layout the adapters are saved in (checkpoints keep mlx-lm's).
    pub format: AdapterFormat,
    /// Once set, the loop saves a checkpoint after the current iteration and stops.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Where a run stands: what a checkpoint holds besides the adapters.
struct RunState {
    iteration: usize,
    trained: usize,
    opt: Optimizer,
    shuffle: Shuffle,
    /// Batches of the current epoch still to come (taken from the end).
    order: Vec<usize>,
    /// Gradients summed since the last update (within `grad_accumulation_steps`).
    acc: Option<Lora>,
}

const CHECKPOINT: &str = "checkpoint";

/// The checkpoint folder in an adapter directory: the current one, or the one a crash during a
/// save left set aside.
fn checkpoint_in(dir: &Path) -> Option<PathBuf> {
    [dir.join(CHECKPOINT), dir.join(".checkpoint.old")].into_iter().find(|p| p.join("trainer_state.json").is_file())
}

/// Whether `dir` holds a checkpoint `--resume` can continue from.
pub fn has_checkpoint(dir: &Path) -> bool {
    checkpoint_in(dir).is_some()
}

impl RunState {
    /// Writes the checkpoint into a fresh folder and swaps it in: a crash leaves the old one or
    /// the new one whole.
    fn save(&self, lora: &Lora, dir: &Path) -> Result<()> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e: std::io::Error| TrainError::Invalid(format!("{}: {e}", p.display()))
        };
        let (fresh, current, old) = (dir.join(".checkpoint.partial"), dir.join(CHECKPOINT), dir.join(".checkpoint.old"));
        let _ = std::fs::remove_dir_all(&fresh);
        std::fs::create_dir_all(&fresh).map_err(io(&fresh))?;
        lora.save(&fresh.join("adapters.safetensors"))?;
        let mut extra = Lora { layers: Default::default(), scale: lora.scale };
        for (prefix, part) in [("m", self.opt.moments().map(|m| m.0)), ("v", self.opt.moments().map(|m| m.1)), ("acc", self.acc.as_ref())] {
            for (name, l) in part.map(|p| &p.layers).into_iter().flatten() {
                extra.layers.insert(format!("{prefix}/{name}"), l.clone());
            }
        }
        if !extra.layers.is_empty() {
            extra.save(&fresh.join("optimizer.safetensors"))?;
        }
        let state = json!({
            "iteration": self.iteration,
            "trained_tokens": self.trained,
            "optimizer_step": self.opt.step,
            "shuffle": self.shuffle.state().to_string(),
            "order": self.order,
        });
        std::fs::write(fresh.join("trainer_state.json"), state.to_string()).map_err(io(&fresh))?;
        for entry in std::fs::read_dir(&fresh).map_err(io(&fresh))? {
            let path = entry.map_err(io(&fresh))?.path();
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        }
        if current.exists() {
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&current, &old).map_err(io(&current))?;
        }
        std::fs::rename(&fresh, &current).map_err(io(&current))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }

    /// The checkpoint in `dir` (or the one a crash left set aside), for `opts`.
    fn load(dir: &Path, opts: &TrainOptions) -> Result<(RunState, Lora)> {
        let current = checkpoint_in(dir).ok_or_else(|| TrainError::Invalid(format!("{} holds no checkpoint to resume", dir.display())))?;
        let text = std::fs::read_to_string(current.join("trainer_state.json")).map_err(|e| TrainError::Invalid(e.to_string()))?;
        let state: Value = serde_json::from_str(&text).map_err(|e| TrainError::Invalid(format!("trainer_state.json: {e}")))?;
        let field =
            |k: &str| state[k].as_u64().map(|v| v as usize).ok_or_else(|| TrainError::Invalid(format!("trainer_state.json has no {k}")));
        let lora = Lora::load(
            &current.join("adapters.safetensors"),
            opts.adapter_config["lora_parameters"]["scale"].as_f64().unwrap_or(20.0) as f32,
        )?;
        let extra = match current.join("optimizer.safetensors") {
            p if p.is_file() => Some(Lora::load(&p, lora.scale)?),
            _ => None,
        };
        let part = |prefix: &str| -> Option<Lora> {
            let layers: std::collections::BTreeMap<_, _> = extra
                .iter()
                .flat_map(|e| &e.layers)
                .filter_map(|(n, l)| n.strip_prefix(&format!("{prefix}/")).map(|n| (n.to_string(), l.clone())))
                .collect();
            (!layers.is_empty()).then_some(Lora { layers, scale: lora.scale })
        };
        let mut opt = Optimizer::new(opts.rule, opts.schedule.clone());
        opt.restore(field("optimizer_step")?, part("m").zip(part("v")));
        let shuffle = state["shuffle"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .map(Shuffle::resume)
            .ok_or_else(|| TrainError::Invalid("trainer_state.json has no shuffle state".into()))?;
        let order =
            state["order"].as_array().map(|o| o.iter().filter_map(|v| v.as_u64().map(|v| v as usize)).collect()).unwrap_or_default();
        let run = RunState { iteration: field("iteration")?, trained: field("trained_tokens")?, opt, shuffle, order, acc: part("acc") };
        Ok((run, lora))
    }
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    Validation {
        iter: usize,
        loss: f32,
        secs: f64,
    },
    Report {
        iter: usize,
        loss: f32,
        learning_rate: f32,
        iters_per_sec: f64,
        tokens_per_sec: f64,
        trained_tokens: usize,
    },
    Saved {
        iter: usize,
        path: PathBuf,
    },
    /// After every iteration: for a progress line.
    Iteration {
        iter: usize,
        of: usize,
        loss: f32,
        trained_tokens: usize,
    },
    /// The test split's loss.
    Tested {
        loss: f32,
    },
    /// A line of `mlx_lm.lora`'s output that carries no figures (its stages and warnings).
    Note(String),
}

impl Event {
    /// The line `mlx_lm.lora` prints for it (a report's peak memory from this process), or
    /// `None` for an iteration's progress, which has no line.
    pub fn line(&self) -> Option<String> {
        Some(match self {
            Event::Iteration { .. } => return None,
            Event::Note(text) => text.clone(),
            Event::Validation { iter, loss, secs } => format!("Iter {iter}: Val loss {loss:.3}, Val took {secs:.3}s"),
            Event::Report { iter, loss, learning_rate, iters_per_sec, tokens_per_sec, trained_tokens } => format!(
                "Iter {iter}: Train loss {loss:.3}, Learning Rate {}, It/sec {iters_per_sec:.3}, Tokens/sec {tokens_per_sec:.3}, Trained Tokens {trained_tokens}, Peak mem {:.3} GB",
                python_exp(*learning_rate),
                crate::peak_rss_bytes().unwrap_or(0) as f64 / 1e9
            ),
            Event::Saved { iter, path } => format!("Iter {iter}: Saved adapter weights to {}.", path.display()),
            Event::Tested { loss } => format!("Test loss {loss:.3}, Test ppl {:.3}.", loss.exp()),
        })
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

/// Refuses a rank no adapted layer can hold (0, or above a layer's inputs or outputs).
pub fn check_rank(layers: &[(String, usize, usize)], rank: usize) -> Result<()> {
    if rank == 0 {
        return Err(TrainError::Invalid("--rank must be at least 1".into()));
    }
    match layers.iter().find(|(_, inputs, outputs)| rank > *inputs.min(outputs)) {
        Some((name, inputs, outputs)) => {
            Err(TrainError::Invalid(format!("--rank {rank} is larger than {name} ({inputs} inputs, {outputs} outputs)")))
        }
        None => Ok(()),
    }
}

/// New adapters for `layers` (name, inputs, outputs) as mlx-lm initialises them: `lora_a`
/// uniform in ±1/√in, `lora_b` zero (so training starts from the base model exactly).
pub fn init_lora(layers: &[(String, usize, usize)], rank: usize, scale: f32, seed: u64) -> Lora {
    let mut rng = Shuffle::new(seed);
    let layers = layers
        .iter()
        .map(|(name, inputs, outputs)| {
            let bound = 1.0 / (*inputs as f32).sqrt();
            let a = (0..inputs * rank).map(|_| (rng.unit() * 2.0 - 1.0) * bound).collect();
            (name.clone(), LoraLayer { a, b: vec![0.0; rank * outputs], rank, m: Vec::new() })
        })
        .collect();
    Lora { layers, scale }
}

/// Makes `lora` DoRA adapters for `model`: each layer's magnitudes start at its weight's row
/// norms, so training starts from the base model exactly (mlx-lm's `DoRALinear.set_linear`).
pub fn init_dora(model: &TrainModel, lora: &mut Lora) -> Result<()> {
    for (name, layer) in lora.layers.iter_mut() {
        layer.m = model.dora_magnitudes(name)?;
    }
    Ok(())
}

/// The mean loss over `batches`, weighted by their target counts (mlx-lm's `evaluate`).
pub fn evaluate(model: &TrainModel, lora: &Lora, batches: &[Batch], mask: Mask) -> Result<f32> {
    let (mut total, mut tokens) = (0f64, 0usize);
    for b in batches {
        let (loss, n) = model.loss(b, lora, mask)?;
        total += loss as f64 * n as f64;
        tokens += n;
    }
    Ok((total / tokens.max(1) as f64) as f32)
}

/// Trains `lora` on `train` (validating on `valid`), saving as `opts` says.
pub fn train(
    model: &TrainModel,
    lora: &mut Lora,
    train: &[Batch],
    valid: &[Batch],
    opts: &TrainOptions,
    on_event: &mut dyn FnMut(Event),
) -> Result<()> {
    let (adapter_dir, config) = (&opts.adapter_dir, &opts.adapter_config);
    if train.is_empty() {
        return Err(TrainError::Invalid("no training batches".into()));
    }
    let mut run = if opts.resume {
        let (run, saved) = RunState::load(adapter_dir, opts)?;
        *lora = saved;
        run
    } else {
        let opt = Optimizer::new(opts.rule, opts.schedule.clone());
        RunState { iteration: 0, trained: 0, opt, shuffle: Shuffle::new(opts.seed), order: Vec::new(), acc: None }
    };
    model.check(lora)?;
    if run.order.iter().any(|&i| i >= train.len()) {
        return Err(TrainError::Invalid("the checkpoint's data order does not fit this dataset".into()));
    }
    // Only now that everything is checked: a refused run leaves nothing behind.
    std::fs::create_dir_all(adapter_dir).map_err(|e| TrainError::Invalid(format!("{}: {e}", adapter_dir.display())))?;
    let valid = &valid[..opts.val_batches.unwrap_or(valid.len()).min(valid.len())];
    let accumulate = opts.grad_accumulation_steps.max(1);
    let (mut losses, mut tokens) = (Vec::new(), 0usize);
    let mut since = Instant::now();
    for iter in run.iteration + 1..=opts.iters {
        if !valid.is_empty() && (iter == 1 || iter % opts.steps_per_eval.max(1) == 0 || iter == opts.iters) {
            let started = Instant::now();
            let loss = evaluate(model, lora, valid, opts.mask)?;
            on_event(Event::Validation { iter, loss, secs: started.elapsed().as_secs_f64() });
            since += started.elapsed();
        }
        if run.order.is_empty() {
            run.order = run.shuffle.permutation(train.len());
        }
        let batch = &train[run.order.pop().expect("refilled above")];
        let step = model.loss_and_grads(batch, lora, opts.mask)?;
        match &mut run.acc {
            None => run.acc = Some(step.grads),
            Some(sum) => add_lora(sum, &step.grads),
        }
        if iter % accumulate == 0 || iter == opts.iters {
            let mut grads = run.acc.take().expect("accumulated");
            let n = if iter % accumulate == 0 { accumulate } else { iter % accumulate };
            scale_lora(&mut grads, 1.0 / n as f32);
            run.opt.update(lora, &grads);
        }
        run.iteration = iter;
        losses.push(step.loss);
        tokens += step.ntoks;
        run.trained += step.ntoks;
        on_event(Event::Iteration { iter, of: opts.iters, loss: step.loss, trained_tokens: run.trained });
        if iter % opts.steps_per_report.max(1) == 0 || iter == opts.iters {
            let secs = since.elapsed().as_secs_f64().max(1e-9);
            let loss = losses.iter().sum::<f32>() / losses.len() as f32;
            on_event(Event::Report {
                iter,
                loss,
                learning_rate: run.opt.learning_rate(),
                iters_per_sec: losses.len() as f64 / secs,
                tokens_per_sec: tokens as f64 / secs,
                trained_tokens: run.trained,
            });
            (losses, tokens, since) = (Vec::new(), 0, Instant::now());
        }
        if iter % opts.save_every.max(1) == 0 || iter == opts.iters {
            let path = adapter_dir.join(opts.format.file());
            save(model, lora, adapter_dir, config, opts.format)?;
            run.save(lora, adapter_dir)?;
            if iter % opts.save_every.max(1) == 0 {
                let numbered = adapter_dir.join(format!("{iter:07}_adapters.safetensors"));
                write_atomically(&numbered, |tmp| lora.save(tmp))?;
            }
            on_event(Event::Saved { iter, path });
        } else if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            run.save(lora, adapter_dir)?;
        }
        if iter < opts.iters && opts.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            return Err(TrainError::Stopped { iter });
        }
    }
    Ok(())
}

/// The adapters in `dir` in `format`'s layout (mlx-lm's: `adapters.safetensors` and
/// `adapter_config.json`), each file complete or absent.
pub fn save(model: &TrainModel, lora: &Lora, dir: &Path, config: &Value, format: AdapterFormat) -> Result<()> {
    let weights = dir.join(format.file());
    let config_text = match format {
        AdapterFormat::Mlx => {
            write_atomically(&weights, |tmp| lora.save(tmp))?;
            Some(serde_json::to_string_pretty(config).map_err(|e| TrainError::Invalid(e.to_string()))?)
        }
        AdapterFormat::Peft => {
            let mut text = None;
            let base = config["model"].as_str().unwrap_or_default();
            write_atomically(&weights, |tmp| {
                text = Some(export::peft(lora, tmp, base)?);
                Ok(())
            })?;
            text
        }
        // llama.cpp reads everything from the file itself.
        AdapterFormat::Gguf => {
            write_atomically(&weights, |tmp| export::gguf(lora, model, tmp))?;
            None
        }
    };
    match config_text {
        Some(text) => write_atomically(&dir.join("adapter_config.json"), |tmp| {
            std::fs::write(tmp, &text).map_err(|e| TrainError::Invalid(format!("{}: {e}", tmp.display())))
        }),
        None => Ok(()),
    }
}

/// Writes through `write` into a temporary beside `path`, synced, then renamed over it.
fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let done = write(&tmp)
        .and_then(|()| {
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| TrainError::Invalid(format!("{}: {e}", tmp.display())))
        })
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| TrainError::Invalid(format!("{}: {e}", path.display()))));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

fn add_lora(sum: &mut Lora, g: &Lora) {
    for (name, s) in sum.layers.iter_mut() {
        let g = &g.layers[name];
        s.values_mut().zip(g.values()).for_each(|(a, b)| *a += b);
    }
}

fn scale_lora(l: &mut Lora, by: f32) {
    for layer in l.layers.values_mut() {
        layer.values_mut().for_each(|v| *v *= by);
    }
}

/// mlx-lm's `adapter_config.json` for these settings (what the engine and `mlx_lm` read back:
/// `fine_tune_type`, `num_layers`, `lora_parameters`), with the run's other arguments.
pub fn adapter_config(num_layers: i64, rank: usize, scale: f32, mut args: serde_json::Map<String, Value>) -> Value {
    args.entry("fine_tune_type").or_insert("lora".into());
    args.insert("num_layers".into(), num_layers.into());
    args.insert("lora_parameters".into(), json!({"rank": rank, "dropout": 0.0, "scale": scale}));
    Value::Object(args)
}

//! The training loop as `mlx_lm.lora` runs it: batches in a shuffled order epoch after epoch,
//! gradients accumulated over `grad_accumulation_steps` and averaged, an Adam update, a report
//! every `steps_per_report` iterations (the plain mean of the batch losses since the last one),
//! validation before the first update, every `steps_per_eval` and at the end (token-weighted),
//! and the adapters saved every `save_every` and at the end: `adapters.safetensors` with
//! `adapter_config.json`, each written to a temporary name and renamed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::adapter::{Lora, LoraLayer};
use crate::data::Shuffle;
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
}

/// What the loop reports as it goes.
#[derive(Clone, Debug)]
pub enum Event {
    Validation { iter: usize, loss: f32, secs: f64 },
    Report { iter: usize, loss: f32, learning_rate: f32, iters_per_sec: f64, tokens_per_sec: f64, trained_tokens: usize },
    Saved { iter: usize, path: PathBuf },
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
            (name.clone(), LoraLayer { a, b: vec![0.0; rank * outputs], rank })
        })
        .collect();
    Lora { layers, scale }
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
    std::fs::create_dir_all(adapter_dir).map_err(|e| TrainError::Invalid(format!("{}: {e}", adapter_dir.display())))?;
    let mut opt = Optimizer::new(opts.rule, opts.schedule.clone());
    let mut shuffle = Shuffle::new(opts.seed);
    let mut order = Vec::new();
    let valid = &valid[..opts.val_batches.unwrap_or(valid.len()).min(valid.len())];
    let accumulate = opts.grad_accumulation_steps.max(1);
    let mut acc: Option<Lora> = None;
    let (mut losses, mut tokens, mut trained) = (Vec::new(), 0usize, 0usize);
    let mut since = Instant::now();
    for iter in 1..=opts.iters {
        if !valid.is_empty() && (iter == 1 || iter % opts.steps_per_eval.max(1) == 0 || iter == opts.iters) {
            let started = Instant::now();
            let loss = evaluate(model, lora, valid, opts.mask)?;
            on_event(Event::Validation { iter, loss, secs: started.elapsed().as_secs_f64() });
            since += started.elapsed();
        }
        if order.is_empty() {
            order = shuffle.permutation(train.len());
        }
        let batch = &train[order.pop().expect("refilled above")];
        let step = model.loss_and_grads(batch, lora, opts.mask)?;
        match &mut acc {
            None => acc = Some(step.grads),
            Some(sum) => add_lora(sum, &step.grads),
        }
        if iter % accumulate == 0 || iter == opts.iters {
            let mut grads = acc.take().expect("accumulated");
            let n = if iter % accumulate == 0 { accumulate } else { iter % accumulate };
            scale_lora(&mut grads, 1.0 / n as f32);
            opt.update(lora, &grads);
        }
        losses.push(step.loss);
        tokens += step.ntoks;
        trained += step.ntoks;
        if iter % opts.steps_per_report.max(1) == 0 || iter == opts.iters {
            let secs = since.elapsed().as_secs_f64().max(1e-9);
            let loss = losses.iter().sum::<f32>() / losses.len() as f32;
            on_event(Event::Report {
                iter,
                loss,
                learning_rate: opt.learning_rate(),
                iters_per_sec: losses.len() as f64 / secs,
                tokens_per_sec: tokens as f64 / secs,
                trained_tokens: trained,
            });
            (losses, tokens, since) = (Vec::new(), 0, Instant::now());
        }
        if iter % opts.save_every.max(1) == 0 || iter == opts.iters {
            let path = adapter_dir.join("adapters.safetensors");
            save(lora, adapter_dir, config)?;
            if iter % opts.save_every.max(1) == 0 {
                let numbered = adapter_dir.join(format!("{iter:07}_adapters.safetensors"));
                write_atomically(&numbered, |tmp| lora.save(tmp))?;
            }
            on_event(Event::Saved { iter, path });
        }
    }
    Ok(())
}

/// `adapters.safetensors` and `adapter_config.json` in `dir`, each complete or absent.
pub fn save(lora: &Lora, dir: &Path, config: &Value) -> Result<()> {
    write_atomically(&dir.join("adapters.safetensors"), |tmp| lora.save(tmp))?;
    let text = serde_json::to_string_pretty(config).map_err(|e| TrainError::Invalid(e.to_string()))?;
    write_atomically(&dir.join("adapter_config.json"), |tmp| {
        std::fs::write(tmp, &text).map_err(|e| TrainError::Invalid(format!("{}: {e}", tmp.display())))
    })
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
        s.a.iter_mut().zip(&g.a).for_each(|(a, b)| *a += b);
        s.b.iter_mut().zip(&g.b).for_each(|(a, b)| *a += b);
    }
}

fn scale_lora(l: &mut Lora, by: f32) {
    for layer in l.layers.values_mut() {
        layer.a.iter_mut().chain(layer.b.iter_mut()).for_each(|v| *v *= by);
    }
}

/// mlx-lm's `adapter_config.json` for these settings (what the engine and `mlx_lm` read back:
/// `fine_tune_type`, `num_layers`, `lora_parameters`), with the run's other arguments.
pub fn adapter_config(num_layers: i64, rank: usize, scale: f32, mut args: serde_json::Map<String, Value>) -> Value {
    args.insert("fine_tune_type".into(), "lora".into());
    args.insert("num_layers".into(), num_layers.into());
    args.insert("lora_parameters".into(), json!({"rank": rank, "dropout": 0.0, "scale": scale}));
    Value::Object(args)
}

//! A run that dies after a checkpoint continues exactly where it was: the same adapters, bit for
//! bit, as a run that never stopped, with gradient accumulation caught mid-way, the optimiser's
//! moments and the data order restored.

use std::path::{Path, PathBuf};

use hearth_train::data::{batches, load_split, BatchOrder, Text};
use hearth_train::loss::Mask;
use hearth_train::trainer::{adapter_config, init_lora, train, Event, TrainOptions};
use hearth_train::{Lora, Rule, Schedule, TrainModel};

fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

#[test]
fn a_resumed_run_equals_an_unbroken_one() {
    let model = TrainModel::load(&tiny("hf/llama")).unwrap();
    let text = Text::load(&tiny("hf/llama")).unwrap();
    let (_, examples) = load_split(&tiny("lora/data"), "train", &text).unwrap().unwrap();
    let (batches, _) = batches(&examples, 4, 512, false, BatchOrder::Length).unwrap();
    let layers = model.adaptable(None, &[]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = |dir: &Path, resume: bool| TrainOptions {
        stop: None,
        iters: 12,
        rule: Rule::AdamW { weight_decay: 0.01 },
        schedule: Schedule::CosineDecay { init: 1e-3, decay_steps: 12, end: 1e-5 },
        steps_per_report: 4,
        steps_per_eval: 100,
        val_batches: None,
        save_every: 5,
        grad_accumulation_steps: 2,
        seed: 3,
        mask: Mask::MlxLm,
        adapter_dir: dir.to_path_buf(),
        adapter_config: adapter_config(-1, 4, 20.0, Default::default()),
        resume,
        format: Default::default(),
    };
    let unbroken = tmp.path().join("unbroken");
    let mut lora = init_lora(&layers, 4, 20.0, 0);
    train(&model, &mut lora, &batches, &[], &opts(&unbroken, false), &mut |_| {}).unwrap();

    // Killed after the checkpoint of iteration 5 (half-way through an accumulation).
    let broken = tmp.path().join("broken");
    let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lora = init_lora(&layers, 4, 20.0, 0);
        train(&model, &mut lora, &batches, &[], &opts(&broken, false), &mut |e| {
            if let Event::Saved { iter: 5, .. } = e {
                panic!("killed");
            }
        })
    }));
    assert!(died.is_err());
    let mut resumed = init_lora(&layers, 4, 20.0, 99);
    let mut first = None;
    train(&model, &mut resumed, &batches, &[], &opts(&broken, true), &mut |e| {
        if let Event::Report { iter, .. } = e {
            first.get_or_insert(iter);
        }
    })
    .unwrap();
    assert_eq!(first, Some(8), "it continues after iteration 5");
    assert_eq!(resumed, lora, "resumed adapters equal the unbroken run's");
    let saved = |dir: &Path| Lora::load(&dir.join("adapters.safetensors"), 20.0).unwrap();
    assert_eq!(saved(&broken), saved(&unbroken));

    // Asked to stop at iteration 7 (between saves, mid-accumulation): a checkpoint is saved there.
    let stopped = tmp.path().join("stopped");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut lora_s = init_lora(&layers, 4, 20.0, 0);
    let stopping = TrainOptions { stop: Some(stop.clone()), ..opts(&stopped, false) };
    let err = train(&model, &mut lora_s, &batches, &[], &stopping, &mut |e| {
        if let Event::Iteration { iter: 7, .. } = e {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap_err();
    assert!(matches!(err, hearth_train::TrainError::Stopped { iter: 7 }), "{err}");
    let mut first = None;
    let mut resumed = init_lora(&layers, 4, 20.0, 99);
    train(&model, &mut resumed, &batches, &[], &opts(&stopped, true), &mut |e| {
        if let Event::Iteration { iter, .. } = e {
            first.get_or_insert(iter);
        }
    })
    .unwrap();
    assert_eq!((first, &resumed), (Some(8), &lora), "a stopped run resumes at the next iteration");

    // An adapter made for another model is refused before training starts.
    let mut foreign = init_lora(&[("model.layers.0.self_attn.q_proj".to_string(), 32, 64)], 4, 20.0, 0);
    let err = train(&model, &mut foreign, &batches, &[], &opts(&tmp.path().join("foreign"), false), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("does not fit"), "{err}");
}

/// Gradient checkpointing recomputes each block in the backward pass: the same loss and
/// gradients, bit for bit, on an architecture with every optional piece (Gemma 2).
#[test]
fn gradient_checkpointing_changes_nothing() {
    for arch in ["hf/llama", "hf/gemma2"] {
        let mut model = TrainModel::load(&tiny(arch)).unwrap();
        let text = Text::load(&tiny(arch)).unwrap();
        let (_, examples) = load_split(&tiny("lora/data"), "train", &text).unwrap().unwrap();
        let (batches, _) = batches(&examples, 4, 512, false, BatchOrder::Length).unwrap();
        let lora = init_lora(&model.adaptable(None, &[]).unwrap(), 4, 20.0, 0);
        let kept = model.loss_and_grads(&batches[0], &lora, Mask::MlxLm).unwrap();
        model.set_grad_checkpoint(true);
        let recomputed = model.loss_and_grads(&batches[0], &lora, Mask::MlxLm).unwrap();
        assert_eq!(kept.loss.to_bits(), recomputed.loss.to_bits(), "{arch}");
        assert!(kept.grads == recomputed.grads, "{arch}");
    }
}

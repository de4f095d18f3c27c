//! Training against mlx-lm's own numbers (testdata/tiny/train, README there): for every
//! architecture, the loss, token count and every adapter gradient on the first batch; for the
//! trajectory cases, 20 Adam updates' losses and the final adapters.

use std::path::{Path, PathBuf};

use hearth_formats::safetensors::SafeTensors;
use hearth_train::loss::Mask;
use hearth_train::{Batch, Lora, Optimizer, Rule, Schedule, TrainModel};
use serde_json::Value;

fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

struct Case {
    dir: PathBuf,
    reference: Value,
}

impl Case {
    fn open(name: &str) -> Case {
        let dir = tiny(&format!("train/{name}"));
        let reference = serde_json::from_str(&std::fs::read_to_string(dir.join("ref.json")).unwrap()).unwrap();
        Case { dir, reference }
    }

    fn model(&self) -> TrainModel {
        let source = tiny(self.reference["model"].as_str().unwrap());
        if !source.ends_with("gemma2") {
            return TrainModel::load(&source).unwrap();
        }
        // mlx-lm's Gemma 2 ignores the sliding window (one causal mask for every layer), as
        // transformers and Hearth do not: its numbers are those of a window wider than the
        // batch, so that is what this comparison runs. (Real Gemma 2 windows are 4096 tokens.)
        let dir = std::env::temp_dir().join(format!("hearth-train-gemma2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
        let mut config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        config["sliding_window"] = 4096.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let model = TrainModel::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        model
    }

    fn adapters(&self) -> Lora {
        let scale = self.reference["lora"]["scale"].as_f64().unwrap() as f32;
        Lora::load(&self.dir.join("init_adapters.safetensors"), scale).unwrap()
    }

    fn batch(&self, i: usize) -> Batch {
        let b = &self.reference["batches"][i];
        let tokens = b["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect())
            .collect();
        let lengths =
            b["lengths"].as_array().unwrap().iter().map(|l| (l[0].as_u64().unwrap() as usize, l[1].as_u64().unwrap() as usize)).collect();
        Batch { tokens, lengths }
    }
}

/// Every element of `got` within `tolerance` of the file's tensors of the same names.
fn assert_close(case: &str, got: &Lora, file: &Path, tolerance: f32) -> f32 {
    let want = SafeTensors::open(file).unwrap();
    let mut worst = 0f32;
    for (name, t) in &want.tensors {
        let (layer, part) = name.rsplit_once('.').unwrap();
        let l = &got.layers[layer];
        let ours = match part {
            "lora_a" => &l.a,
            "lora_b" => &l.b,
            _ => &l.m,
        };
        let theirs: Vec<f32> = t.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(ours.len(), theirs.len(), "{case} {name}");
        for (a, b) in ours.iter().zip(&theirs) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst <= tolerance, "{case}: largest difference {worst} > {tolerance}");
    worst
}

const CASES: [&str; 8] = [
    "llama-f32-chat",
    "llama-f32-chat-mask-prompt",
    "llama-q4g32-chat",
    "mistral-f32-chat",
    "qwen2-f32-chat",
    "qwen3-f32-chat",
    "phi3-f32-chat",
    "gemma2-f32-chat",
];

#[test]
fn first_batch_loss_and_gradients_equal_mlx_lm() {
    for name in CASES {
        let case = Case::open(name);
        let step = case.model().loss_and_grads(&case.batch(0), &case.adapters(), Mask::MlxLm).unwrap();
        let want = &case.reference["first_batch"];
        let loss = want["loss"].as_f64().unwrap() as f32;
        assert_eq!(step.ntoks as u64, want["ntoks"].as_u64().unwrap(), "{name}: ntoks");
        assert!((step.loss - loss).abs() <= 1e-5 * loss, "{name}: loss {} against mlx-lm's {loss}", step.loss);
        let worst = assert_close(name, &step.grads, &case.dir.join("grads.safetensors"), 2e-4);
        eprintln!("{name}: loss {:.6} (mlx-lm {loss:.6}), largest gradient difference {worst:.2e}", step.loss);
    }
}

#[test]
fn adam_trajectories_equal_mlx_lm() {
    for name in ["llama-f32-chat", "llama-f32-chat-mask-prompt", "llama-q4g32-chat"] {
        let case = Case::open(name);
        let model = case.model();
        let mut lora = case.adapters();
        let adam = &case.reference["adam"];
        let mut opt = Optimizer::new(Rule::Adam, Schedule::Constant(adam["learning_rate"].as_f64().unwrap() as f32));
        let losses = adam["losses"].as_array().unwrap();
        let mut worst_loss = 0f32;
        for (i, want) in losses.iter().enumerate() {
            let step = model.loss_and_grads(&case.batch(i), &lora, Mask::MlxLm).unwrap();
            let diff = (step.loss - want.as_f64().unwrap() as f32).abs();
            assert!(diff <= 5e-3, "{name} step {i}: loss {} against mlx-lm's {want}", step.loss);
            worst_loss = worst_loss.max(diff);
            opt.update(&mut lora, &step.grads);
        }
        let worst = assert_close(name, &lora, &case.dir.join("final_adapters.safetensors"), 5e-3);
        eprintln!("{name}: {} steps, losses within {worst_loss:.2e}, final adapters within {worst:.2e}", losses.len());
    }
}

/// The corrected mask drops one padding target per padded row.
#[test]
fn the_corrected_mask_drops_the_padding_target() {
    let case = Case::open("llama-f32-chat");
    let batch = case.batch(0);
    let padded = batch.lengths.iter().filter(|&&(_, len)| len < batch.tokens[0].len()).count();
    let model = case.model();
    let (mlx, fixed) = (
        model.loss_and_grads(&batch, &case.adapters(), Mask::MlxLm).unwrap(),
        model.loss_and_grads(&batch, &case.adapters(), Mask::Corrected).unwrap(),
    );
    assert_eq!(mlx.ntoks - fixed.ntoks, padded);
}

/// The data pipeline against mlx-lm's: `lora/data/train.jsonl` (chat records) through hf/llama's
/// chat template, ordered as mlx-lm orders them, cut into batches of 4 and padded to 32·k + 1,
/// gives exactly the batches mlx-lm's `iterate_batches` fed its run (in another order: the
/// shuffle is NumPy's), with the prompt offsets under `--mask-prompt`. Ordered by length
/// instead (the default), the batches pad less.
#[test]
fn batches_equal_mlx_lm_s() {
    use hearth_train::data::{batches, load_split, BatchOrder, Format, Text};
    let text = Text::load(&tiny("hf/llama")).unwrap();
    let (format, examples) = load_split(&tiny("lora/data"), "train", &text).unwrap().unwrap();
    assert_eq!(format, Format::Chat);
    for (name, mask_prompt) in [("llama-f32-chat", false), ("llama-f32-chat-mask-prompt", true)] {
        let case = Case::open(name);
        let (ours, truncated) = batches(&examples, 4, 512, mask_prompt, BatchOrder::MlxLm).unwrap();
        assert!(!truncated);
        for i in 0..case.reference["batches"].as_array().unwrap().len() {
            let theirs = case.batch(i);
            assert!(
                ours.iter().any(|b| b.tokens == theirs.tokens && b.lengths == theirs.lengths),
                "{name}: mlx-lm's batch {i} is not one of ours"
            );
        }
    }
}

/// QLoRA straight on a GGUF file (llama.cpp's blocks, Llama's interleaved Q/K rows): the same
/// loss and gradients as on the float32 Hugging Face copy of that file (its values exactly),
/// for Llama (Q8_0) and Qwen2 (Q4_1), with the adapters in Hugging Face's layout either way.
#[test]
fn a_gguf_base_trains_as_its_float_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let case = Case::open("llama-f32-chat");
    for file in ["llama-Q8_0", "qwen2-Q4_1"] {
        let gguf = tiny(&format!("gguf/{file}.gguf"));
        let float = tmp.path().join(file);
        hearth_convert::to_hf(&gguf, &float, &hearth_convert::MlxOptions::default()).unwrap();
        let (a, b) = (TrainModel::load(&gguf).unwrap(), TrainModel::load(&float).unwrap());
        let lora = case.adapters();
        let batch = case.batch(0);
        let (x, y) = (a.loss_and_grads(&batch, &lora, Mask::MlxLm).unwrap(), b.loss_and_grads(&batch, &lora, Mask::MlxLm).unwrap());
        assert!((x.loss - y.loss).abs() <= 1e-5 * y.loss, "{file}: {} against {}", x.loss, y.loss);
        let mut worst = 0f32;
        for (name, l) in &x.grads.layers {
            let m = &y.grads.layers[name];
            for (p, q) in l.a.iter().chain(&l.b).zip(m.a.iter().chain(&m.b)) {
                worst = worst.max((p - q).abs());
            }
        }
        assert!(worst <= 1e-4, "{file}: gradients differ by {worst}");
    }
}

/// DoRA, mlx-lm's `DoRALinear` (testdata/tiny/train-dora, made by bench/make_dora_fixture.py):
/// the initial magnitudes, the first batch's loss and the gradients of `lora_a`, `lora_b` and
/// `m`, then 10 Adam updates' losses and final adapters.
#[test]
fn dora_equals_mlx_lm() {
    let case = Case::open("llama-f32-chat");
    let dir = tiny("train-dora");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("ref.json")).unwrap()).unwrap();
    let model = case.model();
    let mut lora = Lora::load(&dir.join("init_adapters.safetensors"), 20.0).unwrap();
    assert!(lora.is_dora());
    let mut fresh = lora.clone();
    hearth_train::trainer::init_dora(&model, &mut fresh).unwrap();
    for (name, l) in &lora.layers {
        for (a, b) in l.m.iter().zip(&fresh.layers[name].m) {
            assert!((a - b).abs() <= 1e-5 * a.abs(), "{name}: magnitude {b} against mlx-lm's {a}");
        }
    }
    let step = model.loss_and_grads(&case.batch(0), &lora, Mask::MlxLm).unwrap();
    let want = reference["first_batch"]["loss"].as_f64().unwrap() as f32;
    assert_eq!(step.ntoks as u64, reference["first_batch"]["ntoks"].as_u64().unwrap());
    assert!((step.loss - want).abs() <= 1e-5 * want, "loss {} against mlx-lm's {want}", step.loss);
    let worst_grad = assert_close("dora", &step.grads, &dir.join("grads.safetensors"), 2e-4);
    let mut opt = Optimizer::new(Rule::Adam, Schedule::Constant(1e-3));
    let mut worst_loss = 0f32;
    for (i, want) in reference["adam_losses"].as_array().unwrap().iter().enumerate() {
        let step = model.loss_and_grads(&case.batch(i), &lora, Mask::MlxLm).unwrap();
        let diff = (step.loss - want.as_f64().unwrap() as f32).abs();
        assert!(diff <= 5e-3, "step {i}: loss {} against mlx-lm's {want}", step.loss);
        worst_loss = worst_loss.max(diff);
        opt.update(&mut lora, &step.grads);
    }
    let worst = assert_close("dora", &lora, &dir.join("final_adapters.safetensors"), 5e-3);
    eprintln!("dora: loss {:.6} (mlx-lm {want:.6}), gradients within {worst_grad:.2e}; 10 steps within {worst_loss:.2e}, final adapters within {worst:.2e}", step.loss);
}

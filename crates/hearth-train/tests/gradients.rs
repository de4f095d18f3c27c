//! Analytic adapter gradients against central differences of the loss, on every architecture
//! and on quantised bases as they are stored (GGUF Q8_0 and Q4_K, MLX 4-bit): the backward pass
//! is the derivative of the forward pass, whatever the base's format; for DoRA too.

use std::path::{Path, PathBuf};

use hearth_train::data::{batches, load_split, BatchOrder, Text};
use hearth_train::loss::Mask;
use hearth_train::trainer::init_lora;
use hearth_train::{Batch, Lora, TrainModel};

fn tiny(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny").join(path)
}

/// The first batch (2 rows, prompts masked) of the tiny chat data, tokenised with `text_dir`'s
/// tokenizer.
fn first_batch(text_dir: &str) -> Batch {
    let text = Text::load(&tiny(text_dir)).unwrap();
    let (_, examples) = load_split(&tiny("lora/data"), "train", &text).unwrap().unwrap();
    batches(&examples, 2, 512, true, BatchOrder::Length).unwrap().0.swap_remove(0)
}

/// lora_b starts at zero, where lora_a's gradient vanishes: moves it off first.
fn move_b_off_zero(lora: &mut Lora) {
    for (i, l) in lora.layers.values_mut().enumerate() {
        l.b.iter_mut().enumerate().for_each(|(j, v)| *v = (((i * 7919 + j * 104_729) % 2001) as f32 / 1000.0 - 1.0) * 0.05);
    }
}

#[test]
fn adapter_gradients_are_the_loss_s_derivative() {
    let bases = [
        "hf/llama",
        "hf/mistral",
        "hf/qwen2",
        "hf/qwen3",
        "hf/phi3",
        "hf/gemma2",
        "gguf/llama-Q8_0.gguf",
        "gguf/llama256-Q4_K_M.gguf",
        "mlx/llama-q4g32-bf16",
    ];
    let dora = ["hf/llama", "gguf/llama-Q8_0.gguf"].map(|b| (b, true));
    for (base, dora) in bases.map(|b| (b, false)).into_iter().chain(dora) {
        let model = TrainModel::load(&tiny(base)).unwrap();
        // The MLX fixture is the tiny Llama quantised, without its tokenizer files.
        let batch = &first_batch(if base.starts_with("mlx/") { "hf/llama" } else { base });
        let mut lora = init_lora(&model.adaptable(None, &[]).unwrap(), 4, 2.0, 1);
        if dora {
            hearth_train::trainer::init_dora(&model, &mut lora).unwrap();
        }
        move_b_off_zero(&mut lora);
        let step = model.loss_and_grads(batch, &lora, Mask::MlxLm).unwrap();
        let names: Vec<String> = lora.layers.keys().cloned().collect();
        let mut worst = 0f64;
        // The first, a middle and the last adapted layer; in each, the largest entries of A's
        // and B's gradients.
        for name in [&names[0], &names[names.len() / 2], &names[names.len() - 1]] {
            // DoRA's A and B gradients hold its norm constant (mlx-lm's stop_gradient), so they
            // are not the loss's derivative by design (tests/mlx_lm.rs checks them against
            // mlx-lm's); the magnitudes' are.
            for part in if dora { &["m"][..] } else { &["a", "b"][..] } {
                let pick = |l: &hearth_train::LoraLayer| match *part {
                    "a" => l.a.clone(),
                    "b" => l.b.clone(),
                    _ => l.m.clone(),
                };
                let grads = &pick(&step.grads.layers[name]);
                let (at, &analytic) = grads.iter().enumerate().max_by(|x, y| x.1.abs().total_cmp(&y.1.abs())).unwrap();
                let eps = 1e-2f32;
                let loss_at = |delta: f32| {
                    let mut moved: Lora = lora.clone();
                    let l = moved.layers.get_mut(name).unwrap();
                    (match *part {
                        "a" => &mut l.a,
                        "b" => &mut l.b,
                        _ => &mut l.m,
                    })[at] += delta;
                    model.loss(batch, &moved, Mask::MlxLm).unwrap().0 as f64
                };
                let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps as f64);
                let error = (numeric - analytic as f64).abs();
                worst = worst.max(error / numeric.abs().max(1e-3));
                assert!(
                    error <= 2e-3 + 2e-2 * numeric.abs(),
                    "{base} {name}.lora_{part}[{at}]: analytic {analytic}, central difference {numeric}"
                );
            }
        }
        eprintln!("{base}{}: largest relative difference {worst:.2e}", if dora { " (DoRA)" } else { "" });
    }
}

/// The fast products (8-bit activations through the weights' own blocks forward, through an
/// 8-bit copy of their transpose backward) on bases whose formats have integer kernels: the
/// loss within 1 % of the exact one, every adapter gradient pointing the same way (cosine ≥
/// 0.99), and the path really taken (the numbers differ).
#[test]
fn fast_products_stay_close_to_exact() {
    use hearth_kernels::Precision;
    for base in ["gguf/llama-Q8_0.gguf", "gguf/llama256-Q4_K_M.gguf", "mlx/llama-q4g32-bf16"] {
        let mut model = TrainModel::load(&tiny(base)).unwrap();
        // The MLX fixture is the tiny Llama quantised, without its tokenizer files.
        let batch = first_batch(if base.starts_with("mlx/") { "hf/llama" } else { base });
        let mut lora = init_lora(&model.adaptable(None, &[]).unwrap(), 4, 2.0, 1);
        move_b_off_zero(&mut lora);
        let exact = model.loss_and_grads(&batch, &lora, Mask::MlxLm).unwrap();
        model.set_precision(Precision::Fast);
        let fast = model.loss_and_grads(&batch, &lora, Mask::MlxLm).unwrap();
        assert_ne!(fast.loss, exact.loss, "{base}: the fast products were not taken");
        assert!((fast.loss - exact.loss).abs() <= 1e-2 * exact.loss, "{base}: loss {} fast, {} exact", fast.loss, exact.loss);
        let mut lowest = 1f64;
        for (name, e) in &exact.grads.layers {
            let f = &fast.grads.layers[name];
            for (fv, ev) in [(&f.a, &e.a), (&f.b, &e.b)] {
                let dot: f64 = fv.iter().zip(ev.iter()).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
                let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                let cosine = dot / (norm(fv) * norm(ev));
                lowest = lowest.min(cosine);
                assert!(cosine >= 0.99, "{base} {name}: gradient cosine {cosine} to the exact one");
            }
        }
        eprintln!("{base}: loss {} fast / {} exact, lowest gradient cosine {lowest:.5}", fast.loss, exact.loss);
    }
}

//! `hearth train` as a user runs it: the tiny Llama fine-tuned on the fixtures' chat data with
//! mlx-lm's settings for it (testdata/tiny/lora/lora_config.yaml), its report lines, its
//! adapters loaded by the engine and fused by `hearth fuse` into a model that runs.

mod common;

use std::path::Path;

use common::*;

#[test]
fn a_fine_tune_trains_saves_and_fuses() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let adapters = tmp.path().join("adapters");
    let out = ok(hearth(&home)
        .args(["train", "-m"])
        .arg(tiny("hf/llama"))
        .arg("--data")
        .arg(tiny("lora/data"))
        .arg("--adapter-path")
        .arg(&adapters)
        .args(["--iters", "30", "--learning-rate", "1e-3", "--rank", "4", "--num-layers", "-1"])
        .args(["--steps-per-report", "5", "--steps-per-eval", "10", "--save-every", "30"]));
    // mlx-lm's own run of this configuration printed the same count (lora/train_log.txt).
    assert!(out.contains("Trainable parameters: 0.254% (0.008M/3.220M)"), "{out}");
    let val: Vec<f32> =
        out.lines().filter_map(|l| l.split("Val loss ").nth(1)).map(|rest| rest.split(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(val.len(), 4, "validation at iterations 1, 10, 20 and 30:\n{out}");
    assert!(val[3] < val[0] * 0.5, "validation loss falls: {val:?}");
    assert!(out.contains("Iter 5: Train loss") && out.contains("Learning Rate 1.000e-03"), "{out}");
    assert!(out.contains("Saved final weights to"), "{out}");
    for file in ["adapters.safetensors", "adapter_config.json", "0000030_adapters.safetensors"] {
        assert!(adapters.join(file).is_file(), "{file}");
    }

    // The engine serves the adapters, and their update is what training gave.
    use hearth_engine::model::SeqInput;
    use hearth_engine::{LoadOptions, LoadedModel, Precision};
    let logits = |adapter: Option<&Path>| {
        let opts = LoadOptions { precision: Precision::Exact, adapter: adapter.map(Path::to_path_buf), ..Default::default() };
        let m = LoadedModel::load_with(&tiny("hf/llama"), opts).unwrap();
        let ids = m.tokenizer.encode("<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n<|im_start|>assistant\n", false).unwrap();
        let mut cache = m.model.new_cache(64).unwrap();
        m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0)
    };
    let (base, tuned) = (logits(None), logits(Some(&adapters)));
    assert!(base.iter().zip(&tuned).any(|(a, b)| (a - b).abs() > 0.1), "the adapter changes the model");

    // Fused into the base, it runs as the base with the adapter.
    let fused = tmp.path().join("fused");
    ok(hearth(&home).args(["fuse", "-m"]).arg(tiny("hf/llama")).arg("--adapter").arg(&adapters).args(["--to", "hf", "--out"]).arg(&fused));
    let m = LoadedModel::load_with(&fused, LoadOptions { precision: Precision::Exact, ..Default::default() }).unwrap();
    let ids = m.tokenizer.encode("<|im_start|>user\nWhat is 50 plus 29?<|im_end|>\n<|im_start|>assistant\n", false).unwrap();
    let mut cache = m.model.new_cache(64).unwrap();
    let fused_logits = m.model.forward(&mut [SeqInput::new(&ids, &mut cache)], false).unwrap().swap_remove(0);
    let worst = tuned.iter().zip(&fused_logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    // hf/llama keeps some weights in float16: the fused weights are rounded to it.
    assert!(worst < 0.05, "fused against served: {worst}");
}

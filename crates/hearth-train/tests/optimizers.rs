//! The optimisers and schedules against mlx's own (testdata/tiny/train-optim, made by
//! bench/make_optimizer_fixture.py): twelve updates of a six-value parameter by Adam, AdamW and
//! SGD, constant, cosine-decaying, linear and warmed-up rates; every value within 3e-6 relative.

use std::collections::BTreeMap;
use std::path::Path;

use hearth_train::{Lora, LoraLayer, Optimizer, Rule, Schedule};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn one_layer(values: Vec<f32>) -> Lora {
    Lora { layers: BTreeMap::from([("w".to_string(), LoraLayer { a: values, b: Vec::new(), rank: 1, m: Vec::new() })]), scale: 1.0 }
}

#[test]
fn updates_equal_mlx_s() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tiny/train-optim/mlx-optimizers.json");
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let grads: Vec<Vec<f32>> = reference["grads"].as_array().unwrap().iter().map(floats).collect();
    for (name, case) in reference["cases"].as_object().unwrap() {
        let lr = case["lr"].as_f64().map(|v| v as f32).unwrap_or(0.0);
        let schedule = Schedule::from_mlx_lm(case.get("schedule"), lr).unwrap();
        let rule = match case["kind"].as_str().unwrap() {
            "adam" => Rule::Adam,
            "adamw" => Rule::AdamW { weight_decay: case["weight_decay"].as_f64().unwrap() as f32 },
            _ => Rule::Sgd,
        };
        let mut opt = Optimizer::new(rule, schedule);
        let mut params = one_layer(floats(&reference["p0"]));
        for (i, (g, want)) in grads.iter().zip(case["out"].as_array().unwrap()).enumerate() {
            opt.update(&mut params, &one_layer(g.clone()));
            for (a, b) in params.layers["w"].a.iter().zip(floats(want)) {
                // A few float32 roundings apart (mlx orders the update's operations its own way).
                assert!((a - b).abs() <= 3e-6 * b.abs().max(1.0), "{name} step {i}: {a} against mlx's {b}");
            }
        }
    }
}

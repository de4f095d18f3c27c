//! Trained adapters in the layouts other tools read besides mlx-lm's: PEFT's
//! (`adapter_model.safetensors` with `lora_A` `[r, in]` and `lora_B` `[out, r]`, `lora_alpha`
//! = scale · r, as `PeftModel.from_pretrained` loads it) and llama.cpp's GGUF LoRA
//! (`blk.N.<tensor>.weight.lora_a` / `.lora_b`, as `convert_lora_to_gguf.py` writes it for
//! `llama-server --lora`), with Llama's Q/K rows in llama.cpp's interleaved order.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use hearth_engine::weights::gguf_name;
use hearth_formats::gguf::{GgmlType, GgufStream, GgufTensorSpec, Value};
use hearth_formats::safetensors::{SafeTensorsWriter, TensorSpec};
use hearth_formats::DType;
use serde_json::json;

use crate::{Lora, Result, TrainError, TrainModel};

/// The layout `hearth train --format` writes its adapters in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterFormat {
    /// mlx-lm's adapters.safetensors + adapter_config.json (Hearth, mlx-lm, hearth fuse).
    #[default]
    Mlx,
    /// PEFT's adapter_model.safetensors + adapter_config.json (PeftModel.from_pretrained).
    Peft,
    /// llama.cpp's adapters.gguf (llama-server --lora), Llama's Q/K rows in its order.
    Gguf,
}

impl AdapterFormat {
    /// The adapter weights' file name in the adapter directory.
    pub fn file(self) -> &'static str {
        match self {
            AdapterFormat::Mlx => "adapters.safetensors",
            AdapterFormat::Peft => "adapter_model.safetensors",
            AdapterFormat::Gguf => "adapters.gguf",
        }
    }
}

/// The rank every layer shares (PEFT and llama.cpp take one); DoRA adapters stay in mlx-lm's
/// layout (PEFT's magnitude is another quantity, llama.cpp has none).
fn rank(lora: &Lora) -> Result<usize> {
    if lora.is_dora() {
        return Err(TrainError::Invalid("DoRA adapters are written in mlx-lm's layout only".into()));
    }
    let ranks: BTreeSet<usize> = lora.layers.values().map(|l| l.rank).collect();
    match ranks.len() {
        1 => Ok(ranks.into_iter().next().expect("one")),
        _ => Err(TrainError::Invalid(format!("the adapters' layers have ranks {ranks:?}; PEFT and GGUF adapters take one rank"))),
    }
}

/// `m` `[rows, cols]` as `[cols, rows]`.
fn transposed(m: &[f32], rows: usize) -> Vec<f32> {
    let cols = m.len() / rows;
    (0..cols).flat_map(|c| (0..rows).map(move |r| m[r * cols + c])).collect()
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// PEFT's weights file at `weights` and the text of its `adapter_config.json`, for a base
/// named `base`.
pub(crate) fn peft(lora: &Lora, weights: &Path, base: &str) -> Result<String> {
    let r = rank(lora)?;
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let (mut modules, mut layers) = (BTreeSet::new(), BTreeSet::new());
    for (name, l) in &lora.layers {
        let (inputs, outputs) = (l.a.len() / r, l.b.len() / r);
        tensors.insert(format!("base_model.model.{name}.lora_A.weight"), (vec![r, inputs], transposed(&l.a, inputs)));
        tensors.insert(format!("base_model.model.{name}.lora_B.weight"), (vec![outputs, r], transposed(&l.b, r)));
        modules.insert(name.rsplit('.').next().unwrap_or(name).to_string());
        if let Some(i) = name.strip_prefix("model.layers.").and_then(|rest| rest.split('.').next()?.parse::<usize>().ok()) {
            layers.insert(i);
        }
    }
    let specs: Vec<TensorSpec> =
        tensors.iter().map(|(name, (shape, _))| TensorSpec { name: name.clone(), dtype: DType::F32, shape: shape.clone() }).collect();
    let mut w = SafeTensorsWriter::create(weights, &BTreeMap::new(), &specs)?;
    for (name, (_, values)) in &tensors {
        w.write(name, &bytes(values))?;
    }
    w.finish()?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": r,
        "lora_alpha": lora.scale as f64 * r as f64,
        "lora_dropout": 0.0,
        "target_modules": modules,
        "layers_to_transform": layers,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "inference_mode": true,
    });
    serde_json::to_string_pretty(&config).map_err(|e| TrainError::Invalid(e.to_string()))
}

/// llama.cpp's GGUF LoRA for `model`'s GGUF form at `path`.
pub(crate) fn gguf(lora: &Lora, model: &TrainModel, path: &Path) -> Result<()> {
    let r = rank(lora)?;
    let cfg = model.config();
    let arch = hearth_convert::gguf_arch(cfg.arch).map_err(|e| TrainError::Invalid(e.to_string()))?;
    let mut tensors = Vec::new();
    for (name, l) in &lora.layers {
        let gguf = gguf_name(arch, &format!("{name}.weight"))
            .ok_or_else(|| TrainError::Invalid(format!("{name}: no GGUF name for this layer of a {arch} model")))?;
        let (inputs, outputs) = (l.a.len() / r, l.b.len() / r);
        let mut b = transposed(&l.b, r);
        // llama.cpp keeps Llama's Q and K rows interleaved per head, as its base weights are.
        let heads = match (arch, name.rsplit('.').next()) {
            ("llama", Some("q_proj")) => Some(cfg.num_heads),
            ("llama", Some("k_proj")) => Some(cfg.num_kv_heads),
            _ => None,
        };
        if let Some(heads) = heads {
            b = hearth_convert::permute_heads(&b, heads, cfg.head_dim, r, true);
        }
        tensors.push((format!("{gguf}.lora_a"), vec![r, inputs], transposed(&l.a, inputs)));
        tensors.push((format!("{gguf}.lora_b"), vec![outputs, r], b));
    }
    let metadata = [
        ("general.architecture".to_string(), Value::String(arch.into())),
        ("general.type".to_string(), Value::String("adapter".into())),
        ("adapter.type".to_string(), Value::String("lora".into())),
        ("adapter.lora.alpha".to_string(), Value::F32(lora.scale * r as f32)),
    ];
    let specs = tensors.iter().map(|(name, shape, _)| GgufTensorSpec::new(name.clone(), shape, GgmlType::F32)).collect();
    let io = |e: std::io::Error| TrainError::Invalid(format!("{}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = GgufStream::new(std::io::BufWriter::new(file), &metadata, specs).map_err(io)?;
    for (name, _, values) in &tensors {
        out.write(name, &bytes(values)).map_err(io)?;
    }
    out.finish().map_err(io)?.flush().map_err(io)
}

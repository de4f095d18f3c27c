//! A finished run's export bundle and its figures: the bundle is `adapters.safetensors`,
//! `adapter_config.json`, `config.json` (the run's settings) and `metadata.json` (base model,
//! dataset, run id, metrics, time, and each file's SHA-256), the layout `/admin/scan` reads,
//! written into a staging folder and renamed into place, so it is whole or absent. The loss
//! curves are drawn as SVG; a run's metrics export as CSV.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{io, write_atomically, HubError, Result};

/// One recorded value of a run.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Metric {
    pub iter: usize,
    pub name: String,
    pub value: f64,
    /// Seconds since the run (or its resumption) started.
    pub at: f64,
}

/// Writes the bundle of the adapters in `adapters` (mlx-lm's layout) to `bundle`; returns
/// `metadata` with the files' hashes added, as written. `fuse`, given the bundle's staging
/// folder (the adapter files already in it), writes a fused model there and names it; the
/// metadata records the name as `fused`.
pub fn write_bundle(
    adapters: &Path,
    parameters: &Value,
    mut metadata: Value,
    bundle: &Path,
    fuse: Option<impl FnOnce(&Path) -> Result<&'static str>>,
) -> Result<Value> {
    if bundle.exists() {
        return Err(HubError::Conflict(format!("{} exists", bundle.display())));
    }
    let parent = bundle.parent().ok_or_else(|| HubError::Invalid("an export needs a folder".into()))?;
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let staging = parent.join(format!(".{}.partial", bundle.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    let mut hashes = serde_json::Map::new();
    for file in ["adapters.safetensors", "adapter_config.json"] {
        let from = adapters.join(file);
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        hashes.insert(file.into(), sha256(&bytes).into());
        write_atomically(&staging.join(file), &bytes)?;
    }
    let config = serde_json::to_vec_pretty(parameters).map_err(|e| HubError::Invalid(e.to_string()))?;
    hashes.insert("config.json".into(), sha256(&config).into());
    write_atomically(&staging.join("config.json"), &config)?;
    metadata["sha256"] = Value::Object(hashes);
    if let Some(fuse) = fuse {
        match fuse(&staging) {
            Ok(name) => metadata["fused"] = name.into(),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        }
    }
    let text = serde_json::to_vec_pretty(&metadata).map_err(|e| HubError::Invalid(e.to_string()))?;
    write_atomically(&staging.join("metadata.json"), &text)?;
    std::fs::rename(&staging, bundle).map_err(io(bundle))?;
    Ok(metadata)
}

pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The run's metrics as CSV: `iter,name,value,seconds`.
pub fn metrics_csv(metrics: &[Metric]) -> String {
    let mut out = String::from("iter,name,value,seconds\n");
    for m in metrics {
        out.push_str(&format!("{},{},{},{:.3}\n", m.iter, m.name, m.value, m.at));
    }
    out
}

/// The training and validation losses of one or more runs against the iteration, as an SVG
/// image: one colour per run, solid for training, dashed for validation.
pub fn loss_svg(runs: &[(&str, &[Metric])]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 360.0;
    const PAD: f64 = 48.0;
    let losses = |m: &[Metric], name: &str| -> Vec<(f64, f64)> {
        m.iter().filter(|x| x.name == name && x.value.is_finite()).map(|x| (x.iter as f64, x.value)).collect()
    };
    let all: Vec<(f64, f64)> = runs.iter().flat_map(|(_, m)| [losses(m, "train_loss"), losses(m, "val_loss")]).flatten().collect();
    let max_x = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if lo.is_finite() { (lo.min(hi - 1e-6), hi) } else { (0.0, 1.0) };
    let x = |v: f64| PAD + v / max_x * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - (v - lo) / (hi - lo) * (H - 2.0 * PAD);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/><line x1=\"{PAD}\" y1=\"{PAD}\" x2=\"{PAD}\" y2=\"{b}\" stroke=\"#444\"/>\
         <text x=\"{r}\" y=\"{t}\" text-anchor=\"end\">iteration {max_x}</text><text x=\"4\" y=\"{PAD}\">{hi:.3}</text><text x=\"4\" y=\"{b}\">{lo:.3}</text>",
        b = H - PAD,
        r = W - PAD,
        t = H - PAD + 16.0,
    );
    const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
    for (i, (label, m)) in runs.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (name, dash) in [("train_loss", ""), ("val_loss", " stroke-dasharray=\"5 4\"")] {
            let points: Vec<String> = losses(m, name).iter().map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b))).collect();
            if !points.is_empty() {
                svg += &format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"{}\"/>", points.join(" "));
            }
        }
        let ly = PAD + 14.0 * i as f64;
        svg += &format!(
            "<text x=\"{}\" y=\"{ly}\" fill=\"{colour}\" text-anchor=\"end\">{} (train solid, val dashed)</text>",
            W - PAD,
            escape(label)
        );
    }
    svg + "</svg>"
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

//! Writing models in other formats, from a Hugging Face or MLX float directory or a GGUF file:
//! an MLX directory cast (`--dtype`) and optionally affine-quantised as `mlx_lm.convert` writes
//! it (bit for bit from the same floats), a Hugging Face directory, or a GGUF file of any of
//! llama.cpp's common types as `convert_hf_to_gguf.py` and `llama-quantize` write it
//! ([`write_gguf`]). Tensors are read, converted and written one at a time into a temporary
//! name that is renamed into place once complete, so memory is bounded by the largest tensor
//! and a crash never leaves a half-written model under the final name.

mod gguf;
mod gguf_meta;
pub mod gguf_types;
mod write_gguf;

pub use gguf_types::GgufFileType;
pub use write_gguf::{to_gguf, GgufOptions};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use hearth_engine::lora::LoraAdapter;
use hearth_formats::safetensors::{model_files, SafeTensors, SafeTensorsWriter, TensorSpec, TensorView};
use hearth_formats::{DType, FormatError};
use hearth_kernels::quant::quantize_mlx_affine;
use hearth_kernels::{dequantize_row, FloatFormat, RowFormat};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The request cannot be carried out on this source (named in the message).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0} exists; pass --force to replace it")]
    Exists(PathBuf),
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io { path: path.to_path_buf(), source }
}

/// The float type weights are stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F16,
    BF16,
}

impl FloatType {
    pub fn parse(name: &str) -> Option<FloatType> {
        match name {
            "float32" => Some(FloatType::F32),
            "float16" => Some(FloatType::F16),
            "bfloat16" => Some(FloatType::BF16),
            _ => None,
        }
    }

    fn dtype(self) -> DType {
        match self {
            FloatType::F32 => DType::F32,
            FloatType::F16 => DType::F16,
            FloatType::BF16 => DType::BF16,
        }
    }

    fn of(dtype: DType) -> Option<FloatType> {
        match dtype {
            DType::F32 => Some(FloatType::F32),
            DType::F16 => Some(FloatType::F16),
            DType::BF16 => Some(FloatType::BF16),
            _ => None,
        }
    }

    /// `v` as this type holds it.
    fn round(self, v: f32) -> f32 {
        match self {
            FloatType::F32 => v,
            FloatType::F16 => f16::from_f32(v).to_f32(),
            FloatType::BF16 => bf16::from_f32(v).to_f32(),
        }
    }

    pub(crate) fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            FloatType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatType::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            FloatType::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        }
    }
}

/// MLX's affine quantisation: `bits` in {2, 3, 4, 5, 6, 8}, groups of `group_size` along rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affine {
    pub bits: u32,
    pub group_size: usize,
}

#[derive(Clone, Debug, Default)]
pub struct MlxOptions {
    /// Cast every float tensor to this type first (`None`: each keeps its own).
    pub dtype: Option<FloatType>,
    pub quantize: Option<Affine>,
    /// Replace an existing output.
    pub force: bool,
    /// Merge this LoRA adapter directory (mlx-lm's layout) into the weights first (`hearth fuse`).
    pub adapter: Option<PathBuf>,
}

/// What a conversion wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub tensors: usize,
    pub quantized: usize,
    /// Quantised matrices whose GGUF blocks were kept as they are (exact), not re-quantised.
    pub kept: usize,
    pub bytes: u64,
}

/// Where a conversion reads.
enum Source {
    /// A safetensors directory (Hugging Face or MLX float): tensors as stored, with a LoRA
    /// adapter's updates merged in where one is given.
    Dir { dir: PathBuf, config: Value, tensors: BTreeMap<String, TensorView>, adapter: Option<LoraAdapter> },
    /// A GGUF file: tensors de-quantised to float32 under Hugging Face names.
    Gguf(Box<gguf::GgufSource>),
}

impl Source {
    /// The model at `path`, with `adapter`'s updates merged into its weights.
    fn open(path: &Path, adapter: Option<&Path>) -> Result<Source, ConvertError> {
        if path.is_file() {
            if adapter.is_some() {
                return Err(ConvertError::Unsupported(
                    "fusing an adapter into a GGUF base is not supported yet; convert the base first".into(),
                ));
            }
            return Ok(Source::Gguf(Box::new(gguf::GgufSource::open(path)?)));
        }
        let config_path = path.join("config.json");
        let config: Value = serde_json::from_str(&std::fs::read_to_string(&config_path).map_err(io(&config_path))?)
            .map_err(|e| ConvertError::Unsupported(format!("{}: {e}", config_path.display())))?;
        if config.get("quantization").is_some() || config.get("quantization_config").is_some() {
            return Err(ConvertError::Unsupported(format!(
                "{} is already quantised; converting a quantised MLX model is not supported yet",
                path.display()
            )));
        }
        let mut tensors = BTreeMap::new();
        for file in model_files(path)? {
            tensors.extend(SafeTensors::open(&file)?.tensors);
        }
        let adapter = adapter
            .map(|dir| LoraAdapter::load(dir).map_err(|e| ConvertError::Unsupported(format!("{}: {e}", dir.display()))))
            .transpose()?;
        if let Some(a) = &adapter {
            if let Some(missing) = a.layer_names().find(|l| !tensors.contains_key(&format!("{l}.weight"))) {
                return Err(ConvertError::Unsupported(format!("the adapter updates {missing}, which this model does not have")));
            }
        }
        Ok(Source::Dir { dir: path.to_path_buf(), config, tensors, adapter })
    }

    fn config(&self) -> Value {
        match self {
            Source::Dir { config, .. } => config.clone(),
            Source::Gguf(g) => g.config(),
        }
    }

    /// Every tensor's name, shape and float type, by name.
    fn tensors(&self) -> Result<Vec<(String, Vec<usize>, FloatType)>, ConvertError> {
        let mut out = match self {
            Source::Dir { tensors, .. } => tensors
                .iter()
                .map(|(name, t)| {
                    let ty = FloatType::of(t.dtype)
                        .ok_or_else(|| ConvertError::Unsupported(format!("{name}: {:?} tensors cannot be converted", t.dtype)))?;
                    Ok((name.clone(), t.shape.clone(), ty))
                })
                .collect::<Result<Vec<_>, ConvertError>>()?,
            Source::Gguf(g) => g.tensors().into_iter().map(|(name, shape)| (name, shape, FloatType::F32)).collect(),
        };
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// A tensor's values, cast to nothing yet.
    fn values(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        match self {
            Source::Dir { tensors, adapter, .. } => {
                let t = &tensors[name];
                // `tensors()` refused any other type before a value was read.
                let ty = FloatType::of(t.dtype).ok_or_else(|| ConvertError::Unsupported(format!("{name}: {:?}", t.dtype)))?;
                let mut values = floats(t, ty);
                if let (Some(a), Some(layer), &[rows, cols]) = (adapter, name.strip_suffix(".weight"), &t.shape[..]) {
                    a.fuse_into(layer, &mut values, rows, cols).map_err(|e| ConvertError::Unsupported(e.to_string()))?;
                }
                Ok(values)
            }
            Source::Gguf(g) => g.values(name),
        }
    }

    /// The tensor's MLX affine rows where its stored blocks map onto `q` exactly.
    fn exact_affine(&self, name: &str, q: Affine) -> Option<QuantizedRows> {
        match self {
            Source::Dir { .. } => None,
            Source::Gguf(g) => g.exact_affine(name, q),
        }
    }

    /// What travels beside the weights: a directory's other files, a GGUF's tokenizer.
    fn write_rest(&self, out: &Path) -> Result<(), ConvertError> {
        match self {
            Source::Dir { dir, .. } => copy_rest(dir, out, true),
            Source::Gguf(g) => g.write_tokenizer(out),
        }
    }
}

/// A model (a Hugging Face or MLX float directory, or a GGUF file) as an MLX directory at `out`.
pub fn to_mlx(src: &Path, out: &Path, opts: &MlxOptions) -> Result<Report, ConvertError> {
    write_dir(src, out, opts, "mlx")
}

/// A model as a Hugging Face (transformers) directory: float weights in `model.safetensors`
/// (`dtype`, or each tensor's own type), config, tokenizer and chat template.
/// (`opts.quantize` must be `None`).
pub fn to_hf(src: &Path, out: &Path, opts: &MlxOptions) -> Result<Report, ConvertError> {
    if opts.quantize.is_some() {
        return Err(ConvertError::Unsupported("Hugging Face output is float; quantise to MLX or GGUF".into()));
    }
    write_dir(src, out, opts, "pt")
}

/// A safetensors directory whose metadata says `format`.
fn write_dir(src: &Path, out: &Path, opts: &MlxOptions, format: &str) -> Result<Report, ConvertError> {
    if let Some(q) = opts.quantize {
        if !matches!(q.bits, 2..=6 | 8) || !matches!(q.group_size, 32 | 64 | 128) {
            return Err(ConvertError::Unsupported(format!(
                "MLX quantises to 2-6 or 8 bits in groups of 32, 64 or 128, not {} bits in {}",
                q.bits, q.group_size
            )));
        }
    }
    let old = aside(out, "replaced");
    if old.exists() {
        // A run that crashed between setting the old output aside and renaming the new one.
        if out.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        } else {
            std::fs::rename(&old, out).map_err(io(out))?;
        }
    }
    if out.exists() && !opts.force {
        return Err(ConvertError::Exists(out.to_path_buf()));
    }
    let source = Source::open(src, opts.adapter.as_deref())?;
    let tensors = source.tensors()?;

    // Every output tensor's spec first: the header is written before the data.
    let mut plan = Vec::new();
    let mut parameters = 0u64;
    for (name, shape, float) in &tensors {
        parameters += shape.iter().product::<usize>() as u64;
        let quantized = opts.quantize.filter(|q| quantizable(name, shape, q.group_size));
        plan.push(Planned { name, shape, ty: opts.dtype.unwrap_or(*float), quantized });
    }
    let mut specs = Vec::new();
    for p in &plan {
        match p.quantized {
            None => specs.push(TensorSpec { name: p.name.to_string(), dtype: p.ty.dtype(), shape: p.shape.clone() }),
            Some(q) => {
                let (rows, cols) = (p.shape[0], p.shape[1]);
                let base = p.name.strip_suffix(".weight").unwrap_or(p.name);
                let groups = vec![rows, cols / q.group_size];
                specs.push(TensorSpec { name: format!("{base}.biases"), dtype: p.ty.dtype(), shape: groups.clone() });
                specs.push(TensorSpec { name: format!("{base}.scales"), dtype: p.ty.dtype(), shape: groups });
                specs.push(TensorSpec { name: p.name.to_string(), dtype: DType::U32, shape: vec![rows, cols * q.bits as usize / 32] });
            }
        }
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));

    let tmp = aside(out, &format!("partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let report = match write_safetensors(&source, &tmp, &plan, &specs, opts, parameters, format) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // On disk before it takes the final name; an output it replaces steps aside until then, so
    // a crash leaves the old model (at worst set aside, and put back by the next run) or the
    // new one, never a half-written one.
    sync_tree(&tmp)?;
    if out.exists() {
        std::fs::rename(out, &old).map_err(io(out))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        let _ = std::fs::remove_dir_all(&tmp);
        if old.exists() {
            let _ = std::fs::rename(&old, out);
        }
        return Err(io(out)(e));
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(report)
}

/// `.<name>.<what>` beside `out`.
pub(crate) fn aside(out: &Path, what: &str) -> PathBuf {
    out.with_file_name(format!(".{}.{what}", out.file_name().and_then(|n| n.to_str()).unwrap_or("model")))
}

/// Every file under `dir`, and `dir` itself, synced to disk.
fn sync_tree(dir: &Path) -> Result<(), ConvertError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path).and_then(|f| f.sync_all()).map_err(io(&path))?;
        }
    }
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// A matrix as MLX affine rows: packed codes, and per group a scale and a bias.
pub(crate) struct QuantizedRows {
    pub packed: Vec<u8>,
    pub scales: Vec<f32>,
    pub biases: Vec<f32>,
}

struct Planned<'a> {
    name: &'a str,
    shape: &'a Vec<usize>,
    ty: FloatType,
    quantized: Option<Affine>,
}

/// What `mlx_lm`'s `nn.quantize` quantises: linear and embedding weights (the 2-D ones here)
/// whose rows split into whole groups.
fn quantizable(name: &str, shape: &[usize], group_size: usize) -> bool {
    name.ends_with(".weight") && shape.len() == 2 && shape[1].is_multiple_of(group_size)
}

fn write_safetensors(
    source: &Source,
    dir: &Path,
    plan: &[Planned],
    specs: &[TensorSpec],
    opts: &MlxOptions,
    parameters: u64,
    format: &str,
) -> Result<Report, ConvertError> {
    let weights = dir.join("model.safetensors");
    let metadata = BTreeMap::from([("format".to_string(), format.to_string())]);
    let mut writer = SafeTensorsWriter::create(&weights, &metadata, specs)?;
    // Each planned tensor makes its outputs; they are written in the header's (name) order.
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut next = 0;
    let mut report = Report::default();
    for p in plan {
        match p.quantized {
            None => {
                let values: Vec<f32> = source.values(p.name)?;
                pending.insert(p.name.to_string(), p.ty.bytes(&values));
            }
            Some(q) => {
                let rows = match source.exact_affine(p.name, q) {
                    Some(rows) => {
                        report.kept += 1;
                        rows
                    }
                    None => quantize(&source.values(p.name)?, p, q),
                };
                let base = p.name.strip_suffix(".weight").unwrap_or(p.name);
                pending.insert(format!("{base}.scales"), p.ty.bytes(&rows.scales));
                pending.insert(format!("{base}.biases"), p.ty.bytes(&rows.biases));
                pending.insert(p.name.to_string(), rows.packed);
                report.quantized += 1;
            }
        }
        // Write what the header's order allows now.
        while let Some(data) = specs.get(next).and_then(|s| pending.remove(&s.name)) {
            writer.write(&specs[next].name, &data)?;
            report.bytes += data.len() as u64;
            next += 1;
        }
    }
    writer.finish()?;
    report.tensors = specs.len();

    let mut config = source.config();
    if let Some(q) = opts.quantize {
        let quantization = json!({"group_size": q.group_size, "bits": q.bits, "mode": "affine"});
        config["quantization"] = quantization.clone();
        config["quantization_config"] = quantization;
    }
    write_json(&dir.join("config.json"), &config)?;
    let weight_map: BTreeMap<&str, &str> = specs.iter().map(|s| (s.name.as_str(), "model.safetensors")).collect();
    let index = json!({"metadata": {"total_size": report.bytes, "total_parameters": parameters}, "weight_map": weight_map});
    write_json(&dir.join("model.safetensors.index.json"), &index)?;
    // The tokenizer, chat template, generation settings and any module folders (a
    // sentence-transformers model's pooling and dense layers) travel unchanged.
    source.write_rest(dir)?;
    Ok(report)
}

/// Copies what is not the model's own weights or config (at the top level) from `from` to `to`.
fn copy_rest(from: &Path, to: &Path, top: bool) -> Result<(), ConvertError> {
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let path = entry.map_err(io(from))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let target = to.join(name);
        if path.is_dir() {
            std::fs::create_dir_all(&target).map_err(io(&target))?;
            copy_rest(&path, &target, false)?;
        } else if !(top && (name.ends_with(".safetensors") || name == "model.safetensors.index.json" || name == "config.json")) {
            std::fs::copy(&path, &target).map_err(io(&path))?;
        }
    }
    Ok(())
}

/// `values` cast to the planned type, then quantised row by row (MLX's quantiser).
fn quantize(values: &[f32], p: &Planned, q: Affine) -> QuantizedRows {
    let mut out = QuantizedRows { packed: Vec::new(), scales: Vec::new(), biases: Vec::new() };
    for row in values.chunks_exact(p.shape[1]) {
        let rounded: Vec<f32> = row.iter().map(|&v| p.ty.round(v)).collect();
        let r = quantize_mlx_affine(&rounded, q.bits, q.group_size);
        out.packed.extend(r.packed);
        out.scales.extend(r.scales);
        out.biases.extend(r.biases);
    }
    out
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ConvertError::Unsupported(e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

/// A float tensor's values.
fn floats(t: &TensorView, ty: FloatType) -> Vec<f32> {
    let format = match ty {
        FloatType::F32 => FloatFormat::F32,
        FloatType::F16 => FloatFormat::F16,
        FloatType::BF16 => FloatFormat::BF16,
    };
    let mut out = vec![0f32; t.shape.iter().product()];
    dequantize_row(RowFormat::Float(format), &t.data, &[], &[], &mut out);
    out
}

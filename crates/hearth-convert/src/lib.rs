//! Writing models in other formats, from a Hugging Face or MLX float directory or a GGUF file:
//! an MLX directory cast (`--dtype`) and optionally affine-quantised as `mlx_lm.convert` writes
//! it (bit for bit from the same floats), a Hugging Face directory, or a GGUF file of any of
//! llama.cpp's common types as `convert_hf_to_gguf.py` and `llama-quantize` write it
//! ([`write_gguf`]). Tensors are read, converted and written one at a time into a temporary
//! name that is renamed into place once complete, so memory is bounded by the largest tensor
//! and a crash never leaves a half-written model under the final name.

mod exact;
mod gguf;
mod gguf_meta;
pub mod gguf_types;
mod sentencepiece;
mod source;
mod write_gguf;

pub use gguf::permute_heads;
pub use gguf_types::GgufFileType;
pub use write_gguf::{gguf_arch, to_gguf, GgufOptions};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use hearth_formats::safetensors::{SafeTensorsWriter, TensorSpec};
use hearth_formats::{DType, FormatError};
use hearth_kernels::quant::quantize_mlx_affine;
use serde_json::{json, Value};
use source::Source;

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
        [FloatType::F32, FloatType::F16, FloatType::BF16].into_iter().find(|t| t.name() == name)
    }

    /// As mlx-lm and transformers name it.
    pub fn name(self) -> &'static str {
        match self {
            FloatType::F32 => "float32",
            FloatType::F16 => "float16",
            FloatType::BF16 => "bfloat16",
        }
    }

    fn dtype(self) -> DType {
        match self {
            FloatType::F32 => DType::F32,
            FloatType::F16 => DType::F16,
            FloatType::BF16 => DType::BF16,
        }
    }

    /// `v` as this type holds it.
    pub(crate) fn round(self, v: f32) -> f32 {
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

impl Affine {
    pub fn check(self) -> Result<Affine, ConvertError> {
        if !matches!(self.bits, 2..=6 | 8) || !matches!(self.group_size, 32 | 64 | 128) {
            return Err(ConvertError::Unsupported(format!(
                "MLX quantises to 2-6 or 8 bits in groups of 32, 64 or 128, not {} bits in {}",
                self.bits, self.group_size
            )));
        }
        Ok(self)
    }

    fn json(self) -> Value {
        json!({"group_size": self.group_size, "bits": self.bits, "mode": "affine"})
    }
}

/// mlx-lm's mixed-precision recipes (`--quant-predicate`): most layers at the low width; the
/// value and down projections of the first and last eighth of the blocks and of every third
/// block between, and the output head, at the high one (after llama.cpp's Q4_K_M).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Mixed2_6,
    Mixed3_4,
    Mixed3_6,
    Mixed4_6,
}

impl Recipe {
    pub const NAMES: [&'static str; 4] = ["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"];

    pub fn parse(name: &str) -> Option<Recipe> {
        let all = [Recipe::Mixed2_6, Recipe::Mixed3_4, Recipe::Mixed3_6, Recipe::Mixed4_6];
        Self::NAMES.iter().position(|n| *n == name).map(|i| all[i])
    }

    /// (low, high) bits.
    fn bits(self) -> (u32, u32) {
        match self {
            Recipe::Mixed2_6 => (2, 6),
            Recipe::Mixed3_4 => (3, 4),
            Recipe::Mixed3_6 => (3, 6),
            Recipe::Mixed4_6 => (4, 6),
        }
    }
}

/// A recipe applied to one model: where the block index sits in a tensor's path, and how many
/// blocks there are.
struct Mixed {
    recipe: Recipe,
    index_at: usize,
    layers: usize,
}

impl Mixed {
    fn new(recipe: Recipe, names: &[&str]) -> Result<Mixed, ConvertError> {
        let down = names
            .iter()
            .find(|n| n.contains("down_proj"))
            .ok_or_else(|| ConvertError::Unsupported("the mixed recipes need a model with down_proj layers".into()))?;
        let index_at = down.split('.').position(|p| p.parse::<usize>().is_ok()).unwrap_or(usize::MAX);
        let index = |name: &str| name.split('.').nth(index_at).and_then(|p| p.parse::<usize>().ok());
        let layers = names.iter().filter(|n| n.contains(".layers.")).filter_map(|n| index(n)).max().map_or(0, |m| m + 1);
        Ok(Mixed { recipe, index_at, layers })
    }

    /// The layout of layer `path` (a tensor name without `.weight`), as mlx-lm's predicate.
    fn layout(&self, path: &str, group_size: usize) -> Affine {
        let (low, high) = self.recipe.bits();
        let n = self.layers;
        let index = path.split('.').nth(self.index_at).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0);
        let more = index < n / 8 || index >= 7 * n / 8 || (index as i64 - (n / 8) as i64).rem_euclid(3) == 2;
        let high_here =
            (more && ["v_proj", "v_a_proj", "v_b_proj", "down_proj"].iter().any(|k| path.contains(k))) || path.contains("lm_head");
        Affine { bits: if high_here { high } else { low }, group_size }
    }
}

/// Called after each tensor is written, with how many are done and how many there are.
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<dyn Fn(usize, usize) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// mlx-lm's largest safetensors file (`MAX_FILE_SIZE_GB`): bigger models are sharded.
pub const SHARD_BYTES: u64 = 5 << 30;

#[derive(Clone, Debug, Default)]
pub struct MlxOptions {
    /// Cast every float tensor to this type first (`None`: each keeps its own).
    pub dtype: Option<FloatType>,
    /// Quantise the linear and embedding weights (with `recipe`: the recipe's widths in these
    /// groups). Without it an MLX-quantised source keeps its layout (re-quantised after a
    /// fuse) unless `dequantize`.
    pub quantize: Option<Affine>,
    pub recipe: Option<Recipe>,
    /// Write float weights even where the source is MLX-quantised.
    pub dequantize: bool,
    /// Replace an existing output.
    pub force: bool,
    /// Merge this adapter directory (mlx-lm or PEFT, LoRA or DoRA) into the weights first
    /// (`hearth fuse`).
    pub adapter: Option<PathBuf>,
    /// The largest safetensors file to write before starting another (0: [`SHARD_BYTES`]).
    pub shard_bytes: u64,
    pub progress: Option<Progress>,
}

/// What a conversion wrote.
#[derive(Debug, Default)]
pub struct Report {
    pub tensors: usize,
    pub quantized: usize,
    /// Quantised matrices whose codes were moved across exactly, not re-quantised.
    pub kept: usize,
    pub bytes: u64,
}

/// A model (a Hugging Face or MLX directory, float or quantised, or a GGUF file) as an MLX
/// directory at `out`.
pub fn to_mlx(src: &Path, out: &Path, opts: &MlxOptions) -> Result<Report, ConvertError> {
    write_dir(src, out, opts, "mlx")
}

/// A model as a Hugging Face (transformers) directory: float weights in `model.safetensors`
/// (`dtype`, or each tensor's own type), config, tokenizer and chat template.
/// (`opts.quantize` must be `None`).
pub fn to_hf(src: &Path, out: &Path, opts: &MlxOptions) -> Result<Report, ConvertError> {
    if opts.quantize.is_some() || opts.recipe.is_some() {
        return Err(ConvertError::Unsupported("Hugging Face output is float; quantise to MLX or GGUF".into()));
    }
    write_dir(src, out, &MlxOptions { dequantize: true, ..opts.clone() }, "pt")
}

/// A safetensors directory whose metadata says `format`.
fn write_dir(src: &Path, out: &Path, opts: &MlxOptions, format: &str) -> Result<Report, ConvertError> {
    if let Some(q) = opts.quantize {
        q.check()?;
    } else if opts.recipe.is_some() {
        return Err(ConvertError::Unsupported("a mixed recipe needs quantisation (-q)".into()));
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
    let mut source = Source::open(src, opts.adapter.as_deref())?;
    source.compute_type = opts.dtype;
    let tensors = source.tensors();
    let names: Vec<&str> = tensors.iter().map(|(n, ..)| n.as_str()).collect();
    let mixed = opts.recipe.map(|r| Mixed::new(r, &names)).transpose()?;

    // Every output tensor's layout and spec first: the header is written before the data.
    let mut plan = Vec::new();
    let mut parameters = 0u64;
    for (name, shape, float) in &tensors {
        parameters += shape.iter().product::<usize>() as u64;
        let path = name.strip_suffix(".weight").unwrap_or(name);
        let quantized = match opts.quantize {
            Some(q) if quantizable(name, shape, q.group_size) => Some(match &mixed {
                Some(m) => m.layout(path, q.group_size),
                // GGUF blocks that are exactly MLX groups of this size are kept as they are.
                None => source.exact_layout(name).filter(|l| l.group_size == q.group_size).unwrap_or(q),
            }),
            Some(_) => None,
            None if opts.dequantize => None,
            None => source.affine(name),
        };
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
    let quantization = quantization_config(&plan, opts.quantize.or(source.stored_quantization()), mixed.is_some());

    let partial = Partial::new(out, true)?;
    let tmp = partial.path.clone();
    let written = write_safetensors(&source, &tmp, &plan, &specs, opts, format).and_then(|report| {
        let mut config = source.config();
        if let Some(q) = &quantization {
            config["quantization"] = q.clone();
            config["quantization_config"] = q.clone();
        }
        write_json(&tmp.join("config.json"), &config)?;
        // The tokenizer, chat template, generation settings and any module folders (a
        // sentence-transformers model's pooling and dense layers) travel unchanged.
        source.write_rest(&tmp)?;
        let index = json!({"metadata": {"total_size": report.bytes, "total_parameters": parameters}, "weight_map": report.weight_map});
        write_json(&tmp.join("model.safetensors.index.json"), &index)?;
        Ok(report.report)
    });
    let report = written?;
    // On disk before it takes the final name; an output it replaces steps aside until then, so
    // a crash leaves the old model (at worst set aside, and put back by the next run) or the
    // new one, never a half-written one.
    sync_tree(&tmp)?;
    if out.exists() {
        std::fs::rename(out, &old).map_err(io(out))?;
    }
    if let Err(e) = std::fs::rename(&tmp, out) {
        if old.exists() {
            let _ = std::fs::rename(&old, out);
        }
        return Err(io(out)(e));
    }
    partial.done();
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(report)
}

/// A conversion's output under a temporary name beside the final one (`.<name>.partial-<pid>`),
/// locked while this process writes it: removed if dropped before [`Partial::done`], and, should
/// the process die, by the next conversion to the same name (which finds its lock free).
pub(crate) struct Partial {
    pub path: PathBuf,
    lock_path: PathBuf,
    _lock: std::fs::File,
    done: bool,
}

impl Partial {
    /// A fresh temporary for `out`: a directory if `dir`, else a path for a file.
    pub fn new(out: &Path, dir: bool) -> Result<Partial, ConvertError> {
        remove_stale_partials(out)?;
        let tag = format!("partial-{}", std::process::id());
        let (path, lock_path) = (aside(out, &tag), aside(out, &format!("{tag}.lock")));
        let lock = std::fs::File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        let partial = Partial { path, lock_path, _lock: lock, done: false };
        remove_any(&partial.path)?;
        if dir {
            std::fs::create_dir_all(&partial.path).map_err(io(&partial.path))?;
        }
        Ok(partial)
    }

    /// The output has taken its final name.
    pub fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_any(&self.path);
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Temporaries beside `out` whose writer is gone: their lock can be taken.
fn remove_stale_partials(out: &Path) -> Result<(), ConvertError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = aside(out, "partial-").file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stale) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".lock")).map(|_| entry.path()) else {
            continue;
        };
        let free = std::fs::File::open(&stale).is_ok_and(|f| f.try_lock().is_ok());
        if free {
            remove_any(&stale.with_extension(""))?;
            std::fs::remove_file(&stale).map_err(io(&stale))?;
        }
    }
    Ok(())
}

/// Removes a file or a directory tree; nothing there is fine.
fn remove_any(path: &Path) -> Result<(), ConvertError> {
    let result = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

/// config.json's `quantization` block as mlx-lm writes it: the default layout, and an entry for
/// each layer stored otherwise (for every quantised layer under a recipe). `None` if nothing
/// is quantised.
fn quantization_config(plan: &[Planned], default: Option<Affine>, per_layer: bool) -> Option<Value> {
    let default = default.or_else(|| plan.iter().find_map(|p| p.quantized))?;
    let mut block = default.json();
    let mut any = false;
    for p in plan {
        let Some(q) = p.quantized else { continue };
        any = true;
        if per_layer || q != default {
            block[p.name.strip_suffix(".weight").unwrap_or(p.name)] = q.json();
        }
    }
    any.then_some(block)
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

/// The weights as written: the report, and which file holds each tensor.
struct Written {
    report: Report,
    bytes: u64,
    weight_map: BTreeMap<String, String>,
}

/// Writes the planned tensors in the specs' (name) order, into one `model.safetensors` or, past
/// `opts.shard_bytes`, shards named as mlx-lm names them.
fn write_safetensors(
    source: &Source,
    dir: &Path,
    plan: &[Planned],
    specs: &[TensorSpec],
    opts: &MlxOptions,
    format: &str,
) -> Result<Written, ConvertError> {
    let limit = if opts.shard_bytes == 0 { SHARD_BYTES } else { opts.shard_bytes };
    let shards = shard(specs, limit)?;
    let file_name = |i: usize| {
        if shards.len() == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", i + 1, shards.len())
        }
    };
    let metadata = BTreeMap::from([("format".to_string(), format.to_string())]);
    let mut weight_map = BTreeMap::new();
    let mut shard_of = Vec::new();
    for (i, range) in shards.iter().enumerate() {
        for s in &specs[range.clone()] {
            weight_map.insert(s.name.clone(), file_name(i));
            shard_of.push(i);
        }
    }
    let open = |i: usize| SafeTensorsWriter::create(&dir.join(file_name(i)), &metadata, &specs[shards[i].clone()]);
    let mut writer = open(0)?;
    let mut current = 0;
    // Each planned tensor makes its outputs; they are written in the header's (name) order.
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut next = 0;
    let mut written = Written { report: Report::default(), bytes: 0, weight_map };
    for (done, p) in plan.iter().enumerate() {
        match p.quantized {
            None => {
                let values: Vec<f32> = source.values(p.name)?;
                pending.insert(p.name.to_string(), p.ty.bytes(&values));
            }
            Some(q) => {
                let rows = match source.exact_affine(p.name, q) {
                    Some(rows) => {
                        written.report.kept += 1;
                        rows
                    }
                    None => quantize(&source.values(p.name)?, p, q),
                };
                let base = p.name.strip_suffix(".weight").unwrap_or(p.name);
                pending.insert(format!("{base}.scales"), p.ty.bytes(&rows.scales));
                pending.insert(format!("{base}.biases"), p.ty.bytes(&rows.biases));
                pending.insert(p.name.to_string(), rows.packed);
                written.report.quantized += 1;
            }
        }
        // Write what the header's order allows now.
        while let Some(data) = specs.get(next).and_then(|s| pending.remove(&s.name)) {
            if shard_of[next] != current {
                writer.finish()?;
                current = shard_of[next];
                writer = open(current)?;
            }
            writer.write(&specs[next].name, &data)?;
            written.bytes += data.len() as u64;
            next += 1;
        }
        if let Some(progress) = &opts.progress {
            (progress.0)(done + 1, plan.len());
        }
    }
    writer.finish()?;
    written.report.tensors = specs.len();
    written.report.bytes = written.bytes;
    Ok(written)
}

/// Consecutive runs of `specs` of at most `limit` bytes each (a bigger tensor alone), as
/// mlx-lm's `make_shards` splits them.
fn shard(specs: &[TensorSpec], limit: u64) -> Result<Vec<std::ops::Range<usize>>, ConvertError> {
    let mut shards: Vec<std::ops::Range<usize>> = Vec::new();
    let mut size = 0u64;
    for (i, s) in specs.iter().enumerate() {
        let bytes = s.bytes()?;
        match shards.last_mut() {
            Some(last) if size + bytes <= limit => last.end = i + 1,
            _ => {
                shards.push(i..i + 1);
                size = 0;
            }
        }
        size += bytes;
    }
    if shards.is_empty() {
        shards.push(0..0);
    }
    Ok(shards)
}

/// Copies what is not the model's own weights or config (at the top level) from `from` to `to`.
pub(crate) fn copy_rest(from: &Path, to: &Path, top: bool) -> Result<(), ConvertError> {
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

/// `values` cast to the planned type, then quantised row by row (MLX's quantiser), rows shared
/// among the cores.
fn quantize(values: &[f32], p: &Planned, q: Affine) -> QuantizedRows {
    let parts = on_every_core(values, p.shape[1], |rows| {
        let mut out = QuantizedRows { packed: Vec::new(), scales: Vec::new(), biases: Vec::new() };
        for row in rows.chunks_exact(p.shape[1]) {
            let rounded: Vec<f32> = row.iter().map(|&v| p.ty.round(v)).collect();
            let r = quantize_mlx_affine(&rounded, q.bits, q.group_size);
            out.packed.extend(r.packed);
            out.scales.extend(r.scales);
            out.biases.extend(r.biases);
        }
        out
    });
    let mut out = QuantizedRows { packed: Vec::new(), scales: Vec::new(), biases: Vec::new() };
    for part in parts {
        out.packed.extend(part.packed);
        out.scales.extend(part.scales);
        out.biases.extend(part.biases);
    }
    out
}

/// `f` on `values`' rows (of `cols` each) split into one run per core; the results in order.
pub(crate) fn on_every_core<T: Send>(values: &[f32], cols: usize, f: impl Fn(&[f32]) -> T + Sync) -> Vec<T> {
    let rows = values.len() / cols.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(rows.max(1));
    let per = rows.div_ceil(threads).max(1) * cols.max(1);
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = values.chunks(per).map(|chunk| s.spawn(move || f(chunk))).collect();
        handles.into_iter().map(|h| h.join().expect("conversion thread")).collect()
    })
}

pub(crate) fn write_json(path: &Path, value: &Value) -> Result<(), ConvertError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ConvertError::Unsupported(e.to_string()))?;
    std::fs::write(path, text).map_err(io(path))
}

//! A model (Hugging Face or MLX float directory, or a GGUF file) as a GGUF file of a chosen
//! type, as llama.cpp's `convert_hf_to_gguf.py` and `llama-quantize` write them: tensor names,
//! Q/K row order, `rope_freqs`, the per-tensor block types of the file type, and block bytes
//! equal to llama.cpp's reference quantisers. Written front to back into a temporary file, one
//! tensor in memory at a time, and renamed into place when complete.

use std::path::{Path, PathBuf};

use hearth_engine::config::{Arch, ModelConfig, RopeScaling};
use hearth_engine::weights::{gguf_name, hf_name};
use hearth_formats::gguf::{GgmlType, Gguf, GgufStream, GgufTensorSpec, Value};
use hearth_kernels::quant::quantize_ggml;
use hearth_kernels::{dequantize_row, RowFormat};

use crate::gguf::{llama3_rope_factors, permute_heads};
use crate::gguf_meta;
use crate::gguf_types::{llama_order, GgufFileType, TypePolicy};
use crate::source::{Origin, Source};
use crate::{io, on_every_core, ConvertError, FloatType, Partial, Progress, Report};

#[derive(Clone, Debug, Default)]
pub struct GgufOptions {
    /// `None`: a GGUF source's tensors keep their types (those an adapter changes are
    /// re-quantised to theirs); a directory is written as F16, as `convert_hf_to_gguf.py` does.
    pub file_type: Option<GgufFileType>,
    /// Every matrix in the file type's default block type (`llama-quantize --pure`).
    pub pure: bool,
    /// Replace an existing output.
    pub force: bool,
    /// Merge this adapter directory (mlx-lm or PEFT, LoRA or DoRA) into the weights first
    /// (`hearth fuse`).
    pub adapter: Option<PathBuf>,
    pub progress: Option<Progress>,
}

/// Writes `src` as a GGUF file at `out`.
pub fn to_gguf(src: &Path, out: &Path, opts: &GgufOptions) -> Result<Report, ConvertError> {
    if out.exists() && !opts.force {
        return Err(ConvertError::Exists(out.to_path_buf()));
    }
    let model = Model::open(src, opts.adapter.as_deref())?;
    let mut names = model.names();
    llama_order(&mut names);
    let file_type = match (opts.file_type, &model) {
        (Some(t), _) => Some(t),
        (None, Model::Gguf { .. }) => None,
        (None, Model::Dir(_)) => Some(GgufFileType::F16),
    };
    let policy = file_type.map(|t| TypePolicy::new(t, opts.pure, &names, model.layers()));
    let mut specs = Vec::with_capacity(names.len());
    for name in &names {
        let (shape, stored) = model.shape_and_type(name)?;
        let ty = match &policy {
            Some(p) => p.choose(name, &shape, stored)?,
            None => stored,
        };
        if ty != stored {
            // Validated here so that nothing is written for a source that cannot be converted.
            RowFormat::Ggml(stored)
                .row_bytes(*shape.last().unwrap_or(&1))
                .map_err(|e| ConvertError::Unsupported(format!("{name}: {stored:?} tensors cannot be re-encoded ({e})")))?;
        }
        specs.push(GgufTensorSpec::new(name.clone(), &shape, ty));
    }
    let metadata = model.metadata(file_type)?;

    let partial = Partial::new(out, false)?;
    let tmp = partial.path.clone();
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut stream = GgufStream::new(std::io::BufWriter::new(file), &metadata, specs.clone()).map_err(io(&tmp))?;
    let mut report = Report::default();
    for (done, spec) in specs.iter().enumerate() {
        let (bytes, kept) = model.encode(&spec.name, spec.ty)?;
        if !matches!(spec.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            report.quantized += 1;
            report.kept += kept as usize;
        }
        report.bytes += bytes.len() as u64;
        stream.write(&spec.name, &bytes).map_err(io(&tmp))?;
        if let Some(progress) = &opts.progress {
            (progress.0)(done + 1, specs.len());
        }
    }
    let file =
        stream.finish().map_err(io(&tmp))?.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
    // On disk before it takes the final name.
    file.sync_all().map_err(io(&tmp))?;
    report.tensors = specs.len();
    // The rename replaces an existing file atomically: a crash leaves the old file or the new one.
    std::fs::rename(&tmp, out).map_err(io(out))?;
    partial.done();
    Ok(report)
}

/// The source seen under GGUF tensor names.
enum Model {
    /// A GGUF file: its tensors and metadata as they are (`llama-quantize`); with an adapter,
    /// the tensors it changes read through a [`Source`] that merges it.
    Gguf { gguf: Gguf, fused: Option<Box<Source>> },
    /// A Hugging Face or MLX directory, renamed and reordered as `convert_hf_to_gguf.py` does.
    Dir(Box<DirModel>),
}

struct DirModel {
    source: Source,
    cfg: ModelConfig,
    /// GGUF architecture name.
    arch: &'static str,
    /// GGUF name, Hugging Face name and shape of every tensor.
    names: Vec<(String, String, Vec<usize>)>,
    /// llama.cpp's per-frequency RoPE factors for Llama 3 scaling (`rope_freqs.weight`).
    rope_freqs: Option<Vec<f32>>,
}

impl Model {
    fn open(src: &Path, adapter: Option<&Path>) -> Result<Model, ConvertError> {
        if src.is_file() {
            let fused = adapter.map(|a| Source::open(src, Some(a)).map(Box::new)).transpose()?;
            return Ok(Model::Gguf { gguf: Gguf::open(src)?, fused });
        }
        let source = Source::open(src, adapter)?;
        let config = source.config();
        let cfg = ModelConfig::from_hf(&config).map_err(|e| ConvertError::Unsupported(e.to_string()))?;
        let arch = gguf_arch(cfg.arch)?;
        let mut names = Vec::new();
        for (hf, shape, _) in source.tensors() {
            let gguf = gguf_name(arch, &hf)
                .ok_or_else(|| ConvertError::Unsupported(format!("{hf}: no GGUF name for this tensor of a {arch} model")))?;
            names.push((gguf, hf, shape));
        }
        let rope_freqs = match cfg.rope.scaling {
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => {
                Some(llama3_rope_factors(cfg.head_dim, cfg.rope.theta, factor, low_freq_factor, high_freq_factor, original_context))
            }
            _ => None,
        };
        Ok(Model::Dir(Box::new(DirModel { source, cfg, arch, names, rope_freqs })))
    }

    fn names(&self) -> Vec<String> {
        match self {
            Model::Gguf { gguf, .. } => gguf.tensors.iter().map(|t| t.name.clone()).collect(),
            Model::Dir(d) => {
                let mut names: Vec<String> = d.names.iter().map(|(g, _, _)| g.clone()).collect();
                if d.rope_freqs.is_some() {
                    names.push("rope_freqs.weight".into());
                }
                names
            }
        }
    }

    fn layers(&self) -> usize {
        match self {
            Model::Gguf { gguf: g, .. } => {
                let arch = g.architecture().unwrap_or_default();
                g.get(&format!("{arch}.block_count")).and_then(Value::as_u64).unwrap_or(0) as usize
            }
            Model::Dir(d) => d.cfg.num_layers,
        }
    }

    /// A tensor's row-major shape and the type it keeps when not given a block type.
    fn shape_and_type(&self, name: &str) -> Result<(Vec<usize>, GgmlType), ConvertError> {
        match self {
            Model::Gguf { gguf: g, .. } => {
                let t = g.tensor(name).ok_or_else(|| ConvertError::Unsupported(format!("{name}: no such tensor")))?;
                Ok((t.dims.iter().rev().map(|&d| d as usize).collect(), t.ggml_type))
            }
            // Vectors are written as float32, as the converter does.
            Model::Dir(d) => Ok((d.shape(name)?, GgmlType::F32)),
        }
    }

    /// The file's metadata; `file_type` `None` keeps the source's.
    fn metadata(&self, file_type: Option<GgufFileType>) -> Result<Vec<(String, Value)>, ConvertError> {
        let replaced = |k: &str| k == "general.quantization_version" || (file_type.is_some() && k == "general.file_type");
        let mut kv: Vec<(String, Value)> = match self {
            Model::Gguf { gguf: g, .. } => {
                g.metadata.iter().filter(|(k, _)| !k.starts_with("split.") && !replaced(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
            }
            Model::Dir(d) => {
                let Origin::Dir { dir, config } = &d.source.origin else { unreachable!("Model::open reads a GGUF file itself") };
                gguf_meta::hf_metadata(dir, config, &d.cfg, d.arch)?
            }
        };
        kv.push(("general.quantization_version".into(), Value::U32(2)));
        if let Some(t) = file_type {
            kv.push(("general.file_type".into(), Value::U32(t.id())));
        }
        Ok(kv)
    }

    /// Tensor `name`'s bytes as `ty`, and whether they are the source's codes moved across
    /// exactly: as stored where that is its type already (and no adapter changes it), an MLX
    /// tensor's groups where they are `ty`'s blocks exactly, otherwise its float32 values
    /// converted or quantised.
    fn encode(&self, name: &str, ty: GgmlType) -> Result<(Vec<u8>, bool), ConvertError> {
        let (shape, values) = match self {
            Model::Gguf { gguf: g, fused } => {
                let t = g.tensor(name).ok_or_else(|| ConvertError::Unsupported(format!("{name}: no such tensor")))?;
                let shape: Vec<usize> = t.dims.iter().rev().map(|&d| d as usize).collect();
                let arch = g.architecture()?;
                match fused.as_ref().zip(hf_name(arch, name)).filter(|(s, hf)| s.fused(hf)) {
                    Some((source, hf)) => (shape, source.stored_values(&hf)?),
                    None => {
                        let data = g.tensor_data(t)?;
                        // Its mapped pages are dropped once read: memory stays bounded by the
                        // tensor in hand, not the file.
                        let release = || data.release_pages(0..data.len());
                        if t.ggml_type == ty {
                            let bytes = data.to_vec();
                            release();
                            return Ok((bytes, true));
                        }
                        let mut values = vec![0f32; shape.iter().product()];
                        dequantize_row(RowFormat::Ggml(t.ggml_type), &data, &[], &[], &mut values);
                        release();
                        (shape, values)
                    }
                }
            }
            Model::Dir(d) => {
                if let Some(blocks) = d.exact_blocks(name, ty)? {
                    return Ok((blocks, true));
                }
                (d.shape(name)?, d.values(name)?)
            }
        };
        Ok((encode_values(&values, *shape.last().unwrap_or(&1), ty), false))
    }
}

impl DirModel {
    /// Tensor `name`'s Hugging Face name and shape.
    fn find(&self, name: &str) -> Result<(&str, &[usize]), ConvertError> {
        self.names
            .iter()
            .find(|(g, _, _)| g == name)
            .map(|(_, h, shape)| (h.as_str(), shape.as_slice()))
            .ok_or_else(|| ConvertError::Unsupported(format!("{name}: no such tensor")))
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, ConvertError> {
        if name == "rope_freqs.weight" {
            return Ok(vec![self.cfg.head_dim / 2]);
        }
        Ok(self.find(name)?.1.to_vec())
    }

    /// The values llama.cpp's converter stores: Llama's Q/K rows interleaved per head (its RoPE
    /// rotates adjacent pairs), Gemma's norm weights with the 1 its `(1 + w)` adds.
    fn values(&self, name: &str) -> Result<Vec<f32>, ConvertError> {
        if name == "rope_freqs.weight" {
            return Ok(self.rope_freqs.clone().unwrap_or_default());
        }
        let hf = self.find(name)?.0;
        let mut values = self.llama_rows(hf, self.source.values(hf)?);
        if self.arch == "gemma2" && name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v += 1.0);
        }
        Ok(values)
    }

    /// An MLX-quantised tensor's groups as `ty`'s blocks, where they are exactly.
    fn exact_blocks(&self, name: &str, ty: GgmlType) -> Result<Option<Vec<u8>>, ConvertError> {
        if name == "rope_freqs.weight" {
            return Ok(None);
        }
        let hf = self.find(name)?.0;
        Ok(self.source.exact_blocks(hf, ty).map(|blocks| self.llama_rows(hf, blocks)))
    }

    /// Rows of Hugging Face tensor `hf` in llama.cpp's order: Llama's Q/K rows interleaved per
    /// head, other tensors as they are.
    fn llama_rows<T: Copy + Default>(&self, hf: &str, rows: Vec<T>) -> Vec<T> {
        let heads = match self.arch {
            "llama" if hf.contains("self_attn.q_proj.") => self.cfg.num_heads,
            "llama" if hf.contains("self_attn.k_proj.") => self.cfg.num_kv_heads,
            _ => return rows,
        };
        let cols = rows.len() / (heads * self.cfg.head_dim);
        permute_heads(&rows, heads, self.cfg.head_dim, cols, true)
    }
}

/// The GGUF architecture name llama.cpp gives a model of `arch`.
pub fn gguf_arch(arch: Arch) -> Result<&'static str, ConvertError> {
    Ok(match arch {
        // convert_hf_to_gguf.py writes Mistral's Hugging Face checkpoints as Llama.
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
        Arch::Phi3 => "phi3",
        Arch::Gemma2 => "gemma2",
        other => return Err(ConvertError::Unsupported(format!("writing {other:?} as GGUF is not supported yet"))),
    })
}

/// `values` (rows of `cols`) as `ty`'s bytes; block types are quantised on every core.
fn encode_values(values: &[f32], cols: usize, ty: GgmlType) -> Vec<u8> {
    match ty {
        GgmlType::F32 => FloatType::F32.bytes(values),
        GgmlType::F16 => FloatType::F16.bytes(values),
        GgmlType::BF16 => FloatType::BF16.bytes(values),
        _ => on_every_core(values, cols, |rows| {
            let mut out = Vec::new();
            quantize_ggml(ty, rows, &mut out);
            out
        })
        .concat(),
    }
}

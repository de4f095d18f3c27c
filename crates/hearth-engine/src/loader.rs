//! Opening a model from disk: a GGUF file, or a Hugging Face / MLX directory. Produces the
//! decoder together with its tokenizer, chat template and stop tokens.

use std::path::{Path, PathBuf};

use candle_core::Device;
use hearth_formats::gguf::{Gguf, Value};
use hearth_kernels::Precision;
use hearth_tokenizer::{ChatTemplate, GgufVocab, Tokenizer};
use serde_json::Value as Json;

use crate::candle::CandleDecoder;
use crate::config::{token_ids, ModelConfig};
use crate::host::HostDecoder;
use crate::lora::{Adapter, LoraAdapter};
use crate::model::{deltas_by_slot, linear_shapes, Backend, Decoder, DecoderModel};
use crate::sampling_defaults::SamplingDefaults;
use crate::weights::WeightStore;
use crate::{EngineError, Result};

/// The on-disk format a model was loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    Gguf,
    Safetensors,
    MlxQuantized,
}

pub struct LoadedModel {
    pub model: DecoderModel,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Every token id that ends generation.
    pub eos_ids: Vec<u32>,
    pub format: ModelFormat,
    pub path: PathBuf,
    /// What the model's files say to sample with (each setting it gives).
    pub sampling: SamplingDefaults,
}

/// How to run a model once loaded.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub precision: Precision,
    pub backend: Backend,
    /// An mlx-lm LoRA adapter directory every sequence runs with unless it names its own
    /// (see [`LoadedModel::load_adapter`]).
    pub adapter: Option<PathBuf>,
    pub device: DeviceChoice,
}

/// Where a model runs: the CPU on our kernels, or a GPU on candle's (`cuda[:N]`, `metal[:N]`;
/// only in builds with that feature, others fail to open it with candle's error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (kind, ordinal) = s.split_once(':').map_or((s, None), |(k, n)| (k, Some(n)));
        let ordinal = match ordinal {
            None => 0,
            Some(n) => n.parse().map_err(|_| format!("`{n}` in `{s}` is not a device number"))?,
        };
        match kind {
            "cpu" if ordinal == 0 => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(ordinal)),
            "metal" => Ok(Self::Metal(ordinal)),
            _ => Err(format!("unknown device `{s}`: expected cpu, cuda[:N] or metal[:N]")),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceChoice {
    fn open(self) -> Result<Device> {
        let opened = match self {
            Self::Cpu => return Ok(Device::Cpu),
            Self::Cuda(n) => Device::new_cuda(n),
            Self::Metal(n) => Device::new_metal(n),
        };
        opened.map_err(|e| EngineError::Unsupported(format!("the device {self} ({e})")))
    }
}

impl LoadedModel {
    /// An mlx-lm LoRA adapter directory (or export bundle) made ready for this model, for
    /// sequences to name one by one ([`crate::model::SeqInput::adapter`]).
    pub fn load_adapter(&self, dir: &Path) -> Result<Adapter> {
        self.model.adapter(&LoraAdapter::load(dir)?)
    }

    /// Loads with the default (fast) options.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, LoadOptions::default())
    }

    pub fn load_with(path: &Path, opts: LoadOptions) -> Result<Self> {
        let device = opts.device.open()?;
        // Our kernels read host memory: elsewhere every product is candle's.
        let opts = if device.is_cpu() { opts } else { LoadOptions { backend: Backend::Candle, ..opts } };
        if path.is_dir() {
            Self::load_dir(path, &device, opts)
        } else if path.is_file() {
            Self::load_gguf(path, &device, opts)
        } else {
            Err(EngineError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file or directory"),
            })
        }
    }

    fn load_gguf(path: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let adapter = opts.adapter.as_deref().map(LoraAdapter::load).transpose()?;
        let g = Gguf::open(path)?;
        let cfg = ModelConfig::from_gguf(&g)?;
        let store = WeightStore::from_gguf(&g)?;
        let rope_freqs = gguf_rope_freqs(&g)?;
        let (tokenizer, chat_template) = gguf_text(&g, &cfg)?;
        let mut eos_ids = cfg.eos_token_ids.clone();
        for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = g.get(key).and_then(Value::as_u64) {
                eos_ids.push(id as u32);
            }
        }
        let model = decoder(cfg, &store, rope_freqs, device, &opts, adapter.as_ref())?;
        let sampling = SamplingDefaults::from_gguf(&g);
        Ok(Self::finish(model, tokenizer, chat_template, eos_ids, sampling, ModelFormat::Gguf, path))
    }

    fn load_dir(dir: &Path, device: &Device, opts: LoadOptions) -> Result<Self> {
        let adapter = opts.adapter.as_deref().map(LoraAdapter::load).transpose()?;
        let config = hf_config(dir)?;
        let cfg = ModelConfig::from_hf(&config)?;
        let store = WeightStore::from_safetensors_dir(dir, &config)?;
        let (tokenizer, chat_template, special) = dir_text(dir)?;
        let mut eos_ids = cfg.eos_token_ids.clone();
        let mut sampling = SamplingDefaults::default();
        if let Some(gen) = read_json(&dir.join("generation_config.json"))? {
            eos_ids.extend(token_ids(gen.get("eos_token_id")));
            sampling = SamplingDefaults::from_generation_config(&gen);
        }
        if let Some(id) = special.eos.and_then(|t| tokenizer.token_to_id(&t)) {
            eos_ids.push(id);
        }
        let format = if config.get("quantization").is_some() { ModelFormat::MlxQuantized } else { ModelFormat::Safetensors };
        let model = decoder(cfg, &store, None, device, &opts, adapter.as_ref())?;
        Ok(Self::finish(model, tokenizer, chat_template, eos_ids, sampling, format, dir))
    }

    fn finish(
        model: DecoderModel,
        tokenizer: Tokenizer,
        chat_template: Option<ChatTemplate>,
        mut eos_ids: Vec<u32>,
        sampling: SamplingDefaults,
        format: ModelFormat,
        path: &Path,
    ) -> Self {
        eos_ids.sort_unstable();
        eos_ids.dedup();
        LoadedModel { model, tokenizer, chat_template, eos_ids, format, path: path.to_path_buf(), sampling }
    }
}

/// Checks `lora` against the model at `path` (a GGUF file or a model directory) without
/// loading it: every layer it adapts is one of the model's linear layers and fits its shape.
pub fn check_adapter_fits(path: &Path, lora: &LoraAdapter) -> Result<()> {
    let (cfg, store) = if path.is_dir() {
        let config = hf_config(path)?;
        (ModelConfig::from_hf(&config)?, WeightStore::from_safetensors_dir(path, &config)?)
    } else {
        let g = Gguf::open(path)?;
        (ModelConfig::from_gguf(&g)?, WeightStore::from_gguf(&g)?)
    };
    deltas_by_slot(&linear_shapes(cfg, &store)?, lora).map(drop)
}

/// What a model's files say about it, read without its weights.
pub struct ModelFacts {
    pub format: ModelFormat,
    pub config: ModelConfig,
    /// How the weights are stored: a GGUF file's most common matrix type (`Q4_1`), an MLX
    /// model's quantisation (`4-bit, group 64`), else the float type its config names.
    pub storage: Option<String>,
    /// The chat template as the files ship it.
    pub chat_template: Option<String>,
}

pub fn describe(path: &Path) -> Result<ModelFacts> {
    if !path.is_dir() {
        let g = Gguf::open(path)?;
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for t in g.tensors.iter().filter(|t| t.dims.len() == 2) {
            // Debug names are `Q4_1`, `Q4K`: llama.cpp writes the K types `Q4_K`.
            let name = format!("{:?}", t.ggml_type);
            let name = match name.strip_suffix('K') {
                Some(stem) if stem.starts_with('Q') => format!("{stem}_K"),
                _ => name,
            };
            *counts.entry(name).or_default() += 1;
        }
        let storage = counts.into_iter().max_by_key(|(_, n)| *n).map(|(name, _)| name);
        let chat_template = g.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string);
        return Ok(ModelFacts { format: ModelFormat::Gguf, config: ModelConfig::from_gguf(&g)?, storage, chat_template });
    }
    let json = hf_config(path)?;
    let quantization = json.get("quantization").filter(|q| q.is_object());
    let (format, storage) = match quantization {
        Some(q) => (
            ModelFormat::MlxQuantized,
            Some(format!("{}-bit, group {}", q["bits"].as_u64().unwrap_or(0), q["group_size"].as_u64().unwrap_or(0))),
        ),
        None => (ModelFormat::Safetensors, json.get("torch_dtype").and_then(Json::as_str).map(str::to_string)),
    };
    let chat_template = hearth_tokenizer::find_chat_template(path)?;
    Ok(ModelFacts { format, config: ModelConfig::from_hf(&json)?, storage, chat_template })
}

/// A model's configuration, read without its weights: a directory's `config.json` or a GGUF
/// file's metadata.
pub fn read_config(path: &Path) -> Result<ModelConfig> {
    if path.is_dir() {
        ModelConfig::from_hf(&hf_config(path)?)
    } else {
        ModelConfig::from_gguf(&Gguf::open(path)?)
    }
}

fn hf_config(dir: &Path) -> Result<Json> {
    read_json(&dir.join("config.json"))?.ok_or_else(|| EngineError::Config(format!("{} has no config.json", dir.display())))
}

/// llama.cpp's per-frequency RoPE factors (`rope_freqs.weight`), where the file has them.
pub fn gguf_rope_freqs(g: &Gguf) -> Result<Option<Vec<f32>>> {
    let Some(info) = g.tensor("rope_freqs.weight") else { return Ok(None) };
    let t = crate::weights::StoredTensor {
        format: hearth_kernels::RowFormat::Ggml(info.ggml_type),
        shape: info.shape(),
        data: g.tensor_data(info)?,
        scales: None,
        biases: None,
    };
    Ok(Some(t.to_f32_vec()?))
}

/// A GGUF file's tokenizer and chat template.
pub fn gguf_text(g: &Gguf, cfg: &ModelConfig) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    let tokenizer = Tokenizer::from_gguf(&gguf_vocab(g)?)?;
    let name = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let chat_template = match g.get("tokenizer.chat_template").and_then(Value::as_str) {
        Some(src) => Some(ChatTemplate::new(src, name(cfg.bos_token_id), name(cfg.eos_token_ids.first().copied()))?),
        None => None,
    };
    Ok((tokenizer, chat_template))
}

/// A model directory's tokenizer, chat template and special tokens.
pub fn dir_text(dir: &Path) -> Result<(Tokenizer, Option<ChatTemplate>, hearth_tokenizer::SpecialTokens)> {
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let special = hearth_tokenizer::read_special_tokens(dir)?;
    let chat_template = match hearth_tokenizer::find_chat_template(dir)? {
        Some(src) => Some(ChatTemplate::new(&src, special.bos.clone(), special.eos.clone())?),
        None => None,
    };
    Ok((tokenizer, chat_template, special))
}

/// The decoder type `opts` asks for, loaded.
fn decoder(
    cfg: ModelConfig,
    store: &WeightStore,
    rope_freqs: Option<Vec<f32>>,
    device: &Device,
    opts: &LoadOptions,
    adapter: Option<&LoraAdapter>,
) -> Result<DecoderModel> {
    let decoder: Box<dyn Decoder> = match opts.backend {
        Backend::Host => Box::new(HostDecoder::load(cfg, store, rope_freqs, opts.precision)?),
        Backend::Candle => Box::new(CandleDecoder::load(cfg, store, rope_freqs, device, opts.precision)?),
    };
    DecoderModel::new(decoder, adapter)
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| EngineError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EngineError::Io { path: path.to_path_buf(), source }),
    }
}

/// The tokenizer description in a GGUF file's `tokenizer.ggml.*` metadata.
pub fn gguf_vocab(g: &Gguf) -> Result<GgufVocab> {
    let get = |k: &str| g.get(&format!("tokenizer.ggml.{k}"));
    let strings = |k: &str| -> Result<Option<Vec<String>>> {
        get(k)
            .map(|v| {
                v.as_array()
                    .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| EngineError::Config(format!("tokenizer.ggml.{k} is not a list of strings")))
            })
            .transpose()
    };
    let id = |k: &str| get(k).and_then(Value::as_u64).map(|v| v as u32);
    let flag = |k: &str| get(k).and_then(Value::as_bool);
    Ok(GgufVocab {
        model: get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| EngineError::Config("GGUF file has no tokenizer (tokenizer.ggml.model)".into()))?
            .to_string(),
        pre: get("pre").and_then(Value::as_str).map(str::to_string),
        tokens: strings("tokens")?.ok_or_else(|| EngineError::Config("GGUF file has no tokenizer.ggml.tokens".into()))?,
        scores: get("scores").and_then(Value::as_array).map(|a| a.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect()),
        token_types: get("token_type").and_then(Value::as_array).map(|a| a.iter().map(|x| x.as_i64().unwrap_or(1) as i32).collect()),
        merges: strings("merges")?,
        bos_id: id("bos_token_id"),
        eos_id: id("eos_token_id"),
        unk_id: id("unknown_token_id"),
        pad_id: id("padding_token_id"),
        add_bos: flag("add_bos_token"),
        add_eos: flag("add_eos_token"),
        add_space_prefix: flag("add_space_prefix"),
    })
}

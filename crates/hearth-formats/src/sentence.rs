//! The sentence-transformers files around a transformer that say how token states become one
//! vector: `modules.json` (Transformer, Pooling, Dense, Normalize, in order), each module's
//! `config.json`, `sentence_bert_config.json` (`max_seq_length`) and
//! `config_sentence_transformers.json` (named prompts, the default one). Both the old module
//! names (`sentence_transformers.models.Pooling`) and sentence-transformers 6's
//! (`sentence_transformers.base.modules.dense.Dense`) are read; a module this does not know is
//! an error naming it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value as Json;

use crate::FormatError;

/// How token states are pooled into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Cls,
    Mean,
    /// The element-wise maximum over tokens.
    Max,
    /// The sum over tokens divided by √(token count).
    MeanSqrtLen,
    /// Tokens weighted by their position (1, 2, …).
    WeightedMean,
    LastToken,
}

impl Pooling {
    /// sentence-transformers' name of the mode (`pooling_mode` in its version 6 files).
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::MeanSqrtLen => "mean_sqrt_len_tokens",
            Pooling::WeightedMean => "weightedmean",
            Pooling::LastToken => "lasttoken",
        }
    }

    const ALL: [(Pooling, &'static str); 6] = [
        (Pooling::Cls, "pooling_mode_cls_token"),
        (Pooling::Mean, "pooling_mode_mean_tokens"),
        (Pooling::Max, "pooling_mode_max_tokens"),
        (Pooling::MeanSqrtLen, "pooling_mode_mean_sqrt_len_tokens"),
        (Pooling::WeightedMean, "pooling_mode_weightedmean_tokens"),
        (Pooling::LastToken, "pooling_mode_lasttoken"),
    ];

    fn from_name(name: &str) -> Option<Pooling> {
        let name = name.to_ascii_lowercase();
        let alias = match name.as_str() {
            "mean_tokens" => "mean",
            "cls_token" => "cls",
            "max_tokens" => "max",
            "weightedmean_tokens" => "weightedmean",
            "mean_sqrt_len" => "mean_sqrt_len_tokens",
            "last_token" => "lasttoken",
            other => other,
        };
        Pooling::ALL.iter().map(|&(p, _)| p).find(|p| p.name() == alias)
    }
}

/// The activation after a Dense layer's product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
    Relu,
    Sigmoid,
    /// The exact (erf) GELU, as torch's `nn.GELU()`.
    Gelu,
}

/// A Dense module: `y = activation(x · Wᵀ + b)`, its weights in `dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dense {
    pub dir: PathBuf,
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
    pub activation: DenseActivation,
}

/// A module after the pooling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    Dense(Dense),
    /// L2 normalisation.
    Normalize,
}

/// How a text reaches the transformer when the model declares the `message` modality
/// (sentence-transformers 6's `modality_config`): as a one-turn conversation through the
/// tokenizer's chat template, the prompt as a system turn before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFormat {
    /// `{"role": "user", "content": "text"}`.
    Flat,
    /// `{"role": "user", "content": [{"type": "text", "text": "text"}]}`.
    Structured,
}

/// The sentence-transformers pipeline around the transformer. A directory without these files
/// gets sentence-transformers' own defaults: mean pooling, nothing after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    /// Whether a prompt's tokens take part in the pooling (`include_prompt`).
    pub include_prompt: bool,
    /// The modules after the pooling, in order.
    pub stages: Vec<Stage>,
    /// `max_seq_length`, if declared.
    pub max_seq_length: Option<usize>,
    /// Named prefixes (`config_sentence_transformers.json` `prompts`), e.g. Qwen3-Embedding's
    /// `query` instruction.
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when a request names none.
    pub default_prompt_name: Option<String>,
    /// Texts go through the chat template (sentence-transformers applies it whenever the saved
    /// `modality_config` has a `message` entry); `None`: tokenized as they are.
    pub messages: Option<MessageFormat>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

impl SentenceConfig {
    pub fn load(dir: &Path) -> Result<Self, FormatError> {
        let mut cfg = SentenceConfig {
            pooling: Pooling::Mean,
            include_prompt: true,
            stages: Vec::new(),
            max_seq_length: None,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
            messages: None,
        };
        let st = dir.join("sentence_bert_config.json");
        if st.is_file() {
            let json = read_json(&st)?;
            cfg.max_seq_length = json.get("max_seq_length").and_then(Json::as_u64).map(|v| v as usize);
            if let Some(message) = json.pointer("/modality_config/message") {
                cfg.messages = Some(match message.get("format").and_then(Json::as_str).unwrap_or("flat") {
                    "flat" => MessageFormat::Flat,
                    "structured" => MessageFormat::Structured,
                    other => return Err(invalid(&st, format!("unknown message format {other:?}"))),
                });
            }
        }
        let prompts_path = dir.join("config_sentence_transformers.json");
        if prompts_path.is_file() {
            let json = read_json(&prompts_path)?;
            if let Some(map) = json.get("prompts").and_then(Json::as_object) {
                cfg.prompts = map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            }
            cfg.default_prompt_name = json.get("default_prompt_name").and_then(Json::as_str).map(str::to_string);
            if let Some(name) = cfg.default_prompt_name.as_ref().filter(|n| !cfg.prompts.contains_key(*n)) {
                return Err(invalid(&prompts_path, format!("default_prompt_name {name:?} is not one of the prompts")));
            }
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(cfg);
        }
        let modules: Vec<Module> = serde_json::from_value(read_json(&modules_path)?).map_err(|e| invalid(&modules_path, e))?;
        let mut seen_pooling = false;
        for m in modules {
            let module_dir = dir.join(&m.path);
            match m.kind.rsplit('.').next().unwrap_or("") {
                "Transformer" if !seen_pooling => {}
                "Pooling" if !seen_pooling => {
                    (cfg.pooling, cfg.include_prompt) = read_pooling(&module_dir.join("config.json"))?;
                    seen_pooling = true;
                }
                "Dense" if seen_pooling => cfg.stages.push(Stage::Dense(read_dense(&module_dir)?)),
                "Normalize" if seen_pooling => cfg.stages.push(Stage::Normalize),
                "Transformer" | "Pooling" | "Dense" | "Normalize" => {
                    return Err(invalid(&modules_path, format!("module {:?} ({}) is out of order", m.path, m.kind)))
                }
                _ => return Err(invalid(&modules_path, format!("unsupported sentence-transformers module {:?}", m.kind))),
            }
        }
        Ok(cfg)
    }

    /// What a GGUF embedding model declares, as llama.cpp reads it: the pooling in
    /// `{arch}.pooling_type` (1 mean, 2 CLS, 3 last token), then normalisation (llama.cpp's
    /// default for embeddings); no prompts. A file without a pooling type is a language
    /// model, not an embedder.
    pub fn from_gguf(g: &crate::gguf::Gguf) -> Result<Self, FormatError> {
        let arch = g.get("general.architecture").and_then(crate::gguf::Value::as_str).unwrap_or_default();
        let pooling = match g.get(&format!("{arch}.pooling_type")).and_then(crate::gguf::Value::as_u64) {
            None => return Err(FormatError::Invalid(format!("not an embedding model: the GGUF has no {arch}.pooling_type"))),
            Some(1) => Pooling::Mean,
            Some(2) => Pooling::Cls,
            Some(3) => Pooling::LastToken,
            Some(other) => {
                return Err(FormatError::Invalid(format!(
                    "{arch}.pooling_type {other} is not an embedding pooling (1 mean, 2 CLS, 3 last)"
                )))
            }
        };
        Ok(SentenceConfig {
            pooling,
            include_prompt: true,
            stages: vec![Stage::Normalize],
            max_seq_length: None,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
            messages: None,
        })
    }

    /// Whether the vectors leave the pipeline normalised (its last module is Normalize).
    pub fn normalizes(&self) -> bool {
        self.stages.last() == Some(&Stage::Normalize)
    }

    /// The vectors' length for a transformer of `hidden` features: the last Dense layer's
    /// outputs, else the pooled width.
    pub fn dimension(&self, hidden: usize) -> usize {
        self.stages
            .iter()
            .rev()
            .find_map(|s| match s {
                Stage::Dense(d) => Some(d.out_features),
                Stage::Normalize => None,
            })
            .unwrap_or(hidden)
    }
}

/// The pooling mode and `include_prompt`: sentence-transformers 6's `pooling_mode` (a name, or
/// a list of one), or the older `pooling_mode_*` flags.
fn read_pooling(path: &Path) -> Result<(Pooling, bool), FormatError> {
    let json = read_json(path)?;
    let include_prompt = json.get("include_prompt").and_then(Json::as_bool).unwrap_or(true);
    let named: Option<Vec<&str>> = match json.get("pooling_mode") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(vec![s.as_str()]),
        Some(Json::Array(a)) => Some(a.iter().filter_map(Json::as_str).collect()),
        Some(other) => return Err(invalid(path, format!("pooling_mode {other} is neither a name nor a list"))),
    };
    let chosen: Vec<Pooling> = match named {
        Some(names) => names
            .iter()
            .map(|n| Pooling::from_name(n).ok_or_else(|| invalid(path, format!("unknown pooling mode {n:?}"))))
            .collect::<Result<_, _>>()?,
        None => {
            let on = |key: &str| json.get(key).and_then(Json::as_bool).unwrap_or(false);
            Pooling::ALL.iter().filter(|(_, key)| on(key)).map(|&(p, _)| p).collect()
        }
    };
    match chosen[..] {
        [p] => Ok((p, include_prompt)),
        [] => Err(invalid(path, "no pooling mode is enabled")),
        _ => Err(invalid(path, "several pooling modes at once (concatenated vectors) are not supported")),
    }
}

/// A Dense module's `config.json`; its weights are checked against it when loaded.
fn read_dense(dir: &Path) -> Result<Dense, FormatError> {
    let path = dir.join("config.json");
    let json = read_json(&path)?;
    let size = |key: &str| -> Result<usize, FormatError> {
        json.get(key).and_then(Json::as_u64).filter(|&v| v > 0).map(|v| v as usize).ok_or_else(|| invalid(&path, format!("missing {key}")))
    };
    // sentence-transformers' Dense defaults to tanh.
    let activation_name = json.get("activation_function").and_then(Json::as_str).unwrap_or("torch.nn.modules.activation.Tanh");
    let activation = match activation_name.rsplit('.').next().unwrap_or("") {
        "Identity" => DenseActivation::Identity,
        "Tanh" => DenseActivation::Tanh,
        "ReLU" => DenseActivation::Relu,
        "Sigmoid" => DenseActivation::Sigmoid,
        "GELU" => DenseActivation::Gelu,
        _ => return Err(invalid(&path, format!("unsupported Dense activation {activation_name:?}"))),
    };
    Ok(Dense {
        dir: dir.to_path_buf(),
        in_features: size("in_features")?,
        out_features: size("out_features")?,
        bias: json.get("bias").and_then(Json::as_bool).unwrap_or(true),
        activation,
    })
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> FormatError {
    FormatError::Invalid(format!("{}: {message}", path.display()))
}

fn read_json(path: &Path) -> Result<Json, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::io(path, source))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, e))
}

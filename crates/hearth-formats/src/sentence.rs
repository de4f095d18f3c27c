//! The sentence-transformers files around an encoder that say how token states become one
//! vector: `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json` and
//! `config_sentence_transformers.json`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::FormatError;

/// How token states are pooled into one vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    LastToken,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::LastToken => "lasttoken",
        }
    }
}

/// The sentence-transformers pipeline around the encoder. A directory without these files
/// gets sentence-transformers' own defaults: mean pooling, no normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentenceConfig {
    pub pooling: Pooling,
    pub normalize: bool,
    /// `max_seq_length`, if declared.
    pub max_seq_length: Option<usize>,
    /// Named prefixes (`config_sentence_transformers.json` `prompts`), e.g. Qwen3-Embedding's
    /// `query` instruction.
    pub prompts: BTreeMap<String, String>,
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
        let mut cfg = SentenceConfig { pooling: Pooling::Mean, normalize: false, max_seq_length: None, prompts: BTreeMap::new() };
        let st = dir.join("sentence_bert_config.json");
        if st.is_file() {
            cfg.max_seq_length = read_json(&st)?.get("max_seq_length").and_then(Json::as_u64).map(|v| v as usize);
        }
        let prompts = dir.join("config_sentence_transformers.json");
        if prompts.is_file() {
            if let Some(map) = read_json(&prompts)?.get("prompts").and_then(Json::as_object) {
                cfg.prompts = map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            }
        }
        let modules_path = dir.join("modules.json");
        if !modules_path.is_file() {
            return Ok(cfg);
        }
        let modules: Vec<Module> = serde_json::from_value(read_json(&modules_path)?).map_err(|e| invalid(&modules_path, e))?;
        for m in modules {
            match m.kind.rsplit('.').next().unwrap_or("") {
                "Transformer" => {}
                "Pooling" => cfg.pooling = read_pooling(&dir.join(&m.path).join("config.json"))?,
                "Normalize" => cfg.normalize = true,
                other => return Err(invalid(&modules_path, format!("unsupported sentence-transformers module {other:?}"))),
            }
        }
        Ok(cfg)
    }
}

fn read_pooling(path: &Path) -> Result<Pooling, FormatError> {
    let json = read_json(path)?;
    let on = |key: &str| json.get(key).and_then(Json::as_bool).unwrap_or(false);
    let modes = [
        ("pooling_mode_mean_tokens", Pooling::Mean),
        ("pooling_mode_cls_token", Pooling::Cls),
        ("pooling_mode_lasttoken", Pooling::LastToken),
    ];
    let chosen: Vec<Pooling> = modes.iter().filter(|(k, _)| on(k)).map(|&(_, p)| p).collect();
    let unsupported = ["pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens"];
    match chosen[..] {
        [p] if !unsupported.iter().any(|k| on(k)) => Ok(p),
        _ => Err(invalid(path, "exactly one of mean, CLS or last-token pooling must be enabled (others are not supported)")),
    }
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> FormatError {
    FormatError::Invalid(format!("{}: {message}", path.display()))
}

fn read_json(path: &Path) -> Result<Json, FormatError> {
    let text = std::fs::read_to_string(path).map_err(|source| FormatError::io(path, source))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, e))
}

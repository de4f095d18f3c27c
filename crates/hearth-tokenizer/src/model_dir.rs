//! What HF / MLX model directories say about chat templates and special tokens.

use std::path::Path;

use serde_json::Value;

use crate::TokenizerError;

/// Special tokens named in `tokenizer_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

/// The directory's chat template: `chat_template.jinja` if present, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of `{name, template}` of which "default" is used).
pub fn find_chat_template(model_dir: &Path) -> Result<Option<String>, TokenizerError> {
    let jinja = model_dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map(Some).map_err(|source| TokenizerError::Io { path: jinja, source });
    }
    let path = model_dir.join("tokenizer_config.json");
    let Some(config) = read_config(&path)? else {
        return Ok(None);
    };
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(template)) => Ok(Some(template.clone())),
        Some(Value::Array(named)) => {
            let default = named.iter().find(|entry| entry.get("name") == Some(&"default".into()));
            match default.map(|entry| entry.get("template")) {
                Some(Some(Value::String(template))) => Ok(Some(template.clone())),
                Some(_) => Err(config_error(&path, "chat template \"default\" has no string `template`")),
                None => Ok(None),
            }
        }
        Some(_) => Err(config_error(&path, "`chat_template` is neither a string nor a list")),
    }
}

/// BOS/EOS from `tokenizer_config.json` (values may be strings or `{"content": ...}` objects);
/// all `None` when the file does not exist.
pub fn read_special_tokens(model_dir: &Path) -> Result<SpecialTokens, TokenizerError> {
    let path = model_dir.join("tokenizer_config.json");
    let Some(config) = read_config(&path)? else {
        return Ok(SpecialTokens::default());
    };
    let token = |key: &str| match config.get(key) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(config_error(&path, &format!("`{key}` object has no string `content`"))),
        },
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(config_error(&path, &format!("`{key}` is neither a string nor an object"))),
    };
    Ok(SpecialTokens { bos: token("bos_token")?, eos: token("eos_token")? })
}

fn read_config(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io { path: path.to_path_buf(), source })?;
    let value: Value = serde_json::from_str(&text).map_err(|source| TokenizerError::Json { path: path.to_path_buf(), source })?;
    if value.is_object() {
        Ok(Some(value))
    } else {
        Err(config_error(path, "top level is not a JSON object"))
    }
}

fn config_error(path: &Path, message: &str) -> TokenizerError {
    TokenizerError::Config { path: path.to_path_buf(), message: message.to_string() }
}

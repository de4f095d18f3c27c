//! Where Hearth keeps its files, and how a model named on the command line is found.

use std::path::PathBuf;

use crate::{EngineError, Result};

/// `$HEARTH_HOME`, else `$XDG_CACHE_HOME/hearth`, else `~/.cache/hearth`.
pub fn hearth_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HEARTH_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|c| !c.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("hearth")
}

/// Short names for the models scripts/fetch-test-models.sh installs.
const ALIASES: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct-Q4_1.gguf"),
    ("smollm2-135m", "SmolLM2-135M-Instruct-Q4_1.gguf"),
    ("minilm", "all-MiniLM-L6-v2"),
    ("all-minilm-l6-v2", "all-MiniLM-L6-v2"),
];

/// The default chat model: small enough for any machine.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Resolves a model given as a path, or as a name (or alias) under `$HEARTH_HOME/models`.
pub fn resolve_model(spec: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(spec);
    if direct.exists() {
        return Ok(direct);
    }
    let name = ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(spec)).map_or(spec, |(_, f)| f);
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(not_found(spec));
    }
    let models = hearth_home().join("models");
    for candidate in [models.join(name), models.join(format!("{name}.gguf"))] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(not_found(spec))
}

fn not_found(spec: &str) -> EngineError {
    EngineError::Io {
        path: PathBuf::from(spec),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "no such model: not a path, and not in {} (scripts/fetch-test-models.sh installs the small test models)",
                hearth_home().join("models").display()
            ),
        ),
    }
}

//! Paths a request names (an adapter, a model directory) are confined to the directories the
//! server may read: $HEARTH_HOME, the exports directory and `--allow-path`. A path is checked
//! as written (`..` resolved) before anything is looked up, and again after its links are
//! followed; outside, the answer is the same 403 whether or not the file exists, and it does
//! not repeat the path.

use std::path::{Path, PathBuf};

use hearth_store::normalise as lexical;

use crate::error::ApiError;

/// `given`, resolved and checked to lie under one of `roots`; a 403 about `param` if not, a
/// 404 if nothing is there.
pub fn confine(roots: &[PathBuf], given: &str, param: &str) -> Result<PathBuf, ApiError> {
    let outside = || ApiError {
        param: Some(param.to_string()),
        ..ApiError::forbidden(format!(
            "`{param}` is outside the directories this server may read ($HEARTH_HOME, the exports directory, --allow-path)"
        ))
    };
    let path = Path::new(given);
    if !path.is_absolute() {
        return Err(ApiError::invalid(param, format!("`{param}` must be an absolute path")));
    }
    let written = lexical(path);
    let real_roots: Vec<PathBuf> = roots.iter().filter_map(|r| r.canonicalize().ok()).collect();
    let as_written = roots.iter().map(|r| lexical(r)).chain(real_roots.iter().cloned());
    if !as_written.into_iter().any(|r| written.starts_with(&r)) {
        return Err(outside());
    }
    let real = written
        .canonicalize()
        .map_err(|_| ApiError { param: Some(param.to_string()), ..ApiError::not_found(format!("nothing is at `{given}`")) })?;
    if !real_roots.iter().any(|r| real.starts_with(r)) {
        return Err(outside());
    }
    Ok(real)
}

/// As [`confine`], for a folder to write that may not exist yet: then its parent must, under
/// one of `roots`.
pub fn confine_new(roots: &[PathBuf], given: &str, param: &str) -> Result<PathBuf, ApiError> {
    let written = lexical(Path::new(given));
    match (written.parent(), written.file_name()) {
        (Some(parent), Some(name)) if Path::new(given).is_absolute() && !written.exists() => {
            Ok(confine(roots, &parent.display().to_string(), param)?.join(name))
        }
        _ => confine(roots, given, param),
    }
}

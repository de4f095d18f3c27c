use std::fs;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::WalkDir;

use crate::{ContentType, DocError, Result};

/// The files under `root` that this crate can read, sorted. Globs match paths relative to
/// `root`, and `*` crosses folders (`*.md` takes Markdown at any depth); `include` narrows the
/// supported files (empty: all of them) and `exclude` removes from them. Hidden folders
/// (`.git`) are skipped and symbolic links are not followed. A `root` that is a file is
/// returned as is.
pub fn walk(root: &Path, include: &[String], exclude: &[String]) -> Result<Vec<PathBuf>> {
    let include = if include.is_empty() { None } else { Some(glob_set(include)?) };
    let exclude = glob_set(exclude)?;
    if !fs::metadata(root).map_err(|error| DocError::from(error).in_file(root))?.is_dir() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    let entries = WalkDir::new(root).follow_links(false).into_iter().filter_entry(|entry| {
        let hidden = entry.file_name().to_str().is_some_and(|name| name.starts_with('.'));
        entry.depth() == 0 || !(hidden && entry.file_type().is_dir())
    });
    for entry in entries {
        let entry = entry.map_err(|error| {
            let path = error.path().unwrap_or(root).to_path_buf();
            let io = error.into_io_error().unwrap_or_else(|| std::io::Error::other("filesystem loop"));
            DocError::from(io).in_file(&path)
        })?;
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let wanted = entry.file_type().is_file()
            && ContentType::from_path(relative).is_some()
            && include.as_ref().is_none_or(|include| include.is_match(relative))
            && !exclude.is_match(relative);
        if wanted {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}

fn glob_set(patterns: &[String]) -> Result<GlobSet> {
    let invalid =
        |pattern: &str, error: globset::Error| DocError::InvalidGlob { pattern: pattern.to_string(), message: error.kind().to_string() };
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(Glob::new(pattern).map_err(|error| invalid(pattern, error))?);
    }
    builder.build().map_err(|error| invalid(&patterns.join(", "), error))
}

//! Validation of everything that becomes part of a path or URL: repo ids, revisions, file
//! names from the Hub. Names come from users and from the network, so nothing is trusted.

use crate::{Result, StoreError};

fn invalid(what: &'static str, value: &str, reason: &'static str) -> StoreError {
    StoreError::InvalidName { what, value: value.to_string(), reason }
}

/// One `org` or `name` part of a repo id, with the Hub's own rules.
fn check_repo_part(part: &str, id: &str) -> Result<()> {
    let what = "repo id";
    if part.is_empty() {
        return Err(invalid(what, id, "expected `name` or `org/name`"));
    }
    if part.len() > 96 {
        return Err(invalid(what, id, "a part is longer than 96 characters"));
    }
    if !part.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(invalid(what, id, "only letters, digits, '-', '_' and '.' are allowed"));
    }
    if part.starts_with(['.', '-']) || part.ends_with(['.', '-']) || part.contains("--") || part.contains("..") {
        return Err(invalid(what, id, "parts may not start or end with '.' or '-', or contain '--' or '..'"));
    }
    Ok(())
}

/// A Hub repo id: `org/name` (or a bare `name`, as for `gpt2`).
pub fn check_repo_id(id: &str) -> Result<()> {
    let parts: Vec<&str> = id.split('/').collect();
    if parts.len() > 2 {
        return Err(invalid("repo id", id, "expected `name` or `org/name`"));
    }
    parts.iter().try_for_each(|p| check_repo_part(p, id))
}

/// A branch, tag or commit. Branches may contain '/' (`refs/pr/1`), so each segment is checked.
pub fn check_revision(rev: &str) -> Result<()> {
    let what = "revision";
    if rev.is_empty() || rev.len() > 255 {
        return Err(invalid(what, rev, "must be 1 to 255 characters"));
    }
    if !rev.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')) {
        return Err(invalid(what, rev, "only letters, digits, '-', '_', '.' and '/' are allowed"));
    }
    if rev.split('/').any(|s| s.is_empty() || s == "." || s == ".." || s.ends_with(".lock")) {
        return Err(invalid(what, rev, "empty, '.', '..' or '*.lock' path segment"));
    }
    Ok(())
}

/// A file path inside a repo, as the Hub lists it: relative, no `..`, no backslashes.
pub fn check_file_name(name: &str) -> Result<()> {
    let what = "file name";
    if name.is_empty() || name.len() > 1024 {
        return Err(invalid(what, name, "must be 1 to 1024 characters"));
    }
    if name.starts_with('/') || name.contains('\\') || name.contains(':') {
        return Err(invalid(what, name, "must be a relative path with '/' separators"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(what, name, "contains control characters"));
    }
    if name.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(invalid(what, name, "empty, '.' or '..' path segment"));
    }
    Ok(())
}

/// A full commit id: 40 lowercase hex digits.
pub fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A blob name in the cache: a SHA-256 (64 hex) or git SHA-1 (40 hex).
pub fn check_blob_hash(hash: &str) -> Result<()> {
    if (hash.len() == 64 || hash.len() == 40) && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(invalid("file hash", hash, "expected a 40- or 64-digit lowercase hex digest"))
    }
}

/// A model as a user names it: `org/name`, optionally `@revision` and `:QUANT` (for a GGUF
/// repo, picks the file whose name contains the quantisation), e.g.
/// `bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    pub repo: String,
    pub revision: Option<String>,
    pub quant: Option<String>,
}

impl ModelSpec {
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let spec = spec.strip_prefix("hf.co/").or_else(|| spec.strip_prefix("huggingface.co/")).unwrap_or(spec);
        let (rest, quant) = match spec.split_once(':') {
            Some((r, q)) => (r, Some(q.to_string())),
            None => (spec, None),
        };
        let (repo, revision) = match rest.split_once('@') {
            Some((r, v)) => (r, Some(v.to_string())),
            None => (rest, None),
        };
        check_repo_id(repo)?;
        if let Some(rev) = &revision {
            check_revision(rev)?;
        }
        if let Some(q) = &quant {
            if q.is_empty() || !q.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) {
                return Err(invalid("quantisation", q, "expected something like Q4_K_M"));
            }
        }
        Ok(Self { repo: repo.to_string(), revision, quant })
    }

    /// The registry name: the repo id, plus `@revision` when one other than `main` was
    /// chosen (so each revision pulled stays resolvable) and `:QUANT` when a quantisation was.
    pub fn name(&self) -> String {
        let mut name = self.repo.clone();
        if let Some(rev) = self.revision.as_deref().filter(|r| *r != "main") {
            name = format!("{name}@{rev}");
        }
        if let Some(q) = &self.quant {
            name = format!("{name}:{q}");
        }
        name
    }
}

/// `repo[@revision][:QUANT]`: parses back to the same spec.
impl std::fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.repo)?;
        if let Some(rev) = &self.revision {
            write!(f, "@{rev}")?;
        }
        if let Some(q) = &self.quant {
            write!(f, ":{q}")?;
        }
        Ok(())
    }
}

/// The directory name a repo gets in the cache: `models--org--name`, as huggingface_hub does.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_names() {
        for ok in ["HuggingFaceTB/SmolLM2-135M-Instruct", "mlx-community/Qwen2.5-7B-Instruct-4bit", "gpt2"] {
            check_repo_id(ok).unwrap();
        }
        let s = ModelSpec::parse("bartowski/Llama-3.2-1B-Instruct-GGUF@main:Q4_K_M").unwrap();
        assert_eq!(s.repo, "bartowski/Llama-3.2-1B-Instruct-GGUF");
        assert_eq!(s.revision.as_deref(), Some("main"));
        assert_eq!(s.name(), "bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M");
        let tagged = ModelSpec::parse("org/x@v1.0").unwrap();
        assert_eq!(tagged.name(), "org/x@v1.0");
        check_revision("refs/pr/1").unwrap();
        check_file_name("1_Pooling/config.json").unwrap();
    }

    #[test]
    fn rejects_traversal_and_malformed_names() {
        for bad in ["", "/", "../etc", "a/../b", "/abs/path", "a/b/c", "a//b", "org/.hidden", "a--b/c", "a b/c", "a\\b"] {
            assert!(check_repo_id(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", "..", "a/../b", "/main", "main/", "x.lock", "a b"] {
            assert!(check_revision(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a\\b", "./a", "a//b", "c:/x", "a\nb"] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        let e = ModelSpec::parse("../../etc/passwd").unwrap_err().to_string();
        assert!(e.contains("invalid repo id"), "{e}");
    }
}

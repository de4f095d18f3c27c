//! Where Hearth keeps its files, and the one way a model name given to the CLI or the server
//! becomes the files to load: a path (where allowed), the store or the Hugging Face cache,
//! `$HEARTH_HOME/models`, and last a pull from the Hub.

use std::path::{Path, PathBuf};

use crate::name::ModelSpec;
use crate::{ModelRecord, PullRequest, Resolved, Result, Store, StoreError};

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

/// The default chat model: small enough for any machine.
pub const DEFAULT_MODEL: &str = "smollm2";

/// Short names for the models scripts/fetch-test-models.sh installs.
const ALIASES: &[(&str, &str)] = &[
    ("smollm2", "SmolLM2-135M-Instruct-Q4_1.gguf"),
    ("smollm2-135m", "SmolLM2-135M-Instruct-Q4_1.gguf"),
    ("minilm", "all-MiniLM-L6-v2"),
    ("all-minilm-l6-v2", "all-MiniLM-L6-v2"),
];

fn models_dir() -> PathBuf {
    hearth_home().join("models")
}

/// A model installed by hand under `$HEARTH_HOME/models`, by name (a GGUF file's without
/// `.gguf`) or alias. Names that could leave the folder are not looked up.
pub fn installed_model(spec: &str) -> Option<PathBuf> {
    let name = ALIASES.iter().find(|(a, _)| a.eq_ignore_ascii_case(spec)).map_or(spec, |(_, f)| f);
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        return None;
    }
    let models = models_dir();
    [models.join(name), models.join(format!("{name}.gguf"))].into_iter().find(|c| c.exists())
}

/// Finds models for the CLI and the server.
pub struct ModelResolver<'a> {
    /// `None` when the store could not be opened: the other places are still looked in.
    pub store: Option<&'a Store>,
    /// Whether a spec may name a file or folder: only for names the operator or the local user
    /// gave, never for a request's model id, which must not reach arbitrary files.
    pub allow_paths: bool,
}

impl ModelResolver<'_> {
    /// A path (if allowed), a model in the store or the Hugging Face cache, or one under
    /// `$HEARTH_HOME/models`, without any network call. `Ok(None)` if none has it; a cached
    /// model failing its checks (a tampered link, a missing blob) is an error, for the operator
    /// to fix, not a model that does not exist.
    pub fn find(&self, spec: &str) -> Result<Option<Resolved>> {
        if self.allow_paths && Path::new(spec).exists() {
            return Ok(Some(Resolved { path: PathBuf::from(spec), record: None }));
        }
        match self.store.map(|s| s.resolve(spec)) {
            Some(Ok(Some(found))) => return Ok(Some(found)),
            // Not a Hub name: perhaps one under $HEARTH_HOME/models.
            Some(Ok(None) | Err(StoreError::InvalidName { .. })) | None => {}
            Some(Err(e)) => return Err(e),
        }
        Ok(installed_model(spec).map(|path| Resolved { path, record: None }))
    }

    /// What pulling `spec` downloads, if it may be pulled: a catalogue alias or a Hub repo id
    /// (`org/name[@revision][:QUANT]`), so a mistyped local name never reaches the network;
    /// `None` too when there is no store or it is offline.
    pub fn pull_request(&self, spec: &str) -> Option<PullRequest> {
        let online = self.store.is_some_and(|s| !s.hub_config().offline);
        let from_hub = crate::catalogue::lookup(spec).is_some() || (spec.contains('/') && ModelSpec::parse(spec).is_ok());
        if online && from_hub {
            PullRequest::new(spec).ok()
        } else {
            None
        }
    }

    /// [`find`](Self::find), else the model pulled with `pull` (given the store and what to
    /// fetch, it reports progress as the caller likes), else [`StoreError::NoSuchModel`].
    pub fn find_or_pull(&self, spec: &str, pull: impl FnOnce(&Store, &PullRequest) -> Result<ModelRecord>) -> Result<Resolved> {
        if let Some(found) = self.find(spec)? {
            return Ok(found);
        }
        match (self.store, self.pull_request(spec)) {
            (Some(store), Some(req)) => {
                let record = pull(store, &req)?;
                Ok(Resolved { path: record.path.clone(), record: Some(record) })
            }
            _ => Err(StoreError::NoSuchModel { spec: spec.to_string(), models: models_dir() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::HubConfig;

    fn store(home: &Path, offline: bool) -> Store {
        let hub = HubConfig {
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            offline,
            timeout: Duration::from_secs(1),
            attempts: 1,
            parallel: 1,
        };
        Store::open(home, hub).unwrap().with_hf_cache(None)
    }

    #[test]
    fn only_a_local_name_may_be_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let store = store(dir.path(), false);
        let spec = file.to_str().unwrap();
        let local = ModelResolver { store: Some(&store), allow_paths: true }.find(spec).unwrap();
        assert_eq!(local.map(|r| r.path), Some(file.clone()));
        let request = ModelResolver { store: Some(&store), allow_paths: false };
        assert!(request.find(spec).unwrap().is_none());
        assert!(request.pull_request(spec).is_none());
    }

    #[test]
    fn only_repo_ids_and_aliases_are_pulled_and_never_offline() {
        let dir = tempfile::tempdir().unwrap();
        let (online, offline) = (store(dir.path(), false), store(dir.path(), true));
        let resolver = ModelResolver { store: Some(&online), allow_paths: true };
        let alias = crate::catalogue::CATALOGUE[0].alias;
        assert_eq!(resolver.pull_request("org/model:Q4_K_M").map(|r| r.model.to_string()).as_deref(), Some("org/model:Q4_K_M"));
        assert!(resolver.pull_request(alias).is_some());
        assert!(resolver.pull_request("no-such-local-model").is_none());
        assert!(ModelResolver { store: Some(&offline), allow_paths: true }.pull_request("org/model").is_none());
        assert!(ModelResolver { store: None, allow_paths: true }.pull_request("org/model").is_none());
        let err = ModelResolver { store: Some(&offline), allow_paths: true }.find_or_pull("org/model", |_, _| unreachable!()).unwrap_err();
        assert!(matches!(&err, StoreError::NoSuchModel { spec, .. } if spec == "org/model"), "{err}");
        assert!(err.to_string().contains("no such model"), "{err}");
    }
}

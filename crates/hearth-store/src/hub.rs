//! The Hub's HTTP API: resolving a revision to a commit with its file list, and fetching
//! file bytes from an offset. Everything else (caching, verification) lives elsewhere.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{AUTHORIZATION, RANGE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::name::{check_blob_hash, check_file_name, check_repo_id, check_revision, is_commit};
use crate::{Result, StoreError};

/// How to reach the Hub. [`HubConfig::from_env`] reads the variables `huggingface_hub` uses.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT`, default `https://huggingface.co`.
    pub endpoint: String,
    /// `HF_TOKEN`, else the token file `huggingface-cli login` writes.
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE=1`: never touch the network.
    pub offline: bool,
    /// Longest wait for a response or for the next bytes of one (`HEARTH_HUB_TIMEOUT`, seconds).
    pub timeout: Duration,
    /// Attempts per request on a transient failure (timeout, cut connection, 5xx).
    pub attempts: u32,
    /// Files downloaded at once.
    pub parallel: usize,
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub(crate) fn hf_home() -> Option<PathBuf> {
    if let Some(h) = env_nonempty("HF_HOME") {
        return Some(PathBuf::from(h));
    }
    let cache =
        env_nonempty("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("huggingface"))
}

impl HubConfig {
    pub fn from_env() -> Self {
        let truthy = |k: &str| env_nonempty(k).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"));
        let token = env_nonempty("HF_TOKEN").or_else(|| {
            let file = hf_home()?.join("token");
            std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()).filter(|t| !t.is_empty())
        });
        Self {
            endpoint: env_nonempty("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".into()),
            token,
            offline: truthy("HF_HUB_OFFLINE"),
            timeout: Duration::from_secs(env_nonempty("HEARTH_HUB_TIMEOUT").and_then(|t| t.parse().ok()).unwrap_or(30)),
            attempts: 5,
            parallel: 4,
        }
    }
}

/// One file of a repo at a commit, with what it must hash to.
#[derive(Clone, Debug)]
pub(crate) struct RemoteFile {
    pub path: String,
    pub size: u64,
    /// LFS SHA-256 for LFS files, git blob SHA-1 for the others.
    pub hash: String,
}

#[derive(Debug)]
pub(crate) struct RepoListing {
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

pub(crate) struct Hub {
    client: Client,
    config: HubConfig,
    endpoint: Url,
}

impl Hub {
    pub fn new(config: HubConfig) -> Result<Self> {
        let endpoint = Url::parse(config.endpoint.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| StoreError::Invalid(format!("HF_ENDPOINT {:?} is not an http(s) URL", config.endpoint)))?;
        // The blocking client applies `timeout` to each wait (headers, then every read), so a
        // stalled transfer fails without capping how long a large healthy one may take.
        let client = Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Invalid(format!("cannot start the HTTP client: {e}")))?;
        Ok(Self { client, config, endpoint })
    }

    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        url.path_segments_mut().expect("checked to be an http(s) URL").pop_if_empty().extend(segments.iter().flat_map(|s| s.split('/')));
        url
    }

    /// Resolves `revision` to a commit and lists the repo's files with sizes and hashes.
    pub fn listing(&self, repo: &str, revision: &str) -> Result<RepoListing> {
        check_repo_id(repo)?;
        check_revision(revision)?;
        let mut url = self.url(&["api", "models", repo, "revision"]);
        // The revision is one segment: `refs/pr/1` travels as `refs%2Fpr%2F1`.
        url.path_segments_mut().expect("http URL").push(revision);
        url.set_query(Some("blobs=true"));
        let info: RevisionInfo = self.with_retries(|| {
            let resp = self.get(&url, 0)?;
            resp.json().map_err(|e| network_error(url.as_str(), &e, self.config.timeout))
        })?;
        if !is_commit(&info.sha) {
            return Err(StoreError::Invalid(format!("{url}: the Hub returned an invalid commit {:?}", info.sha)));
        }
        let files = info
            .siblings
            .into_iter()
            .map(|s| {
                check_file_name(&s.rfilename)?;
                let (size, hash) = match (s.lfs, s.size, s.blob_id) {
                    (Some(lfs), _, _) => (lfs.size, lfs.sha256.to_ascii_lowercase()),
                    (None, Some(size), Some(blob)) => (size, blob.to_ascii_lowercase()),
                    _ => {
                        return Err(StoreError::Invalid(format!(
                            "{url}: the Hub gave no size or hash for {:?}, so it cannot be verified",
                            s.rfilename
                        )))
                    }
                };
                check_blob_hash(&hash)?;
                Ok(RemoteFile { path: s.rfilename, size, hash })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RepoListing { commit: info.sha, files })
    }

    pub fn file_url(&self, repo: &str, commit: &str, file: &str) -> Url {
        self.url(&[repo, "resolve", commit, file])
    }

    /// GETs `url` from byte `from` on (following the Hub's redirects to its CDN) and checks
    /// the status; the caller checks whether the range was honoured.
    pub fn get(&self, url: &Url, from: u64) -> Result<Response> {
        if self.config.offline {
            return Err(StoreError::Offline(format!("{url} would need the network")));
        }
        let mut req = self.client.get(url.clone());
        if let Some(token) = &self.config.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if from > 0 {
            req = req.header(RANGE, format!("bytes={from}-"));
        }
        let resp = req.send().map_err(|e| network_error(url.as_str(), &e, self.config.timeout))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::RANGE_NOT_SATISFIABLE {
            return Ok(resp);
        }
        let url = url.to_string();
        Err(match status.as_u16() {
            401 | 403 => StoreError::Unauthorized { url, status: status.as_u16() },
            404 => StoreError::NotFoundOnHub { url },
            code => {
                let header = resp.headers().get("x-error-message").and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = resp.text().unwrap_or_default();
                let message = header.unwrap_or(body).chars().take(200).collect();
                StoreError::Http { url, status: code, message }
            }
        })
    }

    /// Runs `f` again after a transient failure, a bounded number of times.
    pub fn with_retries<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut attempt = 1;
        loop {
            match f() {
                Err(e) if is_transient(&e) && attempt < self.config.attempts => {
                    std::thread::sleep(Duration::from_millis(100 << attempt.min(5)));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

pub(crate) fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Timeout { .. } | StoreError::Network { .. } => true,
        StoreError::Http { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

pub(crate) fn network_error(url: &str, e: &(dyn std::error::Error + 'static), timeout: Duration) -> StoreError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        let timed_out = err.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout)
            || err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return StoreError::Timeout { url: url.to_string(), secs: timeout.as_secs().max(1) };
        }
        // An `io::Error` wrapping another error (a body read wraps the `reqwest::Error`)
        // reports the wrapped error's source, skipping the wrapped error itself.
        source = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
            .or_else(|| err.source());
    }
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        message = format!("{message}: {err}");
        source = err.source();
    }
    StoreError::Network { url: url.to_string(), message }
}

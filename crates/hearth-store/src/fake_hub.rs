//! A fake Hugging Face Hub for tests, on loopback: the revision API, `resolve` URLs with
//! redirects of LFS files to a "CDN" path, the Hub's headers (`X-Repo-Commit`, `ETag`,
//! `X-Linked-Etag`, `X-Linked-Size`), range requests, gated repos, throttling, and injected
//! faults (cut connections, corrupted bytes, error statuses, stalls).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha1::Sha1;
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn git_sha1(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

#[derive(Clone)]
enum Content {
    Disk(PathBuf),
    Memory(Arc<[u8]>),
}

/// One file of a fake repo.
#[derive(Clone)]
pub struct FakeFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// git's blob SHA-1 of the content (of the LFS pointer, for LFS files).
    pub blob_id: String,
    pub lfs: bool,
    content: Content,
}

impl FakeFile {
    /// The hash the Hub advertises for the file: what a cache names its blob.
    pub fn hub_hash(&self) -> &str {
        if self.lfs {
            &self.sha256
        } else {
            &self.blob_id
        }
    }

    fn new(path: &str, content: Content, size: u64, sha256: String, git: String) -> Self {
        // Like the Hub's default .gitattributes: weights and anything big go to LFS.
        let lfs = [".safetensors", ".gguf", ".bin", ".onnx", ".h5"].iter().any(|e| path.ends_with(e)) || size > (10 << 20);
        let blob_id = if lfs {
            git_sha1(format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n").as_bytes())
        } else {
            git
        };
        Self { path: path.to_string(), size, sha256, blob_id, lfs, content }
    }

    pub fn in_memory(path: &str, data: &[u8]) -> Self {
        let sha = hex(&Sha256::digest(data));
        Self::new(path, Content::Memory(data.into()), data.len() as u64, sha, git_sha1(data))
    }

    /// A file on disk, hashed once per process however many repos serve it.
    pub fn on_disk(path: &str, file: &Path) -> std::io::Result<Self> {
        /// Size, SHA-256 and git SHA-1 of each file.
        type Digests = (u64, String, String);
        static HASHES: OnceLock<Mutex<HashMap<PathBuf, Digests>>> = OnceLock::new();
        let hashes = HASHES.get_or_init(Default::default);
        let cached = hashes.lock().unwrap().get(file).cloned();
        let (size, sha, git) = match cached {
            Some(v) => v,
            None => {
                let mut f = File::open(file)?;
                let size = f.metadata()?.len();
                let (mut s256, mut s1) = (Sha256::new(), Sha1::new());
                s1.update(format!("blob {size}\0").as_bytes());
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    s256.update(&buf[..n]);
                    s1.update(&buf[..n]);
                }
                let v = (size, hex(&s256.finalize()), hex(&s1.finalize()));
                hashes.lock().unwrap().insert(file.to_path_buf(), v.clone());
                v
            }
        };
        Ok(Self::new(path, Content::Disk(file.to_path_buf()), size, sha, git))
    }

    fn read_range(&self, from: u64, len: usize) -> std::io::Result<Vec<u8>> {
        match &self.content {
            Content::Memory(d) => Ok(d[from as usize..from as usize + len].to_vec()),
            Content::Disk(p) => {
                let mut f = File::open(p)?;
                f.seek(SeekFrom::Start(from))?;
                let mut buf = vec![0u8; len];
                f.read_exact(&mut buf)?;
                Ok(buf)
            }
        }
    }
}

/// A repo at one commit, which its branches and tags (`main` unless told) resolve to. Serve
/// several `FakeRepo`s with one id for a repo with several commits.
#[derive(Clone)]
pub struct FakeRepo {
    pub id: String,
    pub commit: String,
    pub files: Vec<FakeFile>,
    /// Branch and tag names that resolve to `commit`.
    pub refs: Vec<String>,
    /// Needs `Authorization: Bearer <the hub's token>`.
    pub gated: bool,
}

impl FakeRepo {
    pub fn new(id: &str, files: Vec<FakeFile>) -> Self {
        let mut h = Sha1::new();
        h.update(id.as_bytes());
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(f.hub_hash().as_bytes());
        }
        Self { id: id.to_string(), commit: hex(&h.finalize()), files, refs: vec!["main".into()], gated: false }
    }

    /// Every file under `dir`, with paths relative to it.
    pub fn from_dir(id: &str, dir: &Path) -> std::io::Result<Self> {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d)? {
                let path = entry?.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
                    files.push(FakeFile::on_disk(&rel, &path)?);
                }
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self::new(id, files))
    }

    /// Makes these branches and tags (instead of `main`) resolve to this commit.
    pub fn with_refs(mut self, refs: &[&str]) -> Self {
        self.refs = refs.iter().map(|r| r.to_string()).collect();
        self
    }

    pub fn gated(mut self) -> Self {
        self.gated = true;
        self
    }

    pub fn file(&self, path: &str) -> Option<&FakeFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Where scripts/fetch-test-models.sh put the real test models.
/// (`$HEARTH_TEST_MODELS`, else the script's default `~/.cache/hearth/models`; tests give
/// `HEARTH_HOME` a temporary directory, so it is not consulted.)
pub fn test_models_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("hearth").join("models")
    })
}

/// `HuggingFaceTB/SmolLM2-135M-Instruct-GGUF` serving the real Q4_1 GGUF (plus a README, as
/// real GGUF repos have).
pub fn smollm2_gguf_repo() -> std::io::Result<FakeRepo> {
    let gguf = test_models_dir().join("SmolLM2-135M-Instruct-Q4_1.gguf");
    Ok(FakeRepo::new(
        "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        vec![
            FakeFile::in_memory("README.md", b"# SmolLM2-135M-Instruct GGUF\n"),
            FakeFile::on_disk("SmolLM2-135M-Instruct-Q4_1.gguf", &gguf)?,
        ],
    ))
}

/// `sentence-transformers/all-MiniLM-L6-v2` serving the real files.
pub fn minilm_repo() -> std::io::Result<FakeRepo> {
    FakeRepo::from_dir("sentence-transformers/all-MiniLM-L6-v2", &test_models_dir().join("all-MiniLM-L6-v2"))
}

/// A fault, injected into the next `times` requests whose path contains a given string.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Send the headers and this many body bytes, then close the connection.
    CutAfter(u64),
    /// Flip the bits of the byte at this offset of the file.
    CorruptByte(u64),
    /// Answer with this HTTP status.
    Status(u16),
    /// Say nothing for this long, then close.
    Stall(Duration),
    /// Send the headers and this many body bytes, then say nothing for this long and close.
    StallAfter(u64, Duration),
}

impl Fault {
    fn needs_body(&self) -> bool {
        matches!(self, Fault::CutAfter(_) | Fault::CorruptByte(_) | Fault::StallAfter(..))
    }
}

struct State {
    repos: Vec<FakeRepo>,
    token: Mutex<Option<String>>,
    faults: Mutex<Vec<(String, Fault, usize)>>,
    /// Bytes per second per connection; 0 is unlimited.
    throttle: AtomicU64,
    stopped: AtomicBool,
    requests: AtomicUsize,
    range_requests: AtomicUsize,
}

pub struct FakeHub {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(repos: Vec<FakeRepo>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            repos,
            token: Mutex::new(None),
            faults: Mutex::new(Vec::new()),
            throttle: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            range_requests: AtomicUsize::new(0),
        });
        let s = state.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        let _ = handle(&s, conn);
                    });
                }
            }
        });
        Self { addr, state, accept: Some(accept) }
    }

    /// The value for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = Some(token.to_string());
    }

    pub fn inject(&self, path_contains: &str, fault: Fault, times: usize) {
        self.state.faults.lock().unwrap().push((path_contains.to_string(), fault, times));
    }

    pub fn throttle(&self, bytes_per_sec: u64) {
        self.state.throttle.store(bytes_per_sec, Ordering::SeqCst);
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests that asked for a byte range (resumed downloads).
    pub fn range_requests(&self) -> usize {
        self.state.range_requests.load(Ordering::SeqCst)
    }

    /// Stops listening: later connections are refused, transfers in flight end.
    pub fn stop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Request {
    method: String,
    /// Decoded path, with the raw query kept for fault matching.
    raw_path: String,
    headers: HashMap<String, String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(conn: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let raw_path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    for _ in 0..100 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(Request { method, raw_path, headers })
}

fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn error(conn: &mut TcpStream, status: u16, code: &str, message: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "error": message }).to_string();
    respond(conn, status, &[("X-Error-Code", code.into()), ("X-Error-Message", message.into())], body.as_bytes())
}

impl State {
    /// Takes the first matching fault, if any; body faults only match requests that send bytes.
    fn take_fault(&self, path: &str, sends_body: bool) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap();
        let i = faults.iter().position(|(key, f, _)| path.contains(key.as_str()) && (sends_body || !f.needs_body()))?;
        faults[i].2 -= 1;
        let fault = faults[i].1.clone();
        if faults[i].2 == 0 {
            faults.remove(i);
        }
        Some(fault)
    }

    /// The repository a request names at a revision (branch, tag or commit), or the Hub's
    /// answer when either is unknown (404) or the repo is gated and the request lacks the
    /// token (401).
    fn repo(&self, id: &str, rev: &str, req: &Request) -> Result<&FakeRepo, (u16, &'static str, &'static str)> {
        let mut commits = self.repos.iter().filter(|r| r.id == id).peekable();
        let first = commits.peek().copied().ok_or((404, "RepoNotFound", "Repository not found"))?;
        let token = self.token.lock().unwrap().clone();
        let authorised = !first.gated || token.is_some_and(|t| req.headers.get("authorization") == Some(&format!("Bearer {t}")));
        if !authorised {
            return Err((401, "GatedRepo", "Access to this model is restricted"));
        }
        commits.find(|r| r.commit == rev || r.refs.iter().any(|name| name == rev)).ok_or((404, "RevisionNotFound", "Invalid rev id"))
    }
}

/// Waits `d`, or less if the hub stops.
fn stall(state: &State, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !state.stopped.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn handle(state: &State, mut conn: TcpStream) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = read_request(&conn)?;
    state.requests.fetch_add(1, Ordering::SeqCst);
    let decoded = percent_decode(&req.raw_path);
    let path = req.raw_path.split('?').next().unwrap_or_default().to_string();
    let sends_body = req.method == "GET" && (path.starts_with("/cdn/") || path.contains("/resolve/"));
    let mut fault = state.take_fault(&decoded, false);
    match fault {
        Some(Fault::Status(code)) => return error(&mut conn, code, "Injected", &format!("injected {code}")),
        Some(Fault::Stall(d)) => {
            stall(state, d);
            return conn.shutdown(Shutdown::Both);
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo_id, rev)) = rest.split_once("/revision/") else {
            return error(&mut conn, 404, "EntryNotFound", "unknown API route");
        };
        let (repo_id, rev) = (percent_decode(repo_id), percent_decode(rev));
        let repo = match state.repo(&repo_id, &rev, &req) {
            Ok(repo) => repo,
            Err((status, code, message)) => return error(&mut conn, status, code, message),
        };
        let blobs = req.raw_path.contains("blobs=true");
        let siblings: Vec<serde_json::Value> = repo
            .files
            .iter()
            .map(|f| {
                let mut s = serde_json::json!({ "rfilename": f.path });
                if blobs {
                    s["blobId"] = f.blob_id.clone().into();
                    s["size"] = f.size.into();
                    if f.lfs {
                        s["lfs"] = serde_json::json!({ "sha256": f.sha256, "size": f.size, "pointerSize": 134 });
                    }
                }
                s
            })
            .collect();
        let body = serde_json::json!({ "_id": repo.commit, "id": repo.id, "modelId": repo.id, "sha": repo.commit,
            "private": false, "gated": repo.gated, "siblings": siblings });
        return respond(&mut conn, 200, &[("Content-Type", "application/json".into())], body.to_string().as_bytes());
    }
    if let Some(rest) = path.strip_prefix("/cdn/") {
        let hash = rest.split('/').next().unwrap_or_default();
        let file = state.repos.iter().flat_map(|r| &r.files).find(|f| f.lfs && f.sha256 == hash);
        return match file {
            Some(f) => {
                if sends_body {
                    fault = state.take_fault(&decoded, true);
                }
                serve_bytes(state, &mut conn, &req, f, &[], fault)
            }
            None => error(&mut conn, 404, "EntryNotFound", "no such object"),
        };
    }
    if let Some((repo_id, rest)) = path[1..].split_once("/resolve/") {
        let repo_id = percent_decode(repo_id);
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        let repo = match state.repo(&repo_id, &percent_decode(rev), &req) {
            Ok(repo) => repo,
            Err((status, code, message)) => return error(&mut conn, status, code, message),
        };
        let Some(f) = repo.file(&percent_decode(file)) else {
            return error(&mut conn, 404, "EntryNotFound", "Entry not found");
        };
        let mut headers = vec![("X-Repo-Commit", repo.commit.clone()), ("ETag", format!("\"{}\"", f.blob_id))];
        if f.lfs {
            headers.push(("X-Linked-Etag", format!("\"{}\"", f.sha256)));
            headers.push(("X-Linked-Size", f.size.to_string()));
            headers.push(("Location", format!("/cdn/{}/{}", f.sha256, file)));
            return respond(&mut conn, 302, &headers, b"");
        }
        if sends_body {
            fault = state.take_fault(&decoded, true);
        }
        return serve_bytes(state, &mut conn, &req, f, &headers, fault);
    }
    error(&mut conn, 404, "EntryNotFound", "unknown route")
}

/// Sends a file or the byte range asked for, throttled, with any body fault applied.
fn serve_bytes(
    state: &State,
    conn: &mut TcpStream,
    req: &Request,
    f: &FakeFile,
    extra: &[(&str, String)],
    fault: Option<Fault>,
) -> std::io::Result<()> {
    let range = req.headers.get("range").and_then(|r| r.strip_prefix("bytes=")).map(|r| {
        state.range_requests.fetch_add(1, Ordering::SeqCst);
        let (a, b) = r.split_once('-').unwrap_or((r, ""));
        (a.parse::<u64>().unwrap_or(0), b.parse::<u64>().ok())
    });
    let (start, end) = match range {
        Some((a, _)) if a >= f.size => {
            return respond(conn, 416, &[("Content-Range", format!("bytes */{}", f.size))], b"");
        }
        Some((a, b)) => (a, b.map_or(f.size, |b| (b + 1).min(f.size))),
        None => (0, f.size),
    };
    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nETag: \"{}\"\r\n",
        end - start,
        f.hub_hash()
    );
    if range.is_some() {
        head.push_str(&format!("Content-Range: bytes {start}-{}/{}\r\n", end - 1, f.size));
    }
    for (k, v) in extra.iter().filter(|(k, _)| *k != "ETag") {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if req.method == "HEAD" {
        return conn.write_all(head.as_bytes());
    }
    conn.write_all(head.as_bytes())?;
    let limit = match fault {
        Some(Fault::CutAfter(n) | Fault::StallAfter(n, _)) => (start + n).min(end),
        _ => end,
    };
    let began = Instant::now();
    let mut pos = start;
    while pos < limit {
        if state.stopped.load(Ordering::SeqCst) {
            break;
        }
        let n = (limit - pos).min(64 << 10);
        let mut chunk = f.read_range(pos, n as usize)?;
        if let Some(Fault::CorruptByte(at)) = fault {
            if (pos..pos + n).contains(&at) {
                chunk[(at - pos) as usize] ^= 0xff;
            }
        }
        conn.write_all(&chunk)?;
        pos += n;
        let rate = state.throttle.load(Ordering::SeqCst);
        if rate > 0 {
            let due = Duration::from_secs_f64((pos - start) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    conn.flush()?;
    if let Some(Fault::StallAfter(_, d)) = fault {
        stall(state, d);
    }
    conn.shutdown(Shutdown::Both)
}

//! Datasets: a JSONL upload checked line by line (mlx-lm's record formats, read by the same
//! code `hearth train` reads its data with), split deterministically into `train.jsonl`,
//! `valid.jsonl` and `test.jsonl` under `datasets/<name>/`, and recorded in the database.

use std::path::{Path, PathBuf};

use hearth_train::data::{load_split, parse_records, Shuffle, Text};
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use serde_json::Value;

use crate::db::Db;
use crate::{io, now, valid_name, HubError, Result};

pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Dataset {
    pub name: String,
    /// `chat`, `tools` (chat with tool definitions), `completions` or `text`.
    pub format: String,
    pub records: usize,
    /// Records per split.
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    pub bytes: usize,
    /// Unix seconds.
    pub created_at: i64,
}

/// The shares of the records held out for validation and test.
#[derive(Clone, Copy, Debug)]
pub struct SplitShares {
    pub valid: f64,
    pub test: f64,
}

impl Default for SplitShares {
    fn default() -> Self {
        SplitShares { valid: 0.1, test: 0.1 }
    }
}

/// How many of `n` records a share holds: at least one while enough remain to train on.
fn share(n: usize, fraction: f64) -> usize {
    if fraction <= 0.0 || n < 3 {
        return 0;
    }
    ((n as f64 * fraction).round() as usize).max(1)
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Dataset> {
    Ok(Dataset {
        name: r.get(0)?,
        format: r.get(1)?,
        records: r.get::<_, i64>(2)? as usize,
        train: r.get::<_, i64>(3)? as usize,
        valid: r.get::<_, i64>(4)? as usize,
        test: r.get::<_, i64>(5)? as usize,
        bytes: r.get::<_, i64>(6)? as usize,
        created_at: r.get(7)?,
    })
}

const COLUMNS: &str = "name, format, records, train, valid, test, bytes, created_at";

pub struct Datasets<'a> {
    pub(crate) db: &'a Db,
    /// `datasets/` under the hub's directory.
    pub(crate) dir: PathBuf,
}

impl Datasets<'_> {
    /// Where `name`'s split files are.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Checks `content` (JSONL) line by line, splits it (a fixed shuffle, so the same upload
    /// always splits the same way) and stores it as `name`; nothing is kept if a line is wrong.
    pub fn add(&self, name: &str, content: &[u8], shares: SplitShares) -> Result<Dataset> {
        if !valid_name(name) {
            return Err(HubError::Invalid(format!("`{name}` is not a valid dataset name: 1-64 letters, digits and `._-`")));
        }
        if !(0.0..0.5).contains(&shares.valid) || !(0.0..0.5).contains(&shares.test) {
            return Err(HubError::Invalid("the valid and test shares must each be in [0, 0.5)".into()));
        }
        if self.get(name).is_ok() {
            return Err(HubError::Conflict(format!("a dataset named `{name}` exists")));
        }
        let text = std::str::from_utf8(content).map_err(|e| {
            let line = content[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
            HubError::Invalid(format!("{name}.jsonl:{line}: not UTF-8"))
        })?;
        let (format, records) = parse_records(text, &format!("{name}.jsonl")).map_err(|e| HubError::Invalid(e.to_string()))?;
        let tools = records.iter().any(|(_, r)| r.get("tools").is_some());
        let format = if tools { "tools" } else { format.name() };
        let n = records.len();
        let (valid, test) = (share(n, shares.valid), share(n, shares.test));
        let mut order = Shuffle::new(0).permutation(n);
        let mut parts: Vec<Vec<usize>> = vec![order.split_off(valid + test), order.split_off(test), order];
        parts.iter_mut().for_each(|p| p.sort_unstable());
        let lines: Vec<&str> = text.lines().collect();
        let staging = self.dir.join(format!(".{name}.partial"));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for (split, part) in SPLITS.iter().zip(&parts) {
            if part.is_empty() {
                continue;
            }
            let body: String = part.iter().map(|&i| format!("{}\n", lines[records[i].0 - 1])).collect();
            crate::write_atomically(&staging.join(format!("{split}.jsonl")), body.as_bytes())?;
        }
        let dataset = Dataset {
            name: name.to_string(),
            format: format.to_string(),
            records: n,
            train: parts[0].len(),
            valid: parts[1].len(),
            test: parts[2].len(),
            bytes: content.len(),
            created_at: now(),
        };
        let target = self.path(name);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        let d = &dataset;
        let inserted = self.db.conn().execute(
            &format!("INSERT OR IGNORE INTO datasets ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![d.name, d.format, d.records as i64, d.train as i64, d.valid as i64, d.test as i64, d.bytes as i64, d.created_at],
        )?;
        if inserted == 0 {
            return Err(HubError::Conflict(format!("a dataset named `{name}` exists")));
        }
        Ok(dataset)
    }

    pub fn list(&self) -> Result<Vec<Dataset>> {
        let conn = self.db.conn();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM datasets ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    pub fn get(&self, name: &str) -> Result<Dataset> {
        let found = self.db.conn().query_row(&format!("SELECT {COLUMNS} FROM datasets WHERE name = ?1"), [name], from_row).optional()?;
        found.ok_or_else(|| HubError::NotFound(format!("no dataset named `{name}`")))
    }

    /// Deletes it; refused while a job that has not finished trains on it.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.get(name)?;
        let conn = self.db.conn();
        let busy: i64 =
            conn.query_row("SELECT COUNT(*) FROM jobs WHERE dataset = ?1 AND status IN ('queued', 'running')", [name], |r| r.get(0))?;
        if busy > 0 {
            return Err(HubError::Conflict(format!("a queued or running job trains on `{name}`")));
        }
        conn.execute("DELETE FROM datasets WHERE name = ?1", [name])?;
        drop(conn);
        let path = self.path(name);
        std::fs::remove_dir_all(&path)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(io(&path))
    }

    /// The first `n` records of the train split.
    pub fn preview(&self, name: &str, n: usize) -> Result<Vec<Value>> {
        self.get(name)?;
        let path = self.path(name).join("train.jsonl");
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        Ok(text.lines().take(n).filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Token counts of every split with the tokenizer and chat template of the model at
    /// `model_dir`, as training will see them.
    pub fn token_stats(&self, name: &str, model_dir: &Path, max_seq_length: usize) -> Result<TokenStats> {
        self.get(name)?;
        let text = Text::load(model_dir).map_err(|e| HubError::Invalid(format!("the model's tokenizer: {e}")))?;
        let mut lengths = Vec::new();
        for split in SPLITS {
            if let Some((_, examples)) = load_split(&self.path(name), split, &text).map_err(|e| HubError::Invalid(e.to_string()))? {
                lengths.extend(examples.iter().map(|e| e.tokens.len()));
            }
        }
        Ok(TokenStats::of(&lengths, max_seq_length))
    }
}

/// Token counts of a dataset's records.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokenStats {
    pub records: usize,
    pub tokens: usize,
    pub min: usize,
    pub max: usize,
    pub mean: f64,
    /// Records by length: `[upper bound, count]` for lengths up to 32, 64, 128, … tokens.
    pub histogram: Vec<(usize, usize)>,
    pub max_seq_length: usize,
    /// Records longer than `max_seq_length` (training truncates them).
    pub over_max_seq_length: usize,
}

impl TokenStats {
    fn of(lengths: &[usize], max_seq_length: usize) -> TokenStats {
        let tokens: usize = lengths.iter().sum();
        let max = lengths.iter().copied().max().unwrap_or(0);
        let mut histogram = Vec::new();
        let mut bound = 32;
        loop {
            let below = bound / 2;
            let count = lengths.iter().filter(|&&l| l <= bound && (bound == 32 || l > below)).count();
            histogram.push((bound, count));
            if bound >= max {
                break;
            }
            bound *= 2;
        }
        TokenStats {
            records: lengths.len(),
            tokens,
            min: lengths.iter().copied().min().unwrap_or(0),
            max,
            mean: tokens as f64 / lengths.len().max(1) as f64,
            histogram,
            max_seq_length,
            over_max_seq_length: lengths.iter().filter(|&&l| l > max_seq_length).count(),
        }
    }
}

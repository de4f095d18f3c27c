//! Hub models: what the fine-tuning jobs of one name produce. A model has a description and
//! tags; its versions are its jobs that exported a bundle (`name@1`, `name@2`, …, numbered for
//! good: a deleted version's number is not given again), and `name` serves the newest.
//! Deleting a version unregisters it and removes its bundle, while its run stays on record;
//! deleting the model does that for every version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use crate::jobs::{job_from_row, Finished, JOB_COLUMNS};
use crate::{io, now, Hub, HubError, Job, Result};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct HubModel {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Newest first.
    pub versions: Vec<ModelVersion>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelVersion {
    pub version: i64,
    /// `name@version`, the id it is served by.
    pub id: String,
    pub run_id: String,
    pub base_model: String,
    pub dataset: String,
    /// The export bundle.
    pub path: String,
    /// The fused model in the bundle, where the job asked for one.
    pub fused_path: Option<String>,
    /// The ids it is registered as.
    pub registered: Vec<String>,
    /// When its job finished (Unix seconds).
    pub created_at: Option<i64>,
    /// The run's last training, validation and test losses.
    pub metrics: BTreeMap<String, f64>,
}

const MAX_DESCRIPTION: usize = 4096;
const MAX_TAGS: usize = 32;

/// A description and tags a person can read back: bounded, tags short and without control
/// characters.
pub(crate) fn check_labels(description: Option<&str>, tags: Option<&[String]>) -> Result<()> {
    if description.is_some_and(|d| d.chars().count() > MAX_DESCRIPTION) {
        return Err(HubError::Invalid(format!("`description` is over {MAX_DESCRIPTION} characters")));
    }
    let tags = tags.unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(HubError::Invalid(format!("`tags`: at most {MAX_TAGS}")));
    }
    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.chars().count() > 64 || t.chars().any(char::is_control)) {
        return Err(HubError::Invalid(format!("`tags`: `{bad}` is not a tag (1-64 characters, no control characters)")));
    }
    Ok(())
}

/// Records model `name` (a job of that name was submitted), replacing its description and
/// tags where given.
pub(crate) fn note(conn: &Connection, name: &str, description: Option<&str>, tags: Option<&[String]>) -> rusqlite::Result<()> {
    conn.execute("INSERT OR IGNORE INTO models (name, created_at, updated_at) VALUES (?1, ?2, ?2)", params![name, now()])?;
    if let Some(d) = description {
        conn.execute("UPDATE models SET description = ?2, updated_at = ?3 WHERE name = ?1", params![name, d, now()])?;
    }
    if let Some(t) = tags {
        let t = serde_json::to_string(t).unwrap_or_else(|_| "[]".into());
        conn.execute("UPDATE models SET tags = ?2, updated_at = ?3 WHERE name = ?1", params![name, t, now()])?;
    }
    Ok(())
}

impl Hub {
    /// Every model a job was submitted for, by name.
    pub fn models(&self) -> Result<Vec<HubModel>> {
        let names: Vec<String> = {
            let conn = self.inner.db.conn();
            let mut stmt = conn.prepare("SELECT name FROM models ORDER BY name")?;
            let names = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            names
        };
        names.iter().map(|n| self.model(n)).collect()
    }

    pub fn model(&self, name: &str) -> Result<HubModel> {
        let row = self
            .inner
            .db
            .conn()
            .query_row("SELECT description, tags, created_at, updated_at FROM models WHERE name = ?1", [name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (description, tags, created_at, updated_at) = row.ok_or_else(|| HubError::NotFound(format!("no hub model named `{name}`")))?;
        let mut versions = Vec::new();
        for job in self.version_jobs(name)? {
            let metrics = self.last_metrics(&job.id)?.into_iter().filter(|(k, _)| k.ends_with("_loss")).collect();
            versions.push(ModelVersion {
                version: job.version.unwrap_or_default(),
                id: format!("{name}@{}", job.version.unwrap_or_default()),
                run_id: job.id,
                base_model: job.base_model,
                dataset: job.dataset,
                path: job.export_path.unwrap_or_default(),
                fused_path: job.fused_path,
                registered: job.registered,
                created_at: job.finished_at,
                metrics,
            });
        }
        let tags = serde_json::from_str(&tags).unwrap_or_default();
        Ok(HubModel { name: name.to_string(), description, tags, versions, created_at, updated_at })
    }

    /// Replaces the description and the tags given.
    pub fn edit_model(&self, name: &str, description: Option<String>, tags: Option<Vec<String>>) -> Result<HubModel> {
        self.model(name)?;
        check_labels(description.as_deref(), tags.as_deref())?;
        note(&self.inner.db.conn(), name, description.as_deref(), tags.as_deref())?;
        self.model(name)
    }

    /// Deletes one version of `name` (`Some`) or the model: unregistered, bundles removed,
    /// runs kept. When the newest version goes, `name` moves to the one before it. Returns the
    /// model as it was.
    pub fn delete_model(&self, name: &str, version: Option<i64>) -> Result<HubModel> {
        let model = self.model(name)?;
        let busy: i64 = self.inner.db.conn().query_row(
            "SELECT COUNT(*) FROM jobs WHERE name = ?1 AND status IN ('queued', 'running')",
            [name],
            |r| r.get(0),
        )?;
        if version.is_none() && busy > 0 {
            return Err(HubError::Conflict(format!("a job for `{name}` is queued or running: cancel it first")));
        }
        let doomed: Vec<&ModelVersion> = model.versions.iter().filter(|v| version.is_none_or(|n| v.version == n)).collect();
        if let Some(n) = version.filter(|_| doomed.is_empty()) {
            return Err(HubError::NotFound(format!("`{name}` has no version {n}")));
        }
        let registrar = self.inner.registrar.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let newest = model.versions.first().map(|v| v.version);
        let remaining = model.versions.iter().find(|v| version.is_some_and(|n| v.version != n));
        if let Some(registrar) = &registrar {
            let mut names: Vec<String> = doomed.iter().map(|v| v.id.clone()).collect();
            if doomed.iter().any(|v| Some(v.version) == newest) {
                names.push(name.to_string());
            }
            registrar.unregister(&names).map_err(HubError::Invalid)?;
            // `name` serves the newest version left.
            if let Some(v) = remaining.filter(|_| names.iter().any(|n| n == name)) {
                let finished = Finished {
                    names: vec![name.to_string()],
                    base_model: v.base_model.clone(),
                    bundle: PathBuf::from(&v.path),
                    run_id: v.run_id.clone(),
                    metadata: read_metadata(Path::new(&v.path)),
                };
                if !registrar.register(&finished).map_err(HubError::Invalid)?.is_empty() {
                    self.alias_moved(name, &v.run_id)?;
                }
            }
        }
        for v in &doomed {
            remove_bundle(Path::new(&v.path))?;
            self.inner.db.conn().execute(
                "UPDATE jobs SET removed_at = ?2, registered = NULL, export_path = NULL, fused_path = NULL WHERE id = ?1",
                params![v.run_id, now()],
            )?;
        }
        let folder = self.inner.cfg.exports_dir.join(name);
        // The name's folder goes once its last bundle has; anything else in it stays.
        let _ = std::fs::remove_dir(&folder);
        if version.is_none() {
            self.inner.db.conn().execute("DELETE FROM models WHERE name = ?1", [name])?;
        }
        Ok(model)
    }

    /// Records that `name` now serves the run `to`: it joins that job's registrations and
    /// leaves the others'.
    pub(crate) fn alias_moved(&self, name: &str, to: &str) -> Result<()> {
        let conn = self.inner.db.conn();
        let rows: Vec<(String, Option<String>)> = {
            let mut stmt = conn.prepare("SELECT id, registered FROM jobs WHERE name = ?1")?;
            let rows = stmt.query_map([name], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            rows
        };
        for (id, registered) in rows {
            let mut ids: Vec<String> = registered.and_then(|r| serde_json::from_str(&r).ok()).unwrap_or_default();
            let before = ids.clone();
            ids.retain(|n| n != name);
            if id == to {
                ids.push(name.to_string());
            }
            if ids != before {
                conn.execute(
                    "UPDATE jobs SET registered = ?2 WHERE id = ?1",
                    params![id, serde_json::to_string(&ids).unwrap_or_default()],
                )?;
            }
        }
        Ok(())
    }

    /// The jobs of `name` whose bundles stand, newest version first.
    fn version_jobs(&self, name: &str) -> Result<Vec<Job>> {
        let conn = self.inner.db.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE name = ?1 AND version IS NOT NULL AND export_path IS NOT NULL AND removed_at IS NULL \
             ORDER BY version DESC"
        ))?;
        let rows = stmt.query_map([name], |r| job_from_row(r).map(|(j, _)| j))?.collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The last value of each metric a run recorded.
    pub fn last_metrics(&self, id: &str) -> Result<BTreeMap<String, f64>> {
        let conn = self.inner.db.conn();
        let mut stmt = conn.prepare("SELECT name, value FROM metrics WHERE job = ?1 ORDER BY rowid")?;
        let rows = stmt.query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?)))?;
        let mut last = BTreeMap::new();
        for row in rows {
            let (name, value) = row?;
            last.insert(name, value);
        }
        Ok(last)
    }
}

fn read_metadata(bundle: &Path) -> Value {
    std::fs::read(bundle.join("metadata.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

/// Removes a bundle: renamed aside first, so a crash midway never leaves a half bundle under
/// its name for `/admin/scan` to find.
fn remove_bundle(bundle: &Path) -> Result<()> {
    if !bundle.exists() {
        return Ok(());
    }
    let name = bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let aside = bundle.with_file_name(format!(".{name}.deleting"));
    let _ = std::fs::remove_dir_all(&aside);
    std::fs::rename(bundle, &aside).map_err(io(bundle))?;
    std::fs::remove_dir_all(&aside).map_err(io(&aside))
}

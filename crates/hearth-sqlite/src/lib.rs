//! One way to open every Hearth SQLite database (the model registry, the server's admin
//! registry, each knowledge base): WAL mode, a busy timeout, and the schema brought up to date
//! by an ordered list of migrations.
//!
//! A database's schema version is its `PRAGMA user_version`: version `n` is what the first `n`
//! migrations of its [`Schema`] make. Opening applies the missing ones in one transaction that
//! holds the write lock, so concurrent openers apply each migration once and a failure leaves
//! the file as it was. A version newer than the code knows is refused: a newer Hearth wrote it.
//!
//! Version 1 is the schema of the release that introduced versioning. Databases written before
//! it have `user_version` 0 whatever tables they hold, so each schema's migration 1 finds what
//! is already there (`CREATE ... IF NOT EXISTS`, columns added only where missing) instead of
//! assuming an empty file; later migrations are plain steps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};

/// How long an open, or a statement, waits for another connection's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One step of a schema, run inside the opening transaction.
#[derive(Clone, Copy)]
pub struct Migration {
    /// What it does, for errors.
    pub name: &'static str,
    pub apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

/// A database's migrations, in order: `migrations[n - 1]` takes it from version `n - 1` to `n`.
pub struct Schema {
    /// What the database is, for errors ("the model registry").
    pub what: &'static str,
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version the code writes: that of the last migration.
    pub fn version(&self) -> i64 {
        self.migrations.len() as i64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {source}", .path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error(
        "{}: {what} has schema version {found}, but this Hearth knows versions up to {known}: a newer Hearth wrote it; use that \
         version (or a new database)",
        .path.display()
    )]
    TooNew { path: PathBuf, what: &'static str, found: i64, known: i64 },
    #[error("{}: migrating to schema version {version} ({name}) failed, so it was left unchanged: {source}", .path.display())]
    Migration { path: PathBuf, version: i64, name: &'static str, source: rusqlite::Error },
}

/// Opens (creating) the database at `path` (and its folder) in WAL mode and migrates it to
/// `schema`'s latest version.
pub fn open(path: &Path, schema: &Schema) -> Result<Connection, OpenError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io { path: dir.to_path_buf(), source })?;
    }
    let sqlite = |source| OpenError::Sqlite { path: path.to_path_buf(), source };
    let mut conn = Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    // Switching a new file to WAL can report "busy" without waiting on the busy handler when
    // another process opens it at the same moment: such a start is retried.
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        match prepare(&mut conn, path, schema) {
            Err(OpenError::Sqlite { source: rusqlite::Error::SqliteFailure(e, _), .. })
                if e.code == ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.map(|()| conn),
        }
    }
}

/// WAL mode, then the migrations the file lacks.
fn prepare(conn: &mut Connection, path: &Path, schema: &Schema) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite { path: path.to_path_buf(), source };
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
    // Most opens find the database current and need no write lock.
    if version_to_migrate(conn, path, schema)?.is_none() {
        return Ok(());
    }
    // The write lock is taken up front (IMMEDIATE) and the version read again under it: another
    // opener may have migrated meanwhile.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
    let Some(found) = version_to_migrate(&tx, path, schema)? else {
        return Ok(());
    };
    for (version, m) in (1..).zip(schema.migrations).skip(found as usize) {
        (m.apply)(&tx).map_err(|source| OpenError::Migration { path: path.to_path_buf(), version, name: m.name, source })?;
    }
    tx.pragma_update(None, "user_version", schema.version()).map_err(sqlite)?;
    tx.commit().map_err(sqlite)
}

/// The database's version if it is older than `schema`'s, `None` if current.
fn version_to_migrate(conn: &Connection, path: &Path, schema: &Schema) -> Result<Option<i64>, OpenError> {
    let found: i64 =
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|source| OpenError::Sqlite { path: path.to_path_buf(), source })?;
    let known = schema.version();
    match found {
        _ if found == known => Ok(None),
        0.. if found < known => Ok(Some(found)),
        _ => Err(OpenError::TooNew { path: path.to_path_buf(), what: schema.what, found, known }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: Schema = Schema {
        what: "the notes",
        migrations: &[
            Migration { name: "notes", apply: |tx| tx.execute_batch("CREATE TABLE IF NOT EXISTS notes(text TEXT NOT NULL)") },
            Migration { name: "note authors", apply: |tx| tx.execute_batch("ALTER TABLE notes ADD COLUMN author TEXT") },
        ],
    };

    fn user_version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_an_old_one_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/notes.db");
        let conn = open(&path, &NOTES).unwrap();
        assert_eq!(user_version(&conn), 2);
        let journal: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(journal, "wal");
        conn.execute("INSERT INTO notes VALUES ('hello', 'me')", []).unwrap();
        drop(conn);
        // Opening again runs nothing: the column would be added twice.
        assert_eq!(user_version(&open(&path, &NOTES).unwrap()), 2);

        let old = dir.path().join("old.db");
        Connection::open(&old)
            .unwrap()
            .execute_batch("CREATE TABLE notes(text TEXT NOT NULL); INSERT INTO notes VALUES ('kept');")
            .unwrap();
        let conn = open(&old, &NOTES).unwrap();
        let row: (String, Option<String>) = conn.query_row("SELECT text, author FROM notes", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((row, user_version(&conn)), (("kept".into(), None), 2));
    }

    #[test]
    fn a_failing_migration_changes_nothing() {
        const BROKEN: Schema = Schema {
            what: "the notes",
            migrations: &[
                NOTES.migrations[0],
                Migration { name: "broken", apply: |tx| tx.execute_batch("ALTER TABLE notes ADD COLUMN x; SELECT * FROM nowhere") },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.db");
        let err = open(&path, &BROKEN).unwrap_err();
        assert!(matches!(err, OpenError::Migration { version: 2, name: "broken", .. }), "{err}");
        let conn = Connection::open(&path).unwrap();
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'notes'", [], |r| r.get(0)).unwrap();
        assert_eq!((user_version(&conn), tables), (0, 0));
    }

    #[test]
    fn a_database_from_a_newer_hearth_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.db");
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 3").unwrap();
        let err = open(&path, &NOTES).unwrap_err();
        assert!(matches!(err, OpenError::TooNew { found: 3, known: 2, .. }), "{err}");
        assert!(err.to_string().contains("schema version 3") && err.to_string().contains("newer Hearth"), "{err}");
        assert_eq!(user_version(&Connection::open(&path).unwrap()), 3);
    }

    /// As several processes (pulls, a server) open the model registry.
    #[test]
    fn many_connections_may_open_a_new_database_at_once() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notes.db");
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..8).map(|_| s.spawn(|| open(&path, &NOTES).map(|_| ()))).collect();
                for o in opens {
                    o.join().unwrap().unwrap();
                }
            });
        }
    }
}

//! The service's durable state: one SQLite database (`amfmn.sqlite`, WAL, `synchronous = FULL`)
//! holding users, hashed tokens, images with their codes, and what the service was started with.
//! Its schema is versioned by `user_version` and migrated in the binary.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The database file in the data folder.
pub const DATABASE: &str = "amfmn.sqlite";

/// The schema, one step per version: step `k` takes `user_version` from `k` to `k + 1`.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'user')),
        created INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash BLOB PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_used INTEGER,
        revoked INTEGER
    );
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sha256 TEXT NOT NULL,
        owner INTEGER NOT NULL REFERENCES users(id),
        visibility TEXT NOT NULL CHECK (visibility IN ('private', 'public')),
        name TEXT NOT NULL,
        format TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
        error TEXT,
        fv BLOB,
        gate BLOB,
        checkpoint_sha256 TEXT,
        created INTEGER NOT NULL,
        encoded INTEGER,
        UNIQUE (owner, sha256)
    );
    CREATE INDEX images_status ON images(status, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
",
    "
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        owner INTEGER NOT NULL REFERENCES users(id),
        image INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('locate')),
        params TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
        done INTEGER NOT NULL,
        total INTEGER NOT NULL,
        error TEXT,
        centers TEXT,
        created INTEGER NOT NULL,
        started INTEGER,
        finished INTEGER
    );
    CREATE INDEX jobs_status ON jobs(status, created);
    CREATE INDEX jobs_image ON jobs(image);
",
];

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Opens (creating when `create`) the database at `path` with the service's settings, and brings
/// its schema to the current version. A database of a newer amfmn is refused.
pub fn open(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    } else if !path.is_file() {
        bail!(
            "{} does not exist: start `amfmn serve --data` on that folder once, or add a token first",
            path.display()
        );
    }
    let db = Connection::open_with_flags(path, flags).with_context(|| format!("cannot open {}", path.display()))?;
    let setup = || -> rusqlite::Result<()> {
        db.busy_timeout(std::time::Duration::from_millis(5000))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")
    };
    setup().with_context(|| format!("{} is not an amfmn service database", path.display()))?;
    migrate(&db).with_context(|| format!("cannot bring {} to the current schema", path.display()))?;
    Ok(db)
}

/// Runs the migrations the database has not had yet, each in its own transaction.
fn migrate(db: &Connection) -> Result<()> {
    let version: usize = db.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    if version > MIGRATIONS.len() {
        bail!(
            "its schema version {version} is newer than this amfmn's ({}): run the amfmn that wrote it",
            MIGRATIONS.len()
        );
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = db.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (step + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// `PRAGMA integrity_check`: an error naming the first problem unless the database is sound.
pub fn check_integrity(db: &Connection) -> Result<()> {
    let verdict: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if verdict != "ok" {
        bail!("the database failed its integrity check ({verdict}): restore it from a backup");
    }
    Ok(())
}

/// A value of the `meta` table.
pub fn meta(db: &Connection, key: &str) -> Result<Option<String>> {
    Ok(db.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
}

/// Sets a value of the `meta` table.
pub fn set_meta(db: &Connection, key: &str, value: &str) -> Result<()> {
    db.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
        [key, value],
    )?;
    Ok(())
}

/// The writer connection (one, behind a mutex) and a few readers (WAL lets them read while it
/// writes).
pub struct Database {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
}

impl Database {
    /// The database at `path`, already opened for writing as `writer`.
    pub fn new(writer: Connection, path: &Path) -> Database {
        Database { writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), path: path.to_owned() }
    }

    /// The writer connection, held until the guard drops.
    pub fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `read` on a reader connection (opened on first need, then kept for reuse).
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let db = match pooled {
            Some(db) => db,
            None => open(&self.path, false)?,
        };
        let result = read(&db);
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.len() < 4 {
            readers.push(db);
        }
        result
    }

    /// Copies the write-ahead log into the database file (at shutdown).
    pub fn checkpoint(&self) -> Result<()> {
        self.writer().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_migrates_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE);
        let err = open(&path, false).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let db = open(&path, true).unwrap();
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version as usize, MIGRATIONS.len());
        let mode: String = db.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        check_integrity(&db).unwrap();
        set_meta(&db, "k", "1").unwrap();
        set_meta(&db, "k", "2").unwrap();
        assert_eq!(meta(&db, "k").unwrap().as_deref(), Some("2"));
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let err = format!("{:#}", open(&path, false).unwrap_err());
        assert!(err.contains("schema version 99 is newer"), "{err}");
        std::fs::write(dir.path().join("junk"), b"not a database at all, just some text here").unwrap();
        assert!(open(&dir.path().join("junk"), false).is_err());
    }
}

//! A redb database file that recovers from I/O failures, shared by the embedded tables and the
//! embedded queue.
//!
//! redb latches an I/O error (a full disk, a file that may not grow, a failing device): every
//! later operation on that `Database` fails with `PreviousIo` until it is closed and opened
//! again. So an operation that fails with an I/O error retires the database, and the next
//! operation opens the file again, which runs redb's recovery if the failed commit needs it.
//! Until the disk is fixed each attempt fails again, which callers report as `503`; once it is
//! fixed the next request succeeds, with no restart. A commit is atomic either way: what a
//! failed commit wrote is not visible after the reopen.

use redb::Database;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// While the disk stays full every write fails; one error line this often is enough.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// An adapter's error, as far as this module needs to know it.
pub trait IoFailure: std::fmt::Display {
    /// Whether the error is an I/O failure (the adapter's "unavailable").
    fn is_io(&self) -> bool;
    /// The error for a file that cannot be opened again yet.
    fn unavailable(message: String) -> Self;
}

pub struct RedbFile {
    path: PathBuf,
    /// Creates the tables a fresh file needs (idempotent), on every open.
    init: fn(&Database) -> Result<(), redb::Error>,
    current: Mutex<State>,
}

struct State {
    /// `None` after an I/O failure, until the next operation opens the file again.
    db: Option<Arc<Database>>,
    /// When the last failure was logged, and how many failures since.
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl RedbFile {
    pub fn open(path: &Path, init: fn(&Database) -> Result<(), redb::Error>) -> Result<Self, redb::Error> {
        let db = Self::open_db(path, init)?;
        let state = State { db: Some(Arc::new(db)), logged_at: None, unlogged: 0 };
        Ok(RedbFile { path: path.to_path_buf(), init, current: Mutex::new(state) })
    }

    fn open_db(path: &Path, init: fn(&Database) -> Result<(), redb::Error>) -> Result<Database, redb::Error> {
        let db = Database::create(path)?;
        init(&db)?;
        Ok(db)
    }

    /// Runs `f` (blocking) on the open database; an I/O failure retires the database so the
    /// next call opens the file again.
    pub fn run<T, E: IoFailure>(&self, f: impl FnOnce(&Database) -> Result<T, E>) -> Result<T, E> {
        let db = self.database()?;
        let out = f(&db);
        if let Err(e) = &out
            && e.is_io()
        {
            self.retire(&db, e);
        }
        out
    }

    fn database<E: IoFailure>(&self) -> Result<Arc<Database>, E> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(db) = current.db.as_ref() {
            return Ok(db.clone());
        }
        // Fails (DatabaseAlreadyOpen) while an operation that started before the failure still
        // holds the old handle; the next call tries again.
        let db = Self::open_db(&self.path, self.init)
            .map_err(|e| E::unavailable(format!("{} cannot be opened again yet: {e}", self.path.display())))?;
        tracing::debug!(path = %self.path.display(), "reopened after an I/O failure");
        let db = Arc::new(db);
        current.db = Some(db.clone());
        Ok(db)
    }

    fn retire(&self, failed: &Arc<Database>, error: &impl IoFailure) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if !current.db.as_ref().is_some_and(|db| Arc::ptr_eq(db, failed)) {
            return; // another operation already retired it
        }
        current.db = None;
        current.unlogged += 1;
        if current.logged_at.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::error!(path = %self.path.display(), %error, failures = current.unlogged,
                "I/O failure on the data file: writes fail with 503 until it can be written again \
                 (check free disk space and permissions); it is reopened on the next request");
            current.logged_at = Some(Instant::now());
            current.unlogged = 0;
        }
    }
}

//! A redb database file that recovers from I/O failures and shares its commits, used by the
//! embedded tables and the embedded queue.
//!
//! **Group commit.** Every write goes to one committer thread per file. It takes every write
//! that is waiting, runs them one after the other in a single redb write transaction and commits
//! it once (`Durability::Immediate`: one sync, of the write-ahead journal under the file, see
//! [`crate::journal`]). Concurrent writes thus share one disk sync instead of queueing for one
//! each, and nothing changes for a caller: a write is acknowledged only once it is durable,
//! each write sees the ones before it (the order is the commit order), and a commit that fails
//! fails every write in it.
//!
//! **The sync runs behind the next batch.** The commit's sync is left to a second thread (see
//! [`crate::sync`]), which answers the batch's writes once it is done, while the committer already
//! runs the next batch (and seals its record, but does not run a third before the first is
//! synced). Readers are given the database as the last *synced* commit left it (a read
//! transaction opened after the commit and handed over once it is durable): nobody reads what a
//! power cut could take away, and a write is visible to every read that starts after its
//! answer.
//!
//! A write that fails before writing anything (a failed condition: [`IoFailure::wrote_nothing`])
//! simply answers its error and the others go ahead. One that fails any other way may have
//! written part of its work, so the shared transaction is dropped (redb aborts it) and each write
//! of the batch runs again in a transaction of its own: the rare case pays, never the common one.
//!
//! **I/O failures.** redb latches an I/O error (a full disk, a file that may not grow, a failing
//! device): every later operation on that `Database` fails with `PreviousIo` until it is closed
//! and opened again. So an operation that fails with an I/O error retires the database, and the
//! next operation opens the file again, which runs redb's recovery if the failed commit needs
//! it. Until the disk is fixed each attempt fails again, which callers report as `503`; once it
//! is fixed the next request succeeds, with no restart. A commit is atomic either way: what a
//! failed commit wrote is not visible after the reopen. A failed fdatasync counts the same: it
//! fails its batch, and [`crate::sync`] latches it so that the batch built on it fails too.

use crate::journal::DEFAULT_RING;
use crate::sync::{DiskCounters, Syncer};
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::fs::OpenOptions;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// While the disk stays full every write fails; one error line this often is enough.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The name of each file's committer thread (the benchmark reports its CPU per operation).
pub const COMMIT_THREAD: &str = "redb-commit";

/// The name of each file's sync thread, which answers a commit's writes once it is durable.
pub const SYNC_THREAD: &str = "redb-sync";

/// Writes folded into one commit, at most: bounds the work a failed batch repeats.
const MAX_BATCH: usize = 512;

/// An adapter's error, as far as this module needs to know it.
pub trait IoFailure: std::fmt::Display + Send + 'static {
    /// Whether the error is an I/O failure (the adapter's "unavailable").
    fn is_io(&self) -> bool;
    /// The error for a file that cannot be opened again yet.
    fn unavailable(message: String) -> Self;
    /// Any other failure of the database itself.
    fn internal(message: String) -> Self;
    /// Whether a write that returned this error is known to have written nothing (it checks its
    /// conditions before it writes), so the writes sharing its commit may go ahead.
    fn wrote_nothing(&self) -> bool {
        false
    }
}

/// Why a whole commit failed, handed to every write in it.
#[derive(Debug, Clone)]
struct Failure {
    io: bool,
    message: String,
}

impl Failure {
    fn of(e: impl Into<redb::Error>) -> Self {
        let e = e.into();
        Failure { io: matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo), message: e.to_string() }
    }
    fn to<E: IoFailure>(&self) -> E {
        if self.io { E::unavailable(self.message.clone()) } else { E::internal(self.message.clone()) }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How one write went in a transaction.
enum Ran {
    /// Done, or failed having written nothing: the transaction may go on.
    Clean,
    /// Failed after it may have written: the transaction must be dropped.
    Dirty,
    /// An I/O failure: the database must be retired.
    Io(Failure),
}

/// A write waiting for its commit, its result type erased.
trait Job: Send {
    fn run(&mut self, txn: &WriteTransaction) -> Ran;
    /// Answers the caller: its own result, unless its commit failed.
    fn finish(self: Box<Self>, failed: Option<&Failure>);
}

struct Pending<T, E, F> {
    write: F,
    out: Option<Result<T, E>>,
    /// The result, with the write itself: what it captured (a transaction's items) is freed by
    /// the caller, not on the sync thread, whose time is every waiting writer's.
    reply: oneshot::Sender<(Result<T, E>, F)>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    T: Send + 'static,
    E: IoFailure,
    F: Fn(&WriteTransaction) -> Result<T, E> + Send + 'static,
{
    fn run(&mut self, txn: &WriteTransaction) -> Ran {
        // A panicking write must not take the committer (and every later write) with it.
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| (self.write)(txn)))
            .unwrap_or_else(|_| Err(E::internal("a write panicked; see the log".into())));
        let ran = match &out {
            Ok(_) => Ran::Clean,
            Err(e) if e.is_io() => Ran::Io(Failure { io: true, message: e.to_string() }),
            Err(e) if e.wrote_nothing() => Ran::Clean,
            Err(_) => Ran::Dirty,
        };
        self.out = Some(out);
        ran
    }

    fn finish(self: Box<Self>, failed: Option<&Failure>) {
        let Pending { write, out, reply } = *self;
        let out = match (failed, out) {
            (Some(f), _) => Err(f.to()),
            (None, Some(out)) => out,
            (None, None) => Err(E::internal("a write was answered before it ran".into())),
        };
        let _ = reply.send((out, write)); // the caller may have gone away (a dropped request)
    }
}

pub struct RedbFile {
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    path: PathBuf,
    /// Commits made and the writes they carried (refused ones included), for `stats`.
    commits: AtomicU64,
    writes: AtomicU64,
    /// What the file's writes and syncs cost the disk, for `stats`.
    disk: Arc<DiskCounters>,
    /// Creates the tables a fresh file needs (idempotent), on every open.
    init: fn(&Database) -> Result<(), redb::Error>,
    /// The size of the journal, if it has to be created.
    ring: u64,
    current: Mutex<State>,
}

/// An open database and its file's syncs.
struct Opened {
    db: Database,
    syncer: Arc<Syncer>,
}

struct State {
    /// What readers see: the last commit whose sync is done. Declared before `db`, so that it is
    /// dropped first.
    view: Option<Arc<ReadTransaction>>,
    /// `None` after an I/O failure, until the next operation opens the file again.
    db: Option<Arc<Opened>>,
    /// When the last failure was logged, and how many failures since.
    logged_at: Option<Instant>,
    unlogged: u64,
}

/// How a write of a batch came out, before its commit's sync.
enum Outcome {
    /// In the commit: answered with its own result once the sync is done.
    Committed,
    /// Its commit failed.
    Failed(Failure),
    /// Not committed, and answered with its own error.
    Own,
}

/// A batch's writes, waiting for their commit's sync.
struct Answers {
    /// `None` if the file could not be opened.
    committed: Option<Committed>,
    jobs: Vec<(Box<dyn Job>, Outcome)>,
}

struct Committed {
    opened: Arc<Opened>,
    /// The [`Syncer::sync`] ticket that makes the batch's commits durable.
    ticket: u64,
    /// The database as the batch left it, for readers once it is durable.
    view: Result<ReadTransaction, Failure>,
}

impl RedbFile {
    pub fn open(path: &Path, init: fn(&Database) -> Result<(), redb::Error>) -> Result<Self, redb::Error> {
        Self::open_with_ring(path, init, DEFAULT_RING)
    }

    /// As [`RedbFile::open`], with a journal of `ring` bytes if it is created ([`crate::journal`]).
    pub fn open_with_ring(
        path: &Path,
        init: fn(&Database) -> Result<(), redb::Error>,
        ring: u64,
    ) -> Result<Self, redb::Error> {
        let disk = Arc::<DiskCounters>::default();
        let opened = Shared::open_db(path, init, &disk, ring)?;
        let view = opened.db.begin_read()?;
        let state = State { view: Some(Arc::new(view)), db: Some(opened), logged_at: None, unlogged: 0 };
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            disk,
            init,
            ring,
            current: Mutex::new(state),
        });
        let (jobs, queue) = mpsc::channel::<Box<dyn Job>>();
        let (answers, to_answer) = mpsc::channel::<Answers>();
        let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name.into()).spawn(run).map_err(redb::Error::Io)
        };
        let committer = {
            let shared = shared.clone();
            spawn(
                COMMIT_THREAD,
                Box::new(move || {
                    while let Ok(first) = queue.recv() {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match queue.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        // The sync thread may still be syncing the previous batch: this one runs
                        // meanwhile, and waits for that sync only before it writes to the file.
                        if answers.send(shared.commit(batch)).is_err() {
                            break;
                        }
                    }
                }),
            )?
        };
        let syncer = {
            let shared = shared.clone();
            spawn(SYNC_THREAD, Box::new(move || to_answer.iter().for_each(|a| shared.answer(a))))?
        };
        Ok(RedbFile { shared, jobs: Some(jobs), threads: vec![committer, syncer] })
    }

    /// Runs `f` (blocking) on the database as of the last durable commit, for reads; an I/O
    /// failure retires the database so the next call opens the file again.
    pub fn run<T, E: IoFailure>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, E>) -> Result<T, E> {
        let (opened, view) = self.shared.view().map_err(|f| f.to::<E>())?;
        let out = f(&view);
        if let Err(e) = &out
            && e.is_io()
        {
            self.shared.retire(&opened, e);
        }
        out
    }

    /// Runs `write` in a write transaction shared with the writes waiting alongside it, and
    /// returns its result once that transaction is durable. `write` may run twice (see the
    /// module comment), so it must not consume what it captures.
    pub async fn write<T, E, F>(&self, write: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: IoFailure,
        F: Fn(&WriteTransaction) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending { write, out: None, reply });
        let stopped = || E::internal(format!("{}: the commit thread has stopped", self.shared.path.display()));
        self.jobs.as_ref().ok_or_else(stopped)?.send(job).map_err(|_| stopped())?;
        let (out, write) = answer.await.map_err(|_| stopped())?;
        drop(write); // here, on the caller's thread (see `Pending::reply`)
        out
    }
}

/// How well writes share commits (the benchmark prints `writes / commits`), and what the
/// commits cost the disk: bytes written, fdatasyncs and their time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub commits: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub sync_nanos: u64,
}

impl RedbFile {
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
            bytes_written: self.shared.disk.bytes.load(Ordering::Relaxed),
            syncs: self.shared.disk.syncs.load(Ordering::Relaxed),
            sync_nanos: self.shared.disk.sync_nanos.load(Ordering::Relaxed),
        }
    }
}

impl Drop for RedbFile {
    /// Answers what is under way and closes the file before returning, so that it can be
    /// opened again at once.
    fn drop(&mut self) {
        self.jobs.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Shared {
    fn open_db(
        path: &Path,
        init: fn(&Database) -> Result<(), redb::Error>,
        disk: &Arc<DiskCounters>,
        ring: u64,
    ) -> Result<Arc<Opened>, redb::Error> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let syncer = Syncer::new(path, file, disk.clone(), ring)?;
        let db = redb::Builder::new().create_with_backend(syncer.backend())?;
        init(&db)?;
        Ok(Arc::new(Opened { db, syncer }))
    }

    /// One group commit, up to its sync: the sync thread finishes it with [`Shared::answer`].
    fn commit(&self, mut batch: Vec<Box<dyn Job>>) -> Answers {
        let opened = match self.database() {
            Ok(opened) => opened,
            Err(f) => {
                let jobs = batch.into_iter().map(|job| (job, Outcome::Failed(f.clone()))).collect();
                return Answers { committed: None, jobs };
            }
        };
        let db = &opened.db;
        let (together, ticket) = opened.syncer.deferring(|| {
            let txn = db.begin_write().map_err(|e| Some(Failure::of(e)))?;
            for job in batch.iter_mut() {
                match job.run(&txn) {
                    Ran::Clean => {}
                    Ran::Dirty => return Err(None), // dropping `txn` aborts it
                    Ran::Io(f) => return Err(Some(f)),
                }
            }
            txn.commit().map_err(|e| Some(Failure::of(e)))
        });
        let (jobs, ticket) = match together {
            Ok(()) => {
                self.count(batch.len());
                (batch.into_iter().map(|job| (job, Outcome::Committed)).collect(), ticket)
            }
            Err(Some(f)) => {
                if f.io {
                    self.retire(&opened, &f);
                }
                (batch.into_iter().map(|job| (job, Outcome::Failed(f.clone()))).collect(), ticket)
            }
            // One write failed halfway: each runs again on its own.
            Err(None) => {
                let (jobs, tickets): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|job| opened.syncer.deferring(|| self.commit_alone(&opened, job))).unzip();
                (jobs, tickets.into_iter().max().unwrap_or(ticket))
            }
        };
        let view = db.begin_read().map_err(Failure::of);
        Answers { committed: Some(Committed { opened, ticket, view }), jobs }
    }

    fn commit_alone(&self, opened: &Arc<Opened>, mut job: Box<dyn Job>) -> (Box<dyn Job>, Outcome) {
        let txn = match opened.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return (job, Outcome::Failed(Failure::of(e))),
        };
        let outcome = match job.run(&txn) {
            Ran::Clean => match txn.commit().map_err(Failure::of) {
                Ok(()) => {
                    self.count(1);
                    Outcome::Committed
                }
                Err(f) => {
                    if f.io {
                        self.retire(opened, &f);
                    }
                    Outcome::Failed(f)
                }
            },
            Ran::Dirty => Outcome::Own,
            Ran::Io(f) => {
                self.retire(opened, &f);
                Outcome::Own
            }
        };
        (job, outcome)
    }

    /// Waits for a batch's sync, shows readers what it committed, and only then answers it.
    fn answer(&self, answers: Answers) {
        let Answers { committed, jobs } = answers;
        let mut synced = Ok(());
        if let Some(Committed { opened, ticket, view }) = committed {
            synced = opened.syncer.sync(ticket).map_err(|e| Failure::of(redb::Error::Io(e)));
            match (&synced, view) {
                (Ok(()), Ok(view)) => self.publish(&opened, view),
                (Ok(()), Err(f)) => self.retire(&opened, &f),
                (Err(f), _) => self.retire(&opened, f),
            }
        }
        for (job, outcome) in jobs {
            match outcome {
                Outcome::Committed => job.finish(synced.as_ref().err()),
                Outcome::Failed(f) => job.finish(Some(&f)),
                Outcome::Own => job.finish(None),
            }
        }
    }

    fn count(&self, writes: usize) {
        // Writes first: a reader never sees a commit without its writes.
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn database(&self) -> Result<Arc<Opened>, Failure> {
        self.view().map(|(opened, _)| opened)
    }

    /// The open database and its durable state, opening the file again after a failure.
    fn view(&self) -> Result<(Arc<Opened>, Arc<ReadTransaction>), Failure> {
        let mut current = self.lock();
        if let (Some(db), Some(view)) = (current.db.as_ref(), current.view.as_ref()) {
            return Ok((db.clone(), view.clone()));
        }
        // Fails (DatabaseAlreadyOpen) while an operation that started before the failure still
        // holds the old handle; the next call tries again.
        let reopened = Self::open_db(&self.path, self.init, &self.disk, self.ring)
            .and_then(|opened| Ok((opened.db.begin_read()?, opened)))
            .map_err(|e| Failure {
                io: true,
                message: format!("{} cannot be opened again yet: {e}", self.path.display()),
            });
        let (view, opened) = reopened?;
        tracing::debug!(path = %self.path.display(), "reopened after an I/O failure");
        let view = Arc::new(view);
        current.view = Some(view.clone());
        current.db = Some(opened.clone());
        Ok((opened, view))
    }

    /// Readers see `view` from now on, unless the database it belongs to was retired.
    fn publish(&self, opened: &Arc<Opened>, view: ReadTransaction) {
        let mut current = self.lock();
        if current.db.as_ref().is_some_and(|db| Arc::ptr_eq(db, opened)) {
            current.view = Some(Arc::new(view));
        }
    }

    fn retire(&self, failed: &Arc<Opened>, error: &impl std::fmt::Display) {
        let mut current = self.lock();
        if !current.db.as_ref().is_some_and(|db| Arc::ptr_eq(db, failed)) {
            return; // another operation already retired it
        }
        current.view = None;
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableTable, TableDefinition};

    const T: TableDefinition<&str, u64> = TableDefinition::new("t");

    #[derive(Debug, PartialEq)]
    enum E {
        Io(String),
        Internal(String),
        Refused,
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    impl IoFailure for E {
        fn is_io(&self) -> bool {
            matches!(self, E::Io(_))
        }
        fn unavailable(message: String) -> Self {
            E::Io(message)
        }
        fn internal(message: String) -> Self {
            E::Internal(message)
        }
        fn wrote_nothing(&self) -> bool {
            *self == E::Refused
        }
    }
    fn e(x: impl std::fmt::Display) -> E {
        E::Internal(x.to_string())
    }

    fn open() -> (tempfile::TempDir, Arc<RedbFile>) {
        let dir = tempfile::tempdir().unwrap();
        let init = |db: &Database| {
            let txn = db.begin_write()?;
            txn.open_table(T)?;
            txn.commit()?;
            Ok(())
        };
        let file = Arc::new(RedbFile::open(&dir.path().join("t.redb"), init).unwrap());
        (dir, file)
    }

    fn read(file: &RedbFile, key: &str) -> Option<u64> {
        file.run(|txn| {
            let t = txn.open_table(T).map_err(e)?;
            Ok::<_, E>(t.get(key).map_err(e)?.map(|v| v.value()))
        })
        .unwrap()
    }

    fn add(txn: &WriteTransaction, key: &str, n: u64) -> Result<u64, E> {
        let mut t = txn.open_table(T).map_err(e)?;
        let next = t.get(key).map_err(e)?.map_or(0, |v| v.value()) + n;
        t.insert(key, next).map_err(e)?;
        Ok(next)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_commits_and_each_sees_the_one_before() {
        let (_dir, file) = open();
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let file = file.clone();
                tokio::spawn(async move {
                    let wrote = file.write(|txn| add(txn, "n", 1)).await.unwrap();
                    (wrote, read(&file, "n"))
                })
            })
            .collect();
        let mut seen: Vec<u64> = Vec::new();
        for t in tasks {
            let (wrote, read_back) = t.await.unwrap();
            // Every answered write is seen by the next read.
            assert!(read_back >= Some(wrote), "wrote {wrote}, then read {read_back:?}");
            seen.push(wrote);
        }
        seen.sort();
        // Serial: every write read the value the one before it wrote.
        assert_eq!(seen, (1..=200).collect::<Vec<_>>());
        assert_eq!(read(&file, "n"), Some(200));
        let stats = file.stats();
        assert_eq!(stats.writes, 200);
        assert!(stats.commits < 200, "no commit was shared: {stats:?}");
        // Each commit was made durable by a sync of its own pages.
        assert!(stats.syncs >= stats.commits && stats.sync_nanos > 0, "{stats:?}");
        assert!(stats.bytes_written >= 4096 * stats.commits, "{stats:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_fails_halfway_leaves_nothing_and_does_not_sink_its_batch() {
        let (_dir, file) = open();
        // Holds the committer, so that the next three writes queue up and share a batch.
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let hold = {
            let file = file.clone();
            tokio::spawn(async move {
                file.write(move |txn| {
                    let _ = started_tx.send(());
                    let _ = release_rx.lock().unwrap().recv();
                    add(txn, "hold", 1)
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap()).await.unwrap();
        let (f1, f2, f3) = (file.clone(), file.clone(), file.clone());
        let dirty = tokio::spawn(async move {
            f1.write(|txn| {
                add(txn, "dirty", 1)?;
                Err::<u64, _>(E::Internal("failed after writing".into()))
            })
            .await
        });
        let refused = tokio::spawn(async move { f2.write(|_txn| Err::<u64, _>(E::Refused)).await });
        let good = tokio::spawn(async move { f3.write(|txn| add(txn, "good", 1)).await });
        tokio::time::sleep(Duration::from_millis(200)).await; // the three are queued
        release.send(()).unwrap();
        assert_eq!(hold.await.unwrap(), Ok(1));
        assert_eq!(dirty.await.unwrap(), Err(E::Internal("failed after writing".into())));
        assert_eq!(refused.await.unwrap(), Err(E::Refused));
        assert_eq!(good.await.unwrap(), Ok(1));
        assert_eq!(read(&file, "dirty"), None, "the half-done write was rolled back");
        assert_eq!(read(&file, "good"), Some(1));
        assert_eq!(read(&file, "hold"), Some(1));
    }

    /// What a write captured is freed by its caller, not by the file's threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_dropped_on_its_callers_thread() {
        struct Tell(Arc<Mutex<Option<String>>>);
        impl Drop for Tell {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = std::thread::current().name().map(str::to_string);
            }
        }
        let (_dir, file) = open();
        let dropped_on = Arc::new(Mutex::new(None));
        let tell = Tell(dropped_on.clone());
        file.write(move |txn| {
            let _ = &tell;
            add(txn, "k", 1)
        })
        .await
        .unwrap();
        let on = dropped_on.lock().unwrap().clone();
        assert!(on.is_some(), "not dropped by the time the write was answered");
        assert!(![Some(COMMIT_THREAD), Some(SYNC_THREAD)].contains(&on.as_deref()), "dropped on {on:?}");
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_the_file_stays_writable() {
        let (_dir, file) = open();
        let out: Result<u64, E> = file.write(|_txn| panic!("boom")).await;
        assert!(matches!(out, Err(E::Internal(_))), "{out:?}");
        assert_eq!(file.write(|txn| add(txn, "after", 1)).await, Ok(1));
    }

    // The guard stalls the sync thread, an OS thread of its own; nothing on this runtime takes it.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_see_a_write_once_it_is_durable_and_not_before() {
        let (_dir, file) = open();
        let syncer = file.shared.database().unwrap().syncer.clone();
        let stalled = syncer.stall.lock().unwrap();
        let writing = {
            let file = file.clone();
            tokio::spawn(async move { file.write(|txn| add(txn, "k", 1)).await })
        };
        while file.stats().commits == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Committed, its sync stalled: not answered, and not yet seen.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writing.is_finished(), "answered before its sync");
        assert_eq!(read(&file, "k"), None, "a reader saw a commit that is not durable yet");
        drop(stalled);
        assert_eq!(writing.await.unwrap(), Ok(1));
        assert_eq!(read(&file, "k"), Some(1), "an answered write is seen at once");
    }

    #[test]
    fn dropping_the_file_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let init = |_: &Database| Ok(());
        drop(RedbFile::open(&path, init).unwrap());
        RedbFile::open(&path, init).expect("reopened at once");
    }
}

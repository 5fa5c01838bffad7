//! The storage under each redb file, and who waits for its syncs: redb reads and writes through
//! the write-ahead journal ([`crate::journal`]), and a group commit's sync runs behind the next
//! commit's work instead of in front of it.
//!
//! **Why.** A group commit was the commit thread's CPU (running the batch's writes, redb writing
//! its pages) and then a sync during which that thread did nothing, though the next batch was
//! already waiting. Now, when redb asks for the commit's sync, the journal only *seals* its
//! record (what redb wrote since its last sync, fixed there and then), and the sync thread (see
//! [`crate::file`]) writes and syncs it while the commit thread starts on the next batch. Several
//! sealed records go to the disk with one fdatasync.
//!
//! **Why it is safe.** A sealed record is the commit exactly as redb left it: the next batch's
//! writes go to the record after, whatever the disk is doing. The journal writes records in
//! order and replays only an unbroken run of them, so after a crash the file is as some
//! acknowledged-or-later commit left it, never a mix. What changes is who waits: the callers
//! whose writes were in the commit, who are answered only after its record is synced, and the
//! readers, who are given the last commit that was synced ([`crate::file`]), so nobody sees what a
//! power cut could still take away. At most two syncs are owed at once (one under way, the
//! next commit's sealed): the commit after that waits, which keeps batches as large as the disk
//! allows rather than many small records.
//!
//! A sync is deferred only while the commit thread asks for it ([`Syncer::deferring`]); every
//! other sync (opening the file, creating its tables, a clean close) is done where redb asks.
//! A failed sync is latched: every later sync fails, so the commits sealed after the failed one
//! fail too, and the file is opened again (and its journal replayed).

use crate::journal::Journal;
use redb::StorageBackend;
use redb::backends::FileBackend;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What the file cost the disk: bytes redb wrote and the journal flushes (each one fdatasync)
/// that made them durable, with their time (the benchmark prints pages and milliseconds per
/// sync). Kept across reopens of the file.
#[derive(Debug, Default)]
pub struct DiskCounters {
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
    pub sync_nanos: AtomicU64,
}

/// The data file and the state of its syncs, shared by redb's backend, the commit thread and
/// the sync thread.
#[derive(Debug)]
pub struct Syncer {
    /// Declared before `file`, so dropped first: its checkpoint thread has stopped before the
    /// data file's lock is let go (and another handle may open and replay the file).
    journal: Journal,
    /// The data file, for its locks; its bytes are the journal's.
    file: FileBackend,
    counters: Arc<DiskCounters>,
    /// Set by the commit thread while it commits a batch: redb's sync is then owed, not done.
    defer: AtomicBool,
    state: Mutex<State>,
    /// Signalled when a sync finishes.
    synced: Condvar,
    /// Held by a test to stall every fdatasync.
    #[cfg(test)]
    pub(crate) stall: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// Syncs asked for (deferred ones included) and syncs done, counted since the file opened.
    asked: u64,
    done: u64,
    /// A thread is running an fdatasync.
    running: bool,
    /// The first failed sync: every later change to the file fails with it.
    failed: Option<String>,
}

impl State {
    /// Syncs asked for and not yet done.
    fn owed(&self) -> u64 {
        self.asked - self.done
    }
}

impl Syncer {
    /// The data file at `path` (`file`), its journal (of `ring` bytes if new) replayed.
    pub fn new(
        path: &Path,
        file: File,
        counters: Arc<DiskCounters>,
        ring: u64,
    ) -> Result<Arc<Self>, redb::DatabaseError> {
        let data = file.try_clone()?;
        // Locks the data file first: replaying the journal under another process's open
        // database would corrupt it.
        let file = FileBackend::new(file)?;
        Ok(Arc::new(Syncer {
            journal: Journal::open(path, data, ring)?,
            file,
            counters,
            defer: AtomicBool::new(false),
            state: Mutex::default(),
            synced: Condvar::new(),
            #[cfg(test)]
            stall: Mutex::new(()),
        }))
    }

    /// redb's view of the file.
    pub fn backend(self: &Arc<Self>) -> Backend {
        Backend(self.clone())
    }

    /// Runs `commit` with its sync deferred, and returns the ticket to pass to [`Syncer::sync`]
    /// before anyone is told the commit is durable.
    pub fn deferring<T>(&self, commit: impl FnOnce() -> T) -> (T, u64) {
        self.defer.store(true, Ordering::Release);
        let out = commit();
        self.defer.store(false, Ordering::Release);
        (out, self.lock().asked)
    }

    /// Returns once every sync asked for up to `ticket` is done, doing it here if no other
    /// thread is; an error if one of them failed.
    pub fn sync(&self, ticket: u64) -> io::Result<()> {
        self.until(|state| state.done >= ticket)
    }

    /// Waits until `ready`, flushing the journal here whenever syncs are owed and no other
    /// thread is flushing it.
    fn until(&self, ready: impl Fn(&State) -> bool) -> io::Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(e) = &state.failed {
                return Err(io::Error::other(format!("an earlier sync of the data file failed: {e}")));
            }
            if ready(&state) {
                return Ok(());
            }
            if state.running || state.owed() == 0 {
                state = self.synced.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let through = state.asked;
            state.running = true;
            drop(state);
            #[cfg(test)]
            drop(self.stall.lock());
            let started = Instant::now();
            let out = self.journal.flush();
            self.counters.sync_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            self.counters.syncs.fetch_add(1, Ordering::Relaxed);
            state = self.lock();
            state.running = false;
            match out {
                Ok(()) => state.done = state.done.max(through),
                Err(e) => state.failed = Some(e.to_string()),
            }
            self.synced.notify_all();
        }
    }

    /// Every sync owed is done (before the file closes).
    fn settle(&self) -> io::Result<()> {
        let asked = self.lock().asked;
        self.sync(asked)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The most syncs owed at once: one under way and the next commit's, sealed and waiting.
const MOST_OWED: u64 = 2;

/// What redb reads and writes through.
#[derive(Debug)]
pub struct Backend(Arc<Syncer>);

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.journal.file_len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.journal.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.journal.set_len(len)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.counters.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.0.journal.write(offset, data)
    }

    fn sync_data(&self) -> io::Result<()> {
        let syncer = &self.0;
        // What redb wrote since its last sync becomes the next record; what it writes from now
        // on, the one after. (Not under the state lock: sealing may wait for a sync.)
        if syncer.defer.load(Ordering::Acquire) {
            // One commit's sync under way and this one's waiting, at most: the commit thread
            // runs a batch while the disk syncs the one before, and no further ahead.
            syncer.until(|state| state.owed() < MOST_OWED)?;
        }
        syncer.journal.seal()?;
        let ticket = {
            let mut state = syncer.lock();
            state.asked += 1;
            state.asked
        };
        if syncer.defer.load(Ordering::Acquire) { Ok(()) } else { syncer.sync(ticket) }
    }

    fn close(&self) -> io::Result<()> {
        // A clean close leaves nothing owed (unless a sync failed, which recovery handles).
        let _ = self.0.settle();
        self.0.journal.close();
        self.0.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.0.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.0.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::DEFAULT_RING;

    fn open() -> (tempfile::TempDir, Arc<Syncer>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let syncer = Syncer::new(&path, file, Arc::default(), DEFAULT_RING).unwrap();
        (dir, syncer)
    }

    fn done(s: &Syncer) -> u64 {
        s.lock().done
    }

    /// redb on the journal: what a commit made durable is there after a crash that left the
    /// data file without it (nothing is written there before a checkpoint), and what the
    /// commit after it had only begun is not.
    #[test]
    fn a_crash_keeps_every_durable_commit() {
        use crate::journal::journal_path;
        use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
        const T: TableDefinition<u64, u64> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let open = |path: &Path| {
            let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path);
            let syncer = Syncer::new(path, file.unwrap(), Arc::default(), DEFAULT_RING).unwrap();
            redb::Builder::new().create_with_backend(syncer.backend()).unwrap()
        };
        let path = dir.path().join("f");
        let db = open(&path);
        for i in 0..50u64 {
            let txn = db.begin_write().unwrap();
            txn.open_table(T).unwrap().insert(i, i * 10).unwrap();
            txn.commit().unwrap();
        }
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        txn.open_table(T).unwrap().insert(50, 500).unwrap();
        txn.commit().unwrap(); // visible, never synced
        // A crash, as the files are now: no close, no checkpoint.
        let crashed = dir.path().join("crashed");
        std::fs::copy(&path, &crashed).unwrap();
        std::fs::copy(journal_path(&path), journal_path(&crashed)).unwrap();
        drop(db);
        let db = open(&crashed);
        let read = db.begin_read().unwrap();
        let t = read.open_table(T).unwrap();
        assert_eq!(t.len().unwrap(), 50);
        assert_eq!(t.get(49).unwrap().map(|v| v.value()), Some(490));
    }

    #[test]
    fn a_sync_outside_a_deferred_commit_is_done_where_it_is_asked() {
        let (_dir, s) = open();
        let b = s.backend();
        b.write(0, &[1; 4096]).unwrap();
        b.sync_data().unwrap();
        assert_eq!(done(&s), 1);
        let c = &s.counters;
        assert_eq!((c.bytes.load(Ordering::Relaxed), c.syncs.load(Ordering::Relaxed)), (4096, 1));
        assert!(c.sync_nanos.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_deferred_sync_leaves_the_next_commit_free_and_one_flush_covers_several() {
        let (_dir, s) = open();
        let b = s.backend();
        let commit = |fill: u8| {
            s.deferring(|| {
                b.write(0, &[fill; 4096]).unwrap();
                b.sync_data().unwrap();
            })
            .1
        };
        let (first, second) = (commit(1), commit(2));
        assert_eq!((first, second, done(&s)), (1, 2, 0), "both owed, neither waited");
        // A third commit waits for the first's sync (done here, as nobody else is syncing),
        // and one flush makes both owed records durable.
        let third = commit(3);
        assert_eq!((third, done(&s)), (3, 2));
        s.sync(third).unwrap();
        assert_eq!(done(&s), 3);
        assert_eq!(s.counters.syncs.load(Ordering::Relaxed), 2, "two flushes for three commits");
    }

    #[test]
    fn a_sync_waits_for_the_one_under_way() {
        let (_dir, s) = open();
        let b = s.backend();
        let ((), ticket) = s.deferring(|| {
            b.write(0, &[1; 4096]).unwrap();
            b.sync_data().unwrap();
        });
        let stalled = s.stall.lock().unwrap();
        let syncing = {
            let s = s.clone();
            std::thread::spawn(move || s.sync(ticket))
        };
        while !s.lock().running {
            std::thread::yield_now();
        }
        // The next commit goes ahead of the sync under way; the one after waits for it.
        let ((), next) = s.deferring(|| {
            b.write(4096, &[2; 4096]).unwrap();
            b.sync_data().unwrap();
        });
        let waiting = {
            let s = s.clone();
            std::thread::spawn(move || {
                let b = s.backend();
                s.deferring(|| b.sync_data()).0
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished(), "a third commit went ahead of the first sync");
        assert_eq!(done(&s), 0);
        drop(stalled);
        syncing.join().unwrap().unwrap();
        waiting.join().unwrap().unwrap();
        s.sync(next).unwrap();
        assert!(done(&s) >= next);
    }
}

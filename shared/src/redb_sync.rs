//! The storage under each redb file: the data file, whose fdatasync for a group commit can run
//! behind the next commit's work instead of in front of it.
//!
//! **Why.** A group commit was the commit thread's CPU (running the batch's writes, redb writing
//! its pages) and then an fdatasync of 3-5 ms during which that thread did nothing, though the
//! next batch was already waiting. Now the commit thread hands the sync to the sync thread (see
//! `redb_file`) and starts on the next batch at once.
//!
//! **Why it is safe.** Only the *order* of what reaches the file matters for crash safety, and
//! it is kept: before anything changes the file (a write, a new length, or the next sync), the
//! sync owed by the previous commit is finished, by whichever thread gets there first. So the
//! file sees exactly the writes and syncs it saw when every commit synced inline; the next
//! batch's work in between only touches memory (redb keeps a transaction's pages in its write
//! buffer until its commit). What changes is who waits: the callers whose writes were in the
//! commit, who are answered only after its sync, and the readers, who are given the last commit
//! that was synced (`redb_file`), so nobody sees what a power cut could still take away.
//!
//! A sync is deferred only while the commit thread asks for it ([`Syncer::deferring`]); every
//! other sync (opening the file, creating its tables, a clean close) is done where redb asks.
//! A failed sync is latched: every later change to the file fails, so the commit built on top
//! of the unsynced one fails too, and the file is opened again.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What the file cost the disk: bytes written and the fdatasyncs that made them durable, with
/// their time (the benchmark prints pages and milliseconds per sync; what bounds a group
/// commit is the disk's time per synced page). Kept across reopens of the file.
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

impl Syncer {
    pub fn new(file: File, counters: Arc<DiskCounters>) -> Result<Arc<Self>, redb::DatabaseError> {
        Ok(Arc::new(Syncer {
            file: FileBackend::new(file)?,
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
        let mut state = self.lock();
        loop {
            if let Some(e) = &state.failed {
                return Err(io::Error::other(format!("an earlier sync of the data file failed: {e}")));
            }
            if state.done >= ticket {
                return Ok(());
            }
            if state.running {
                state = self.synced.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            let through = state.asked;
            state.running = true;
            drop(state);
            #[cfg(test)]
            drop(self.stall.lock());
            let started = Instant::now();
            let out = self.file.sync_data();
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

    /// Before the file changes: the sync owed by the last commit is done first.
    fn settle(&self) -> io::Result<()> {
        let asked = self.lock().asked;
        self.sync(asked)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What redb reads and writes through.
#[derive(Debug)]
pub struct Backend(Arc<Syncer>);

impl StorageBackend for Backend {
    fn len(&self) -> io::Result<u64> {
        self.0.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.file.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.settle()?;
        self.0.file.set_len(len)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.settle()?;
        self.0.counters.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.0.file.write(offset, data)
    }

    fn sync_data(&self) -> io::Result<()> {
        let syncer = &self.0;
        // Whatever was synced before must be on disk before this sync's writes count.
        syncer.settle()?;
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

    fn open() -> (tempfile::TempDir, Arc<Syncer>) {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let syncer = Syncer::new(file, Arc::default()).unwrap();
        (dir, syncer)
    }

    fn done(s: &Syncer) -> u64 {
        s.lock().done
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
    fn a_deferred_sync_is_done_before_the_file_changes_again() {
        let (_dir, s) = open();
        let b = s.backend();
        let ((), ticket) = s.deferring(|| {
            b.write(0, &[1; 4096]).unwrap();
            b.sync_data().unwrap();
        });
        assert_eq!((ticket, done(&s)), (1, 0), "owed, not done");
        // The next commit's first write waits for it: the file sees write, sync, write.
        b.write(4096, &[2; 4096]).unwrap();
        assert_eq!(done(&s), 1);
        s.sync(ticket).unwrap(); // already done: returns at once
        assert_eq!(done(&s), 1);

        // So do a new length and the next sync.
        let ((), ticket) = s.deferring(|| b.sync_data().unwrap());
        b.set_len(3 * 4096).unwrap();
        assert_eq!(done(&s), ticket);
        let ((), ticket) = s.deferring(|| b.sync_data().unwrap());
        let ((), next) = s.deferring(|| b.sync_data().unwrap());
        assert_eq!(done(&s), ticket, "the first was done before the second was asked");
        s.sync(next).unwrap();
        assert_eq!(done(&s), next);
    }

    #[test]
    fn a_sync_waits_for_the_one_under_way() {
        let (_dir, s) = open();
        let b = s.backend();
        let ((), ticket) = s.deferring(|| b.sync_data().unwrap());
        let stalled = s.stall.lock().unwrap();
        let syncing = {
            let s = s.clone();
            std::thread::spawn(move || s.sync(ticket))
        };
        while !s.lock().running {
            std::thread::yield_now();
        }
        let writing = {
            let b = s.backend();
            std::thread::spawn(move || b.write(0, &[1; 4096]))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!writing.is_finished(), "a write went ahead of the sync under way");
        drop(stalled);
        syncing.join().unwrap().unwrap();
        writing.join().unwrap().unwrap();
        assert_eq!(done(&s), ticket);
    }
}

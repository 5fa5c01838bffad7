//! A write-ahead journal under a redb file: a commit is made durable by appending the pages it
//! wrote to a journal, one sequential write and one fdatasync, instead of by an fdatasync of the
//! data file itself.
//!
//! **Why.** A group commit of about thirty sends writes some 60-120 pages spread over the data
//! file. An fdatasync of those took 2-5 ms on this project's machines (every page is a disk
//! request of its own); the same pages written one after the other took about 0.5 ms. The
//! commit thread waits for that sync with nothing else to do, so it bounded how many sends a
//! second the local server could take.
//!
//! **How.** redb sees a [`StorageBackend`]. `write` writes to the data file (so that reads see
//! it at once, through the page cache) and keeps a copy; `sync_data`, which redb calls to make a
//! commit durable, appends the copies made since the last one to the journal as one checksummed
//! record and syncs the journal alone. Once a journal holds [`JOURNAL_LIMIT`] bytes, the next
//! records go to the other of the two, and a background thread syncs the data file (a
//! checkpoint) and then empties the full journal: commits never wait for a checkpoint.
//!
//! **Recovery.** Before redb reads the file, opening it replays what the journals hold onto the
//! data file, in the order written, syncs it and empties them. The data file is then as it would
//! be had every acknowledged sync been an fdatasync of it, and what came after the last one is
//! lost, as redb expects after a crash. A torn last record (a crash while writing it) fails its
//! checksum and ends the replay: its sync never returned, so no commit depended on it.
//!
//! **Invariants.** A journal is emptied only after the data file was synced with every write it
//! holds, and the older of the two first (so a replay never lays an older page over a newer one
//! already made durable). The journals are locked while the file is open, since replaying under
//! another process's open database would corrupt it.

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// A journal this full hands over to the other one, and is emptied by a checkpoint.
pub const JOURNAL_LIMIT: u64 = 32 << 20;

/// A record: `MAGIC`, the payload's length (u32), its sequence number (u64), the CRC-32 of the
/// sequence number and payload (u32), then the payload: entries of a tag, an offset or length
/// (u64) and, for a write, its length (u32) and bytes. All little-endian.
const MAGIC: u32 = 0x4a4d_4931; // "1IMJ"
const HEADER: usize = 20;
const WRITE: u8 = 1;
const SET_LEN: u8 = 2;

/// The journals' paths beside a data file.
pub fn journal_paths(data: &Path) -> [PathBuf; 2] {
    [0, 1].map(|i| {
        let mut name = data.as_os_str().to_owned();
        name.push(format!(".journal{i}"));
        PathBuf::from(name)
    })
}

/// A redb storage backend: the data file, with its commits made durable by the journals.
pub struct Journaled {
    shared: Arc<Shared>,
    /// Writes since the last sync, encoded as a record's payload after room for its header.
    pending: Mutex<Vec<u8>>,
    /// The journal being appended to; held through a record's write and sync.
    active: Mutex<Active>,
    checkpoints: Mutex<Option<(mpsc::Sender<usize>, JoinHandle<()>)>>,
    /// A journal this full hands over to the other ([`JOURNAL_LIMIT`]).
    limit: u64,
}

struct Shared {
    data: FileBackend,
    journals: [File; 2],
    /// Whether each journal is empty (checkpointed): records may go into it.
    empty: [AtomicBool; 2],
    /// A failed checkpoint: every later sync fails, so that the file is reopened (and replayed).
    failed: Mutex<Option<String>>,
    /// A sync failed: the journals are left for the replay (no checkpoint on close).
    broken: AtomicBool,
}

struct Active {
    index: usize,
    len: u64,
    seq: u64,
}

impl std::fmt::Debug for Journaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journaled").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journaled {
    /// Opens (or creates) the data file at `path` with its journals, replaying what they hold.
    /// Fails with `WouldBlock` while another handle has the file open.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_with_limit(path, JOURNAL_LIMIT)
    }

    fn open_with_limit(path: &Path, limit: u64) -> io::Result<Self> {
        let open = |p: &Path| OpenOptions::new().read(true).write(true).create(true).truncate(false).open(p);
        let journals = journal_paths(path).map(|p| open(&p));
        let [j0, j1] = journals;
        let journals = [j0?, j1?];
        journals[0].try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => {
                io::Error::new(io::ErrorKind::WouldBlock, format!("{} is open elsewhere", path.display()))
            }
            std::fs::TryLockError::Error(e) => e,
        })?;
        let data = open(path)?;
        replay(&data, &journals)?;
        let data = FileBackend::new(data).map_err(|e| io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            data,
            journals,
            empty: [AtomicBool::new(true), AtomicBool::new(true)],
            failed: Mutex::new(None),
            broken: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<usize>();
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new().name("redb-checkpoint".into()).spawn(move || {
                while let Ok(full) = rx.recv() {
                    if let Err(e) = shared.checkpoint(&[full]) {
                        tracing::error!(error = %e, "checkpoint failed; the file is reopened on the next write");
                        *lock(&shared.failed) = Some(e.to_string());
                    }
                }
            })?
        };
        Ok(Journaled {
            shared,
            pending: Mutex::new(vec![0; HEADER]),
            active: Mutex::new(Active { index: 0, len: 0, seq: 0 }),
            checkpoints: Mutex::new(Some((tx, worker))),
            limit,
        })
    }

    fn stop_checkpoints(&self) {
        if let Some((tx, worker)) = lock(&self.checkpoints).take() {
            drop(tx);
            let _ = worker.join();
        }
    }

    fn push(pending: &mut Vec<u8>, tag: u8, n: u64, data: &[u8]) {
        pending.push(tag);
        pending.extend_from_slice(&n.to_le_bytes());
        if tag == WRITE {
            pending.extend_from_slice(&(data.len() as u32).to_le_bytes());
            pending.extend_from_slice(data);
        }
    }
}

impl Shared {
    /// Syncs the data file, then empties `journals` (given oldest first).
    fn checkpoint(&self, journals: &[usize]) -> io::Result<()> {
        self.data.sync_data()?;
        for &i in journals {
            self.journals[i].set_len(0)?;
            self.journals[i].sync_all()?;
            self.empty[i].store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Applies the records of both journals to `data` in the order they were written, syncs it and
/// empties the journals.
fn replay(data: &File, journals: &[File; 2]) -> io::Result<()> {
    let mut contents = Vec::with_capacity(2);
    for j in journals {
        let mut buf = Vec::new();
        io::Read::read_to_end(&mut &*j, &mut buf)?;
        contents.push(buf);
    }
    let mut records: Vec<(u64, usize, &[u8])> = Vec::new();
    for (i, buf) in contents.iter().enumerate() {
        records.extend(records_of(buf).into_iter().map(|(seq, payload)| (seq, i, payload)));
    }
    if records.is_empty() && contents.iter().all(Vec::is_empty) {
        return Ok(());
    }
    records.sort_by_key(|r| r.0);
    for (_, _, payload) in &records {
        apply(data, payload)?;
    }
    data.sync_data()?;
    // The journal with the older records first: see the module comment.
    let mut order: Vec<usize> = vec![0, 1];
    order.sort_by_key(|&i| records.iter().find(|r| r.1 == i).map_or(0, |r| r.0));
    for i in order {
        journals[i].set_len(0)?;
        journals[i].sync_all()?;
    }
    if !records.is_empty() {
        tracing::info!(records = records.len(), "replayed the journal after an unclean stop");
    }
    Ok(())
}

/// The whole, intact records at the start of a journal: (sequence number, payload).
fn records_of(mut buf: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= HEADER {
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
        let (magic, len) = (u32_at(0), u32_at(4) as usize);
        let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
        if magic != MAGIC || buf.len() < HEADER + len {
            break;
        }
        let payload = &buf[HEADER..HEADER + len];
        if checksum(seq, payload) != u32_at(16) {
            break;
        }
        out.push((seq, payload));
        buf = &buf[HEADER + len..];
    }
    out
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn apply(data: &File, mut payload: &[u8]) -> io::Result<()> {
    let corrupt = || io::Error::new(io::ErrorKind::InvalidData, "a journal record's entry is cut short");
    while let Some((&tag, rest)) = payload.split_first() {
        let n = u64::from_le_bytes(rest.get(..8).ok_or_else(corrupt)?.try_into().expect("8 bytes"));
        payload = &rest[8..];
        match tag {
            WRITE => {
                let len = u32::from_le_bytes(payload.get(..4).ok_or_else(corrupt)?.try_into().expect("4 bytes"));
                let bytes = payload.get(4..4 + len as usize).ok_or_else(corrupt)?;
                data.write_all_at(bytes, n)?;
                payload = &payload[4 + len as usize..];
            }
            SET_LEN => data.set_len(n)?,
            _ => return Err(corrupt()),
        }
    }
    Ok(())
}

/// Dropped without `close` (a crash, as far as the files are concerned): nothing is synced.
impl Drop for Journaled {
    fn drop(&mut self) {
        self.stop_checkpoints();
    }
}

impl StorageBackend for Journaled {
    fn len(&self) -> io::Result<u64> {
        self.shared.data.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.shared.data.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut pending = lock(&self.pending);
        self.shared.data.set_len(len)?;
        Self::push(&mut pending, SET_LEN, len, &[]);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        // Under the lock, so that the journal has concurrent writes in the order the file got them.
        let mut pending = lock(&self.pending);
        self.shared.data.write(offset, data)?;
        Self::push(&mut pending, WRITE, offset, data);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if let Some(e) = lock(&self.shared.failed).as_ref() {
            return Err(io::Error::other(format!("an earlier checkpoint failed: {e}")));
        }
        let mut active = lock(&self.active);
        let mut record = {
            let mut pending = lock(&self.pending);
            if pending.len() == HEADER {
                return Ok(()); // nothing written since the last sync
            }
            std::mem::replace(&mut *pending, vec![0; HEADER])
        };
        active.seq += 1;
        let payload_len = u32::try_from(record.len() - HEADER).map_err(|_| io::Error::other("a commit of 4 GiB"))?;
        let sum = checksum(active.seq, &record[HEADER..]);
        record[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        record[4..8].copy_from_slice(&payload_len.to_le_bytes());
        record[8..16].copy_from_slice(&active.seq.to_le_bytes());
        record[16..20].copy_from_slice(&sum.to_le_bytes());
        let journal = &self.shared.journals[active.index];
        // Marks the journal in use (only a checkpoint empties it again).
        self.shared.empty[active.index].store(false, Ordering::Release);
        if let Err(e) = journal.write_all_at(&record, active.len).and_then(|()| journal.sync_data()) {
            self.shared.broken.store(true, Ordering::Release);
            return Err(e);
        }
        active.len += record.len() as u64;
        let other = 1 - active.index;
        if active.len >= self.limit && self.shared.empty[other].load(Ordering::Acquire) {
            let full = active.index;
            *active = Active { index: other, len: 0, seq: active.seq };
            if let Some((tx, _)) = lock(&self.checkpoints).as_ref() {
                let _ = tx.send(full);
            }
        }
        Ok(())
    }

    /// A clean close: the data file is synced and the journals emptied, so that the file needs
    /// no replay.
    fn close(&self) -> io::Result<()> {
        self.stop_checkpoints();
        let active = lock(&self.active);
        let clean = !self.shared.broken.load(Ordering::Acquire) && lock(&self.shared.failed).is_none();
        if clean && lock(&self.pending).len() == HEADER {
            let other = 1 - active.index;
            self.shared.checkpoint(&[other, active.index])?;
        }
        self.shared.data.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.data.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.data.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.data.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.data.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.data.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.data.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

    const PAGE: usize = 4096;

    fn page(j: &Journaled, i: u64) -> Vec<u8> {
        let mut out = vec![0; PAGE];
        j.read(i * PAGE as u64, &mut out).unwrap();
        out
    }

    /// What a crash may leave of the data file's writes after its last sync: here, none. Pages
    /// are overwritten with garbage straight in the file, as if those writes never reached it.
    fn lose(path: &Path, pages: &[u64]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        for &i in pages {
            f.write_all_at(&[0xEE; PAGE], i * PAGE as u64).unwrap();
        }
    }

    fn journal_lens(path: &Path) -> [u64; 2] {
        journal_paths(path).map(|p| std::fs::metadata(p).unwrap().len())
    }

    #[test]
    fn a_synced_write_is_replayed_over_a_data_file_that_lost_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let j = Journaled::open(&path).unwrap();
        j.set_len(4 * PAGE as u64).unwrap();
        j.write(0, &[1; PAGE]).unwrap();
        j.write(PAGE as u64, &[2; PAGE]).unwrap();
        j.sync_data().unwrap();
        j.write(PAGE as u64, &[3; PAGE]).unwrap(); // written again, and synced
        j.sync_data().unwrap();
        j.write(2 * PAGE as u64, &[4; PAGE]).unwrap(); // never synced
        drop(j); // a crash: no close
        lose(&path, &[0, 1]);

        let j = Journaled::open(&path).unwrap();
        assert_eq!(page(&j, 0), [1; PAGE]);
        assert_eq!(page(&j, 1), [3; PAGE], "the later of two synced writes wins");
        assert_eq!(journal_lens(&path), [0, 0], "replayed, synced and emptied");
    }

    #[test]
    fn a_torn_last_record_ends_the_replay_and_the_records_before_it_stand() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let j = Journaled::open(&path).unwrap();
        j.set_len(2 * PAGE as u64).unwrap();
        j.write(0, &[1; PAGE]).unwrap();
        j.sync_data().unwrap();
        j.write(PAGE as u64, &[2; PAGE]).unwrap();
        j.sync_data().unwrap();
        drop(j);
        // The second record's write was cut short by the crash: its sync never returned.
        let [j0, _] = journal_paths(&path);
        let len = std::fs::metadata(&j0).unwrap().len();
        OpenOptions::new().write(true).open(&j0).unwrap().set_len(len - 100).unwrap();
        lose(&path, &[0, 1]);

        let j = Journaled::open(&path).unwrap();
        assert_eq!(page(&j, 0), [1; PAGE]);
        assert_eq!(page(&j, 1), [0xEE; PAGE], "nothing of the torn record is applied");
    }

    #[test]
    fn a_full_journal_hands_over_and_is_emptied_once_the_data_file_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let j = Journaled::open_with_limit(&path, 3 * PAGE as u64).unwrap();
        j.set_len(8 * PAGE as u64).unwrap();
        for i in 0..4u8 {
            j.write(u64::from(i) * PAGE as u64, &[i + 1; PAGE]).unwrap();
            j.sync_data().unwrap();
        }
        // The fourth record went into the second journal; the first is emptied in the background.
        let started = std::time::Instant::now();
        while journal_lens(&path)[0] != 0 {
            assert!(started.elapsed().as_secs() < 10, "the full journal was never emptied");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(journal_lens(&path)[1] > 0);
        j.write(4 * PAGE as u64, &[5; PAGE]).unwrap();
        j.sync_data().unwrap();
        drop(j);
        // Only what came after the checkpoint may be missing from the data file.
        lose(&path, &[3, 4]);
        let j = Journaled::open(&path).unwrap();
        for i in 0..5u8 {
            assert_eq!(page(&j, u64::from(i)), [i + 1; PAGE], "page {i}");
        }
    }

    #[test]
    fn the_file_is_opened_once_and_a_clean_close_leaves_nothing_to_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        let j = Journaled::open(&path).unwrap();
        let again = Journaled::open(&path).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock, "{again}");
        j.set_len(PAGE as u64).unwrap();
        j.write(0, &[7; PAGE]).unwrap();
        j.sync_data().unwrap();
        j.close().unwrap();
        drop(j);
        assert_eq!(journal_lens(&path), [0, 0]);
        assert_eq!(std::fs::read(&path).unwrap(), [7; PAGE]);
    }

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    #[test]
    fn a_redb_database_on_the_journal_keeps_its_commits_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.redb");
        for round in 0..3u64 {
            let db = redb::Builder::new().create_with_backend(Journaled::open(&path).unwrap()).unwrap();
            for i in 0..50 {
                let txn = db.begin_write().unwrap();
                txn.open_table(T).unwrap().insert(round * 100 + i, i).unwrap();
                txn.commit().unwrap();
            }
            drop(db);
        }
        let db = redb::Builder::new().create_with_backend(Journaled::open(&path).unwrap()).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(T).unwrap().len().unwrap(), 150);
    }
}

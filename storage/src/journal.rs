//! A write-ahead journal under a redb file: a commit is made durable by one sequential write
//! and one fdatasync of a journal, not by an fdatasync of the pages it changed in the data file.
//!
//! **Why.** redb copies on write every page a commit changes, and the branch pages above each,
//! wherever its allocator has room: a group commit of 23 sends wrote about 220 pages in some
//! hundred separate places, and their fdatasync took about 4 ms on this project's machines (the
//! disk pays per scattered page). Written one after the other into a journal, the same pages
//! sync in well under a millisecond. With no fdatasync at all the local server sent 7,400
//! messages a second at 64 clients; with its fdatasyncs, 4,000-4,500.
//!
//! **How.** redb reads and writes whole pages through [`Journal`], which keeps every page
//! written since the last checkpoint in memory (the overlay, which answers reads first) and does
//! not touch the data file. When redb asks for a sync, the pages written since the last one and
//! the file's length are sealed as the next record ([`Journal::seal`]: fixed there, so the
//! writes after it go to the record after); [`Journal::flush`] writes every sealed record into
//! the journal, one after the other, each checksummed and numbered, and fdatasyncs the journal
//! alone. Records that lie one after the other go in one write, with direct I/O: the journal is
//! read back only by a replay, so its pages have no use in the page cache, and copying them
//! there and writing them back from there was much of the sync thread's kernel time. A record
//! holds each page without its trailing zeros: redb fills its pages from the front, and that
//! tail was a third of the bytes a sync wrote. The journal is a ring of fixed
//! size, allocated and written when the file is created, so that a sync never changes its size
//! or its extents. When half of the ring holds records not yet checkpointed, a checkpoint
//! thread writes the overlay's pages, as the last synced record left them, to the data file a
//! few at a time (so a journal sync never queues behind more than a few page writes),
//! fdatasyncs it, and only then records in the journal's header that the records up to that
//! one need no replay, which frees their room in the ring.
//!
//! **Recovery.** Opening the file replays the records after the header's checkpoint onto the
//! data file in sequence order, fdatasyncs it and checkpoints, before redb reads anything. A torn
//! record (a crash while it was written) fails its checksum and ends the replay; its sync never
//! returned, so nothing acknowledged depended on it, nor on the records after it. Each open
//! starts a new epoch, which its records carry, and a replay takes only the header's epoch: a
//! record kept past a lost one cannot pass for the one written in its place after the crash.
//!
//! **Invariants.** (1) The data file only ever holds the state of a synced record, as a whole
//! or on its way there during a checkpoint: a checkpoint writes the image of one record's state
//! (pages written after it are replaced by the versions they had then), because redb rewrites
//! its header page in place, and a later header over an earlier checkpoint would name a root the
//! data file does not hold. (2) The header moves past a record only once the data file holds
//! that record's state durably, and the ring's room behind the header is reused only once the
//! header is durable. (3) Within an epoch sequence numbers never repeat, so a record left in the
//! ring from an earlier lap never passes for the one the replay expects.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// The unit the journal keeps and writes: redb's pages are whole multiples of it.
pub const PAGE: u64 = 4096;
/// The journal's size unless its opener asks for another.
pub const DEFAULT_RING: u64 = 64 << 20;
/// Pages a checkpoint writes before it waits for them to reach the disk.
const PACE: usize = 8;

/// The first page holds the two header slots; records follow.
const RECORDS: u64 = PAGE;
const SLOTS: [u64; 2] = [0, 512];
const HEADER_MAGIC: u32 = 0x4a48_4d31; // "1MHJ"
const HEADER_LEN: usize = 40;
/// A record's head: magic (u32), CRC-32 of what follows it (u32), sequence number (u64), the
/// file's length (u64), page count (u32), the epoch of the open that wrote it (its low 32 bits),
/// the length of the body (u32) and 4 bytes unused. The body has each page's number (u64), the
/// length of the page without its trailing zeros (u16), and those bytes: redb's pages are
/// filled from the front, and a third of their bytes are that tail. The record takes whole
/// pages of the ring.
const RECORD_MAGIC: u32 = 0x4a52_4d32; // "2MRJ"
const RECORD_HEAD: usize = 40;
/// A page's number and length in a record's body.
const ENTRY_HEAD: usize = 10;
/// The first version's records (before trailing zeros were left out), still replayed: the same
/// head up to the epoch (32 bytes), then each page's number and all its bytes.
const RECORD_MAGIC_V1: u32 = 0x4a52_4d31; // "1MRJ"
const RECORD_HEAD_V1: usize = 32;

/// The journal's path beside a data file.
pub fn journal_path(data: &Path) -> PathBuf {
    let mut name = data.as_os_str().to_owned();
    name.push(".journal");
    PathBuf::from(name)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The data file as redb sees it, made durable through the journal.
pub struct Journal {
    inner: Arc<Inner>,
    checkpoints: Mutex<Option<(mpsc::Sender<Snapshot>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("ring", &self.inner.ring).finish_non_exhaustive()
    }
}

struct Inner {
    data: File,
    journal: File,
    /// The journal again, opened for direct I/O (`O_DIRECT`), through which records are written
    /// (see [`Staging`]); `None` where the file system refuses it, and records go through
    /// `journal`.
    direct: Mutex<Option<File>>,
    /// Where [`Journal::flush`] encodes records: one flush at a time uses it.
    staging: Mutex<Staging>,
    ring: u64,
    mem: Mutex<Mem>,
    log: Mutex<Log>,
    /// With `log`: signalled when a record is synced or a checkpoint ends (room freed in the
    /// ring), or on a failure.
    changed: Condvar,
}

/// Keyed by page number, with FxHash (a multiply and a rotate): every page a commit writes goes
/// through two such maps on the commit thread, and SipHash, the default, guards against keys an
/// attacker chooses, which page numbers are not.
type PageMap<V> = HashMap<u64, V, rustc_hash::FxBuildHasher>;

/// The pages newer than the data file, and what the next record and a checkpoint need.
#[derive(Default)]
struct Mem {
    /// Page number → its bytes, for every page written since the checkpoint that holds it.
    pages: PageMap<Arc<[u8]>>,
    /// Pages changed since the last record, with what each was as of that record (`None`: what
    /// the data file holds, or nothing).
    before: PageMap<Option<Arc<[u8]>>>,
    /// The file's length as redb sees it, and as of the last record.
    len: u64,
    recorded_len: u64,
    /// The data file's length.
    data_len: u64,
}

struct Log {
    next_seq: u64,
    /// Where the next record goes.
    head: u64,
    /// Records not yet checkpointed, oldest first.
    live: VecDeque<Record>,
    /// Records sealed and not yet written, oldest first, and the last record synced.
    sealed: VecDeque<Sealed>,
    synced: u64,
    /// The generation of the header slot last written, and this open's epoch.
    generation: u64,
    epoch: u64,
    checkpointing: bool,
    /// The first failed journal write or checkpoint: every later seal and flush fails with
    /// it, so the file is reopened (and replayed).
    failed: Option<String>,
}

impl Log {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::other(format!("an earlier write of the journal failed: {e}"))),
            None => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    seq: u64,
    pos: u64,
    size: u64,
}

/// Pages by number, each with its bytes at one moment (shared, never changed in place).
type Pages = Vec<(u64, Arc<[u8]>)>;

/// A record's contents, fixed when it is sealed (a commit's pages as they were then).
struct Sealed {
    record: Record,
    len: u64,
    pages: Pages,
    /// Each page's length without its trailing zeros (what the record holds of it).
    lengths: Vec<u16>,
}

/// The state a record left, for a checkpoint to write to the data file once it is synced.
struct Snapshot {
    seq: u64,
    len: u64,
    pages: Pages,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    generation: u64,
    /// Counts the opens of the file: the records written since the last one carry it, and a
    /// replay takes no other (see `replay`).
    epoch: u64,
    /// The data file holds every record up to this one.
    checkpoint: u64,
    /// Where the record after it is (or will be) in the ring.
    tail: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
        out[8..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..24].copy_from_slice(&self.checkpoint.to_le_bytes());
        out[24..32].copy_from_slice(&self.tail.to_le_bytes());
        out[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32fast::hash(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<Header> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        (u32_at(0) == HEADER_MAGIC && u32_at(4) == crc32fast::hash(&b[8..HEADER_LEN])).then(|| Header {
            generation: u64_at(8),
            checkpoint: u64_at(16),
            tail: u64_at(24),
            epoch: u64_at(32),
        })
    }
}

impl Journal {
    /// Opens the journal beside the data file at `path` (`data`, already locked by the caller),
    /// creating it if missing (`ring` bytes) and replaying it if it
    /// holds records. An existing journal keeps its size.
    pub fn open(path: &Path, data: File, ring: u64) -> io::Result<Journal> {
        let jpath = journal_path(path);
        let journal = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&jpath)?;
        let header = match read_header(&journal)? {
            Some(header) => header,
            None => create(&jpath, &journal, ring)?,
        };
        let ring = journal.metadata()?.len();
        let (header, head) = replay(&data, &journal, ring, header)?;
        let data_len = data.metadata()?.len();
        let inner = Arc::new(Inner {
            data,
            journal,
            direct: Mutex::new(open_direct(&jpath)),
            staging: Mutex::new(Staging::default()),
            ring,
            mem: Mutex::new(Mem { len: data_len, recorded_len: data_len, data_len, ..Mem::default() }),
            log: Mutex::new(Log {
                next_seq: header.checkpoint + 1,
                head,
                live: VecDeque::new(),
                sealed: VecDeque::new(),
                synced: header.checkpoint,
                generation: header.generation,
                epoch: header.epoch,
                checkpointing: false,
                failed: None,
            }),
            changed: Condvar::new(),
        });
        let (tx, rx) = mpsc::channel::<Snapshot>();
        let worker = {
            let inner = inner.clone();
            std::thread::Builder::new().name("redb-checkpoint".into()).spawn(move || {
                for snapshot in rx {
                    inner.checkpoint(snapshot);
                }
            })?
        };
        Ok(Journal { inner, checkpoints: Mutex::new(Some((tx, worker))) })
    }

    /// The file's length as redb sees it.
    pub fn file_len(&self) -> u64 {
        lock(&self.inner.mem).len
    }

    pub fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let mem = lock(&self.inner.mem);
        let mut at = 0usize;
        while at < out.len() {
            let pos = offset + at as u64;
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - within).min(out.len() - at);
            match mem.pages.get(&page) {
                Some(bytes) => out[at..at + n].copy_from_slice(&bytes[within..within + n]),
                None => self.inner.read_data(&mem, pos, &mut out[at..at + n])?,
            }
            at += n;
        }
        Ok(())
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut mem = lock(&self.inner.mem);
        let mut at = 0usize;
        while at < data.len() {
            let pos = offset + at as u64;
            let (page, within) = (pos / PAGE, (pos % PAGE) as usize);
            let n = (PAGE as usize - within).min(data.len() - at);
            let bytes: Arc<[u8]> = if n == PAGE as usize {
                Arc::from(&data[at..at + n])
            } else {
                let mut whole = vec![0u8; PAGE as usize];
                match mem.pages.get(&page) {
                    Some(old) => whole.copy_from_slice(old),
                    None => self.inner.read_data(&mem, page * PAGE, &mut whole)?,
                }
                whole[within..within + n].copy_from_slice(&data[at..at + n]);
                Arc::from(whole)
            };
            let old = mem.pages.insert(page, bytes);
            mem.before.entry(page).or_insert(old);
            at += n;
        }
        mem.len = mem.len.max(offset + data.len() as u64);
        Ok(())
    }

    pub fn set_len(&self, len: u64) -> io::Result<()> {
        let mut mem = lock(&self.inner.mem);
        let cut: Vec<u64> = mem.pages.keys().copied().filter(|&p| p * PAGE >= len).collect();
        for page in cut {
            let old = mem.pages.remove(&page);
            mem.before.entry(page).or_insert(old);
        }
        mem.len = len;
        Ok(())
    }

    /// Fixes what was written since the last record as the next record, to be written and
    /// synced by [`Journal::flush`]; the writes after it go to the record after. Waits while
    /// the ring has no room for it (for a checkpoint, which waits for the records before it to
    /// be flushed: the caller sees to it that another thread flushes them).
    pub fn seal(&self) -> io::Result<()> {
        let inner = &self.inner;
        // The log, then the pages: the order `start_checkpoint` takes them in.
        let mut log = lock(&inner.log);
        loop {
            log.check()?;
            let mut mem = lock(&inner.mem);
            if mem.before.is_empty() && mem.len == mem.recorded_len {
                return Ok(());
            }
            let (pages, len) = mem.changes();
            let lengths: Vec<u16> = pages.iter().map(|(_, bytes)| used(bytes) as u16).collect();
            let body: usize = lengths.iter().map(|&n| ENTRY_HEAD + usize::from(n)).sum();
            let size = record_size(RECORD_HEAD + body);
            if let Some(pos) = fits(&log, inner.ring, size) {
                let record = Record { seq: log.next_seq, pos, size };
                // In the log before it is written, so that a checkpoint meanwhile keeps the
                // header's tail at it.
                log.live.push_back(record);
                log.next_seq += 1;
                log.head = pos + size;
                mem.recorded();
                log.sealed.push_back(Sealed { record, len, pages, lengths });
                let live: u64 = log.live.iter().map(|r| r.size).sum();
                drop(mem);
                if !log.checkpointing && live > (inner.ring - RECORDS) / 2 {
                    drop(self.start_checkpoint(log));
                }
                return Ok(());
            }
            if log.live.is_empty() && !log.checkpointing {
                // Larger than the ring: written to the data file directly, as redb would
                // without a journal (its own crash safety covers a header written before the
                // pages are durable). The data file holds every record before it.
                mem.recorded();
                drop(mem);
                return self.write_through(log, &pages, len);
            }
            drop(mem);
            if log.checkpointing {
                log = inner.changed.wait(log).unwrap_or_else(PoisonError::into_inner);
            } else {
                log = self.start_checkpoint(log);
            }
        }
    }

    /// Writes the sealed records to the journal, one after the other, and syncs it once.
    /// Called by one thread at a time ([`crate::sync`] runs one sync at a time).
    pub fn flush(&self) -> io::Result<()> {
        let inner = &self.inner;
        let (sealed, epoch) = {
            let mut log = lock(&inner.log);
            (log.sealed.drain(..).collect::<Vec<Sealed>>(), log.epoch)
        };
        let Some(last) = sealed.last().map(|s| s.record.seq) else { return lock(&inner.log).check() };
        let written = inner.write_records(epoch, &sealed).and_then(|()| inner.journal.sync_data());
        let mut log = lock(&inner.log);
        match written {
            Ok(()) => log.synced = last,
            // Latched: a record may or may not be on the disk, so nothing after it may be
            // checkpointed or written (the file is opened again, and replayed).
            Err(ref e) => {
                log.failed.get_or_insert(format!("a journal write failed: {e}"));
            }
        }
        inner.changed.notify_all();
        written
    }

    /// Hands the state of the last sealed record to the checkpoint thread, which writes it once
    /// that record is synced.
    fn start_checkpoint<'a>(&'a self, mut log: MutexGuard<'a, Log>) -> MutexGuard<'a, Log> {
        let Some(last) = log.live.back().copied() else { return log };
        let snapshot = lock(&self.inner.mem).snapshot(last.seq);
        log.checkpointing = true;
        let sent = lock(&self.checkpoints).as_ref().map(|(tx, _)| tx.send(snapshot).is_ok()).unwrap_or(false);
        if !sent {
            log.checkpointing = false;
            log.failed.get_or_insert_with(|| "the checkpoint thread has stopped".into());
        }
        log
    }

    /// A commit too large for the ring, with nothing else in it: written to the data file and
    /// synced there, which also makes the data file hold every record.
    fn write_through(&self, mut log: MutexGuard<'_, Log>, pages: &[(u64, Arc<[u8]>)], len: u64) -> io::Result<()> {
        let inner = &self.inner;
        for (page, bytes) in pages {
            inner.data.write_all_at(bytes, page * PAGE)?;
        }
        inner.data.set_len(len)?;
        inner.data.sync_data()?;
        let seq = log.next_seq;
        log.next_seq += 1;
        log.synced = seq;
        let header = Header { generation: log.generation + 1, epoch: log.epoch, checkpoint: seq, tail: log.head };
        write_header(&inner.journal, header)?;
        log.generation = header.generation;
        drop(log);
        lock(&inner.mem).written_back(pages, len);
        Ok(())
    }

    /// Stops the checkpoint thread once it has finished the checkpoint under way, then
    /// checkpoints what is left, so that a cleanly closed data file holds every synced commit
    /// by itself (as other tools that open it expect) and the journal holds nothing to replay.
    pub fn close(&self) {
        let Some((tx, worker)) = lock(&self.checkpoints).take() else { return };
        drop(tx);
        let _ = worker.join();
        let log = lock(&self.inner.log);
        if log.failed.is_none()
            && let Some(last) = log.live.back().copied()
        {
            drop(log);
            let snapshot = lock(&self.inner.mem).snapshot(last.seq);
            self.inner.checkpoint(snapshot);
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

impl Mem {
    /// The data file now holds `pages` (durably) and has length `len`: reads of a page not
    /// written again since go to the data file.
    fn written_back(&mut self, pages: &[(u64, Arc<[u8]>)], len: u64) {
        self.data_len = len;
        for (page, bytes) in pages {
            if self.pages.get(page).is_some_and(|b| Arc::ptr_eq(b, bytes)) {
                self.pages.remove(page);
            }
        }
    }

    /// The pages changed since the last record, with their bytes now, and the length: the next
    /// record's contents.
    fn changes(&self) -> (Pages, u64) {
        let mut pages: Pages = self.before.keys().filter_map(|p| self.pages.get(p).map(|b| (*p, b.clone()))).collect();
        pages.sort_unstable_by_key(|(p, _)| *p);
        (pages, self.len)
    }

    /// The [`Mem::changes`] are in a record now: what is written from here on goes to the next.
    fn recorded(&mut self) {
        self.before.clear();
        self.recorded_len = self.len;
    }

    /// The pages as of the last record (`seq`): the overlay, with each page changed since put
    /// back as it was then.
    fn snapshot(&self, seq: u64) -> Snapshot {
        let mut pages: Pages = Vec::with_capacity(self.pages.len());
        for (page, bytes) in &self.pages {
            match self.before.get(page) {
                None => pages.push((*page, bytes.clone())),
                Some(Some(then)) => pages.push((*page, then.clone())),
                Some(None) => {} // the data file has it (or it did not exist)
            }
        }
        for (page, then) in &self.before {
            if let Some(then) = then
                && !self.pages.contains_key(page)
            {
                pages.push((*page, then.clone())); // cut off since by a shorter length
            }
        }
        pages.sort_unstable_by_key(|(p, _)| *p);
        Snapshot { seq, len: self.recorded_len, pages }
    }
}

impl Inner {
    /// Writes `sealed` into the ring, each run of records that lie one after the other with
    /// one write.
    fn write_records(&self, epoch: u64, sealed: &[Sealed]) -> io::Result<()> {
        let mut staging = lock(&self.staging);
        for run in sealed.chunk_by(|a, b| a.record.pos + a.record.size == b.record.pos) {
            let start = run[0].record.pos;
            let len: u64 = run.iter().map(|s| s.record.size).sum();
            let out = staging.take(len as usize);
            for s in run {
                let at = (s.record.pos - start) as usize;
                encode_record(epoch, s, &mut out[at..at + s.record.size as usize]);
            }
            self.write_journal(out, start)?;
        }
        staging.shrink();
        Ok(())
    }

    /// Writes whole pages of the ring, directly if the file system allows it.
    fn write_journal(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut direct = lock(&self.direct);
        if let Some(file) = direct.as_ref() {
            match file.write_all_at(bytes, pos) {
                // Some file systems open a file for direct I/O and refuse the writes.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = None,
                out => return out,
            }
        }
        drop(direct);
        self.journal.write_all_at(bytes, pos)
    }

    /// Bytes of the data file (zeros past its end: a checkpoint may be cutting it shorter).
    fn read_data(&self, mem: &Mem, pos: u64, out: &mut [u8]) -> io::Result<()> {
        let mut have = mem.data_len.saturating_sub(pos).min(out.len() as u64) as usize;
        let mut at = 0;
        while at < have {
            match self.data.read_at(&mut out[at..have], pos + at as u64)? {
                0 => have = at,
                n => at += n,
            }
        }
        out[have..].fill(0);
        Ok(())
    }

    fn checkpoint(&self, snapshot: Snapshot) {
        // Only a synced state may reach the data file (see the module comment).
        let failed = {
            let mut log = lock(&self.log);
            while log.synced < snapshot.seq && log.failed.is_none() {
                log = self.changed.wait(log).unwrap_or_else(PoisonError::into_inner);
            }
            log.failed.clone()
        };
        let out = match failed {
            Some(e) => Err(io::Error::other(format!("not checkpointed: {e}"))),
            None => self.write_back(&snapshot),
        };
        let mut log = lock(&self.log);
        log.checkpointing = false;
        match out {
            Ok(header) => {
                log.generation = header.generation;
                while log.live.front().is_some_and(|r| r.seq <= snapshot.seq) {
                    log.live.pop_front();
                }
                drop(log);
                lock(&self.mem).written_back(&snapshot.pages, snapshot.len);
            }
            Err(e) => {
                tracing::error!(error = %e, "checkpoint of the data file failed; it is reopened on the next write");
                log.failed.get_or_insert(e.to_string());
            }
        }
        self.changed.notify_all();
    }

    /// Writes a snapshot to the data file, paced, syncs it, then moves the journal's header
    /// past its record. The ring's room is freed by the caller, after this returns.
    fn write_back(&self, snapshot: &Snapshot) -> io::Result<Header> {
        self.data.set_len(snapshot.len)?;
        for chunk in snapshot.pages.chunks(PACE) {
            for (page, bytes) in chunk {
                self.data.write_all_at(bytes, page * PAGE)?;
            }
            if let (Some(first), Some(last)) = (chunk.first(), chunk.last()) {
                settle(&self.data, first.0 * PAGE, (last.0 + 1) * PAGE)?;
            }
        }
        self.data.sync_data()?;
        let (generation, epoch, tail) = {
            let log = lock(&self.log);
            let next = log.live.iter().find(|r| r.seq > snapshot.seq);
            (log.generation + 1, log.epoch, next.map_or(log.head, |r| r.pos))
        };
        let header = Header { generation, epoch, checkpoint: snapshot.seq, tail };
        write_header(&self.journal, header)?;
        Ok(header)
    }
}

/// Waits until the data file's pages in `[from, to)` are on the disk (not its cache): so that
/// the final fdatasync has little left to write, and a journal sync queues behind few pages.
fn settle(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: a plain syscall on an open descriptor, with no memory passed.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), from as i64, (to - from) as i64, flags) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Where a record of `size` bytes goes, if the ring has room for it after `log.head` (or from
/// the start of the records, if not) without reaching a record not yet checkpointed.
fn fits(log: &Log, ring: u64, size: u64) -> Option<u64> {
    let fits_at = |pos: u64, end: u64| (pos + size <= end).then_some(pos);
    match log.live.front() {
        None => fits_at(log.head, ring).or_else(|| fits_at(RECORDS, ring)),
        Some(oldest) if oldest.pos < log.head => fits_at(log.head, ring).or_else(|| fits_at(RECORDS, oldest.pos)),
        Some(oldest) => fits_at(log.head, oldest.pos),
    }
}

/// The ring's room for a record of `bytes` (head and body): whole pages, so that writing it
/// never reads a page of the journal first.
fn record_size(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(PAGE) * PAGE
}

/// How much of a page is left without its trailing zeros.
fn used(page: &[u8]) -> usize {
    let mut end = page.len();
    // Eight bytes at a time first: this runs on every page of every commit.
    while end >= 8 && page[end - 8..end] == [0; 8] {
        end -= 8;
    }
    while end > 0 && page[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// Encodes a record into `out`, its room in the ring (whole pages, zeros after the body).
fn encode_record(epoch: u64, sealed: &Sealed, out: &mut [u8]) {
    let Sealed { record, len, pages, lengths } = sealed;
    debug_assert_eq!(out.len() as u64, record.size);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        out[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&RECORD_MAGIC.to_le_bytes());
    put(&[0; 4]); // the CRC, below
    put(&record.seq.to_le_bytes());
    put(&len.to_le_bytes());
    put(&(pages.len() as u32).to_le_bytes());
    put(&(epoch as u32).to_le_bytes());
    put(&[0; 8]); // the body's length, below
    for ((page, bytes), &n) in pages.iter().zip(lengths) {
        put(&page.to_le_bytes());
        put(&n.to_le_bytes());
        put(&bytes[..usize::from(n)]);
    }
    let end = at;
    out[end..].fill(0);
    out[32..36].copy_from_slice(&((end - RECORD_HEAD) as u32).to_le_bytes());
    let crc = crc32fast::hash(&out[8..end]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// The buffer records are encoded in, kept from one flush to the next: a flush writes about a
/// megabyte at 64 clients, and a buffer allocated for each one cost the sync thread a page fault
/// and the zeroing of a fresh page for every 4 KiB of it. What it hands out starts at a page
/// boundary, as a direct write needs.
#[derive(Default)]
struct Staging {
    bytes: Vec<u8>,
}

impl Staging {
    /// Room for `len` bytes (whole pages), aligned to a page; its contents are left over.
    fn take(&mut self, len: usize) -> &mut [u8] {
        let need = len + PAGE as usize;
        if self.bytes.len() < need {
            self.bytes.resize(need, 0);
        }
        let skip = self.bytes.as_ptr().align_offset(PAGE as usize);
        &mut self.bytes[skip..skip + len]
    }

    /// Lets go of a buffer grown for an unusually large flush (a commit of thousands of pages,
    /// such as a file's upgrade), rather than hold that much for good.
    fn shrink(&mut self) {
        if self.bytes.len() > STAGING_KEPT {
            self.bytes = Vec::new();
        }
    }
}

/// The most [`Staging`] keeps between flushes: a flush at 64 clients is about a megabyte.
const STAGING_KEPT: usize = 16 << 20;

/// The journal opened for direct I/O: records bypass the page cache (they are read back only by
/// a replay), so a flush neither copies them into it nor leaves them for the writeback to find.
/// `None` if the file system does not support it.
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(path).ok()
}

/// A record read back: the file's length it left, its pages, and its size in the ring.
#[derive(Debug, PartialEq)]
struct Replayed {
    len: u64,
    pages: Vec<(u64, Vec<u8>)>,
    size: u64,
}

/// The record at `pos` if it is whole, numbered `seq` and written in `epoch`.
fn read_record(journal: &File, ring: u64, pos: u64, seq: u64, epoch: u64) -> io::Result<Option<Replayed>> {
    if pos + RECORD_HEAD as u64 > ring {
        return Ok(None);
    }
    let mut head = [0u8; RECORD_HEAD];
    journal.read_exact_at(&mut head, pos)?;
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    if u64_at(&head, 8) != seq || u32_at(&head, 28) != epoch as u32 {
        return Ok(None);
    }
    let count = u32_at(&head, 24) as usize;
    let (head_len, body_len) = match u32_at(&head, 0) {
        RECORD_MAGIC => (RECORD_HEAD, u32_at(&head, 32) as usize),
        RECORD_MAGIC_V1 => (RECORD_HEAD_V1, count.saturating_mul(8 + PAGE as usize)),
        _ => return Ok(None),
    };
    let size = record_size(head_len.saturating_add(body_len));
    if pos + size > ring {
        return Ok(None);
    }
    let mut body = vec![0u8; body_len];
    journal.read_exact_at(&mut body, pos + head_len as u64)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[8..head_len]);
    hasher.update(&body);
    if hasher.finalize() != u32_at(&head, 4) {
        return Ok(None);
    }
    let pages = if head_len == RECORD_HEAD_V1 {
        body.chunks_exact(8 + PAGE as usize).map(|c| (u64_at(c, 0), c[8..].to_vec())).collect()
    } else {
        match trimmed_pages(&body, count) {
            Some(pages) => pages,
            None => return Ok(None),
        }
    };
    Ok(Some(Replayed { len: u64_at(&head, 16), pages, size }))
}

/// The `count` pages of a record's body, each given back its trailing zeros; `None` if the
/// body does not hold exactly that.
fn trimmed_pages(body: &[u8], count: usize) -> Option<Vec<(u64, Vec<u8>)>> {
    let mut pages = Vec::with_capacity(count.min(body.len() / ENTRY_HEAD));
    let mut rest = body;
    while !rest.is_empty() {
        let (entry, after) = rest.split_at_checked(ENTRY_HEAD)?;
        let page = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let n = u16::from_le_bytes([entry[8], entry[9]]) as usize;
        let (bytes, after) = after.split_at_checked(n).filter(|_| n <= PAGE as usize)?;
        let mut whole = vec![0u8; PAGE as usize];
        whole[..n].copy_from_slice(bytes);
        pages.push((page, whole));
        rest = after;
    }
    (pages.len() == count).then_some(pages)
}

/// The newer of the two header slots that are whole, if any.
fn read_header(journal: &File) -> io::Result<Option<Header>> {
    if journal.metadata()?.len() < RECORDS {
        return Ok(None);
    }
    let mut page = vec![0u8; RECORDS as usize];
    journal.read_exact_at(&mut page, 0)?;
    Ok(SLOTS.iter().filter_map(|&at| Header::decode(&page[at as usize..])).max_by_key(|h| h.generation))
}

/// Writes `header` into the slot its generation names (the other keeps the previous one, in
/// case this write is torn) and syncs it.
fn write_header(journal: &File, header: Header) -> io::Result<()> {
    journal.write_all_at(&header.encode(), SLOTS[(header.generation % 2) as usize])?;
    journal.sync_data()
}

/// A new journal: the ring allocated, an empty header, and its directory entry synced (else a
/// power cut could lose the file with the records in it).
fn create(path: &Path, journal: &File, ring: u64) -> io::Result<Header> {
    journal.set_len(0)?;
    allocate(journal, ring)?;
    let header = Header { generation: 1, epoch: 0, checkpoint: 0, tail: RECORDS };
    write_header(journal, header)?;
    journal.sync_all()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)?.sync_all()?;
    }
    Ok(header)
}

/// Gives the ring its blocks up front, written: a sync then changes neither the journal's size
/// nor its extents (blocks allocated but never written, as `fallocate` leaves them, are
/// converted by the first write into each, and that conversion is synced with it).
fn allocate(journal: &File, ring: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < ring {
        let n = (ring - at).min(zeros.len() as u64) as usize;
        journal.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Applies the records after the header's checkpoint to the data file, syncs it and moves the
/// header past them, into a new epoch; the header and where the next record goes.
///
/// Only records of the header's epoch count. One flush writes several records, and a power
/// cut may keep a later one of them and lose an earlier: the replay stops at the lost one, and
/// the records written after it, in the new epoch, may land exactly where the kept one lies and
/// take its number. Its old epoch tells it apart.
fn replay(data: &File, journal: &File, ring: u64, header: Header) -> io::Result<(Header, u64)> {
    let (mut pos, mut seq, mut applied) = (header.tail, header.checkpoint + 1, 0u64);
    let epoch = header.epoch;
    loop {
        let found = match read_record(journal, ring, pos, seq, epoch)? {
            Some(r) => Some((pos, r)),
            // A record that did not fit before the end of the ring went to its start.
            None if pos != RECORDS => read_record(journal, ring, RECORDS, seq, epoch)?.map(|r| (RECORDS, r)),
            None => None,
        };
        let Some((at, Replayed { len, pages, size })) = found else { break };
        for (page, bytes) in &pages {
            data.write_all_at(bytes, page * PAGE)?;
        }
        data.set_len(len)?;
        pos = at + size;
        seq += 1;
        applied += 1;
    }
    if applied > 0 {
        data.sync_data()?;
        tracing::info!(records = applied, "replayed the write-ahead journal after an unclean stop");
    }
    let header = Header { generation: header.generation + 1, epoch: epoch + 1, checkpoint: seq - 1, tail: pos };
    write_header(journal, header)?;
    Ok((header, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RING: u64 = 64 * PAGE;

    fn open(dir: &Path) -> Journal {
        let data = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join("d")).unwrap();
        Journal::open(&dir.join("d"), data, RING).unwrap()
    }

    /// A commit's sync: its record sealed, written and synced.
    fn sync(j: &Journal) {
        j.seal().unwrap();
        j.flush().unwrap();
    }

    /// Stops using `j` as a crash would: no closing checkpoint (its thread and files leak).
    fn crash(j: Journal) {
        std::mem::forget(j);
    }

    /// A power cut in the middle of `record`: its last page is not what was written.
    fn tear(dir: &Path, record: Record) {
        let journal = OpenOptions::new().write(true).open(journal_path(&dir.join("d"))).unwrap();
        journal.write_all_at(&page(7), record.pos + record.size - PAGE).unwrap();
    }

    fn page(fill: u8) -> Vec<u8> {
        vec![fill; PAGE as usize]
    }

    fn read(j: &Journal, p: u64) -> u8 {
        let mut out = page(0);
        j.read(p * PAGE, &mut out).unwrap();
        assert!(out.iter().all(|b| *b == out[0]), "page {p} is not one byte repeated");
        out[0]
    }

    fn on_disk(dir: &Path, p: u64) -> Option<u8> {
        std::fs::read(dir.join("d")).unwrap().get((p * PAGE) as usize).copied()
    }

    /// The size asked for is a new journal's; an existing one keeps its own, and its records.
    #[test]
    fn a_journal_keeps_the_size_it_was_created_with() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(2 * PAGE, &page(2)).unwrap();
        sync(&j);
        crash(j);
        let len = || std::fs::metadata(journal_path(&dir.path().join("d"))).unwrap().len();
        assert_eq!(len(), RING);
        let data = OpenOptions::new().read(true).write(true).open(dir.path().join("d")).unwrap();
        let j = Journal::open(&dir.path().join("d"), data, 4 * RING).unwrap();
        assert_eq!(len(), RING, "not re-created at another size");
        drop(j);
        assert_eq!(on_disk(dir.path(), 2), Some(2), "replayed");
    }

    #[test]
    fn a_synced_write_survives_a_data_file_that_lost_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(0, &page(1)).unwrap();
        j.write(3 * PAGE, &page(3)).unwrap();
        j.write(100, &[9; 50]).unwrap(); // within page 0
        sync(&j);
        j.write(PAGE, &page(2)).unwrap(); // never synced
        assert_eq!((read(&j, 1), read(&j, 3), j.file_len()), (2, 3, 4 * PAGE), "reads see the overlay");
        assert_eq!(on_disk(dir.path(), 0), None, "the data file is untouched until a checkpoint");
        crash(j);

        let j = open(dir.path());
        assert_eq!((on_disk(dir.path(), 0), on_disk(dir.path(), 3)), (Some(1), Some(3)), "replayed");
        let mut head = page(0);
        j.read(0, &mut head).unwrap();
        assert_eq!((head[99], head[100], head[149], head[150]), (1, 9, 9, 1));
        assert_eq!(read(&j, 1), 0, "the unsynced write is gone");
        assert_eq!(j.file_len(), 4 * PAGE);
        // Replayed once: a second open finds nothing to do and the same file.
        drop(j);
        let j = open(dir.path());
        assert_eq!(read(&j, 3), 3);
    }

    /// The bytes of page `p` as redb reads them.
    fn bytes(j: &Journal, p: u64) -> Vec<u8> {
        let mut out = page(0);
        j.read(p * PAGE, &mut out).unwrap();
        out
    }

    /// `n` bytes of a pattern that ends in a non-zero byte, then zeros to the page's end.
    fn front(n: usize) -> Vec<u8> {
        let mut out = page(0);
        for (i, b) in out[..n].iter_mut().enumerate() {
            *b = if i % 7 == 3 { 0 } else { (i % 251) as u8 + 1 };
        }
        out[n - 1] = 0xEE;
        out
    }

    #[test]
    fn a_page_without_its_trailing_zeros_is_what_the_journal_writes() {
        assert_eq!((used(&page(0)), used(&page(1)), used(&front(1)), used(&front(1003))), (0, 4096, 1, 1003));
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(0, &page(9)).unwrap();
        j.write(PAGE, &page(9)).unwrap();
        drop(j); // a clean close: the data file holds the 9s
        let j = open(dir.path());
        j.write(0, &front(100)).unwrap();
        j.write(PAGE, &page(0)).unwrap();
        j.write(2 * PAGE, &front(1003)).unwrap();
        sync(&j);
        // 40 bytes of head, 3 x 10 of page numbers and lengths, 1,103 of pages: one page of the
        // ring, where whole pages took four.
        assert_eq!(lock(&j.inner.log).live[0].size, PAGE);
        crash(j);
        let j = open(dir.path());
        // The tails come back as zeros, over the 9s the data file held.
        assert_eq!((bytes(&j, 0), bytes(&j, 1), bytes(&j, 2)), (front(100), page(0), front(1003)));
        assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), [front(100), page(0), front(1003)].concat());
    }

    /// A record as the first version wrote it: whole pages, no lengths.
    fn encode_v1(epoch: u64, seq: u64, len: u64, pages: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut out = RECORD_MAGIC_V1.to_le_bytes().to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(pages.len() as u32).to_le_bytes());
        out.extend_from_slice(&(epoch as u32).to_le_bytes());
        for (page, bytes) in pages {
            out.extend_from_slice(&page.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let crc = crc32fast::hash(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A journal left by the first version after a crash is replayed by this one.
    #[test]
    fn a_record_of_the_first_version_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        crash(open(dir.path()));
        let journal = OpenOptions::new().read(true).write(true).open(journal_path(&dir.path().join("d"))).unwrap();
        let header = read_header(&journal).unwrap().unwrap();
        let record = encode_v1(header.epoch, header.checkpoint + 1, 2 * PAGE, &[(0, front(100)), (1, page(4))]);
        journal.write_all_at(&record, header.tail).unwrap();
        let j = open(dir.path());
        assert_eq!((bytes(&j, 0), read(&j, 1), j.file_len()), (front(100), 4, 2 * PAGE));
    }

    #[test]
    fn a_torn_record_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(0, &page(1)).unwrap();
        sync(&j);
        j.write(0, &page(2)).unwrap();
        sync(&j);
        let second = lock(&j.inner.log).live[1];
        crash(j);
        tear(dir.path(), second); // its last page never reached the disk
        let j = open(dir.path());
        assert_eq!(read(&j, 0), 1);
        // And the next record takes its place and number.
        j.write(0, &page(3)).unwrap();
        sync(&j);
        drop(j);
        assert_eq!(read(&open(dir.path()), 0), 3);
    }

    #[test]
    fn a_record_kept_past_a_lost_one_is_not_replayed_after_the_next_crash() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        for fill in [1, 2, 3] {
            j.write(0, &page(fill)).unwrap();
            j.seal().unwrap();
        }
        j.flush().unwrap(); // one flush for three records
        let second = lock(&j.inner.log).live[1];
        crash(j);
        tear(dir.path(), second); // the power cut kept the third record and lost part of the second
        let j = open(dir.path());
        assert_eq!(read(&j, 0), 1);
        // The next two records take the lost ones' places and numbers; only the first is synced
        // before the next crash, so the old third record lies where the new one would be.
        j.write(0, &page(4)).unwrap();
        sync(&j);
        crash(j);
        let j = open(dir.path());
        assert_eq!(read(&j, 0), 4, "the old third record, of an earlier epoch, was replayed");
    }

    /// One flush writes the records it finds one after the other in a single write, and a run
    /// that wraps past the ring's end in two: every record replays either way.
    #[test]
    fn one_flush_of_records_that_wrap_around_the_ring_replays_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        let mut i = 0u8;
        let mut next = |j: &Journal| {
            i += 1;
            j.write(u64::from(i % 4) * PAGE, &page(i)).unwrap();
            j.seal().unwrap();
            lock(&j.inner.log).live.back().copied().unwrap()
        };
        // Synced records of two pages each until the next two no longer fit before the end.
        while lock(&j.inner.log).head + 4 * PAGE <= RING {
            next(&j);
            j.flush().unwrap();
        }
        while lock(&j.inner.log).checkpointing {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let (before_end, wrapped) = (next(&j), next(&j));
        let after = next(&j);
        assert!(before_end.pos + before_end.size <= RING && wrapped.pos == RECORDS, "{before_end:?} {wrapped:?}");
        assert_eq!(after.pos, wrapped.pos + wrapped.size);
        j.flush().unwrap(); // all three: one write at the end of the ring, one at its start
        let expect: Vec<u8> = (0..4).map(|p| read(&j, p)).collect();
        crash(j);
        let j = open(dir.path());
        assert_eq!((0..4).map(|p| read(&j, p)).collect::<Vec<u8>>(), expect);
    }

    #[test]
    fn checkpoints_free_the_ring_and_keep_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        // Each record is three pages of the 63 the ring holds: many laps, many checkpoints.
        for i in 0..200u64 {
            j.write(0, &page((i % 250) as u8 + 1)).unwrap();
            j.write((1 + i % 5) * PAGE, &page((i % 250) as u8 + 1)).unwrap();
            sync(&j);
        }
        assert_eq!((read(&j, 0), read(&j, 5)), (200, 200));
        let checkpointed = || read_header(&j.inner.journal).unwrap().unwrap().checkpoint;
        assert!(checkpointed() > 100, "checkpointed only through {}", checkpointed());
        crash(j);
        let j = open(dir.path());
        assert_eq!((read(&j, 0), read(&j, 1), read(&j, 4), read(&j, 5)), (200, 196, 199, 200));
    }

    #[test]
    fn a_checkpoint_writes_the_synced_state_not_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(0, &page(1)).unwrap();
        j.write(PAGE, &page(1)).unwrap();
        sync(&j);
        // Written after the record, before the checkpoint: page 0 in place (as redb's header),
        // page 2 new, and the length cut below page 1.
        j.write(0, &page(2)).unwrap();
        j.write(2 * PAGE, &page(2)).unwrap();
        j.set_len(PAGE).unwrap();
        let log = lock(&j.inner.log);
        drop(j.start_checkpoint(log));
        let mut log = lock(&j.inner.log);
        while log.checkpointing {
            log = j.inner.changed.wait(log).unwrap();
        }
        drop(log);
        assert_eq!((on_disk(dir.path(), 0), on_disk(dir.path(), 1), on_disk(dir.path(), 2)), (Some(1), Some(1), None));
        assert_eq!((read(&j, 0), read(&j, 2), j.file_len()), (2, 0, PAGE), "reads still see the later writes");
        // Which the next record and checkpoint carry.
        sync(&j);
        let log = lock(&j.inner.log);
        drop(j.start_checkpoint(log));
        drop(j);
        assert_eq!((on_disk(dir.path(), 0), on_disk(dir.path(), 1)), (Some(2), None));
    }

    #[test]
    fn a_record_larger_than_the_ring_goes_to_the_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        for p in 0..80 {
            j.write(p * PAGE, &page(4)).unwrap();
        }
        sync(&j);
        assert_eq!((on_disk(dir.path(), 0), on_disk(dir.path(), 79)), (Some(4), Some(4)));
        j.write(0, &page(5)).unwrap();
        sync(&j);
        crash(j);
        let j = open(dir.path());
        assert_eq!((read(&j, 0), read(&j, 79)), (5, 4));
    }

    #[test]
    fn a_clean_close_leaves_every_synced_write_in_the_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path());
        j.write(0, &page(1)).unwrap();
        j.write(2 * PAGE, &page(2)).unwrap();
        sync(&j);
        j.write(PAGE, &page(3)).unwrap(); // not synced: not kept
        drop(j);
        assert_eq!(
            (on_disk(dir.path(), 0), on_disk(dir.path(), 1), on_disk(dir.path(), 2)),
            (Some(1), Some(0), Some(2))
        );
        let journal = File::open(journal_path(&dir.path().join("d"))).unwrap();
        let header = read_header(&journal).unwrap().unwrap();
        let next = read_record(&journal, RING, header.tail, header.checkpoint + 1, header.epoch).unwrap();
        assert_eq!(next, None, "nothing to replay");
    }

    #[test]
    fn a_torn_header_slot_leaves_the_other() {
        let h = Header { generation: 7, epoch: 2, checkpoint: 3, tail: RECORDS };
        let mut b = h.encode().to_vec();
        assert_eq!(Header::decode(&b), Some(h));
        b[20] ^= 1;
        assert_eq!(Header::decode(&b), None);
    }
}

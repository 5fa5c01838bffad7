//! The embedded Tables adapter: one redb file. Every table's items and index entries share one
//! redb table, ordered by partition key first; each TTL attribute and the change feed have a
//! redb table of their own.
//!
//! Keys are encoded so that byte order is key order: a string component is its bytes with 0x00
//! escaped as 0x00 0xFF and a 0x00 0x00 terminator; a number is 8 big-endian bytes with the sign
//! bit flipped. A base item's key is `enc(pk) tag enc(sk)`, where the one-byte tag names the
//! table; an index entry's key is `enc(index pk) tag enc(index sk) base key` and its value is the
//! base key, so an index read sees exactly the items of the same snapshot.
//!
//! **Why one redb table.** Each redb table is a B-tree of its own, and a commit writes every
//! page it changed, with the path to each from its table's root. A single chat's send writes
//! nine tables; keyed apart, they were some thirty pages for one send, scattered over the file,
//! and the commit's fdatasync pays per scattered page (see docs/storage.md, "Why it exists"). Keyed
//! by partition first, the rows one send writes sit together: the conversation's meta, message
//! and idempotency rows (all by `timeline_id`), and each member's inbox counter, inbox entries,
//! summary and activity-index entry (all by `user_id`). Every write runs in a redb write
//! transaction committed with `Durability::Immediate` (fsync) before it is acknowledged, so a
//! crash loses nothing that was acknowledged, and a transaction's ops apply all or nothing.
//! Concurrent writes share one commit (the storage layer's group commit, `im_storage::file`).
//!
//! **Change feed.** What DynamoDB streams are to the tables marked `stream`, the feed is here:
//! opened [`with_change_feed`](RedbTables::with_change_feed), every write to such a table is
//! offered (old and new images) to a filter, and what the filter keeps is appended to the feed
//! in the same redb transaction as the write. So a record exists exactly when its write
//! committed, and in commit order; a consumer reads the oldest records, handles them, and then
//! forgets them, so a crash in between hands them over again. (TTL deletions are not offered.)

use super::*;
use crate::changes::{Change, ChangeFeed};
use crate::schema::{ALL_TABLES, KeyAttr};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use im_storage::{IoFailure, RedbFile};
use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::path::Path;
use std::sync::Arc;

type Raw = TableDefinition<'static, &'static [u8], &'static [u8]>;

/// Turns a change to an item of a `stream` table (its images before and after) into a record of
/// the change feed, or `None` for a change of no interest.
pub type ChangeFilter = fn(&TableDef, Option<&Item>, Option<&Item>) -> Option<String>;

/// The change feed's redb table: position (8 bytes, big-endian) → record.
const CHANGES: &str = "#changes";

/// The redb table of every schema table's items and index entries (see the module comment).
const ROWS: &str = "#rows";

#[derive(Clone)]
pub struct RedbTables {
    db: Arc<RedbFile>,
    feed: Option<ChangeFilter>,
}

/// Every table of the schema, created if missing; a file of the older layout is upgraded first.
fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    let legacy = txn.list_tables()?.any(|t| ALL_TABLES.iter().any(|s| s.name == t.name()));
    if legacy {
        let moved = upgrade(&txn).map_err(|e| redb::Error::Corrupted(format!("upgrading the file's layout: {e}")))?;
        tracing::info!(items = moved, "embedded tables: moved every table's items into the shared rows table");
    }
    txn.open_table(Raw::new(ROWS))?;
    for table in ALL_TABLES.iter().filter(|t| t.ttl.is_some()) {
        txn.open_table(def(&ttl_table_name(table)))?;
    }
    txn.open_table(Raw::new(CHANGES))?;
    txn.commit()?;
    Ok(())
}

/// Files written before the shared rows table kept each schema table, and each of its indexes
/// and TTL attributes, in a redb table of its own, keyed without the tag. Their items move to
/// the rows table, in the transaction that opens the file, and their index and TTL entries are
/// written again from the items (they hold keys of the old form). The change feed is unchanged.
fn upgrade(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let redb_err = |e: redb::TableError| map_err(e.into());
    for table in ALL_TABLES {
        for index in table.indexes {
            txn.delete_table(def(&format!("{}#{}", table.name, index.name))).map_err(redb_err)?;
        }
        txn.delete_table(def(&ttl_table_name(table))).map_err(redb_err)?;
    }
    let mut open = Open::new(txn);
    let mut moved = 0;
    for table in ALL_TABLES {
        {
            let old = txn.open_table(Raw::new(table.name)).map_err(redb_err)?;
            for entry in old.iter().map_err(|e| map_err(e.into()))? {
                let (_, v) = entry.map_err(|e| map_err(e.into()))?;
                let item = decode_item(v.value())?;
                write_item(&mut open, table, &item_key(table, &item)?, None, &item, v.value())?;
                moved += 1;
            }
        }
        txn.delete_table(Raw::new(table.name)).map_err(redb_err)?;
    }
    Ok(moved)
}

impl IoFailure for StoreError {
    fn is_io(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
    fn unavailable(message: String) -> Self {
        StoreError::Unavailable(message)
    }
    fn internal(message: String) -> Self {
        StoreError::Internal(format!("embedded tables: {message}"))
    }
    /// Every write here checks its conditions before it writes.
    fn wrote_nothing(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

impl RedbTables {
    /// Opens (or creates) the database file and every table of the schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_journal(path, im_storage::journal::DEFAULT_RING)
    }

    /// As [`RedbTables::open`], with a write-ahead journal of `ring` bytes if the file is new
    /// (see `im_storage::journal`).
    pub fn open_with_journal(path: &Path, ring: u64) -> Result<Self, StoreError> {
        let db = RedbFile::open_with_ring(path, create_tables, ring).map_err(map_err)?;
        Ok(RedbTables { db: Arc::new(db), feed: None })
    }

    /// Records the changes `filter` keeps in the change feed (see the module comment).
    pub fn with_change_feed(mut self, filter: ChangeFilter) -> Self {
        self.feed = Some(filter);
        self
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.run(f))
            .await
            .map_err(|e| StoreError::Internal(format!("blocking task failed: {e}")))?
    }

    /// A read of a few items or a page, on the calling thread. Such a read takes tens of
    /// microseconds (redb serves it from its page cache or the OS's), less than handing it to
    /// the blocking pool and back costs: two thread wake-ups, which on a busy machine wait for
    /// a core, and were the tail of a sync page's latency while sends ran (im-bench sync).
    fn read_now<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.db.run(f)
    }

    /// Items by stored key, in one read transaction.
    fn read_keys(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Stored>>, StoreError> {
        self.read_now(move |txn| {
            let rows = txn.open_table(Raw::new(ROWS)).map_err(|e| map_err(e.into()))?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                out.push(rows.get(k.as_slice()).map_err(|e| map_err(e.into()))?.map(|g| stored(g.value())));
            }
            Ok(out)
        })
    }

    /// Conditional ops, all or nothing, in a shared commit (a transaction, or one write of its
    /// own): with `give_back`, each item as it was and, for an update, as it is now; without,
    /// nothing (the items read for the conditions are freed on the commit thread that decoded
    /// them: handed to a request's worker, freeing them there was a twentieth of its CPU).
    async fn write_ops(
        &self,
        ops: Vec<TxOp>,
        give_back: bool,
    ) -> Result<Vec<(Option<Item>, Option<Item>)>, StoreError> {
        if ops.len() > MAX_TX_OPS {
            return Err(StoreError::Internal(format!("transaction of {} ops exceeds {MAX_TX_OPS}", ops.len())));
        }
        let ops = ops.into_iter().map(Prepared::of).collect::<Result<Vec<_>, _>>()?;
        for (i, op) in ops.iter().enumerate() {
            if ops[..i].iter().any(|o| o.key == op.key) {
                return Err(StoreError::Internal("transaction touches one item twice".into()));
            }
        }
        let feed = self.feed;
        self.write(move |txn| {
            let mut open = Open::new(txn);
            // Each item is read (and decoded) once: for its condition, then for its write.
            let mut olds = Vec::with_capacity(ops.len());
            for (i, op) in ops.iter().enumerate() {
                let old = read_raw(&mut open, &op.key)?;
                if !op.cond().holds(old.as_ref()) {
                    return Err(StoreError::Conflict { index: Some(i) });
                }
                olds.push(old);
            }
            let mut done = Vec::with_capacity(ops.len());
            for (op, old) in ops.iter().zip(olds) {
                let new = apply(&mut open, op, old.as_ref(), feed)?;
                if give_back {
                    done.push((old, new));
                }
            }
            Ok(done)
        })
        .await
    }

    /// One conditional op of its own: its item as it was and, for an update, as it is now.
    async fn write_one(&self, op: TxOp) -> Result<(Option<Item>, Option<Item>), StoreError> {
        let mut done = self.write_ops(vec![op], true).await?;
        Ok(done.pop().unwrap_or_default())
    }

    /// A write, in a commit shared with the writes alongside it (see `im_storage::file`).
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.db.write(f).await
    }

    /// How many commits the writes so far took (the benchmark's writes per commit).
    pub fn commit_stats(&self) -> im_storage::CommitStats {
        self.db.stats()
    }

    /// Deletes every item whose TTL attribute is at or before `now_secs`; returns how many.
    /// DynamoDB does this on its own, lazily; the local server runs it periodically. Readers
    /// must not rely on either being prompt (the service filters expired items itself).
    pub async fn sweep_expired(&self, now_secs: i64) -> Result<usize, StoreError> {
        self.write(move |txn| {
            let mut open = Open::new(txn);
            let mut removed = 0;
            for table in ALL_TABLES.iter().filter(|t| t.ttl.is_some()) {
                let due: Vec<Vec<u8>> = {
                    let t = open.ttl(table)?;
                    // TTL keys are the expiry followed by the base key: everything below now+1.
                    let hi = enc_n(now_secs.saturating_add(1));
                    let mut keys = Vec::new();
                    for entry in t.range::<&[u8]>(..hi.as_slice()).map_err(|e| map_err(e.into()))? {
                        let (k, _) = entry.map_err(|e| map_err(e.into()))?;
                        keys.push(k.value()[8..].to_vec());
                        if keys.len() >= 10_000 {
                            break; // bounded work per sweep
                        }
                    }
                    keys
                };
                for base_key in due {
                    if let Some(old) = read_raw(&mut open, &base_key)? {
                        remove_item(&mut open, table, &base_key, &old)?;
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })
        .await
    }
}

fn def(name: &str) -> Raw {
    // redb table definitions borrow their name for 'static; the set of names is small and fixed,
    // so each distinct name is leaked once and cached.
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    let name: &'static str = match names.get(name) {
        Some(n) => n,
        None => {
            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
            names.insert(name.to_string(), leaked);
            leaked
        }
    };
    TableDefinition::new(name)
}

fn ttl_table_name(table: &TableDef) -> String {
    format!("{}#ttl", table.name)
}

fn map_err(e: redb::Error) -> StoreError {
    match e {
        redb::Error::Io(io) => StoreError::Unavailable(format!("embedded tables I/O: {io}")),
        redb::Error::PreviousIo => StoreError::Unavailable("embedded tables: an earlier I/O failure".into()),
        other => StoreError::Internal(format!("embedded tables: {other}")),
    }
}

// ---- key encoding -------------------------------------------------------------------------

fn enc_s_into(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

fn enc_n(n: i64) -> [u8; 8] {
    ((n as u64) ^ (1u64 << 63)).to_be_bytes()
}

fn enc_into(out: &mut Vec<u8>, v: &KeyVal) {
    match v {
        KeyVal::S(s) => enc_s_into(out, s),
        KeyVal::N(n) => out.extend_from_slice(&enc_n(*n)),
    }
}

fn check_type(table: &TableDef, attr: KeyAttr, v: &KeyVal) -> Result<(), StoreError> {
    match (attr.ty, v) {
        (KeyType::S, KeyVal::S(_)) | (KeyType::N, KeyVal::N(_)) => Ok(()),
        _ => Err(StoreError::Internal(format!("{}: key {} has the wrong type", table.name, attr.name))),
    }
}

/// The byte after the partition key that tells whose row it is: the table's position in
/// `ALL_TABLES` (so that list is part of the file format: tables are only ever appended to
/// it), times four, plus 0 for an item or 1 + the index's position for an index entry.
fn tag(table: &TableDef, index: Option<&str>) -> Result<u8, StoreError> {
    let unknown = || StoreError::Internal(format!("{}: not a table of the schema", table.name));
    let t = ALL_TABLES.iter().position(|t| t.name == table.name).ok_or_else(unknown)?;
    let i = match index {
        None => 0,
        Some(name) => 1 + table.indexes.iter().position(|i| i.name == name).ok_or_else(unknown)?,
    };
    Ok((t * 4 + i) as u8)
}

/// The start of every key of one partition of a table or index: `enc(pk) tag`.
fn partition_prefix(table: &TableDef, index: Option<&IndexDef>, pk: &KeyVal) -> Result<Vec<u8>, StoreError> {
    check_type(table, index.map_or(table.pk, |i| i.pk), pk)?;
    let mut out = Vec::with_capacity(48);
    enc_into(&mut out, pk);
    out.push(tag(table, index.map(|i| i.name))?);
    Ok(out)
}

fn base_key_bytes(table: &TableDef, key: &Key) -> Result<Vec<u8>, StoreError> {
    let mut out = partition_prefix(table, None, &key.pk)?;
    match (table.sk, &key.sk) {
        (Some(attr), Some(sk)) => {
            check_type(table, attr, sk)?;
            enc_into(&mut out, sk);
        }
        (None, None) => {}
        _ => return Err(StoreError::Internal(format!("{}: key shape does not match the table", table.name))),
    }
    Ok(out)
}

/// The index key of an item, or `None` when the item lacks the index's attributes (sparse).
fn index_key_bytes(
    table: &TableDef,
    index: &IndexDef,
    item: &Item,
    base_key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(pk) = item.get(index.pk.name).and_then(|v| KeyVal::from_json(v, index.pk.ty)) else {
        return Ok(None);
    };
    let mut out = partition_prefix(table, Some(index), &pk)?;
    if let Some(sk) = index.sk {
        let Some(sk) = item.get(sk.name).and_then(|v| KeyVal::from_json(v, sk.ty)) else {
            return Ok(None);
        };
        enc_into(&mut out, &sk);
    }
    out.extend_from_slice(base_key);
    Ok(Some(out))
}

fn ttl_key_bytes(table: &TableDef, item: &Item, base_key: &[u8]) -> Option<Vec<u8>> {
    let at = item.get(table.ttl?)?.as_i64()?;
    let mut out = enc_n(at).to_vec();
    out.extend_from_slice(base_key);
    Some(out)
}

// ---- item reads and writes inside a transaction -------------------------------------------

/// A redb table of the file: the rows, a schema table's TTL entries, or the change feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Physical {
    Rows,
    Ttl(&'static str),
    Changes,
}

/// The redb tables one write has open, each opened on its first use and closed when the write
/// is done. Opening a table looks it up in redb's table tree and closing it records its new
/// root; a single chat's send reads and writes rows some forty times, so opening a table per
/// item read or write was a share of the serial commit thread's time.
struct Open<'t> {
    txn: &'t WriteTransaction,
    tables: Vec<(Physical, RawTable<'t>)>,
}

type RawTable<'t> = redb::Table<'t, &'static [u8], &'static [u8]>;

impl<'t> Open<'t> {
    fn new(txn: &'t WriteTransaction) -> Self {
        Open { txn, tables: Vec::new() }
    }

    fn rows(&mut self) -> Result<&mut RawTable<'t>, StoreError> {
        self.get(Physical::Rows, || Raw::new(ROWS))
    }

    fn ttl(&mut self, table: &TableDef) -> Result<&mut RawTable<'t>, StoreError> {
        self.get(Physical::Ttl(table.name), || def(&ttl_table_name(table)))
    }

    /// The change feed's table.
    fn changes(&mut self) -> Result<&mut RawTable<'t>, StoreError> {
        self.get(Physical::Changes, || Raw::new(CHANGES))
    }

    fn get(&mut self, which: Physical, def: impl FnOnce() -> Raw) -> Result<&mut RawTable<'t>, StoreError> {
        let i = match self.tables.iter().position(|(w, _)| *w == which) {
            Some(i) => i,
            None => {
                self.tables.push((which, self.txn.open_table(def()).map_err(|e| map_err(e.into()))?));
                self.tables.len() - 1
            }
        };
        Ok(&mut self.tables[i].1)
    }
}

fn read_raw(open: &mut Open, key: &[u8]) -> Result<Option<Item>, StoreError> {
    let v = open.rows()?.get(key).map_err(|e| map_err(e.into()))?;
    v.map(|g| decode_item(g.value())).transpose()
}

/// A read's item as the file holds it, for the caller to decode (off the commit thread, and
/// straight into its row type).
fn stored(bytes: &[u8]) -> Stored {
    Stored::Encoded(bytes.to_vec())
}

fn decode_item(bytes: &[u8]) -> Result<Item, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Internal(format!("corrupt item: {e}")))
}

fn remove_derived(open: &mut Open, table: &TableDef, key: &[u8], old: &Item) -> Result<(), StoreError> {
    for index in table.indexes {
        if let Some(ik) = index_key_bytes(table, index, old, key)? {
            open.rows()?.remove(ik.as_slice()).map_err(|e| map_err(e.into()))?;
        }
    }
    if let Some(tk) = ttl_key_bytes(table, old, key) {
        open.ttl(table)?.remove(tk.as_slice()).map_err(|e| map_err(e.into()))?;
    }
    Ok(())
}

/// Writes `new`, encoded as `bytes`, over `old`, with its index and TTL rows.
fn write_item(
    open: &mut Open,
    table: &TableDef,
    key: &[u8],
    old: Option<&Item>,
    new: &Item,
    bytes: &[u8],
) -> Result<(), StoreError> {
    if let Some(old) = old {
        remove_derived(open, table, key, old)?;
    }
    open.rows()?.insert(key, bytes).map_err(|e| map_err(e.into()))?;
    for index in table.indexes {
        if let Some(ik) = index_key_bytes(table, index, new, key)? {
            open.rows()?.insert(ik.as_slice(), key).map_err(|e| map_err(e.into()))?;
        }
    }
    if let Some(tk) = ttl_key_bytes(table, new, key) {
        open.ttl(table)?.insert(tk.as_slice(), &[][..]).map_err(|e| map_err(e.into()))?;
    }
    Ok(())
}

fn remove_item(open: &mut Open, table: &TableDef, key: &[u8], old: &Item) -> Result<(), StoreError> {
    remove_derived(open, table, key, old)?;
    open.rows()?.remove(key).map_err(|e| map_err(e.into()))?;
    Ok(())
}

/// Checks that an item carries the key attributes it is stored under.
fn item_key(table: &TableDef, item: &Item) -> Result<Vec<u8>, StoreError> {
    base_key_bytes(table, &Key::of_item(table, item)?)
}

fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(key.try_into().map_err(|_| StoreError::Internal("corrupt change position".into()))?))
}

/// Appends a change of `table` to the change feed, in the write's own transaction, when the
/// table is streamed and the filter keeps it.
fn record(
    open: &mut Open,
    feed: Option<ChangeFilter>,
    table: &TableDef,
    old: Option<&Item>,
    new: Option<&Item>,
) -> Result<(), StoreError> {
    let Some(body) = feed.filter(|_| table.stream).and_then(|f| f(table, old, new)) else {
        return Ok(());
    };
    let t = open.changes()?;
    let next = match t.last().map_err(|e| map_err(e.into()))? {
        Some((k, _)) => position_of(k.value())? + 1,
        None => 1,
    };
    t.insert(next.to_be_bytes().as_slice(), body.as_bytes()).map_err(|e| map_err(e.into()))?;
    Ok(())
}

/// Applies one op (its condition already checked) to its item, read as `old` in this
/// transaction: every write goes through here, and so into the change feed. An update returns
/// its item as it is now.
fn apply(
    open: &mut Open,
    op: &Prepared,
    old: Option<&Item>,
    feed: Option<ChangeFilter>,
) -> Result<Option<Item>, StoreError> {
    let k = op.key.as_slice();
    match &op.op {
        TxOp::Put { table, item, .. } => {
            write_item(open, table, k, old, item, &op.bytes)?;
            record(open, feed, table, old, Some(item))?;
        }
        TxOp::Delete { table, .. } => {
            if let Some(old) = old {
                remove_item(open, table, k, old)?;
                record(open, feed, table, Some(old), None)?;
            }
        }
        TxOp::Update { table, key, update, .. } => {
            let new = update.apply(table, key, old.cloned());
            write_item(open, table, k, old, &new, &encode_item(&new)?)?;
            record(open, feed, table, old, Some(&new))?;
            return Ok(Some(new));
        }
        TxOp::Check { .. } => {}
    }
    Ok(None)
}

fn encode_item(item: &Item) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(item).map_err(|e| StoreError::Internal(e.to_string()))
}

/// An op made ready for the commit thread: its item's stored key and, for a put, the item
/// already encoded. What does not depend on the transaction's reads is done before the write
/// reaches that one serial thread, on the caller's.
struct Prepared {
    op: TxOp,
    key: Vec<u8>,
    /// A put's encoded item (empty for other ops).
    bytes: Vec<u8>,
}

impl Prepared {
    fn of(op: TxOp) -> Result<Self, StoreError> {
        let (key, bytes) = match &op {
            TxOp::Put { table, item, .. } => (item_key(table, item)?, encode_item(item)?),
            TxOp::Delete { table, key, .. } | TxOp::Update { table, key, .. } | TxOp::Check { table, key, .. } => {
                (base_key_bytes(table, key)?, Vec::new())
            }
        };
        Ok(Prepared { op, key, bytes })
    }

    fn cond(&self) -> &Cond {
        match &self.op {
            TxOp::Put { cond, .. }
            | TxOp::Delete { cond, .. }
            | TxOp::Update { cond, .. }
            | TxOp::Check { cond, .. } => cond,
        }
    }
}

// ---- cursors ------------------------------------------------------------------------------

fn encode_cursor(key: &[u8]) -> String {
    B64.encode(key)
}

fn decode_cursor(cursor: &str, prefix: &[u8]) -> Result<Vec<u8>, StoreError> {
    let bytes = B64.decode(cursor).map_err(|_| StoreError::BadCursor)?;
    // A cursor only ever continues the partition it came from.
    if bytes.len() <= prefix.len() || !bytes.starts_with(prefix) {
        return Err(StoreError::BadCursor);
    }
    Ok(bytes)
}

/// The change feed of the tables opened [`with_change_feed`](RedbTables::with_change_feed).
#[async_trait]
impl ChangeFeed for RedbTables {
    async fn changes(&self, after: Option<u64>, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.blocking(move |txn| {
            let t = txn.open_table(Raw::new(CHANGES)).map_err(|e| map_err(e.into()))?;
            let from = after.map_or(0, |p| p.saturating_add(1)).to_be_bytes();
            let mut out = Vec::new();
            for entry in t.range(from.as_slice()..).map_err(|e| map_err(e.into()))?.take(limit) {
                let (k, v) = entry.map_err(|e| map_err(e.into()))?;
                let body = String::from_utf8(v.value().to_vec())
                    .map_err(|_| StoreError::Internal("corrupt change record".into()))?;
                out.push((position_of(k.value())?, body));
            }
            Ok(out)
        })
        .await
    }

    async fn last_change(&self) -> Result<Option<u64>, StoreError> {
        self.blocking(|txn| {
            let t = txn.open_table(Raw::new(CHANGES)).map_err(|e| map_err(e.into()))?;
            t.last().map_err(|e| map_err(e.into()))?.map(|(k, _)| position_of(k.value())).transpose()
        })
        .await
    }

    /// The positions are records [`ChangeFeed::changes`] read, mostly all those of the range
    /// they span: redb's `retain_in` drops the range a leaf at a time, where one `remove` per
    /// record walked the tree for each, thousands at a time on the one commit thread every send
    /// waits for. Records in the range that are not named stay (the change feed's indexer
    /// forgets the jobs it queued apart from those it staged).
    async fn forget_changes(&self, mut positions: Vec<u64>) -> Result<(), StoreError> {
        positions.sort_unstable();
        let (Some(&first), Some(&last)) = (positions.first(), positions.last()) else { return Ok(()) };
        self.write(move |txn| {
            let mut t = txn.open_table(Raw::new(CHANGES)).map_err(|e| map_err(e.into()))?;
            let (from, to) = (first.to_be_bytes(), last.to_be_bytes());
            t.retain_in(from.as_slice()..=to.as_slice(), |k, _| {
                k.try_into().map(u64::from_be_bytes).map_or(true, |p| positions.binary_search(&p).is_err())
            })
            .map_err(|e| map_err(e.into()))
        })
        .await
    }
}

#[async_trait]
impl Tables for RedbTables {
    async fn get(&self, table: &'static TableDef, key: &Key) -> Result<Option<Stored>, StoreError> {
        let k = base_key_bytes(table, key)?;
        self.read_now(move |txn| {
            let t = txn.open_table(Raw::new(ROWS)).map_err(|e| map_err(e.into()))?;
            let v = t.get(k.as_slice()).map_err(|e| map_err(e.into()))?;
            Ok(v.map(|g| stored(g.value())))
        })
    }

    async fn get_batch(&self, keys: &[(&'static TableDef, Key)]) -> Result<Vec<Option<Stored>>, StoreError> {
        let ks = keys.iter().map(|(t, k)| base_key_bytes(t, k)).collect::<Result<Vec<_>, StoreError>>()?;
        self.read_keys(ks)
    }

    // Overridden, not the provided method over `get_batch`: that would copy each key to pair it
    // with its table, on the sync page's and the fan-out's reads.
    async fn get_many(&self, table: &'static TableDef, keys: &[Key]) -> Result<Vec<Option<Stored>>, StoreError> {
        let ks = keys.iter().map(|k| base_key_bytes(table, k)).collect::<Result<Vec<_>, StoreError>>()?;
        self.read_keys(ks)
    }

    async fn put(&self, table: &'static TableDef, item: Item, cond: Cond) -> Result<(), StoreError> {
        self.transact(vec![TxOp::Put { table, item, cond }]).await
    }

    async fn delete(&self, table: &'static TableDef, key: &Key, cond: Cond) -> Result<Option<Item>, StoreError> {
        Ok(self.write_one(TxOp::delete(table, key.clone(), cond)).await?.0)
    }

    async fn update(
        &self,
        table: &'static TableDef,
        key: &Key,
        update: Update,
        cond: Cond,
    ) -> Result<Item, StoreError> {
        let (_, new) = self.write_one(TxOp::update(table, key.clone(), update, cond)).await?;
        new.ok_or_else(|| StoreError::Internal("an update left no item".into()))
    }

    async fn query(&self, q: Query) -> Result<Page<Stored>, StoreError> {
        let index = q.index_def()?;
        let sk_attr = match index {
            Some(i) => i.sk,
            None => q.table.sk,
        };
        let prefix = partition_prefix(q.table, index, &q.pk)?;
        let bound = |b: &Bound<KeyVal>| -> Result<Bound<Vec<u8>>, StoreError> {
            let with = |v: &KeyVal| -> Result<Vec<u8>, StoreError> {
                let attr = sk_attr.ok_or_else(|| StoreError::Internal("range on a table without sort key".into()))?;
                check_type(q.table, attr, v)?;
                let mut k = prefix.clone();
                enc_into(&mut k, v);
                Ok(k)
            };
            Ok(match b {
                Bound::Unbounded => Bound::Unbounded,
                Bound::Included(v) => Bound::Included(with(v)?),
                Bound::Excluded(v) => Bound::Excluded(with(v)?),
            })
        };
        // An index entry's key continues past the index sort key with the base key, so an
        // inclusive upper bound on the sort key must include every entry that starts with it,
        // and an exclusive lower bound must skip them all.
        let mut lower = match bound(&q.lower)? {
            Bound::Excluded(k) if index.is_some() => Bound::Included(successor_of_prefix(&k)),
            Bound::Unbounded => Bound::Included(prefix.clone()),
            b => b,
        };
        let mut upper = match bound(&q.upper)? {
            Bound::Included(k) if index.is_some() => Bound::Excluded(successor_of_prefix(&k)),
            Bound::Unbounded => Bound::Excluded(successor_of_prefix(&prefix)),
            b => b,
        };
        if let Some(c) = &q.cursor {
            let c = decode_cursor(c, &prefix)?;
            if q.forward {
                lower = Bound::Excluded(c);
            } else {
                upper = Bound::Excluded(c);
            }
        }
        let limit = q.limit.max(1);
        let forward = q.forward;
        let is_index = index.is_some();
        self.read_now(move |txn| {
            let t = txn.open_table(Raw::new(ROWS)).map_err(|e| map_err(e.into()))?;
            if bounds_empty(&lower, &upper) {
                return Ok(Page::default());
            }
            let range =
                t.range::<&[u8]>((as_slice_bound(&lower), as_slice_bound(&upper))).map_err(|e| map_err(e.into()))?;
            let mut items = Vec::new();
            let mut last_key = Vec::new();
            let mut more = false;
            let iter: Box<dyn Iterator<Item = _>> = if forward { Box::new(range) } else { Box::new(range.rev()) };
            for entry in iter {
                let (k, v) = entry.map_err(|e| map_err(e.into()))?;
                if items.len() == limit {
                    more = true;
                    break;
                }
                let item = if is_index {
                    match t.get(v.value()).map_err(|e| map_err(e.into()))? {
                        Some(g) => stored(g.value()),
                        None => return Err(StoreError::Internal("index entry without item".into())),
                    }
                } else {
                    stored(v.value())
                };
                last_key = k.value().to_vec();
                items.push(item);
            }
            Ok(Page { items, cursor: more.then(|| encode_cursor(&last_key)) })
        })
    }

    async fn batch_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let feed = self.feed;
        let ops = ops
            .into_iter()
            .map(|op| match op {
                WriteOp::Put { table, item } => TxOp::put(table, item, Cond::Always),
                WriteOp::Delete { table, key } => TxOp::delete(table, key, Cond::Always),
            })
            .map(Prepared::of)
            .collect::<Result<Vec<_>, _>>()?;
        self.write(move |txn| {
            let mut open = Open::new(txn);
            for op in &ops {
                let old = read_raw(&mut open, &op.key)?;
                apply(&mut open, op, old.as_ref(), feed)?;
            }
            Ok(())
        })
        .await
    }

    /// Every item of `table`, in key order. The rows of its partitions lie between other
    /// tables' rows, so the scan skips from partition to partition: a seek per partition of any
    /// table, not a read of every row.
    async fn scan(&self, table: &'static TableDef, limit: usize, cursor: Option<String>) -> Result<Page, StoreError> {
        let want = tag(table, None)?;
        let mut from = match cursor {
            Some(c) => Bound::Excluded(B64.decode(c).map_err(|_| StoreError::BadCursor)?),
            None => Bound::Unbounded,
        };
        let limit = limit.max(1);
        self.blocking(move |txn| {
            let t = txn.open_table(Raw::new(ROWS)).map_err(|e| map_err(e.into()))?;
            let mut items = Vec::new();
            let mut last_key = Vec::new();
            'seek: loop {
                let range =
                    t.range::<&[u8]>((as_slice_bound(&from), Bound::Unbounded)).map_err(|e| map_err(e.into()))?;
                for entry in range {
                    let (k, v) = entry.map_err(|e| map_err(e.into()))?;
                    let k = k.value();
                    let pk_len = partition_len(k).ok_or_else(|| StoreError::Internal("corrupt row key".into()))?;
                    if k[pk_len] != want {
                        // Past this partition's rows of the table, or not yet at them.
                        from = Bound::Included(if k[pk_len] < want {
                            [&k[..pk_len], &[want]].concat()
                        } else {
                            successor_of_prefix(&k[..pk_len])
                        });
                        continue 'seek;
                    }
                    if items.len() == limit {
                        return Ok(Page { items, cursor: Some(encode_cursor(&last_key)) });
                    }
                    last_key = k.to_vec();
                    items.push(decode_item(v.value())?);
                }
                return Ok(Page { items, cursor: None });
            }
        })
        .await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StoreError> {
        self.write_ops(ops, false).await.map(drop)
    }
}

/// The length of the encoded string a row key starts with (its partition key), when the key
/// has a byte after it (the tag).
fn partition_len(key: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < key.len() {
        if key[i] == 0 {
            match key[i + 1] {
                0 => return (i + 2 < key.len()).then_some(i + 2),
                0xFF => i += 2,
                _ => return None,
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The smallest key greater than every key that starts with `k` (which ends in a 0x00 0x00
/// terminator or 8 number bytes).
fn successor_of_prefix(k: &[u8]) -> Vec<u8> {
    let mut out = k.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xFF {
            out.push(last + 1);
            return out;
        }
    }
    vec![0xFF; k.len() + 1]
}

fn as_slice_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(v) => Bound::Included(v.as_slice()),
        Bound::Excluded(v) => Bound::Excluded(v.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// redb panics on an inverted range; an empty one is a valid, empty query.
fn bounds_empty(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Excluded(u)) | (Bound::Excluded(l), Bound::Included(u)) => {
            l >= u
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn encoding_preserves_order() {
        let strs = ["", "\0", "\0\0", "a", "a\0", "a\0b", "ab", "abc", "b", "é"];
        let enc = |s: &str| {
            let mut v = Vec::new();
            enc_s_into(&mut v, s);
            v
        };
        for a in strs {
            for b in strs {
                assert_eq!(a.cmp(b), enc(a).cmp(&enc(b)), "{a:?} vs {b:?}");
            }
        }
        let nums = [i64::MIN, -5, -1, 0, 1, 7, 256, i64::MAX];
        for a in nums {
            for b in nums {
                assert_eq!(a.cmp(&b), enc_n(a).cmp(&enc_n(b)));
            }
        }
    }

    /// Each table and index has a tag of its own, so no two share a row key.
    #[test]
    fn every_table_and_index_has_its_own_tag() {
        let mut tags = Vec::new();
        for table in ALL_TABLES {
            assert!(table.indexes.len() < 4, "{}: a tag leaves room for three indexes", table.name);
            tags.push(tag(table, None).unwrap());
            tags.extend(table.indexes.iter().map(|i| tag(table, Some(i.name)).unwrap()));
        }
        let n = tags.len();
        tags.sort();
        tags.dedup();
        assert_eq!(tags.len(), n);
    }

    /// A file of the layout before the shared rows table (a redb table per schema table, index
    /// and TTL attribute, keys without a tag) opens with every item, index entry and expiry.
    #[tokio::test]
    async fn a_file_of_the_older_layout_is_upgraded_when_opened() {
        use crate::schema::{CONVERSATIONS, CONVERSATIONS_BY_ACTIVITY, SYNC, USERS};
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        let legacy_key = |parts: &[KeyVal]| {
            let mut k = Vec::new();
            parts.iter().for_each(|p| enc_into(&mut k, p));
            k
        };
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let put = |table: &str, key: Vec<u8>, v: serde_json::Value| {
                let mut t = txn.open_table(def(table)).unwrap();
                t.insert(key.as_slice(), serde_json::to_vec(&v).unwrap().as_slice()).unwrap();
            };
            put("users", legacy_key(&["u".into()]), json!({"user_id": "u", "name": "Ann"}));
            let conv = legacy_key(&["u".into(), "c".into()]);
            put("conversations", conv.clone(), json!({"user_id": "u", "conversation_id": "c", "updated_at": 5}));
            let mut by_activity = legacy_key(&["u".into(), 5.into()]);
            by_activity.extend_from_slice(&conv);
            put("conversations#by_activity", by_activity, json!(null));
            let entry = legacy_key(&["u".into(), 1.into()]);
            put("sync", entry.clone(), json!({"user_id": "u", "sync_seq": 1, "expires_at": 10}));
            put("sync#ttl", [enc_n(10).as_slice(), &entry].concat(), json!(null));
            txn.commit().unwrap();
        }
        let t = RedbTables::open(&path).unwrap();
        assert_eq!(t.get(&USERS, &Key::pk("u")).await.unwrap().unwrap().into_item().unwrap()["name"], "Ann");
        let page = t.query(Query::new(&CONVERSATIONS, "u").index(CONVERSATIONS_BY_ACTIVITY)).await.unwrap();
        assert_eq!(page.items.len(), 1, "the index is rebuilt");
        assert_eq!(t.sweep_expired(100).await.unwrap(), 1, "expiry is rebuilt");
        assert_eq!(t.get(&SYNC, &Key::pk_sk("u", 1)).await.unwrap(), None);
        drop(t);
        let db = Database::create(&path).unwrap();
        let names: Vec<String> =
            db.begin_read().unwrap().list_tables().unwrap().map(|t| t.name().to_string()).collect();
        assert!(!names.iter().any(|n| n == "users" || n == "conversations#by_activity"), "{names:?}");
    }

    /// What only this adapter can show of its feed (the ChangeFeed conformance suite has the
    /// rest): its records outlast a reopen until they are forgotten, and without a filter there
    /// are none.
    #[tokio::test]
    async fn the_change_feed_is_durable_until_forgotten_and_kept_only_with_a_filter() {
        use crate::schema::STORE;
        use serde_json::json;
        fn keep_store_puts(t: &TableDef, _old: Option<&Item>, new: Option<&Item>) -> Option<String> {
            (t.name == STORE.name).then(|| new.map(|n| n["seq"].to_string())).flatten()
        }
        let item = |v: serde_json::Value| v.as_object().unwrap().clone();
        let msg = |seq: i64| item(json!({"timeline_id": "c", "seq": seq, "text": "hi"}));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let t = RedbTables::open(&path).unwrap().with_change_feed(keep_store_puts);
        for seq in 1..=3 {
            t.put(&STORE, msg(seq), Cond::NotExists).await.unwrap();
        }
        t.forget_changes(vec![1, 2]).await.unwrap();
        drop(t);
        let t = RedbTables::open(&path).unwrap().with_change_feed(keep_store_puts);
        assert_eq!(t.changes(None, 10).await.unwrap(), vec![(3, "3".to_string())], "durable until forgotten");
        t.put(&STORE, msg(4), Cond::NotExists).await.unwrap();
        assert_eq!(t.changes(Some(3), 10).await.unwrap(), vec![(4, "4".to_string())], "positions go on after a reopen");
        // Without a filter nothing is recorded.
        let plain = RedbTables::open(&dir.path().join("plain.redb")).unwrap();
        plain.put(&STORE, msg(1), Cond::NotExists).await.unwrap();
        assert!(plain.changes(None, 10).await.unwrap().is_empty());
    }
}

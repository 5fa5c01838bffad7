//! The embedded Queue adapter: messages kept in a redb file, so a crash loses nothing that was
//! sent. Each message is one row keyed by (queue, id); a second table orders the rows of each
//! queue by the time they become visible, so a receive reads only what is due.

use super::*;
use im_storage::{IoFailure, RedbFile};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// (queue, id) → message.
const MESSAGES: TableDefinition<(&str, u128), &[u8]> = TableDefinition::new("messages");
/// (queue, visible_at_ms, id) → ().
const VISIBLE: TableDefinition<(&str, u64, u128), ()> = TableDefinition::new("visible");

/// Receives that a crash interrupted and that are given back to a message, at most.
const MAX_CRASH_REFUNDS: u32 = 10;

#[derive(Serialize, Deserialize, Default)]
struct Stored {
    body: String,
    receive_count: u32,
    visible_at: u64,
    /// The token of the latest receive (0 before the first).
    token: u64,
    /// Received and neither acknowledged nor handed back with `retry_after`: a worker has it.
    #[serde(default)]
    leased: bool,
    /// How many receives `release_in_flight` gave back.
    #[serde(default)]
    crash_refunds: u32,
}

#[derive(Clone)]
pub struct EmbeddedQueue {
    db: Arc<RedbFile>,
    defs: Arc<HashMap<String, QueueDef>>,
    ids: Arc<Mutex<ulid::Generator>>,
    notify: Arc<Notify>,
}

fn now_ms() -> u64 {
    crate::time::now_ms().max(0) as u64
}

fn map_err(e: impl Into<redb::Error>) -> QueueError {
    match e.into() {
        redb::Error::Io(io) => QueueError::Unavailable(format!("embedded queue I/O: {io}")),
        redb::Error::PreviousIo => QueueError::Unavailable("embedded queue: an earlier I/O failure".into()),
        other => QueueError::Internal(format!("embedded queue: {other}")),
    }
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(MESSAGES)?;
    txn.open_table(VISIBLE)?;
    txn.commit()?;
    Ok(())
}

impl IoFailure for QueueError {
    fn is_io(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
    }
    fn unavailable(message: String) -> Self {
        QueueError::Unavailable(message)
    }
    fn internal(message: String) -> Self {
        QueueError::Internal(format!("embedded queue: {message}"))
    }
}

fn decode(bytes: &[u8]) -> Result<Stored, QueueError> {
    serde_json::from_slice(bytes).map_err(|e| QueueError::Internal(format!("corrupt queue row: {e}")))
}

fn put(txn: &WriteTransaction, queue: &str, id: u128, m: &Stored) -> Result<(), QueueError> {
    let bytes = serde_json::to_vec(m).map_err(|e| QueueError::Internal(e.to_string()))?;
    txn.open_table(MESSAGES).map_err(map_err)?.insert((queue, id), bytes.as_slice()).map_err(map_err)?;
    txn.open_table(VISIBLE).map_err(map_err)?.insert((queue, m.visible_at, id), ()).map_err(map_err)?;
    Ok(())
}

fn take(txn: &WriteTransaction, queue: &str, id: u128) -> Result<Option<Stored>, QueueError> {
    let old =
        txn.open_table(MESSAGES).map_err(map_err)?.remove((queue, id)).map_err(map_err)?.map(|g| decode(g.value()));
    let old = old.transpose()?;
    if let Some(m) = &old {
        txn.open_table(VISIBLE).map_err(map_err)?.remove((queue, m.visible_at, id)).map_err(map_err)?;
    }
    Ok(old)
}

fn receipt(id: u128, token: u64) -> String {
    format!("{id:032x}.{token}")
}

fn parse_receipt(r: &str) -> Option<(u128, u64)> {
    let (id, token) = r.split_once('.')?;
    Some((u128::from_str_radix(id, 16).ok()?, token.parse().ok()?))
}

impl EmbeddedQueue {
    pub fn open(path: &Path, defs: Vec<QueueDef>) -> Result<Self, QueueError> {
        Self::open_with_journal(path, defs, im_storage::journal::DEFAULT_RING)
    }

    /// As [`EmbeddedQueue::open`], with a write-ahead journal of `ring` bytes if the file is new
    /// (see `im_storage::journal`).
    pub fn open_with_journal(path: &Path, defs: Vec<QueueDef>, ring: u64) -> Result<Self, QueueError> {
        Ok(EmbeddedQueue {
            db: Arc::new(RedbFile::open_with_ring(path, create_tables, ring).map_err(map_err)?),
            defs: Arc::new(defs.into_iter().map(|d| (d.name.clone(), d)).collect()),
            ids: Arc::new(Mutex::new(ulid::Generator::new())),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Makes every received-but-unacknowledged message visible at once. Only for a process that
    /// is the queue's sole consumer, at start-up: whatever was in flight belonged to a process
    /// that is gone (a crash), so there is no point waiting out its visibility timeout.
    ///
    /// The receive the crash interrupted is given back: the job did not fail, the process died
    /// (the kill -9 loop dead-lettered index batches that were merely running at each kill).
    /// At most `MAX_CRASH_REFUNDS` times per message, so a job that itself crashes the process
    /// still reaches the DLQ, after that many more receives.
    pub async fn release_in_flight(&self) -> Result<usize, QueueError> {
        self.write(|txn| {
            let now = now_ms();
            let late: Vec<(String, u64, u128)> = {
                let vis = txn.open_table(VISIBLE).map_err(map_err)?;
                let mut out = Vec::new();
                for e in vis.iter().map_err(map_err)? {
                    let (k, _) = e.map_err(map_err)?;
                    let (q, at, id) = k.value();
                    if at > now {
                        out.push((q.to_string(), at, id));
                    }
                }
                out
            };
            for (q, _, id) in &late {
                if let Some(mut m) = take(txn, q, *id)? {
                    m.visible_at = now;
                    if m.leased && m.receive_count > 0 && m.crash_refunds < MAX_CRASH_REFUNDS {
                        m.receive_count -= 1;
                        m.crash_refunds += 1;
                    }
                    m.leased = false;
                    put(txn, q, *id, &m)?;
                }
            }
            Ok(late.len())
        })
        .await
    }

    /// Runs `f` on the message a receipt names, if the receipt is from its latest receive (an
    /// older receipt does nothing, as SQS's does not).
    async fn with_current_receipt(
        &self,
        queue: &str,
        receipt_handle: &str,
        f: impl Fn(&WriteTransaction, &str, u128) -> Result<(), QueueError> + Send + 'static,
    ) -> Result<(), QueueError> {
        self.def(queue)?;
        let Some((id, token)) = parse_receipt(receipt_handle) else {
            return Err(QueueError::Internal("malformed receipt".into()));
        };
        let queue = queue.to_string();
        self.write(move |txn| {
            let current = txn
                .open_table(MESSAGES)
                .map_err(map_err)?
                .get((queue.as_str(), id))
                .map_err(map_err)?
                .map(|g| decode(g.value()));
            match current.transpose()? {
                Some(m) if m.token == token => f(txn, &queue, id),
                _ => Ok(()),
            }
        })
        .await
    }

    fn def(&self, queue: &str) -> Result<&QueueDef, QueueError> {
        self.defs.get(queue).ok_or_else(|| QueueError::Internal(format!("unknown queue {queue}")))
    }

    fn next_id(&self) -> Result<u128, QueueError> {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.generate().map(u128::from).map_err(|e| QueueError::Internal(format!("id generator: {e}")))
    }

    /// A write, in a commit shared with the writes alongside it (see `im_storage::file`).
    async fn write<T: Send + 'static>(
        &self,
        f: impl Fn(&WriteTransaction) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.db.write(f).await
    }

    /// Whether any message of `queue` is due, from a read transaction: idle workers poll, and
    /// a write transaction per poll would cost a disk sync each time.
    async fn anything_due(&self, queue: &str) -> Result<bool, QueueError> {
        let db = self.db.clone();
        let queue = queue.to_string();
        tokio::task::spawn_blocking(move || {
            db.run(|txn| {
                let vis = txn.open_table(VISIBLE).map_err(map_err)?;
                let mut due =
                    vis.range((queue.as_str(), 0, 0)..=(queue.as_str(), now_ms(), u128::MAX)).map_err(map_err)?;
                Ok(due.next().is_some())
            })
        })
        .await
        .map_err(|e| QueueError::Internal(format!("blocking task failed: {e}")))?
    }

    /// One pass of a receive: takes what is due now, moving exhausted messages to the DLQ.
    async fn receive_now(&self, queue: &str, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        if !self.anything_due(queue).await? {
            return Ok(vec![]);
        }
        let def = self.def(queue)?.clone();
        let mut fresh_ids = Vec::new();
        for _ in 0..max {
            fresh_ids.push(self.next_id()?);
        }
        let out = self
            .write(move |txn| {
                let now = now_ms();
                let due: Vec<u128> = {
                    let vis = txn.open_table(VISIBLE).map_err(map_err)?;
                    let range =
                        vis.range((def.name.as_str(), 0, 0)..=(def.name.as_str(), now, u128::MAX)).map_err(map_err)?;
                    let mut ids = Vec::new();
                    for e in range {
                        ids.push(e.map_err(map_err)?.0.value().2);
                        if ids.len() >= max * 4 {
                            break;
                        }
                    }
                    ids
                };
                let mut out = Vec::new();
                let mut dead = 0usize;
                for id in due {
                    if out.len() >= max {
                        break;
                    }
                    let Some(mut m) = take(txn, &def.name, id)? else { continue };
                    if let (Some(dlq), true) = (&def.dead_letter, m.receive_count >= def.max_receives) {
                        // Received max_receives times and never acknowledged: a dead letter.
                        let moved = Stored { body: m.body, visible_at: now, ..Stored::default() };
                        put(txn, dlq, fresh_ids[dead.min(fresh_ids.len() - 1)], &moved)?;
                        dead += 1;
                        tracing::error!(queue = %def.name, dead_letter_queue = %dlq, receives = m.receive_count,
                            "message moved to the dead-letter queue after repeated failures; inspect it and redrive");
                        if dead >= fresh_ids.len() {
                            break;
                        }
                        continue;
                    }
                    m.receive_count += 1;
                    m.token += 1;
                    m.leased = true;
                    m.visible_at = now + visibility.as_millis() as u64;
                    put(txn, &def.name, id, &m)?;
                    out.push(Delivery {
                        id: format!("{id:032x}"),
                        receipt: receipt(id, m.token),
                        body: m.body,
                        receive_count: m.receive_count,
                    });
                }
                Ok(out)
            })
            .await?;
        Ok(out)
    }
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<(), QueueError> {
        self.def(queue)?;
        let queue = queue.to_string();
        let ids = bodies.iter().map(|_| self.next_id()).collect::<Result<Vec<_>, _>>()?;
        self.write(move |txn| {
            let now = now_ms();
            for (&id, body) in ids.iter().zip(&bodies) {
                put(txn, &queue, id, &Stored { body: body.clone(), visible_at: now, ..Stored::default() })?;
            }
            Ok(())
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let max = max.clamp(1, 10);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            let got = self.receive_now(queue, max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Woken by a send, or after a short poll for messages whose delay has passed.
            let nap = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn ack(&self, queue: &str, receipt_handle: &str) -> Result<(), QueueError> {
        self.with_current_receipt(queue, receipt_handle, |txn, queue, id| take(txn, queue, id).map(drop)).await
    }

    async fn retry_after(&self, queue: &str, receipt_handle: &str, delay: Duration) -> Result<(), QueueError> {
        self.with_current_receipt(queue, receipt_handle, move |txn, queue, id| {
            if let Some(mut m) = take(txn, queue, id)? {
                m.visible_at = now_ms() + delay.as_millis() as u64;
                m.leased = false;
                put(txn, queue, id, &m)?;
            }
            Ok(())
        })
        .await
    }

    async fn redrive(&self, queue: &str) -> Result<usize, QueueError> {
        let def = self.def(queue)?.clone();
        let Some(dlq) = def.dead_letter.clone() else {
            return Err(QueueError::Internal(format!("queue {queue} has no dead-letter queue")));
        };
        let n = self
            .write(move |txn| {
                let ids: Vec<u128> = {
                    let msgs = txn.open_table(MESSAGES).map_err(map_err)?;
                    let range = msgs.range((dlq.as_str(), 0)..=(dlq.as_str(), u128::MAX)).map_err(map_err)?;
                    range.map(|e| e.map(|(k, _)| k.value().1).map_err(map_err)).collect::<Result<_, _>>()?
                };
                let now = now_ms();
                for &id in &ids {
                    if let Some(m) = take(txn, &dlq, id)? {
                        put(txn, &def.name, id, &Stored { body: m.body, visible_at: now, ..Stored::default() })?;
                    }
                }
                Ok(ids.len())
            })
            .await?;
        tracing::info!(queue, moved = n, "redrove dead letters");
        self.notify.notify_waiters();
        Ok(n)
    }

    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        self.def(queue)?;
        let db = self.db.clone();
        let queue = queue.to_string();
        tokio::task::spawn_blocking(move || {
            db.run(|txn| {
                let vis = txn.open_table(VISIBLE).map_err(map_err)?;
                let now = now_ms();
                let mut d = Depth::default();
                let _ = vis.len();
                for e in vis.range((queue.as_str(), 0, 0)..=(queue.as_str(), u64::MAX, u128::MAX)).map_err(map_err)? {
                    let (k, _) = e.map_err(map_err)?;
                    let m = k.value();
                    // A received message is hidden until its visibility timeout; a never-received
                    // one (or one released by retry_after) is waiting.
                    let msgs = txn.open_table(MESSAGES).map_err(map_err)?;
                    let stored =
                        msgs.get((queue.as_str(), m.2)).map_err(map_err)?.map(|g| decode(g.value())).transpose()?;
                    match stored {
                        Some(s) if s.visible_at > now && s.receive_count > 0 => d.in_flight += 1,
                        Some(_) => d.waiting += 1,
                        None => {}
                    }
                }
                Ok(d)
            })
        })
        .await
        .map_err(|e| QueueError::Internal(format!("blocking task failed: {e}")))?
    }
}

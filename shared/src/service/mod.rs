//! The IM service, written once against the Tables and Queue ports. Every operation of the API
//! is a method here; the HTTP glue only parses, authenticates and serializes.
//!
//! How the guarantees are kept (see each module for details):
//! - Ordering: a conversation's `seq` and an inbox's `sync_seq` are assigned by a transaction
//!   that sets the counter from n to n+1 only if it still holds n, and writes the numbered item
//!   in the same transaction. So item n+1 can only commit after item n did. Readers read the
//!   counter first and then query up to it, so a number a reader has seen can never be followed
//!   by a late arrival below it. Counters live apart from the expiring inbox entries, so numbers
//!   are never reused.
//! - Exactly once: a send writes `(conversation, sender/client_msg_id)` with the message; an
//!   inbox entry is written with a delivery marker `(user, conversation/seq)` in one transaction,
//!   conditional on the marker being new. A single chat's message needs no marker: its send's
//!   transaction, the only one that appends it, stores it conditional on it being new.
//! - Nothing lost: a single chat's send appends to both inboxes in its own transaction. A group
//!   send writes an outbox row with the message; the fan-out deletes it when every inbox has
//!   the message, and a sweeper re-enqueues rows a crash left behind.

mod conversations;
pub mod fanout;
pub mod friends;
pub mod groups;
mod inbox;
pub mod messages;
pub mod ratelimit;
mod rows;
pub mod search;
pub mod users;
pub mod worker;

pub use fanout::FanoutJob;

use crate::error::{Error, Result};
use crate::notify::{NoNotifier, Notifier};
use crate::queue::Queue;
use crate::search::Search;
use crate::tables::{Item, StoreError, Stored, Tables};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

/// Limits and timings, each configurable by the server that builds the service.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long inbox entries are kept (`IM_SYNC_TTL_DAYS`).
    pub sync_ttl_secs: i64,
    /// How long delivery markers outlive their entries: at least the queue's longest retention,
    /// so a job redriven from a dead-letter queue days later is still deduplicated.
    pub marker_extra_secs: i64,
    pub max_group_members: i64,
    /// Members named at group creation (they are written in the creating transaction, three
    /// writes each, under DynamoDB's 100 writes a transaction).
    pub max_create_members: usize,
    /// Groups one user may belong to, and friends one user may have.
    pub max_groups_per_user: i64,
    pub max_friends_per_user: i64,
    pub max_text_chars: usize,
    /// Members handled by one fan-out job before it hands the rest to a new job.
    pub fanout_page: usize,
    /// Members per delivery transaction (at most 5 writes each, under the 100-write limit).
    pub fanout_batch: usize,
    /// An outbox row older than this is assumed to have lost its job and is re-enqueued.
    pub outbox_grace_ms: i64,
    /// Index sent messages and changed groups through the index queue (the local server on
    /// DynamoDB). Off where the tables' changes feed the indexer: DynamoDB streams on AWS, the
    /// embedded tables' change feed on the local server.
    pub index_jobs: bool,
    /// Messages a user may send a second, on average (0: no limit), and in a burst.
    pub send_rate_per_sec: f64,
    pub send_burst: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_ttl_secs: 7 * 24 * 3600,
            marker_extra_secs: 15 * 24 * 3600,
            max_group_members: 10_000,
            max_create_members: 30,
            max_groups_per_user: 500,
            max_friends_per_user: 3000,
            max_text_chars: 8000,
            fanout_page: 500,
            fanout_batch: 20,
            outbox_grace_ms: 30_000,
            index_jobs: true,
            send_rate_per_sec: 0.0,
            send_burst: 1,
        }
    }
}

pub struct Service {
    tables: Arc<dyn Tables>,
    queue: Arc<dyn Queue>,
    search: Arc<dyn Search>,
    notifier: Arc<dyn Notifier>,
    cfg: Config,
    send_limiter: ratelimit::SendLimiter,
}

impl Service {
    pub fn new(tables: Arc<dyn Tables>, queue: Arc<dyn Queue>, search: Arc<dyn Search>, cfg: Config) -> Self {
        let send_limiter = ratelimit::SendLimiter::new(cfg.send_rate_per_sec, cfg.send_burst);
        Service { tables, queue, search, notifier: Arc::new(NoNotifier), cfg, send_limiter }
    }

    /// Tells connected devices of every inbox entry this service commits (none by default).
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

// ---- helpers shared by the modules -------------------------------------------------------

pub(crate) fn to_item<T: Serialize>(v: &T) -> Item {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => unreachable!("rows serialize to JSON objects"),
    }
}

/// Decodes a row from an item or from what a read returned ([`Stored`]).
pub(crate) fn from_item<T: DeserializeOwned>(item: impl Into<Stored>) -> Result<T> {
    Ok(item.into().decode()?)
}

pub(crate) fn opt_from_item<T: DeserializeOwned>(item: Option<impl Into<Stored>>) -> Result<Option<T>> {
    item.map(from_item).transpose()
}

/// Checks a page size: `None` is the default, anything outside 1..=max is a client error.
pub fn page_limit(limit: Option<i64>, default: usize, max: usize) -> Result<usize> {
    match limit {
        None => Ok(default),
        Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
        Some(_) => Err(Error::invalid(format!("limit must be between 1 and {max}"))),
    }
}

/// Page sizes of API.md: (default, max).
pub mod limits {
    pub const LIST: (usize, usize) = (50, 200);
    pub const HISTORY: (usize, usize) = (30, 100);
    pub const SYNC: (usize, usize) = (100, 500);
    pub const SEARCH: (usize, usize) = (30, 100);
}

/// Checks an optional free-text field's length in characters.
pub(crate) fn check_len(field: &str, v: &Option<String>, max: usize) -> Result<()> {
    match v {
        Some(s) if crate::ids::char_len(s) > max => {
            Err(Error::invalid(format!("{field} must be at most {max} characters")))
        }
        _ => Ok(()),
    }
}

/// Retries of optimistic transactions: a conflict means another writer got there first, so the
/// caller re-reads and tries again after a short, jittered pause.
pub(crate) struct Backoff {
    attempt: u32,
    max: u32,
}

impl Backoff {
    pub fn new() -> Self {
        Backoff { attempt: 0, max: 60 }
    }

    /// Waits before the next attempt; fails once the attempts are used up.
    pub async fn wait(&mut self, what: &str) -> Result<()> {
        self.attempt += 1;
        if self.attempt > self.max {
            tracing::warn!(what, attempts = self.attempt, "giving up after repeated write conflicts");
            return Err(Error::Unavailable(format!("too much contention on {what}, retry later")));
        }
        let base = 1u64 << self.attempt.min(6);
        let jitter = (ulid::Ulid::generate().0 as u64) % (base + 1);
        tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
        Ok(())
    }
}

/// The index of the op that failed a transaction, if the error is a conflict.
pub(crate) fn conflict_at(e: &StoreError) -> Option<Option<usize>> {
    match e {
        StoreError::Conflict { index } => Some(*index),
        _ => None,
    }
}

//! Fan-out on write: putting a message (or a group event) into every recipient's inbox.
//!
//! A fan-out job is small and versioned: ids, never member lists. A job covers one page of a
//! group's members; if there are more, it enqueues the job for the rest before it delivers its
//! own page, so that pages are delivered side by side by as many workers as there are, and no
//! invocation has unbounded work. Every delivery is idempotent, so a redelivered job (queue
//! at-least-once, a worker killed mid-job) only fills in what is missing.
//!
//! The outbox row written with a message covers the moment before its first job is in the
//! queue: the sweeper re-enqueues rows older than the grace period, so a crash between the
//! store write and the queue send loses nothing. The last page deletes it when done; from the
//! first job on, the queue holds every page until it is delivered (retried, and dead-lettered
//! with an alarm if it keeps failing), so an earlier page still in progress then is not lost.

use super::inbox::Payload;
use super::rows::IndexJob;
use super::rows::{MemberRow, OUTBOX_SHARDS, OutboxRow};
use super::*;
use crate::ids::ConvKind;
use crate::model::{EntryKind, Message};
use crate::queue::names::FANOUT;
use crate::schema::{GROUP_RELATIONS, OUTBOX};
use crate::tables::{Cond, Query, Update};
use serde::Deserialize;
use serde_json::Value;

/// Re-enqueues of one unfinished fan-out, at most. A job lost before it reached the queue is
/// back after the first; one still unfinished after this many is failing, and is in (or on its
/// way to) the dead-letter queue: re-enqueueing it forever would only fill the DLQ with copies.
/// Its outbox row stays, so the fan-out redriven from the DLQ deletes it when it completes.
const MAX_SWEEPS: u32 = 5;

/// A group event delivered through the queue (e.g. `group_updated`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventJob {
    pub id: String,
    pub kind: EntryKind,
    pub body: Value,
}

/// The fan-out job's wire format (version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FanoutJob {
    pub v: u32,
    pub conversation_id: String,
    /// The message to deliver, by its place in the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<EventJob>,
    /// Where in the member list this job starts (a cursor of the member query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl FanoutJob {
    pub fn message(conversation_id: &str, seq: i64) -> Self {
        FanoutJob { v: 1, conversation_id: conversation_id.to_string(), seq: Some(seq), event: None, after: None }
    }

    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("jobs serialize")
    }
}

impl Service {
    /// Hands on what is left of a stored message's work (see `enqueue_message_jobs`), after a
    /// send that wrote an outbox row and for a retried send whose row is still there. A failure
    /// is not the client's, since the message is stored: the row stays, and the sweeper does
    /// it again (each step is idempotent).
    pub(crate) async fn hand_on_jobs(&self, m: &Message) {
        if let Err(e) = self.enqueue_message_jobs(&m.conversation_id, m.seq).await {
            tracing::warn!(conversation_id = %m.conversation_id, seq = m.seq, error = %e,
                "could not hand on the message's jobs; the outbox sweeper will retry");
        }
    }

    /// What is left of the work of the message at `seq`, for a send and for the sweeper alike:
    /// its index job first; then for a group the fan-out job, whose last page deletes the
    /// outbox row. A single chat's send delivered the message itself, so its row, which stood
    /// for the index job alone, goes at once.
    async fn enqueue_message_jobs(&self, conversation_id: &str, seq: i64) -> Result<()> {
        self.enqueue_index(&[IndexJob::message(conversation_id, seq)]).await?;
        match Self::conv_kind(conversation_id)? {
            ConvKind::Single => {
                self.tables.delete(&OUTBOX, &OutboxRow::key_of(conversation_id, seq), Cond::Always).await?;
            }
            ConvKind::Group => {
                let job = FanoutJob::message(conversation_id, seq);
                self.queue.send_batch(FANOUT, vec![job.to_body()]).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn outbox_pending(&self, m: &Message) -> Result<bool> {
        Ok(self.tables.get(&OUTBOX, &OutboxRow::key_of(&m.conversation_id, m.seq)).await?.is_some())
    }

    /// Enqueues a group event for every member (best effort: the change it reports is
    /// already committed and visible in the group itself).
    pub(crate) async fn enqueue_group_event(&self, group_id: &str, kind: EntryKind, body: Value) {
        let job = FanoutJob {
            v: 1,
            conversation_id: group_id.to_string(),
            seq: None,
            event: Some(EventJob { id: ulid::Ulid::generate().to_string(), kind, body }),
            after: None,
        };
        if let Err(e) = self.queue.send_batch(FANOUT, vec![job.to_body()]).await {
            tracing::warn!(group_id, ?kind, error = %e, "could not enqueue a group event");
        }
    }

    /// Handles one fan-out job body: the queue worker's (and the Lambda's) entry point.
    pub async fn handle_fanout(&self, body: &str) -> Result<()> {
        let job: FanoutJob =
            serde_json::from_str(body).map_err(|e| Error::Internal(format!("malformed fan-out job: {e}")))?;
        if job.v != 1 {
            return Err(Error::Internal(format!("fan-out job version {} is not supported", job.v)));
        }
        self.handle_fanout_job(&job).await
    }

    async fn handle_fanout_job(&self, job: &FanoutJob) -> Result<()> {
        if Self::conv_kind(&job.conversation_id)? == ConvKind::Single {
            // A single chat's message was delivered by its send's transaction, with the store
            // write, and nothing queues a fan-out job for it (`enqueue_message_jobs`); one queued
            // by an earlier version finds it delivered, and only removes its outbox row. (Only
            // groups' events go through the queue.)
            let seq = job.seq.ok_or_else(|| Error::Internal("fan-out of an event to a single chat".into()))?;
            self.tables.delete(&OUTBOX, &OutboxRow::key_of(&job.conversation_id, seq), Cond::Always).await?;
            return Ok(());
        }
        let group = job.conversation_id.as_str();
        let payload = match (&job.seq, &job.event) {
            (Some(seq), None) => match self.message_at(&job.conversation_id, *seq).await? {
                Some(m) => Payload::Message(m),
                None => {
                    return Err(Error::Internal(format!("fan-out of a missing message {}/{seq}", job.conversation_id)));
                }
            },
            (None, Some(ev)) => Payload::Event {
                id: ev.id.clone(),
                kind: group_event_kind(ev.kind)?,
                conversation_id: Some(job.conversation_id.clone()),
                body: ev.body.clone(),
            },
            _ => return Err(Error::Internal("fan-out job needs exactly one of seq and event".into())),
        };
        let page = self
            .tables
            .query(Query::new(&GROUP_RELATIONS, group).limit(self.cfg.fanout_page).cursor(job.after.clone()))
            .await?;
        let members: Vec<MemberRow> = page.items.into_iter().map(from_item).collect::<Result<_>>()?;
        // Members who joined after the message was sent see it in history, not in their inbox.
        let targets: Vec<String> =
            members.into_iter().filter(|m| job.seq.is_none_or(|s| m.joined_seq < s)).map(|m| m.user_id).collect();
        let last_page = page.cursor.is_none();
        if let Some(after) = page.cursor {
            let next = FanoutJob { after: Some(after), ..job.clone() };
            self.queue.send_batch(FANOUT, vec![next.to_body()]).await?;
        }
        self.deliver_to(&targets, &payload, Some(group)).await?;
        if let (true, Payload::Message(m)) = (last_page, &payload) {
            self.tables.delete(&OUTBOX, &OutboxRow::key_of(&m.conversation_id, m.seq), Cond::Always).await?;
        }
        Ok(())
    }

    /// Re-enqueues fan-outs whose outbox row is older than the grace period (their job was
    /// lost, or is very late: a duplicate job is harmless), with their index jobs. Returns how
    /// many.
    pub async fn sweep_outbox(&self) -> Result<usize> {
        let now = crate::time::now_ms();
        let mut n = 0;
        for shard in 0..OUTBOX_SHARDS {
            let mut cursor = None;
            loop {
                let page =
                    self.tables.query(Query::new(&OUTBOX, format!("p{shard}")).limit(200).cursor(cursor)).await?;
                for item in page.items {
                    let row: OutboxRow = from_item(item)?;
                    if row.enqueued_at > now - self.cfg.outbox_grace_ms || row.sweeps > MAX_SWEEPS {
                        continue;
                    }
                    let key = OutboxRow::key_of(&row.conversation_id, row.seq);
                    if row.sweeps == MAX_SWEEPS {
                        tracing::error!(conversation_id = %row.conversation_id, seq = row.seq, sweeps = row.sweeps,
                            "a fan-out is still unfinished after repeated re-enqueues; its job keeps failing and \
                             is in the dead-letter queue: fix the cause, then run `im-server redrive`");
                        // Once: the row is marked so later sweeps pass over it quietly.
                        let mark = Update::new().add("sweeps", 1);
                        match self.tables.update(&OUTBOX, &key, mark, Cond::Exists).await {
                            Ok(_) => {}
                            Err(e) if e.is_conflict() => {}
                            Err(e) => return Err(e.into()),
                        }
                        continue;
                    }
                    tracing::info!(conversation_id = %row.conversation_id, seq = row.seq, "re-enqueueing an unfinished fan-out");
                    self.enqueue_message_jobs(&row.conversation_id, row.seq).await?;
                    // Exists: the fan-out may have finished meanwhile; then there is nothing to touch.
                    let update = Update::new().set("enqueued_at", now).add("sweeps", 1);
                    match self.tables.update(&OUTBOX, &key, update, Cond::Exists).await {
                        Ok(_) => {}
                        Err(e) if e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                    n += 1;
                }
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(n)
    }
}

/// Group events that may travel through the queue.
fn group_event_kind(kind: EntryKind) -> Result<EntryKind> {
    match kind {
        EntryKind::GroupUpdated => Ok(kind),
        other => Err(Error::Internal(format!("{other:?} is not a group event of the queue"))),
    }
}

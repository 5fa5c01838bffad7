//! Inboxes (the sync table): appending entries in order and exactly once, and reading them.
//!
//! An append for user u is three writes in one transaction:
//! 1. the delivery marker `(u, id of what is delivered)`, conditional on not existing — so a
//!    retried delivery fails here and is known to be done (a single chat's message has none:
//!    see [`Payload::delivery_id`]);
//! 2. u's inbox counter from n to n+1, conditional on it still being n — so entries commit in
//!    number order, and a concurrent append retries with n+1;
//! 3. the entry `(u, n+1)`.
//!
//! A message delivery adds the conversation summary (read marker, unread count, last message),
//! conditional on its version. Many users' appends share one transaction (up to the batch size);
//! a conflict re-reads and retries what is left.
//!
//! What that costs on DynamoDB, per recipient: four transaction items (8 write units) and two
//! consistent reads (counter and summary). The marker is what makes a retry harmless and the
//! counter what keeps entries dense and ordered; dropping either for a cheaper single-item
//! write would open a window in which a crash duplicates or loses an entry.

use super::rows::SummaryRow;
use super::*;
use crate::ids::{ConvKind, parse_conversation_id};
use crate::model::{EntryKind, Message, SyncEntry, SyncPage};
use crate::notify::Notice;
use crate::schema::{CONVERSATIONS, DELIVERIES, GROUP_RELATIONS, INBOXES, SYNC};
use crate::tables::{Cond, Key, KeyVal, Query, TxOp, Update};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::ops::Bound;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InboxRow {
    pub user_id: String,
    pub last_sync_seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EntryRow {
    pub user_id: String,
    pub sync_seq: i64,
    pub kind: EntryKind,
    pub conversation_id: Option<String>,
    pub message: Option<Message>,
    pub event: Option<Value>,
    /// Epoch seconds, the TTL attribute.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MarkerRow {
    user_id: String,
    delivery_id: String,
    expires_at: i64,
}

/// What goes into inboxes.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Message(Message),
    Event { id: String, kind: EntryKind, conversation_id: Option<String>, body: Value },
}

impl Payload {
    pub fn event(kind: EntryKind, conversation_id: Option<String>, body: Value) -> Self {
        Payload::Event { id: ulid::Ulid::generate().to_string(), kind, conversation_id, body }
    }

    /// The news of this payload's entry in `user`'s inbox, appended after `counter` as read.
    pub(crate) fn notice(&self, user: &str, counter: Option<&InboxRow>) -> Notice {
        let conversation_id = match self {
            Payload::Message(m) => Some(m.conversation_id.clone()),
            Payload::Event { conversation_id, .. } => conversation_id.clone(),
        };
        Notice { user_id: user.to_string(), sync_seq: counter.map_or(0, |c| c.last_sync_seq) + 1, conversation_id }
    }

    /// Names what is delivered, for the delivery marker that makes a redelivery harmless.
    ///
    /// A single chat's message has none. It is appended to both inboxes only by the transaction
    /// of its send (`messages.rs`), which also stores it, conditional on the message being new:
    /// that store row is its marker, so a retried send cannot append it twice, and there is no
    /// later delivery to repeat. Two fewer rows per message (four with their TTL rows locally),
    /// and four fewer write units on DynamoDB.
    fn delivery_id(&self) -> Option<String> {
        match self {
            Payload::Message(m) if parse_conversation_id(&m.conversation_id) == Ok(ConvKind::Single) => None,
            Payload::Message(m) => Some(format!("m/{}/{}", m.conversation_id, m.seq)),
            Payload::Event { id, .. } => Some(format!("e/{id}")),
        }
    }
}

/// The keys of `users`' inbox counters.
fn counter_keys(users: &[String]) -> Vec<Key> {
    users.iter().map(|u| Key::pk(u.as_str())).collect()
}

impl Service {
    fn now_secs() -> i64 {
        crate::time::now_ms() / 1000
    }

    /// The writes that append `payload` to `user`'s inbox, given its counter as read: the
    /// marker (if the payload has one), the counter and the entry.
    pub(crate) fn entry_ops(&self, user: &str, counter: Option<&InboxRow>, payload: &Payload) -> Vec<TxOp> {
        let now = Self::now_secs();
        let n = counter.map_or(0, |c| c.last_sync_seq);
        let marker = payload.delivery_id().map(|delivery_id| {
            let row = MarkerRow {
                user_id: user.to_string(),
                delivery_id,
                expires_at: now + self.cfg.sync_ttl_secs + self.cfg.marker_extra_secs,
            };
            TxOp::put(&DELIVERIES, to_item(&row), Cond::NotExists)
        });
        let counter_cond = match counter {
            Some(_) => Cond::equals("last_sync_seq", n),
            None => Cond::NotExists,
        };
        let entry = match payload {
            Payload::Message(m) => EntryRow {
                user_id: user.to_string(),
                sync_seq: n + 1,
                kind: EntryKind::Message,
                conversation_id: Some(m.conversation_id.clone()),
                message: Some(m.clone()),
                event: None,
                expires_at: now + self.cfg.sync_ttl_secs,
            },
            Payload::Event { kind, conversation_id, body, .. } => EntryRow {
                user_id: user.to_string(),
                sync_seq: n + 1,
                kind: *kind,
                conversation_id: conversation_id.clone(),
                message: None,
                event: Some(body.clone()),
                expires_at: now + self.cfg.sync_ttl_secs,
            },
        };
        marker
            .into_iter()
            .chain([
                TxOp::update(&INBOXES, Key::pk(user), Update::new().set("last_sync_seq", n + 1), counter_cond),
                TxOp::put(&SYNC, to_item(&entry), Cond::NotExists),
            ])
            .collect()
    }

    pub(crate) async fn inbox_counters(&self, users: &[String]) -> Result<Vec<Option<InboxRow>>> {
        let rows = self.tables.get_many(&INBOXES, &counter_keys(users)).await?;
        rows.into_iter().map(opt_from_item).collect()
    }

    /// Each user's inbox counter and summary of `conversation_id`: what appending a message
    /// to their inboxes is computed from, in one batch read (one request on DynamoDB, one read
    /// transaction locally) rather than one per table.
    pub(crate) async fn inbox_state(
        &self,
        users: &[String],
        conversation_id: &str,
    ) -> Result<(Vec<Option<InboxRow>>, Vec<Option<SummaryRow>>)> {
        let counters = counter_keys(users).into_iter().map(|k| (&INBOXES, k));
        let summaries = SummaryRow::keys(users, conversation_id).into_iter().map(|k| (&CONVERSATIONS, k));
        let keys: Vec<_> = counters.chain(summaries).collect();
        let mut rows = self.tables.get_batch(&keys).await?;
        let summaries = rows.split_off(users.len()).into_iter().map(opt_from_item).collect::<Result<_>>()?;
        let counters = rows.into_iter().map(opt_from_item).collect::<Result<_>>()?;
        Ok((counters, summaries))
    }

    /// Appends `payload` to each user's inbox exactly once (a user who already has it is
    /// skipped), updating conversation summaries for messages. Safe to call again after any
    /// failure: what is done stays done, and what is missing is filled in.
    ///
    /// With `members_of`, only users who are members of that group when their entry commits get
    /// it, so someone who leaves during a fan-out neither gets the message nor has the group
    /// reappear in their conversations. For a message that condition costs nothing extra: a
    /// group summary exists exactly while its user is a member (joining writes both, leaving
    /// deletes both, in one transaction), and the summary's write is already conditional on the
    /// version read. An event has no summary, so it checks the member row.
    pub(crate) async fn deliver_to(&self, users: &[String], payload: &Payload, members_of: Option<&str>) -> Result<()> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = users.iter().filter(|u| seen.insert(u.as_str())).cloned().collect();
        let mut batch = self.cfg.fanout_batch.max(1);
        let mut backoff = Backoff::new();
        let Some(delivery_id) = payload.delivery_id() else {
            return Err(Error::Internal("a single chat's message is delivered by its send, not again".into()));
        };
        // Almost every delivery is a first one, so the markers are not read up front: a user who
        // already has it fails the marker's condition, and from then on they are read.
        let mut read_markers = false;
        // The group whose member rows an event checks (see above).
        let member_check = match (members_of, payload) {
            (Some(group), Payload::Event { .. }) => Some(group),
            _ => None,
        };
        while !pending.is_empty() {
            if read_markers {
                let keys: Vec<Key> = pending.iter().map(|u| Key::pk_sk(u.as_str(), delivery_id.as_str())).collect();
                let markers = self.tables.get_many(&DELIVERIES, &keys).await?;
                pending = pending.into_iter().zip(markers).filter(|(_, m)| m.is_none()).map(|(u, _)| u).collect();
            }
            if let Some(group) = member_check {
                let keys: Vec<Key> = pending.iter().map(|u| Key::pk_sk(group, u.as_str())).collect();
                let rows = self.tables.get_many(&GROUP_RELATIONS, &keys).await?;
                pending = pending.into_iter().zip(rows).filter(|(_, m)| m.is_some()).map(|(u, _)| u).collect();
            }
            let mut summaries = match payload {
                Payload::Message(m) => self.summaries_of(&pending, &m.conversation_id).await?,
                Payload::Event { .. } => vec![None; pending.len()],
            };
            if members_of.is_some() && matches!(payload, Payload::Message(_)) {
                // No summary: not a member (see above).
                (pending, summaries) = pending.into_iter().zip(summaries).filter(|(_, s)| s.is_some()).unzip();
            }
            if pending.is_empty() {
                break;
            }
            let counters = self.inbox_counters(&pending).await?;
            let groups = self.append_ops(&pending, &counters, summaries, payload, member_check).await?;
            // The chunks touch distinct inboxes, so they go at once: on the embedded backend
            // they share one commit, on DynamoDB their round trips overlap.
            let outcomes = futures_util::future::join_all(groups.chunks(batch).map(|chunk| async move {
                let ops: Vec<TxOp> = chunk.iter().flat_map(|(_, ops)| ops.iter().cloned()).collect();
                (chunk, self.tables.transact(ops).await)
            }))
            .await;
            let mut done = HashSet::new();
            let mut conflicted = false;
            let mut failed = None;
            for (chunk, outcome) in outcomes {
                match outcome {
                    Ok(()) => done.extend(chunk.iter().map(|(u, _)| u.clone())),
                    Err(e) if e.is_conflict() => conflicted = true,
                    Err(e) => failed = Some(e),
                }
            }
            // What committed is news, even if another chunk failed.
            self.notify_appended(&pending, &counters, &done, payload).await;
            if let Some(e) = failed {
                return Err(e.into());
            }
            pending.retain(|u| !done.contains(u));
            if conflicted {
                // Either a user already had it (a retried delivery: the markers will say so) or
                // another writer touched one of these inboxes (smaller batches contend less).
                if !read_markers {
                    read_markers = true;
                    continue;
                }
                batch = (batch / 2).max(1);
                backoff.wait("inbox delivery").await?;
            }
        }
        Ok(())
    }

    /// The writes that append `payload` to each user's inbox, given their counters and (for a
    /// message) conversation summaries as read, by user; with `member_check`, each also checks
    /// that its user is still a member of that group.
    pub(crate) async fn append_ops(
        &self,
        users: &[String],
        counters: &[Option<InboxRow>],
        summaries: Vec<Option<SummaryRow>>,
        payload: &Payload,
        member_check: Option<&str>,
    ) -> Result<Vec<(String, Vec<TxOp>)>> {
        let mut groups = Vec::with_capacity(users.len());
        for ((user, counter), summary) in users.iter().zip(counters).zip(summaries) {
            let mut ops = self.entry_ops(user, counter.as_ref(), payload);
            if let Payload::Message(m) = payload {
                let (row, cond) = self.summary_after_delivery(user, summary, m).await?;
                ops.push(SummaryRow::write_op(row, cond));
            }
            if let Some(group) = member_check {
                ops.push(TxOp::check(&GROUP_RELATIONS, Key::pk_sk(group, user.as_str()), Cond::Exists));
            }
            groups.push((user.clone(), ops));
        }
        Ok(groups)
    }

    /// Tells the connected devices of each user in `done` of the entry just appended, numbered
    /// one past the counter read for it.
    pub(crate) async fn notify_appended(
        &self,
        users: &[String],
        counters: &[Option<InboxRow>],
        done: &HashSet<String>,
        payload: &Payload,
    ) {
        let notices: Vec<Notice> = users
            .iter()
            .zip(counters)
            .filter(|(u, _)| done.contains(*u))
            .map(|(u, c)| payload.notice(u, c.as_ref()))
            .collect();
        if !notices.is_empty() {
            self.notifier.notify(notices).await;
        }
    }

    /// `GET /v1/sync`: the caller's inbox after a checkpoint.
    pub async fn sync(&self, caller: &str, after: Option<i64>, limit: Option<i64>) -> Result<SyncPage> {
        let limit = page_limit(limit, limits::SYNC.0, limits::SYNC.1)?;
        let after = after.unwrap_or(0);
        if after < 0 {
            return Err(Error::invalid("after must be a non-negative sync_seq"));
        }
        // The counter first: every entry up to it has committed (see the module comment).
        let mark = self.inbox_counters(&[caller.to_string()]).await?.remove(0).map_or(0, |c| c.last_sync_seq);
        if after >= mark {
            // A checkpoint from the future (e.g. from another deployment) cannot be continued.
            let reset = after > mark;
            return Ok(SyncPage {
                items: vec![],
                next_after: if reset { mark } else { after },
                has_more: false,
                reset,
            });
        }
        let page = self
            .tables
            .query(
                Query::new(&SYNC, caller)
                    .range(Bound::Excluded(KeyVal::N(after)), Bound::Included(KeyVal::N(mark)))
                    .limit(limit),
            )
            .await?;
        let now = Self::now_secs();
        let rows: Vec<EntryRow> = page.items.into_iter().map(from_item).collect::<Result<_>>()?;
        let last_seen = rows.last().map_or(mark, |r| r.sync_seq);
        // Numbers are dense (one per append), so a missing after+1 means it expired.
        let live: Vec<EntryRow> = rows.into_iter().filter(|r| r.expires_at > now).collect();
        let reset = live.first().is_none_or(|r| r.sync_seq != after + 1);
        let has_more = page.cursor.is_some();
        let items = live
            .into_iter()
            .map(|r| SyncEntry {
                sync_seq: r.sync_seq,
                kind: r.kind,
                conversation_id: r.conversation_id,
                message: r.message,
                event: r.event,
            })
            .collect();
        Ok(SyncPage { items, next_after: last_seen, has_more, reset })
    }

    /// Checks the shape of a conversation id, as a client error.
    pub(crate) fn conv_kind(conversation_id: &str) -> Result<ConvKind> {
        parse_conversation_id(conversation_id)
    }
}

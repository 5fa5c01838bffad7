//! Per-user conversation summaries: read marker, unread count, last message.
//!
//! `unread` is kept exact without rescanning a conversation on every read. A summary remembers
//! `counted`: every message with `seq <= counted` has been accounted for. Then
//! `unread` = messages others sent with `read_seq < seq <= counted`.
//! - A delivery of `seq > counted` counts what lies between (normally nothing: deliveries
//!   arrive in order) and itself, then sets `counted = seq`. A delivery of `seq <= counted`
//!   (a group fan-out that overtook another) was already counted.
//! - Mark-read to `r` sets `read_seq = max(read_seq, r)`; if that passes `counted`, nothing is
//!   unread; otherwise it recounts `(r, counted]` from the store: the messages the user chose to
//!   leave unread.
//!
//! Own messages never count, and `read_seq` never moves backwards.

use super::rows::SummaryRow;
use super::*;
use crate::ids::ConvKind;
use crate::model::{ConversationSummary, List, Message};
use crate::schema::{CONVERSATIONS, CONVERSATIONS_BY_ACTIVITY, META, STORE};
use crate::tables::{Cond, Key, KeyVal, Query, TxOp};
use serde::Deserialize;
use std::collections::HashMap;
use std::ops::Bound;

impl SummaryRow {
    /// The keys of `users`' summaries of `conversation_id`.
    pub(crate) fn keys(users: &[String], conversation_id: &str) -> Vec<Key> {
        users.iter().map(|u| Key::pk_sk(u.as_str(), conversation_id)).collect()
    }

    pub fn new(user: &str, conversation_id: &str, peer: Option<String>, seen_up_to: i64, now: i64) -> Self {
        SummaryRow {
            user_id: user.to_string(),
            conversation_id: conversation_id.to_string(),
            kind: if peer.is_some() { ConvKind::Single } else { ConvKind::Group },
            peer,
            read_seq: seen_up_to,
            counted: seen_up_to,
            unread: 0,
            last_message: None,
            updated_at: now,
            version: 0,
        }
    }

    /// The write of a summary that was read at `prev_version` (`None`: it did not exist).
    ///
    /// A new summary's version is the time it is made, not 1: a group member who leaves and
    /// rejoins gets a new summary, and a fan-out that read the old one must not find the same
    /// version on the new one (its write would carry the old membership's marks over).
    pub fn write_op(mut row: SummaryRow, prev_version: Option<i64>) -> TxOp {
        let cond = match prev_version {
            Some(v) => Cond::equals("version", v),
            None => Cond::NotExists,
        };
        row.version = match prev_version {
            Some(v) => v + 1,
            None => crate::time::now_ms(),
        };
        TxOp::put(&CONVERSATIONS, to_item(&row), cond)
    }
}

impl Service {
    pub(crate) async fn summaries_of(
        &self,
        users: &[String],
        conversation_id: &str,
    ) -> Result<Vec<Option<SummaryRow>>> {
        let keys = SummaryRow::keys(users, conversation_id);
        self.tables.get_many(&CONVERSATIONS, &keys).await?.into_iter().map(opt_from_item).collect()
    }

    /// Messages from others with `lo < seq <= hi` in the store.
    async fn count_from_others(&self, user: &str, conversation_id: &str, lo: i64, hi: i64) -> Result<i64> {
        let mut n = 0;
        let mut cursor = None;
        loop {
            let page = self
                .tables
                .query(
                    Query::new(&STORE, conversation_id)
                        .range(Bound::Excluded(KeyVal::N(lo)), Bound::Included(KeyVal::N(hi)))
                        .limit(500)
                        .cursor(cursor),
                )
                .await?;
            // Only the sender of each message is decoded.
            #[derive(Deserialize)]
            struct Sent {
                sender: String,
            }
            for item in page.items {
                if from_item::<Sent>(item)?.sender != user {
                    n += 1;
                }
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// The summary after `m` reaches `user`'s inbox, and the version it was read at.
    pub(crate) async fn summary_after_delivery(
        &self,
        user: &str,
        current: Option<SummaryRow>,
        m: &Message,
    ) -> Result<(SummaryRow, Option<i64>)> {
        let prev = current.as_ref().map(|s| s.version);
        let mut row = match current {
            Some(s) => s,
            None => {
                // Summaries are made when a friendship or membership starts; one can be missing
                // only if that step was cut short. Start it just before this message.
                let peer = match Self::conv_kind(&m.conversation_id)? {
                    ConvKind::Single => self.peer_of(&m.conversation_id, user).await?,
                    ConvKind::Group => None,
                };
                SummaryRow::new(user, &m.conversation_id, peer, m.seq - 1, m.send_time)
            }
        };
        if m.seq > row.counted {
            let between = if m.seq > row.counted + 1 {
                self.count_from_others(user, &m.conversation_id, row.counted, m.seq - 1).await?
            } else {
                0
            };
            row.unread += between + i64::from(m.sender != user);
            row.counted = m.seq;
        }
        if row.last_message.as_ref().is_none_or(|l| l.seq < m.seq) {
            row.updated_at = row.updated_at.max(m.send_time);
            row.last_message = Some(m.clone());
        }
        Ok((row, prev))
    }

    /// `GET /v1/conversations`: most recent activity first.
    pub async fn list_conversations(
        &self,
        caller: &str,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<ConversationSummary>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        let page = self
            .tables
            .query(
                Query::new(&CONVERSATIONS, caller)
                    .index(CONVERSATIONS_BY_ACTIVITY)
                    .backward()
                    .limit(limit)
                    .cursor(cursor),
            )
            .await?;
        let rows: Vec<SummaryRow> = page.items.into_iter().map(from_item).collect::<Result<_>>()?;
        let titles = self.titles(&rows).await?;
        let items = rows.into_iter().map(|r| Self::summary_view(r, &titles)).collect();
        Ok(List { items, next_cursor: page.cursor })
    }

    /// Current names: a single chat is titled by the friend's name, a group by its own.
    async fn titles(&self, rows: &[SummaryRow]) -> Result<HashMap<String, String>> {
        let peers: Vec<String> = rows.iter().filter_map(|r| r.peer.clone()).collect();
        let mut titles = self.names_of(&peers).await?;
        let groups: Vec<Key> =
            rows.iter().filter(|r| r.peer.is_none()).map(|r| Key::pk(r.conversation_id.as_str())).collect();
        #[derive(Deserialize)]
        struct Named {
            timeline_id: String,
            name: Option<String>,
        }
        for item in self.tables.get_many(&META, &groups).await?.into_iter().flatten() {
            if let Named { timeline_id, name: Some(name) } = from_item(item)? {
                titles.insert(timeline_id, name);
            }
        }
        Ok(titles)
    }

    fn summary_view(r: SummaryRow, titles: &HashMap<String, String>) -> ConversationSummary {
        let title_key = r.peer.as_ref().unwrap_or(&r.conversation_id);
        ConversationSummary {
            title: titles.get(title_key).cloned().unwrap_or_else(|| title_key.clone()),
            conversation_id: r.conversation_id,
            kind: r.kind,
            peer: r.peer,
            unread: r.unread,
            read_seq: r.read_seq,
            last_message: r.last_message,
            updated_at: r.updated_at,
        }
    }

    /// `POST /v1/conversations/{id}/read`: marks read up to `seq` (default: the latest).
    pub async fn mark_read(
        &self,
        caller: &str,
        conversation_id: &str,
        seq: Option<i64>,
    ) -> Result<ConversationSummary> {
        let meta = self.require_reader(caller, conversation_id).await?;
        let target = match seq {
            None => meta.last_seq,
            Some(s) if s < 0 => return Err(Error::invalid("seq must not be negative")),
            Some(s) if s > meta.last_seq => {
                return Err(Error::invalid(format!(
                    "seq {s} is beyond the conversation's last message ({})",
                    meta.last_seq
                )));
            }
            Some(s) => s,
        };
        let mut backoff = Backoff::new();
        loop {
            let current = self.summaries_of(&[caller.to_string()], conversation_id).await?.remove(0);
            let prev = current.as_ref().map(|s| s.version);
            let mut row = match current {
                Some(s) => s,
                None => {
                    let peer = self.peer_of(conversation_id, caller).await?;
                    SummaryRow::new(caller, conversation_id, peer, 0, crate::time::now_ms())
                }
            };
            let new_read = row.read_seq.max(target);
            if prev.is_some() && new_read == row.read_seq {
                return self.summary_with_title(row).await; // nothing to change
            }
            row.read_seq = new_read;
            if new_read >= row.counted {
                row.counted = new_read;
                row.unread = 0;
            } else {
                row.unread = self.count_from_others(caller, conversation_id, new_read, row.counted).await?;
            }
            match self.tables.transact(vec![SummaryRow::write_op(row.clone(), prev)]).await {
                Ok(()) => return self.summary_with_title(row).await,
                Err(e) if e.is_conflict() => backoff.wait("read marker").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn summary_with_title(&self, row: SummaryRow) -> Result<ConversationSummary> {
        let titles = self.titles(std::slice::from_ref(&row)).await?;
        Ok(Self::summary_view(row, &titles))
    }

    /// The summary rows that start a conversation for `users` (read up to `seen_up_to`), as
    /// writes conditional on them not existing; `None` where one already exists (a re-friend).
    pub(crate) async fn new_summary_ops(
        &self,
        entries: &[(String, Option<String>)],
        conversation_id: &str,
        seen_up_to: i64,
    ) -> Result<Vec<TxOp>> {
        let users: Vec<String> = entries.iter().map(|(u, _)| u.clone()).collect();
        let existing = self.summaries_of(&users, conversation_id).await?;
        let now = crate::time::now_ms();
        Ok(entries
            .iter()
            .zip(existing)
            .filter(|(_, e)| e.is_none())
            .map(|((user, peer), _)| {
                SummaryRow::write_op(SummaryRow::new(user, conversation_id, peer.clone(), seen_up_to, now), None)
            })
            .collect())
    }
}

//! Conversations' metadata, who may read and send, sending, and history.
//!
//! A send is one transaction: the conversation's counter from n to n+1 (conditional on n), the
//! message at n+1, its `client_msg_id` (conditional on being new: a retry finds it), and a
//! check that the sender is still a friend or member. A single chat's transaction also appends
//! the message to both inboxes, so it is delivered exactly when it is stored. A group's also
//! writes an outbox row (the fan-out still to do), and the fan-out goes through the queue.
//! Where search is fed by index jobs, a single chat's transaction writes the outbox row too:
//! it stays until the message's index job is in the queue.

use super::inbox::Payload;
use super::rows::{MetaRow, OutboxRow};
use super::*;
use crate::ids::{ConvKind, char_len};
use crate::model::{HistoryPage, Message, Sent};
use crate::schema::{GROUP_RELATIONS, META, SENDS, STORE, USER_RELATIONS};
use crate::tables::{Cond, Key, KeyVal, Query, TxOp, Update};
use serde::Deserialize;
use std::collections::HashSet;
use std::ops::Bound;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct SendInput {
    /// Chosen by the client, 1-64 characters: a retry with the same id returns the first result.
    #[schemars(length(min = 1, max = 64))]
    pub client_msg_id: String,
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["text"]))]
    pub kind: String,
    /// 1-8,000 characters (`IM_MAX_TEXT_CHARS`); longer is `413`.
    #[schemars(length(min = 1, max = 8000))]
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SendRow {
    timeline_id: String,
    send_key: String,
    seq: i64,
}

impl Service {
    pub(crate) async fn find_meta(&self, conversation_id: &str) -> Result<Option<MetaRow>> {
        opt_from_item(self.tables.get(&META, &Key::pk(conversation_id)).await?)
    }

    pub(crate) async fn require_meta(&self, conversation_id: &str) -> Result<MetaRow> {
        self.find_meta(conversation_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("conversation {conversation_id} not found")))
    }

    /// The other participant of a single chat (`None` for groups or strangers).
    pub(crate) async fn peer_of(&self, conversation_id: &str, user: &str) -> Result<Option<String>> {
        Ok(self.find_meta(conversation_id).await?.and_then(|m| m.participants.into_iter().find(|p| p != user)))
    }

    pub(crate) async fn is_member(&self, group_id: &str, user: &str) -> Result<bool> {
        Ok(self.tables.get(&GROUP_RELATIONS, &Key::pk_sk(group_id, user)).await?.is_some())
    }

    /// Participants of a single chat and current members of a group may read it.
    pub(crate) async fn require_reader(&self, caller: &str, conversation_id: &str) -> Result<MetaRow> {
        let kind = Self::conv_kind(conversation_id)?;
        let meta = self.require_meta(conversation_id).await?;
        let allowed = match kind {
            ConvKind::Single => meta.participants.iter().any(|p| p == caller),
            ConvKind::Group => self.is_member(conversation_id, caller).await?,
        };
        if !allowed {
            return Err(Error::denied("you are not in this conversation"));
        }
        Ok(meta)
    }

    /// Friends (single chat) and members (group) may send. Returns the meta row and a check,
    /// part of the send's transaction, that the sender is one when the message commits. A
    /// group's member is checked before too, as a reader; a single chat's friendship only by
    /// that check (op 3 of the send): it is not read first, as almost every send is a friend's,
    /// and the read cost each one a round trip.
    async fn require_sender(&self, caller: &str, conversation_id: &str) -> Result<(MetaRow, TxOp)> {
        let meta = self.require_reader(caller, conversation_id).await?;
        let guard = match Self::conv_kind(conversation_id)? {
            ConvKind::Single => {
                let peer = meta.participants.iter().find(|p| *p != caller).cloned().unwrap_or_default();
                TxOp::check(&USER_RELATIONS, Key::pk_sk(caller, peer.as_str()), Cond::Exists)
            }
            ConvKind::Group => TxOp::check(&GROUP_RELATIONS, Key::pk_sk(conversation_id, caller), Cond::Exists),
        };
        Ok((meta, guard))
    }

    /// `POST /v1/conversations/{id}/messages`.
    pub async fn send(&self, caller: &str, conversation_id: &str, input: SendInput) -> Result<Sent> {
        self.send_limiter.check(caller)?;
        let n = char_len(&input.client_msg_id);
        if n == 0 || n > 64 {
            return Err(Error::invalid("client_msg_id must be 1-64 characters"));
        }
        if input.kind != "text" {
            return Err(Error::invalid("type must be \"text\""));
        }
        if input.text.is_empty() {
            return Err(Error::invalid("text must not be empty"));
        }
        if char_len(&input.text) > self.cfg.max_text_chars {
            return Err(Error::TooLarge(format!("text is longer than {} characters", self.cfg.max_text_chars)));
        }
        let (mut meta, guard) = self.require_sender(caller, conversation_id).await?;
        // The send row is not read first: a retry fails the transaction's condition on it (op 2
        // below) and is answered from there. Almost every send is a first attempt, and the read
        // cost each one a lookup (a read unit on DynamoDB).
        let send_key = format!("{caller}/{}", input.client_msg_id);
        let kind = Self::conv_kind(conversation_id)?;
        let outbox = kind == ConvKind::Group || self.cfg.index_jobs;
        let mut backoff = Backoff::new();
        let (message, delivered) = loop {
            let n = meta.last_seq;
            let message = Message {
                conversation_id: conversation_id.to_string(),
                seq: n + 1,
                sender: caller.to_string(),
                client_msg_id: input.client_msg_id.clone(),
                kind: input.kind.clone(),
                text: input.text.clone(),
                send_time: crate::time::now_ms(),
            };
            let mut store_item = to_item(&message);
            store_item.insert("timeline_id".into(), conversation_id.into());
            let send_row = SendRow { timeline_id: conversation_id.into(), send_key: send_key.clone(), seq: n + 1 };
            let mut ops = vec![
                TxOp::update(
                    &META,
                    Key::pk(conversation_id),
                    Update::new().set("last_seq", n + 1),
                    Cond::equals("last_seq", n),
                ),
                TxOp::put(&STORE, store_item, Cond::NotExists),
                TxOp::put(&SENDS, to_item(&send_row), Cond::NotExists),
                guard.clone(),
            ];
            if outbox {
                ops.push(OutboxRow::for_message(&message).insert_op());
            }
            // A single chat's inbox appends, with what they were computed from.
            let delivered = match kind {
                ConvKind::Single => {
                    let payload = Payload::Message(message.clone());
                    let (counters, summaries) = self.inbox_state(&meta.participants, conversation_id).await?;
                    let appends = self.append_ops(&meta.participants, &counters, summaries, &payload, None).await?;
                    ops.extend(appends.into_iter().flat_map(|(_, ops)| ops));
                    Some((payload, counters))
                }
                ConvKind::Group => None,
            };
            match self.tables.transact(ops).await {
                Ok(()) => break (message, delivered),
                Err(e) => match conflict_at(&e) {
                    // A retry: an earlier attempt of this send stored the message.
                    Some(Some(2)) => {
                        let seq = self
                            .sent_seq(conversation_id, &send_key)
                            .await?
                            .ok_or_else(|| Error::Internal("send row vanished".into()))?;
                        return self.resend(conversation_id, seq).await;
                    }
                    Some(Some(3)) => {
                        return Err(Error::denied(match kind {
                            ConvKind::Single => "you can only message your friends",
                            ConvKind::Group => "you are no longer allowed to send here",
                        }));
                    }
                    // Another send took the number, or another message reached one of the
                    // inboxes: read both again.
                    Some(_) => {
                        backoff.wait("conversation sequence").await?;
                        meta = self.require_meta(conversation_id).await?;
                    }
                    None => return Err(e.into()),
                },
            }
        };
        tracing::debug!(conversation_id, seq = message.seq, sender = caller, "message stored");
        if let Some((payload, counters)) = delivered {
            let everyone: HashSet<String> = meta.participants.iter().cloned().collect();
            self.notify_appended(&meta.participants, &counters, &everyone, &payload).await;
        }
        // Every group send, and a single chat's where search is fed by index jobs.
        if outbox {
            self.hand_on_jobs(&message).await;
        }
        Ok(Sent { message, created: true })
    }

    async fn sent_seq(&self, conversation_id: &str, send_key: &str) -> Result<Option<i64>> {
        let row: Option<SendRow> =
            opt_from_item(self.tables.get(&SENDS, &Key::pk_sk(conversation_id, send_key)).await?)?;
        Ok(row.map(|r| r.seq))
    }

    /// A client retry: the first attempt's message, with its fan-out finished or restarted
    /// (the first attempt may have stopped between storing and fanning out).
    async fn resend(&self, conversation_id: &str, seq: i64) -> Result<Sent> {
        let message = self
            .message_at(conversation_id, seq)
            .await?
            .ok_or_else(|| Error::Internal("sent message missing".into()))?;
        if self.outbox_pending(&message).await? {
            self.hand_on_jobs(&message).await;
        }
        Ok(Sent { message, created: false })
    }

    pub(crate) async fn message_at(&self, conversation_id: &str, seq: i64) -> Result<Option<Message>> {
        opt_from_item(self.tables.get(&STORE, &Key::pk_sk(conversation_id, seq)).await?)
    }

    /// `GET /v1/conversations/{id}/messages`: newest first, before `before`.
    pub async fn history(
        &self,
        caller: &str,
        conversation_id: &str,
        before: Option<i64>,
        limit: Option<i64>,
    ) -> Result<HistoryPage> {
        let limit = page_limit(limit, limits::HISTORY.0, limits::HISTORY.1)?;
        if before.is_some_and(|b| b < 1) {
            return Err(Error::invalid("before must be a positive seq"));
        }
        // The counter first: every message up to it has committed.
        let meta = self.require_reader(caller, conversation_id).await?;
        let upper = before.map_or(meta.last_seq, |b| (b - 1).min(meta.last_seq));
        if upper < 1 {
            return Ok(HistoryPage { items: vec![], next_before: None });
        }
        let page = self
            .tables
            .query(
                Query::new(&STORE, conversation_id)
                    .range(Bound::Included(KeyVal::N(1)), Bound::Included(KeyVal::N(upper)))
                    .backward()
                    .limit(limit),
            )
            .await?;
        let items: Vec<Message> = page.items.into_iter().map(from_item).collect::<Result<_>>()?;
        let next_before = match (page.cursor, items.last()) {
            (Some(_), Some(last)) => Some(last.seq),
            _ => None,
        };
        Ok(HistoryPage { items, next_before })
    }
}

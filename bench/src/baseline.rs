//! The baselines: the rows a scenario writes and reads, straight into redb, with the same
//! durability (one fsync per commit) and no server, no HTTP, no JSON API around them. The
//! ratio of the server's time per operation to this one's is the figure to improve: it holds
//! still on a noisy machine where absolute times do not.
//!
//! An operation here is one transaction doing what the service does for it, reads included:
//! a send reads and bumps the conversation's counter, writes the message and its idempotency
//! row, and for every recipient reads and bumps the inbox counter, writes the inbox entry (and
//! for a group, the delivery marker), and rewrites the conversation summary and its
//! activity-index entry. Single chats' conversations are named `s-…` here, groups' `g…`.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde_json::{Value, json};
use std::path::Path;

type Bytes = &'static [u8];
const META: TableDefinition<&str, Bytes> = TableDefinition::new("meta");
const STORE: TableDefinition<(&str, i64), Bytes> = TableDefinition::new("store");
const SENDS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("sends");
const DELIVERIES: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("deliveries");
const INBOXES: TableDefinition<&str, Bytes> = TableDefinition::new("inboxes");
const SYNC: TableDefinition<(&str, i64), Bytes> = TableDefinition::new("sync");
const CONVERSATIONS: TableDefinition<(&str, &str), Bytes> = TableDefinition::new("conversations");
/// (user, updated_at, conversation) → (): the conversation list's order.
const BY_ACTIVITY: TableDefinition<(&str, i64, &str), ()> = TableDefinition::new("by_activity");
const USERS: TableDefinition<&str, Bytes> = TableDefinition::new("users");

pub struct Direct {
    db: Database,
}

fn e(x: impl std::fmt::Display) -> String {
    format!("baseline redb: {x}")
}

fn now_ms() -> i64 {
    im_shared::time::now_ms()
}

fn decode(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(e)
}

fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON")
}

impl Direct {
    pub fn open(path: &Path) -> Result<Self, String> {
        let db = Database::create(path).map_err(e)?;
        Ok(Direct { db })
    }

    /// One durable transaction.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTransaction) -> Result<T, String>) -> Result<T, String> {
        let mut txn = self.db.begin_write().map_err(e)?;
        txn.set_durability(Durability::Immediate).map_err(e)?;
        let out = f(&txn)?;
        txn.commit().map_err(e)?;
        Ok(out)
    }

    pub fn put_user(txn: &WriteTransaction, id: &str) -> Result<(), String> {
        let row = json!({"user_id": id, "name": format!("{id} name"), "created_at": now_ms()});
        txn.open_table(USERS).map_err(e)?.insert(id, encode(&row).as_slice()).map_err(e)?;
        Ok(())
    }

    /// A message sent by `sender` to `conversation`, delivered to every one of `recipients`.
    pub fn send_in(
        txn: &WriteTransaction,
        conversation: &str,
        sender: &str,
        client_msg_id: &str,
        text: &str,
        recipients: &[String],
    ) -> Result<i64, String> {
        let now = now_ms();
        let mut meta = txn.open_table(META).map_err(e)?;
        let mut row = match meta.get(conversation).map_err(e)? {
            Some(v) => decode(v.value())?,
            None => json!({"timeline_id": conversation, "type": "single", "last_seq": 0}),
        };
        let seq = row["last_seq"].as_i64().unwrap_or(0) + 1;
        row["last_seq"] = seq.into();
        meta.insert(conversation, encode(&row).as_slice()).map_err(e)?;
        let message = json!({"conversation_id": conversation, "seq": seq, "sender": sender,
            "client_msg_id": client_msg_id, "type": "text", "text": text, "send_time": now});
        let mut stored = message.clone();
        stored["timeline_id"] = conversation.into();
        txn.open_table(STORE).map_err(e)?.insert((conversation, seq), encode(&stored).as_slice()).map_err(e)?;
        let send_key = format!("{sender}/{client_msg_id}");
        let send_row = json!({"timeline_id": conversation, "send_key": send_key, "seq": seq});
        txn.open_table(SENDS)
            .map_err(e)?
            .insert((conversation, send_key.as_str()), encode(&send_row).as_slice())
            .map_err(e)?;

        let mut inboxes = txn.open_table(INBOXES).map_err(e)?;
        let mut markers = txn.open_table(DELIVERIES).map_err(e)?;
        let mut sync = txn.open_table(SYNC).map_err(e)?;
        let mut summaries = txn.open_table(CONVERSATIONS).map_err(e)?;
        let mut activity = txn.open_table(BY_ACTIVITY).map_err(e)?;
        let delivery = format!("m/{conversation}/{seq}");
        // A single chat's message needs no marker: its store row, written once, is one.
        let marked = !conversation.starts_with("s-");
        for user in recipients {
            let u = user.as_str();
            let n = match inboxes.get(u).map_err(e)? {
                Some(v) => decode(v.value())?["last_sync_seq"].as_i64().unwrap_or(0),
                None => 0,
            };
            inboxes.insert(u, encode(&json!({"user_id": u, "last_sync_seq": n + 1})).as_slice()).map_err(e)?;
            if marked {
                let marker = json!({"user_id": u, "delivery_id": delivery, "expires_at": now / 1000 + 8 * 86_400});
                markers.insert((u, delivery.as_str()), encode(&marker).as_slice()).map_err(e)?;
            }
            let entry = json!({"user_id": u, "sync_seq": n + 1, "kind": "message", "conversation_id": conversation,
                "message": message, "event": null, "expires_at": now / 1000 + 7 * 86_400});
            sync.insert((u, n + 1), encode(&entry).as_slice()).map_err(e)?;
            let mut summary = match summaries.get((u, conversation)).map_err(e)? {
                Some(v) => decode(v.value())?,
                None => json!({"user_id": u, "conversation_id": conversation, "unread": 0, "read_seq": 0,
                    "counted": 0, "version": 0, "updated_at": 0, "peer": sender}),
            };
            let old_at = summary["updated_at"].as_i64().unwrap_or(0);
            activity.remove((u, old_at, conversation)).map_err(e)?;
            summary["unread"] = (summary["unread"].as_i64().unwrap_or(0) + i64::from(u != sender)).into();
            summary["counted"] = seq.into();
            summary["version"] = (summary["version"].as_i64().unwrap_or(0) + 1).into();
            summary["updated_at"] = now.into();
            summary["last_message"] = message.clone();
            summaries.insert((u, conversation), encode(&summary).as_slice()).map_err(e)?;
            activity.insert((u, now, conversation), ()).map_err(e)?;
        }
        Ok(seq)
    }

    pub fn send(
        &self,
        conversation: &str,
        sender: &str,
        client_msg_id: &str,
        text: &str,
        recipients: &[String],
    ) -> Result<i64, String> {
        self.write(|txn| Self::send_in(txn, conversation, sender, client_msg_id, text, recipients))
    }

    /// The first `limit` inbox entries after `after`.
    pub fn sync_page(&self, user: &str, after: i64, limit: usize) -> Result<Vec<Value>, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let sync = txn.open_table(SYNC).map_err(e)?;
        let mut out = Vec::with_capacity(limit);
        for entry in sync.range((user, after + 1)..=(user, i64::MAX)).map_err(e)?.take(limit) {
            out.push(decode(entry.map_err(e)?.1.value())?);
        }
        Ok(out)
    }

    /// The newest `limit` messages of a conversation, reading its counter first as the service does.
    pub fn history_page(&self, conversation: &str, limit: usize) -> Result<Vec<Value>, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let last = match txn.open_table(META).map_err(e)?.get(conversation).map_err(e)? {
            Some(v) => decode(v.value())?["last_seq"].as_i64().unwrap_or(0),
            None => return Err(format!("no conversation {conversation}")),
        };
        let store = txn.open_table(STORE).map_err(e)?;
        let mut out = Vec::with_capacity(limit);
        for entry in store.range((conversation, 1)..=(conversation, last)).map_err(e)?.rev().take(limit) {
            out.push(decode(entry.map_err(e)?.1.value())?);
        }
        Ok(out)
    }

    /// The `limit` most recently active conversations of `user`, with their peers' names.
    pub fn conversation_page(&self, user: &str, limit: usize) -> Result<Vec<Value>, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let activity = txn.open_table(BY_ACTIVITY).map_err(e)?;
        let summaries = txn.open_table(CONVERSATIONS).map_err(e)?;
        let users = txn.open_table(USERS).map_err(e)?;
        let mut out = Vec::with_capacity(limit);
        for entry in activity.range((user, i64::MIN, "")..=(user, i64::MAX, "\u{10FFFF}")).map_err(e)?.rev().take(limit)
        {
            let (key, _) = entry.map_err(e)?;
            let (_, _, conversation) = key.value();
            let mut summary = match summaries.get((user, conversation)).map_err(e)? {
                Some(v) => decode(v.value())?,
                None => return Err("an index entry without its summary".into()),
            };
            if let Some(peer) = summary["peer"].as_str().map(str::to_string)
                && let Some(v) = users.get(peer.as_str()).map_err(e)?
            {
                summary["title"] = decode(v.value())?["name"].clone();
            }
            out.push(summary);
        }
        Ok(out)
    }
}

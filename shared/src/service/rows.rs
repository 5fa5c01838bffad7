//! The rows and job bodies that several areas of the service read and write: a conversation's
//! meta row, a member's row, an outbox row, a user's summary of a conversation, and the index
//! job. Each area keeps its own rows (a friend request's, a send's) to itself; these live here so
//! that the areas share them without importing each other.

use super::*;
use crate::ids::ConvKind;
use crate::model::{JoinPolicy, Member, Message, Role};
use crate::schema::{META, OUTBOX, STORE};
use crate::tables::{Cond, Key, TxOp};
use serde::Deserialize;

/// A conversation's row in the meta table. Groups carry their profile; every conversation
/// carries `last_seq`, the counter its messages are numbered by.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetaRow {
    pub timeline_id: String,
    #[serde(rename = "type")]
    pub kind: ConvKind,
    #[serde(default)]
    pub last_seq: i64,
    #[serde(default)]
    pub participants: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub join_policy: Option<JoinPolicy>,
    #[serde(default)]
    pub member_count: i64,
    #[serde(default)]
    pub admins: Vec<String>,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub version: i64,
}

impl MetaRow {
    /// A conversation's row with nothing in it yet but its id and kind.
    pub fn new(timeline_id: String, kind: ConvKind) -> Self {
        MetaRow {
            timeline_id,
            kind,
            last_seq: 0,
            participants: Vec::new(),
            name: None,
            description: None,
            owner: None,
            join_policy: None,
            member_count: 0,
            admins: Vec::new(),
            created_at: 0,
            version: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MemberRow {
    pub group_id: String,
    pub user_id: String,
    pub role: Role,
    pub joined_at: i64,
    /// The group's last seq when the member joined: later messages reach their inbox.
    pub joined_seq: i64,
}

impl From<MemberRow> for Member {
    fn from(m: MemberRow) -> Self {
        Member { user_id: m.user_id, role: m.role, joined_at: m.joined_at }
    }
}

/// The outbox's partitions: rows spread over a few, so that the sweeper reads them a partition at
/// a time and no partition is hot.
pub(crate) const OUTBOX_SHARDS: u32 = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutboxRow {
    pub shard: String,
    pub job_id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub created_at: i64,
    pub enqueued_at: i64,
    /// How many times the sweeper re-enqueued it.
    #[serde(default)]
    pub sweeps: u32,
}

impl OutboxRow {
    pub fn key_of(conversation_id: &str, seq: i64) -> Key {
        // FNV-1a: a stable spread of conversations over the shards.
        let h = conversation_id.bytes().fold(0x811c9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x01000193));
        Key::pk_sk(format!("p{}", h % OUTBOX_SHARDS), format!("{conversation_id}/{seq:020}"))
    }

    pub fn for_message(m: &Message) -> Self {
        let key = Self::key_of(&m.conversation_id, m.seq);
        let (crate::tables::KeyVal::S(shard), Some(crate::tables::KeyVal::S(job_id))) = (key.pk, key.sk) else {
            unreachable!("outbox keys are strings")
        };
        OutboxRow {
            shard,
            job_id,
            conversation_id: m.conversation_id.clone(),
            seq: m.seq,
            created_at: m.send_time,
            enqueued_at: m.send_time,
            sweeps: 0,
        }
    }

    pub fn insert_op(&self) -> TxOp {
        TxOp::put(&OUTBOX, to_item(self), Cond::NotExists)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SummaryRow {
    pub user_id: String,
    pub conversation_id: String,
    #[serde(rename = "type")]
    pub kind: ConvKind,
    pub peer: Option<String>,
    pub read_seq: i64,
    pub counted: i64,
    pub unread: i64,
    pub last_message: Option<Message>,
    /// Sort key of the by_activity index.
    pub updated_at: i64,
    pub version: i64,
}

/// The index job's wire format (version 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum IndexJob {
    Message {
        v: u32,
        conversation_id: String,
        seq: i64,
        /// See [`IndexJob::created`].
        #[serde(default, skip_serializing_if = "is_false")]
        created: bool,
    },
    Group {
        v: u32,
        group_id: String,
        #[serde(default, skip_serializing_if = "is_false")]
        created: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}

impl IndexJob {
    pub fn message(conversation_id: &str, seq: i64) -> Self {
        IndexJob::Message { v: 1, conversation_id: conversation_id.into(), seq, created: false }
    }
    pub fn group(group_id: &str) -> Self {
        IndexJob::Group { v: 1, group_id: group_id.into(), created: false }
    }

    /// Whether the job is for the change that created its row (an older job, or one written
    /// before the flag existed, says no). Rows are created once (ids and seqs are never
    /// reused), so no other job for the same document comes before it.
    pub fn created(&self) -> bool {
        match self {
            IndexJob::Message { created, .. } | IndexJob::Group { created, .. } => *created,
        }
    }

    /// Stops the job claiming to be the first for its document: its record may have been read
    /// before (see `Service::run_change_feed`), after a failure or a restart.
    pub fn again(&mut self) {
        match self {
            IndexJob::Message { created, .. } | IndexJob::Group { created, .. } => *created = false,
        }
    }

    /// The job that a change to a row of `table` calls for, given the row's images before and
    /// after (on AWS the store and meta tables' streams feed the indexer this way, instead of
    /// index jobs): a new or changed message, or a group whose indexed fields changed. A meta
    /// row also changes with every message sent (its `last_seq`), and a single chat's meta row
    /// is never indexed, so those give `None`, as do deletions.
    pub fn for_change(table: &str, old: Option<&Item>, new: Option<&Item>) -> Option<IndexJob> {
        let new = new?;
        let text = |i: &Item, f: &str| i.get(f).and_then(|v| v.as_str()).map(String::from);
        let created = old.is_none();
        if table == STORE.name {
            let (conversation_id, seq) = (text(new, "timeline_id")?, new.get("seq")?.as_i64()?);
            return Some(IndexJob::Message { v: 1, conversation_id, seq, created });
        }
        if table != META.name || text(new, "type").as_deref() != Some(ConvKind::Group.as_str()) {
            return None;
        }
        let indexed = |i: &Item| (text(i, "name"), i.get("created_at").and_then(|v| v.as_i64()));
        match old {
            Some(old) if indexed(old) == indexed(new) => None,
            _ => Some(IndexJob::Group { v: 1, group_id: text(new, "timeline_id")?, created }),
        }
    }
}

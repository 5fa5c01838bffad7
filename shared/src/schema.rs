//! The design's tables, as data. This is the one source of truth for table names, keys, indexes
//! and TTL attributes: the adapters create their storage from it, the SAM template is checked
//! against it, and the service names tables only through these constants.
//!
//! The names follow Tablestore's Timeline model: a store table of every conversation's messages,
//! a sync table that is each user's inbox, a meta table, and relation tables.

/// The type of a key attribute, as DynamoDB declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    S,
    N,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyAttr {
    pub name: &'static str,
    pub ty: KeyType,
}

/// A global secondary index (projection: all attributes). Items without the index's key
/// attributes are not in it (a sparse index).
#[derive(Debug, PartialEq, Eq)]
pub struct IndexDef {
    pub name: &'static str,
    pub pk: KeyAttr,
    pub sk: Option<KeyAttr>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TableDef {
    /// The logical name; adapters may prefix it (e.g. with a stack name).
    pub name: &'static str,
    pub pk: KeyAttr,
    pub sk: Option<KeyAttr>,
    pub indexes: &'static [IndexDef],
    /// Attribute holding an expiry time in epoch seconds, as DynamoDB TTL reads it.
    pub ttl: Option<&'static str>,
    /// Publishes a change stream (new and old images): on AWS, the search indexer reads it.
    pub stream: bool,
    /// What the table is for (shown in docs and provisioning output).
    pub purpose: &'static str,
}

impl TableDef {
    pub fn index(&self, name: &str) -> Option<&IndexDef> {
        self.indexes.iter().find(|i| i.name == name)
    }
}

const fn s(name: &'static str) -> KeyAttr {
    KeyAttr { name, ty: KeyType::S }
}
const fn n(name: &'static str) -> KeyAttr {
    KeyAttr { name, ty: KeyType::N }
}

pub const USERS: TableDef = TableDef {
    name: "users",
    pk: s("user_id"),
    sk: None,
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "user profiles",
};

pub const STORE: TableDef = TableDef {
    name: "store",
    pk: s("timeline_id"),
    sk: Some(n("seq")),
    indexes: &[],
    ttl: None,
    stream: true,
    purpose: "the store library: every conversation's messages, by (timeline_id, seq), kept until deleted",
};

pub const SYNC: TableDef = TableDef {
    name: "sync",
    pk: s("user_id"),
    sk: Some(n("sync_seq")),
    indexes: &[],
    ttl: Some("expires_at"),
    stream: false,
    purpose: "the sync library: each user's inbox, by (user_id, sync_seq), filled by fan-out on write, expiring by TTL",
};

/// Per-user inbox state: the last `sync_seq` handed out. Kept apart from the inbox entries so
/// that it never expires with them, and numbers are never reused.
pub const INBOXES: TableDef = TableDef {
    name: "inboxes",
    pk: s("user_id"),
    sk: None,
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "per-user inbox counter (last sync_seq); never expires, so numbers are never reused",
};

pub const META: TableDef = TableDef {
    name: "meta",
    pk: s("timeline_id"),
    sk: None,
    indexes: &[],
    ttl: None,
    stream: true,
    purpose: "conversation and group metadata, and each conversation's last seq",
};

pub const USER_RELATIONS: TableDef = TableDef {
    name: "user_relations",
    pk: s("main_user"),
    sk: Some(s("sub_user")),
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "friendships, one row per direction, written and removed in one transaction",
};

pub const GROUP_RELATIONS_BY_USER: &str = "by_user";
pub const GROUP_RELATIONS: TableDef = TableDef {
    name: "group_relations",
    pk: s("group_id"),
    sk: Some(s("user_id")),
    indexes: &[IndexDef { name: GROUP_RELATIONS_BY_USER, pk: s("user_id"), sk: Some(s("group_id")) }],
    ttl: None,
    stream: false,
    purpose: "group membership with roles; the by_user index lists a user's groups",
};

pub const FRIEND_REQUESTS_OUTGOING: &str = "outgoing";
pub const FRIEND_REQUESTS: TableDef = TableDef {
    name: "friend_requests",
    pk: s("to_user"),
    sk: Some(s("from_user")),
    indexes: &[IndexDef { name: FRIEND_REQUESTS_OUTGOING, pk: s("from_user"), sk: Some(s("to_user")) }],
    ttl: None,
    stream: false,
    purpose: "pending friend requests by recipient; the outgoing index lists them by sender",
};

pub const JOIN_REQUESTS: TableDef = TableDef {
    name: "join_requests",
    pk: s("group_id"),
    sk: Some(s("user_id")),
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "pending requests to join approval groups",
};

pub const CONVERSATIONS_BY_ACTIVITY: &str = "by_activity";
pub const CONVERSATIONS: TableDef = TableDef {
    name: "conversations",
    pk: s("user_id"),
    sk: Some(s("conversation_id")),
    indexes: &[IndexDef { name: CONVERSATIONS_BY_ACTIVITY, pk: s("user_id"), sk: Some(n("updated_at")) }],
    ttl: None,
    stream: false,
    purpose: "per-user conversation summaries: read marker, unread count, last message",
};

/// Client idempotency: `(timeline_id, sender/client_msg_id) → seq`, written in the same
/// transaction as the message.
pub const SENDS: TableDef = TableDef {
    name: "sends",
    pk: s("timeline_id"),
    sk: Some(s("send_key")),
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "client_msg_id of every sent message, so a client retry returns the first result",
};

/// Delivery markers: `(user_id, conversation/seq)`, written in the same transaction as the inbox
/// entry, so a redelivered fan-out job never fills an inbox twice (group messages and events;
/// a single chat's message is delivered once, by its send's transaction). They outlive the entries by
/// the queue's longest retention, so a job redriven from a dead-letter queue is still deduplicated.
pub const DELIVERIES: TableDef = TableDef {
    name: "deliveries",
    pk: s("user_id"),
    sk: Some(s("delivery_id")),
    indexes: &[],
    ttl: Some("expires_at"),
    stream: false,
    purpose: "markers of what each inbox already holds, so fan-out retries never duplicate",
};

/// Fan-outs that are not finished: written with the message, deleted when every inbox has it.
/// A sweeper re-enqueues stale ones, so a crash between the store write and the queue send loses
/// nothing. Sharded partitions keep the sweeper's queries cheap without a hot key.
pub const OUTBOX: TableDef = TableDef {
    name: "outbox",
    pk: s("shard"),
    sk: Some(s("job_id")),
    indexes: &[],
    ttl: None,
    stream: false,
    purpose: "fan-outs in progress, re-enqueued by a sweeper if a crash lost their job",
};

/// Open WebSocket connections on AWS (API Gateway's connection ids), by user: where a user's
/// notices go. A row expires with API Gateway's longest connection (two hours), so one whose
/// `$disconnect` never ran is forgotten anyway; `$disconnect` finds its row by the index.
pub const CONNECTIONS_BY_ID: &str = "by_connection";
pub const CONNECTIONS: TableDef = TableDef {
    name: "connections",
    pk: s("user_id"),
    sk: Some(s("connection_id")),
    indexes: &[IndexDef { name: CONNECTIONS_BY_ID, pk: s("connection_id"), sk: None }],
    ttl: Some("expires_at"),
    stream: false,
    purpose: "open WebSocket connections (API Gateway) of each user, for live notices",
};

/// Every table, in a fixed order. The embedded file tags each row with its table's position
/// here, so a new table goes at the end and none is ever removed or moved.
pub const ALL_TABLES: &[&TableDef] = &[
    &USERS,
    &STORE,
    &SYNC,
    &INBOXES,
    &META,
    &USER_RELATIONS,
    &GROUP_RELATIONS,
    &FRIEND_REQUESTS,
    &JOIN_REQUESTS,
    &CONVERSATIONS,
    &SENDS,
    &DELIVERIES,
    &OUTBOX,
    &CONNECTIONS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique_and_indexes_resolve() {
        let mut names: Vec<_> = ALL_TABLES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL_TABLES.len());
        assert!(GROUP_RELATIONS.index(GROUP_RELATIONS_BY_USER).is_some());
        assert!(CONVERSATIONS.index(CONVERSATIONS_BY_ACTIVITY).is_some());
        assert!(FRIEND_REQUESTS.index(FRIEND_REQUESTS_OUTGOING).is_some());
        assert!(CONNECTIONS.index(CONNECTIONS_BY_ID).is_some());
    }
}

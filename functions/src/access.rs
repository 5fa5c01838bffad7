//! What each function may touch: the tables it reads and writes, the queues it sends to, and
//! whether it queries or feeds the search engine. The SAM template's IAM policy for each function
//! is made from this (least privilege), and a test runs every function on recording adapters to
//! prove that it touches exactly what is declared here.

use im_shared::queue::names::FANOUT;
use im_shared::schema::*;

/// How a function uses the search engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchUse {
    None,
    /// Queries (`es:ESHttpGet`, `es:ESHttpPost` on the indexes' `_search`).
    Query,
    /// Writes documents and creates the indexes (the indexer).
    Index,
}

#[derive(Debug, Clone, Copy)]
pub struct Access {
    /// Read: GetItem, BatchGetItem, Query (with the table's indexes), and the condition checks
    /// of transactions.
    pub reads: &'static [&'static TableDef],
    /// Written: PutItem, UpdateItem, DeleteItem, BatchWriteItem (alone or in a transaction).
    pub writes: &'static [&'static TableDef],
    /// Queues sent to.
    pub sends: &'static [&'static str],
    pub search: SearchUse,
}

const fn tables(reads: &'static [&'static TableDef], writes: &'static [&'static TableDef]) -> Access {
    Access { reads, writes, sends: &[], search: SearchUse::None }
}

impl Access {
    /// Whether the function appends to inboxes, and so tells the appended users' connections
    /// (the notifier): it reads their connections, forgets a gone one, and posts through the
    /// WebSocket API's Management API. Derived, so that no delivering function lacks it.
    pub fn notifies(&self) -> bool {
        self.writes.iter().any(|t| t.name == SYNC.name)
    }
}

/// The access of the function named `name` (a route's `lambda`, or a worker); `None` for a name
/// that is neither.
pub fn of(name: &str) -> Option<Access> {
    const NOTICE_R: &[&TableDef] = &[&INBOXES, &DELIVERIES, &GROUP_RELATIONS, &META];
    Some(match name {
        "health" | "openapi" => tables(&[], &[]),
        "put-me" => tables(&[&USERS], &[&USERS]),
        "get-me" | "get-user" => tables(&[&USERS], &[]),
        "send-friend-request" => tables(
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &CONVERSATIONS, &META],
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        "list-friend-requests" => tables(&[&FRIEND_REQUESTS], &[]),
        "accept-friend-request" => tables(
            &[&FRIEND_REQUESTS, &INBOXES, &CONVERSATIONS, &META],
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        "reject-friend-request" => tables(&[], &[&FRIEND_REQUESTS]),
        "list-friends" => tables(&[&USER_RELATIONS, &USERS], &[]),
        "remove-friend" => tables(&[&INBOXES], &[&USERS, &USER_RELATIONS, &INBOXES, &SYNC, &DELIVERIES]),
        "create-group" => tables(
            &[&USERS, &INBOXES, &DELIVERIES],
            &[&USERS, &META, &GROUP_RELATIONS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS],
        ),
        "get-group" => tables(&[&META], &[]),
        "update-group" => Access { sends: &[FANOUT], ..tables(&[&META, &GROUP_RELATIONS], &[&META]) },
        "join-group" => tables(
            &[&USERS, &META, &GROUP_RELATIONS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&USERS, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        "list-join-requests" => tables(&[&META, &GROUP_RELATIONS, &JOIN_REQUESTS], &[]),
        "accept-join-request" => tables(
            &[&META, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&USERS, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        "reject-join-request" => tables(&[&META, &GROUP_RELATIONS], &[&JOIN_REQUESTS]),
        "leave-group" | "remove-member" => {
            tables(NOTICE_R, &[&USERS, &GROUP_RELATIONS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META])
        }
        "set-role" => tables(&[&META, &GROUP_RELATIONS], &[&META, &GROUP_RELATIONS]),
        "list-members" | "my-groups" => tables(&[&META, &GROUP_RELATIONS], &[]),
        "send-message" => Access {
            sends: &[FANOUT],
            ..tables(
                &[&META, &USER_RELATIONS, &GROUP_RELATIONS, &SENDS, &STORE, &OUTBOX, &INBOXES, &CONVERSATIONS],
                &[&STORE, &SENDS, &OUTBOX, &INBOXES, &SYNC, &CONVERSATIONS, &META],
            )
        },
        "history" => tables(&[&META, &GROUP_RELATIONS, &STORE], &[]),
        "sync" => tables(&[&INBOXES, &SYNC], &[]),
        "list-conversations" => tables(&[&CONVERSATIONS, &META, &USERS], &[]),
        "mark-read" => tables(&[&CONVERSATIONS, &META, &GROUP_RELATIONS, &USERS], &[&CONVERSATIONS]),
        "search-messages" => Access { search: SearchUse::Query, ..tables(&[&CONVERSATIONS, &STORE], &[]) },
        "search-groups" => Access { search: SearchUse::Query, ..tables(&[&META], &[]) },
        "fanout-worker" => tables(
            &[&STORE, &GROUP_RELATIONS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &OUTBOX],
        ),
        "indexer" => Access { search: SearchUse::Index, ..tables(&[&STORE, &META], &[]) },
        "outbox-sweeper" => Access { sends: &[FANOUT], ..tables(&[&OUTBOX], &[&OUTBOX]) },
        "ws-connect" | "ws-disconnect" => tables(&[&CONNECTIONS], &[&CONNECTIONS]),
        "ws-default" => tables(&[], &[]),
        _ => return None,
    })
}

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;

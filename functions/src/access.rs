//! What a function may touch: the tables it reads and writes, the queues it sends to, and
//! whether it queries or feeds the search engine. Each function declares its own (an API
//! operation in its route table entry, the others in [`crate::function`]); the SAM template's
//! IAM policy for each function is made from it (least privilege), and a test runs every
//! function on recording adapters to prove that it touches exactly what it declares.

use im_shared::schema::{SYNC, TableDef};

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

pub const fn tables(reads: &'static [&'static TableDef], writes: &'static [&'static TableDef]) -> Access {
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

#[cfg(test)]
#[path = "access_tests.rs"]
mod tests;

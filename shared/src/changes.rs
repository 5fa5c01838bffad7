//! The ChangeFeed port: the changes to the tables the schema marks `stream` (the store and meta
//! tables), in commit order, each as the record a filter made of it when the change was written.
//! A consumer reads the oldest records, handles them, and only then forgets them, so a crash in
//! between hands them over again; a write that failed leaves no record. Its model is a table's
//! stream of changes: on AWS, Lambda reads the tables' streams itself and hands their records to
//! the indexer function, so there the service needs no adapter of this port.

use crate::tables::StoreError;
use async_trait::async_trait;

/// A record of the feed: its position (increasing in commit order) and its body.
pub type Change = (u64, String);

#[async_trait]
pub trait ChangeFeed: Send + Sync + 'static {
    /// The oldest records after position `after` (from the oldest if `None`), at most `limit`.
    async fn changes(&self, after: Option<u64>, limit: usize) -> Result<Vec<Change>, StoreError>;
    /// The newest record's position, if the feed holds any.
    async fn last_change(&self) -> Result<Option<u64>, StoreError>;
    /// Removes handled records, named by their positions; the others stay.
    async fn forget_changes(&self, positions: Vec<u64>) -> Result<(), StoreError>;
}

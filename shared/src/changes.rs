//! The ChangeFeed port: the changes to the tables the schema marks `stream` (the store and meta
//! tables), in commit order, each as the record its adapter's filter made of it when the change
//! was written. A consumer reads the oldest records, handles them, and only then forgets them,
//! so a crash in between hands them over again; a failed write leaves no record.
//!
//! It is to the local server what the tables' streams are on AWS, where Lambda itself reads the
//! streams and hands their records to the indexer function, so that side needs no adapter. The
//! embedded tables keep their feed in their own file, each record written in the same
//! transaction as its change ([`crate::tables::embedded`]).

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

//! The embedded storage layer under the local server's tables and queue: a redb database file
//! ([`file::RedbFile`]) whose commits are grouped (one commit thread takes every waiting write),
//! made durable by a write-ahead journal of its own ([`journal`]) instead of an fdatasync of
//! every page redb changed, and synced behind the next commit by a sync thread ([`sync`]).
//!
//! Its settings are parameters (the journal's size: [`file::RedbFile::open_with_ring`]); it
//! reads nothing from the environment. `docs/storage.md` describes it for readers.

pub mod file;
pub mod journal;
pub mod sync;

pub use file::{CommitStats, IoFailure, RedbFile};

//! The Search port: index messages and groups, and find them by phrase, newest first, paged.
//! OpenSearch is the model; the embedded adapter is tantivy. Both analyse text with
//! [`analyzer`], so they return the same hits.
//!
//! A query is matched as you type: its words as a phrase, the last word as a prefix of a word
//! ("sample arr" finds "the quartzite sample arrived", "rust" finds "Rustaceans"). Chinese,
//! Japanese and Korean characters are words of one character, so they match by substring as
//! before. The last word stands for at most [`MAX_PREFIX_EXPANSIONS`] indexed words, as in
//! OpenSearch's `match_phrase_prefix`: the first ones in term order of each tantivy segment, of
//! each OpenSearch shard, so past that many words with one start the two engines may differ.
//!
//! Hits are ordered by `(time desc, tiebreak desc)`, where `tiebreak` is a message's seq, then a
//! hash of the document id ([`tiebreak`]), so the order is total and a cursor (the last hit's
//! pair) continues exactly after it.
//! Membership filters are part of the query the engine runs (a terms filter on conversation
//! ids), so pages stay full however many conversations a user is in.

pub mod analyzer;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod opensearch;

use async_trait::async_trait;

/// A message as the index sees it: enough to find it and order it; the store has the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDoc {
    pub conversation_id: String,
    pub seq: i64,
    pub send_time: i64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDoc {
    pub group_id: String,
    pub name: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doc {
    Message(MessageDoc),
    Group(GroupDoc),
}

impl Doc {
    /// The document's id in its index: `conversation/seq` or the group id.
    pub fn id(&self) -> String {
        match self {
            Doc::Message(m) => message_id(&m.conversation_id, m.seq),
            Doc::Group(g) => g.group_id.clone(),
        }
    }
}

pub fn message_id(conversation_id: &str, seq: i64) -> String {
    format!("{conversation_id}/{seq}")
}

/// Orders hits with equal times (a non-negative long, as OpenSearch wants). A message's id ends
/// in its seq (`conversation/seq`), which takes the high bits: two messages of a conversation
/// sent within the same millisecond then come newest first, as the API promises. The low bits
/// (a group's whole tiebreak) are a stable hash of the id (FNV-1a), so the order is total and
/// a cursor continues exactly after its hit.
pub fn tiebreak(id: &str) -> i64 {
    let hash = id.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3)) >> 1;
    match id.rsplit_once('/').and_then(|(_, seq)| seq.parse::<u32>().ok()) {
        Some(seq) => (i64::from(seq.min(i32::MAX as u32)) << 32) | (hash & 0xffff_ffff) as i64,
        None => hash as i64,
    }
}

/// Where a page ends: the last hit's sort values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub time: i64,
    pub tiebreak: i64,
}

/// One hit: the document id (see [`Doc::id`]) and its sort values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub id: String,
    pub time: i64,
    pub tiebreak: i64,
}

impl Hit {
    pub fn after(&self) -> After {
        After { time: self.time, tiebreak: self.tiebreak }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hits {
    pub hits: Vec<Hit>,
    /// Set when more hits follow.
    pub next: Option<After>,
}

/// How many indexed words the last word of a query may stand for (the first ones in the term
/// dictionary that start with it): OpenSearch's `max_expansions`, at its default, and the same
/// bound for tantivy, so that a short last word costs a bounded amount on both.
pub const MAX_PREFIX_EXPANSIONS: u32 = 50;

/// A query over one of the indexes.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Words to find in this order, the last one as a prefix (see the module's docs).
    pub phrase: String,
    /// Only messages of these conversations (ignored for groups). Empty finds nothing.
    pub conversations: Vec<String>,
    pub limit: usize,
    pub after: Option<After>,
}

/// A document to stage, and whether it is new: no version of it was ever handed over (indexed
/// or staged), so there is none to replace, and an engine may skip looking for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedDoc {
    pub doc: Doc,
    pub new: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// What happened to each document of a bulk index call, in order: `None` when it is indexed,
/// or why it failed (the caller retries those).
pub type BulkOutcome = Vec<Option<String>>;

#[async_trait]
pub trait Search: Send + Sync + 'static {
    /// Indexes (or re-indexes: by id, idempotently) documents; searchable when this returns.
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError>;
    /// Hands documents over as `index` does, but they may be neither searchable nor durable
    /// until the next [`Search::commit`] (or `index`) returns: a caller that indexes a stream of
    /// documents commits less often than it stages, where a commit has a cost of its own.
    /// One caller stages at a time. By default this is `index`.
    async fn stage(&self, docs: Vec<StagedDoc>) -> Result<BulkOutcome, SearchError> {
        self.index(docs.into_iter().map(|d| d.doc).collect()).await
    }
    /// Makes every document staged so far searchable and durable. A failed commit may have
    /// lost any of them: the caller stages them again. By default there is nothing to do.
    async fn commit(&self) -> Result<(), SearchError> {
        Ok(())
    }
    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError>;
    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError>;
    /// Removes every document (before a rebuild).
    async fn clear(&self) -> Result<(), SearchError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_times_put_the_later_message_of_a_conversation_first() {
        for seq in [1, 2, 9, 10, 99, 100, 1_000_000] {
            let (earlier, later) = (tiebreak(&message_id("c_x", seq)), tiebreak(&message_id("c_x", seq + 1)));
            assert!(0 <= earlier && earlier < later, "seq {seq}: {earlier} then {later}");
        }
        assert_ne!(tiebreak("c_a/7"), tiebreak("c_b/7"), "same seq, other conversation");
        assert!(tiebreak("g_group") >= 0);
        assert!(tiebreak("c_x/99999999999") >= 0, "a seq past 32 bits stays non-negative");
    }
}

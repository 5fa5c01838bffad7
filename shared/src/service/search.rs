//! Search: indexing off the request path, and the two search operations.
//!
//! Indexing is fed by the changes to the store and meta tables ([`IndexJob::for_change`]): on
//! AWS by their DynamoDB streams, on the local server by the embedded tables' change feed,
//! written in the same transaction as the change ([`Service::run_change_feed`]). Where neither
//! exists (the local server on DynamoDB), index jobs go through the index queue
//! (`Config::index_jobs`): a sent message's job is enqueued after its commit, and its outbox
//! row stands for the job until then (the sweeper enqueues it again). A job's document is read
//! from the store or meta table when it runs, so the index always gets what is stored, and a
//! failed document is retried through the index queue, then dead-lettered.
//!
//! Querying: membership is decided at query time from the caller's conversation summaries
//! (which join and leave change in the same transaction as the membership), and handed to the
//! engine as a filter, so a member who left stops finding a group's messages at once.

pub use super::rows::IndexJob;
use super::rows::MetaRow;
use super::*;
use crate::ids::{ConvKind, char_len};
use crate::model::{Group, List, Message};
use crate::queue::names::INDEX;
use crate::schema::{CONVERSATIONS, META, STORE};
use crate::search::{After, Doc, GroupDoc, MessageDoc, SearchQuery};
use crate::tables::{Key, Query};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;

/// The index job a change to a row of `table` calls for, as the body of its change feed record:
/// the filter the local server's change feed is opened with.
pub fn index_job_of_change(table: &crate::schema::TableDef, old: Option<&Item>, new: Option<&Item>) -> Option<String> {
    IndexJob::for_change(table.name, old, new).map(|j| serde_json::to_string(&j).expect("jobs serialize"))
}

/// How an index call hands its documents to the engine ([`crate::search::Search`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Apply {
    /// Searchable and durable when the call returns: for jobs acknowledged right after.
    Commit,
    /// Left to the next `commit`: for the change feed, whose records are forgotten after it.
    /// A job [`IndexJob::created`] stages its document as new.
    Stage,
}

/// Index job bodies parsed, [`LOAD_CHUNK`] at a time with the worker yielded between (as in
/// [`Service::load_docs`]).
pub(crate) async fn parse_jobs(bodies: &[&str]) -> Vec<Result<IndexJob>> {
    let mut jobs = Vec::with_capacity(bodies.len());
    for (i, chunk) in bodies.chunks(LOAD_CHUNK).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        jobs.extend(chunk.iter().map(|b| match serde_json::from_str::<IndexJob>(b) {
            Ok(j @ (IndexJob::Message { v: 1, .. } | IndexJob::Group { v: 1, .. })) => Ok(j),
            Ok(_) => Err(Error::Internal("index job version is not supported".into())),
            Err(e) => Err(Error::Internal(format!("malformed index job: {e}"))),
        }));
    }
    jobs
}

/// Index jobs whose documents are read in one go (see [`Service::load_docs`]).
const LOAD_CHUNK: usize = 1000;

/// Longest search phrase, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

fn encode_cursor(a: After) -> String {
    B64.encode(format!("{}.{}", a.time, a.tiebreak))
}

fn decode_cursor(c: &str) -> Result<After> {
    let bad = || Error::invalid("cursor is not valid for this search");
    let text = String::from_utf8(B64.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (t, b) = text.split_once('.').ok_or_else(bad)?;
    Ok(After { time: t.parse().map_err(|_| bad())?, tiebreak: b.parse().map_err(|_| bad())? })
}

fn check_phrase(q: Option<String>) -> Result<String> {
    let q = q.unwrap_or_default();
    if q.trim().is_empty() {
        return Err(Error::invalid("q must not be empty"));
    }
    if char_len(&q) > MAX_QUERY_CHARS {
        return Err(Error::invalid(format!("q must be at most {MAX_QUERY_CHARS} characters")));
    }
    Ok(q)
}

impl Service {
    /// Enqueues index jobs (when this backend indexes through the queue).
    pub(crate) async fn enqueue_index(&self, jobs: &[IndexJob]) -> Result<()> {
        if !self.cfg.index_jobs || jobs.is_empty() {
            return Ok(());
        }
        let bodies = jobs.iter().map(|j| serde_json::to_string(j).expect("jobs serialize")).collect();
        Ok(self.queue.send_batch(INDEX, bodies).await?)
    }

    /// Handles a batch of index job bodies with one index call; the outcome of each, in order.
    pub async fn handle_index_batch(&self, bodies: &[&str]) -> Vec<Result<()>> {
        self.apply_jobs(parse_jobs(bodies).await, Apply::Commit).await
    }

    /// Indexes the documents of a batch of jobs with one index call; the outcome of each, in
    /// order (a job that is already an error stays one).
    pub async fn index_jobs(&self, jobs: Vec<Result<IndexJob>>) -> Vec<Result<()>> {
        self.apply_jobs(jobs, Apply::Commit).await
    }

    /// The documents of `jobs`, committed or staged as `apply` says; the outcome of each job.
    pub(crate) async fn apply_jobs(&self, jobs: Vec<Result<IndexJob>>, apply: Apply) -> Vec<Result<()>> {
        let docs = match self.load_docs(&jobs).await {
            Ok(d) => d,
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        let ready = jobs.iter().zip(&docs).filter_map(|(j, d)| Some((j.as_ref().ok()?, d.as_ref().ok()?.clone())));
        let outcome = match apply {
            Apply::Commit => self.search.index(ready.map(|(_, doc)| doc).collect()).await,
            Apply::Stage => {
                self.search
                    .stage(ready.map(|(j, doc)| crate::search::StagedDoc { doc, new: j.created() }).collect())
                    .await
            }
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                let e = Error::from(e);
                return jobs.iter().map(|_| Err(e.clone())).collect();
            }
        };
        let mut per_doc = outcome.into_iter();
        docs.into_iter()
            .map(|d| match d {
                Err(e) => Err(e),
                Ok(_) => match per_doc.next().flatten() {
                    None => Ok(()),
                    Some(reason) => Err(Error::Unavailable(format!("indexing failed: {reason}"))),
                },
            })
            .collect()
    }

    /// The document of each job, read from the tables, [`LOAD_CHUNK`] jobs at a time.
    ///
    /// The embedded tables read on the calling thread, a tokio worker that also serves requests:
    /// the change feed hands over up to ten thousand jobs at once, and reading and decoding all
    /// of them in one go would hold that worker for tens of milliseconds. Each chunk is a read of
    /// about a millisecond, and the worker is yielded between chunks.
    async fn load_docs(&self, jobs: &[Result<IndexJob>]) -> Result<Vec<Result<Doc>>> {
        let mut out = Vec::with_capacity(jobs.len());
        for (i, chunk) in jobs.chunks(LOAD_CHUNK).enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            out.extend(self.load_chunk(chunk).await?);
        }
        Ok(out)
    }

    async fn load_chunk(&self, jobs: &[Result<IndexJob>]) -> Result<Vec<Result<Doc>>> {
        let mut message_keys = Vec::new();
        let mut group_keys = Vec::new();
        for job in jobs.iter().flatten() {
            match job {
                IndexJob::Message { conversation_id, seq, .. } => {
                    message_keys.push(Key::pk_sk(conversation_id.as_str(), *seq))
                }
                IndexJob::Group { group_id, .. } => group_keys.push(Key::pk(group_id.as_str())),
            }
        }
        let mut messages = self.tables.get_many(&STORE, &message_keys).await?.into_iter();
        let mut groups = self.tables.get_many(&META, &group_keys).await?.into_iter();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(match job {
                Err(e) => Err(e.clone()),
                Ok(IndexJob::Message { conversation_id, seq, .. }) => match messages.next().flatten() {
                    Some(item) => from_item::<Message>(item).map(|m| {
                        Doc::Message(MessageDoc {
                            conversation_id: m.conversation_id,
                            seq: m.seq,
                            send_time: m.send_time,
                            text: m.text,
                        })
                    }),
                    None => Err(Error::Internal(format!("index job for a missing message {conversation_id}/{seq}"))),
                },
                Ok(IndexJob::Group { group_id, .. }) => match groups.next().flatten() {
                    Some(item) => from_item::<MetaRow>(item).map(|g| {
                        Doc::Group(GroupDoc {
                            group_id: g.timeline_id,
                            name: g.name.unwrap_or_default(),
                            created_at: g.created_at,
                        })
                    }),
                    None => Err(Error::Internal(format!("index job for a missing group {group_id}"))),
                },
            });
        }
        Ok(out)
    }

    /// Every conversation the caller is in now.
    async fn my_conversation_ids(&self, caller: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.tables.query(Query::new(&CONVERSATIONS, caller).limit(1000).cursor(cursor)).await?;
            #[derive(Deserialize)]
            struct Summary {
                conversation_id: String,
            }
            for item in page.items {
                out.push(from_item::<Summary>(item)?.conversation_id);
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(out),
            }
        }
    }

    /// `GET /v1/search/messages`: the caller's conversations (or one of them), newest first.
    pub async fn search_messages(
        &self,
        caller: &str,
        q: Option<String>,
        conversation_id: Option<String>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<Message>> {
        let phrase = check_phrase(q)?;
        let limit = page_limit(limit, limits::SEARCH.0, limits::SEARCH.1)?;
        let after = cursor.as_deref().map(decode_cursor).transpose()?;
        let conversations = match conversation_id {
            Some(c) => {
                self.require_reader(caller, &c).await?;
                vec![c]
            }
            None => self.my_conversation_ids(caller).await?,
        };
        let hits = self.search.search_messages(SearchQuery { phrase, conversations, limit, after }).await?;
        let keys: Vec<Key> = hits
            .hits
            .iter()
            .filter_map(|h| h.id.rsplit_once('/').and_then(|(c, s)| Some(Key::pk_sk(c, s.parse::<i64>().ok()?))))
            .collect();
        let items =
            self.tables.get_many(&STORE, &keys).await?.into_iter().flatten().map(from_item).collect::<Result<_>>()?;
        Ok(List { items, next_cursor: hits.next.map(encode_cursor) })
    }

    /// `GET /v1/groups?q=`: groups by name, newest first.
    pub async fn search_groups(
        &self,
        q: Option<String>,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<Group>> {
        let phrase = check_phrase(q)?;
        let limit = page_limit(limit, limits::SEARCH.0, limits::SEARCH.1)?;
        let after = cursor.as_deref().map(decode_cursor).transpose()?;
        let hits = self.search.search_groups(SearchQuery { phrase, conversations: vec![], limit, after }).await?;
        let ids: Vec<&str> = hits.hits.iter().map(|h| h.id.as_str()).collect();
        Ok(List { items: self.groups_by_id(&ids).await?, next_cursor: hits.next.map(encode_cursor) })
    }

    /// Rebuilds the search indexes from the store and meta tables (a new mapping, or after a
    /// loss). Returns (messages, groups) indexed.
    pub async fn rebuild_search(&self) -> Result<(usize, usize)> {
        self.search.clear().await?;
        let (mut messages, mut groups) = (0, 0);
        let mut cursor = None;
        loop {
            let page = self.tables.scan(&META, 200, cursor).await?;
            for item in page.items {
                let meta: MetaRow = from_item(item)?;
                if meta.kind == ConvKind::Group {
                    let doc = Doc::Group(GroupDoc {
                        group_id: meta.timeline_id.clone(),
                        name: meta.name.clone().unwrap_or_default(),
                        created_at: meta.created_at,
                    });
                    self.index_all(vec![doc]).await?;
                    groups += 1;
                }
                messages += self.reindex_conversation(&meta.timeline_id).await?;
            }
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        tracing::info!(messages, groups, "search indexes rebuilt");
        Ok((messages, groups))
    }

    async fn reindex_conversation(&self, conversation_id: &str) -> Result<usize> {
        let mut n = 0;
        let mut cursor = None;
        loop {
            let page = self.tables.query(Query::new(&STORE, conversation_id).limit(500).cursor(cursor)).await?;
            let docs: Vec<Doc> = page
                .items
                .into_iter()
                .map(|i| {
                    from_item::<Message>(i).map(|m| {
                        Doc::Message(MessageDoc {
                            conversation_id: m.conversation_id,
                            seq: m.seq,
                            send_time: m.send_time,
                            text: m.text,
                        })
                    })
                })
                .collect::<Result<_>>()?;
            n += docs.len();
            self.index_all(docs).await?;
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(n),
            }
        }
    }

    /// Indexes documents, failing if any one of them fails.
    async fn index_all(&self, docs: Vec<Doc>) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        if let Some(reason) = self.search.index(docs).await?.into_iter().flatten().next() {
            return Err(Error::Unavailable(format!("indexing failed: {reason}")));
        }
        Ok(())
    }
}

//! The embedded Search adapter: two tantivy indexes (messages, groups) under the data
//! directory. Each `index` call commits before it returns, so an acknowledged index job is
//! durable; `stage` hands documents to tantivy's indexing thread at once and leaves them to the
//! next commit, which makes them durable and searchable. Tantivy commits are atomic, so a crash
//! keeps every committed document, and the queue or the change feed (whose records are
//! forgotten only after the commit) brings back the uncommitted tail.

use super::analyzer::{Tok, is_cjk, terms, tokens};
use super::*;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery, TermSetQuery};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

/// A hit's (time, tiebreak), as the collector reads them from the fast fields.
type SortValues = (Option<i64>, Option<i64>);

/// The fields of both indexes: `scope` is a message's conversation (empty for groups).
#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    scope: Field,
    time: Field,
    tiebreak: Field,
    text: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        scope: b.add_text_field("scope", STRING),
        time: b.add_i64_field("time", INDEXED | STORED | tantivy::schema::FAST),
        tiebreak: b.add_i64_field("tiebreak", INDEXED | STORED | tantivy::schema::FAST),
        text: b.add_text_field("text", text),
    };
    (b.build(), fields)
}

struct Engine {
    writer: Mutex<Writer>,
    reader: IndexReader,
    f: Fields,
}

/// The index writer, and whether documents staged since the last [`Engine::commit`] may have
/// been lost since: tantivy serializes segments on its own threads, and a commit that fails
/// (whoever called it) may drop documents that a later commit does not bring back.
struct Writer {
    w: IndexWriter,
    lost: bool,
    /// Whether anything was added since the last commit (a commit of nothing still syncs).
    added: bool,
}

fn err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Internal(format!("embedded search: {e}"))
}

impl Engine {
    fn open(dir: &Path) -> Result<Engine, SearchError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SearchError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let (schema, f) = schema();
        let index = Index::open_or_create(MmapDirectory::open(dir).map_err(err)?, schema).map_err(err)?;
        index.tokenizers().register(TOKENIZER, ImTokenizer::default());
        // One indexing thread with tantivy's smallest memory budget: every commit starts a
        // segment whose hash table is sized by the budget; at 50 MB, zeroing it was a tenth of
        // the CPU of a send (perf, im-bench).
        let w = index.writer_with_num_threads(1, 15_000_000).map_err(err)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(err)?;
        Ok(Engine { writer: Mutex::new(Writer { w, lost: false, added: false }), reader, f })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands documents to tantivy's indexing thread, which indexes them as they come; they are
    /// neither searchable nor durable until a commit.
    fn add(&self, w: &mut Writer, docs: &[Entry]) -> Result<(), SearchError> {
        for e in docs {
            if e.replace {
                // The delete applies to documents added before this one. Each commit looks it up
                // in every segment's term dictionary, with every segment opened for it (`Fst::get`
                // was the indexing thread's top symbol, perf), so a document known to be new
                // ([`StagedDoc::new`]) skips it.
                w.w.delete_term(Term::from_field_text(self.f.id, &e.id));
            }
            let mut doc = TantivyDocument::default();
            doc.add_text(self.f.id, &e.id);
            doc.add_text(self.f.scope, &e.scope);
            doc.add_i64(self.f.time, e.time);
            doc.add_i64(self.f.tiebreak, tiebreak(&e.id));
            doc.add_text(self.f.text, &e.text);
            w.w.add_document(doc).map_err(err)?;
            w.added = true;
        }
        Ok(())
    }

    /// Commits what was added, and makes it searchable.
    fn commit_added(&self, mut w: std::sync::MutexGuard<'_, Writer>) -> Result<(), SearchError> {
        w.added = false;
        if let Err(e) = w.w.commit() {
            w.lost = true;
            return Err(err(e));
        }
        drop(w);
        self.reader.reload().map_err(err)
    }

    fn index(&self, docs: &[Entry]) -> Result<(), SearchError> {
        let mut w = self.writer();
        self.add(&mut w, docs)?;
        self.commit_added(w)
    }

    fn stage(&self, docs: &[Entry]) -> Result<(), SearchError> {
        self.add(&mut self.writer(), docs)
    }

    /// Commits the staged documents, or says that some may be lost (see [`Writer`]).
    fn commit(&self) -> Result<(), SearchError> {
        let mut w = self.writer();
        if std::mem::take(&mut w.lost) {
            return Err(SearchError::Unavailable("embedded search: a commit failed; stage the documents again".into()));
        }
        if !w.added {
            return Ok(());
        }
        self.commit_added(w)
    }

    fn clear(&self) -> Result<(), SearchError> {
        let w = self.writer();
        w.w.delete_all_documents().map_err(err)?;
        self.commit_added(w)
    }

    fn search(&self, q: &SearchQuery, scoped: bool) -> Result<Hits, SearchError> {
        let Some(text) = text_query(self.f.text, &q.phrase) else {
            return Ok(Hits::default());
        };
        if scoped && q.conversations.is_empty() {
            return Ok(Hits::default());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text)];
        if scoped {
            let scopes = q.conversations.iter().map(|c| Term::from_field_text(self.f.scope, c));
            clauses.push((Occur::Must, Box::new(TermSetQuery::new(scopes))));
        }
        if let Some(a) = q.after {
            // (time, tiebreak) < (a.time, a.tiebreak), in the order hits are returned.
            let before = RangeQuery::new(Bound::Unbounded, Bound::Excluded(Term::from_field_i64(self.f.time, a.time)));
            let same_time = BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(Term::from_field_i64(self.f.time, a.time), IndexRecordOption::Basic))
                        as Box<dyn Query>,
                ),
                (
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Unbounded,
                        Bound::Excluded(Term::from_field_i64(self.f.tiebreak, a.tiebreak)),
                    )),
                ),
            ]);
            let cursor = BooleanQuery::new(vec![
                (Occur::Should, Box::new(before) as Box<dyn Query>),
                (Occur::Should, Box::new(same_time)),
            ]);
            clauses.push((Occur::Must, Box::new(cursor)));
        }
        let query = BooleanQuery::new(clauses);
        let limit = q.limit.max(1);
        let searcher = self.reader.searcher();
        let order = (
            (tantivy::collector::sort_key::SortByStaticFastValue::<i64>::for_field("time"), Order::Desc),
            (tantivy::collector::sort_key::SortByStaticFastValue::<i64>::for_field("tiebreak"), Order::Desc),
        );
        let top: Vec<(SortValues, DocAddress)> =
            searcher.search(&query, &TopDocs::with_limit(limit + 1).order_by(order)).map_err(err)?;
        let mut hits = Vec::with_capacity(top.len().min(limit));
        for ((time, tb), addr) in top.iter().take(limit) {
            let doc: TantivyDocument = searcher.doc(*addr).map_err(err)?;
            let id = doc.get_first(self.f.id).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            hits.push(Hit { id, time: time.unwrap_or_default(), tiebreak: tb.unwrap_or_default() });
        }
        let next = if top.len() > limit { hits.last().map(Hit::after) } else { None };
        Ok(Hits { hits, next })
    }
}

/// The words of `phrase` in order, the last one as a prefix of a word (at most
/// [`MAX_PREFIX_EXPANSIONS`] words of each segment), as OpenSearch's `match_phrase_prefix`; `None`
/// when it has no words. A Chinese, Japanese or Korean character is a word of its own that no
/// other word starts with, so a query ending in one needs no prefix: the plain phrase is the
/// same match, without the term dictionary's walk.
pub fn text_query(field: Field, phrase: &str) -> Option<Box<dyn Query>> {
    let words = terms(phrase);
    let last_is_cjk = words.last()?.chars().next().is_some_and(is_cjk);
    let mut terms: Vec<Term> = words.iter().map(|t| Term::from_field_text(field, t)).collect();
    Some(match (terms.len(), last_is_cjk) {
        (1, true) => Box::new(TermQuery::new(terms.remove(0), IndexRecordOption::Basic)),
        (_, true) => Box::new(PhraseQuery::new(terms)),
        (_, false) => {
            let mut q = PhrasePrefixQuery::new(terms);
            q.set_max_expansions(MAX_PREFIX_EXPANSIONS);
            Box::new(q)
        }
    })
}

#[derive(Clone)]
pub struct TantivySearch {
    messages: Arc<Engine>,
    groups: Arc<Engine>,
}

impl TantivySearch {
    /// Opens (or creates) the indexes under `dir` (`dir/messages`, `dir/groups`).
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        Ok(TantivySearch {
            messages: Arc::new(Engine::open(&dir.join("messages"))?),
            groups: Arc::new(Engine::open(&dir.join("groups"))?),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TantivySearch) -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, SearchError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| SearchError::Internal(format!("blocking task failed: {e}")))?
    }

    /// Splits documents between the two indexes and applies `op` to each index that gets any.
    fn each_engine(
        &self,
        docs: impl IntoIterator<Item = (Doc, bool)>,
        op: fn(&Engine, &[Entry]) -> Result<(), SearchError>,
    ) -> Result<BulkOutcome, SearchError> {
        let (mut messages, mut groups) = (Vec::new(), Vec::new());
        for (d, replace) in docs {
            let id = d.id();
            match d {
                Doc::Message(m) => {
                    messages.push(Entry { id, scope: m.conversation_id, time: m.send_time, text: m.text, replace })
                }
                Doc::Group(g) => {
                    groups.push(Entry { id, scope: String::new(), time: g.created_at, text: g.name, replace })
                }
            }
        }
        let n = messages.len() + groups.len();
        if !messages.is_empty() {
            op(&self.messages, &messages)?;
        }
        if !groups.is_empty() {
            op(&self.groups, &groups)?;
        }
        Ok(vec![None; n])
    }
}

/// A document as both indexes hold it (`scope` is a message's conversation, empty for a group),
/// and whether it replaces any earlier version.
struct Entry {
    id: String,
    scope: String,
    time: i64,
    text: String,
    replace: bool,
}

#[async_trait]
impl Search for TantivySearch {
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError> {
        self.blocking(move |s| s.each_engine(docs.into_iter().map(|d| (d, true)), Engine::index)).await
    }

    async fn stage(&self, docs: Vec<StagedDoc>) -> Result<BulkOutcome, SearchError> {
        self.blocking(move |s| s.each_engine(docs.into_iter().map(|d| (d.doc, !d.new)), Engine::stage)).await
    }

    async fn commit(&self) -> Result<(), SearchError> {
        self.blocking(|s| {
            // Both, even if the first fails: the caller stages everything again either way.
            let messages = s.messages.commit();
            s.groups.commit().and(messages)
        })
        .await
    }

    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.blocking(move |s| s.messages.search(&q, true)).await
    }

    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.blocking(move |s| s.groups.search(&q, false)).await
    }

    async fn clear(&self) -> Result<(), SearchError> {
        self.blocking(|s| {
            s.messages.clear()?;
            s.groups.clear()
        })
        .await
    }
}
// ---- the analyzer as a tantivy tokenizer -------------------------------------------------

/// The analyzer (`super::analyzer`) as a tantivy tokenizer (registered as [`TOKENIZER`]).
pub const TOKENIZER: &str = "im";

#[derive(Clone, Default)]
pub struct ImTokenizer {
    token: tantivy::tokenizer::Token,
}

pub struct ImTokenStream<'a> {
    tokens: std::vec::IntoIter<Tok>,
    position: usize,
    token: &'a mut tantivy::tokenizer::Token,
}

impl tantivy::tokenizer::Tokenizer for ImTokenizer {
    type TokenStream<'a> = ImTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> ImTokenStream<'a> {
        self.token.reset();
        ImTokenStream { tokens: tokens(text).into_iter(), position: 0, token: &mut self.token }
    }
}

impl tantivy::tokenizer::TokenStream for ImTokenStream<'_> {
    fn advance(&mut self) -> bool {
        match self.tokens.next() {
            Some(t) => {
                self.token.text = t.text;
                self.token.offset_from = t.from;
                self.token.offset_to = t.to;
                self.token.position = self.position;
                self.token.position_length = 1;
                self.position += 1;
                true
            }
            None => false,
        }
    }
    fn token(&self) -> &tantivy::tokenizer::Token {
        self.token
    }
    fn token_mut(&mut self) -> &mut tantivy::tokenizer::Token {
        self.token
    }
}

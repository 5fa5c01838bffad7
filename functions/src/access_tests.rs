//! Checks the access declaration against what the code does: every route (and worker) runs on
//! tables, a queue and a search engine that record each call, through a scenario that takes the
//! main branches of every operation; what each touched must be declared for it.

use super::*;
use crate::dispatch::{self, App, Auth, HttpConfig};
use crate::routes;
use async_trait::async_trait;
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::queue::names::FANOUT;
use im_shared::queue::{Delivery, Depth, Queue, QueueError, service_queues};
use im_shared::schema::DELIVERIES;
use im_shared::schema::TableDef;
use im_shared::search::embedded::TantivySearch;
use im_shared::search::{BulkOutcome, Doc, Hits, Search, SearchError, SearchQuery};
use im_shared::service::Service;
use im_shared::service::fanout::FanoutJob;
use im_shared::service::search::IndexJob;
use im_shared::tables::embedded::RedbTables;
use im_shared::tables::{Cond, Item, Key, Page, Query, StoreError, Stored, Tables, TxOp, Update, WriteOp};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One access: (what, name), e.g. ("read", "users"), ("send", "fanout"), ("search", "write").
type Seen = Arc<Mutex<BTreeSet<(&'static str, String)>>>;

struct Rec<T> {
    inner: T,
    seen: Seen,
    /// Set: the next inbox delivery transaction fails with a conflict, as if another writer had
    /// touched one of its inboxes, so that the retry path (which reads the delivery markers)
    /// shows what it touches. Each function call re-arms it.
    conflict: Arc<AtomicBool>,
}

impl<T> Rec<T> {
    fn note(&self, what: &'static str, name: &str) {
        self.seen.lock().unwrap().insert((what, name.to_string()));
    }
}

#[async_trait]
impl<T: Tables> Tables for Rec<T> {
    async fn get(&self, table: &'static TableDef, key: &Key) -> Result<Option<Stored>, StoreError> {
        self.note("read", table.name);
        self.inner.get(table, key).await
    }
    async fn get_batch(&self, keys: &[(&'static TableDef, Key)]) -> Result<Vec<Option<Stored>>, StoreError> {
        for (table, _) in keys {
            self.note("read", table.name);
        }
        self.inner.get_batch(keys).await
    }
    async fn put(&self, table: &'static TableDef, item: Item, cond: Cond) -> Result<(), StoreError> {
        self.note("write", table.name);
        self.inner.put(table, item, cond).await
    }
    async fn delete(&self, table: &'static TableDef, key: &Key, cond: Cond) -> Result<Option<Item>, StoreError> {
        self.note("write", table.name);
        self.inner.delete(table, key, cond).await
    }
    async fn update(&self, t: &'static TableDef, key: &Key, u: Update, cond: Cond) -> Result<Item, StoreError> {
        self.note("write", t.name);
        self.inner.update(t, key, u, cond).await
    }
    async fn query(&self, query: Query) -> Result<Page<Stored>, StoreError> {
        self.note("read", query.table.name);
        self.inner.query(query).await
    }
    async fn batch_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        for op in &ops {
            let (WriteOp::Put { table, .. } | WriteOp::Delete { table, .. }) = op;
            self.note("write", table.name);
        }
        self.inner.batch_write(ops).await
    }
    async fn scan(&self, table: &'static TableDef, limit: usize, cursor: Option<String>) -> Result<Page, StoreError> {
        self.note("scan", table.name);
        self.inner.scan(table, limit, cursor).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StoreError> {
        let delivery = matches!(ops.first(), Some(TxOp::Put { table, .. }) if table.name == DELIVERIES.name);
        if delivery && self.conflict.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Conflict { index: Some(0) });
        }
        for op in &ops {
            match op {
                TxOp::Check { table, .. } => self.note("read", table.name),
                TxOp::Put { table, .. } | TxOp::Delete { table, .. } | TxOp::Update { table, .. } => {
                    self.note("write", table.name)
                }
            }
        }
        self.inner.transact(ops).await
    }
}

#[async_trait]
impl<T: Queue> Queue for Rec<T> {
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<(), QueueError> {
        self.note("send", queue);
        self.inner.send_batch(queue, bodies).await
    }
    async fn receive(&self, q: &str, max: usize, vis: Duration, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        self.inner.receive(q, max, vis, wait).await
    }
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError> {
        self.inner.ack(queue, receipt).await
    }
    async fn retry_after(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.inner.retry_after(queue, receipt, delay).await
    }
    async fn redrive(&self, queue: &str) -> Result<usize, QueueError> {
        self.inner.redrive(queue).await
    }
    async fn depth(&self, queue: &str) -> Result<Depth, QueueError> {
        self.inner.depth(queue).await
    }
}

#[async_trait]
impl<T: Search> Search for Rec<T> {
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError> {
        self.note("search", "write");
        self.inner.index(docs).await
    }
    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.note("search", "read");
        self.inner.search_messages(q).await
    }
    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.note("search", "read");
        self.inner.search_groups(q).await
    }
    async fn clear(&self) -> Result<(), SearchError> {
        self.note("search", "write");
        self.inner.clear().await
    }
}

/// The notifier, recording that a function told connections of inbox entries.
struct RecNotifier(Seen);

#[async_trait]
impl im_shared::notify::Notifier for RecNotifier {
    async fn notify(&self, notices: Vec<im_shared::notify::Notice>) {
        if !notices.is_empty() {
            self.0.lock().unwrap().insert(("notify", "ws".to_string()));
        }
    }
}

struct World {
    _dir: tempfile::TempDir,
    app: App,
    /// The recording tables, for the WebSocket functions (which have no service).
    tables: Arc<Rec<RedbTables>>,
    queue: EmbeddedQueue,
    seen: Seen,
    conflict: Arc<AtomicBool>,
    /// What each function was seen to touch.
    observed: BTreeMap<String, BTreeSet<(&'static str, String)>>,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let seen = Seen::default();
        let conflict = Arc::new(AtomicBool::new(true));
        let tables = RedbTables::open(&dir.path().join("tables.redb")).unwrap();
        let queue = EmbeddedQueue::open(&dir.path().join("queue.redb"), service_queues(5)).unwrap();
        let search = TantivySearch::open(&dir.path().join("search")).unwrap();
        // No grace: the outbox sweep re-enqueues a fan-out still in progress, so that it shows
        // what it touches when it has work.
        let cfg = im_shared::service::Config { index_jobs: false, outbox_grace_ms: 0, ..Default::default() };
        let rec_tables = Arc::new(Rec { inner: tables, seen: seen.clone(), conflict: conflict.clone() });
        let service = Service::new(
            rec_tables.clone(),
            Arc::new(Rec { inner: queue.clone(), seen: seen.clone(), conflict: conflict.clone() }),
            Arc::new(Rec { inner: search, seen: seen.clone(), conflict: conflict.clone() }),
            cfg,
        )
        .with_notifier(Arc::new(RecNotifier(seen.clone())));
        let app = App { service: Arc::new(service), auth: Auth::Authorizer, cfg: HttpConfig::default() };
        World { _dir: dir, app, tables: rec_tables, queue, seen, conflict, observed: BTreeMap::new() }
    }

    /// Calls `lambda`'s route as `caller`; expects `status`; returns the body.
    async fn call(&mut self, caller: &str, lambda: &str, path: &str, query: &str, body: Value, status: u16) -> Value {
        let route = routes::by_lambda(lambda).unwrap();
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let query = (!query.is_empty()).then_some(query);
        let resp = dispatch::handle_route(&self.app, route, &route.method, path, query, Some(caller), &body).await;
        let got = resp.status().as_u16();
        let value: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
        assert_eq!(got, status, "{lambda} {path}: {value}");
        self.collect(lambda);
        value
    }

    fn collect(&mut self, function: &str) {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        self.conflict.store(true, Ordering::SeqCst);
        self.observed.entry(function.to_string()).or_default().extend(seen);
    }

    /// Runs the fan-out jobs waiting in the queue as the fan-out worker would.
    async fn fan_out(&mut self) {
        loop {
            let jobs = self.queue.receive(FANOUT, 10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
            if jobs.is_empty() {
                break;
            }
            for j in jobs {
                self.app.service.handle_fanout(&j.body).await.unwrap();
                self.queue.ack(FANOUT, &j.receipt).await.unwrap();
            }
        }
        self.collect("fanout-worker");
    }
}

/// Every route, with the branches that touch more than the plain case: pending and crossing
/// friend requests, open and approval groups, single and group sends, notices to members.
async fn scenario(w: &mut World) {
    for u in ["alice", "bob", "carol", "dave"] {
        w.call(u, "put-me", "/v1/me", "", json!({"name": u}), 200).await;
    }
    w.call("alice", "health", "/v1/health", "", Value::Null, 200).await;
    w.call("alice", "openapi", "/v1/openapi.json", "", Value::Null, 200).await;
    w.call("alice", "get-me", "/v1/me", "", Value::Null, 200).await;
    w.call("alice", "get-user", "/v1/users/bob", "", Value::Null, 200).await;

    w.call("alice", "send-friend-request", "/v1/friend-requests", "", json!({"to": "bob"}), 201).await;
    w.call("bob", "list-friend-requests", "/v1/friend-requests", "", Value::Null, 200).await;
    w.call("alice", "list-friend-requests", "/v1/friend-requests", "direction=outgoing", Value::Null, 200).await;
    w.call("bob", "accept-friend-request", "/v1/friend-requests/alice/accept", "", Value::Null, 200).await;
    w.call("carol", "send-friend-request", "/v1/friend-requests", "", json!({"to": "alice"}), 201).await;
    w.call("alice", "reject-friend-request", "/v1/friend-requests/carol/reject", "", Value::Null, 204).await;
    // Crossing requests: the second one makes them friends at once.
    w.call("dave", "send-friend-request", "/v1/friend-requests", "", json!({"to": "alice"}), 201).await;
    w.call("alice", "send-friend-request", "/v1/friend-requests", "", json!({"to": "dave"}), 200).await;
    w.call("alice", "list-friends", "/v1/friends", "", Value::Null, 200).await;
    w.call("alice", "remove-friend", "/v1/friends/dave", "", Value::Null, 204).await;

    let open = json!({"name": "Open house", "join_policy": "open", "members": ["bob"]});
    let g =
        w.call("alice", "create-group", "/v1/groups", "", open, 201).await["group_id"].as_str().unwrap().to_string();
    let closed = json!({"name": "Closed club", "join_policy": "approval"});
    let c =
        w.call("alice", "create-group", "/v1/groups", "", closed, 201).await["group_id"].as_str().unwrap().to_string();
    w.fan_out().await;
    w.call("bob", "get-group", &format!("/v1/groups/{g}"), "", Value::Null, 200).await;
    w.call("alice", "update-group", &format!("/v1/groups/{g}"), "", json!({"name": "Open house!"}), 200).await;
    w.call("carol", "join-group", &format!("/v1/groups/{g}/join"), "", Value::Null, 200).await;
    w.call("dave", "join-group", &format!("/v1/groups/{c}/join"), "", json!({"message": "hi"}), 202).await;
    w.call("carol", "join-group", &format!("/v1/groups/{c}/join"), "", Value::Null, 202).await;
    w.call("alice", "list-join-requests", &format!("/v1/groups/{c}/join-requests"), "", Value::Null, 200).await;
    w.call("alice", "accept-join-request", &format!("/v1/groups/{c}/join-requests/dave/accept"), "", Value::Null, 200)
        .await;
    w.call("alice", "reject-join-request", &format!("/v1/groups/{c}/join-requests/carol/reject"), "", Value::Null, 204)
        .await;
    w.call("alice", "set-role", &format!("/v1/groups/{g}/members/bob/role"), "", json!({"role": "admin"}), 200).await;
    w.call("bob", "list-members", &format!("/v1/groups/{g}/members"), "", Value::Null, 200).await;
    w.call("bob", "my-groups", "/v1/me/groups", "", Value::Null, 200).await;
    w.fan_out().await;

    let single = im_shared::ids::single_conversation_id("alice", "bob");
    for (conv, id) in [(&single, "m1"), (&g, "m2")] {
        let msg = json!({"client_msg_id": id, "type": "text", "text": "hello search"});
        w.call("alice", "send-message", &format!("/v1/conversations/{conv}/messages"), "", msg.clone(), 201).await;
        w.call("alice", "send-message", &format!("/v1/conversations/{conv}/messages"), "", msg, 200).await;
    }
    // The outbox sweep (a scheduled function) re-enqueues the group message's fan-out.
    assert_eq!(w.app.service.sweep_outbox().await.unwrap(), 1);
    w.collect("outbox-sweeper");
    w.fan_out().await;
    // A single chat's fan-out job, as an earlier version queued one: its worker finds the
    // message delivered with its send, and only removes the outbox row.
    w.queue.send_batch(FANOUT, vec![FanoutJob::message(&single, 1).to_body()]).await.unwrap();
    w.fan_out().await;
    // The indexer: what the streams would hand it for the two messages and the group.
    let jobs = vec![Ok(IndexJob::message(&single, 1)), Ok(IndexJob::message(&g, 1)), Ok(IndexJob::group(&g))];
    assert!(w.app.service.index_jobs(jobs).await.iter().all(Result::is_ok));
    w.collect("indexer");

    w.call("bob", "history", &format!("/v1/conversations/{g}/messages"), "", Value::Null, 200).await;
    w.call("bob", "sync", "/v1/sync", "", Value::Null, 200).await;
    w.call("bob", "list-conversations", "/v1/conversations", "", Value::Null, 200).await;
    w.call("bob", "mark-read", &format!("/v1/conversations/{g}/read"), "", json!({"seq": 1}), 200).await;
    // A single chat's summary is titled with the peer's name.
    w.call("bob", "mark-read", &format!("/v1/conversations/{single}/read"), "", json!({"seq": 1}), 200).await;
    w.call("bob", "search-messages", "/v1/search/messages", "q=search", Value::Null, 200).await;
    w.call("bob", "search-groups", "/v1/groups", "q=open", Value::Null, 200).await;

    w.call("alice", "remove-member", &format!("/v1/groups/{g}/members/carol"), "", Value::Null, 204).await;
    w.call("bob", "leave-group", &format!("/v1/groups/{g}/leave"), "", Value::Null, 204).await;
    w.fan_out().await;

    // The WebSocket API's functions, fed API Gateway's events.
    let (issuer, _) = crate::ws::tests::issuer().await;
    let ws = crate::ws::WsApp {
        connections: im_shared::notify::connections::Connections::new(w.tables.clone()),
        verifier: crate::ws::JwtVerifier::new(&issuer, crate::ws::tests::AUDIENCE),
        max_per_user: 10,
    };
    let token = crate::ws::tests::token(&issuer, "bob");
    for (function, fixture, token) in [
        ("ws-connect", crate::ws::tests::CONNECT, Some(token.as_str())),
        ("ws-default", crate::ws::tests::MESSAGE, None),
        ("ws-disconnect", crate::ws::tests::DISCONNECT, None),
    ] {
        let r = crate::ws::ws_event(&ws, crate::ws::tests::event(fixture, "conn-1", token, None)).await;
        assert_eq!(r.status_code, 200, "{function}: {:?}", r.body);
        w.collect(function);
    }
}

fn declared(access: &Access) -> BTreeSet<(&'static str, String)> {
    let mut out = BTreeSet::new();
    out.extend(access.reads.iter().map(|t| ("read", t.name.to_string())));
    out.extend(access.writes.iter().map(|t| ("write", t.name.to_string())));
    out.extend(access.sends.iter().map(|q| ("send", q.to_string())));
    if access.notifies() {
        out.insert(("notify", "ws".to_string()));
    }
    match access.search {
        SearchUse::None => {}
        SearchUse::Query => drop(out.insert(("search", "read".to_string()))),
        SearchUse::Index => drop(out.insert(("search", "write".to_string()))),
    }
    out
}

/// Exactly, both ways: a grant the scenario never uses is one more than needed (or a branch
/// the scenario misses: then extend the scenario).
#[tokio::test]
async fn each_function_touches_exactly_what_it_declares() {
    let mut w = World::new();
    scenario(&mut w).await;
    let mut wrong = Vec::new();
    for f in crate::function::all() {
        let function = f.name;
        let seen = w.observed.get(function).cloned().unwrap_or_else(|| panic!("the scenario never ran {function}"));
        let declared = declared(&f.access);
        let undeclared: Vec<_> = seen.difference(&declared).collect();
        let unused: Vec<_> = declared.difference(&seen).collect();
        if !undeclared.is_empty() || !unused.is_empty() {
            wrong.push(format!("{function}: undeclared {undeclared:?}, unused {unused:?}"));
        }
    }
    assert!(wrong.is_empty(), "the declared access and the code disagree:\n{}", wrong.join("\n"));
}

//! Fan-out jobs at the service level, on the embedded adapters: a job delivered twice, a job
//! split across pages and redelivered, and a job lost between the store write and the queue,
//! recovered by the outbox sweeper. Every member's inbox holds the message exactly once.

use im_shared::changes::ChangeFeed;
use im_shared::model::JoinPolicy;
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::queue::names::FANOUT;
use im_shared::queue::{Delivery, Depth, Queue, QueueError, service_queues};
use im_shared::schema::SYNC;
use im_shared::search::{BulkOutcome, Doc, Hits, Search, SearchError, SearchQuery, StagedDoc};
use im_shared::service::groups::CreateGroupInput;
use im_shared::service::messages::SendInput;
use im_shared::service::users::ProfileInput;
use im_shared::service::{Config, Service};
use im_shared::tables::embedded::RedbTables;
use im_shared::tables::{Cond, Item, Key, Page, Query, StoreError, Stored, Tables, TxOp, Update, WriteOp};
use std::sync::Arc;
use std::time::Duration;

struct Fixture {
    svc: Service,
    queue: Arc<EmbeddedQueue>,
    group: String,
    members: Vec<String>,
}

/// A group of 10 and a service whose fan-out jobs cover 3 members each. No worker runs: the
/// test drives the queue by hand.
async fn fixture(outbox_grace_ms: i64) -> Fixture {
    let dir = tempfile::tempdir().unwrap().keep();
    fixture_on(Arc::new(RedbTables::open(&dir.join("t.redb")).unwrap()), outbox_grace_ms).await
}

async fn fixture_on(tables: Arc<dyn Tables>, outbox_grace_ms: i64) -> Fixture {
    let dir = tempfile::tempdir().unwrap().keep();
    let queue = Arc::new(EmbeddedQueue::open(&dir.join("q.redb"), service_queues(5)).unwrap());
    let cfg = Config { fanout_page: 3, fanout_batch: 2, outbox_grace_ms, ..Config::default() };
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir.join("search")).unwrap());
    let svc = Service::new(tables, queue.clone(), search, cfg);
    let members: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
    for m in &members {
        svc.put_me(m, ProfileInput { name: m.clone(), gender: None, avatar_url: None, bio: None }).await.unwrap();
    }
    let group = svc
        .create_group(
            &members[0],
            CreateGroupInput {
                name: "g".into(),
                description: None,
                join_policy: JoinPolicy::Open,
                members: Some(members[1..].to_vec()),
            },
        )
        .await
        .unwrap()
        .group_id;
    Fixture { svc, queue, group, members }
}

impl Fixture {
    async fn send(&self, id: &str) -> i64 {
        let input = SendInput { client_msg_id: id.into(), kind: "text".into(), text: format!("text {id}") };
        self.svc.send(&self.members[1], &self.group, input).await.unwrap().message.seq
    }

    async fn take_jobs(&self) -> Vec<Delivery> {
        self.queue.receive(FANOUT, 10, Duration::from_secs(60), Duration::from_millis(100)).await.unwrap()
    }

    /// Runs queued jobs until none is left: each one `runs` times (redelivery), then acked.
    async fn run_all_jobs(&self, runs: usize) -> usize {
        let mut rounds = 0;
        loop {
            let jobs = self.take_jobs().await;
            if jobs.is_empty() {
                return rounds;
            }
            for job in &jobs {
                for _ in 0..runs {
                    self.svc.handle_fanout(&job.body).await.unwrap();
                }
                self.queue.ack(FANOUT, &job.receipt).await.unwrap();
            }
            rounds += 1;
            assert!(rounds < 20, "the job chain must end");
        }
    }

    /// How many times each member's inbox holds message `seq` of the group.
    async fn copies(&self, seq: i64) -> Vec<usize> {
        let mut out = Vec::new();
        for m in &self.members {
            let page = self.svc.sync(m, Some(0), Some(500)).await.unwrap();
            out.push(
                page.items
                    .iter()
                    .filter(|e| {
                        e.message.as_ref().is_some_and(|msg| msg.conversation_id == self.group && msg.seq == seq)
                    })
                    .count(),
            );
        }
        out
    }
}

#[tokio::test]
async fn a_job_delivered_twice_and_its_continuations_fill_each_inbox_once() {
    let f = fixture(30_000).await;
    let seq = f.send("m1").await;
    // At-least-once delivery: every job runs twice.
    let rounds = f.run_all_jobs(2).await;
    assert!(rounds >= 4, "10 members, 3 per job: the first job hands on the rest ({rounds} rounds)");
    assert_eq!(f.copies(seq).await, vec![1; 10]);
    assert_eq!(f.svc.sweep_outbox().await.unwrap(), 0, "a finished fan-out leaves no outbox row");
}

#[tokio::test]
async fn a_job_lost_before_it_reached_the_queue_is_recovered_by_the_outbox_sweeper() {
    let f = fixture(0).await;
    let seq = f.send("m1").await;
    // The job is lost: taken off the queue and never run (as if the enqueue had not happened).
    for job in f.take_jobs().await {
        f.queue.ack(FANOUT, &job.receipt).await.unwrap();
    }
    assert_eq!(f.copies(seq).await, vec![0; 10]);
    assert_eq!(f.svc.sweep_outbox().await.unwrap(), 1);
    f.run_all_jobs(1).await;
    assert_eq!(f.copies(seq).await, vec![1; 10]);
    assert_eq!(f.svc.sweep_outbox().await.unwrap(), 0);
}

#[tokio::test]
async fn the_sweeper_gives_up_on_a_fanout_that_keeps_failing_and_redrive_finishes_it() {
    let f = fixture(0).await;
    let seq = f.send("m1").await;
    // Every job of this fan-out fails and is dead-lettered (here: taken and dropped).
    let mut requeued = Vec::new();
    for _ in 0..8 {
        for job in f.take_jobs().await {
            f.queue.ack(FANOUT, &job.receipt).await.unwrap();
        }
        requeued.push(f.svc.sweep_outbox().await.unwrap());
    }
    assert_eq!(requeued, [1, 1, 1, 1, 1, 0, 0, 0], "five re-enqueues, then the DLQ is left to the operator");
    // The row stays: a later run of the job (a redrive) completes the fan-out and removes it.
    let job = im_shared::service::FanoutJob::message(&f.group, seq).to_body();
    f.queue.send_batch(FANOUT, vec![job]).await.unwrap();
    f.run_all_jobs(1).await;
    assert_eq!(f.copies(seq).await, vec![1; 10]);
    // A client retry re-enqueues a fan-out only while its outbox row exists.
    assert_eq!(f.send("m1").await, seq);
    assert!(f.take_jobs().await.is_empty(), "the finished fan-out removed its outbox row");
}

#[tokio::test]
async fn a_client_retry_after_a_lost_job_restarts_the_fanout() {
    let f = fixture(30_000).await;
    let seq = f.send("m1").await;
    for job in f.take_jobs().await {
        f.queue.ack(FANOUT, &job.receipt).await.unwrap();
    }
    assert_eq!(f.send("m1").await, seq, "the retry is the same message");
    let jobs = f.take_jobs().await;
    assert_eq!(jobs.len(), 1, "the retry re-enqueued the unfinished fan-out");
}

#[tokio::test]
async fn malformed_or_unknown_jobs_fail_loudly() {
    let f = fixture(30_000).await;
    for body in [
        "not json",
        r#"{"v":2,"conversation_id":"g_x","seq":1}"#,
        r#"{"v":1,"conversation_id":"g_x"}"#,
        r#"{"v":1,"conversation_id":"g_nope","seq":1}"#,
    ] {
        assert!(f.svc.handle_fanout(body).await.is_err(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_job_run_by_several_workers_at_once_fills_each_inbox_once() {
    let f = Arc::new(fixture(30_000).await);
    let mut seqs = Vec::new();
    for round in 0..5 {
        let seq = f.send(&format!("m{round}")).await;
        seqs.push(seq);
        let body = format!(r#"{{"v":1,"conversation_id":"{}","seq":{seq}}}"#, f.group);
        // Four workers race on the very same job, each following its continuation chain.
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (f, body) = (f.clone(), body.clone());
                tokio::spawn(async move { f.svc.handle_fanout(&body).await.unwrap() })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
        while let jobs = f.take_jobs().await
            && !jobs.is_empty()
        {
            let runs: Vec<_> = jobs
                .iter()
                .flat_map(|j| std::iter::repeat_n(j.body.clone(), 3))
                .map(|body| {
                    let f = f.clone();
                    tokio::spawn(async move { f.svc.handle_fanout(&body).await.unwrap() })
                })
                .collect();
            for r in runs {
                r.await.unwrap();
            }
            for j in jobs {
                f.queue.ack(FANOUT, &j.receipt).await.unwrap();
            }
        }
    }
    for seq in seqs {
        assert_eq!(f.copies(seq).await, vec![1; 10], "message {seq}");
    }
}

/// The operator's tools on a stopped server's data: `im-server queue-stats` and `redrive`.
#[test]
fn the_redrive_command_puts_dead_letters_back() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let q = EmbeddedQueue::open(&dir.path().join("queue.redb"), service_queues(1)).unwrap();
        q.send_batch(FANOUT, vec!["poison".into()]).await.unwrap();
        let d = q.receive(FANOUT, 1, Duration::ZERO, Duration::ZERO).await.unwrap();
        assert_eq!(d.len(), 1);
        assert!(q.receive(FANOUT, 1, Duration::ZERO, Duration::ZERO).await.unwrap().is_empty(), "dead-lettered");
    });
    let run = |cmd: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_im-server"))
            .arg(cmd)
            .env("IM_DATA_DIR", dir.path())
            .env("IM_QUEUE_MAX_RECEIVES", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(run("queue-stats").contains("fanout-dlq: 1 waiting"));
    assert!(run("redrive").contains("moved 1 job(s)"));
    assert!(run("queue-stats").contains("fanout: 1 waiting"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_im-server")).arg("frobnicate").output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// The real redb adapter, with one interleaving forced: the first inbox delivery transaction
/// after `arm` waits until the test lets it go.
struct PauseFirstDelivery {
    inner: RedbTables,
    gate: tokio::sync::Mutex<Option<(tokio::sync::oneshot::Sender<()>, tokio::sync::oneshot::Receiver<()>)>>,
}

impl PauseFirstDelivery {
    /// Returns (paused: fires when the delivery is held, resume: lets it commit).
    async fn arm(&self) -> (tokio::sync::oneshot::Receiver<()>, tokio::sync::oneshot::Sender<()>) {
        let (paused_tx, paused_rx) = tokio::sync::oneshot::channel();
        let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
        *self.gate.lock().await = Some((paused_tx, resume_rx));
        (paused_rx, resume_tx)
    }
}

#[async_trait::async_trait]
impl Tables for PauseFirstDelivery {
    async fn get(&self, t: &'static im_shared::schema::TableDef, k: &Key) -> Result<Option<Stored>, StoreError> {
        self.inner.get(t, k).await
    }
    async fn get_batch(
        &self,
        k: &[(&'static im_shared::schema::TableDef, Key)],
    ) -> Result<Vec<Option<Stored>>, StoreError> {
        self.inner.get_batch(k).await
    }
    async fn put(&self, t: &'static im_shared::schema::TableDef, i: Item, c: Cond) -> Result<(), StoreError> {
        self.inner.put(t, i, c).await
    }
    async fn delete(
        &self,
        t: &'static im_shared::schema::TableDef,
        k: &Key,
        c: Cond,
    ) -> Result<Option<Item>, StoreError> {
        self.inner.delete(t, k, c).await
    }
    async fn update(
        &self,
        t: &'static im_shared::schema::TableDef,
        k: &Key,
        u: Update,
        c: Cond,
    ) -> Result<Item, StoreError> {
        self.inner.update(t, k, u, c).await
    }
    async fn query(&self, q: Query) -> Result<Page<Stored>, StoreError> {
        self.inner.query(q).await
    }
    async fn batch_write(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.inner.batch_write(ops).await
    }
    async fn scan(
        &self,
        t: &'static im_shared::schema::TableDef,
        limit: usize,
        c: Option<String>,
    ) -> Result<Page, StoreError> {
        self.inner.scan(t, limit, c).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> Result<(), StoreError> {
        let delivery = ops.iter().any(|op| matches!(op, TxOp::Put { table, .. } if table.name == SYNC.name));
        if delivery {
            let gate = self.gate.lock().await.take();
            if let Some((paused, resume)) = gate {
                let _ = paused.send(());
                let _ = resume.await;
            }
        }
        self.inner.transact(ops).await
    }
}

/// Sends a group message from `sender`, holds the fan-out's first delivery transaction (u0 and
/// u1: pages of 3, batches of 2), runs `meanwhile`, then lets the fan-out finish. Returns the
/// fixture and the message's seq.
async fn with_first_delivery_held<F, Fut>(sender: usize, meanwhile: F) -> (Arc<Fixture>, i64)
where
    F: FnOnce(Arc<Fixture>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap().keep();
    let tables = Arc::new(PauseFirstDelivery {
        inner: RedbTables::open(&dir.join("t.redb")).unwrap(),
        gate: Default::default(),
    });
    let f = Arc::new(fixture_on(tables.clone(), 30_000).await);
    let (paused, resume) = tables.arm().await;
    let input = SendInput { client_msg_id: "m1".into(), kind: "text".into(), text: "text m1".into() };
    let seq = f.svc.send(&f.members[sender], &f.group, input).await.unwrap().message.seq;
    let job = f.take_jobs().await.remove(0);
    let fanout = {
        let f = f.clone();
        tokio::spawn(async move {
            f.svc.handle_fanout(&job.body).await.unwrap();
            f.run_all_jobs(1).await;
        })
    };
    paused.await.expect("the first delivery transaction is held");
    meanwhile(f.clone()).await;
    resume.send(()).unwrap();
    fanout.await.unwrap();
    (f, seq)
}

/// A member who leaves after the fan-out read the member list, but before their entry
/// commits, gets nothing, and the group does not come back into their conversation list:
/// membership is a condition of the delivery transaction itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_who_leaves_mid_fanout_gets_nothing_and_does_not_get_the_group_back() {
    let (f, seq) = with_first_delivery_held(1, |f| async move {
        f.svc.leave_group(&f.members[1], &f.group).await.unwrap();
    })
    .await;
    let copies = f.copies(seq).await;
    assert_eq!(copies[1], 0, "the member who left gets nothing");
    assert!(copies.iter().enumerate().all(|(i, n)| i == 1 || *n == 1), "{copies:?}");
    let list = f.svc.list_conversations(&f.members[1], Some(200), None).await.unwrap();
    assert!(list.items.iter().all(|c| c.conversation_id != f.group), "the group must not come back");
}

/// A member who leaves and rejoins while a delivery to them is held gets a fresh membership:
/// the held write, made from the old membership's summary, must not land on the new one (it
/// would mark a message from before they rejoined as unread).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_who_leaves_and_rejoins_mid_fanout_starts_afresh() {
    // From u3, so that u1 would count it as unread.
    let (f, seq) = with_first_delivery_held(3, |f| async move {
        f.svc.leave_group(&f.members[1], &f.group).await.unwrap();
        f.svc.join_group(&f.members[1], &f.group, None).await.unwrap();
    })
    .await;
    let copies = f.copies(seq).await;
    assert!(copies.iter().all(|n| *n <= 1), "never twice: {copies:?}");
    let list = f.svc.list_conversations(&f.members[1], Some(200), None).await.unwrap();
    let group = list.items.iter().find(|c| c.conversation_id == f.group).expect("back in the group");
    assert_eq!(group.unread, 0, "the message is from before they rejoined");
}

#[tokio::test]
async fn an_index_batch_reports_each_job_and_a_bad_one_fails_alone() {
    let f = fixture(30_000).await;
    let seq = f.send("m1").await;
    let good = format!(r#"{{"kind":"message","v":1,"conversation_id":"{}","seq":{seq}}}"#, f.group);
    let group = format!(r#"{{"kind":"group","v":1,"group_id":"{}"}}"#, f.group);
    let missing = format!(r#"{{"kind":"message","v":1,"conversation_id":"{}","seq":999}}"#, f.group);
    let outcomes = f
        .svc
        .handle_index_batch(&[&good, "garbage", &missing, r#"{"kind":"group","v":9,"group_id":"g_x"}"#, &group])
        .await;
    let ok: Vec<bool> = outcomes.iter().map(Result::is_ok).collect();
    assert_eq!(ok, vec![true, false, false, false, true]);
    let hits = f.svc.search_messages(&f.members[0], Some("text m1".into()), None, None, None).await.unwrap();
    assert_eq!(hits.items.len(), 1);
}

/// The local server's indexer hands over up to ten thousand jobs at once, read a thousand at a
/// time: each outcome stays with its job across those chunks.
#[tokio::test]
async fn a_large_index_batch_keeps_each_outcome_with_its_job() {
    let f = fixture(30_000).await;
    let mut goods = Vec::new();
    for m in ["m1", "m2", "m3"] {
        let seq = f.send(m).await;
        goods.push(format!(r#"{{"kind":"message","v":1,"conversation_id":"{}","seq":{seq}}}"#, f.group));
    }
    let missing = format!(r#"{{"kind":"message","v":1,"conversation_id":"{}","seq":99999}}"#, f.group);
    // The bad jobs sit on either side of each chunk boundary, and at the very end.
    let bad = [999, 1000, 1999, 2000, 2344];
    let bodies: Vec<&str> = (0..2345)
        .map(|i| match i {
            1500 => missing.as_str(),
            i if bad.contains(&i) => "garbage",
            i => goods[i % 3].as_str(),
        })
        .collect();
    let outcomes = f.svc.handle_index_batch(&bodies).await;
    assert_eq!(outcomes.len(), bodies.len());
    let failed: Vec<usize> = outcomes.iter().enumerate().filter(|(_, o)| o.is_err()).map(|(i, _)| i).collect();
    assert_eq!(failed, vec![999, 1000, 1500, 1999, 2000, 2344]);
    // Indexed again and again, each message is still found once.
    for m in ["m1", "m2", "m3"] {
        let hits = f.svc.search_messages(&f.members[0], Some(format!("text {m}")), None, None, None).await.unwrap();
        assert_eq!(hits.items.len(), 1, "{m}");
    }
}

/// The worker loop on a real queue: a job that always fails is retried with backoff, then
/// dead-lettered (not lost, not retried forever), while good jobs beside it go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_job_is_retried_then_dead_lettered_while_good_jobs_pass() {
    use im_shared::queue::names::{INDEX, INDEX_DLQ};
    use im_shared::service::worker::{Worker, WorkerConfig};
    let dir = tempfile::tempdir().unwrap().keep();
    let tables = Arc::new(RedbTables::open(&dir.join("t.redb")).unwrap());
    let queue = Arc::new(EmbeddedQueue::open(&dir.join("q.redb"), service_queues(3)).unwrap());
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir.join("search")).unwrap());
    let svc = Arc::new(Service::new(tables, queue.clone(), search, Config::default()));
    svc.put_me("u", ProfileInput { name: "u".into(), gender: None, avatar_url: None, bio: None }).await.unwrap();
    let g = svc
        .create_group(
            "u",
            CreateGroupInput {
                name: "poison test".into(),
                description: None,
                join_policy: JoinPolicy::Open,
                members: None,
            },
        )
        .await
        .unwrap()
        .group_id;
    queue
        .send_batch(INDEX, vec![r#"{"kind":"message","v":1,"conversation_id":"g_gone","seq":1}"#.into()])
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = WorkerConfig {
        visibility: Duration::from_secs(5),
        wait: Duration::from_millis(100),
        retry_base: Duration::from_millis(20),
    };
    let worker = tokio::spawn(svc.clone().run_worker(Worker::Index, cfg, stop_rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while queue.depth(INDEX_DLQ).await.unwrap().waiting == 0 {
        assert!(std::time::Instant::now() < deadline, "the poison job never reached the dead-letter queue");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found = svc.search_groups(Some("poison test".into()), None, None).await.unwrap();
    assert_eq!(found.items.len(), 1, "the group's own index job went through");
    assert_eq!(found.items[0].group_id, g);
    let main = queue.depth(INDEX).await.unwrap();
    assert_eq!((main.waiting, main.in_flight), (0, 0), "nothing left to retry");
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
}

/// A queue whose sends to one queue fail while `down` is set: a job that never reaches it.
struct Unreachable {
    inner: Arc<EmbeddedQueue>,
    queue: &'static str,
    down: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Queue for Unreachable {
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<(), QueueError> {
        if queue == self.queue && self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError::Unavailable(format!("{queue} is unreachable")));
        }
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

/// A single chat's send delivers with its store write; where search is fed by index jobs, its
/// outbox row stands for the index job alone. With the index queue unreachable the send still
/// succeeds, delivered; the sweeper enqueues the index job (and a fan-out job, which finds
/// both inboxes done and deletes the row) once the queue is back.
#[tokio::test]
async fn a_single_chat_is_delivered_with_its_send_and_its_index_job_survives_a_queue_outage() {
    use im_shared::queue::names::INDEX;
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(EmbeddedQueue::open(&dir.path().join("q.redb"), service_queues(5)).unwrap());
    let queue = Arc::new(Unreachable { inner: inner.clone(), queue: INDEX, down: true.into() });
    let tables = Arc::new(RedbTables::open(&dir.path().join("t.redb")).unwrap());
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir.path().join("search")).unwrap());
    let svc = Service::new(tables, queue.clone(), search, Config { outbox_grace_ms: 0, ..Config::default() });
    for u in ["ann", "ben"] {
        svc.put_me(u, ProfileInput { name: u.into(), gender: None, avatar_url: None, bio: None }).await.unwrap();
    }
    svc.request_friend("ann", "ben", None).await.unwrap();
    let conv = svc.accept_friend("ben", "ann").await.unwrap().conversation_id;
    let input = SendInput { client_msg_id: "s1".into(), kind: "text".into(), text: "kumquat pie".into() };
    let seq = svc.send("ann", &conv, input).await.unwrap().message.seq;
    let copies = |items: Vec<im_shared::model::SyncEntry>| {
        items.iter().filter(|e| e.message.as_ref().is_some_and(|m| m.conversation_id == conv && m.seq == seq)).count()
    };
    for u in ["ann", "ben"] {
        assert_eq!(copies(svc.sync(u, Some(0), Some(500)).await.unwrap().items), 1, "{u}'s inbox");
    }
    assert_eq!(inner.depth(INDEX).await.unwrap().waiting, 0, "the index job did not get through");
    queue.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(svc.sweep_outbox().await.unwrap(), 1);
    let jobs = inner.receive(INDEX, 10, Duration::from_secs(60), Duration::from_millis(100)).await.unwrap();
    let bodies: Vec<&str> = jobs.iter().map(|d| d.body.as_str()).collect();
    assert!(svc.handle_index_batch(&bodies).await.iter().all(Result::is_ok));
    for job in inner.receive(FANOUT, 10, Duration::from_secs(60), Duration::from_millis(100)).await.unwrap() {
        svc.handle_fanout(&job.body).await.unwrap();
        inner.ack(FANOUT, &job.receipt).await.unwrap();
    }
    for u in ["ann", "ben"] {
        assert_eq!(copies(svc.sync(u, Some(0), Some(500)).await.unwrap().items), 1, "{u}'s inbox, once");
    }
    let found = svc.search_messages("ben", Some("kumquat".into()), None, None, None).await.unwrap();
    assert_eq!(found.items.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seq]);
    assert_eq!(svc.sweep_outbox().await.unwrap(), 0, "the row went with the index job");
}

/// A service on tables with the local server's change feed, and ann and ben's single chat.
struct FeedFixture {
    tables: RedbTables,
    queue: Arc<EmbeddedQueue>,
    svc: Arc<Service>,
    conv: String,
}

async fn feed_fixture(dir: &std::path::Path, search: Arc<dyn Search>) -> FeedFixture {
    let tables = RedbTables::open(&dir.join("t.redb"))
        .unwrap()
        .with_change_feed(im_shared::service::search::index_job_of_change);
    let queue = Arc::new(EmbeddedQueue::open(&dir.join("q.redb"), service_queues(5)).unwrap());
    let cfg = Config { index_jobs: false, ..Config::default() };
    let svc = Arc::new(Service::new(Arc::new(tables.clone()), queue.clone(), search, cfg));
    for u in ["ann", "ben"] {
        svc.put_me(u, ProfileInput { name: u.into(), gender: None, avatar_url: None, bio: None }).await.unwrap();
    }
    svc.request_friend("ann", "ben", None).await.unwrap();
    let conv = svc.accept_friend("ben", "ann").await.unwrap().conversation_id;
    FeedFixture { tables, queue, svc, conv }
}

/// The local server's indexer, fed by the tables' change feed: each message is found exactly
/// once. Records still in the feed when it starts (a crash after a search commit and before the
/// records were forgotten: here their documents are indexed beforehand, and the records kept)
/// replace their documents; records written after it starts are staged as new documents and
/// committed; and the feed is emptied.
#[tokio::test]
async fn the_change_feed_indexes_each_message_once_with_records_left_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir.path().join("search")).unwrap());
    let FeedFixture { tables, svc, conv, .. } = feed_fixture(dir.path(), search).await;
    let send = |i: usize| {
        let (svc, conv) = (svc.clone(), conv.clone());
        async move {
            let input = SendInput { client_msg_id: format!("m{i}"), kind: "text".into(), text: format!("quince {i}") };
            svc.send("ann", &conv, input).await.unwrap();
        }
    };
    for i in 0..3 {
        send(i).await;
    }
    let left: Vec<(u64, String)> = tables.changes(None, 100).await.unwrap();
    assert_eq!(left.len(), 3, "a record per message: {left:?}");
    let bodies: Vec<&str> = left.iter().map(|(_, b)| b.as_str()).collect();
    assert!(svc.handle_index_batch(&bodies).await.iter().all(Result::is_ok), "indexed before the crash");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let feed = tokio::spawn(svc.clone().run_change_feed(Arc::new(tables.clone()), stopped));
    for i in 3..6 {
        send(i).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let found = svc.search_messages("ben", Some("quince".into()), None, Some(50), None).await.unwrap();
        if found.items.len() >= 6 && tables.changes(None, 1).await.unwrap().is_empty() {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "not all indexed in 10 s: {} found", found.items.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut texts: Vec<String> = found.items.iter().map(|m| m.text.clone()).collect();
    texts.sort();
    assert_eq!(texts, (0..6).map(|i| format!("quince {i}")).collect::<Vec<_>>(), "each once");
    stop.send(true).unwrap();
    feed.await.unwrap();
}

/// Search whose commits fail while `failing` is set (a full disk under the index, say).
struct FlakyCommit {
    inner: im_shared::search::embedded::TantivySearch,
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Search for FlakyCommit {
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError> {
        self.inner.index(docs).await
    }
    async fn stage(&self, docs: Vec<StagedDoc>) -> Result<BulkOutcome, SearchError> {
        self.inner.stage(docs).await
    }
    async fn commit(&self) -> Result<(), SearchError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SearchError::Unavailable("the test's search commits fail".into()));
        }
        self.inner.commit().await
    }
    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.inner.search_messages(q).await
    }
    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.inner.search_groups(q).await
    }
    async fn clear(&self) -> Result<(), SearchError> {
        self.inner.clear().await
    }
}

/// While search commits fail, the change feed keeps its records and reads them again each
/// round, but a job that failed on its own (a stored message that does not parse) goes to the
/// index queue once, not once a round; once commits work, the rest are found and forgotten.
#[tokio::test]
async fn while_search_commits_fail_the_feed_waits_and_a_failed_job_is_queued_once() {
    use im_shared::queue::names::INDEX;
    use im_shared::schema::STORE;
    let dir = tempfile::tempdir().unwrap();
    let inner = im_shared::search::embedded::TantivySearch::open(&dir.path().join("search")).unwrap();
    let search = Arc::new(FlakyCommit { inner, failing: true.into() });
    let FeedFixture { tables, queue, svc, conv } = feed_fixture(dir.path(), search.clone()).await;
    for i in 0..2 {
        let input = SendInput { client_msg_id: format!("m{i}"), kind: "text".into(), text: format!("medlar {i}") };
        svc.send("ann", &conv, input).await.unwrap();
    }
    let bad = serde_json::json!({"timeline_id": conv, "seq": 99, "text": 5});
    tables.put(&STORE, bad.as_object().unwrap().clone(), Cond::NotExists).await.unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let feed = tokio::spawn(svc.clone().run_change_feed(Arc::new(tables.clone()), stopped));
    tokio::time::sleep(Duration::from_millis(1500)).await; // several rounds, every commit failing
    assert_eq!(queue.depth(INDEX).await.unwrap().waiting, 1, "the bad job, queued once");
    assert_eq!(tables.changes(None, 10).await.unwrap().len(), 2, "the good records wait in the feed");

    search.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = svc.search_messages("ben", Some("medlar".into()), None, None, None).await.unwrap();
        if found.items.len() == 2 && tables.changes(None, 1).await.unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not indexed 10 s after commits work again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queue.depth(INDEX).await.unwrap().waiting, 1, "and still once");
    stop.send(true).unwrap();
    feed.await.unwrap();
}

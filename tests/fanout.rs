//! Fan-out jobs at the service level, on the embedded adapters: a job delivered twice, a job
//! split across pages and redelivered, and a job lost between the store write and the queue,
//! recovered by the outbox sweeper. Every member's inbox holds the message exactly once.

use im_shared::model::JoinPolicy;
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::queue::names::FANOUT;
use im_shared::queue::{Delivery, Queue, service_queues};
use im_shared::service::groups::CreateGroupInput;
use im_shared::service::messages::SendInput;
use im_shared::service::users::ProfileInput;
use im_shared::service::{Config, Service};
use im_shared::tables::embedded::RedbTables;
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
    let tables = Arc::new(RedbTables::open(&dir.join("t.redb")).unwrap());
    let queue = Arc::new(EmbeddedQueue::open(&dir.join("q.redb"), service_queues(5)).unwrap());
    let cfg = Config { fanout_page: 3, fanout_batch: 2, outbox_grace_ms, ..Config::default() };
    let svc = Service::new(tables, queue.clone(), cfg);
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
    let mut rounds = 0;
    loop {
        let jobs = f.take_jobs().await;
        if jobs.is_empty() {
            break;
        }
        for job in &jobs {
            // At-least-once delivery: every job runs twice.
            f.svc.handle_fanout(&job.body).await.unwrap();
            f.svc.handle_fanout(&job.body).await.unwrap();
            f.queue.ack(FANOUT, &job.receipt).await.unwrap();
        }
        rounds += 1;
        assert!(rounds < 20, "the job chain must end");
    }
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
    loop {
        let jobs = f.take_jobs().await;
        if jobs.is_empty() {
            break;
        }
        for job in jobs {
            f.svc.handle_fanout(&job.body).await.unwrap();
            f.queue.ack(FANOUT, &job.receipt).await.unwrap();
        }
    }
    assert_eq!(f.copies(seq).await, vec![1; 10]);
    assert_eq!(f.svc.sweep_outbox().await.unwrap(), 0);
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

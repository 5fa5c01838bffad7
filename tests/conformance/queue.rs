//! The Queue port's contract (SQS semantics). Cases get an adapter whose queue `work` dead-letters
//! into `work-dlq` after [`MAX_RECEIVES`] receives.

use im_shared::queue::{Queue, QueueDef};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub type Adapter = Arc<dyn Queue>;
pub const WORK: &str = "work";
pub const DLQ: &str = "work-dlq";
pub const MAX_RECEIVES: u32 = 3;

/// The queues every adapter under test must be made with.
pub fn defs() -> Vec<QueueDef> {
    vec![
        QueueDef { name: WORK.into(), dead_letter: Some(DLQ.into()), max_receives: MAX_RECEIVES },
        QueueDef { name: DLQ.into(), dead_letter: None, max_receives: u32::MAX },
    ]
}

const LONG: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

async fn drain(q: &Adapter, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let got = q.receive(queue, 10, LONG, Duration::from_millis(200)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        for d in got {
            q.ack(queue, &d.receipt).await.unwrap();
            out.push(d.body);
        }
    }
}

pub async fn sent_messages_are_received_once_each_and_acked_ones_are_gone(q: Adapter) {
    let bodies: Vec<String> = (0..25).map(|i| format!("job {i} ✓")).collect();
    q.send_batch(WORK, bodies.clone()).await.unwrap();
    let mut got = drain(&q, WORK).await;
    got.sort();
    let mut want = bodies;
    want.sort();
    assert_eq!(got, want);
    assert!(q.receive(WORK, 10, LONG, NO_WAIT).await.unwrap().is_empty());
    assert_eq!(q.depth(WORK).await.unwrap().waiting + q.depth(WORK).await.unwrap().in_flight, 0);
}

pub async fn an_unacknowledged_message_returns_after_its_visibility_timeout(q: Adapter) {
    q.send_batch(WORK, vec!["x".into()]).await.unwrap();
    let first = q.receive(WORK, 10, Duration::from_millis(500), Duration::from_secs(2)).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].receive_count, 1);
    assert!(q.receive(WORK, 10, LONG, NO_WAIT).await.unwrap().is_empty(), "hidden while in flight");
    assert_eq!(q.depth(WORK).await.unwrap().in_flight, 1);
    let second = q.receive(WORK, 10, LONG, Duration::from_secs(3)).await.unwrap();
    assert_eq!(second.len(), 1, "visible again after the timeout");
    assert_eq!((second[0].id.as_str(), second[0].receive_count), (first[0].id.as_str(), 2));
    // The first receipt is stale. Acknowledging with it never fails; whether it deletes is the
    // backend's choice (SQS: "might not be deleted"; the embedded queue does not), so consumers
    // must be idempotent, as ours are.
    q.ack(WORK, &first[0].receipt).await.unwrap();
    q.ack(WORK, &second[0].receipt).await.unwrap();
    assert_eq!(q.depth(WORK).await.unwrap(), Default::default(), "the latest receipt deletes");
}

pub async fn retry_after_delays_a_message(q: Adapter) {
    q.send_batch(WORK, vec!["later".into()]).await.unwrap();
    let d = q.receive(WORK, 1, LONG, Duration::from_secs(2)).await.unwrap().remove(0);
    q.retry_after(WORK, &d.receipt, Duration::from_millis(700)).await.unwrap();
    assert!(q.receive(WORK, 1, LONG, NO_WAIT).await.unwrap().is_empty(), "not before its delay");
    let again = q.receive(WORK, 1, LONG, Duration::from_secs(3)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
    q.ack(WORK, &again[0].receipt).await.unwrap();
}

pub async fn a_message_failing_max_receives_times_is_dead_lettered_and_redriven(q: Adapter) {
    q.send_batch(WORK, vec!["poison".into()]).await.unwrap();
    for n in 1..=MAX_RECEIVES {
        let d = q.receive(WORK, 1, LONG, Duration::from_secs(2)).await.unwrap();
        assert_eq!(d.len(), 1, "receive {n}");
        assert_eq!(d[0].receive_count, n);
        q.retry_after(WORK, &d[0].receipt, Duration::ZERO).await.unwrap();
    }
    assert!(
        q.receive(WORK, 1, LONG, Duration::from_millis(300)).await.unwrap().is_empty(),
        "moved, not delivered again"
    );
    assert_eq!(q.depth(DLQ).await.unwrap().waiting, 1);
    assert_eq!(q.redrive(WORK).await.unwrap(), 1);
    assert_eq!(q.depth(DLQ).await.unwrap().waiting, 0);
    let back = q.receive(WORK, 1, LONG, Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "poison");
    assert_eq!(back[0].receive_count, 1, "a redriven message starts its count afresh");
    q.ack(WORK, &back[0].receipt).await.unwrap();
}

/// Concurrent receivers together get every message. SQS standard queues are at-least-once and
/// may hand a message to two receivers (moto does so under load), so the contract is "none
/// lost"; the embedded queue's stronger promise (never twice while in flight) is checked in
/// its own tests with [`receive_concurrently`].
pub async fn concurrent_receivers_get_every_message(q: Adapter) {
    let all = receive_concurrently(&q, 60).await;
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), 60, "no message lost: {all:?}");
}

/// Sends `n` messages and drains them with 4 concurrent receivers; every body received.
pub async fn receive_concurrently(q: &Adapter, n: usize) -> Vec<String> {
    let bodies: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    q.send_batch(WORK, bodies).await.unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = q.receive(WORK, 7, LONG, Duration::from_millis(300)).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for d in got {
                        q.ack(WORK, &d.receipt).await.unwrap();
                        mine.push(d.body);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all
}

pub async fn receive_waits_for_a_message_sent_meanwhile(q: Adapter) {
    let q2 = q.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q2.send_batch(WORK, vec!["late".into()]).await.unwrap();
    });
    let got = q.receive(WORK, 1, LONG, Duration::from_secs(5)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    q.ack(WORK, &got[0].receipt).await.unwrap();
}

#[macro_export]
macro_rules! queue_conformance {
    ($factory:path) => {
        $crate::conformance_tests!(
            conformance::queue,
            $factory,
            [
                sent_messages_are_received_once_each_and_acked_ones_are_gone,
                an_unacknowledged_message_returns_after_its_visibility_timeout,
                retry_after_delays_a_message,
                a_message_failing_max_receives_times_is_dead_lettered_and_redriven,
                concurrent_receivers_get_every_message,
                receive_waits_for_a_message_sent_meanwhile,
            ]
        );
    };
}

//! Queue consumers, the same loop for every job queue: receive a batch, handle it, acknowledge
//! what succeeded, and make what failed visible again after an exponential backoff. The queue
//! itself dead-letters a job after its receive limit, so a poison job stops being retried and
//! waits for an operator (`im-server redrive`).

use super::*;
use crate::queue::Delivery;
use crate::queue::names::{FANOUT, INDEX};
use std::time::Instant;
use tokio::sync::watch;

/// Which queue a worker consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// Group fan-out jobs, one at a time.
    Fanout,
    /// Search indexing jobs, a batch per index call.
    Index,
}

impl Worker {
    pub fn queue(self) -> &'static str {
        match self {
            Worker::Fanout => FANOUT,
            Worker::Index => INDEX,
        }
    }

    /// Jobs taken at once: no more than the worker handles at once, because a receive counts
    /// towards a job's dead-letter limit. A fan-out worker holding ten jobs while it runs the
    /// first would, if the process were killed, charge all ten with a failed attempt: found by
    /// the kill -9 loop, where jobs that never ran were dead-lettered. An index batch is one
    /// search commit, so the index worker takes up to a thousand.
    fn batch(self) -> usize {
        match self {
            Worker::Fanout => 1,
            Worker::Index => 1000,
        }
    }

    /// The least time from the start of one batch to the next receive: meanwhile jobs gather
    /// in the queue. Each index batch is one search commit, which starts a new segment (tantivy
    /// zeroes a hash table for it and merges segments later): committing every batch as it
    /// came, about one per 50 messages under load, was a third of the CPU of a send (perf,
    /// im-bench). Pacing bounds the commits to five a second whatever the load, and costs
    /// nothing when idle: a job arriving after a quiet gap is handled at once.
    fn pace(self) -> Duration {
        match self {
            Worker::Fanout => Duration::ZERO,
            Worker::Index => Duration::from_millis(200),
        }
    }
}

/// Changes the local server's indexer takes from the change feed at once: one search commit.
/// Unlike a queue's receive, reading the feed charges nothing to a job, so a batch may hold
/// all that a busy second brings.
const CHANGE_FEED_BATCH: usize = 10_000;

/// A commit this big or bigger means the server is busy (a thousand messages a second or more).
const BUSY_COMMIT: usize = 1000;

/// The least time from the start of one change feed batch to the next read: the index worker's
/// pace, or a second once a commit carries [`BUSY_COMMIT`] documents. A search commit has a
/// fixed cost (a new segment with its hash table, files and fsyncs, and merges later) on the
/// same two cores as the sends; at five commits a second of a thousand messages each, indexing
/// could not keep up with 6,000 sends a second, and was a tenth of the server's CPU samples
/// (perf, im-bench send at 64 clients). A second is also OpenSearch's refresh interval, the
/// bound the API gives for search on AWS; below a thousand messages a second results stay as
/// fresh as before.
fn change_feed_pace(indexed: usize) -> Duration {
    if indexed >= BUSY_COMMIT { Duration::from_secs(1) } else { Worker::Index.pace() }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub visibility: Duration,
    pub wait: Duration,
    /// The first retry's delay; it doubles with each receive, up to a minute.
    pub retry_base: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            visibility: Duration::from_secs(30),
            wait: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
        }
    }
}

impl Service {
    /// The outcome of each job of a batch, in order.
    async fn handle_batch(&self, worker: Worker, batch: &[Delivery]) -> Vec<Result<()>> {
        match worker {
            Worker::Fanout => {
                let mut out = Vec::with_capacity(batch.len());
                for d in batch {
                    out.push(self.handle_fanout(&d.body).await);
                }
                out
            }
            Worker::Index => self.handle_index_batch(&batch.iter().map(|d| d.body.as_str()).collect::<Vec<_>>()).await,
        }
    }

    /// Consumes `worker`'s queue until `stop` is set.
    pub async fn run_worker(self: Arc<Self>, worker: Worker, cfg: WorkerConfig, stop: watch::Receiver<bool>) {
        let queue = worker.queue();
        let mut not_before = Instant::now();
        while !*stop.borrow() {
            let batch = match self.receive_batch(worker, &cfg, not_before).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(queue, error = %e, "worker could not receive; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            not_before = Instant::now() + worker.pace();
            let outcomes = self.handle_batch(worker, &batch).await;
            // Settled all at once: on the embedded queue they share one commit.
            futures_util::future::join_all(
                batch.iter().zip(outcomes).map(|(d, outcome)| self.settle(queue, &cfg, d, outcome)),
            )
            .await;
        }
    }

    /// Up to `worker.batch()` jobs: from `not_before` on (the worker's pace: meanwhile jobs
    /// gather in the queue, not leased, so a worker killed while it waits holds none), one
    /// receive that waits (a queue receives ten at most), then more without waiting while full
    /// receives show that more are due.
    async fn receive_batch(
        &self,
        worker: Worker,
        cfg: &WorkerConfig,
        not_before: Instant,
    ) -> std::result::Result<Vec<Delivery>, crate::queue::QueueError> {
        let (queue, max) = (worker.queue(), worker.batch());
        tokio::time::sleep_until(not_before.into()).await;
        let mut asked = max.min(10);
        let mut batch = self.queue.receive(queue, asked, cfg.visibility, cfg.wait).await?;
        let mut full = batch.len() == asked;
        while full && batch.len() < max {
            asked = (max - batch.len()).min(10);
            let more = self.queue.receive(queue, asked, cfg.visibility, Duration::ZERO).await?;
            full = more.len() == asked;
            batch.extend(more);
        }
        Ok(batch)
    }

    /// Acknowledges a finished job, or makes a failed one visible again after its backoff.
    async fn settle(&self, queue: &str, cfg: &WorkerConfig, d: &Delivery, outcome: Result<()>) {
        match outcome {
            Ok(()) => {
                if let Err(e) = self.queue.ack(queue, &d.receipt).await {
                    tracing::warn!(queue, error = %e, "could not acknowledge a finished job; it will run again harmlessly");
                }
            }
            Err(e) => {
                let doublings = d.receive_count.saturating_sub(1).min(6);
                let delay = (cfg.retry_base * 2u32.pow(doublings)).min(Duration::from_secs(60));
                tracing::warn!(queue, job = %d.body, receives = d.receive_count, error = %e,
                    retry_in_ms = delay.as_millis() as u64, "job failed; it will be retried");
                if let Err(e) = self.queue.retry_after(queue, &d.receipt, delay).await {
                    tracing::warn!(queue, error = %e, "could not delay a failed job; it reappears after its visibility timeout");
                }
            }
        }
    }
}

#[cfg(feature = "embedded")]
impl Service {
    /// Feeds the search index from the embedded tables' change feed until `stop` is set, as the
    /// tables' streams feed it on AWS: a batch of the oldest records (index jobs) at the index
    /// worker's pace, indexed with one commit, then forgotten. A job that fails goes to the
    /// index queue, whose worker retries it with backoff and dead-letters it if it keeps
    /// failing; if even that send fails, the batch stays in the feed for the next round.
    pub async fn run_change_feed(
        self: Arc<Self>,
        tables: crate::tables::embedded::RedbTables,
        mut stop: watch::Receiver<bool>,
    ) {
        const IDLE: Duration = Duration::from_millis(50);
        while !*stop.borrow() {
            let started = Instant::now();
            let pause = match tables.changes(CHANGE_FEED_BATCH).await {
                Ok(batch) if batch.is_empty() => IDLE,
                Ok(batch) => {
                    let n = batch.len();
                    self.index_changes(&tables, batch).await;
                    change_feed_pace(n).saturating_sub(started.elapsed())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the change feed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn index_changes(&self, tables: &crate::tables::embedded::RedbTables, batch: Vec<(u64, String)>) {
        let bodies: Vec<&str> = batch.iter().map(|(_, b)| b.as_str()).collect();
        let outcomes = self.handle_index_batch(&bodies).await;
        let failed: Vec<String> =
            bodies.iter().zip(&outcomes).filter(|(_, o)| o.is_err()).map(|(b, _)| b.to_string()).collect();
        if let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) {
            tracing::warn!(jobs = failed.len(), error = %e, "indexing failed; the jobs go to the index queue to be retried");
            if let Err(e) = self.queue.send_batch(INDEX, failed).await {
                tracing::warn!(error = %e, "could not queue the failed index jobs; they stay in the change feed");
                return;
            }
        }
        if let Err(e) = tables.forget_changes(batch.iter().map(|(p, _)| *p).collect()).await {
            tracing::warn!(error = %e, "could not forget indexed changes; they will be indexed again");
        }
    }
}

//! Queue consumers, the same loop for every job queue: receive a batch, handle it, acknowledge
//! what succeeded, and make what failed visible again after an exponential backoff. The queue
//! itself dead-letters a job after its receive limit, so a poison job stops being retried and
//! waits for an operator (`im-server redrive`).

use super::*;
use crate::changes::{Change, ChangeFeed};
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

/// Changes the local server's indexer takes from the change feed at once. Unlike a queue's
/// receive, reading the feed charges nothing to a job, so a batch may hold all that a busy
/// second brings.
const CHANGE_FEED_BATCH: usize = 10_000;

/// Documents staged since the last search commit that mean the server is busy (a thousand
/// messages a second or more): the next commit then waits for [`BUSY_COMMIT_EVERY`].
const BUSY_COMMIT: usize = 1000;

/// The least time between search commits while busy. A search commit has a fixed cost (a new
/// segment with its hash table, files and fsyncs, the deletes looked up in every segment, and
/// merges later) on the same two cores as the sends; at five commits a second of a thousand
/// messages each, indexing could not keep up with 6,000 sends a second, and was a tenth of the
/// server's CPU samples (perf, im-bench send at 64 clients). A second is also OpenSearch's
/// refresh interval, the bound the API gives for search on AWS.
const BUSY_COMMIT_EVERY: Duration = Duration::from_secs(1);

/// Whether the change feed's indexer commits now, with `staged` documents staged since the last
/// commit, `since` ago. Below a thousand messages a second every round commits, so results are
/// as fresh as the index worker's pace.
fn commit_due(staged: usize, since: Duration) -> bool {
    staged < BUSY_COMMIT || since >= BUSY_COMMIT_EVERY
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

/// The change feed records staged in the search index and not yet committed: read on past
/// them, and forgotten once a commit makes them durable.
struct Staged {
    positions: Vec<u64>,
    committed: Instant,
    /// Records up to this position may have been handed to the search index before (those in
    /// the feed at start-up, which a crash may have left committed and not forgotten, and
    /// those read again after a failure), so their documents are staged as replacements. Past
    /// it, a job for the change that created its row stages its document as new, and the
    /// index need not look for an older version (see [`crate::search::StagedDoc`]). Records
    /// are read from the oldest on, so once the records up to it are forgotten none is left:
    /// then it is `None` (and positions, which start again at 1 once the feed is empty, are
    /// all new).
    seen_until: Option<u64>,
}

impl Staged {
    /// Where the next read starts: after the last staged record, or at the oldest record.
    fn after(&self) -> Option<u64> {
        self.positions.last().copied()
    }

    /// Starts over from the oldest record of the feed: what was staged is staged again,
    /// as replacements (harmless).
    fn reset(&mut self) {
        self.seen_until = self.seen_until.max(self.after());
        self.positions.clear();
    }

    /// The records up to the last staged one were committed and forgotten.
    fn forgotten(&mut self) {
        if self.seen_until <= self.after() {
            self.seen_until = None;
        }
        self.positions.clear();
        self.committed = Instant::now();
    }
}

impl Service {
    /// Feeds the search index from the tables' change feed until `stop` is set, as the tables'
    /// streams feed it on AWS. At the index worker's pace it reads the records (index
    /// jobs) after those already staged and stages their documents, so tantivy indexes them as
    /// they come; a commit, every round when idle and once a second when busy
    /// ([`commit_due`]), makes them durable and searchable, and then they are forgotten. A job
    /// that fails goes to the index queue, whose worker retries it with backoff and
    /// dead-letters it if it keeps failing. Whatever else fails (that send, the commit, the
    /// forget), the records stay in the feed and are read again from the oldest.
    pub async fn run_change_feed(self: Arc<Self>, feed: Arc<dyn ChangeFeed>, mut stop: watch::Receiver<bool>) {
        const IDLE: Duration = Duration::from_millis(50);
        let seen_until = loop {
            match feed.last_change().await {
                Ok(last) => break last,
                Err(e) => tracing::warn!(error = %e, "could not read the change feed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        };
        let mut staged = Staged { positions: Vec::new(), committed: Instant::now(), seen_until };
        while !*stop.borrow() {
            let started = Instant::now();
            let pause = match feed.changes(staged.after(), CHANGE_FEED_BATCH).await {
                Ok(batch) if batch.is_empty() => {
                    self.commit_changes(feed.as_ref(), &mut staged).await;
                    IDLE
                }
                Ok(batch) => {
                    self.stage_changes(feed.as_ref(), &mut staged, batch).await;
                    if commit_due(staged.positions.len(), staged.committed.elapsed()) {
                        self.commit_changes(feed.as_ref(), &mut staged).await;
                    }
                    Worker::Index.pace().saturating_sub(started.elapsed())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the change feed; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        // What is staged is committed and forgotten, so a restart has nothing to index again.
        self.commit_changes(feed.as_ref(), &mut staged).await;
    }

    async fn stage_changes(&self, feed: &dyn ChangeFeed, staged: &mut Staged, batch: Vec<Change>) {
        let bodies: Vec<&str> = batch.iter().map(|(_, b)| b.as_str()).collect();
        let mut jobs = super::search::parse_jobs(&bodies).await;
        for ((position, _), job) in batch.iter().zip(&mut jobs) {
            if Some(*position) <= staged.seen_until
                && let Ok(j) = job
            {
                j.again();
            }
        }
        let outcomes = self.apply_jobs(jobs, super::search::Apply::Stage).await;
        let Some(Err(e)) = outcomes.iter().find(|o| o.is_err()) else {
            staged.positions.extend(batch.iter().map(|(p, _)| *p));
            return;
        };
        let (mut failed, mut failed_at) = (Vec::new(), Vec::new());
        for ((position, body), outcome) in batch.iter().zip(&outcomes) {
            if outcome.is_err() {
                failed.push(body.clone());
                failed_at.push(*position);
            }
        }
        tracing::warn!(jobs = failed.len(), error = %e, "indexing failed; the jobs go to the index queue to be retried");
        let handed_over = match self.queue.send_batch(INDEX, failed).await {
            Err(e) => {
                tracing::warn!(error = %e, "could not queue the failed index jobs; they stay in the change feed");
                false
            }
            // The queue has them now: forgotten at once, not at the next search commit, which
            // may fail too (search down) and have the whole batch read and queued again each round.
            Ok(()) => match feed.forget_changes(failed_at).await {
                Err(e) => {
                    tracing::warn!(error = %e, "could not forget queued index jobs; they will be queued again (harmlessly)");
                    false
                }
                Ok(()) => true,
            },
        };
        if handed_over {
            staged.positions.extend(batch.iter().zip(&outcomes).filter(|(_, o)| o.is_ok()).map(|((p, _), _)| *p));
        } else {
            // Read again, as replacements: the queue's worker may have indexed some by then.
            staged.positions.extend(batch.iter().map(|(p, _)| *p));
            staged.reset();
        }
    }

    async fn commit_changes(&self, feed: &dyn ChangeFeed, staged: &mut Staged) {
        if staged.positions.is_empty() {
            return;
        }
        if let Err(e) = self.search.commit().await {
            tracing::warn!(error = %e, "could not commit the search index; its changes will be indexed again");
            staged.reset();
        } else if let Err(e) = feed.forget_changes(staged.positions.clone()).await {
            tracing::warn!(error = %e, "could not forget indexed changes; they will be indexed again");
            staged.reset();
        } else {
            staged.forgotten();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which records stage their documents as replacements: those up to `seen_until`, which a
    /// failure extends over everything staged, and which ends once they are all forgotten.
    #[test]
    fn records_read_again_after_a_failure_replace_until_they_are_forgotten() {
        let mut s = Staged { positions: vec![], committed: Instant::now(), seen_until: Some(4) };
        s.positions.extend([1, 2, 3]);
        s.forgotten();
        assert_eq!((s.seen_until, s.after()), (Some(4), None), "4 is still in the feed");
        s.positions.extend([4, 5, 6]);
        s.reset();
        assert_eq!((s.seen_until, s.after()), (Some(6), None), "5 and 6 may be in the index now");
        s.positions.extend([4, 5]);
        s.forgotten();
        assert_eq!(s.seen_until, Some(6));
        s.positions.extend([6, 7]);
        s.forgotten();
        assert_eq!(s.seen_until, None, "all forgotten: what comes next is new");
        s.reset();
        assert_eq!(s.seen_until, None, "a reset with nothing staged marks nothing");
    }

    #[test]
    fn a_busy_feed_commits_once_a_second_and_a_quiet_one_every_round() {
        assert!(commit_due(BUSY_COMMIT - 1, Duration::ZERO));
        assert!(!commit_due(BUSY_COMMIT, Duration::from_millis(999)));
        assert!(commit_due(BUSY_COMMIT * 5, BUSY_COMMIT_EVERY));
    }
}

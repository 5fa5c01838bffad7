//! The scenarios: each sets up what it needs through the API, measures the server at 1, 16
//! and 64 clients, and measures its baseline (`baseline.rs`) on the same rows.

use crate::api::{Api, User};
use crate::baseline::Direct;
use crate::measure::{self, Samples};
use im_storage::CommitStats;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const CLIENTS: [usize; 3] = [1, 16, 64];
const WORDS: [&str; 16] = [
    "apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "amber", "piano", "lemon", "orbit", "cedar",
    "delta", "ember", "frost", "grape",
];

/// One line of the results.
pub struct Row {
    pub scenario: String,
    pub clients: usize,
    pub ours: Samples,
    pub baseline: Option<Samples>,
    /// The durable commits made during the run, where there were any.
    pub commits: Option<Commits>,
}

/// What a run's group commits were like: how many table writes shared each, and what each
/// fdatasync made durable (pages written since the one before) and how long it took. The
/// disk's time per send is `sync_ms / writes`.
#[derive(Debug, Clone, Copy)]
pub struct Commits {
    pub writes: f64,
    pub pages_per_sync: f64,
    pub sync_ms: f64,
}

impl Commits {
    /// From the counters' growth over a run (`made`: see [`since`]); `None` if nothing committed.
    fn of(made: CommitStats) -> Option<Self> {
        (made.commits > 0 && made.syncs > 0).then(|| Commits {
            writes: made.writes as f64 / made.commits as f64,
            pages_per_sync: made.bytes_written as f64 / 4096.0 / made.syncs as f64,
            sync_ms: made.sync_nanos as f64 / 1e6 / made.syncs as f64,
        })
    }
}

/// How much the commit counters grew from `before` to `after`, added to `so_far`.
fn since(so_far: CommitStats, before: CommitStats, after: CommitStats) -> CommitStats {
    CommitStats {
        commits: so_far.commits + after.commits - before.commits,
        writes: so_far.writes + after.writes - before.writes,
        bytes_written: so_far.bytes_written + after.bytes_written - before.bytes_written,
        syncs: so_far.syncs + after.syncs - before.syncs,
        sync_nanos: so_far.sync_nanos + after.sync_nanos - before.sync_nanos,
    }
}

impl Row {
    /// Our time per operation over the baseline's, at the same concurrency.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|b| b.per_sec() / self.ours.per_sec())
    }
}

/// What the scenarios share: the server's API, its commit counter, the baseline's file.
pub struct Bench {
    pub api: Api,
    pub run: Duration,
    pub direct: Arc<Direct>,
    pub stats: Box<dyn Fn() -> CommitStats + Send + Sync>,
    pub quiesce: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>,
    /// Pairs of friends: (sender, recipient, conversation).
    pairs: Vec<(User, User, String)>,
    /// Messages `seed` has put in each pair's conversation (on both sides) so far.
    seeded: usize,
}

fn text(client: usize, i: u64) -> String {
    let i = i as usize;
    format!("{} and {} in message {i} of client {client}", WORDS[i % 16], WORDS[(i * 7 + client) % 16])
}

impl Bench {
    pub fn new(
        api: Api,
        run: Duration,
        direct: Direct,
        stats: Box<dyn Fn() -> CommitStats + Send + Sync>,
        quiesce: Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync>,
    ) -> Self {
        Bench { api, run, direct: Arc::new(direct), stats, quiesce, pairs: Vec::new(), seeded: 0 }
    }

    /// 64 pairs of friends, made once.
    async fn pairs(&mut self) -> Result<Vec<(User, User, String)>, String> {
        if self.pairs.is_empty() {
            let n = CLIENTS[2];
            let ids: Vec<String> = (0..n).flat_map(|c| [format!("a{c:02}"), format!("b{c:02}")]).collect();
            let users = self.api.users(ids).await?;
            for pair in users.chunks(2) {
                let conversation = self.api.befriend(&pair[0], &pair[1]).await?;
                self.pairs.push((pair[0].clone(), pair[1].clone(), conversation));
            }
        }
        Ok(self.pairs.clone())
    }

    /// Runs `op` at each client count with the commit counter around it.
    async fn ours<F, Fut>(&self, clients: usize, op: F) -> Result<(Samples, Option<Commits>), String>
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        (self.quiesce)().await?;
        let before = (self.stats)();
        let samples = measure::clients(clients, self.run, op).await?;
        let after = (self.stats)();
        Ok((samples, Commits::of(since(CommitStats::default(), before, after))))
    }

    fn baseline(
        &self,
        clients: usize,
        op: impl Fn(usize, u64) -> Result<(), String> + Send + Sync + 'static,
    ) -> Result<Samples, String> {
        measure::threads(clients, self.run, op)
    }

    /// Single-chat sends: client c sends to its own friend.
    pub async fn send(&mut self) -> Result<Vec<Row>, String> {
        let pairs = Arc::new(self.pairs().await?);
        let mut rows = Vec::new();
        for clients in CLIENTS {
            let (api, p) = (self.api.clone(), pairs.clone());
            let (ours, per_commit) = self
                .ours(clients, move |c, i| {
                    let (api, p) = (api.clone(), p.clone());
                    async move {
                        let (a, _, conv) = &p[c];
                        api.send(a, conv, &format!("send-{clients}-{c}-{i}"), &text(c, i)).await.map(drop)
                    }
                })
                .await?;
            let direct = self.direct.clone();
            let baseline = self.baseline(clients, move |c, i| {
                let (a, b) = (format!("a{c:02}"), format!("b{c:02}"));
                direct
                    .send(&format!("s-{c}"), &a, &format!("send-{clients}-{c}-{i}"), &text(c, i), &[a.clone(), b])
                    .map(drop)
            })?;
            rows.push(Row {
                scenario: "single-chat send".into(),
                clients,
                ours,
                baseline: Some(baseline),
                commits: per_commit,
            });
        }
        Ok(rows)
    }

    /// Tops up each pair's conversation to at least `n` messages, on both sides.
    async fn seed(&mut self, n: usize) -> Result<Vec<(User, User, String)>, String> {
        let pairs = self.pairs().await?;
        let (api, from) = (&self.api, self.seeded);
        let jobs = pairs.iter().enumerate().flat_map(|(c, (a, _, conv))| {
            (from..n).map(move |i| async move { api.send(a, conv, &format!("seed-{c}-{i}"), &text(c, i as u64)).await })
        });
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(jobs).buffer_unordered(32).try_collect::<Vec<_>>().await?;
        self.direct.write(|txn| {
            for c in 0..CLIENTS[2] {
                let (a, b) = (format!("a{c:02}"), format!("b{c:02}"));
                for i in from..n {
                    Direct::send_in(
                        txn,
                        &format!("s-{c}"),
                        &a,
                        &format!("seed-{c}-{i}"),
                        &text(c, i as u64),
                        &[a.clone(), b.clone()],
                    )?;
                }
            }
            Ok(())
        })?;
        self.seeded = self.seeded.max(n);
        Ok(pairs)
    }

    /// A 100-entry sync page, alone and while 16 clients send.
    pub async fn sync(&mut self) -> Result<Vec<Row>, String> {
        let pairs = Arc::new(self.seed(100).await?);
        let mut rows = Vec::new();
        for during_sends in [false, true] {
            for clients in CLIENTS {
                let stop = Arc::new(AtomicBool::new(false));
                let senders: Vec<_> = if during_sends {
                    (48..64)
                        .map(|c| {
                            let (api, p, stop) = (self.api.clone(), pairs.clone(), stop.clone());
                            tokio::spawn(async move {
                                let mut i = 0u64;
                                while !stop.load(Ordering::Relaxed) {
                                    let (a, _, conv) = &p[c];
                                    api.send(a, conv, &format!("bg-{clients}-{c}-{i}"), &text(c, i)).await?;
                                    i += 1;
                                }
                                Ok::<_, String>(())
                            })
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let (api, p) = (self.api.clone(), pairs.clone());
                let measured = if during_sends {
                    // The senders keep the queues busy: measure without waiting for them to drain.
                    measure::clients(clients, self.run, move |c, _| {
                        let (api, p) = (api.clone(), p.clone());
                        async move { sync_page(&api, &p[c].1).await }
                    })
                    .await
                    .map(|s| (s, None))
                } else {
                    self.ours(clients, move |c, _| {
                        let (api, p) = (api.clone(), p.clone());
                        async move { sync_page(&api, &p[c].1).await }
                    })
                    .await
                };
                stop.store(true, Ordering::Relaxed);
                for s in senders {
                    s.await.map_err(|e| e.to_string())??;
                }
                let (ours, per_commit) = measured?;
                let direct = self.direct.clone();
                let writers = during_sends.then(|| background_writers(&self.direct));
                let baseline = self.baseline(clients, move |c, _| {
                    let page = direct.sync_page(&format!("b{c:02}"), 0, 100)?;
                    if page.len() < 100 { Err(format!("baseline inbox has {} entries", page.len())) } else { Ok(()) }
                });
                if let Some((flag, threads)) = writers {
                    flag.store(true, Ordering::Relaxed);
                    for t in threads {
                        t.join().map_err(|_| "a baseline writer panicked")??;
                    }
                }
                let scenario = if during_sends { "sync page of 100, 16 senders busy" } else { "sync page of 100" };
                rows.push(Row {
                    scenario: scenario.into(),
                    clients,
                    ours,
                    baseline: Some(baseline?),
                    commits: per_commit,
                });
            }
        }
        Ok(rows)
    }

    /// A history page (30 messages, the default).
    pub async fn history(&mut self) -> Result<Vec<Row>, String> {
        let pairs = Arc::new(self.seed(30).await?);
        let mut rows = Vec::new();
        for clients in CLIENTS {
            let (api, p) = (self.api.clone(), pairs.clone());
            let (ours, _) = self
                .ours(clients, move |c, _| {
                    let (api, p) = (api.clone(), p.clone());
                    async move {
                        let (a, _, conv) = &p[c];
                        let n = api.count_items(a, &format!("/v1/conversations/{conv}/messages?limit=30")).await?;
                        expect_len(n, 30, "history page")
                    }
                })
                .await?;
            let direct = self.direct.clone();
            let baseline = self.baseline(clients, move |c, _| {
                let page = direct.history_page(&format!("s-{c}"), 30)?;
                if page.len() == 30 { Ok(()) } else { Err("short baseline history page".into()) }
            })?;
            rows.push(Row {
                scenario: "history page of 30".into(),
                clients,
                ours,
                baseline: Some(baseline),
                commits: None,
            });
        }
        Ok(rows)
    }

    /// The first page (50) of the conversation list of a user in 1,000 conversations.
    pub async fn conversations(&mut self) -> Result<Vec<Row>, String> {
        const N: usize = 1000;
        let hub = self.api.user("hub").await?;
        let friends = self.api.users((0..N).map(|i| format!("f{i:04}")).collect()).await?;
        let api = &self.api;
        use futures_util::{StreamExt, TryStreamExt};
        futures_util::stream::iter(friends.iter().enumerate())
            .map(|(i, f)| {
                let hub = &hub;
                async move {
                    let conv = api.befriend(hub, f).await?;
                    api.send(f, &conv, "hello", &text(i, 0)).await
                }
            })
            .buffer_unordered(32)
            .try_collect::<Vec<_>>()
            .await?;
        self.direct.write(|txn| {
            for i in 0..N {
                let f = format!("f{i:04}");
                Direct::put_user(txn, &f)?;
                Direct::send_in(txn, &format!("s-hub-{i}"), &f, "hello", &text(i, 0), &["hub".into(), f.clone()])?;
            }
            Ok(())
        })?;
        let hub = Arc::new(hub);
        let mut rows = Vec::new();
        for clients in CLIENTS {
            let (api, hub) = (self.api.clone(), hub.clone());
            let (ours, _) = self
                .ours(clients, move |_, _| {
                    let (api, hub) = (api.clone(), hub.clone());
                    async move {
                        let n = api.count_items(&hub, "/v1/conversations?limit=50").await?;
                        expect_len(n, 50, "conversation page")
                    }
                })
                .await?;
            let direct = self.direct.clone();
            let baseline = self.baseline(clients, move |_, _| {
                let page = direct.conversation_page("hub", 50)?;
                if page.len() == 50 { Ok(()) } else { Err("short baseline conversation page".into()) }
            })?;
            rows.push(Row {
                scenario: "conversation list, 50 of 1,000".into(),
                clients,
                ours,
                baseline: Some(baseline),
                commits: None,
            });
        }
        Ok(rows)
    }

    /// Full-text search of a user's messages (one word, newest 30). No storage baseline.
    pub async fn search(&mut self) -> Result<Vec<Row>, String> {
        let pairs = Arc::new(self.seed(30).await?);
        (self.quiesce)().await?; // everything indexed
        let mut rows = Vec::new();
        for clients in CLIENTS {
            let (api, p) = (self.api.clone(), pairs.clone());
            let (ours, _) = self
                .ours(clients, move |c, i| {
                    let (api, p) = (api.clone(), p.clone());
                    async move {
                        let n = api
                            .count_items(&p[c].0, &format!("/v1/search/messages?q={}", WORDS[i as usize % 16]))
                            .await?;
                        if n == 0 { Err("search found nothing".into()) } else { Ok(()) }
                    }
                })
                .await?;
            rows.push(Row { scenario: "search, one word".into(), clients, ours, baseline: None, commits: None });
        }
        Ok(rows)
    }

    /// A message to a group of each size, one at a time: the time from the send until the
    /// last member in fan-out order (the greatest user id) has it in their inbox.
    pub async fn groups(&mut self, sizes: &[usize]) -> Result<Vec<Row>, String> {
        let largest = sizes.iter().copied().max().unwrap_or(0);
        let members = self.api.users((0..largest).map(|i| format!("m{i:05}")).collect()).await?;
        let mut rows = Vec::new();
        for &n in sizes {
            let (owner, rest) = members[..n].split_first().ok_or("a group needs members")?;
            let group = self.api.group(owner, rest).await?;
            let last = &members[n - 1];
            let reps = if n >= 10_000 {
                3
            } else if n >= 1000 {
                5
            } else {
                10
            };
            let mut ours = Samples::default();
            let mut made = CommitStats::default();
            for rep in 0..reps {
                (self.quiesce)().await?;
                let mut after = self.api.sync_end(last).await?;
                let before = (self.stats)();
                let t = Instant::now();
                let seq = self.api.send(owner, &group, &format!("g{n}-{rep}"), &text(0, rep)).await?;
                'wait: loop {
                    let (items, next, _) = self.api.sync(last, after, 100).await?;
                    after = next;
                    for item in &items {
                        if item["conversation_id"] == group.as_str() && item["message"]["seq"] == seq {
                            break 'wait;
                        }
                    }
                    if t.elapsed() > Duration::from_secs(120) {
                        return Err(format!("group of {n}: the last member did not get message {seq}"));
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let took = t.elapsed();
                ours.latencies.push(took);
                ours.elapsed += took;
                made = since(made, before, (self.stats)());
            }
            let ids: Vec<String> = members[..n].iter().map(|m| m.id.clone()).collect();
            let mut baseline = Samples::default();
            for rep in 0..reps {
                let t = Instant::now();
                self.direct.send(&format!("g{n}"), &ids[0], &format!("g{n}-{rep}"), &text(0, rep), &ids)?;
                baseline.latencies.push(t.elapsed());
                baseline.elapsed += t.elapsed();
            }
            rows.push(Row {
                scenario: format!("group of {n}: send until the last inbox has it"),
                clients: 1,
                ours,
                baseline: Some(baseline),
                commits: Commits::of(made),
            });
        }
        Ok(rows)
    }
}

async fn sync_page(api: &Api, user: &User) -> Result<(), String> {
    expect_len(api.count_items(user, "/v1/sync?after=0&limit=100").await?, 100, "sync page")
}

fn expect_len(got: usize, n: usize, what: &str) -> Result<(), String> {
    if got == n { Ok(()) } else { Err(format!("{what}: {got} items, expected {n}")) }
}

type Writers = (Arc<AtomicBool>, Vec<std::thread::JoinHandle<Result<(), String>>>);

/// 16 threads sending through the baseline until told to stop.
fn background_writers(direct: &Arc<Direct>) -> Writers {
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (48..64)
        .map(|c| {
            let (direct, stop) = (direct.clone(), stop.clone());
            std::thread::spawn(move || {
                let (a, b) = (format!("a{c:02}"), format!("b{c:02}"));
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    direct.send(&format!("s-{c}"), &a, &format!("bg-{c}-{i}"), &text(c, i), &[a.clone(), b.clone()])?;
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();
    (stop, threads)
}

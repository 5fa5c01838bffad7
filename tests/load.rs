//! A load test of the local server from this (separate) process over loopback: many clients at
//! once, each a user mixing sends, syncs, history pages and searches, for a bounded time. Then
//! every conversation is checked against the store and every inbox against what was
//! acknowledged: nothing lost, duplicated or refused. It prints throughput and p50/p99
//! latencies per operation; it asserts no timing.
//!
//! `IM_LOAD_CLIENTS` (default 100) and `IM_LOAD_SECS` (default 10; the closing figures use
//! `IM_LOAD_SECS=60 cargo test --release --test load -- --nocapture`).

mod common;

use common::{Server, User};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORDS: [&str; 8] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];
const GROUP_SIZE: usize = 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    /// Latencies by operation.
    latencies: HashMap<&'static str, Vec<Duration>>,
    /// Acknowledged sends: conversation → client_msg_ids.
    acked: HashMap<String, Vec<String>>,
    /// Anything but a success: (operation, status or transport error).
    errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (op, l) in other.latencies {
            self.latencies.entry(op).or_default().extend(l);
        }
        for (c, ids) in other.acked {
            self.acked.entry(c).or_default().extend(ids);
        }
        self.errors.extend(other.errors);
    }
}

/// One client: a user with a single chat and a group, looping until `deadline`.
async fn client(base: String, me: User, single: String, group: String, deadline: Instant, seed: u64) -> Tally {
    let http = common::client();
    let mut t = Tally::default();
    let (mut rng, mut n, mut checkpoint) = (seed | 1, 0u64, 0i64);
    while Instant::now() < deadline {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let word = WORDS[(rng % WORDS.len() as u64) as usize];
        let conv = if rng % 3 == 0 { &group } else { &single };
        // Half sends; the rest syncs, history pages and searches.
        let (op, req) = match rng % 20 {
            0..=9 => {
                n += 1;
                let body = json!({"client_msg_id": format!("{}-{n}", me.id), "type": "text",
                                  "text": format!("{word} from {} number {n}", me.id)});
                ("send", http.post(format!("{base}/v1/conversations/{conv}/messages")).json(&body))
            }
            10..=14 => ("sync", http.get(format!("{base}/v1/sync?after={checkpoint}&limit=100"))),
            15..=17 => ("history", http.get(format!("{base}/v1/conversations/{conv}/messages?limit=30"))),
            _ => ("search", http.get(format!("{base}/v1/search/messages?q={word}"))),
        };
        let started = Instant::now();
        let resp = req.bearer_auth(&me.token).timeout(Duration::from_secs(30)).send().await;
        let result = match resp {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
            Err(e) => Err(e.to_string()),
        };
        t.latencies.entry(op).or_default().push(started.elapsed());
        match result {
            Ok(v) if op == "send" => t
                .acked
                .entry(conv.clone())
                .or_default()
                .push(v["client_msg_id"].as_str().unwrap_or_default().to_string()),
            Ok(v) if op == "sync" => checkpoint = v["next_after"].as_i64().unwrap_or(checkpoint),
            Ok(_) => {}
            Err(e) => t.errors.push(format!("{op}: {e}")),
        }
    }
    t
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_at_once_lose_duplicate_and_refuse_nothing() {
    let clients = env_or("IM_LOAD_CLIENTS", 100) as usize;
    let secs = env_or("IM_LOAD_SECS", 10);
    assert!(
        clients >= 2 * GROUP_SIZE && clients.is_multiple_of(GROUP_SIZE),
        "IM_LOAD_CLIENTS: a multiple of {GROUP_SIZE}"
    );
    // The send rate limit protects a server from one user; here it would measure itself.
    let s = Server::start_with(&[("IM_SEND_RATE_PER_SEC", "0")]);
    let mut users = Vec::new();
    for i in 0..clients {
        users.push(s.user(&format!("load{i:03}")).await);
    }
    // Pairs of friends, and groups of ten.
    let mut singles = Vec::new();
    for pair in users.chunks(2) {
        let conv = s.befriend(&pair[0], &pair[1]).await;
        singles.push(conv.clone());
        singles.push(conv);
    }
    let mut groups = Vec::new();
    for team in users.chunks(GROUP_SIZE) {
        let others: Vec<&User> = team[1..].iter().collect();
        let g = s.group(&team[0], &others, "open").await;
        groups.extend(std::iter::repeat_n(g, GROUP_SIZE));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let (base, u, single, group) = (s.base.clone(), u.clone(), singles[i].clone(), groups[i].clone());
            tokio::spawn(client(base, u, single, group, deadline, 0x9E37_79B9_7F4A_7C15 ^ i as u64))
        })
        .collect();
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.unwrap());
    }
    let elapsed = started.elapsed();

    let total: usize = tally.latencies.values().map(Vec::len).sum();
    eprintln!(
        "load: {clients} clients for {:.1} s: {total} requests, {:.0} requests/s, {} messages ({:.0}/s), {} errors",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        tally.latencies.get("send").map_or(0, Vec::len),
        tally.latencies.get("send").map_or(0, Vec::len) as f64 / elapsed.as_secs_f64(),
        tally.errors.len()
    );
    let mut ops: Vec<_> = tally.latencies.iter_mut().collect();
    ops.sort_by_key(|(op, _)| *op);
    for (op, l) in ops {
        l.sort();
        eprintln!(
            "load: {op:>8}: {:>6} requests, p50 {:>6.1} ms, p99 {:>6.1} ms, max {:>7.1} ms",
            l.len(),
            percentile(l, 0.50).as_secs_f64() * 1e3,
            percentile(l, 0.99).as_secs_f64() * 1e3,
            l.last().unwrap().as_secs_f64() * 1e3
        );
    }
    assert!(
        tally.errors.is_empty(),
        "{} failed requests, e.g. {:?}",
        tally.errors.len(),
        &tally.errors[..5.min(tally.errors.len())]
    );

    // Against the store: each conversation holds exactly the acknowledged messages, numbered
    // without a gap; every participant's inbox holds each of them once.
    let check = Instant::now();
    let acked = Arc::new(tally.acked);
    let mut members: HashMap<String, Vec<User>> = HashMap::new();
    for (i, u) in users.iter().enumerate() {
        members.entry(singles[i].clone()).or_default().push(u.clone());
        members.entry(groups[i].clone()).or_default().push(u.clone());
    }
    for (conv, readers) in &members {
        let mut want: Vec<String> = acked.get(conv).cloned().unwrap_or_default();
        want.sort();
        let stored = readers[0].history(&s, conv).await;
        let seqs: Vec<i64> = stored.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
        assert_eq!(seqs, (1..=want.len() as i64).collect::<Vec<_>>(), "{conv}: numbered 1..n without a gap");
        let mut ids: Vec<String> = stored.iter().map(|m| m["client_msg_id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        assert_eq!(ids, want, "{conv}: the store holds exactly what was acknowledged");
        for r in readers {
            s.eventually(120, "fan-out catches up", || async { r.inbox_messages(&s, conv).await.len() >= want.len() })
                .await;
            let mut inbox: Vec<i64> = r.inbox_messages(&s, conv).await.iter().map(|(q, _)| *q).collect();
            inbox.sort();
            assert_eq!(inbox, seqs, "{conv}: {}'s inbox holds each message once", r.id);
        }
    }
    eprintln!(
        "load: checked {} conversations against the store in {:.1} s",
        members.len(),
        check.elapsed().as_secs_f64()
    );
}

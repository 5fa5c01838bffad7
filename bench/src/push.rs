//! Instant awareness: how long after a send a connected member's WebSocket hears of it, with
//! many clients connected at once (`IM_BENCH_PUSH_CLIENTS`, default 1,000).
//!
//! Every client is a real WebSocket connection to the server (`/v1/ws`) in this process; a
//! task per connection reads its frames and reports each `inbox` notice with the instant it
//! arrived. A send's latency, per member, is from just before the HTTP request until that
//! member's notice of the conversation arrives; the sender's own devices are not counted.

use crate::api::User;
use crate::measure::Samples;
use crate::scenarios::{Bench, Row};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A notice as it arrived: which client, which conversation, when.
type Heard = (usize, String, Instant);

/// Opens a connection per user; their notices arrive on the returned channel.
async fn connect_all(ws_base: &str, users: &[User]) -> Result<mpsc::UnboundedReceiver<Heard>, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let opened = futures_util::stream::iter(users.iter().enumerate())
        .map(|(i, u)| {
            let url = format!("{ws_base}/v1/ws?token={}", u.token);
            async move { tokio_tungstenite::connect_async(url).await.map(|(s, _)| (i, s)) }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for socket in opened {
        let (i, mut socket) = socket.map_err(|e| format!("WebSocket connect: {e}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = socket.next().await {
                let Message::Text(text) = frame else { continue };
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if v["type"] == "inbox"
                    && let Some(c) = v["conversation_id"].as_str()
                    && tx.send((i, c.to_string(), at)).is_err()
                {
                    return;
                }
            }
        });
    }
    Ok(rx)
}

impl Bench {
    /// A single chat and groups of `group_sizes`, among `clients` connected users.
    pub async fn push(&mut self, clients: usize, group_sizes: &[usize]) -> Result<Vec<Row>, String> {
        let largest = group_sizes.iter().copied().max().unwrap_or(0).max(2);
        if clients < largest {
            return Err(format!("{clients} connected clients cannot hold a group of {largest}"));
        }
        let users = self.api.users((0..clients).map(|i| format!("w{i:05}")).collect()).await?;
        let mut heard = connect_all(&self.api.ws_base(), &users).await?;
        let mut rows = Vec::new();

        let single = self.api.befriend(&users[0], &users[1]).await?;
        let mut cases =
            vec![(format!("single chat: send until the peer's socket hears, {clients} connected"), single, 2)];
        for &n in group_sizes {
            let group = self.api.group(&users[0], &users[1..n]).await?;
            cases.push((format!("group of {n}: send until each member's socket hears, {clients} connected"), group, n));
        }
        (self.quiesce)().await?;
        while heard.try_recv().is_ok() {} // the notices of setting up
        for (label, conversation, members) in cases {
            let reps = if members >= 1000 { 10 } else { 30 };
            let mut samples = Samples::default();
            let mut last = Samples::default();
            for rep in 0..reps {
                let t = Instant::now();
                self.api.send(&users[0], &conversation, &format!("push-{rep}"), "are you there?").await?;
                // Members 1..n (not the sender), each once.
                let mut waiting: HashSet<usize> = (1..members).collect();
                while !waiting.is_empty() {
                    let (i, c, at) = tokio::time::timeout(Duration::from_secs(60), heard.recv())
                        .await
                        .map_err(|_| format!("{label}: {} members never heard of message {rep}", waiting.len()))?
                        .ok_or("the connections closed")?;
                    if c == conversation && waiting.remove(&i) {
                        samples.latencies.push(at - t);
                    }
                }
                last.latencies.push(t.elapsed());
                samples.elapsed += t.elapsed();
                last.elapsed += t.elapsed();
                (self.quiesce)().await?;
                while heard.try_recv().is_ok() {} // the sender's own notices
            }
            rows.push(Row { scenario: label.clone(), clients: 1, ours: samples, baseline: None, commits: None });
            if members > 2 {
                let scenario = format!("{label}: the last member");
                rows.push(Row { scenario, clients: 1, ours: last, baseline: None, commits: None });
            }
        }
        Ok(rows)
    }
}

//! The local server's connections, in memory: user → the channels of their open WebSockets.
//!
//! Each connection has a bounded channel. A connection too slow to keep up loses notices rather
//! than holding up a fan-out: any notice still queued for it makes it sync, and a sync reads
//! every entry committed so far, the dropped ones' included.

use super::{Notice, Notifier};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Notices a connection may have waiting before more are dropped (see the module comment).
const QUEUED_PER_CONNECTION: usize = 64;

/// A connection's id and the channel its WebSocket task reads.
type Connection = (u64, mpsc::Sender<Notice>);

#[derive(Default)]
pub struct LocalHub {
    connections: Mutex<HashMap<String, Vec<Connection>>>,
    next_id: AtomicU64,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyForUser(usize),
}

/// One open connection's end of the hub; dropping it unregisters the connection.
pub struct Subscription {
    hub: Arc<LocalHub>,
    user_id: String,
    id: u64,
    pub notices: mpsc::Receiver<Notice>,
}

impl LocalHub {
    /// Registers a connection of `user_id`, at most `max_per_user` at once.
    pub fn subscribe(self: &Arc<Self>, user_id: &str, max_per_user: usize) -> Result<Subscription, Refused> {
        let (tx, rx) = mpsc::channel(QUEUED_PER_CONNECTION);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.connections.lock().expect("hub lock");
        let conns = map.entry(user_id.to_string()).or_default();
        if conns.len() >= max_per_user {
            return Err(Refused::TooManyForUser(max_per_user));
        }
        conns.push((id, tx));
        Ok(Subscription { hub: self.clone(), user_id: user_id.to_string(), id, notices: rx })
    }

    /// How many connections are open, in all.
    pub fn connections(&self) -> usize {
        self.connections.lock().expect("hub lock").values().map(Vec::len).sum()
    }

    fn unsubscribe(&self, user_id: &str, id: u64) {
        let mut map = self.connections.lock().expect("hub lock");
        if let Some(conns) = map.get_mut(user_id) {
            conns.retain(|(c, _)| *c != id);
            if conns.is_empty() {
                map.remove(user_id);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(&self.user_id, self.id);
    }
}

#[async_trait::async_trait]
impl Notifier for LocalHub {
    async fn notify(&self, notices: Vec<Notice>) {
        let map = self.connections.lock().expect("hub lock");
        for notice in notices {
            for (_, tx) in map.get(&notice.user_id).into_iter().flatten() {
                // Full: dropped (see the module comment); closed: the connection is going away.
                let _ = tx.try_send(notice.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(user: &str, seq: i64) -> Notice {
        Notice { user_id: user.into(), sync_seq: seq, conversation_id: Some("s_a_b".into()) }
    }

    #[tokio::test]
    async fn every_connection_of_the_user_hears_and_no_one_else() {
        let hub = Arc::new(LocalHub::default());
        let mut phone = hub.subscribe("alice", 4).unwrap();
        let mut laptop = hub.subscribe("alice", 4).unwrap();
        let mut bob = hub.subscribe("bob", 4).unwrap();
        hub.notify(vec![notice("alice", 7)]).await;
        assert_eq!(phone.notices.recv().await.unwrap().sync_seq, 7);
        assert_eq!(laptop.notices.recv().await.unwrap().sync_seq, 7);
        assert!(bob.notices.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_closed_connection_is_forgotten_and_the_limit_counts_open_ones() {
        let hub = Arc::new(LocalHub::default());
        let first = hub.subscribe("alice", 1).unwrap();
        assert_eq!(hub.subscribe("alice", 1).err(), Some(Refused::TooManyForUser(1)));
        drop(first);
        assert_eq!(hub.connections(), 0);
        let _again = hub.subscribe("alice", 1).unwrap();
        assert_eq!(hub.connections(), 1);
    }

    #[tokio::test]
    async fn a_slow_connection_loses_notices_but_keeps_the_first_queued() {
        let hub = Arc::new(LocalHub::default());
        let mut slow = hub.subscribe("alice", 1).unwrap();
        hub.notify((1..=200).map(|n| notice("alice", n)).collect()).await;
        let mut got = Vec::new();
        while let Ok(n) = slow.notices.try_recv() {
            got.push(n.sync_seq);
        }
        assert_eq!(got, (1..=QUEUED_PER_CONNECTION as i64).collect::<Vec<_>>());
    }

    #[test]
    fn the_frame_is_the_documented_json() {
        assert_eq!(notice("alice", 42).to_frame(), r#"{"type":"inbox","sync_seq":42,"conversation_id":"s_a_b"}"#);
    }
}

//! The local server's connections, in memory: user → the channels of their open WebSockets.
//!
//! Each connection has a bounded channel. A connection too slow to keep up loses notices rather
//! than holding up a fan-out: any notice still queued for it makes it sync, and a sync reads
//! every entry committed so far, the dropped ones' included.

use super::{Notice, Notifier};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    /// Connections open, in all (changed under the lock).
    open: AtomicUsize,
}

/// How many connections the hub takes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_user: usize,
    pub total: usize,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    TooManyForUser(usize),
    TooManyInAll(usize),
}

/// One open connection's end of the hub; dropping it unregisters the connection.
pub struct Subscription {
    hub: Arc<LocalHub>,
    user_id: String,
    id: u64,
    pub notices: mpsc::Receiver<Notice>,
}

impl LocalHub {
    /// Registers a connection of `user_id`, within `limits`.
    pub fn subscribe(self: &Arc<Self>, user_id: &str, limits: Limits) -> Result<Subscription, Refused> {
        let (tx, rx) = mpsc::channel(QUEUED_PER_CONNECTION);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut map = self.connections.lock().expect("hub lock");
        if self.open.load(Ordering::Relaxed) >= limits.total {
            return Err(Refused::TooManyInAll(limits.total));
        }
        if map.get(user_id).map_or(0, Vec::len) >= limits.per_user {
            return Err(Refused::TooManyForUser(limits.per_user));
        }
        map.entry(user_id.to_string()).or_default().push((id, tx));
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription { hub: self.clone(), user_id: user_id.to_string(), id, notices: rx })
    }

    /// How many connections are open, in all.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn unsubscribe(&self, user_id: &str, id: u64) {
        let mut map = self.connections.lock().expect("hub lock");
        if let Some(conns) = map.get_mut(user_id) {
            let before = conns.len();
            conns.retain(|(c, _)| *c != id);
            self.open.fetch_sub(before - conns.len(), Ordering::Relaxed);
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

    const LIMITS: Limits = Limits { per_user: 4, total: 100 };

    fn notice(user: &str, seq: i64) -> Notice {
        Notice { user_id: user.into(), sync_seq: seq, conversation_id: Some("s_a_b".into()) }
    }

    #[tokio::test]
    async fn every_connection_of_the_user_hears_and_no_one_else() {
        let hub = Arc::new(LocalHub::default());
        let mut phone = hub.subscribe("alice", LIMITS).unwrap();
        let mut laptop = hub.subscribe("alice", LIMITS).unwrap();
        let mut bob = hub.subscribe("bob", LIMITS).unwrap();
        hub.notify(vec![notice("alice", 7)]).await;
        assert_eq!(phone.notices.recv().await.unwrap().sync_seq, 7);
        assert_eq!(laptop.notices.recv().await.unwrap().sync_seq, 7);
        assert!(bob.notices.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_closed_connection_is_forgotten_and_the_limits_count_open_ones() {
        let hub = Arc::new(LocalHub::default());
        let one_each = Limits { per_user: 1, total: 2 };
        let first = hub.subscribe("alice", one_each).unwrap();
        assert_eq!(hub.subscribe("alice", one_each).err(), Some(Refused::TooManyForUser(1)));
        let bobs = hub.subscribe("bob", one_each).unwrap();
        assert_eq!(hub.subscribe("carol", one_each).err(), Some(Refused::TooManyInAll(2)));
        drop(first);
        drop(bobs);
        assert_eq!(hub.connections(), 0);
        let _again = hub.subscribe("alice", one_each).unwrap();
        assert_eq!(hub.connections(), 1);
    }

    #[tokio::test]
    async fn a_slow_connection_loses_notices_but_keeps_the_first_queued() {
        let hub = Arc::new(LocalHub::default());
        let mut slow = hub.subscribe("alice", LIMITS).unwrap();
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

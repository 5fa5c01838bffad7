//! The Queue port, with SQS's semantics: at-least-once delivery, a visibility timeout during
//! which a received message is hidden from other receivers, a receive count, a dead-letter queue
//! that takes a message once it has been received `max_receives` times without being
//! acknowledged, and a redrive that moves dead letters back.
//!
//! Consumers must be idempotent: a message can arrive more than once.

#[cfg(feature = "embedded")]
pub mod embedded;
pub mod sqs;

use async_trait::async_trait;
use std::time::Duration;

/// A queue and its dead-letter policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    pub name: String,
    /// Where a message goes after `max_receives` receives without an acknowledgement.
    pub dead_letter: Option<String>,
    pub max_receives: u32,
}

/// The queues the service uses, by logical name (adapters map them to real queues).
pub mod names {
    /// Group fan-out jobs.
    pub const FANOUT: &str = "fanout";
    pub const FANOUT_DLQ: &str = "fanout-dlq";
    /// Search indexing jobs: those the change feed could not index, to retry, or every one where
    /// the service is configured to queue them (`Config::index_jobs`).
    pub const INDEX: &str = "index";
    pub const INDEX_DLQ: &str = "index-dlq";
}

/// The service's queues with their redrive policy.
pub fn service_queues(max_receives: u32) -> Vec<QueueDef> {
    vec![
        QueueDef { name: names::FANOUT.into(), dead_letter: Some(names::FANOUT_DLQ.into()), max_receives },
        QueueDef { name: names::FANOUT_DLQ.into(), dead_letter: None, max_receives: u32::MAX },
        QueueDef { name: names::INDEX.into(), dead_letter: Some(names::INDEX_DLQ.into()), max_receives },
        QueueDef { name: names::INDEX_DLQ.into(), dead_letter: None, max_receives: u32::MAX },
    ]
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    /// Names this receive: acknowledge or delay with it.
    pub receipt: String,
    pub body: String,
    /// How many times the message has been received, this time included (SQS's
    /// `ApproximateReceiveCount`).
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Depth {
    /// Ready to be received now (or after a delay).
    pub waiting: usize,
    /// Received and not yet acknowledged.
    pub in_flight: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Sends messages (in batches where the backend has a batch limit).
    async fn send_batch(&self, queue: &str, bodies: Vec<String>) -> Result<(), QueueError>;
    /// Receives up to `max` messages, hiding them for `visibility`; waits up to `wait` for one.
    async fn receive(
        &self,
        queue: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Deletes a received message. A receipt made stale by a later receive deletes nothing.
    async fn ack(&self, queue: &str, receipt: &str) -> Result<(), QueueError>;
    /// Makes a received message visible again after `delay` (a retry with backoff).
    async fn retry_after(&self, queue: &str, receipt: &str, delay: Duration) -> Result<(), QueueError>;
    /// Moves every message of `queue`'s dead-letter queue back into `queue`; returns how many.
    async fn redrive(&self, queue: &str) -> Result<usize, QueueError>;
    async fn depth(&self, queue: &str) -> Result<Depth, QueueError>;
}

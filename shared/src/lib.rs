//! The IM data crate: everything the service needs that is not HTTP.
//!
//! - [`schema`]: the design's tables as data (names, keys, indexes, TTL): the one source of truth.
//! - [`tables`]: the Tables port (DynamoDB semantics), its DynamoDB adapter and its embedded one.
//! - [`queue`]: the Queue port (SQS semantics), its SQS adapter and its embedded one.
//! - [`search`]: the Search port (OpenSearch semantics), its OpenSearch adapter and its embedded one.
//! - [`changes`]: the ChangeFeed port (the store and meta tables' changes, for the indexer).
//! - [`notify`]: the Notify port ("your inbox has news" to connected devices) and its local hub.
//! - [`service`]: the IM service, written once against the ports.
//! - [`model`], [`ids`], [`error`]: what the service speaks in.

pub mod changes;
pub mod error;
pub mod ids;
pub mod model;
pub mod notify;
pub mod queue;
pub mod schema;
pub mod search;
pub mod service;
pub mod tables;
pub mod time;

pub use error::{Error, Result};

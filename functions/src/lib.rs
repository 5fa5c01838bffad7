//! The HTTP glue shared by every function and by the local server: the route table, caller
//! identity, JSON in and out, and the mapping of service errors to statuses.
//!
//! [`routes`] is the route table, the one place an operation is named. [`dispatch::handle`]
//! takes a request (method, path, query, headers, body bytes) and returns a response; the local
//! server mounts it for every route, and each Lambda function serves its one route through
//! [`dispatch::handle_route`] ([`lambda`]).

pub mod access;
pub mod auth;
pub mod bodies;
pub mod dispatch;
pub mod env;
pub mod function;
pub mod lambda;
pub mod openapi;
pub mod routes;
pub mod routing;
pub mod template;
pub mod ws;

pub use dispatch::{App, HttpConfig, handle};
pub use routes::{Op, ROUTES};
pub use routing::Route;

//! The local server as a library: `main.rs` runs it, and the benchmark (`bench/`) starts it
//! in-process to measure it through real HTTP.

pub mod alloc;
pub mod config;
pub mod server;
pub mod web;
pub mod ws;

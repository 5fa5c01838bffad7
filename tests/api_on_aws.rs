//! `tests/api.rs` again, with the server on DynamoDB and SQS (`IM_BACKEND=aws` on a moto
//! server, each server on tables and queues of its own): the same scenarios and guarantees on
//! both backends. The harness knows from this crate's name (see `common::on_aws`).

#[path = "api.rs"]
mod suite;

//! `tests/authz.rs` again, with the server on DynamoDB and SQS (see `api_on_aws.rs`).

#[path = "authz.rs"]
mod suite;

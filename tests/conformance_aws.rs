//! The Tables and Queue conformance suites against the DynamoDB and SQS adapters on a moto
//! server: the same cases, held to the same behaviour as the embedded adapters.
//!
//! The server is `IM_MOTO_URL` (what `.ci/run` starts), or one these tests start on a free
//! loopback port with `tests/moto_server.py` (moto, with DynamoDB requests serialized as
//! DynamoDB serializes transactions), run by the python3 `tests/moto-python` names (which
//! installs moto into `target/moto-venv` if need be). Tables are
//! created once per run under a fresh prefix and shared by the cases (their keys are unique);
//! each queue case gets queues of its own.

mod common;

// The search suite runs elsewhere (embedded, and live OpenSearch).
#[allow(dead_code)]
mod conformance;

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use im_shared::queue::Queue;
use im_shared::queue::sqs::SqsQueue;
use im_shared::tables::Tables;
use im_shared::tables::dynamo::DynamoTables;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The tables' prefix of this run; the tables are created by the first case that needs them.
async fn table_prefix() -> String {
    static PREFIX: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    PREFIX
        .get_or_init(|| async {
            let prefix = format!("{}-", conformance::unique("ct"));
            let client = aws_sdk_dynamodb::Client::new(&common::moto_sdk_config().await);
            DynamoTables::new(client, prefix.clone()).create_tables().await.expect("create tables on moto");
            prefix
        })
        .await
        .clone()
}

async fn dynamodb() -> Arc<dyn Tables> {
    let prefix = table_prefix().await;
    // A client per case: each case runs on its own runtime.
    Arc::new(DynamoTables::new(aws_sdk_dynamodb::Client::new(&common::moto_sdk_config().await), prefix))
}

async fn sqs() -> Arc<dyn Queue> {
    let q = SqsQueue::new(
        aws_sdk_sqs::Client::new(&common::moto_sdk_config().await),
        format!("{}-", conformance::unique("cq")),
        conformance::queue::defs(),
    );
    q.create_queues().await.expect("create queues on moto");
    Arc::new(q)
}

mod tables {
    use super::*;
    tables_conformance!(dynamodb);
}

mod queue {
    use super::*;
    queue_conformance!(sqs);
}

/// Counts BatchWriteItem calls and the largest batch sent.
#[derive(Debug, Default)]
struct BatchCounter {
    calls: AtomicUsize,
    largest: AtomicUsize,
}

#[derive(Debug)]
struct CountBatches(Arc<BatchCounter>);

impl Intercept for CountBatches {
    fn name(&self) -> &'static str {
        "CountBatches"
    }
    fn read_before_execution(
        &self,
        ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if let Some(input) =
            ctx.input().downcast_ref::<aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput>()
        {
            let n: usize = input.request_items().map_or(0, |m| m.values().map(Vec::len).sum());
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            self.0.largest.fetch_max(n, Ordering::SeqCst);
        }
        Ok(())
    }
    fn read_before_attempt(
        &self,
        _ctx: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        Ok(())
    }
}

/// AWS refuses more than 25 items in one BatchWriteItem; moto accepts 26, so only counting
/// the calls shows that the adapter splits batches itself.
#[tokio::test]
async fn batch_writes_are_split_into_calls_of_at_most_25_items() {
    use im_shared::schema::STORE;
    use im_shared::tables::WriteOp;
    let prefix = table_prefix().await;
    let counter = Arc::new(BatchCounter::default());
    let conf = aws_sdk_dynamodb::config::Builder::from(&common::moto_sdk_config().await)
        .interceptor(CountBatches(counter.clone()))
        .build();
    let t = DynamoTables::new(aws_sdk_dynamodb::Client::from_conf(conf), prefix);
    let conv = conformance::unique("g_chunk");
    let ops: Vec<WriteOp> = (1..=26)
        .map(|s| WriteOp::Put {
            table: &STORE,
            item: serde_json::json!({"timeline_id": conv, "seq": s}).as_object().unwrap().clone(),
        })
        .collect();
    t.batch_write(ops).await.unwrap();
    assert_eq!(counter.calls.load(Ordering::SeqCst), 2, "26 items go in two calls");
    assert_eq!(counter.largest.load(Ordering::SeqCst), 25);
    let page = t.query(im_shared::tables::Query::new(&STORE, conv.as_str()).limit(100)).await.unwrap();
    assert_eq!(page.items.len(), 26);
}

/// Records each TransactWriteItems attempt's ClientRequestToken, and turns the first attempt's
/// answer into a 500, as if it had been lost, so that the SDK retries.
#[derive(Debug, Default)]
struct LoseFirstAnswer {
    tokens: std::sync::Mutex<Vec<String>>,
}

#[derive(Debug)]
struct LoseFirst(Arc<LoseFirstAnswer>);

impl Intercept for LoseFirst {
    fn name(&self) -> &'static str {
        "LoseFirst"
    }
    fn read_before_transmit(
        &self,
        ctx: &aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let body: serde_json::Value = serde_json::from_slice(ctx.request().body().bytes().unwrap_or(b"{}"))?;
        if let Some(token) = body.get("ClientRequestToken") {
            self.0.tokens.lock().unwrap().push(token.as_str().unwrap_or("").to_string());
        }
        Ok(())
    }
    fn modify_before_deserialization(
        &self,
        ctx: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if self.0.tokens.lock().unwrap().len() == 1 {
            *ctx.response_mut().status_mut() = aws_smithy_runtime_api::http::StatusCode::try_from(500u16)?;
        }
        Ok(())
    }
}

/// A transaction retried by the SDK after a lost answer carries the same ClientRequestToken, so
/// DynamoDB applies it once. The SDK fills the token itself (DynamoDB's model marks it as an
/// idempotency token); this pins that the adapter's client keeps doing so. (moto ignores the
/// token, so the transaction here is one that may run twice; what is checked is what is sent.)
#[tokio::test]
async fn a_retried_transaction_carries_the_same_client_request_token() {
    use im_shared::schema::STORE;
    use im_shared::tables::{Cond, Key, TxOp};
    let prefix = table_prefix().await;
    let seen = Arc::new(LoseFirstAnswer::default());
    let conf = aws_sdk_dynamodb::config::Builder::from(&common::moto_sdk_config().await)
        .interceptor(LoseFirst(seen.clone()))
        .build();
    let t = DynamoTables::new(aws_sdk_dynamodb::Client::from_conf(conf), prefix);
    let conv = conformance::unique("g_token");
    let item = serde_json::json!({"timeline_id": conv, "seq": 1}).as_object().unwrap().clone();
    t.transact(vec![TxOp::put(&STORE, item, Cond::Always)]).await.unwrap();
    let tokens = seen.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "the lost answer was retried once: {tokens:?}");
    assert!(!tokens[0].is_empty() && tokens[0] == tokens[1], "{tokens:?}");
    assert!(t.get(&STORE, &Key::pk_sk(conv.as_str(), 1)).await.unwrap().is_some());
    // Another transaction gets another token.
    let item = serde_json::json!({"timeline_id": conv, "seq": 2}).as_object().unwrap().clone();
    t.transact(vec![TxOp::put(&STORE, item, Cond::Always)]).await.unwrap();
    let tokens = seen.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3);
    assert_ne!(tokens[2], tokens[0]);
}

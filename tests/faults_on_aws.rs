//! Faults on the AWS adapters, against the moto server: DynamoDB throttling, server errors,
//! unprocessed batch items and transaction conflicts, injected on the wire by an SDK
//! interceptor; and fan-out batches that fail part way or keep failing, on real SQS queues with
//! their redrive policy. Each test proves that nothing is lost or duplicated.
//!
//! An injected error never reaches moto as the real request: the interceptor turns the request
//! into a harmless `ListTables` and answers it with the error, as DynamoDB answers a request
//! it did not apply. Unprocessed items are the ones the interceptor took out of the request.

mod common;

// For `unique`: the suites themselves run in conformance_aws.rs.
#[allow(dead_code)]
mod conformance;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use im_shared::model::JoinPolicy;
use im_shared::queue::names::{FANOUT, FANOUT_DLQ};
use im_shared::queue::sqs::SqsQueue;
use im_shared::queue::{Delivery, Queue, service_queues};
use im_shared::service::groups::CreateGroupInput;
use im_shared::service::messages::SendInput;
use im_shared::service::users::ProfileInput;
use im_shared::service::{Config, Service};
use im_shared::tables::Tables;
use im_shared::tables::dynamo::DynamoTables;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    /// 400 ProvisionedThroughputExceededException: the SDK retries it with backoff.
    Throttle,
    /// 500 InternalServerError: the SDK retries it too.
    ServerError,
    /// TransactionCanceledException for a TransactionConflict: the service retries it.
    Conflict,
    /// A BatchWriteItem that writes only the first item of each table and returns the rest
    /// as UnprocessedItems: the adapter sends them again.
    Unprocessed,
}

/// Decides, from the operation, the request body and the attempt (1 for the SDK's first), what
/// to inject.
type Rule = Box<dyn Fn(&str, &str, u32) -> Option<Fault> + Send + Sync>;

struct Plan {
    rule: Mutex<Rule>,
    injected: Mutex<HashMap<Fault, usize>>,
}

impl Plan {
    fn new(rule: impl Fn(&str, &str, u32) -> Option<Fault> + Send + Sync + 'static) -> Arc<Plan> {
        Arc::new(Plan { rule: Mutex::new(Box::new(rule)), injected: Mutex::default() })
    }
    fn set(&self, rule: impl Fn(&str, &str, u32) -> Option<Fault> + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Box::new(rule);
    }
    fn injected(&self, f: Fault) -> usize {
        self.injected.lock().unwrap().get(&f).copied().unwrap_or(0)
    }
}

/// Per call (shared by its attempts): the attempt number, and what this attempt injects.
#[derive(Debug, Clone)]
struct Attempt(u32, Option<Injection>);

#[derive(Debug, Clone)]
enum Injection {
    Error(u16, String),
    Unprocessed(Value),
}

impl Storable for Attempt {
    type Storer = StoreReplace<Self>;
}

#[derive(Debug)]
struct Injector(Arc<Plan>);

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plan")
    }
}

fn error_body(kind: &str, extra: Value) -> String {
    let mut body = json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": "injected"});
    body.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    body.to_string()
}

impl Intercept for Injector {
    fn name(&self) -> &'static str {
        "Injector"
    }

    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let attempt = cfg.load::<Attempt>().map_or(0, |a| a.0) + 1;
        let req = ctx.request_mut();
        let op = req.headers().get("x-amz-target").unwrap_or_default().rsplit('.').next().unwrap_or("").to_string();
        let body = String::from_utf8_lossy(req.body().bytes().unwrap_or_default()).to_string();
        let fault = (self.0.rule.lock().unwrap())(&op, &body, attempt);
        let injection = match fault {
            None => None,
            Some(Fault::Unprocessed) => {
                // Keep the first request of each table; the rest comes back unprocessed.
                let mut parsed: Value = serde_json::from_str(&body)?;
                let mut rest = serde_json::Map::new();
                for (table, reqs) in parsed["RequestItems"].as_object_mut().unwrap() {
                    let reqs = reqs.as_array_mut().unwrap();
                    if reqs.len() > 1 {
                        rest.insert(table.clone(), Value::Array(reqs.split_off(1)));
                    }
                }
                let new_body = parsed.to_string();
                req.headers_mut().insert("content-length", new_body.len().to_string());
                *req.body_mut() = SdkBody::from(new_body);
                Some(Injection::Unprocessed(Value::Object(rest)))
            }
            Some(f) => {
                req.headers_mut().insert("x-amz-target", "DynamoDB_20120810.ListTables");
                req.headers_mut().insert("content-length", "2");
                *req.body_mut() = SdkBody::from("{}");
                Some(match f {
                    Fault::Throttle => {
                        Injection::Error(400, error_body("ProvisionedThroughputExceededException", json!({})))
                    }
                    Fault::ServerError => Injection::Error(500, error_body("InternalServerError", json!({}))),
                    _ => Injection::Error(
                        400,
                        error_body(
                            "TransactionCanceledException",
                            json!({"CancellationReasons": [{"Code": "TransactionConflict", "Message": "injected"}]}),
                        ),
                    ),
                })
            }
        };
        if let Some(f) = fault {
            *self.0.injected.lock().unwrap().entry(f).or_default() += 1;
        }
        cfg.interceptor_state().store_put(Attempt(attempt, injection));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (status, body) = match cfg.load::<Attempt>().and_then(|a| a.1.clone()) {
            None => return Ok(()),
            Some(Injection::Error(status, body)) => (status, body),
            Some(Injection::Unprocessed(rest)) => (200, json!({"UnprocessedItems": rest}).to_string()),
        };
        let resp = ctx.response_mut();
        *resp.status_mut() = aws_smithy_runtime_api::http::StatusCode::try_from(status)?;
        resp.headers_mut().insert("content-length", body.len().to_string());
        *resp.body_mut() = SdkBody::from(body);
        Ok(())
    }
}

struct Fixture {
    svc: Arc<Service>,
    tables: Arc<DynamoTables>,
    queue: Arc<SqsQueue>,
    plan: Arc<Plan>,
}

/// A service on fresh DynamoDB tables (through the injector) and SQS queues that dead-letter
/// after `max_receives`, all on moto; no faults until the test sets a rule.
async fn fixture(max_receives: u32) -> Fixture {
    let conf = common::moto_sdk_config().await;
    let prefix = format!("{}-", conformance::unique("ft"));
    DynamoTables::new(aws_sdk_dynamodb::Client::new(&conf), prefix.clone()).create_tables().await.unwrap();
    let plan = Plan::new(|_, _, _| None);
    let dynamo_conf = aws_sdk_dynamodb::config::Builder::from(&conf).interceptor(Injector(plan.clone())).build();
    let tables = Arc::new(DynamoTables::new(aws_sdk_dynamodb::Client::from_conf(dynamo_conf), prefix.clone()));
    let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::new(&conf), prefix, service_queues(max_receives)));
    queue.create_queues().await.unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir).unwrap());
    let cfg = Config { fanout_batch: 2, index_jobs: false, ..Config::default() };
    let svc = Arc::new(Service::new(tables.clone(), queue.clone(), search, cfg));
    Fixture { svc, tables, queue, plan }
}

impl Fixture {
    async fn users(&self, ids: &[&str]) {
        for id in ids {
            let p = ProfileInput { name: id.to_string(), gender: None, avatar_url: None, bio: None };
            self.svc.put_me(id, p).await.unwrap();
        }
    }

    async fn send(&self, who: &str, conv: &str, id: &str, text: &str) -> i64 {
        let input = SendInput { client_msg_id: id.into(), kind: "text".into(), text: text.into() };
        self.svc.send(who, conv, input).await.unwrap().message.seq
    }

    /// The seqs of `conv`'s messages in `user`'s inbox, in inbox order.
    async fn inbox(&self, user: &str, conv: &str) -> Vec<i64> {
        let (mut out, mut after) = (Vec::new(), 0);
        loop {
            let page = self.svc.sync(user, Some(after), Some(500)).await.unwrap();
            for e in &page.items {
                if let Some(m) = e.message.as_ref().filter(|m| m.conversation_id == conv) {
                    out.push(m.seq);
                }
            }
            after = page.next_after;
            if !page.has_more {
                return out;
            }
        }
    }

    /// One Lambda invocation of the fan-out function on what SQS delivers now, with the Lambda
    /// service's part: delete the records the response does not name. Returns the bodies of
    /// the batch and of its reported failures.
    async fn lambda_fanout_once(&self) -> (Vec<String>, Vec<String>) {
        let batch: Vec<Delivery> =
            self.queue.receive(FANOUT, 10, Duration::from_secs(1), Duration::from_secs(2)).await.unwrap();
        let records: Vec<Value> = batch
            .iter()
            .map(|d| {
                json!({"messageId": d.id, "receiptHandle": d.receipt, "body": d.body,
                       "attributes": {"ApproximateReceiveCount": d.receive_count.to_string()},
                       "messageAttributes": {}, "eventSource": "aws:sqs"})
            })
            .collect();
        let event: SqsEvent = serde_json::from_value(json!({ "Records": records })).unwrap();
        let response = im_functions::lambda::fanout_event(&self.svc, event).await;
        let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
        for d in &batch {
            if !failed.contains(&d.id.as_str()) {
                self.queue.ack(FANOUT, &d.receipt).await.unwrap();
            }
        }
        let bodies = batch.iter().map(|d| d.body.clone()).collect();
        let failed_bodies = batch.iter().filter(|d| failed.contains(&d.id.as_str())).map(|d| d.body.clone()).collect();
        (bodies, failed_bodies)
    }
}

#[tokio::test]
async fn throttling_server_errors_and_unprocessed_items_are_retried_and_lose_nothing() {
    let f = fixture(5).await;
    // Every third call is throttled and every third gets a 500, on the first attempt; every
    // other batch write leaves all but one item per table unprocessed (the adapter's next call,
    // with the rest, goes through).
    let (calls, batches) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (c, b) = (calls.clone(), batches.clone());
    f.plan.set(move |op, _, attempt| {
        if attempt > 1 {
            return None;
        }
        if op == "BatchWriteItem" {
            return b.fetch_add(1, Ordering::SeqCst).is_multiple_of(2).then_some(Fault::Unprocessed);
        }
        match c.fetch_add(1, Ordering::SeqCst) % 3 {
            0 => Some(Fault::Throttle),
            1 => Some(Fault::ServerError),
            _ => None,
        }
    });
    f.users(&["ann", "ben"]).await;
    f.svc.request_friend("ann", "ben", None).await.unwrap();
    let conv = f.svc.accept_friend("ben", "ann").await.unwrap().conversation_id;
    for i in 1..=10 {
        assert_eq!(f.send(if i % 2 == 0 { "ann" } else { "ben" }, &conv, &format!("m{i}"), "hello").await, i);
    }
    let history = f.svc.history("ann", &conv, None, Some(100)).await.unwrap();
    assert_eq!(history.items.iter().map(|m| m.seq).rev().collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    for user in ["ann", "ben"] {
        assert_eq!(f.inbox(user, &conv).await, (1..=10).collect::<Vec<_>>(), "{user}'s inbox");
    }
    // A batch of 60 writes (three calls of 25, 25 and 10), each partly unprocessed at first.
    let store = conformance::unique("g_batch");
    let ops = (1..=60)
        .map(|seq| im_shared::tables::WriteOp::Put {
            table: &im_shared::schema::STORE,
            item: json!({"timeline_id": store, "seq": seq}).as_object().unwrap().clone(),
        })
        .collect();
    f.tables.batch_write(ops).await.unwrap();
    let q = im_shared::tables::Query::new(&im_shared::schema::STORE, store.as_str()).limit(100);
    assert_eq!(f.tables.query(q).await.unwrap().items.len(), 60, "every unprocessed item was written again");
    let (throttled, errors, unprocessed) =
        (f.plan.injected(Fault::Throttle), f.plan.injected(Fault::ServerError), f.plan.injected(Fault::Unprocessed));
    eprintln!("injected {throttled} throttles, {errors} server errors, {unprocessed} partial batch writes");
    assert!(throttled >= 10 && errors >= 10 && unprocessed >= 3, "the faults were injected");

    // Throttling that outlasts the SDK's retries is a 503 for the client to retry, not a 500.
    f.plan.set(|_, _, _| Some(Fault::Throttle));
    let err = f.svc.get_me("ann").await.unwrap_err();
    assert_eq!(err.code(), "unavailable", "{err}");
    let input = SendInput { client_msg_id: "late".into(), kind: "text".into(), text: "still there?".into() };
    assert_eq!(f.svc.send("ann", &conv, input.clone()).await.unwrap_err().code(), "unavailable");
    f.plan.set(|_, _, _| None);
    assert_eq!(f.svc.send("ann", &conv, input).await.unwrap().message.seq, 11, "the retry lands once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transaction_conflicts_under_concurrent_senders_are_retried_and_stay_ordered() {
    let f = fixture(5).await;
    // Every other transaction is cancelled for a conflict on its first attempt.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    f.plan.set(move |op, _, attempt| {
        (op == "TransactWriteItems" && attempt == 1 && c.fetch_add(1, Ordering::SeqCst).is_multiple_of(2))
            .then_some(Fault::Conflict)
    });
    f.users(&["ann", "ben"]).await;
    f.svc.request_friend("ann", "ben", None).await.unwrap();
    let conv = f.svc.accept_friend("ben", "ann").await.unwrap().conversation_id;
    let senders: Vec<_> = ["ann", "ben", "ann", "ben"]
        .into_iter()
        .enumerate()
        .map(|(t, who)| {
            let (svc, conv) = (f.svc.clone(), conv.clone());
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..8 {
                    let input =
                        SendInput { client_msg_id: format!("t{t}-{i}"), kind: "text".into(), text: "hi".into() };
                    seqs.push(svc.send(who, &conv, input).await.unwrap().message.seq);
                }
                seqs
            })
        })
        .collect();
    for s in senders {
        let seqs = s.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "one sender's messages in order: {seqs:?}");
    }
    let history = f.svc.history("ann", &conv, None, Some(100)).await.unwrap();
    let mut ids: Vec<String> = history.items.iter().map(|m| m.client_msg_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 32, "each message once");
    assert_eq!(history.items.iter().map(|m| m.seq).rev().collect::<Vec<_>>(), (1..=32).collect::<Vec<_>>());
    for user in ["ann", "ben"] {
        // Delivery follows the store commit, so concurrent sends may reach an inbox out of seq
        // order (the inbox's own sync_seq order is what API.md promises): compare as a set.
        let mut inbox = f.inbox(user, &conv).await;
        inbox.sort();
        assert_eq!(inbox, (1..=32).collect::<Vec<_>>(), "{user}'s inbox holds each message once");
    }
    let conflicts = f.plan.injected(Fault::Conflict);
    eprintln!("injected {conflicts} transaction conflicts");
    assert!(conflicts >= 16, "conflicts were injected: {conflicts}");
}

/// A group of six whose fan-out jobs run through SQS; returns the group id.
async fn group_of_six(f: &Fixture) -> (String, Vec<&'static str>) {
    let members = vec!["m0", "m1", "m2", "m3", "m4", "m5"];
    f.users(&members).await;
    let input = CreateGroupInput {
        name: "faults".into(),
        description: None,
        join_policy: JoinPolicy::Open,
        members: Some(members[1..].iter().map(|m| m.to_string()).collect()),
    };
    (f.svc.create_group("m0", input).await.unwrap().group_id, members)
}

#[tokio::test]
async fn a_fanout_batch_that_fails_part_way_reports_only_the_failed_job_and_sqs_redelivers_it() {
    let f = fixture(5).await;
    let (group, members) = group_of_six(&f).await;
    for (i, text) in ["first", "poisoned for now", "third"].iter().enumerate() {
        assert_eq!(f.send("m0", &group, &format!("c{i}"), text).await, i as i64 + 1);
    }
    // The second message's delivery to m4 fails, after m0..m3 already have it (members go in
    // user id order, two per transaction), every attempt, until the fault is lifted.
    f.plan.set(|op, body, _| {
        (op == "TransactWriteItems" && body.contains("poisoned for now") && body.contains("\"m4\""))
            .then_some(Fault::ServerError)
    });
    let mut all = Vec::new();
    let mut failed = Vec::new();
    while all.len() < 3 {
        let (batch, fails) = f.lambda_fanout_once().await;
        all.extend(batch);
        failed.extend(fails);
    }
    assert_eq!(failed.len(), 1, "only the job that failed is reported: {failed:?}");
    assert!(failed[0].contains("\"seq\":2"), "{failed:?}");
    for m in &members[..4] {
        assert_eq!(f.inbox(m, &group).await, [1, 2, 3], "{m} got the second message before the failure");
    }
    for m in &members[4..] {
        assert_eq!(f.inbox(m, &group).await, [1, 3], "{m} is after the failure");
    }
    // SQS redelivers the reported job once its visibility timeout passes; now it succeeds.
    f.plan.set(|_, _, _| None);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (batch, fails) = f.lambda_fanout_once().await;
        assert!(fails.is_empty(), "{fails:?}");
        if batch.iter().any(|b| b.contains("\"seq\":2")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "SQS never redelivered the failed job");
    }
    for m in &members {
        let mut got = f.inbox(m, &group).await;
        got.sort();
        assert_eq!(got, [1, 2, 3], "{m} holds each message once");
    }
    let depth = f.queue.depth(FANOUT).await.unwrap();
    assert_eq!((depth.waiting, depth.in_flight), (0, 0), "every job was deleted once done");
}

#[tokio::test]
async fn a_poison_job_reaches_the_dlq_after_max_receive_count_and_redrive_puts_it_back() {
    let f = fixture(2).await;
    let (group, _) = group_of_six(&f).await;
    f.send("m0", &group, "c0", "fine").await;
    // A job that can never succeed: a message that does not exist.
    let poison = json!({"kind": "message", "v": 1, "conversation_id": group, "seq": 99}).to_string();
    f.queue.send_batch(FANOUT, vec![poison.clone()]).await.unwrap();
    let mut receives_of_poison = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while f.queue.depth(FANOUT_DLQ).await.unwrap().waiting == 0 {
        assert!(std::time::Instant::now() < deadline, "the poison job never reached the dead-letter queue");
        let (batch, fails) = f.lambda_fanout_once().await;
        assert!(fails.iter().all(|b| *b == poison), "only the poison job fails: {fails:?}");
        receives_of_poison += batch.iter().filter(|b| **b == poison).count();
    }
    assert_eq!(receives_of_poison, 2, "received exactly maxReceiveCount times, then dead-lettered");
    for m in ["m0", "m3", "m5"] {
        assert_eq!(f.inbox(m, &group).await, [1], "the good job went through");
    }
    // redrive (what `im-server redrive` runs) puts it back on the fan-out queue.
    assert_eq!(f.queue.redrive(FANOUT).await.unwrap(), 1);
    assert_eq!(f.queue.depth(FANOUT_DLQ).await.unwrap().waiting, 0);
    let back = f.queue.receive(FANOUT, 10, Duration::from_secs(1), Duration::from_secs(2)).await.unwrap();
    assert_eq!(back.iter().map(|d| d.body.clone()).collect::<Vec<_>>(), [poison]);
}

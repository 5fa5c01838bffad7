//! The AWS cost model, measured: each operation runs against the moto server on the DynamoDB
//! and SQS adapters, exactly as the Lambda functions run it, while an SDK interceptor counts
//! every request and the capacity units it is billed (item sizes from the requests and
//! responses, DynamoDB's rounding: writes per 1 KB, strongly consistent reads per 4 KB,
//! transactional items double). Search requests are counted at the search port. Each line
//! stands next to the theoretical minimum for its operation, and the totals become dollars per
//! million messages at on-demand prices (docs/performance.md, "What a message costs on AWS").

use crate::measure::round;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::AttributeValue;
use im_shared::model::JoinPolicy;
use im_shared::notify::apigw::ApiGatewayNotifier;
use im_shared::notify::connections::Connections;
use im_shared::queue::names::FANOUT;
use im_shared::queue::sqs::SqsQueue;
use im_shared::queue::{Queue, service_queues};
use im_shared::search::{BulkOutcome, Doc, Hits, Search, SearchError, SearchQuery};
use im_shared::service::groups::CreateGroupInput;
use im_shared::service::messages::SendInput;
use im_shared::service::search::IndexJob;
use im_shared::service::users::ProfileInput;
use im_shared::service::{Config, Service};
use im_shared::tables::dynamo::DynamoTables;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// US East (N. Virginia) on-demand prices, in dollars per million (November 2024 onwards).
pub const WRITE_UNIT: f64 = 0.625;
pub const READ_UNIT: f64 = 0.125;
pub const SQS_REQUEST: f64 = 0.40;

/// What one stretch of work cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bill {
    pub dynamo_requests: u64,
    pub items_written: u64,
    pub items_read: u64,
    /// Of the items written, those in transactions (billed double).
    pub tx_items: u64,
    pub write_units: f64,
    pub read_units: f64,
    pub sqs_requests: u64,
    pub search_requests: u64,
}

impl Bill {
    fn minus(&self, o: &Bill) -> Bill {
        Bill {
            dynamo_requests: self.dynamo_requests - o.dynamo_requests,
            items_written: self.items_written - o.items_written,
            items_read: self.items_read - o.items_read,
            tx_items: self.tx_items - o.tx_items,
            write_units: self.write_units - o.write_units,
            read_units: self.read_units - o.read_units,
            sqs_requests: self.sqs_requests - o.sqs_requests,
            search_requests: self.search_requests - o.search_requests,
        }
    }

    fn scaled(&self, by: f64) -> Value {
        json!({
            "dynamodb_requests": round(self.dynamo_requests as f64 / by),
            "items_written": round(self.items_written as f64 / by),
            "transaction_items": round(self.tx_items as f64 / by),
            "items_read": round(self.items_read as f64 / by),
            "write_units": round(self.write_units / by),
            "read_units": round(self.read_units / by),
            "sqs_requests": round(self.sqs_requests as f64 / by),
            "search_requests": round(self.search_requests as f64 / by),
            "dollars_per_million": round(self.dollars() / by),
        })
    }

    /// Dollars per million of this bill.
    pub fn dollars(&self) -> f64 {
        self.write_units * WRITE_UNIT + self.read_units * READ_UNIT + self.sqs_requests as f64 * SQS_REQUEST
    }
}

#[derive(Debug, Default)]
struct Meter(Mutex<Bill>);

impl Meter {
    fn add(&self, f: impl FnOnce(&mut Bill)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
    fn read(&self) -> Bill {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// DynamoDB's item size: attribute names plus values (numbers about one byte per two digits).
fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::M(m) => 3 + item_size(m),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::Ss(s) => s.iter().map(String::len).sum(),
        AttributeValue::Ns(s) => s.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        _ => 1,
    }
}

fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of one item write: per 1 KB, at least one. An update's or delete's item size is
/// not in the request; counted as one unit (the items here are under 1 KB).
fn wu(size: Option<usize>) -> f64 {
    size.map_or(1, |s| s.div_ceil(1024).max(1)) as f64
}

/// Read units of strongly consistent reads of items totalling `size` bytes: per 4 KB.
fn ru(size: usize) -> f64 {
    size.div_ceil(4096).max(1) as f64
}

#[derive(Debug)]
struct Counter(Arc<Meter>, &'static str);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "cost-counter"
    }

    fn read_before_execution(
        &self,
        ctx: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::*;
        if self.1 == "sqs" {
            self.0.add(|b| b.sqs_requests += 1);
            return Ok(());
        }
        let input = ctx.input();
        self.0.add(|b| {
            b.dynamo_requests += 1;
            let mut write = |n: u64, units: f64, tx: bool| {
                b.items_written += n;
                b.write_units += units * if tx { 2.0 } else { 1.0 };
                if tx {
                    b.tx_items += n;
                }
            };
            if let Some(i) = input.downcast_ref::<put_item::PutItemInput>() {
                write(1, wu(i.item.as_ref().map(item_size)), false);
            } else if input.downcast_ref::<update_item::UpdateItemInput>().is_some()
                || input.downcast_ref::<delete_item::DeleteItemInput>().is_some()
            {
                write(1, 1.0, false);
            } else if let Some(i) = input.downcast_ref::<transact_write_items::TransactWriteItemsInput>() {
                for item in i.transact_items.iter().flatten() {
                    let size = item.put.as_ref().map(|p| item_size(&p.item));
                    write(1, wu(size), true);
                }
            } else if let Some(i) = input.downcast_ref::<batch_get_item::BatchGetItemInput>() {
                // Every key asked for is billed, found or not: a unit each here, and what a
                // found item's size adds above that once the answer is in.
                b.read_units +=
                    i.request_items.iter().flat_map(|m| m.values()).map(|k| k.keys.len()).sum::<usize>() as f64;
            } else if let Some(i) = input.downcast_ref::<batch_write_item::BatchWriteItemInput>() {
                for req in i.request_items.iter().flat_map(|m| m.values()).flatten() {
                    let size = req.put_request.as_ref().map(|p| item_size(&p.item));
                    write(1, wu(size), false);
                }
            }
        });
        Ok(())
    }

    fn read_after_execution(
        &self,
        ctx: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation::*;
        let Some(Ok(output)) = ctx.output_or_error() else { return Ok(()) };
        self.0.add(|b| {
            let mut read = |items: &[&HashMap<String, AttributeValue>], per_item: bool| {
                b.items_read += items.len() as u64;
                if per_item {
                    b.read_units += items.iter().map(|i| ru(item_size(i))).sum::<f64>();
                } else {
                    // A query is billed on the total size it read (at least one unit).
                    b.read_units += ru(items.iter().map(|i| item_size(i)).sum());
                }
            };
            if let Some(o) = output.downcast_ref::<get_item::GetItemOutput>() {
                match &o.item {
                    Some(i) => read(&[i], true),
                    None => b.read_units += 1.0, // a miss is billed as a read too
                }
            } else if let Some(o) = output.downcast_ref::<batch_get_item::BatchGetItemOutput>() {
                let items: Vec<_> = o.responses.iter().flat_map(|m| m.values()).flatten().collect();
                read(&items, true);
                b.read_units -= items.len() as f64; // counted as asked for, before the request
            } else if let Some(o) = output.downcast_ref::<query::QueryOutput>() {
                let items: Vec<_> = o.items.iter().flatten().collect();
                read(&items, false);
            }
        });
        Ok(())
    }
}

/// The search port, counting the requests an OpenSearch cluster would get.
struct CountingSearch {
    inner: Arc<dyn Search>,
    meter: Arc<Meter>,
}

#[async_trait::async_trait]
impl Search for CountingSearch {
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError> {
        self.meter.add(|b| b.search_requests += 1);
        self.inner.index(docs).await
    }
    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.meter.add(|b| b.search_requests += 1);
        self.inner.search_messages(q).await
    }
    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.meter.add(|b| b.search_requests += 1);
        self.inner.search_groups(q).await
    }
    async fn clear(&self) -> Result<(), SearchError> {
        self.inner.clear().await
    }
}

fn profile(name: &str) -> ProfileInput {
    ProfileInput { name: name.into(), gender: None, avatar_url: None, bio: None }
}

fn text_input(id: &str) -> SendInput {
    SendInput { client_msg_id: id.into(), kind: "text".into(), text: format!("cost model message {id}") }
}

pub struct CostRun {
    service: Arc<Service>,
    queue: Arc<SqsQueue>,
    meter: Arc<Meter>,
}

impl CostRun {
    pub async fn connect(moto: &str, work: &std::path::Path) -> Result<CostRun, String> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(moto)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new("cost", "cost", None, None, "moto"))
            .load()
            .await;
        let meter = Arc::new(Meter::default());
        let dynamo =
            aws_sdk_dynamodb::config::Builder::from(&sdk).interceptor(Counter(meter.clone(), "dynamodb")).build();
        let sqs = aws_sdk_sqs::config::Builder::from(&sdk).interceptor(Counter(meter.clone(), "sqs")).build();
        let prefix = format!("cost{}-", std::process::id());
        let tables = Arc::new(DynamoTables::new(aws_sdk_dynamodb::Client::from_conf(dynamo), prefix.clone()));
        tables.create_tables().await.map_err(|e| format!("creating tables on moto: {e}"))?;
        let queue = Arc::new(SqsQueue::new(aws_sdk_sqs::Client::from_conf(sqs), prefix, service_queues(5)));
        queue.create_queues().await.map_err(|e| format!("creating queues on moto: {e}"))?;
        let tantivy =
            im_shared::search::embedded::TantivySearch::open(&work.join("search")).map_err(|e| e.to_string())?;
        let search = Arc::new(CountingSearch { inner: Arc::new(tantivy), meter: meter.clone() });
        // As the Lambda functions are configured: table streams feed the indexer, no index jobs.
        let cfg = Config { index_jobs: false, send_rate_per_sec: 0.0, ..Config::default() };
        // As deployed with the WebSocket API: every delivery looks up its recipients'
        // connections (here nobody is connected, so nothing is posted).
        let notifier =
            ApiGatewayNotifier::new(Connections::new(tables.clone()), ApiGatewayNotifier::client(&sdk, moto));
        let service = Arc::new(Service::new(tables, queue.clone(), search, cfg).with_notifier(Arc::new(notifier)));
        Ok(CostRun { service, queue, meter })
    }

    /// Runs `work` and returns what it cost.
    async fn bill<T>(&self, work: impl std::future::Future<Output = Result<T, String>>) -> Result<(T, Bill), String> {
        let before = self.meter.read();
        let out = work.await?;
        Ok((out, self.meter.read().minus(&before)))
    }

    /// Runs the queued fan-out jobs as the fan-out function does (one receive, the jobs, one
    /// delete each), until none is left.
    async fn drain_fanout(&self) -> Result<(), String> {
        loop {
            let jobs = self
                .queue
                .receive(FANOUT, 10, Duration::from_secs(60), Duration::ZERO)
                .await
                .map_err(|e| e.to_string())?;
            if jobs.is_empty() {
                return Ok(());
            }
            for job in jobs {
                self.service.handle_fanout(&job.body).await.map_err(|e| e.to_string())?;
                self.queue.ack(FANOUT, &job.receipt).await.map_err(|e| e.to_string())?;
            }
        }
    }

    /// The header of the table `run` prints lines of.
    pub fn header() {
        println!(
            "| operation | per | DynamoDB requests | items written | items read | WRU | RRU | SQS requests | search requests | $ per million | minimum |"
        );
        println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    }

    /// Messages to a conversation of `size` members (2: a single chat) and what each cost; with
    /// 100, the read operations too.
    pub async fn run(&self, size: usize) -> Result<Vec<Value>, String> {
        let s = &self.service;
        let e = |e: im_shared::Error| e.to_string();
        let mut rows = Vec::new();
        let mut line = |op: &str, per: &str, bill: &Bill, by: f64, minimum: Value| {
            let got = bill.scaled(by);
            println!(
                "| {op} | {per} | {} | {} ({} in tx) | {} | {} | {} | {} | {} | {} | {} |",
                got["dynamodb_requests"],
                got["items_written"],
                got["transaction_items"],
                got["items_read"],
                got["write_units"],
                got["read_units"],
                got["sqs_requests"],
                got["search_requests"],
                got["dollars_per_million"],
                minimum["summary"].as_str().unwrap_or("")
            );
            rows.push(json!({"operation": op, "per": per, "measured": got, "minimum": minimum}));
        };
        {
            let members: Vec<String> = (0..size).map(|i| format!("c{size}u{i:04}")).collect();
            for m in &members {
                s.put_me(m, profile(m)).await.map_err(e)?;
            }
            let conversation = if size == 2 {
                s.request_friend(&members[0], &members[1], None).await.map_err(e)?;
                s.accept_friend(&members[1], &members[0]).await.map_err(e)?.conversation_id
            } else {
                let input = CreateGroupInput {
                    name: format!("cost {size}"),
                    description: None,
                    join_policy: JoinPolicy::Open,
                    members: Some(members[1..members.len().min(30)].to_vec()),
                };
                let group = s.create_group(&members[0], input).await.map_err(e)?.group_id;
                for m in members.iter().skip(30) {
                    s.join_group(m, &group, None).await.map_err(e)?;
                }
                self.drain_fanout().await?;
                group
            };
            // Fewer messages to the largest group: moto keeps every stream record in memory.
            let messages = if size >= 1000 { 2 } else { 5 };
            let (seqs, bill) = self
                .bill(async {
                    let mut seqs = Vec::new();
                    for i in 0..messages {
                        let sent = s.send(&members[1], &conversation, text_input(&format!("m{i}"))).await.map_err(e)?;
                        seqs.push(sent.message.seq);
                    }
                    self.drain_fanout().await?;
                    Ok(seqs)
                })
                .await?;
            // The indexer's share: one stream batch holding these messages.
            let (_, index_bill) = self
                .bill(async {
                    let jobs = seqs.iter().map(|&q| Ok(IndexJob::message(&conversation, q))).collect();
                    for outcome in s.index_jobs(jobs).await {
                        outcome.map_err(e)?;
                    }
                    Ok(())
                })
                .await?;
            let n = size as f64;
            let minimum = json!({
                "items_written": 1.0 + 2.0 * n,
                "write_units": 1.0 + 2.0 * n,
                "summary": format!("{} WRU: the message, then an inbox entry and a summary per member", 1 + 2 * size),
                "dollars_per_million": round((1.0 + 2.0 * n) * WRITE_UNIT),
            });
            let label =
                if size == 2 { "single-chat message".to_string() } else { format!("group message, {size} members") };
            line(&label, "message", &bill, messages as f64, minimum);
            line(
                &format!("{label}: indexing ({messages} in one stream batch)"),
                "message",
                &index_bill,
                messages as f64,
                json!({"summary": "one bulk request per stream batch"}),
            );

            if size == 100 {
                let reader = &members[2];
                let (_, b) = self.bill(async { s.sync(reader, Some(0), Some(100)).await.map(drop).map_err(e) }).await?;
                line("sync page", "request", &b, 1.0, json!({"summary": "one query"}));
                let (_, b) = self
                    .bill(async { s.history(reader, &conversation, None, None).await.map(drop).map_err(e) })
                    .await?;
                line("history page", "request", &b, 1.0, json!({"summary": "one query"}));
                let (_, b) =
                    self.bill(async { s.list_conversations(reader, None, None).await.map(drop).map_err(e) }).await?;
                line(
                    "conversation list page",
                    "request",
                    &b,
                    1.0,
                    json!({"summary": "one index query, titles batched"}),
                );
                let (_, b) =
                    self.bill(async { s.mark_read(reader, &conversation, None).await.map(drop).map_err(e) }).await?;
                line("mark read", "request", &b, 1.0, json!({"summary": "one summary update"}));
            }
        }
        Ok(rows)
    }
}

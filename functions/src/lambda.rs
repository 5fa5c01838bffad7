//! The Lambda entry points. The two Lambda binaries (`src/bin/`) run [`http_main`] and
//! [`events_main`], which start the function their `IM_FUNCTION` names ([`crate::function`]):
//! - [`http_function`]: one API operation behind the HTTP API;
//! - [`fanout_function`]: the group fan-out worker on the SQS queue, reporting failed records
//!   only (`ReportBatchItemFailures`), so a good job is never redone for a bad neighbour;
//! - [`indexer_function`]: the search indexer on the store and meta tables' DynamoDB streams;
//! - [`sweeper_function`]: the scheduled outbox sweep that re-enqueues fan-outs whose job was
//!   lost between a send's commit and its enqueue;
//! - [`ws_function`]: a route of the WebSocket API (`$connect`, `$disconnect`, `$default`).
//!
//! Configuration is read once, at cold start ([`LambdaEnv::from_env`]); a missing variable
//! stops the function before its first event, with the variable's name in the log.
//!
//! The handlers (`http_event`, `fanout_event`, `stream_event`) take a ready [`Service`], so
//! tests feed them real event JSON on any backend.

use crate::dispatch::{self, App, Auth, HttpConfig};
use crate::env;
use crate::function::{self, Binary, Function, Role};
use crate::routing::Route;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::Event as StreamEvent;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use im_shared::notify::apigw::ApiGatewayNotifier;
use im_shared::notify::connections::Connections;
use im_shared::queue::service_queues;
use im_shared::queue::sqs::SqsQueue;
use im_shared::search::opensearch::OpenSearchSearch;
use im_shared::service::Service;
use im_shared::service::search::IndexJob;
use im_shared::tables::Item;
use im_shared::tables::dynamo::DynamoTables;
use lambda_http::{Body, Request, RequestExt, request::RequestContext};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

/// The variable that names the function a Lambda process runs (the template sets it).
pub const FUNCTION_VAR: &str = "IM_FUNCTION";

/// `main` of `im-http`: the API operation `IM_FUNCTION` names.
pub async fn http_main() -> Result<(), lambda_runtime::Error> {
    match configured(Binary::Http)?.role {
        Role::Api(route) => http_function(route).await,
        _ => unreachable!("`configured` checked that im-http runs the function"),
    }
}

/// `main` of `im-events`: the worker or WebSocket route `IM_FUNCTION` names.
pub async fn events_main() -> Result<(), lambda_runtime::Error> {
    match configured(Binary::Events)?.role {
        Role::FanoutWorker => fanout_function().await,
        Role::Indexer => indexer_function().await,
        Role::OutboxSweeper => sweeper_function().await,
        Role::Ws(route_key) => ws_function(route_key).await,
        Role::Api(_) => unreachable!("`configured` checked that im-events runs the function"),
    }
}

/// The function `IM_FUNCTION` names, if `binary` runs it; otherwise the reason, logged.
fn configured(binary: Binary) -> Result<Function, lambda_runtime::Error> {
    let name = env::var(FUNCTION_VAR).unwrap_or_default();
    let refusal = match function::find(&name) {
        Some(f) if f.role.binary() == binary => return Ok(f),
        Some(f) => format!("{FUNCTION_VAR}={name:?} is run by {}, not {}", f.role.binary().name(), binary.name()),
        None => {
            let names: Vec<&str> = function::all().filter(|f| f.role.binary() == binary).map(|f| f.name).collect();
            format!("{FUNCTION_VAR}={name:?} names none of {}'s functions ({})", binary.name(), names.join(", "))
        }
    };
    env::init_logging(true);
    Err(refuse(refusal))
}

/// A configuration error that stops a cold start, logged: the function never takes an event.
fn refuse(reason: String) -> lambda_runtime::Error {
    tracing::error!(error = %reason, "configuration error; the function cannot start");
    reason.into()
}

/// A function's configuration, from its environment.
pub struct LambdaEnv {
    /// Tables are named `<prefix><table>` (the template sets `<stack>-`).
    pub table_prefix: String,
    pub queue_prefix: String,
    pub opensearch: im_shared::search::opensearch::OpenSearchConfig,
    pub http: HttpConfig,
    pub service: im_shared::service::Config,
    /// The WebSocket API's stage URL, for the Management API: set, inbox entries are notified
    /// to their users' connections.
    pub ws_endpoint: Option<String>,
}

impl LambdaEnv {
    pub fn from_env() -> Result<Self, String> {
        let opensearch = env::opensearch().ok_or("IM_OPENSEARCH_URL must be set")?;
        let mut service = env::service_config()?;
        // The store and meta tables' streams feed the indexer; no index jobs are queued.
        service.index_jobs = false;
        Ok(LambdaEnv {
            table_prefix: env::required("IM_TABLE_PREFIX")?,
            queue_prefix: env::required("IM_QUEUE_PREFIX")?,
            opensearch,
            http: HttpConfig {
                max_body_bytes: env::parse("IM_MAX_BODY_BYTES", 64 * 1024)?,
                dev_mode: false,
                ..HttpConfig::default()
            },
            service,
            ws_endpoint: env::var("IM_WS_ENDPOINT"),
        })
    }

    /// The service on DynamoDB, SQS and OpenSearch, and its search adapter (the indexer creates
    /// the indexes with it). Makes no network call: cold starts stay short, and the first
    /// request finds out if something is unreachable.
    pub async fn service(&self) -> Result<(Arc<Service>, Arc<OpenSearchSearch>), String> {
        let sdk = sdk_config(crate::env::var)?;
        let tables: Arc<dyn im_shared::tables::Tables> =
            Arc::new(DynamoTables::new(aws_sdk_dynamodb::Client::new(&sdk), self.table_prefix.clone()));
        // The template defines the queues' redrive policies; only the names matter here.
        let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), self.queue_prefix.clone(), service_queues(5));
        let signing = self.opensearch.sigv4_region.as_ref().map(|_| &sdk);
        let search = Arc::new(
            OpenSearchSearch::with_sdk_config(&self.opensearch, signing)
                .map_err(|e| format!("IM_OPENSEARCH_URL: {e}"))?,
        );
        let mut service = Service::new(tables.clone(), Arc::new(queue), search.clone(), self.service.clone());
        if let Some(endpoint) = &self.ws_endpoint {
            let client = ApiGatewayNotifier::client(&sdk, endpoint);
            service = service.with_notifier(Arc::new(ApiGatewayNotifier::new(Connections::new(tables), client)));
        }
        Ok((Arc::new(service), search))
    }
}

/// The AWS SDK's configuration as Lambda gives it, read with `var`: the region (`AWS_REGION`,
/// or `AWS_DEFAULT_REGION`), the execution role's credentials (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and `AWS_ENDPOINT_URL` for LocalStack or
/// moto. A missing (or blank, as `env::var` counts it) region or key is a configuration error,
/// named, as for the function's own variables.
///
/// Not `aws_config::load_defaults`: its credential chain (profiles, SSO, web identity, IMDS,
/// containers) links a whole STS client into every function, for sources a Lambda function
/// never has, and the functions' zips must stay under 4 MB (docs/performance.md, "The Lambda package"). The
/// clients add what this leaves out (HTTP client, retries, timeouts, sleep) from their defaults.
pub fn sdk_config(var: impl Fn(&str) -> Option<String>) -> Result<aws_config::SdkConfig, String> {
    use aws_credential_types::{Credentials, provider::SharedCredentialsProvider};
    let var = |name: &str| var(name).and_then(crate::env::non_blank);
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or("AWS_REGION must be set")?;
    let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
        return Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set (Lambda sets them)".into());
    };
    let credentials = Credentials::new(key, secret, var("AWS_SESSION_TOKEN"), None, "environment");
    let mut sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(SharedCredentialsProvider::new(credentials));
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        sdk = sdk.endpoint_url(url);
    }
    Ok(sdk.build())
}

/// Cold start: logging, configuration and the service (with its search adapter), or the reason
/// there is none.
async fn cold_start() -> Result<(LambdaEnv, Arc<Service>, Arc<OpenSearchSearch>), lambda_runtime::Error> {
    env::init_logging(true);
    let started = async {
        let env = LambdaEnv::from_env()?;
        let (service, search) = env.service().await?;
        Ok::<_, String>((env, service, search))
    };
    started.await.map_err(refuse)
}

/// An API operation's function: serves `route`.
pub async fn http_function(route: &'static Route) -> Result<(), lambda_runtime::Error> {
    let (env, service, _) = cold_start().await?;
    let app = Arc::new(App { service, auth: Auth::Authorizer, cfg: env.http });
    lambda_http::run(service_fn(move |req: Request| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(http_event(&app, route, req).await) }
    }))
    .await
}

/// One API Gateway (HTTP API, payload 2.0) request. The caller is the `sub` claim that the JWT
/// authorizer verified; a missing claim is a `401`, as locally.
pub async fn http_event(app: &App, route: &'static Route, req: Request) -> http::Response<Body> {
    let sub = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).and_then(|jwt| jwt.claims.get("sub")).cloned()
        }
        _ => None,
    };
    // The path as the client sent it (percent-encoded, without the stage).
    let path = match req.raw_http_path() {
        "" => req.uri().path().to_string(),
        raw => raw.to_string(),
    };
    let query = req.uri().query().map(String::from);
    let method = req.method().clone();
    let resp = dispatch::handle_route(app, route, &method, &path, query.as_deref(), sub.as_deref(), req.body()).await;
    resp.map(|bytes| match String::from_utf8(bytes.to_vec()) {
        Ok(text) if text.is_empty() => Body::Empty,
        Ok(text) => Body::Text(text),
        Err(e) => Body::Binary(e.into_bytes()),
    })
}

/// The fan-out worker's function.
pub async fn fanout_function() -> Result<(), lambda_runtime::Error> {
    let (_, service, _) = cold_start().await?;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<SqsEvent>| {
        let service = service.clone();
        async move { Ok::<_, std::convert::Infallible>(fanout_event(&service, ev.payload).await) }
    }))
    .await
}

/// Runs each fan-out job of an SQS batch and names the ones that failed, which SQS makes
/// visible again (and dead-letters after the queue's `maxReceiveCount`). Jobs are idempotent,
/// so a redelivered one is harmless.
pub async fn fanout_event(service: &Service, event: SqsEvent) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let id = record.message_id.unwrap_or_default();
        let outcome = match record.body.as_deref() {
            Some(body) => service.handle_fanout(body).await,
            None => Err(im_shared::Error::Internal("an SQS record without a body".into())),
        };
        if let Err(e) = outcome {
            let receives = record.attributes.get("ApproximateReceiveCount").map_or("?", String::as_str);
            if receives.parse::<u64>().is_ok_and(|n| n >= crate::template::FANOUT_MAX_RECEIVES) {
                // The queue's redrive policy moves it to the DLQ now (and its alarm fires).
                tracing::error!(message_id = %id, receives, error = %e, job = record.body.as_deref().unwrap_or(""),
                    "fan-out job failed its last attempt and goes to the dead-letter queue: \
                     fix the cause, then run `im-server redrive`");
            } else {
                tracing::warn!(message_id = %id, receives, error = %e, "fan-out job failed; SQS will redeliver it");
            }
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    response
}

/// The search indexer's function. Creates the indexes at cold start if they are missing.
pub async fn indexer_function() -> Result<(), lambda_runtime::Error> {
    let (env, service, search) = cold_start().await?;
    if let Err(e) = search.ensure_indexes().await {
        tracing::error!(error = %e, url = %env.opensearch.url, "cannot create the search indexes");
        return Err(e.to_string().into());
    }
    let prefix = env.table_prefix;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<StreamEvent>| {
        let (service, prefix) = (service.clone(), prefix.clone());
        async move { Ok::<_, std::convert::Infallible>(stream_event(&service, &prefix, ev.payload).await) }
    }))
    .await
}

/// The table a stream record comes from, without the stack's prefix:
/// `arn:aws:dynamodb:<region>:<account>:table/<prefix><table>/stream/<label>`.
fn source_table<'a>(arn: &'a str, prefix: &str) -> Option<&'a str> {
    let table = arn.split_once(":table/")?.1.split('/').next()?;
    table.strip_prefix(prefix)
}

/// Indexes the messages and groups a batch of stream records changed, with one index call.
/// Records of one shard arrive in order, and Lambda resumes a failed batch from the record it is
/// told about, so the response names the first record that failed (everything after it is
/// retried too; indexing is idempotent). Persistent failures are bisected by Lambda and end in
/// the on-failure destination (the index dead-letter queue).
pub async fn stream_event(service: &Service, table_prefix: &str, event: StreamEvent) -> DynamoDbEventResponse {
    let mut jobs = Vec::new();
    for record in event.records {
        let seq = record.change.sequence_number.clone().unwrap_or_default();
        let table = record.event_source_arn.as_deref().and_then(|arn| source_table(arn, table_prefix));
        let image = |img: serde_dynamo::Item| -> Option<Item> {
            if img.is_empty() { None } else { serde_dynamo::from_item(img).ok() }
        };
        let job = match table {
            Some(table) => {
                let (old, new) = (image(record.change.old_image), image(record.change.new_image));
                IndexJob::for_change(table, old.as_ref(), new.as_ref()).map(Ok)
            }
            None => Some(Err(im_shared::Error::Internal(format!(
                "a stream record from an unexpected source {:?}",
                record.event_source_arn
            )))),
        };
        if let Some(job) = job {
            jobs.push((seq, job));
        }
    }
    let (seqs, jobs): (Vec<String>, Vec<_>) = jobs.into_iter().unzip();
    let outcomes = service.index_jobs(jobs).await;
    let mut response = DynamoDbEventResponse::default();
    if let Some((seq, e)) = seqs.into_iter().zip(outcomes).find_map(|(s, o)| o.err().map(|e| (s, e))) {
        tracing::warn!(sequence_number = %seq, error = %e, "indexing failed; the stream batch is retried from this record");
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some(seq);
        response.batch_item_failures.push(failure);
    }
    response
}

/// A WebSocket route's function (`$connect`, `$disconnect`, `$default`): the connections table
/// and, for `$connect`, the token check (`IM_JWT_ISSUER`, `IM_JWT_AUDIENCE`).
pub async fn ws_function(route: &'static str) -> Result<(), lambda_runtime::Error> {
    env::init_logging(true);
    let started = async {
        let prefix = env::required("IM_TABLE_PREFIX")?;
        // Only $connect checks tokens; the others never read these.
        let (issuer, audience) = if route == "$connect" {
            (env::required("IM_JWT_ISSUER")?, env::required("IM_JWT_AUDIENCE")?)
        } else {
            (String::new(), String::new())
        };
        let sdk = sdk_config(crate::env::var)?;
        let tables = DynamoTables::new(aws_sdk_dynamodb::Client::new(&sdk), prefix);
        Ok::<_, String>(crate::ws::WsApp {
            connections: Connections::new(Arc::new(tables)),
            verifier: crate::ws::JwtVerifier::new(&issuer, &audience),
            max_per_user: env::parse("IM_WS_MAX_PER_USER", 10)?,
        })
    };
    let app = Arc::new(started.await.map_err(refuse)?);
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(crate::ws::ws_event(&app, ev.payload).await) }
    }))
    .await
}

/// The scheduled outbox sweep's function.
pub async fn sweeper_function() -> Result<(), lambda_runtime::Error> {
    let (_, service, _) = cold_start().await?;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let service = service.clone();
        async move {
            let n = service.sweep_outbox().await.map_err(|e| {
                tracing::error!(error = %e, "outbox sweep failed; the next run retries");
                e.to_string()
            })?;
            if n > 0 {
                tracing::info!(jobs = n, "unfinished fan-outs re-enqueued");
            }
            Ok::<_, String>(serde_json::json!({ "requeued": n }))
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::source_table;

    #[test]
    fn stream_arns_name_their_table() {
        let arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/chat-store/stream/2026-11-22T00:00:00.000";
        assert_eq!(source_table(arn, "chat-"), Some("store"));
        assert_eq!(source_table(arn, "other-"), None);
        assert_eq!(source_table("nonsense", "chat-"), None);
    }
}

#[cfg(test)]
#[path = "lambda_tests.rs"]
mod handler_tests;

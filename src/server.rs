//! The local server's parts: opening a backend, the HTTP listener with the workers and
//! sweepers, and the operator commands. `main.rs` picks one from the command line; the
//! benchmark (`bench/`) starts the same server in its own process.

use crate::config::{self, Config};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use im_functions::dispatch::{self, App};
use im_shared::Error;
use im_shared::notify::local::LocalHub;
use im_shared::notify::{NoNotifier, Notifier};
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::queue::names::{FANOUT, FANOUT_DLQ, INDEX, INDEX_DLQ};
use im_shared::queue::sqs::SqsQueue;
use im_shared::queue::{Queue, service_queues};
use im_shared::search::Search;
use im_shared::search::embedded::TantivySearch;
use im_shared::search::opensearch::OpenSearchSearch;
use im_shared::service::Service;
use im_shared::service::worker::Worker;
use im_shared::tables::dynamo::DynamoTables;
use im_shared::tables::embedded::RedbTables;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

fn open_queue(cfg: &Config) -> Result<EmbeddedQueue, String> {
    let path = cfg.data_dir.join("queue.redb");
    let ring = cfg.journal_bytes.unwrap_or(im_storage::journal::DEFAULT_RING);
    EmbeddedQueue::open_with_journal(&path, service_queues(cfg.max_receives), ring)
        .map_err(|e| format!("cannot open {} (stop the server first: it holds the file): {e}", path.display()))
}

/// The operator's redrive: after fixing what made jobs fail, put them back. On AWS only the
/// fan-out jobs: the index dead-letter queue of a deployed stack holds notices of stream batches
/// that failed, not jobs (`reindex` repairs the search indexes instead).
pub async fn redrive(cfg: Config) -> Result<(), String> {
    let q = open_backend(&cfg, Arc::new(NoNotifier)).await?.queue;
    let pairs: &[(&str, &str)] = match cfg.backend {
        config::Backend::Embedded => &[(FANOUT, FANOUT_DLQ), (INDEX, INDEX_DLQ)],
        config::Backend::Aws { .. } => &[(FANOUT, FANOUT_DLQ)],
    };
    for (queue, dlq) in pairs {
        let moved = q.redrive(queue).await.map_err(|e| e.to_string())?;
        println!("moved {moved} job(s) from {dlq} back to {queue}");
    }
    Ok(())
}

/// Every queue's depth; one that cannot be read (a deployed stack has no `index` queue: its
/// streams feed the indexer) is reported and skipped.
pub async fn queue_stats(cfg: Config) -> Result<(), String> {
    let q = open_backend(&cfg, Arc::new(NoNotifier)).await?.queue;
    for name in [FANOUT, FANOUT_DLQ, INDEX, INDEX_DLQ] {
        match q.depth(name).await {
            Ok(d) => println!("{name}: {} waiting, {} in flight", d.waiting, d.in_flight),
            Err(e) => println!("{name}: not available ({e})"),
        }
    }
    Ok(())
}

/// The service on its backend, and what only one kind of backend needs.
struct Backend {
    service: Arc<Service>,
    queue: Arc<dyn Queue>,
    /// Embedded: the redb tables (their TTL sweeper) and queue (released at start).
    embedded: Option<(RedbTables, EmbeddedQueue)>,
    /// AWS: what `provision` creates.
    aws: Option<(DynamoTables, Arc<SqsQueue>)>,
}

async fn open_search(cfg: &Config) -> Result<Arc<dyn Search>, String> {
    match &cfg.opensearch {
        Some(os) => {
            let adapter = OpenSearchSearch::connect(os).await.map_err(|e| format!("IM_OPENSEARCH_URL: {e}"))?;
            adapter
                .ensure_indexes()
                .await
                .map_err(|e| format!("cannot create the search indexes on {}: {e}", os.url))?;
            tracing::info!(url = %os.url, "searching on OpenSearch");
            Ok(Arc::new(adapter))
        }
        None => {
            let dir = cfg.data_dir.join("search");
            Ok(Arc::new(TantivySearch::open(&dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?))
        }
    }
}

/// The tables' write-ahead journal (unless `IM_JOURNAL_MIB` says otherwise), four times the
/// default of a journal (the queue's). A checkpoint runs when half of it holds commits not yet in
/// the data file, and writes each page once however often those commits rewrote it: redb copies
/// on write the same branch pages, counters and summaries over and over, so a longer interval
/// writes fewer pages per send. At 64 clients (im-bench send, alternating runs) it halved the
/// checkpoint thread's CPU per send (7 against 14 µs), and cut the time checkpoints ran from
/// about half of the run to about 30% (the journal's flushes are slower while one runs).
/// It costs 256 MiB of disk, written when the file is created (about half a second).
const TABLES_JOURNAL: u64 = 256 << 20;

/// The backend, with `notifier` told of every inbox entry (the local WebSockets' hub when serving).
async fn open_backend(cfg: &Config, notifier: Arc<dyn Notifier>) -> Result<Backend, String> {
    let dir = &cfg.data_dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    let search = open_search(cfg).await?;
    match &cfg.backend {
        config::Backend::Embedded => {
            let ring = cfg.journal_bytes.unwrap_or(TABLES_JOURNAL);
            let tables = RedbTables::open_with_journal(&dir.join("tables.redb"), ring)
                .map_err(|e| format!("cannot open {}/tables.redb (is another server using it?): {e}", dir.display()))?
                .with_change_feed(im_shared::service::search::index_job_of_change);
            let queue = open_queue(cfg)?;
            // The change feed feeds the search index (`Service::run_change_feed`), not index jobs.
            let service_cfg = im_shared::service::Config { index_jobs: false, ..cfg.service.clone() };
            let service = Service::new(Arc::new(tables.clone()), Arc::new(queue.clone()), search, service_cfg);
            let service = Arc::new(service.with_notifier(notifier));
            Ok(Backend { service, queue: Arc::new(queue.clone()), embedded: Some((tables, queue)), aws: None })
        }
        config::Backend::Aws { table_prefix, queue_prefix } => {
            // Region, credentials and AWS_ENDPOINT_URL (LocalStack, moto) from the usual chain.
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            let tables = DynamoTables::new(aws_sdk_dynamodb::Client::new(&sdk), table_prefix.clone());
            let queue = Arc::new(SqsQueue::new(
                aws_sdk_sqs::Client::new(&sdk),
                queue_prefix.clone(),
                service_queues(cfg.max_receives),
            ));
            let service = Service::new(Arc::new(tables.clone()), queue.clone(), search, cfg.service.clone());
            let service = Arc::new(service.with_notifier(notifier));
            tracing::info!(table_prefix, queue_prefix, "on DynamoDB and SQS");
            Ok(Backend { service, queue: queue.clone(), embedded: None, aws: Some((tables, queue)) })
        }
    }
}

/// Creates what the AWS backend needs (search indexes are created by opening them).
pub async fn provision(cfg: Config) -> Result<(), String> {
    let backend = open_backend(&cfg, Arc::new(NoNotifier)).await?;
    match backend.aws {
        Some((tables, queues)) => {
            tables.create_tables().await.map_err(|e| format!("creating tables: {e}"))?;
            queues.create_queues().await.map_err(|e| format!("creating queues: {e}"))?;
            println!("tables, queues and search indexes are ready");
        }
        None => println!("the embedded backend needs no provisioning"),
    }
    Ok(())
}

pub async fn reindex(cfg: Config) -> Result<(), String> {
    let (messages, groups) =
        open_backend(&cfg, Arc::new(NoNotifier)).await?.service.rebuild_search().await.map_err(|e| e.to_string())?;
    println!("indexed {messages} message(s) and {groups} group(s)");
    Ok(())
}

/// The server, running: its address, what the benchmark reads, and how to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    /// The embedded tables (commit statistics) and queue (its depth), on the embedded backend.
    pub tables: Option<RedbTables>,
    pub queue: Option<EmbeddedQueue>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(cfg: Config) -> Result<(), String> {
    let running = start(cfg).await?;
    shutdown_signal().await;
    running.stop().await;
    Ok(())
}

/// Opens the backend and starts the workers, the sweepers and the HTTP listener on
/// `cfg.addr` (port 0 picks a free one).
pub async fn start(cfg: Config) -> Result<Running, String> {
    let hub = Arc::new(LocalHub::default());
    let Backend { service, embedded, .. } = open_backend(&cfg, hub.clone()).await?;
    if let Some((_, queue)) = &embedded {
        let released = queue.release_in_flight().await.map_err(|e| e.to_string())?;
        if released > 0 {
            tracing::info!(jobs = released, "resuming jobs that a previous run left unfinished");
        }
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let workers = std::iter::repeat_n(Worker::Fanout, cfg.fanout_workers)
        .chain(std::iter::repeat_n(Worker::Index, cfg.index_workers));
    for w in workers {
        tasks.push(tokio::spawn(service.clone().run_worker(w, cfg.worker.clone(), stop_rx.clone())));
    }
    let (tables, queue) = embedded.unzip();
    if let Some(tables) = &tables {
        tasks.push(tokio::spawn(service.clone().run_change_feed(Arc::new(tables.clone()), stop_rx.clone())));
    }
    tasks.push(tokio::spawn(sweepers(service.clone(), tables.clone(), cfg.sweep_interval, stop_rx.clone())));

    let app = Arc::new(App {
        service,
        auth: dispatch::Auth::Hs256(Box::new(im_functions::auth::Hs256::new(cfg.jwt_secret.as_bytes()))),
        cfg: cfg.http.clone(),
    });
    // The WebSocket and the web page are not API operations: the routes outside the route table.
    let ws = crate::ws::Ws { app: app.clone(), hub, stop: stop_rx.clone(), cfg: cfg.ws.clone() };
    let router = Router::new()
        .route("/v1/ws", axum::routing::any(crate::ws::handler).with_state(ws))
        .merge(crate::web::routes())
        .fallback(route)
        .with_state(app);
    let listener =
        tokio::net::TcpListener::bind(&cfg.addr).await.map_err(|e| format!("cannot listen on {}: {e}", cfg.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(data_dir = %cfg.data_dir.display(), "listening on http://{addr}");
    if cfg.http.dev_mode {
        tracing::info!(
            "dev mode: get a token with  curl -s -X POST http://{addr}/v1/dev/token -H 'content-type: application/json' -d '{{\"user_id\":\"alice\"}}'"
        );
    }
    let mut http_stop = stop_rx.clone();
    tasks.insert(
        0,
        tokio::spawn(async move {
            let stopped = async move {
                let _ = http_stop.changed().await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "the HTTP listener failed");
            }
        }),
    );
    Ok(Running { addr, tables, queue, stop, tasks })
}

impl Running {
    /// Stops accepting requests, lets those in progress and the workers' current jobs finish
    /// (5 s at most each), and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        tracing::info!("stopped");
    }
}

/// Every request goes through the one dispatcher, which owns the route table.
async fn route(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    // Read one byte past the limit so that an oversized body is refused, not truncated.
    let body = match axum::body::to_bytes(body, app.cfg.max_body_bytes + 1).await {
        Ok(b) => b,
        Err(_) => {
            let e = Error::TooLarge(format!("request body is larger than {} bytes", app.cfg.max_body_bytes));
            return into_axum(dispatch::error_response(&e));
        }
    };
    let authorization = parts.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    into_axum(dispatch::handle(&app, &parts.method, parts.uri.path(), parts.uri.query(), authorization, &body).await)
}

/// A dispatcher response as axum's.
pub(crate) fn into_axum(resp: http::Response<bytes::Bytes>) -> Response {
    let (parts, body) = resp.into_parts();
    (parts, Body::from(body)).into_response()
}

/// Expired inbox entries are deleted (embedded; DynamoDB's TTL does it on AWS), and fan-outs
/// whose job was lost are re-enqueued.
async fn sweepers(service: Arc<Service>, tables: Option<RedbTables>, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        if let Some(tables) = &tables {
            match tables.sweep_expired(im_shared::time::now_ms() / 1000).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "expired inbox entries removed"),
                Err(e) => tracing::warn!(error = %e, "TTL sweep failed; will retry"),
            }
        }
        match service.sweep_outbox().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "unfinished fan-outs re-enqueued"),
            Err(e) => tracing::warn!(error = %e, "outbox sweep failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}

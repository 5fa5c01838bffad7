//! The local server's configuration: defaults for `cargo run`, overridden by environment
//! variables, read once at start-up. A malformed value stops the server with its name.

use im_functions::HttpConfig;
use im_functions::env::{self, parse, var};
use im_shared::service::Config as ServiceConfig;
use im_shared::service::worker::WorkerConfig;
use std::path::PathBuf;
use std::time::Duration;

/// Signs dev tokens when no `IM_JWT_SECRET` is set; only ever used in dev mode.
const DEV_SECRET: &str = "im-local-dev-secret-do-not-use-in-production";

/// Where the tables and the job queues live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// redb files under the data directory (the default).
    Embedded,
    /// DynamoDB and SQS (or a local stand-in: `AWS_ENDPOINT_URL`), through the AWS SDK's
    /// configuration chain; tables and queues are named with these prefixes.
    Aws { table_prefix: String, queue_prefix: String },
}

pub struct Config {
    pub backend: Backend,
    pub data_dir: PathBuf,
    /// The size of each embedded file's write-ahead journal, if not the default (`IM_JOURNAL_MIB`,
    /// at least 1 MiB); it applies when the file is created.
    pub journal_bytes: Option<u64>,
    pub addr: String,
    pub jwt_secret: String,
    pub http: HttpConfig,
    pub service: ServiceConfig,
    pub worker: WorkerConfig,
    pub fanout_workers: usize,
    pub index_workers: usize,
    pub max_receives: u32,
    pub sweep_interval: Duration,
    pub log_json: bool,
    /// Search on this OpenSearch cluster instead of the embedded tantivy indexes.
    pub opensearch: Option<im_shared::search::opensearch::OpenSearchConfig>,
    /// The WebSocket endpoint's limits.
    pub ws: crate::ws::WsConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, String> {
        let dev_mode = parse("IM_DEV_MODE", true)?;
        let jwt_secret = match var("IM_JWT_SECRET") {
            Some(s) => s,
            None if dev_mode => DEV_SECRET.to_string(),
            None => return Err("IM_JWT_SECRET must be set when IM_DEV_MODE=false".into()),
        };
        let service = env::service_config()?;
        let worker = WorkerConfig {
            visibility: Duration::from_secs(parse("IM_FANOUT_VISIBILITY_SECS", 30)?),
            retry_base: Duration::from_millis(parse("IM_FANOUT_RETRY_BASE_MS", 1000)?),
            ..WorkerConfig::default()
        };
        let http =
            HttpConfig { max_body_bytes: parse("IM_MAX_BODY_BYTES", 64 * 1024)?, dev_mode, ..HttpConfig::default() };
        let backend = match var("IM_BACKEND").as_deref() {
            None | Some("embedded") => Backend::Embedded,
            Some("aws") => Backend::Aws {
                table_prefix: var("IM_TABLE_PREFIX").unwrap_or_else(|| "im-".into()),
                queue_prefix: var("IM_QUEUE_PREFIX").unwrap_or_else(|| "im-".into()),
            },
            Some(other) => return Err(format!("IM_BACKEND={other:?}: use embedded or aws")),
        };
        Ok(Config {
            backend,
            data_dir: PathBuf::from(var("IM_DATA_DIR").unwrap_or_else(|| "./data".into())),
            journal_bytes: match var("IM_JOURNAL_MIB") {
                None => None,
                Some(_) => Some(parse::<u64>("IM_JOURNAL_MIB", 0)?.max(1) << 20),
            },
            addr: var("IM_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into()),
            jwt_secret,
            http,
            service,
            worker,
            fanout_workers: parse("IM_FANOUT_WORKERS", 2)?,
            index_workers: parse("IM_INDEX_WORKERS", 1)?,
            max_receives: parse("IM_QUEUE_MAX_RECEIVES", 5)?,
            sweep_interval: Duration::from_millis(parse("IM_SWEEP_INTERVAL_MS", 10_000)?),
            log_json: parse::<String>("IM_LOG_FORMAT", "text".into())? == "json",
            opensearch: env::opensearch(),
            ws: crate::ws::WsConfig {
                max_per_user: parse("IM_WS_MAX_PER_USER", 10)?,
                max_total: parse("IM_WS_MAX_CONNECTIONS", 10_000)?,
                ping_every: Duration::from_secs(parse("IM_WS_PING_SECS", 30)?),
            },
        })
    }
}

pub fn init_logging(cfg: &Config) {
    env::init_logging(cfg.log_json);
}

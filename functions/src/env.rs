//! Configuration from environment variables, shared by the local server and the Lambda
//! functions: read once at start-up (a Lambda's cold start), and a missing or malformed value
//! stops the process with the variable's name instead of failing a request later.

use im_shared::search::opensearch::OpenSearchConfig;
use im_shared::service::Config as ServiceConfig;
use std::str::FromStr;

/// A variable's value; unset and blank are the same.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().and_then(non_blank)
}

/// A value, unless it is blank: the rule [`var`] applies, for variables read some other way.
pub fn non_blank(value: String) -> Option<String> {
    (!value.trim().is_empty()).then_some(value)
}

/// A variable that has no sensible default.
pub fn required(name: &str) -> Result<String, String> {
    var(name).ok_or_else(|| format!("{name} must be set"))
}

/// A variable parsed as `T`, or `default` when unset.
pub fn parse<T: FromStr>(name: &str, default: T) -> Result<T, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| format!("{name}={v:?} is not a valid value")),
    }
}

/// The service's limits and timings (`IM_SYNC_TTL_*`, `IM_MAX_*`, `IM_OUTBOX_GRACE_SECS`).
pub fn service_config() -> Result<ServiceConfig, String> {
    let mut service = ServiceConfig::default();
    let ttl_days: f64 = parse("IM_SYNC_TTL_DAYS", 7.0)?;
    service.sync_ttl_secs = parse("IM_SYNC_TTL_SECONDS", (ttl_days * 86_400.0) as i64)?;
    if service.sync_ttl_secs < 1 {
        return Err("the inbox TTL must be at least one second".into());
    }
    service.max_group_members = parse("IM_MAX_GROUP_MEMBERS", service.max_group_members)?;
    service.max_text_chars = parse("IM_MAX_TEXT_CHARS", service.max_text_chars)?;
    service.max_groups_per_user = parse("IM_MAX_GROUPS_PER_USER", service.max_groups_per_user)?;
    service.max_friends_per_user = parse("IM_MAX_FRIENDS_PER_USER", service.max_friends_per_user)?;
    service.outbox_grace_ms = parse("IM_OUTBOX_GRACE_SECS", service.outbox_grace_ms / 1000)? * 1000;
    service.send_rate_per_sec = parse("IM_SEND_RATE_PER_SEC", 20.0)?;
    service.send_burst = parse("IM_SEND_BURST", 60)?;
    if service.send_rate_per_sec.is_nan() || service.send_rate_per_sec < 0.0 {
        return Err("IM_SEND_RATE_PER_SEC must be 0 (no limit) or more".into());
    }
    Ok(service)
}

/// The OpenSearch cluster named by `IM_OPENSEARCH_URL`, if any.
pub fn opensearch() -> Option<OpenSearchConfig> {
    var("IM_OPENSEARCH_URL").map(|url| OpenSearchConfig {
        url,
        index_prefix: var("IM_OPENSEARCH_INDEX_PREFIX").unwrap_or_else(|| "im-".into()),
        sigv4_region: var("IM_OPENSEARCH_SIGV4_REGION"),
    })
}

/// Logs to stderr, filtered by `IM_LOG` (default `info`), as JSON lines or as text.
///
/// The filter is a level, or a comma-separated list of `target=level` with an optional default
/// level (`warn,im_shared=debug`): tracing's `Targets`, which needs no regex engine, unlike its
/// env-filter (half a megabyte of every Lambda function).
pub fn init_logging(json: bool) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let info = || Targets::new().with_default(tracing::Level::INFO);
    let filter = match var("IM_LOG") {
        None => info(),
        Some(v) => v.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("IM_LOG={v:?} is not a valid filter ({e}); logging at info");
            info()
        }),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        tracing_subscriber::registry().with(fmt.json()).with(filter).init();
    } else {
        tracing_subscriber::registry().with(fmt).with(filter).init();
    }
}

//! Port conformance suites, written once and run against every adapter: each case is an async
//! function taking a fresh adapter; [`conformance_tests!`] makes one `#[tokio::test]` per case.
//!
//! Cases use partition keys unique to the run, so adapters whose tables are shared between
//! cases (DynamoDB on a moto server) need no cleanup.

/// Why a live suite was skipped.
#[allow(dead_code)]
pub const SKIP_REASON: &str =
    "set IM_OPENSEARCH_URL (e.g. http://localhost:9200, or a LocalStack or Amazon OpenSearch endpoint) to run it";

pub mod changes;
pub mod queue;
pub mod search;
pub mod tables;

/// A key no other case or run uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// `conformance_tests!(suite_module, async_factory_fn, [case, ...])`: one test per case, each
/// with an adapter from `factory()`.
#[macro_export]
macro_rules! conformance_tests {
    // A factory that returns `None` when its backend is not reachable: each case then says it
    // was skipped, and why, instead of failing.
    (optional $suite:path, $factory:path, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                match $factory().await {
                    Some(adapter) => suite::$case(adapter).await,
                    None => eprintln!("skipped {}: {}", stringify!($case), $crate::conformance::SKIP_REASON),
                }
            }
        )*
    };
    ($suite:path, $factory:path, [$($case:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                suite::$case($factory().await).await;
            }
        )*
    };
}

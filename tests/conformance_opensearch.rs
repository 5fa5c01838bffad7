//! The search conformance suite against a live OpenSearch cluster, when `IM_OPENSEARCH_URL`
//! names one (otherwise every case says it was skipped). Each case uses fresh indexes under a
//! prefix of its own. `IM_OPENSEARCH_SIGV4_REGION` signs requests for Amazon OpenSearch Service
//! with the AWS credentials chain.
//!
//!     IM_OPENSEARCH_URL=http://localhost:9200 cargo test --test conformance_opensearch

// Only the search suite runs here; the others run in conformance_embedded.rs, which keeps the
// dead-code lint that catches a case missing from a suite's list.
#[allow(dead_code)]
mod conformance;

use im_shared::search::Search;
use im_shared::search::opensearch::{OpenSearchConfig, OpenSearchSearch};
use std::sync::Arc;

async fn live_opensearch() -> Option<Arc<dyn Search>> {
    let url = std::env::var("IM_OPENSEARCH_URL").ok().filter(|u| !u.is_empty())?;
    let cfg = OpenSearchConfig {
        url,
        index_prefix: format!("{}-", conformance::unique("im-test")).to_lowercase(),
        sigv4_region: std::env::var("IM_OPENSEARCH_SIGV4_REGION").ok().filter(|r| !r.is_empty()),
    };
    let adapter = OpenSearchSearch::connect(&cfg).await.expect("connect to IM_OPENSEARCH_URL");
    adapter.ensure_indexes().await.expect("create the test indexes");
    Some(Arc::new(adapter))
}

search_conformance!(optional live_opensearch);

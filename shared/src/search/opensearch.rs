//! The OpenSearch adapter: the same documents, analysis and queries as the embedded adapter,
//! against an OpenSearch cluster, over the official client. Requests are signed with SigV4
//! (service `es`) from the AWS credentials chain for Amazon OpenSearch Service, or sent as plain
//! HTTP to a local cluster.
//!
//! - Indexes are created from `infra/opensearch/index.json` (settings, analyzer, mappings).
//! - Indexing is one `_bulk` call with `refresh=wait_for` (searchable when it returns); each
//!   item's own status decides its outcome, so a partial failure retries only what failed.
//! - Queries: `match_phrase_prefix` on the analyzed text (the last word a prefix, at most
//!   [`MAX_PREFIX_EXPANSIONS`] words), a `terms` filter on the conversation ids,
//!   sorted by `time` then `tiebreak`, descending, continued with `search_after`.

use super::analyzer::terms;
use super::*;
use ::opensearch::OpenSearch;
use ::opensearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use ::opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use ::opensearch::http::{Method, Url};
use serde_json::{Value, json};
use std::time::Duration;

/// The index definition shared by both indexes (see `infra/opensearch/README.md`).
pub const INDEX_DEFINITION: &str = include_str!("../../../infra/opensearch/index.json");

#[derive(Debug, Clone)]
pub struct OpenSearchConfig {
    /// The cluster's endpoint, e.g. `https://search-im-xyz.eu-west-1.es.amazonaws.com` or
    /// `http://127.0.0.1:9200`.
    pub url: String,
    /// Prepended to the index names (`<prefix>messages`, `<prefix>groups`).
    pub index_prefix: String,
    /// Sign requests with SigV4 for this region (Amazon OpenSearch Service); `None` sends them
    /// unsigned (a local cluster).
    pub sigv4_region: Option<String>,
}

pub struct OpenSearchSearch {
    client: OpenSearch,
    messages: String,
    groups: String,
}

fn unavailable(e: impl std::fmt::Display) -> SearchError {
    SearchError::Unavailable(format!("opensearch: {e}"))
}

/// The reason an OpenSearch error body gives (`error.type: error.reason`).
fn reason(body: &Value) -> String {
    let e = &body["error"];
    match (e["type"].as_str(), e["reason"].as_str()) {
        (Some(t), Some(r)) => format!("{t}: {r}"),
        _ => body.to_string().chars().take(300).collect(),
    }
}

impl OpenSearchSearch {
    /// Connects with the AWS credentials chain when `sigv4_region` is set.
    pub async fn connect(cfg: &OpenSearchConfig) -> Result<Self, SearchError> {
        let sdk = match &cfg.sigv4_region {
            Some(region) => Some(
                aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(region.clone()))
                    .load()
                    .await,
            ),
            None => None,
        };
        Self::with_sdk_config(cfg, sdk.as_ref())
    }

    /// Connects signing with the credentials of `sdk` (when given).
    pub fn with_sdk_config(cfg: &OpenSearchConfig, sdk: Option<&aws_config::SdkConfig>) -> Result<Self, SearchError> {
        let url =
            Url::parse(&cfg.url).map_err(|e| SearchError::Internal(format!("IM_OPENSEARCH_URL is not a URL: {e}")))?;
        let mut builder =
            TransportBuilder::new(SingleNodeConnectionPool::new(url)).disable_proxy().timeout(Duration::from_secs(30));
        if let Some(sdk) = sdk {
            let creds = ::opensearch::auth::Credentials::try_from(sdk)
                .map_err(|e| SearchError::Internal(format!("AWS credentials: {e}")))?;
            builder = builder.auth(creds).service_name("es");
        }
        let transport = builder.build().map_err(|e| SearchError::Internal(format!("opensearch transport: {e}")))?;
        Ok(OpenSearchSearch {
            client: OpenSearch::new(transport),
            messages: format!("{}messages", cfg.index_prefix),
            groups: format!("{}groups", cfg.index_prefix),
        })
    }

    /// One request; the status and the JSON body (`Null` when there is none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<(String, &'static str)>,
    ) -> Result<(u16, Value), SearchError> {
        let mut headers = HeaderMap::new();
        let body = body.map(|(b, ct)| {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            b
        });
        let query = if query.is_empty() { None } else { Some(query) };
        let resp = self.client.send(method, path, headers, query, body, None).await.map_err(unavailable)?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await.map_err(unavailable)?;
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// Maps a failed status: overload and server trouble can be retried, the rest is a bug.
    fn fail(what: &str, status: u16, body: &Value) -> SearchError {
        let msg = format!("opensearch {what}: HTTP {status}: {}", reason(body));
        if status == 429 || status >= 500 { SearchError::Unavailable(msg) } else { SearchError::Internal(msg) }
    }

    /// Creates the indexes that do not exist yet, from the index definition.
    pub async fn ensure_indexes(&self) -> Result<(), SearchError> {
        let definition: Value = serde_json::from_str(INDEX_DEFINITION)
            .map_err(|e| SearchError::Internal(format!("index definition: {e}")))?;
        for index in [&self.messages, &self.groups] {
            let (status, body) = self.call(Method::Head, &format!("/{index}"), &[], None).await?;
            match status {
                200 => continue,
                404 => {}
                s => return Err(Self::fail("index check", s, &body)),
            }
            let (status, body) = self
                .call(Method::Put, &format!("/{index}"), &[], Some((definition.to_string(), "application/json")))
                .await?;
            let raced = status == 400 && body["error"]["type"] == "resource_already_exists_exception";
            if !(200..300).contains(&status) && !raced {
                return Err(Self::fail("create index", status, &body));
            }
            tracing::info!(index, "created search index");
        }
        Ok(())
    }

    async fn search(&self, index: &str, q: &SearchQuery, scoped: bool) -> Result<Hits, SearchError> {
        if terms(&q.phrase).is_empty() || (scoped && q.conversations.is_empty()) {
            return Ok(Hits::default()); // as the embedded adapter: nothing to match
        }
        let limit = q.limit.max(1);
        let mut filter = Vec::new();
        if scoped {
            filter.push(json!({"terms": {"scope": q.conversations}}));
        }
        let mut body = json!({
            "size": limit + 1,
            "_source": false,
            "track_total_hits": false,
            "query": {"bool": {
                "must": [{"match_phrase_prefix": {"text": {"query": q.phrase, "max_expansions": MAX_PREFIX_EXPANSIONS}}}],
                "filter": filter,
            }},
            "sort": [{"time": "desc"}, {"tiebreak": "desc"}],
        });
        if let Some(a) = q.after {
            body["search_after"] = json!([a.time, a.tiebreak]);
        }
        let (status, resp) = self
            .call(Method::Post, &format!("/{index}/_search"), &[], Some((body.to_string(), "application/json")))
            .await?;
        if status != 200 {
            return Err(Self::fail("search", status, &resp));
        }
        let raw = resp["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let mut hits = Vec::with_capacity(raw.len().min(limit));
        for h in raw.iter().take(limit) {
            let (Some(id), Some(time), Some(tb)) = (h["_id"].as_str(), h["sort"][0].as_i64(), h["sort"][1].as_i64())
            else {
                return Err(SearchError::Internal(format!("opensearch search: unexpected hit {h}")));
            };
            hits.push(Hit { id: id.to_string(), time, tiebreak: tb });
        }
        let next = if raw.len() > limit { hits.last().map(Hit::after) } else { None };
        Ok(Hits { hits, next })
    }
}

#[async_trait]
impl Search for OpenSearchSearch {
    async fn index(&self, docs: Vec<Doc>) -> Result<BulkOutcome, SearchError> {
        if docs.is_empty() {
            return Ok(vec![]);
        }
        let mut body = String::new();
        for d in &docs {
            let id = d.id();
            let (index, source) = match d {
                Doc::Message(m) => (
                    &self.messages,
                    json!({"id": id, "scope": m.conversation_id, "time": m.send_time, "tiebreak": tiebreak(&id), "text": m.text}),
                ),
                Doc::Group(g) => (
                    &self.groups,
                    json!({"id": id, "scope": "", "time": g.created_at, "tiebreak": tiebreak(&id), "text": g.name}),
                ),
            };
            body.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
            body.push('\n');
            body.push_str(&source.to_string());
            body.push('\n');
        }
        let (status, resp) =
            self.call(Method::Post, "/_bulk", &[("refresh", "wait_for")], Some((body, "application/x-ndjson"))).await?;
        if status != 200 {
            return Err(Self::fail("bulk", status, &resp));
        }
        let items = resp["items"].as_array().cloned().unwrap_or_default();
        if items.len() != docs.len() {
            return Err(SearchError::Internal(format!(
                "opensearch bulk: {} results for {} documents",
                items.len(),
                docs.len()
            )));
        }
        Ok(items
            .iter()
            .map(|item| {
                let r = &item["index"];
                match r["status"].as_u64() {
                    Some(s) if (200..300).contains(&s) => None,
                    s => Some(format!("HTTP {}: {}", s.unwrap_or(0), reason(r))),
                }
            })
            .collect())
    }

    async fn search_messages(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.search(&self.messages, &q, true).await
    }

    async fn search_groups(&self, q: SearchQuery) -> Result<Hits, SearchError> {
        self.search(&self.groups, &q, false).await
    }

    /// Deletes and recreates both indexes (so a changed index definition takes effect).
    async fn clear(&self) -> Result<(), SearchError> {
        for index in [&self.messages, &self.groups] {
            let (status, body) = self.call(Method::Delete, &format!("/{index}"), &[], None).await?;
            if !(200..300).contains(&status) && status != 404 {
                return Err(Self::fail("delete index", status, &body));
            }
        }
        self.ensure_indexes().await
    }
}

/// The `pattern_replace` pattern that splits out the characters the analyzer treats as CJK,
/// in Java's regex syntax (what `infra/opensearch/index.json` must contain).
pub fn cjk_split_pattern() -> String {
    let ranges: String = analyzer::CJK_RANGES.iter().map(|(lo, hi)| format!("\\x{{{lo:X}}}-\\x{{{hi:X}}}")).collect();
    format!("([{ranges}])")
}

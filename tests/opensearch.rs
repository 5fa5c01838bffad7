//! The OpenSearch adapter against recorded OpenSearch responses (tests/fixtures/opensearch):
//! a replay server on loopback records each request the adapter makes, so the tests assert the
//! request bodies it sends and its reading of real response bodies, errors and partial bulk
//! failures included. The full search conformance suite runs against a live cluster in
//! `conformance_opensearch.rs` when `IM_OPENSEARCH_URL` is set.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use im_shared::search::opensearch::{INDEX_DEFINITION, OpenSearchConfig, OpenSearchSearch, cjk_split_pattern};
use im_shared::search::{After, Doc, GroupDoc, MessageDoc, Search, SearchError, SearchQuery, tiebreak};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    uri: String,
    headers: HeaderMap,
    body: String,
}

#[derive(Default)]
struct Script {
    responses: VecDeque<(u16, String)>,
    requests: Vec<Recorded>,
}

struct Replay {
    url: String,
    script: Arc<Mutex<Script>>,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/opensearch/{name}", env!("CARGO_MANIFEST_DIR"))).expect(name)
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut s = script.lock().unwrap();
    s.requests.push(Recorded {
        method,
        uri: uri.to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let (status, body) = s.responses.pop_front().unwrap_or((599, "{\"unexpected\":\"request\"}".into()));
    (StatusCode::from_u16(status).unwrap(), [("content-type", "application/json")], body)
}

impl Replay {
    async fn start() -> Replay {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Replay { url, script }
    }

    /// Queues the responses to the next requests, in order.
    fn then(&self, responses: &[(u16, &str)]) -> &Self {
        let mut s = self.script.lock().unwrap();
        for (status, body) in responses {
            let body = if body.ends_with(".json") { fixture(body) } else { body.to_string() };
            s.responses.push_back((*status, body));
        }
        self
    }

    fn requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.script.lock().unwrap().requests)
    }

    fn adapter(&self) -> OpenSearchSearch {
        OpenSearchSearch::with_sdk_config(
            &OpenSearchConfig { url: self.url.clone(), index_prefix: "t-".into(), sigv4_region: None },
            None,
        )
        .unwrap()
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn message(conv: &str, seq: i64, time: i64, text: &str) -> Doc {
    Doc::Message(MessageDoc { conversation_id: conv.into(), seq, send_time: time, text: text.into() })
}

#[tokio::test]
async fn missing_indexes_are_created_from_the_infra_definition() {
    let r = Replay::start().await;
    r.then(&[(404, ""), (200, "create_index.json"), (404, ""), (400, "index_exists.json")]);
    r.adapter().ensure_indexes().await.unwrap();
    let reqs = r.requests();
    let calls: Vec<(Method, &str)> = reqs.iter().map(|q| (q.method.clone(), q.uri.as_str())).collect();
    assert_eq!(
        calls,
        vec![
            (Method::HEAD, "/t-messages"),
            (Method::PUT, "/t-messages"),
            (Method::HEAD, "/t-groups"),
            (Method::PUT, "/t-groups")
        ]
    );
    assert_eq!(json_of(&reqs[1].body), json_of(INDEX_DEFINITION), "the index is made from infra/opensearch/index.json");
    assert_eq!(reqs[1].headers["content-type"], "application/json");
    // Existing indexes are left alone.
    r.then(&[(200, ""), (200, "")]);
    r.adapter().ensure_indexes().await.unwrap();
    assert!(r.requests().iter().all(|q| q.method == Method::HEAD));
}

#[tokio::test]
async fn bulk_indexing_sends_ndjson_and_reports_each_item() {
    let r = Replay::start().await;
    r.then(&[(200, "bulk_partial.json")]);
    let docs = vec![
        message("g_a", 1, 100, "表格存储 hello"),
        message("g_a", 2, 200, "second"),
        Doc::Group(GroupDoc { group_id: "g_b".into(), name: "Rust 爱好者".into(), created_at: 300 }),
    ];
    let outcome = r.adapter().index(docs).await.unwrap();
    assert_eq!(outcome[0], None, "the created item succeeded");
    assert!(outcome[1].as_deref().unwrap().contains("HTTP 429: es_rejected_execution_exception"), "{outcome:?}");
    assert!(outcome[2].as_deref().unwrap().contains("HTTP 400: mapper_parsing_exception"), "{outcome:?}");
    let req = &r.requests()[0];
    assert_eq!((req.method.clone(), req.uri.as_str()), (Method::POST, "/_bulk?refresh=wait_for"));
    assert_eq!(req.headers["content-type"], "application/x-ndjson");
    assert!(req.body.ends_with('\n'), "a bulk body ends with a newline");
    let lines: Vec<Value> = req.body.lines().map(json_of).collect();
    assert_eq!(
        lines,
        vec![
            json!({"index": {"_index": "t-messages", "_id": "g_a/1"}}),
            json!({"id": "g_a/1", "scope": "g_a", "time": 100, "tiebreak": tiebreak("g_a/1"), "text": "表格存储 hello"}),
            json!({"index": {"_index": "t-messages", "_id": "g_a/2"}}),
            json!({"id": "g_a/2", "scope": "g_a", "time": 200, "tiebreak": tiebreak("g_a/2"), "text": "second"}),
            json!({"index": {"_index": "t-groups", "_id": "g_b"}}),
            json!({"id": "g_b", "scope": "", "time": 300, "tiebreak": tiebreak("g_b"), "text": "Rust 爱好者"}),
        ]
    );
    r.then(&[(200, "bulk_ok.json")]);
    let ok = r
        .adapter()
        .index(vec![
            message("g_a", 1, 100, "x"),
            Doc::Group(GroupDoc { group_id: "g_b".into(), name: "y".into(), created_at: 1 }),
        ])
        .await
        .unwrap();
    assert_eq!(ok, vec![None, None], "created and updated both count as indexed");
}

#[tokio::test]
async fn whole_request_failures_are_retryable_only_when_the_cluster_is_overloaded_or_down() {
    let r = Replay::start().await;
    r.then(&[(429, "rejected.json"), (503, "rejected.json"), (404, "index_not_found.json")]);
    let a = r.adapter();
    let e = a.index(vec![message("g_a", 1, 1, "x")]).await.unwrap_err();
    assert!(matches!(&e, SearchError::Unavailable(m) if m.contains("es_rejected_execution_exception")), "{e:?}");
    assert!(matches!(a.index(vec![message("g_a", 1, 1, "x")]).await.unwrap_err(), SearchError::Unavailable(_)));
    let e = a
        .search_messages(SearchQuery { phrase: "x".into(), conversations: vec!["g_a".into()], limit: 5, after: None })
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SearchError::Internal(m) if m.contains("index_not_found_exception: no such index [t-messages]")),
        "{e:?}"
    );
    // Nobody listening: unavailable, not a panic.
    let gone = OpenSearchSearch::with_sdk_config(
        &OpenSearchConfig { url: "http://127.0.0.1:9".into(), index_prefix: "t-".into(), sigv4_region: None },
        None,
    )
    .unwrap();
    assert!(matches!(gone.index(vec![message("g_a", 1, 1, "x")]).await.unwrap_err(), SearchError::Unavailable(_)));
}

#[tokio::test]
async fn search_sends_phrase_filter_sort_and_cursor_and_reads_the_hits() {
    let r = Replay::start().await;
    r.then(&[(200, "search_page.json"), (200, "search_page.json")]);
    let a = r.adapter();
    let q = SearchQuery {
        phrase: "表格存储".into(),
        conversations: vec!["g_a".into(), "s_b".into()],
        limit: 2,
        after: Some(After { time: 1_700_000_000_400, tiebreak: 9 }),
    };
    let page = a.search_messages(q).await.unwrap();
    let ids: Vec<&str> = page.hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, vec!["g_a/3", "s_b/7"]);
    assert_eq!(page.hits[0].tiebreak, 5188146770730811392);
    assert_eq!(page.next, Some(After { time: 1_700_000_000_200, tiebreak: 42 }), "more hits follow the second");
    let groups = a
        .search_groups(SearchQuery { phrase: "Rust".into(), conversations: vec![], limit: 5, after: None })
        .await
        .unwrap();
    assert_eq!(groups.next, None, "three hits under a limit of five end the results");
    let reqs = r.requests();
    assert_eq!((reqs[0].method.clone(), reqs[0].uri.as_str()), (Method::POST, "/t-messages/_search"));
    assert_eq!(
        json_of(&reqs[0].body),
        json!({
            "size": 3,
            "_source": false,
            "track_total_hits": false,
            "query": {"bool": {
                "must": [{"match_phrase_prefix": {"text": {"query": "表格存储", "max_expansions": 50}}}],
                "filter": [{"terms": {"scope": ["g_a", "s_b"]}}],
            }},
            "sort": [{"time": "desc"}, {"tiebreak": "desc"}],
            "search_after": [1_700_000_000_400i64, 9],
        })
    );
    assert_eq!(reqs[1].uri, "/t-groups/_search");
    assert_eq!(json_of(&reqs[1].body)["query"]["bool"]["filter"], json!([]), "groups are not filtered by membership");
}

#[tokio::test]
async fn a_query_with_no_words_or_no_conversations_sends_nothing() {
    let r = Replay::start().await;
    let a = r.adapter();
    let none = a
        .search_messages(SearchQuery { phrase: "?!".into(), conversations: vec!["g_a".into()], limit: 5, after: None })
        .await
        .unwrap();
    assert!(none.hits.is_empty());
    let none = a
        .search_messages(SearchQuery { phrase: "hello".into(), conversations: vec![], limit: 5, after: None })
        .await
        .unwrap();
    assert!(none.hits.is_empty());
    assert!(r.requests().is_empty());
}

#[tokio::test]
async fn clear_deletes_and_recreates_both_indexes() {
    let r = Replay::start().await;
    r.then(&[
        (200, "acknowledged.json"),
        (404, "index_not_found.json"),
        (404, ""),
        (200, "create_index.json"),
        (404, ""),
        (200, "create_index.json"),
    ]);
    r.adapter().clear().await.unwrap();
    let calls: Vec<String> = r.requests().iter().map(|q| format!("{} {}", q.method, q.uri)).collect();
    assert_eq!(
        calls,
        [
            "DELETE /t-messages",
            "DELETE /t-groups",
            "HEAD /t-messages",
            "PUT /t-messages",
            "HEAD /t-groups",
            "PUT /t-groups"
        ]
    );
}

#[tokio::test]
async fn requests_are_signed_with_sigv4_for_service_es() {
    let r = Replay::start().await;
    r.then(&[(200, "search_page.json")]);
    let sdk = aws_config::SdkConfig::builder()
        .region(aws_config::Region::new("eu-west-1"))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::new("AKIDEXAMPLE", "secret", None, None, "test"),
        ))
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let cfg =
        OpenSearchConfig { url: r.url.clone(), index_prefix: "t-".into(), sigv4_region: Some("eu-west-1".into()) };
    let a = OpenSearchSearch::with_sdk_config(&cfg, Some(&sdk)).unwrap();
    a.search_messages(SearchQuery { phrase: "hello".into(), conversations: vec!["g_a".into()], limit: 5, after: None })
        .await
        .unwrap();
    let req = &r.requests()[0];
    let auth = req.headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
    assert!(auth.contains("/eu-west-1/es/aws4_request"), "signed for service es: {auth}");
    assert!(req.headers.contains_key("x-amz-date"));
    // Unsigned mode (a local cluster) sends no signature.
    r.then(&[(200, "search_page.json")]);
    r.adapter()
        .search_messages(SearchQuery {
            phrase: "hello".into(),
            conversations: vec!["g_a".into()],
            limit: 5,
            after: None,
        })
        .await
        .unwrap();
    assert!(!r.requests()[0].headers.contains_key("authorization"));
}

/// Both adapters must analyse text the same way: the index definition's analyzer is the
/// embedded analyzer spelled in OpenSearch's terms, over the same fields.
#[test]
fn the_index_definition_matches_the_embedded_analysis_and_fields() {
    let def = json_of(INDEX_DEFINITION);
    let analysis = &def["settings"]["analysis"];
    assert_eq!(
        analysis["char_filter"]["im_cjk_split"],
        json!({"type": "pattern_replace", "pattern": cjk_split_pattern(), "replacement": " $1 "})
    );
    assert_eq!(
        analysis["analyzer"]["im_text"],
        json!({"type": "custom", "char_filter": ["im_cjk_split"], "tokenizer": "standard", "filter": ["lowercase"]})
    );
    let fields: Vec<&String> = def["mappings"]["properties"].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["id", "scope", "text", "tiebreak", "time"]);
    assert_eq!(def["mappings"]["properties"]["text"]["analyzer"], "im_text");
}

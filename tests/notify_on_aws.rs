//! Notices on AWS: the connections table on DynamoDB (a moto server) and posts through API
//! Gateway's Management API, first to moto's own implementation of it, then to a loopback
//! stand-in that answers `410 Gone` as API Gateway does for a connection closed without
//! `$disconnect` (moto never answers 410). The connections case runs on redb too, and a
//! notifier that cannot reach API Gateway is shown not to hold up a delivery.

mod common;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use im_shared::notify::apigw::{ApiGatewayNotifier, PostStats};
use im_shared::notify::connections::{ConnectError, Connections};
use im_shared::notify::{Notice, Notifier};
use im_shared::tables::dynamo::DynamoTables;
use std::sync::{Arc, Mutex};

async fn connections() -> Connections {
    let prefix = format!("nt{}-", ulid_like());
    let tables = DynamoTables::new(aws_sdk_dynamodb::Client::new(&common::moto_sdk_config().await), prefix);
    tables.create_tables().await.expect("create tables on moto");
    Connections::new(Arc::new(tables))
}

fn ulid_like() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
    )
}

fn notice(user: &str, seq: i64) -> Notice {
    Notice { user_id: user.into(), sync_seq: seq, conversation_id: Some("s_alice_bob".into()) }
}

/// The client as the functions configure it.
async fn management_client(endpoint: &str) -> aws_sdk_apigatewaymanagement::Client {
    ApiGatewayNotifier::client(&common::moto_sdk_config().await, endpoint)
}

#[tokio::test]
async fn the_connections_table_holds_each_users_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let redb = im_shared::tables::embedded::RedbTables::open(&dir.path().join("t.redb")).unwrap();
    for c in [connections().await, Connections::new(Arc::new(redb))] {
        connections_case(c).await;
    }
}

/// The same case on either adapter.
async fn connections_case(c: Connections) {
    c.open("alice", "A1", 2).await.unwrap();
    c.open("alice", "A2", 2).await.unwrap();
    assert!(matches!(c.open("alice", "A3", 2).await, Err(ConnectError::TooMany(2))));
    c.open("bob", "B1", 2).await.unwrap();
    let mut alices = c.of_user("alice").await.unwrap();
    alices.sort();
    assert_eq!(alices, vec!["A1", "A2"]);
    // $disconnect knows only the connection id.
    assert_eq!(c.close("A1").await.unwrap().as_deref(), Some("alice"));
    assert_eq!(c.of_user("alice").await.unwrap(), vec!["A2"]);
    assert_eq!(c.close("A1").await.unwrap(), None, "a second $disconnect finds nothing");
    assert_eq!(c.of_user("bob").await.unwrap(), vec!["B1"]);
}

#[tokio::test]
async fn moto_takes_the_sdks_post_to_a_connection() {
    let c = connections().await;
    c.open("alice", "A1", 10).await.unwrap();
    let notifier = ApiGatewayNotifier::new(c.clone(), management_client(&common::moto_url()).await);
    notifier.notify(vec![notice("alice", 1)]).await;
    assert_eq!(notifier.stats(), PostStats { sent: 1, gone: 0, failed: 0 });
}

/// What the stand-in was sent: (connection id, body).
type Posts = Arc<Mutex<Vec<(String, String)>>>;

async fn post(State(posts): State<Posts>, Path(id): Path<String>, body: String) -> axum::response::Response {
    posts.lock().unwrap().push((id.clone(), body));
    if id.starts_with("gone") {
        // As API Gateway answers: the error type in the header, 410.
        return (StatusCode::GONE, [("x-amzn-errortype", "GoneException")], r#"{"message":null}"#).into_response();
    }
    StatusCode::OK.into_response()
}

#[tokio::test]
async fn every_connection_of_a_recipient_is_told_and_a_gone_one_is_forgotten() {
    let c = connections().await;
    for (user, id) in [("alice", "A1"), ("alice", "gone-A2"), ("bob", "B1"), ("carol", "C1")] {
        c.open(user, id, 10).await.unwrap();
    }
    let posts = Posts::default();
    let app = axum::Router::new().route("/@connections/{id}", axum::routing::post(post)).with_state(posts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let notifier = ApiGatewayNotifier::new(c.clone(), management_client(&url).await);
    notifier.notify(vec![notice("alice", 5), notice("bob", 3)]).await;
    let mut got = posts.lock().unwrap().clone();
    got.sort();
    let frame = |n: i64| format!(r#"{{"type":"inbox","sync_seq":{n},"conversation_id":"s_alice_bob"}}"#);
    assert_eq!(got, vec![("A1".into(), frame(5)), ("B1".into(), frame(3)), ("gone-A2".into(), frame(5))]);
    assert_eq!(notifier.stats(), PostStats { sent: 2, gone: 1, failed: 0 });
    assert_eq!(c.of_user("alice").await.unwrap(), vec!["A1"], "the gone connection is forgotten, not A1");
    assert_eq!(c.of_user("carol").await.unwrap(), vec!["C1"], "others are untouched");
}

/// A notice that cannot be posted (API Gateway unreachable) is logged and counted; the message
/// is delivered all the same, once, and the send succeeds.
#[tokio::test]
async fn a_failed_notice_never_fails_the_delivery() {
    use im_shared::queue::{embedded::EmbeddedQueue, service_queues};
    use im_shared::service::messages::SendInput;
    use im_shared::service::users::ProfileInput;
    use im_shared::service::{Config, Service};
    let dir = tempfile::tempdir().unwrap();
    let tables = Arc::new(im_shared::tables::embedded::RedbTables::open(&dir.path().join("t.redb")).unwrap());
    let c = Connections::new(tables.clone());
    c.open("bob", "B1", 10).await.unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let notifier = Arc::new(ApiGatewayNotifier::new(c.clone(), management_client(&format!("http://{closed}")).await));
    let queue = Arc::new(EmbeddedQueue::open(&dir.path().join("q.redb"), service_queues(5)).unwrap());
    let search = Arc::new(im_shared::search::embedded::TantivySearch::open(&dir.path().join("search")).unwrap());
    let svc = Service::new(tables, queue, search, Config::default()).with_notifier(notifier.clone());
    for u in ["alice", "bob"] {
        svc.put_me(u, ProfileInput { name: u.into(), gender: None, avatar_url: None, bio: None }).await.unwrap();
    }
    svc.request_friend("alice", "bob", None).await.unwrap();
    let conversation = svc.accept_friend("bob", "alice").await.unwrap().conversation_id;
    let input = SendInput { client_msg_id: "m1".into(), kind: "text".into(), text: "still delivered".into() };
    svc.send("alice", &conversation, input).await.expect("the send succeeds though no notice went out");
    let inbox = svc.sync("bob", Some(0), Some(100)).await.unwrap();
    let copies = inbox.items.iter().filter(|e| e.message.as_ref().is_some_and(|m| m.text == "still delivered")).count();
    assert_eq!(copies, 1);
    let stats = notifier.stats();
    assert!(stats.failed >= 1 && stats.sent == 0, "{stats:?}");
    assert_eq!(c.of_user("bob").await.unwrap(), vec!["B1"], "a failure is not a 410: the connection stays");
}

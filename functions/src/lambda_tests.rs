//! The Lambda handlers fed real event JSON (`functions/events/`: API Gateway HTTP API payload
//! 2.0 with a JWT authorizer, SQS, DynamoDB Streams), on the embedded backend configured as on
//! AWS (no index jobs: the stream feeds the indexer). `__GROUP_ID__` and `__FANOUT_JOB__` in a
//! fixture are filled in with what the test created before.

use super::*;
use crate::routes;
use im_shared::queue::embedded::EmbeddedQueue;
use im_shared::queue::names::FANOUT;
use im_shared::queue::{Queue, service_queues};
use im_shared::search::embedded::TantivySearch;
use im_shared::service::users::ProfileInput;
use im_shared::tables::embedded::RedbTables;
use serde_json::{Value, json};
use std::time::Duration;

struct Fixture {
    _dir: tempfile::TempDir,
    app: App,
    queue: EmbeddedQueue,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let tables = RedbTables::open(&dir.path().join("tables.redb")).unwrap();
    let queue = EmbeddedQueue::open(&dir.path().join("queue.redb"), service_queues(5)).unwrap();
    let search = TantivySearch::open(&dir.path().join("search")).unwrap();
    let cfg = im_shared::service::Config { index_jobs: false, ..Default::default() };
    let service = Arc::new(Service::new(Arc::new(tables), Arc::new(queue.clone()), Arc::new(search), cfg));
    let app = App { service, auth: Auth::Authorizer, cfg: HttpConfig::default() };
    Fixture { _dir: dir, app, queue }
}

/// A fixture's text with its placeholders filled in.
fn event_text(name: &str, fill: &[(&str, &str)]) -> String {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    for (from, to) in fill {
        text = text.replace(from, to);
    }
    text
}

/// Runs an API Gateway event through the function named `lambda`; the status and JSON body.
async fn invoke(app: &App, lambda: &str, event: &str, fill: &[(&str, &str)]) -> (u16, Value) {
    let lambda_request: lambda_http::request::LambdaRequest = serde_json::from_str(&event_text(event, fill)).unwrap();
    let request: Request = lambda_request.into();
    let route = routes::by_lambda(lambda).unwrap();
    let resp = http_event(app, route, request).await;
    let body = match resp.body() {
        Body::Empty => Value::Null,
        Body::Text(t) => serde_json::from_str(t).unwrap(),
        other => panic!("a JSON API answers text, got {other:?}"),
    };
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn api_gateway_requests_run_as_the_authorizers_subject() {
    let f = fixture();
    let (status, me) = invoke(&f.app, "put-me", "apigw-v2-put-me.json", &[]).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!((me["user_id"].as_str(), me["name"].as_str()), (Some("alice"), Some("Alice")));

    // The same event with another subject is another user: no profile yet.
    let (status, body) = invoke(&f.app, "get-me", "apigw-v2-get-me-other-user.json", &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");

    // Without the authorizer's claims (a route deployed without the authorizer) nothing runs.
    let (status, body) = invoke(&f.app, "get-me", "apigw-v2-get-me-no-authorizer.json", &[]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");

    // A request for another route reaching this function (a deployment mistake) is a 404.
    let (status, _) = invoke(&f.app, "list-friends", "apigw-v2-put-me.json", &[]).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn send_fan_out_and_index_through_the_three_kinds_of_event() {
    let f = fixture();
    let svc = &f.app.service;
    for (user, name) in [("alice", "Alice"), ("bob", "Bob")] {
        let profile = ProfileInput { name: name.into(), gender: None, avatar_url: None, bio: None };
        svc.put_me(user, profile).await.unwrap();
    }

    // A base64-encoded body, as API Gateway passes some bodies.
    let (status, group) = invoke(&f.app, "create-group", "apigw-v2-create-group-base64.json", &[]).await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["member_count"], json!(2));
    let gid = group["group_id"].as_str().unwrap().to_string();
    let fill = [("__GROUP_ID__", gid.as_str())];

    let (status, body) = invoke(&f.app, "history", "apigw-v2-history-bad-limit.json", &fill).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_argument")), "{body}");

    let (status, msg) = invoke(&f.app, "send-message", "apigw-v2-send-message.json", &fill).await;
    assert_eq!(status, 201, "{msg}");
    assert_eq!((msg["seq"].as_i64(), msg["sender"].as_str()), (Some(1), Some("alice")));
    // A client retry of the same event is the same message.
    let (status, again) = invoke(&f.app, "send-message", "apigw-v2-send-message.json", &fill).await;
    assert_eq!((status, &again), (200, &msg));

    // The send queued a group fan-out job; SQS hands it to the worker with a malformed
    // neighbour, and only the neighbour is reported as failed.
    let jobs = f.queue.receive(FANOUT, 10, Duration::from_secs(30), Duration::from_secs(1)).await.unwrap();
    // (The retry queued the same job again, in case the first was lost: harmless.)
    assert!(!jobs.is_empty() && jobs.iter().all(|j| j.body == jobs[0].body), "{jobs:?}");
    let job = serde_json::to_string(&jobs[0].body).unwrap();
    let job = &job[1..job.len() - 1]; // the JSON string's content, escaped as the fixture needs
    let event: SqsEvent = serde_json::from_str(&event_text("sqs-fanout.json", &[("__FANOUT_JOB__", job)])).unwrap();
    let response = fanout_event(svc, event).await;
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    assert_eq!(failed, ["2e1424d4-f796-459a-8184-9c92662be6da"]);
    let inbox = svc.sync("bob", None, None).await.unwrap();
    let delivered: Vec<_> = inbox.items.iter().filter_map(|e| e.message.as_ref()).map(|m| m.text.clone()).collect();
    assert_eq!(delivered, ["hello from a lambda"], "{inbox:?}");

    // The store and meta streams: a counter bump (no document), the message, the group's
    // rename, a message that is not in the table (fails: the response names that record), and
    // a removal (nothing to do).
    let rename = im_shared::service::groups::UpdateGroupInput {
        name: Some("Rustaceans of Lambda".into()),
        description: None,
        join_policy: None,
    };
    svc.update_group("alice", &gid, rename).await.unwrap();
    let event: StreamEvent = serde_json::from_str(&event_text("dynamodb-stream.json", &fill)).unwrap();
    let bump = &event.records[0].change;
    let image = |i: &serde_dynamo::Item| serde_dynamo::from_item::<_, Item>(i.clone()).unwrap();
    assert_eq!(IndexJob::for_change("meta", Some(&image(&bump.old_image)), Some(&image(&bump.new_image))), None);
    let response = stream_event(svc, "chat-", event).await;
    let failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!(failed, [Some("11100000000000044471823".to_string())]);

    let found = svc.search_messages("bob", Some("lambda".into()), None, None, None).await.unwrap();
    assert_eq!(found.items.len(), 1);
    assert_eq!(found.items[0].seq, 1);
    let groups = svc.search_groups(Some("rustaceans".into()), None, None).await.unwrap();
    assert_eq!(groups.items.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), [gid.as_str()]);
}

/// Each binary the functions name is a `[[bin]]` of the crate, whose `main` is its binary's.
#[test]
fn each_binary_is_built_and_runs_its_own_functions() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let bins: Vec<&str> = manifest.split("[[bin]]").skip(1).map(|b| b.split('"').nth(1).unwrap()).collect();
    assert_eq!(bins, Binary::ALL.map(Binary::name), "functions/Cargo.toml's [[bin]]s");
    for (binary, main) in [(Binary::Http, "lambda::http_main()"), (Binary::Events, "lambda::events_main()")] {
        let path = format!("{}/src/bin/{}.rs", env!("CARGO_MANIFEST_DIR"), binary.name());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(text.contains(main), "{path} runs {main}");
    }
}

/// The binary finds each function by its name, once each; the dev-token route is no function.
#[test]
fn every_function_is_found_by_its_name_and_the_dev_route_by_none() {
    let names: Vec<&str> = function::all().map(|f| f.name).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a name twice: {names:?}");
    for name in &names {
        assert_eq!(function::find(name).map(|f| f.name), Some(*name));
    }
    let api = function::all().filter(|f| matches!(f.role, Role::Api(_))).count();
    assert_eq!(api, routes::ROUTES.len() - 1, "every route but the dev token's");
    assert!(function::find("dev-token").is_none() && function::find("").is_none());
}

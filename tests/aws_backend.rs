//! The local server with `IM_BACKEND=aws` on a moto server (DynamoDB and SQS): provisioned by
//! `im-server provision`, then the main flows and guarantees over real HTTP. moto is slow, so
//! this suite is lean; the full scenarios run on the embedded backend.

mod common;

use common::{Server, User};
use reqwest::StatusCode as S;
use serde_json::json;

fn aws_env(prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("IM_BACKEND", "aws".into()),
        ("IM_TABLE_PREFIX", format!("{prefix}-")),
        ("IM_QUEUE_PREFIX", format!("{prefix}-")),
        ("AWS_ENDPOINT_URL", common::moto_url()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("IM_SWEEP_INTERVAL_MS", "1000".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_on_dynamodb_and_sqs_keeps_the_guarantees() {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let env = aws_env(&format!("aws{nanos:x}"));
    let provision = std::process::Command::new(env!("CARGO_BIN_EXE_im-server"))
        .arg("provision")
        .env("IM_DATA_DIR", tempfile::tempdir().unwrap().path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(provision.status.success(), "{}", String::from_utf8_lossy(&provision.stderr));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start_with(&env_refs);
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    // Friends, and a single chat: both inboxes before the send returns; retries are idempotent.
    let conv = s.befriend(&a, &b).await;
    let (st, first) = a.send(&s, &conv, "m1", "hello bob").await;
    assert_eq!(st, S::CREATED, "{first}");
    let (st, again) = a.send(&s, &conv, "m1", "hello bob").await;
    assert_eq!((st, &again), (S::OK, &first), "a retry returns the first result");
    assert_eq!(b.inbox_messages(&s, &conv).await, vec![(1, "hello bob".to_string())]);
    assert_eq!(a.inbox_messages(&s, &conv).await.len(), 1);
    // A group: fan-out through SQS reaches every member once.
    let g = s.group(&a, &[&b, &c], "open").await;
    for i in 0..3 {
        assert_eq!(b.send(&s, &g, &format!("g{i}"), &format!("group {i}")).await.0, S::CREATED);
    }
    for u in [&a, &b, &c] {
        s.eventually(30, &format!("{} gets the group messages", u.id), || async {
            u.inbox_messages(&s, &g).await.len() >= 3
        })
        .await;
    }
    for u in [&a, &b, &c] {
        let mut seqs: Vec<i64> = u.inbox_messages(&s, &g).await.iter().map(|(q, _)| *q).collect();
        seqs.sort();
        assert_eq!(seqs, vec![1, 2, 3], "{}: each message exactly once", u.id);
    }
    // Ordered inbox, unread counts, read markers, history.
    let (items, reset) = a.sync_from(&s, 0).await;
    assert!(!reset);
    let nums: Vec<i64> = items.iter().map(|e| e["sync_seq"].as_i64().unwrap()).collect();
    assert!(nums.windows(2).all(|w| w[0] < w[1]), "{nums:?}");
    assert_eq!(a.summary(&s, &g).await["unread"], 3);
    let (_, v) = a.post(&s, &format!("/v1/conversations/{g}/read"), json!({"seq": 2})).await;
    assert_eq!((v["unread"].as_i64(), v["read_seq"].as_i64()), (Some(1), Some(2)), "{v}");
    let (_, h) = c.get(&s, &format!("/v1/conversations/{g}/messages?limit=2")).await;
    assert_eq!(h["items"][0]["seq"], 3);
    assert_eq!(h["next_before"], 2);
    // Visibility: an outsider is refused; a member who leaves is refused at once.
    let x = User { id: "xavier".into(), token: s.token("xavier").await };
    assert_eq!(x.get(&s, &format!("/v1/conversations/{g}/messages")).await.0, S::FORBIDDEN);
    assert_eq!(c.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await.0, S::NO_CONTENT);
    assert_eq!(c.get(&s, &format!("/v1/conversations/{g}/messages")).await.0, S::FORBIDDEN);
    // Friendship is removed on both sides at once.
    assert_eq!(a.delete(&s, "/v1/friends/bob").await.0, S::NO_CONTENT);
    for u in [&a, &b] {
        let (_, v) = u.get(&s, "/v1/friends").await;
        assert!(v["items"].as_array().unwrap().is_empty(), "{v}");
    }
}

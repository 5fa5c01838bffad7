//! A full disk on the embedded backend: requests fail with a clear 503 (never a 500, never a
//! hang), nothing half-written shows, and once there is room again the same server recovers
//! without a restart: retried sends land exactly once and fan-out catches up.
//!
//! The disk is "filled" by lowering the running server's file-size limit (RLIMIT_FSIZE, with
//! SIGXFSZ ignored): a write that would grow a data file fails with EFBIG, as it would with
//! ENOSPC, and the limit can be lifted again from outside, as freeing space would.

mod common;

use common::{Server, User};
use reqwest::StatusCode as S;
use serde_json::{Value, json};
use std::time::Duration;

/// Sends `id` once; the status and body.
async fn send(s: &Server, u: &User, conv: &str, id: &str) -> (S, Value) {
    // Big messages, to reach the end of the file quickly.
    let text = format!("{id} {}", "x".repeat(4000));
    u.post(s, &format!("/v1/conversations/{conv}/messages"), json!({"client_msg_id": id, "type": "text", "text": text}))
        .await
}

/// The size of the larger of the two data files.
fn largest_data_file(s: &Server) -> u64 {
    ["tables.redb", "queue.redb"].iter().map(|f| std::fs::metadata(s.dir.join(f)).unwrap().len()).max().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503s_and_the_server_recovers_once_there_is_room() {
    let mut s = Server::start_with(&[("IM_SEND_RATE_PER_SEC", "0"), ("IM_OUTBOX_GRACE_SECS", "1")]);
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let group = s.group(&a, &[&b, &c], "open").await;
    let single = s.befriend(&a, &b).await;
    let mut acked: Vec<(String, String)> = Vec::new(); // (conversation, client_msg_id)
    for i in 0..3 {
        for conv in [&group, &single] {
            let id = format!("before-{i}");
            assert_eq!(send(&s, &a, conv, &id).await.0, S::CREATED);
            acked.push((conv.clone(), id));
        }
    }

    // The disk fills up: keep sending until the server says it cannot write.
    s.limit_file_size(Some(largest_data_file(&s)));
    let mut refused = None;
    for i in 0..2000 {
        let conv = if i % 2 == 0 { &group } else { &single };
        let id = format!("during-{i}");
        let (st, body) = send(&s, &a, conv, &id).await;
        match st {
            S::CREATED => acked.push((conv.clone(), id)),
            S::SERVICE_UNAVAILABLE => {
                common::assert_error(st, &body, S::SERVICE_UNAVAILABLE, "unavailable");
                refused = Some((conv.clone(), id));
                break;
            }
            other => panic!("a full disk answered {other}: {body}"),
        }
    }
    let mut refused = vec![refused.expect("2,000 sends of 4 KB never filled the disk")];
    eprintln!("the disk was full after {} messages", acked.len());
    // While it stays full, every request gets an answer that is either a success (a write
    // that fits in the file's free pages) or a clear 503, never a 500 or a hang.
    let either = |st: S| st.is_success() || st == S::SERVICE_UNAVAILABLE;
    for i in 0..20 {
        let id = format!("bob-while-full-{i}");
        let (st, body) = send(&s, &b, &single, &id).await;
        assert!(either(st), "send on a full disk: {st} {body}");
        if st == S::CREATED {
            acked.push((single.clone(), id));
        } else {
            refused.push((single.clone(), id));
        }
        let (st, body) = c.put(&s, "/v1/me", json!({"name": format!("Carol {i}")})).await;
        assert!(either(st), "PUT /v1/me on a full disk: {st} {body}");
        for path in ["/v1/sync?after=0", "/v1/conversations", "/v1/me"] {
            let (st, body) = b.get(&s, path).await;
            assert!(either(st), "GET {path} on a full disk: {st} {body}");
        }
    }
    eprintln!("{} sends refused while the disk was full", refused.len());
    let (st, _) = s.call(reqwest::Method::GET, "/v1/health", None, None).await;
    assert_eq!(st, S::OK, "the process stays up");

    // Room again: the same process, no restart. The client's retries of each refused message
    // land once; the next request after the fix reopens the files.
    s.limit_file_size(None);
    for (conv, id) in refused {
        let who = if id.starts_with("bob") { &b } else { &a };
        s.eventually(30, "a refused send succeeds when retried", || async {
            matches!(send(&s, who, &conv, &id).await.0, S::CREATED | S::OK)
        })
        .await;
        assert_eq!(send(&s, who, &conv, &id).await.0, S::OK, "a retry after success writes nothing");
        acked.push((conv, id));
    }
    for i in 0..3 {
        for conv in [&group, &single] {
            let id = format!("after-{i}");
            assert_eq!(send(&s, &a, conv, &id).await.0, S::CREATED);
            acked.push((conv.clone(), id));
        }
    }
    assert_eq!(c.put(&s, "/v1/me", json!({"name": "Carol C."})).await.0, S::OK);

    // Nothing lost, duplicated or half-written, and the files open cleanly after a kill.
    for restart in [false, true] {
        if restart {
            s.kill9();
            s.restart();
        }
        for conv in [&group, &single] {
            // A refused send may have committed before a later write of it failed: its retry
            // then found it. So the store is compared as a set: each message once, no gaps.
            let mut want: Vec<&str> = acked.iter().filter(|(c, _)| c == conv).map(|(_, id)| id.as_str()).collect();
            want.sort();
            let got: Vec<(i64, String)> = b
                .history(&s, conv)
                .await
                .iter()
                .map(|m| (m["seq"].as_i64().unwrap(), m["client_msg_id"].as_str().unwrap().to_string()))
                .collect();
            let seqs: Vec<i64> = got.iter().map(|(q, _)| *q).collect();
            assert_eq!(seqs, (1..=want.len() as i64).collect::<Vec<_>>(), "{conv}: numbered without a gap");
            let mut ids: Vec<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, want, "{conv}: the store");
            for u in [&a, &b, &c] {
                if conv == &single && u.id == "carol" {
                    continue;
                }
                s.eventually(30, "fan-out catches up", || async {
                    u.inbox_messages(&s, conv).await.len() >= want.len()
                })
                .await;
                let mut inbox: Vec<i64> = u.inbox_messages(&s, conv).await.iter().map(|(q, _)| *q).collect();
                inbox.sort();
                assert_eq!(inbox, seqs, "{conv}: {}'s inbox holds each message once", u.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

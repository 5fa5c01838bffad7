//! Crash safety: kill -9 the server while it fans out a message to a group of 2,000 members,
//! start it again on the same data, and every member's inbox holds the message exactly once.

mod common;

use common::{Server, User};
use reqwest::StatusCode as S;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMBERS: usize = 2000;

/// Runs `f` over `items` with `width` requests in flight.
async fn in_parallel<T, F, Fut, R>(items: Vec<T>, width: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send,
{
    let f = Arc::new(f);
    let sem = Arc::new(tokio::sync::Semaphore::new(width));
    let tasks: Vec<_> = items
        .into_iter()
        .map(|it| {
            let (f, sem) = (f.clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                f(it).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// How many copies of message `seq` of `group` each user's inbox holds.
async fn copies(s: &Server, users: &[User], group: &str, seq: i64) -> Vec<usize> {
    let base = s.base.clone();
    let group = group.to_string();
    in_parallel(users.to_vec(), 16, move |u: User| {
        let (base, group) = (base.clone(), group.clone());
        async move {
            let v: serde_json::Value = common::client()
                .get(format!("{base}/v1/sync?after=0&limit=500"))
                .bearer_auth(&u.token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["conversation_id"] == group.as_str() && e["message"]["seq"] == seq)
                .count()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_2000_member_fanout_loses_and_duplicates_nothing() {
    let mut s = Server::start_with(&[("IM_FANOUT_WORKERS", "1")]);
    let setup = Instant::now();
    let owner = s.user("owner").await;
    let ids: Vec<String> = (0..MEMBERS - 1).map(|i| format!("m{i:04}")).collect();
    let base = s.base.clone();
    let members: Vec<User> = in_parallel(ids, 16, move |id: String| {
        let base = base.clone();
        async move {
            let c = common::client();
            let v: serde_json::Value = c
                .post(format!("{base}/v1/dev/token"))
                .json(&json!({"user_id": id}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = v["token"].as_str().unwrap().to_string();
            let r = c.put(format!("{base}/v1/me")).bearer_auth(&token).json(&json!({"name": id})).send().await.unwrap();
            assert_eq!(r.status(), S::OK);
            User { id, token }
        }
    })
    .await;
    let group = s.group(&owner, &[], "open").await;
    let base = s.base.clone();
    let g = group.clone();
    in_parallel(members.clone(), 16, move |u: User| {
        let (base, g) = (base.clone(), g.clone());
        async move {
            let r =
                common::client().post(format!("{base}/v1/groups/{g}/join")).bearer_auth(&u.token).send().await.unwrap();
            assert_eq!(r.status(), S::OK, "{}", r.text().await.unwrap());
        }
    })
    .await;
    let (_, v) = owner.get(&s, &format!("/v1/groups/{group}")).await;
    assert_eq!(v["member_count"], MEMBERS);
    let mut everyone = members.clone();
    everyone.push(owner.clone());
    eprintln!("set up {MEMBERS} members in {:?}", setup.elapsed());

    // Fan-out goes through members in user_id order: the first has it before the last does.
    let (first, last) = (&members[0], &owner);
    let mut killed_mid_fanout = false;
    let mut sent = Vec::new();
    for attempt in 0..5 {
        let (st, m) = owner.send(&s, &group, &format!("crash-{attempt}"), "are you all there?").await;
        assert_eq!(st, S::CREATED);
        let seq = m["seq"].as_i64().unwrap();
        sent.push(seq);
        let has = |u: &User| {
            let (s, u, group) = (&s, u.clone(), group.clone());
            async move { u.inbox_messages(s, &group).await.iter().any(|(q, _)| *q == seq) }
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !has(first).await {
            assert!(Instant::now() < deadline, "fan-out never started");
        }
        if !has(last).await {
            s.kill9();
            killed_mid_fanout = true;
            eprintln!("killed mid-fan-out of seq {seq} (attempt {attempt})");
            break;
        }
        eprintln!("fan-out of seq {seq} finished before the kill; trying again");
    }
    assert!(killed_mid_fanout, "could not catch a fan-out in progress in 5 attempts");

    s.restart();
    let seq = *sent.last().unwrap();
    s.eventually(120, "the interrupted fan-out completes after restart", || async {
        copies(&s, std::slice::from_ref(last), &group, seq).await[0] > 0
    })
    .await;
    // Let any redundant redelivery finish, then count every inbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for seq in &sent {
        let counts = copies(&s, &everyone, &group, *seq).await;
        let wrong: Vec<(String, usize)> =
            everyone.iter().zip(&counts).filter(|(_, n)| **n != 1).map(|(u, n)| (u.id.clone(), *n)).collect();
        assert!(
            wrong.is_empty(),
            "message {seq}: {} inboxes do not hold it exactly once, e.g. {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }

    // A kill right after the send returns: the persisted job runs after the restart.
    let (_, m) = owner.send(&s, &group, "right-away", "and now?").await;
    s.kill9();
    s.restart();
    let seq = m["seq"].as_i64().unwrap();
    s.eventually(120, "the queued fan-out runs after restart", || async {
        copies(&s, std::slice::from_ref(last), &group, seq).await[0] > 0
    })
    .await;
    let counts = copies(&s, &everyone, &group, seq).await;
    assert!(counts.iter().all(|n| *n == 1), "every inbox holds the message exactly once");
}

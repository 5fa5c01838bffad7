//! The guarantees of API.md, each by a test that fails if it is broken, over real HTTP.

mod common;

use common::{Server, User, assert_error};
use reqwest::{Method, StatusCode as S};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// 1. Ordered (and 2. exactly once): 8 concurrent senders into one group and 8 into one single
/// chat (both participants, four devices each) while a reader syncs live. The reader sees every
/// message exactly once with `sync_seq` strictly increasing, and what it read live is exactly
/// what a full re-read finds afterwards: nothing arrived late below a number it had seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_exactly_once_under_concurrent_senders_while_a_reader_syncs_live() {
    // moto serializes DynamoDB requests, so 16 contending senders make slow progress there.
    let per_sender: usize = if common::on_aws() { 4 } else { 20 };
    // As fast as they can: no send rate limit here (api.rs tests the limit).
    let s = Server::start_with(&[("IM_SEND_RATE_PER_SEC", "0")]);
    let reader = s.user("reader").await;
    let peer = s.user("peer").await;
    let mut senders = Vec::new();
    for i in 0..8 {
        senders.push(s.user(&format!("sender{i}")).await);
    }
    let group = s.group(&reader, &senders.iter().collect::<Vec<_>>(), "open").await;
    let single = s.befriend(&reader, &peer).await;
    let (_, v) = reader.get(&s, "/v1/sync?limit=500").await;
    let start_after = v["next_after"].as_i64().unwrap();

    let mut tasks = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let (base, sender, group) = (s.base.clone(), sender.clone(), group.clone());
        tasks.push(tokio::spawn(send_many(base, sender, group, format!("g{i}"), per_sender)));
    }
    for i in 0..8 {
        let who = if i % 2 == 0 { reader.clone() } else { peer.clone() };
        tasks.push(tokio::spawn(send_many(s.base.clone(), who, single.clone(), format!("s{i}"), per_sender)));
    }

    // The live reader.
    let want = 16 * per_sender;
    let mut live: Vec<Value> = Vec::new();
    let mut after = start_after;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen_msgs = HashSet::new();
    while seen_msgs.len() < want {
        assert!(Instant::now() < deadline, "reader saw only {} of {want} messages", seen_msgs.len());
        let (st, v) = reader.get(&s, &format!("/v1/sync?after={after}&limit=37")).await;
        assert_eq!(st, S::OK, "{v}");
        assert_eq!(v["reset"], false);
        for e in v["items"].as_array().unwrap() {
            let n = e["sync_seq"].as_i64().unwrap();
            assert!(n > after, "sync_seq {n} after checkpoint {after}: not strictly increasing");
            after = n;
            if e["kind"] == "message" {
                let key = (e["conversation_id"].as_str().unwrap().to_string(), e["message"]["seq"].as_i64().unwrap());
                assert!(seen_msgs.insert(key.clone()), "message {key:?} delivered twice");
            }
            live.push(e.clone());
        }
        assert_eq!(v["next_after"].as_i64().unwrap(), after.max(v["next_after"].as_i64().unwrap()));
        after = v["next_after"].as_i64().unwrap();
        if v["items"].as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (full, reset) = reader.sync_from(&s, start_after).await;
    assert!(!reset);
    assert_eq!(full, live, "a full re-read finds exactly what was read live: no late arrival below a seen number");

    // Each conversation's seqs are dense and each client message is stored once.
    for conv in [&group, &single] {
        let mut seqs = Vec::new();
        let mut ids = HashSet::new();
        let mut before = String::new();
        loop {
            let (_, v) = reader.get(&s, &format!("/v1/conversations/{conv}/messages?limit=100{before}")).await;
            for m in v["items"].as_array().unwrap() {
                seqs.push(m["seq"].as_i64().unwrap());
                assert!(ids.insert(format!("{}/{}", m["sender"], m["client_msg_id"])), "stored twice: {m}");
            }
            match v["next_before"].as_i64() {
                Some(b) => before = format!("&before={b}"),
                None => break,
            }
        }
        assert_eq!(
            seqs,
            (1..=(8 * per_sender) as i64).rev().collect::<Vec<_>>(),
            "seqs of {conv} are dense, newest first"
        );
    }
    // The peer's inbox holds each single-chat message once too.
    let peer_msgs = peer.inbox_messages(&s, &single).await;
    assert_eq!(peer_msgs.len(), 8 * per_sender);
    assert_eq!(peer_msgs.iter().map(|(q, _)| *q).collect::<HashSet<_>>().len(), 8 * per_sender);
}

async fn send_many(base: String, who: User, conv: String, tag: String, n: usize) {
    let client = common::client();
    for k in 0..n {
        let body = json!({"client_msg_id": format!("{tag}-{k}"), "type": "text", "text": format!("{tag} says {k}")});
        let resp = client
            .post(format!("{base}/v1/conversations/{conv}/messages"))
            .bearer_auth(&who.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), S::CREATED, "{}", resp.text().await.unwrap());
    }
}

/// 6. Retention, and 1. with expired entries: numbers are never reused, and a checkpoint older
/// than the oldest kept entry is told to reset.
#[tokio::test]
async fn expired_entries_never_free_their_numbers_and_old_checkpoints_reset() {
    // The TTL must outlast setting the scene (slower on moto). DynamoDB deletes expired items
    // late (moto never does): reads must not return them, deleted or not.
    let ttl = if common::on_aws() { "8" } else { "2" };
    let s = Server::start_with(&[("IM_SYNC_TTL_SECONDS", ttl), ("IM_SWEEP_INTERVAL_MS", "200")]);
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    for i in 0..3 {
        b.send(&s, &conv, &format!("old{i}"), "old").await;
    }
    let (old, reset) = a.sync_from(&s, 0).await;
    assert!(!reset);
    let old_max = old.last().unwrap()["sync_seq"].as_i64().unwrap();
    let mid = old[1]["sync_seq"].as_i64().unwrap();
    // Everything expires (and is swept).
    s.eventually(30, "old entries expire", || async {
        let (_, v) = a.get(&s, "/v1/sync?after=0").await;
        v["items"].as_array().unwrap().is_empty()
    })
    .await;
    let (_, v) = a.get(&s, "/v1/sync?after=0").await;
    assert_eq!(v["reset"], true, "a checkpoint before the expired entries must reset: {v}");
    let (_, v) = a.get(&s, &format!("/v1/sync?after={mid}")).await;
    assert_eq!(v["reset"], true, "a checkpoint in the middle of the expired entries must reset: {v}");
    let (_, v) = a.get(&s, &format!("/v1/sync?after={old_max}")).await;
    assert_eq!(
        (v["reset"].as_bool(), v["items"].as_array().unwrap().len()),
        (Some(false), 0),
        "an up-to-date checkpoint is fine"
    );
    for i in 0..3 {
        b.send(&s, &conv, &format!("new{i}"), "new").await;
    }
    let (new, reset) = a.sync_from(&s, old_max).await;
    assert!(!reset);
    let nums: Vec<i64> = new.iter().map(|e| e["sync_seq"].as_i64().unwrap()).collect();
    assert_eq!(nums, vec![old_max + 1, old_max + 2, old_max + 3], "numbers continue after expired ones, never reused");
    let (_, v) = a.get(&s, "/v1/sync?after=0").await;
    assert_eq!(v["reset"], true);
    assert_eq!(v["items"][0]["sync_seq"], old_max + 1, "the kept entries are still returned with a reset");
    // History is kept until deleted, whatever the inbox TTL.
    let (_, h) = a.get(&s, &format!("/v1/conversations/{conv}/messages")).await;
    assert_eq!(h["items"].as_array().unwrap().len(), 6);
    // A checkpoint from the future is reset too.
    let (_, v) = a.get(&s, "/v1/sync?after=999999").await;
    assert_eq!(v["reset"], true);
}

/// 2. Exactly once: a client retry returns the first result and writes nothing new, even when
/// the retries race each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_retry_returns_the_first_result_and_writes_nothing() {
    let s = Server::start();
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let single = s.befriend(&a, &b).await;
    let group = s.group(&a, &[&b, &c], "open").await;
    for conv in [&single, &group] {
        let (st, first) = a.send(&s, conv, "same", "first text").await;
        assert_eq!(st, S::CREATED);
        let (st, again) = a.send(&s, conv, "same", "different text").await;
        assert_eq!(st, S::OK, "a retry is 200");
        assert_eq!(again, first, "a retry returns the first result");
        // Racing retries: exactly one creates.
        let racers: Vec<_> = (0..6)
            .map(|_| {
                let (base, a, conv) = (s.base.clone(), a.clone(), conv.clone());
                tokio::spawn(async move {
                    let body = json!({"client_msg_id": "race", "type": "text", "text": "r"});
                    let r = common::client()
                        .post(format!("{base}/v1/conversations/{conv}/messages"))
                        .bearer_auth(&a.token)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    (r.status(), r.json::<Value>().await.unwrap()["seq"].as_i64().unwrap())
                })
            })
            .collect();
        let mut results = Vec::new();
        for r in racers {
            results.push(r.await.unwrap());
        }
        assert_eq!(results.iter().filter(|(st, _)| *st == S::CREATED).count(), 1, "{results:?}");
        assert!(results.iter().all(|(st, q)| (*st == S::CREATED || *st == S::OK) && *q == results[0].1), "{results:?}");
        // Another user may use the same client_msg_id: it is scoped to the sender.
        assert_eq!(b.send(&s, conv, "same", "bob's").await.0, S::CREATED);
    }
    for u in [&a, &b] {
        let msgs = u.inbox_messages(&s, &single).await;
        assert_eq!(
            msgs.iter().map(|(q, _)| *q).collect::<Vec<_>>(),
            vec![1, 2, 3],
            "{} inbox: each message once",
            u.id
        );
    }
    for u in [&a, &b, &c] {
        s.eventually(10, "group fan-out", || async { u.inbox_messages(&s, &group).await.len() >= 3 }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut q: Vec<i64> = u.inbox_messages(&s, &group).await.iter().map(|(q, _)| *q).collect();
        q.sort();
        assert_eq!(q, vec![1, 2, 3], "{} inbox: each group message once", u.id);
    }
}

/// 3. Fan-out: every current member gets a group message, once; nobody else does. A member
/// who joins later sees it in history, not in their inbox.
#[tokio::test]
async fn fanout_reaches_every_current_member_and_no_one_else() {
    let s = Server::start();
    let owner = s.user("owner").await;
    let m1 = s.user("m1").await;
    let m2 = s.user("m2").await;
    let joiner = s.user("joiner").await;
    let removed = s.user("removed").await;
    let left = s.user("left").await;
    let outsider = s.user("outsider").await;
    let g = s.group(&owner, &[&m1, &m2, &removed, &left], "open").await;
    assert_eq!(joiner.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await.0, S::OK);
    assert_eq!(owner.delete(&s, &format!("/v1/groups/{g}/members/removed")).await.0, S::NO_CONTENT);
    assert_eq!(left.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await.0, S::NO_CONTENT);
    let (st, sent) = m1.send(&s, &g, "hello", "hello members").await;
    assert_eq!(st, S::CREATED);
    let members = [&owner, &m1, &m2, &joiner];
    for u in members {
        s.eventually(10, &format!("{} receives the message", u.id), || async {
            !u.inbox_messages(&s, &g).await.is_empty()
        })
        .await;
    }
    let late = s.user("late").await;
    assert_eq!(late.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await.0, S::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for u in members {
        assert_eq!(u.inbox_messages(&s, &g).await, vec![(1, "hello members".to_string())], "{}: exactly once", u.id);
    }
    for u in [&removed, &left, &outsider, &late] {
        assert!(u.inbox_messages(&s, &g).await.is_empty(), "{} must not receive it", u.id);
    }
    let (_, h) = late.get(&s, &format!("/v1/conversations/{g}/messages")).await;
    assert_eq!(h["items"][0], sent, "a new member reads the history");
}

/// 4. Unread counts live on the server: two devices of one user always agree; own messages
/// never count; read_seq never moves backwards.
#[tokio::test]
async fn unread_counts_agree_across_two_devices() {
    let s = Server::start();
    let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let phone = alice.clone();
    let laptop = User { id: "alice".into(), token: s.token("alice").await };
    let conv = s.befriend(&alice, &bob).await;
    let both = |want_unread: i64, want_read: i64, conv: String| {
        let (s, phone, laptop) = (&s, phone.clone(), laptop.clone());
        async move {
            for d in [&phone, &laptop] {
                let v = d.summary(s, &conv).await;
                assert_eq!((v["unread"].as_i64(), v["read_seq"].as_i64()), (Some(want_unread), Some(want_read)), "{v}");
            }
        }
    };
    for i in 0..3 {
        bob.send(&s, &conv, &format!("b{i}"), "hi").await;
    }
    both(3, 0, conv.clone()).await;
    let (_, v) = phone.post(&s, &format!("/v1/conversations/{conv}/read"), json!({"seq": 2})).await;
    assert_eq!((v["unread"].as_i64(), v["read_seq"].as_i64()), (Some(1), Some(2)), "{v}");
    both(1, 2, conv.clone()).await;
    let (_, v) = laptop.post(&s, &format!("/v1/conversations/{conv}/read"), json!({"seq": 1})).await;
    assert_eq!(v["read_seq"], 2, "read_seq never moves backwards: {v}");
    both(1, 2, conv.clone()).await;
    laptop.send(&s, &conv, "a1", "mine").await;
    laptop.send(&s, &conv, "a2", "mine too").await;
    both(1, 2, conv.clone()).await;
    bob.send(&s, &conv, "b3", "more").await;
    both(2, 2, conv.clone()).await;
    // Reading past own messages: only bob's after the marker count.
    let (_, v) = phone.post(&s, &format!("/v1/conversations/{conv}/read"), json!({"seq": 4})).await;
    assert_eq!((v["unread"].as_i64(), v["read_seq"].as_i64()), (Some(1), Some(4)), "{v}");
    let (_, v) = laptop.post(&s, &format!("/v1/conversations/{conv}/read"), json!({})).await;
    assert_eq!((v["unread"].as_i64(), v["read_seq"].as_i64()), (Some(0), Some(6)), "{v}");
    both(0, 6, conv.clone()).await;
    // The other side's counts are its own.
    assert_eq!(bob.summary(&s, &conv).await["unread"], 2);
    // Groups: the same rules.
    let g = s.group(&bob, &[&alice, &carol], "open").await;
    bob.send(&s, &g, "1", "x").await;
    carol.send(&s, &g, "2", "y").await;
    alice.send(&s, &g, "3", "z").await;
    s.eventually(10, "group unread", || async { phone.summary(&s, &g).await["last_message"]["seq"] == 3 }).await;
    both(2, 0, g.clone()).await;
    assert_eq!(bob.summary(&s, &g).await["unread"], 2);
    assert_eq!(carol.summary(&s, &g).await["unread"], 2);
}

/// 5. Visibility: a conversation is shown only to its participants or current members.
#[tokio::test]
async fn only_participants_and_current_members_see_a_conversation() {
    let s = Server::start();
    let (a, b, x) = (s.user("alice").await, s.user("bob").await, s.user("xavier").await);
    let single = s.befriend(&a, &b).await;
    let g = s.group(&a, &[&b, &x], "open").await;
    a.send(&s, &single, "1", "private").await;
    assert_eq!(a.send(&s, &g, "2", "before removal").await.0, S::CREATED);
    s.eventually(10, "x gets the group message", || async { !x.inbox_messages(&s, &g).await.is_empty() }).await;
    // An outsider of the single chat.
    for (st, v) in [
        x.get(&s, &format!("/v1/conversations/{single}/messages")).await,
        x.send(&s, &single, "3", "hi").await,
        x.post(&s, &format!("/v1/conversations/{single}/read"), json!({})).await,
    ] {
        assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    }
    assert!(x.summary(&s, &single).await.is_null());
    assert!(x.inbox_messages(&s, &single).await.is_empty());
    // A removed member loses the group at once.
    assert_eq!(a.delete(&s, &format!("/v1/groups/{g}/members/xavier")).await.0, S::NO_CONTENT);
    for (st, v) in [
        x.get(&s, &format!("/v1/conversations/{g}/messages")).await,
        x.send(&s, &g, "4", "still here?").await,
        x.get(&s, &format!("/v1/groups/{g}/members")).await,
        x.post(&s, &format!("/v1/conversations/{g}/read"), json!({})).await,
    ] {
        assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    }
    assert!(x.summary(&s, &g).await.is_null(), "the group leaves the removed member's conversation list");
    a.send(&s, &g, "5", "after removal").await;
    s.eventually(10, "b gets it", || async { b.inbox_messages(&s, &g).await.len() == 2 }).await;
    let texts: Vec<String> = x.inbox_messages(&s, &g).await.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, vec!["before removal"], "nothing after removal reaches the removed member");
    // Unfriended: no more sending; the history stays readable to its participants.
    assert_eq!(a.delete(&s, "/v1/friends/bob").await.0, S::NO_CONTENT);
    let (st, v) = b.send(&s, &single, "6", "hello?").await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("friends")), "{v}");
    let (st, h) = b.get(&s, &format!("/v1/conversations/{single}/messages")).await;
    assert_eq!(st, S::OK);
    assert!(!h.to_string().contains("hello?"), "a refused send stores nothing: {h}");
    assert!(!a.inbox_messages(&s, &single).await.iter().any(|(_, t)| t == "hello?"), "nor delivers it");
}

/// Friendship is never half-made or half-removed, including when both ask at the same moment,
/// both accept at once, or both remove at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn friendship_is_never_half_made_even_when_both_sides_act_at_once() {
    let s = Server::start();
    let mut pairs = Vec::new();
    for i in 0..12 {
        pairs.push((s.user(&format!("a{i}")).await, s.user(&format!("b{i}")).await));
    }
    let mut handles = Vec::new();
    for (a, b) in &pairs {
        handles.push((
            spawn_call(&s, a, Method::POST, "/v1/friend-requests".into(), Some(json!({"to": b.id}))),
            spawn_call(&s, b, Method::POST, "/v1/friend-requests".into(), Some(json!({"to": a.id}))),
        ));
    }
    for ((a, b), (h1, h2)) in pairs.iter().zip(handles) {
        let mut got = [h1.await.unwrap(), h2.await.unwrap()];
        got.sort();
        assert_eq!(got, [S::OK, S::CREATED], "one request, one acceptance");
        assert_friends(&s, a, b, true).await;
    }
    // Both remove at once: one succeeds, the other finds nothing; never one side only.
    for (a, b) in &pairs {
        let h1 = spawn_call(&s, a, Method::DELETE, format!("/v1/friends/{}", b.id), None);
        let h2 = spawn_call(&s, b, Method::DELETE, format!("/v1/friends/{}", a.id), None);
        let mut got = [h1.await.unwrap(), h2.await.unwrap()];
        got.sort();
        assert_eq!(got, [S::NO_CONTENT, S::NOT_FOUND]);
        assert_friends(&s, a, b, false).await;
    }
    // Two devices accept the same request at once: one friendship.
    let (a, b) = &pairs[0];
    assert_eq!(a.post(&s, "/v1/friend-requests", json!({"to": b.id})).await.0, S::CREATED);
    let accept = format!("/v1/friend-requests/{}/accept", a.id);
    let (h1, h2) =
        (spawn_call(&s, b, Method::POST, accept.clone(), None), spawn_call(&s, b, Method::POST, accept, None));
    let mut got = [h1.await.unwrap(), h2.await.unwrap()];
    got.sort();
    assert_eq!(got, [S::OK, S::NOT_FOUND]);
    assert_friends(&s, a, b, true).await;
}

/// Starts a request in its own task (to race it against another); yields its status.
fn spawn_call(s: &Server, u: &User, method: Method, path: String, body: Option<Value>) -> tokio::task::JoinHandle<S> {
    let (base, token) = (s.base.clone(), u.token.clone());
    tokio::spawn(async move {
        let mut req = common::client().request(method, format!("{base}{path}")).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().status()
    })
}

async fn assert_friends(s: &Server, a: &User, b: &User, want: bool) {
    let list = |u: &User| {
        let u = u.clone();
        async move {
            let (_, v) = u.get(s, "/v1/friends?limit=200").await;
            v["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["user_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let (la, lb) = (list(a).await, list(b).await);
    assert_eq!(la.contains(&b.id), want, "{} lists {:?}", a.id, la);
    assert_eq!(lb.contains(&a.id), want, "{} lists {:?}", b.id, lb);
    for u in [a, b] {
        for dir in ["incoming", "outgoing"] {
            let (_, v) = u.get(s, &format!("/v1/friend-requests?direction={dir}")).await;
            assert!(v["items"].as_array().unwrap().is_empty(), "no request left pending: {v}");
        }
    }
}

//! Search over real HTTP: messages and groups are indexed off the request path and searchable
//! within about a second, CJK by substring, only in conversations the caller is in now.

mod common;

use common::{Server, User, assert_error};
use reqwest::StatusCode as S;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn enc(q: &str) -> String {
    q.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

async fn search(s: &Server, u: &User, q: &str, extra: &str) -> (S, Value) {
    u.get(s, &format!("/v1/search/messages?q={}{extra}", enc(q))).await
}

async fn texts(s: &Server, u: &User, q: &str) -> Vec<String> {
    let (st, v) = search(s, u, q, "").await;
    assert_eq!(st, S::OK, "{v}");
    v["items"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap().to_string()).collect()
}

/// Waits until `q` finds `want` hits for `u`; returns how long it took.
async fn until_found(s: &Server, u: &User, q: &str, want: usize) -> Duration {
    let start = Instant::now();
    s.eventually(10, &format!("{q:?} is searchable"), || async { texts(s, u, q).await.len() == want }).await;
    start.elapsed()
}

#[tokio::test]
async fn messages_are_searchable_within_a_second_by_phrase_and_cjk_substring() {
    let s = Server::start();
    let (a, b, x) = (s.user("alice").await, s.user("bob").await, s.user("xavier").await);
    let conv = s.befriend(&a, &b).await;
    let other = s.befriend(&a, &x).await;
    a.send(&s, &conv, "1", "欢迎使用表格存储服务").await;
    let took = until_found(&s, &b, "表格存储", 1).await;
    eprintln!("send to searchable: {took:?}");
    assert!(took < Duration::from_secs(3), "indexed in {took:?}");
    for (i, text) in
        ["東京タワーに行きました", "한국어 검색 엔진", "我们用Rust写IM服务", "Hello, World!", "say hello world"]
            .iter()
            .enumerate()
    {
        b.send(&s, &conv, &format!("m{i}"), text).await;
    }
    until_found(&s, &a, "hello world", 2).await;
    assert_eq!(texts(&s, &a, "hello world").await, vec!["say hello world", "Hello, World!"], "newest first");
    assert_eq!(texts(&s, &a, "タワー").await, vec!["東京タワーに行きました"]);
    assert_eq!(texts(&s, &a, "검색").await, vec!["한국어 검색 엔진"]);
    assert_eq!(texts(&s, &a, "RUST写").await, vec!["我们用Rust写IM服务"]);
    assert!(texts(&s, &a, "world hello").await.is_empty(), "a phrase, not a bag of words");
    // Only conversations the caller is in: xavier shares a chat with alice, not this one.
    assert!(texts(&s, &x, "表格存储").await.is_empty());
    x.send(&s, &other, "x1", "表格存储 is great").await;
    until_found(&s, &a, "表格存储", 2).await;
    assert_eq!(texts(&s, &x, "表格存储").await, vec!["表格存储 is great"]);
    // One conversation only; an outsider may not name one.
    let (st, v) = search(&s, &a, "表格存储", &format!("&conversation_id={conv}")).await;
    assert_eq!((st, v["items"].as_array().unwrap().len()), (S::OK, 1), "{v}");
    let (st, v) = search(&s, &x, "表格存储", &format!("&conversation_id={conv}")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    // Results are whole messages.
    let (_, v) = search(&s, &b, "表格存储", "").await;
    for k in ["conversation_id", "seq", "sender", "client_msg_id", "type", "text", "send_time"] {
        assert!(v["items"][0].get(k).is_some(), "{k} in {v}");
    }
}

#[tokio::test]
async fn search_pages_and_rejects_bad_input() {
    let s = Server::start();
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    for i in 0..12 {
        a.send(&s, &conv, &format!("m{i}"), &format!("report number {i}")).await;
    }
    until_found(&s, &b, "report", 12).await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (st, v) = search(&s, &b, "report", &format!("&limit=5{cursor}")).await;
        assert_eq!(st, S::OK, "{v}");
        seen.extend(v["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (1..=12).rev().collect::<Vec<_>>(), "every hit once, newest first");
    for (q, extra) in [
        ("", ""),
        ("   ", ""),
        (&"x".repeat(201)[..], ""),
        ("report", "&limit=0"),
        ("report", "&limit=101"),
        ("report", "&cursor=nope"),
    ] {
        let (st, v) = search(&s, &b, q, extra).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    let (st, v) = b.get(&s, "/v1/search/messages").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    assert!(texts(&s, &b, "!!!").await.is_empty(), "a query without words finds nothing");
}

/// Search as you type, through HTTP: the last word of a query is the start of a word, for
/// messages and for group names alike.
#[tokio::test]
async fn the_last_word_of_a_query_finds_words_that_start_with_it() {
    let s = Server::start();
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    a.send(&s, &conv, "1", "the quartzite sample arrived").await;
    a.send(&s, &conv, "2", "one more sample arriving late").await;
    until_found(&s, &b, "sample arr", 2).await;
    assert_eq!(
        texts(&s, &b, "sample arri").await,
        vec!["one more sample arriving late", "the quartzite sample arrived"]
    );
    assert_eq!(texts(&s, &b, "sample arrived").await, vec!["the quartzite sample arrived"]);
    assert!(texts(&s, &b, "sam arrived").await.is_empty(), "only the last word is a prefix");
    a.post(&s, "/v1/groups", json!({"name": "Rustaceans", "join_policy": "open"})).await;
    s.eventually(10, "the group is found by the start of its name", || async {
        let (_, v) = b.get(&s, "/v1/groups?q=rust").await;
        v["items"][0]["name"] == "Rustaceans"
    })
    .await;
}

#[tokio::test]
async fn a_member_who_leaves_stops_finding_the_group_at_once() {
    let s = Server::start();
    let (o, m) = (s.user("owner").await, s.user("member").await);
    let g = s.group(&o, &[&m], "open").await;
    o.send(&s, &g, "1", "quarterly numbers").await;
    until_found(&s, &m, "quarterly numbers", 1).await;
    assert_eq!(m.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await.0, S::NO_CONTENT);
    assert!(texts(&s, &m, "quarterly numbers").await.is_empty(), "no waiting for an index update");
    assert_eq!(texts(&s, &o, "quarterly numbers").await.len(), 1);
    let removed = s.user("removed").await;
    removed.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_eq!(texts(&s, &removed, "quarterly").await.len(), 1, "a member finds the group's history");
    o.delete(&s, &format!("/v1/groups/{g}/members/removed")).await;
    assert!(texts(&s, &removed, "quarterly").await.is_empty());
}

#[tokio::test]
async fn groups_are_found_by_name_and_renames_follow() {
    let s = Server::start();
    let (o, x) = (s.user("owner").await, s.user("someone").await);
    let find = |q: &str| {
        let (s, x, q) = (&s, x.clone(), q.to_string());
        async move {
            let (st, v) = x.get(s, &format!("/v1/groups?q={}", enc(&q))).await;
            assert_eq!(st, S::OK, "{v}");
            v["items"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
        }
    };
    let (_, v) = o.post(&s, "/v1/groups", json!({"name": "表格存储交流群", "join_policy": "open"})).await;
    let g = v["group_id"].as_str().unwrap().to_string();
    o.post(&s, "/v1/groups", json!({"name": "Rust Users", "join_policy": "approval"})).await;
    s.eventually(10, "group names are searchable", || async {
        find("存储").await.len() == 1 && find("rust").await.len() == 1
    })
    .await;
    assert_eq!(find("存储").await, vec!["表格存储交流群"]);
    let (_, v) = x.get(&s, &format!("/v1/groups?q={}", enc("存储"))).await;
    for k in ["group_id", "name", "description", "owner", "join_policy", "member_count", "created_at"] {
        assert!(v["items"][0].get(k).is_some(), "{k} in {v}");
    }
    o.patch(&s, &format!("/v1/groups/{g}"), json!({"name": "Timeline 讨论组"})).await;
    s.eventually(10, "the new name is searchable", || async { find("timeline").await.len() == 1 }).await;
    assert!(find("存储").await.is_empty(), "the old name is gone");
    for q in ["", "%20%20"] {
        let (st, v) = x.get(&s, &format!("/v1/groups?q={q}")).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    let (st, v) = x.get(&s, "/v1/groups").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
}

#[tokio::test]
async fn the_index_survives_kill_9_and_the_unindexed_tail_is_indexed_after_restart() {
    // A job the killed worker had received and not finished comes back after its visibility
    // timeout on SQS (the embedded queue hands it back at start-up): 2 s here, not 30.
    let mut s = Server::start_with(&[("IM_INDEX_WORKERS", "1"), ("IM_FANOUT_VISIBILITY_SECS", "2")]);
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    a.send(&s, &conv, "1", "committed before the crash").await;
    until_found(&s, &b, "committed", 1).await;
    // Sent, and killed at once: its index job may not have run yet.
    for i in 0..5 {
        a.send(&s, &conv, &format!("t{i}"), &format!("tail message {i}")).await;
    }
    s.kill9();
    s.restart();
    assert_eq!(texts(&s, &b, "committed").await.len(), 1, "committed documents survive");
    until_found(&s, &b, "tail message", 5).await;
}

#[tokio::test]
async fn reindex_rebuilds_the_search_data_from_the_tables() {
    let mut s = Server::start();
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    let g = s.group(&a, &[&b], "open").await;
    a.send(&s, &conv, "1", "single chat words").await;
    a.send(&s, &g, "2", "group chat words").await;
    until_found(&s, &b, "chat words", 2).await;
    s.kill9();
    std::fs::remove_dir_all(s.dir.join("search")).unwrap();
    let out = s.command("reindex");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("indexed 2 message(s) and 1 group(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    s.restart();
    assert_eq!(texts(&s, &b, "chat words").await.len(), 2);
    let (_, v) = b.get(&s, "/v1/groups?q=team").await;
    assert_eq!(v["items"][0]["group_id"], g.as_str());
}

//! Every route of API.md over real HTTP against the server binary: the happy path and each
//! documented error, and that the server keeps serving after every bad request.

mod common;

use common::{Server, User, assert_error};
use reqwest::{Method, StatusCode as S};
use serde_json::{Value, json};

/// The OpenAPI document is served, and it is the checked-in one (generated from the code).
#[tokio::test]
async fn the_api_document_is_served() {
    let s = Server::start();
    let (st, v) = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(st, S::OK);
    let checked_in: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap())
            .unwrap();
    assert_eq!(v, checked_in);
    // Every route of the table is in it.
    for r in im_functions::ROUTES {
        assert!(v["paths"][r.path][r.method.as_str().to_ascii_lowercase()].is_object(), "{} {}", r.method, r.path);
    }
}

#[tokio::test]
async fn health_needs_no_token_and_every_other_route_does() {
    let s = Server::start();
    let (st, v) = s.call(Method::GET, "/v1/health", None, None).await;
    assert_eq!(st, S::OK);
    assert_eq!(v["status"], "ok");
    assert!(v["version"].is_string());
    for (m, p) in [
        (Method::GET, "/v1/me"),
        (Method::GET, "/v1/sync"),
        (Method::POST, "/v1/groups"),
        (Method::GET, "/v1/conversations"),
    ] {
        let (st, v) = s.call(m, p, None, None).await;
        assert_error(st, &v, S::UNAUTHORIZED, "unauthenticated");
    }
}

/// Generated from the route table, so that a new route cannot be left open by mistake.
#[tokio::test]
async fn every_route_but_health_the_dev_token_and_the_api_document_needs_a_valid_token() {
    let s = Server::start();
    let expired = common::token_signed_with(b"im-local-dev-secret-do-not-use-in-production", "alice", -3600);
    let forged = common::token_signed_with(b"someone-elses-key", "alice", 600);
    for r in im_functions::ROUTES {
        let path = r.path.replace("{group_id}", "g_x").replace("{conversation_id}", "g_x").replace(['{', '}'], "");
        let method = Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        if !r.auth() {
            assert!(
                matches!(r.op, im_functions::Op::Health | im_functions::Op::DevToken | im_functions::Op::OpenApi),
                "{} must need a token",
                r.path
            );
            continue;
        }
        for token in [None, Some(expired.as_str()), Some(forged.as_str())] {
            let (st, v) = s.call(method.clone(), &path, token, Some(json!({}))).await;
            assert_error(st, &v, S::UNAUTHORIZED, "unauthenticated");
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_401() {
    let s = Server::start_with(&[("IM_JWT_SECRET", "server-secret")]);
    let good = common::token_signed_with(b"server-secret", "alice", 600);
    assert_eq!(s.call(Method::PUT, "/v1/me", Some(&good), Some(json!({"name": "A"}))).await.0, S::OK);
    for bad in [
        common::token_signed_with(b"another-key", "alice", 600),
        common::token_signed_with(b"server-secret", "alice", -3600),
        common::token_signed_with(b"server-secret", "not a valid id!", 600),
        "garbage".to_string(),
        String::new(),
    ] {
        let (st, v) = s.call(Method::GET, "/v1/me", Some(&bad), None).await;
        assert_error(st, &v, S::UNAUTHORIZED, "unauthenticated");
    }
    // The dev token route signs with the configured secret.
    let dev = s.token("bob").await;
    assert_eq!(s.call(Method::GET, "/v1/me", Some(&dev), None).await.0, S::NOT_FOUND);
}

#[tokio::test]
async fn the_dev_token_route_exists_only_in_dev_mode() {
    let s = Server::start_with(&[("IM_DEV_MODE", "false"), ("IM_JWT_SECRET", "k")]);
    let (st, v) = s.call(Method::POST, "/v1/dev/token", None, Some(json!({"user_id": "alice"}))).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let dev = Server::start();
    let (st, v) = dev.call(Method::POST, "/v1/dev/token", None, Some(json!({"user_id": "bad id"}))).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
}

#[tokio::test]
async fn profiles_are_created_updated_and_validated() {
    let s = Server::start();
    let t = s.token("alice").await;
    let (st, v) = s.call(Method::GET, "/v1/me", Some(&t), None).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = s
        .call(
            Method::PUT,
            "/v1/me",
            Some(&t),
            Some(json!({"name": "Alice", "gender": "f", "avatar_url": "https://x/a.png", "bio": "hi", "extra": 1})),
        )
        .await;
    assert_eq!(st, S::OK, "{v}");
    assert_eq!(
        (v["user_id"].as_str(), v["name"].as_str(), v["bio"].as_str()),
        (Some("alice"), Some("Alice"), Some("hi"))
    );
    let created = v["created_at"].as_i64().unwrap();
    let (_, v) = s.call(Method::PUT, "/v1/me", Some(&t), Some(json!({"name": "Alice B"}))).await;
    assert_eq!(v["created_at"].as_i64(), Some(created), "created_at is kept on update");
    assert_eq!(s.call(Method::GET, "/v1/me", Some(&t), None).await.1["name"], "Alice B");
    let bob = s.user("bob").await;
    let (st, v) = bob.get(&s, "/v1/users/alice").await;
    assert_eq!((st, v["name"].as_str()), (S::OK, Some("Alice B")));
    for k in ["user_id", "name", "gender", "avatar_url", "bio", "created_at"] {
        assert!(v.get(k).is_some(), "profile has {k}: {v}");
    }
    let (st, v) = bob.get(&s, "/v1/users/nobody").await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = bob.get(&s, "/v1/users/bad%20id").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": "x".repeat(101)}),
        json!({"name": 5}),
        json!({"name": "A", "avatar_url": "ftp://x"}),
        json!([1]),
    ] {
        let (st, v) = s.call(Method::PUT, "/v1/me", Some(&t), Some(body.clone())).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    let (st, v) = s.raw(Method::PUT, "/v1/me", Some(&t), b"{\"name\": ".to_vec()).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = s.raw(Method::PUT, "/v1/me", Some(&t), vec![b' '; 70 * 1024]).await;
    assert_error(st, &v, S::PAYLOAD_TOO_LARGE, "too_large");
}

#[tokio::test]
async fn friend_requests_accept_reject_list_and_remove() {
    let s = Server::start();
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "bob", "message": "hi"})).await;
    assert_eq!(st, S::CREATED, "{v}");
    assert_eq!(
        (v["from"].as_str(), v["to"].as_str(), v["status"].as_str(), v["message"].as_str()),
        (Some("alice"), Some("bob"), Some("pending"), Some("hi"))
    );
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "bob"})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let (_, v) = b.get(&s, "/v1/friend-requests?direction=incoming").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["next_cursor"], Value::Null);
    let (_, v) = a.get(&s, "/v1/friend-requests?direction=outgoing").await;
    assert_eq!(v["items"][0]["to"], "bob");
    let (st, v) = a.get(&s, "/v1/friend-requests?direction=sideways").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = b.post(&s, "/v1/friend-requests/alice/accept", json!({})).await;
    assert_eq!(st, S::OK, "{v}");
    let conv = v["conversation_id"].as_str().unwrap().to_string();
    assert!(conv.starts_with("s_") && conv.len() <= 64);
    assert_eq!(v["user_id"], "alice");
    for (u, other) in [(&a, "bob"), (&b, "alice")] {
        let (_, v) = u.get(&s, "/v1/friends").await;
        assert_eq!(v["items"][0]["user_id"], other);
        assert_eq!(v["items"][0]["conversation_id"], conv.as_str());
        assert_eq!(v["items"][0]["name"], format!("{other} name"));
    }
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "bob"})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let (st, v) = b.post(&s, "/v1/friend-requests/alice/accept", json!({})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "alice"})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "nobody"})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": 42})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    // Reject.
    c.post(&s, "/v1/friend-requests", json!({"to": "alice"})).await;
    let (st, _) = a.post(&s, "/v1/friend-requests/carol/reject", json!({})).await;
    assert_eq!(st, S::NO_CONTENT);
    let (st, v) = a.post(&s, "/v1/friend-requests/carol/reject", json!({})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    assert!(a.get(&s, "/v1/friend-requests").await.1["items"].as_array().unwrap().is_empty());
    // Asking someone who already asked you makes you friends at once.
    c.post(&s, "/v1/friend-requests", json!({"to": "alice"})).await;
    let (st, v) = a.post(&s, "/v1/friend-requests", json!({"to": "carol"})).await;
    assert_eq!(st, S::OK, "{v}");
    assert_eq!(v["user_id"], "carol");
    // Remove: both sides at once; history stays with the same conversation id.
    assert_eq!(a.send(&s, &conv, "m1", "before").await.0, S::CREATED);
    let (st, _) = a.delete(&s, "/v1/friends/bob").await;
    assert_eq!(st, S::NO_CONTENT);
    let (st, v) = b.delete(&s, "/v1/friends/alice").await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    assert!(b.get(&s, "/v1/friends").await.1["items"].as_array().unwrap().is_empty());
    assert_eq!(s.befriend(&b, &a).await, conv, "the pair's conversation id is stable");
    let (_, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages")).await;
    assert_eq!(v["items"][0]["text"], "before");
}

#[tokio::test]
async fn lists_page_with_cursors_and_check_limits() {
    let s = Server::start();
    let a = s.user("alice").await;
    for i in 0..7 {
        let f = s.user(&format!("f{i}")).await;
        s.befriend(&f, &a).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/friends?limit=3&cursor={c}"),
            None => "/v1/friends?limit=3".to_string(),
        };
        let (st, v) = a.get(&s, &path).await;
        assert_eq!(st, S::OK, "{v}");
        assert!(v["items"].as_array().unwrap().len() <= 3);
        seen.extend(v["items"].as_array().unwrap().iter().map(|f| f["user_id"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("f{i}")).collect::<Vec<_>>());
    for bad in ["limit=0", "limit=201", "limit=-1", "limit=abc", "cursor=%21%21"] {
        let (st, v) = a.get(&s, &format!("/v1/friends?{bad}")).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    assert_eq!(a.get(&s, "/v1/friends?limit=200").await.0, S::OK);
    // Another user's cursor does not read this user's list.
    let f0 = User { id: "f0".into(), token: s.token("f0").await };
    let (_, v) = a.get(&s, "/v1/friends?limit=1").await;
    let (st, v) = f0.get(&s, &format!("/v1/friends?cursor={}", v["next_cursor"].as_str().unwrap())).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
}

#[tokio::test]
async fn groups_roles_join_policies_and_requests() {
    let s = Server::start();
    let (o, a, m, x) = (s.user("owner").await, s.user("admin").await, s.user("member").await, s.user("outsider").await);
    let (st, v) = o
        .post(
            &s,
            "/v1/groups",
            json!({"name": "Rust", "description": "d", "join_policy": "approval", "members": ["admin", "member"]}),
        )
        .await;
    assert_eq!(st, S::CREATED, "{v}");
    let g = v["group_id"].as_str().unwrap().to_string();
    assert!(g.starts_with("g_") && g.len() <= 64);
    assert_eq!(
        (v["owner"].as_str(), v["member_count"].as_i64(), v["join_policy"].as_str()),
        (Some("owner"), Some(3), Some("approval"))
    );
    for body in [
        json!({"name": "", "join_policy": "open"}),
        json!({"name": "n", "join_policy": "closed"}),
        json!({"name": "n"}),
        json!({"name": "n", "join_policy": "open", "members": ["nobody"]}),
    ] {
        let (st, v) = o.post(&s, "/v1/groups", body).await;
        assert!(st == S::BAD_REQUEST || st == S::NOT_FOUND, "{st} {v}");
    }
    let (st, v) = x.get(&s, &format!("/v1/groups/{g}")).await;
    assert_eq!((st, v["name"].as_str()), (S::OK, Some("Rust")), "any signed-in user sees a group");
    let (st, v) = x.get(&s, "/v1/groups/g_missing").await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = x.get(&s, "/v1/groups/not-a-group").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    // Roles.
    let (st, v) = a.put(&s, &format!("/v1/groups/{g}/members/member/role"), json!({"role": "admin"})).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = o.put(&s, &format!("/v1/groups/{g}/members/admin/role"), json!({"role": "admin"})).await;
    assert_eq!((st, v["role"].as_str()), (S::OK, Some("admin")), "{v}");
    let (st, v) = o.put(&s, &format!("/v1/groups/{g}/members/admin/role"), json!({"role": "king"})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = o.put(&s, &format!("/v1/groups/{g}/members/owner/role"), json!({"role": "member"})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let (st, v) = o.put(&s, &format!("/v1/groups/{g}/members/outsider/role"), json!({"role": "admin"})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    // Patch: owner or admin.
    let (st, v) = m.patch(&s, &format!("/v1/groups/{g}"), json!({"name": "Mine"})).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = x.patch(&s, &format!("/v1/groups/{g}"), json!({"name": "Mine"})).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = a.patch(&s, &format!("/v1/groups/{g}"), json!({"name": "Rustaceans"})).await;
    assert_eq!((st, v["name"].as_str()), (S::OK, Some("Rustaceans")), "{v}");
    let (st, v) = a.patch(&s, &format!("/v1/groups/{g}"), json!({})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    // Approval: a pending request, seen and decided by admins only.
    let (st, v) = x.post(&s, &format!("/v1/groups/{g}/join"), json!({"message": "let me in"})).await;
    assert_eq!((st, v["status"].as_str()), (S::ACCEPTED, Some("pending")), "{v}");
    let (st, v) = x.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let (st, v) = m.get(&s, &format!("/v1/groups/{g}/join-requests")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = a.get(&s, &format!("/v1/groups/{g}/join-requests")).await;
    assert_eq!((st, v["items"][0]["user_id"].as_str()), (S::OK, Some("outsider")), "{v}");
    let (st, v) = m.post(&s, &format!("/v1/groups/{g}/join-requests/outsider/accept"), json!({})).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = a.post(&s, &format!("/v1/groups/{g}/join-requests/outsider/accept"), json!({})).await;
    assert_eq!((st, v["role"].as_str()), (S::OK, Some("member")), "{v}");
    let (st, v) = a.post(&s, &format!("/v1/groups/{g}/join-requests/outsider/accept"), json!({})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = x.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let late = s.user("late").await;
    late.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_eq!(o.post(&s, &format!("/v1/groups/{g}/join-requests/late/reject"), json!({})).await.0, S::NO_CONTENT);
    let (st, v) = o.post(&s, &format!("/v1/groups/{g}/join-requests/late/reject"), json!({})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    // Members: members only, paged.
    let (st, v) = late.get(&s, &format!("/v1/groups/{g}/members")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = m.get(&s, &format!("/v1/groups/{g}/members?limit=2")).await;
    assert_eq!(st, S::OK);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert!(v["next_cursor"].is_string());
    assert_eq!(s.call(Method::GET, &format!("/v1/groups/{g}"), Some(&o.token), None).await.1["member_count"], 4);
    // Removal: admins remove members, never admins or the owner.
    let (st, v) = a.delete(&s, &format!("/v1/groups/{g}/members/owner")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = m.delete(&s, &format!("/v1/groups/{g}/members/outsider")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    assert_eq!(a.delete(&s, &format!("/v1/groups/{g}/members/outsider")).await.0, S::NO_CONTENT);
    let (st, v) = a.delete(&s, &format!("/v1/groups/{g}/members/outsider")).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    // Leaving: the owner cannot while others remain.
    let (st, v) = o.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    assert_eq!(m.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await.0, S::NO_CONTENT);
    let (st, v) = m.post(&s, &format!("/v1/groups/{g}/leave"), json!({})).await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (_, v) = a.get(&s, "/v1/me/groups").await;
    assert_eq!(v["items"][0]["group_id"], g.as_str());
    assert!(m.get(&s, "/v1/me/groups").await.1["items"].as_array().unwrap().is_empty());
    // Open groups: join at once.
    let open = s.group(&o, &[], "open").await;
    let (st, v) = x.post(&s, &format!("/v1/groups/{open}/join"), json!({})).await;
    assert_eq!((st, v["role"].as_str()), (S::OK, Some("member")), "{v}");
}

#[tokio::test]
async fn group_size_is_limited() {
    let s = Server::start_with(&[("IM_MAX_GROUP_MEMBERS", "31")]);
    let o = s.user("o").await;
    let mut named = Vec::new();
    for i in 0..31 {
        named.push(s.user(&format!("u{i:02}")).await.id);
    }
    // 31 named is one over the limit of creation; 30 (one transaction of 94 writes) is not.
    let create = |members: &[String]| json!({"name": "big", "join_policy": "open", "members": members});
    let (st, v) = o.post(&s, "/v1/groups", create(&named)).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = o.post(&s, "/v1/groups", create(&named[..30])).await;
    assert_eq!((st, &v["member_count"]), (S::CREATED, &json!(31)), "{v}");
    let g = v["group_id"].as_str().unwrap();
    // The group is full at 31: joining is refused, and so is creating a group over the limit.
    let (st, v) = s.user("late").await.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let s = Server::start_with(&[("IM_MAX_GROUP_MEMBERS", "3")]);
    let o = s.user("o").await;
    let (a, b, c) = (s.user("a").await, s.user("b").await, s.user("c").await);
    let (st, v) =
        o.post(&s, "/v1/groups", json!({"name": "g", "join_policy": "open", "members": [a.id, b.id, c.id]})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
    let g = s.group(&o, &[&a], "open").await;
    assert_eq!(b.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await.0, S::OK);
    let (st, v) = c.post(&s, &format!("/v1/groups/{g}/join"), json!({})).await;
    assert_error(st, &v, S::CONFLICT, "conflict");
}

#[tokio::test]
async fn messages_send_page_and_reject_bad_input() {
    let s = Server::start();
    let (a, b, x) = (s.user("alice").await, s.user("bob").await, s.user("mallory").await);
    let conv = s.befriend(&a, &b).await;
    let (st, v) = a.send(&s, &conv, "c1", "hello").await;
    assert_eq!(st, S::CREATED, "{v}");
    for k in ["conversation_id", "seq", "sender", "client_msg_id", "type", "text", "send_time"] {
        assert!(v.get(k).is_some(), "message has {k}: {v}");
    }
    assert_eq!((v["seq"].as_i64(), v["sender"].as_str(), v["type"].as_str()), (Some(1), Some("alice"), Some("text")));
    for i in 2..=12 {
        assert_eq!(b.send(&s, &conv, &format!("c{i}"), &format!("m{i}")).await.0, S::CREATED);
    }
    // History: newest first, paged by `before`.
    let (st, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages?limit=5")).await;
    assert_eq!(st, S::OK);
    let seqs =
        |v: &Value| v["items"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect::<Vec<_>>();
    assert_eq!(seqs(&v), vec![12, 11, 10, 9, 8]);
    assert_eq!(v["next_before"], 8);
    let (_, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages?limit=5&before=8")).await;
    assert_eq!(seqs(&v), vec![7, 6, 5, 4, 3]);
    let (_, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages?limit=5&before=3")).await;
    assert_eq!(seqs(&v), vec![2, 1]);
    assert_eq!(v["next_before"], Value::Null);
    let (_, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages")).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 12, "default page is 30");
    for q in ["limit=0", "limit=101", "before=0", "before=x"] {
        let (st, v) = a.get(&s, &format!("/v1/conversations/{conv}/messages?{q}")).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    // Bad input.
    let (st, v) = a.send(&s, &conv, "big", &"字".repeat(8001)).await;
    assert_error(st, &v, S::PAYLOAD_TOO_LARGE, "too_large");
    assert_eq!(a.send(&s, &conv, "exact", &"字".repeat(8000)).await.0, S::CREATED, "8,000 characters is allowed");
    for body in [
        json!({"client_msg_id": "x", "type": "text", "text": ""}),
        json!({"client_msg_id": "", "type": "text", "text": "t"}),
        json!({"client_msg_id": "x".repeat(65), "type": "text", "text": "t"}),
        json!({"client_msg_id": "x", "type": "image", "text": "t"}),
        json!({"client_msg_id": "x", "type": "text"}),
        json!({"client_msg_id": 1, "type": "text", "text": "t"}),
    ] {
        let (st, v) = a.post(&s, &format!("/v1/conversations/{conv}/messages"), body).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    let (st, v) = a.send(&s, "x_bad", "c", "t").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = a.send(&s, "s_doesnotexist", "c", "t").await;
    assert_error(st, &v, S::NOT_FOUND, "not_found");
    let (st, v) = x.send(&s, &conv, "c", "intruding").await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = x.get(&s, &format!("/v1/conversations/{conv}/messages")).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    // Sync limits.
    for q in ["limit=0", "limit=501", "after=-1", "after=abc"] {
        let (st, v) = a.get(&s, &format!("/v1/sync?{q}")).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    }
    let (st, v) = a.get(&s, "/v1/sync?limit=500").await;
    assert_eq!(st, S::OK);
    assert_eq!(v["has_more"], false);
}

#[tokio::test]
async fn conversations_list_by_recent_activity_with_titles() {
    let s = Server::start();
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let ab = s.befriend(&a, &b).await;
    let ac = s.befriend(&a, &c).await;
    let g = s.group(&a, &[&b], "open").await;
    b.send(&s, &ab, "1", "from bob").await;
    c.send(&s, &ac, "2", "from carol").await;
    b.send(&s, &g, "3", "in group").await;
    s.eventually(10, "group message in alice's summary", || async { a.summary(&s, &g).await["unread"] == 1 }).await;
    let (_, v) = a.get(&s, "/v1/conversations").await;
    let ids: Vec<&str> =
        v["items"].as_array().unwrap().iter().map(|c| c["conversation_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![g.as_str(), ac.as_str(), ab.as_str()], "most recent activity first");
    let first = &v["items"][0];
    assert_eq!((first["type"].as_str(), first["title"].as_str()), (Some("group"), Some("Team")));
    assert_eq!(first["last_message"]["text"], "in group");
    let single = &v["items"][1];
    assert_eq!(
        (single["type"].as_str(), single["title"].as_str(), single["peer"].as_str()),
        (Some("single"), Some("carol name"), Some("carol"))
    );
    let (_, p) = a.get(&s, "/v1/conversations?limit=2").await;
    assert_eq!(p["items"].as_array().unwrap().len(), 2);
    let (_, p2) = a.get(&s, &format!("/v1/conversations?limit=2&cursor={}", p["next_cursor"].as_str().unwrap())).await;
    assert_eq!(p2["items"][0]["conversation_id"], ab.as_str());
    assert_eq!(p2["next_cursor"], Value::Null);
    // Mark read: errors.
    let (st, v) = a.post(&s, &format!("/v1/conversations/{ab}/read"), json!({"seq": 99})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = c.post(&s, &format!("/v1/conversations/{ab}/read"), json!({})).await;
    assert_error(st, &v, S::FORBIDDEN, "permission_denied");
    let (st, v) = a.post(&s, &format!("/v1/conversations/{ab}/read"), json!({"seq": "one"})).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let (st, v) = a.post(&s, &format!("/v1/conversations/{ab}/read"), json!({})).await;
    assert_eq!((st, v["unread"].as_i64(), v["read_seq"].as_i64()), (S::OK, Some(0), Some(1)), "{v}");
}

#[tokio::test]
async fn the_server_keeps_serving_after_bad_requests() {
    let s = Server::start();
    let a = s.user("alice").await;
    let client = common::client();
    let bad: Vec<(Method, &str, Vec<u8>)> = vec![
        (Method::POST, "/v1/groups", b"{".to_vec()),
        (Method::POST, "/v1/groups", vec![0xff, 0xfe, 0x00]),
        (Method::POST, "/v1/groups", b"null".to_vec()),
        (Method::POST, "/v1/groups", b"\"string\"".to_vec()),
        (Method::PUT, "/v1/me", vec![b'['; 60_000]),
        (Method::DELETE, "/v1/me", vec![]),
        (Method::GET, "/v1/users/%FF%FE", vec![]),
        (Method::GET, "/v1/sync?limit=99999999999999999999999", vec![]),
        (Method::GET, "/v1/../../etc/passwd", vec![]),
        (Method::POST, "/v1/conversations/g_%00/messages", b"{}".to_vec()),
    ];
    for (m, p, body) in bad {
        let resp =
            client.request(m.clone(), format!("{}{p}", s.base)).bearer_auth(&a.token).body(body).send().await.unwrap();
        let st = resp.status();
        assert!(st.is_client_error(), "{m} {p}: {st}");
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(v["error"]["code"].is_string(), "{m} {p}: a JSON error body, got {v}");
    }
    // A body far over the limit: the server answers 413 as soon as the limit is passed and
    // stops reading, so a client still uploading may see the connection close instead. A
    // client of its own, so the shared pool never reuses that half-closed connection (a CI run
    // saw the next request fail with a broken pipe).
    let big = reqwest::Client::new()
        .put(format!("{}/v1/me", s.base))
        .bearer_auth(&a.token)
        .body(vec![b'x'; 2_000_000])
        .send()
        .await;
    if let Ok(resp) = big {
        assert_eq!(resp.status(), S::PAYLOAD_TOO_LARGE);
    }
    assert_eq!(s.call(Method::GET, "/v1/health", None, None).await.0, S::OK);
    assert_eq!(a.get(&s, "/v1/me").await.0, S::OK);
}

/// A request body is one JSON object, parsed straight into the operation's input: anything
/// else is a 400 that says which of the three it was, and writes nothing. (serde would take
/// an input struct from a JSON array, so the object check matters.)
#[tokio::test]
async fn request_bodies_are_one_json_object_or_a_clear_400() {
    let s = Server::start();
    let (a, b) = (s.user("alice").await, s.user("bob").await);
    let conv = s.befriend(&a, &b).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let cases: [(&[u8], &str); 5] = [
        (br#"["c1", "text", "as an array"]"#, "must be a JSON object"),
        (b"[1, 2", "not valid JSON"),
        (br#"{"client_msg_id": "c1", "type": "text", "text": "hi""#, "not valid JSON"),
        (br#"{"client_msg_id": "c1", "type": "text", "text": 5}"#, "request body:"),
        (br#"{"client_msg_id": "c1", "client_msg_id": "c2", "type": "text", "text": "hi"}"#, "duplicate field"),
    ];
    for (body, says) in cases {
        let (st, v) = s.raw(Method::POST, &path, Some(&a.token), body.to_vec()).await;
        assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{}: wanted {says:?}, got {message:?}", String::from_utf8_lossy(body));
    }
    assert!(a.history(&s, &conv).await.is_empty(), "no bad body stored a message");
    let (st, v) = s
        .raw(
            Method::POST,
            &path,
            Some(&a.token),
            br#" {"client_msg_id": "c1", "type": "text", "text": "hi"} "#.to_vec(),
        )
        .await;
    assert_eq!(st, S::CREATED, "whitespace around the object is fine: {v}");
}

/// What schemathesis found (tests/fuzz.sh), kept fixed: unfriending oneself was a 500, a 405
/// lacked its Allow header, and group search accepted search pages above 100.
#[tokio::test]
async fn fuzzing_findings_stay_fixed() {
    let s = Server::start();
    let a = s.user("alice").await;
    let (st, v) = s.call(Method::DELETE, "/v1/friends/alice", Some(&a.token), None).await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    let resp = common::client().request(Method::DELETE, format!("{}/v1/me", s.base)).send().await.unwrap();
    assert_eq!(resp.status(), S::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers().get("allow").and_then(|v| v.to_str().ok()), Some("PUT, GET"));
    let (st, v) = a.get(&s, "/v1/groups?q=x&limit=101").await;
    assert_error(st, &v, S::BAD_REQUEST, "invalid_argument");
    assert_eq!(a.get(&s, "/v1/groups?q=x&limit=100").await.0, S::OK);
}

/// The per-user send rate limit at its edge: a burst of 3 passes, the 4th is a 429 with
/// Retry-After and writes nothing, others are unaffected, and after the wait the same message
/// goes through as a first send.
#[tokio::test]
async fn sends_are_rate_limited_per_user_with_retry_after() {
    let s = Server::start_with(&[("IM_SEND_RATE_PER_SEC", "1"), ("IM_SEND_BURST", "3")]);
    let (a, b, c) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let ab = s.befriend(&a, &b).await;
    let cb = s.befriend(&c, &b).await;
    for i in 0..3 {
        assert_eq!(a.send(&s, &ab, &format!("m{i}"), "hi").await.0, S::CREATED);
    }
    let resp = common::client()
        .post(format!("{}/v1/conversations/{ab}/messages", s.base))
        .bearer_auth(&a.token)
        .json(&json!({"client_msg_id": "m3", "type": "text", "text": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), S::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert_eq!(wait, 1, "at 1 message a second the next token is at most a second away");
    let body: Value = resp.json().await.unwrap();
    common::assert_error(S::TOO_MANY_REQUESTS, &body, S::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(c.send(&s, &cb, "c0", "hi").await.0, S::CREATED, "another sender has a budget of their own");
    let (_, h) = b.get(&s, &format!("/v1/conversations/{ab}/messages")).await;
    assert_eq!(h["items"].as_array().unwrap().len(), 3, "the refused send wrote nothing");
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let (st, m) = a.send(&s, &ab, "m3", "one too many").await;
    assert_eq!((st, m["seq"].as_i64()), (S::CREATED, Some(4)), "{m}");
}

#[tokio::test]
async fn groups_and_friends_per_user_are_limited_at_their_edge() {
    let s = Server::start_with(&[("IM_MAX_GROUPS_PER_USER", "2"), ("IM_MAX_FRIENDS_PER_USER", "2")]);
    let (a, b, c, d) = (s.user("alice").await, s.user("bob").await, s.user("carol").await, s.user("dave").await);

    // Groups: creating counts for everyone named, joining counts, leaving frees a place.
    let g1 = s.group(&a, &[&b], "open").await;
    let g2 = s.group(&c, &[], "open").await;
    let g3 = s.group(&c, &[], "approval").await;
    assert_eq!(a.post(&s, &format!("/v1/groups/{g2}/join"), json!({})).await.0, S::OK);
    let (st, body) = a.post(&s, &format!("/v1/groups/{g3}/join"), json!({})).await;
    assert_eq!(st, S::ACCEPTED, "a request to join is not a membership: {body}");
    let (st, body) = c.post(&s, &format!("/v1/groups/{g3}/join-requests/alice/accept"), json!({})).await;
    common::assert_error(st, &body, S::CONFLICT, "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("alice is already in 2 groups"), "{body}");
    let (st, body) = a.post(&s, "/v1/groups", json!({"name": "third", "join_policy": "open"})).await;
    common::assert_error(st, &body, S::CONFLICT, "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("you are already in 2 groups"), "{body}");
    let (st, body) = d
        .post(&s, "/v1/groups", json!({"name": "with alice", "join_policy": "open", "members": ["bob", "alice"]}))
        .await;
    common::assert_error(st, &body, S::CONFLICT, "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("alice is already in 2 groups"), "{body}");
    let (_, mine) = d.get(&s, "/v1/me/groups").await;
    assert_eq!(mine["items"], json!([]), "the refused creation left nothing behind");
    let (_, mine) = b.get(&s, "/v1/me/groups").await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(a.post(&s, &format!("/v1/groups/{g1}/leave"), json!({})).await.0, S::CONFLICT, "owner with members");
    assert_eq!(a.post(&s, &format!("/v1/groups/{g2}/leave"), json!({})).await.0, S::NO_CONTENT);
    let (st, body) = c.post(&s, &format!("/v1/groups/{g3}/join-requests/alice/accept"), json!({})).await;
    assert_eq!(st, S::OK, "a place was freed: {body}");
    assert_eq!(c.delete(&s, &format!("/v1/groups/{g3}/members/alice")).await.0, S::NO_CONTENT);
    assert_eq!(a.post(&s, &format!("/v1/groups/{g2}/join"), json!({})).await.0, S::OK, "removal freed one too");
    // A profile edit does not reset the count.
    assert_eq!(a.put(&s, "/v1/me", json!({"name": "Alice A."})).await.0, S::OK);
    assert_eq!(a.post(&s, &format!("/v1/groups/{g3}/join"), json!({})).await.0, S::ACCEPTED);
    assert_eq!(c.post(&s, &format!("/v1/groups/{g3}/join-requests/alice/accept"), json!({})).await.0, S::CONFLICT);

    // Friends: both sides' limits are checked when a friendship is made.
    s.befriend(&a, &b).await;
    s.befriend(&a, &c).await;
    assert_eq!(d.post(&s, "/v1/friend-requests", json!({"to": "alice"})).await.0, S::CREATED);
    let (st, body) = a.post(&s, "/v1/friend-requests/dave/accept", json!({})).await;
    common::assert_error(st, &body, S::CONFLICT, "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("you have 2 friends already"), "{body}");
    assert_eq!(a.post(&s, "/v1/friend-requests", json!({"to": "dave"})).await.0, S::CONFLICT, "crossing request");
    let (_, pending) = a.get(&s, "/v1/friend-requests?direction=incoming").await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 1, "the request stays pending: {pending}");
    let e = s.user("eve").await;
    assert_eq!(b.post(&s, "/v1/friend-requests", json!({"to": "eve"})).await.0, S::CREATED);
    s.befriend(&c, &b).await;
    let (st, body) = e.post(&s, "/v1/friend-requests/bob/accept", json!({})).await;
    common::assert_error(st, &body, S::CONFLICT, "conflict");
    assert!(body["error"]["message"].as_str().unwrap().contains("bob has 2 friends already"), "{body}");
    let (_, friends) = e.get(&s, "/v1/friends").await;
    assert_eq!(friends["items"], json!([]), "no half-made friendship");
    assert_eq!(a.delete(&s, "/v1/friends/carol").await.0, S::NO_CONTENT);
    let (st, body) = a.post(&s, "/v1/friend-requests/dave/accept", json!({})).await;
    assert_eq!(st, S::OK, "unfriending freed a place: {body}");
    let (_, friends) = a.get(&s, "/v1/friends").await;
    let ids: Vec<&str> = friends["items"].as_array().unwrap().iter().map(|f| f["user_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bob", "dave"]);
}

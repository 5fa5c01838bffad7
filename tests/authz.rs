//! The authorization matrix: every route of the route table, every kind of caller that must be
//! refused. The cases come from an exhaustive `match` on the operation, so a new route does not
//! compile until someone says who may not call it. Every refusal must have the right status and
//! a body that is only `{"error": {"code", "message"}}`, naming nothing of the resource.

mod common;

use common::{Server, User};
use im_functions::{Op, ROUTES};
use reqwest::{Method, StatusCode as S};
use serde_json::{Value, json};

/// Words that only someone allowed in would know: none may appear in a refusal.
const SECRETS: &[&str] = &["Secret Garden", "hidden agenda", "the secret plan", "whisper between friends"];

/// The cast: a private (approval) group with its owner, an admin, a member, a removed member
/// and a pending applicant; two friends with a single chat; and outsiders.
struct World {
    s: Server,
    owner: User,
    admin: User,
    member: User,
    removed: User,
    applicant: User,
    outsider: User,
    alice: User,
    bob: User,
    group: String,
    single: String,
}

async fn world() -> World {
    let s = Server::start();
    let (owner, admin, member, removed) =
        (s.user("owner").await, s.user("admin").await, s.user("member").await, s.user("removed").await);
    let (applicant, outsider, alice, bob) =
        (s.user("applicant").await, s.user("outsider").await, s.user("alice").await, s.user("bob").await);
    let body = json!({"name": "Secret Garden", "description": "hidden agenda", "join_policy": "approval",
                      "members": [admin.id, member.id, removed.id]});
    let (st, g) = owner.post(&s, "/v1/groups", body).await;
    assert_eq!(st, S::CREATED, "{g}");
    let group = g["group_id"].as_str().unwrap().to_string();
    let (st, v) =
        owner.put(&s, &format!("/v1/groups/{group}/members/{}/role", admin.id), json!({"role": "admin"})).await;
    assert_eq!(st, S::OK, "{v}");
    assert_eq!(owner.delete(&s, &format!("/v1/groups/{group}/members/{}", removed.id)).await.0, S::NO_CONTENT);
    assert_eq!(applicant.post(&s, &format!("/v1/groups/{group}/join"), json!({})).await.0, S::ACCEPTED);
    assert_eq!(member.send(&s, &group, "g1", "the secret plan").await.0, S::CREATED);
    let single = s.befriend(&alice, &bob).await;
    assert_eq!(alice.send(&s, &single, "s1", "whisper between friends").await.0, S::CREATED);
    World { s, owner, admin, member, removed, applicant, outsider, alice, bob, group, single }
}

/// One refusal: who calls, with what path parameters and body, and the status it must get.
struct Case<'a> {
    who: &'a User,
    why: &'static str,
    params: Vec<(&'static str, String)>,
    body: Value,
    want: S,
}

fn case<'a>(who: &'a User, why: &'static str, params: &[(&'static str, &str)], want: S) -> Case<'a> {
    Case { who, why, params: params.iter().map(|(k, v)| (*k, v.to_string())).collect(), body: json!({}), want }
}

/// Who must be refused what, per operation. Operations on the caller's own data, and public
/// ones, have no one to refuse beyond a bad token (checked for every route); `self_scoped`
/// says so explicitly, so every arm is a decision.
fn cases(op: Op, w: &World) -> Vec<Case<'_>> {
    let g = w.group.as_str();
    let sc = w.single.as_str();
    let forbidden = S::FORBIDDEN;
    let self_scoped = Vec::new;
    match op {
        // Public, or about the caller only.
        Op::Health | Op::OpenApi | Op::DevToken => self_scoped(),
        Op::PutMe | Op::GetMe | Op::GetUser => self_scoped(),
        Op::SendFriendRequest | Op::ListFriendRequests | Op::ListFriends | Op::MyGroups => self_scoped(),
        Op::Sync | Op::ListConversations => self_scoped(),
        // Any signed-in user may see a group's card and find groups by name (API.md).
        Op::CreateGroup | Op::GetGroup | Op::SearchGroups | Op::JoinGroup => self_scoped(),
        // Another user's request or friendship.
        Op::AcceptFriendRequest | Op::RejectFriendRequest => {
            vec![case(&w.outsider, "a request made to someone else", &[("from", &w.alice.id)], S::NOT_FOUND)]
        }
        Op::RemoveFriend => {
            vec![case(&w.outsider, "not their friend", &[("user_id", &w.alice.id)], S::NOT_FOUND)]
        }
        Op::UpdateGroup => [&w.member, &w.removed, &w.outsider]
            .into_iter()
            .map(|u| Case {
                body: json!({"name": "Taken over"}),
                ..case(u, "not owner or admin", &[("group_id", g)], forbidden)
            })
            .collect(),
        Op::ListJoinRequests => [&w.member, &w.removed, &w.outsider, &w.applicant]
            .into_iter()
            .map(|u| case(u, "not owner or admin", &[("group_id", g)], forbidden))
            .collect(),
        Op::AcceptJoinRequest | Op::RejectJoinRequest => [&w.member, &w.removed, &w.outsider, &w.applicant]
            .into_iter()
            .map(|u| case(u, "not owner or admin", &[("group_id", g), ("user_id", &w.applicant.id)], forbidden))
            .collect(),
        Op::LeaveGroup => [&w.removed, &w.outsider, &w.applicant]
            .into_iter()
            .map(|u| case(u, "not a member", &[("group_id", g)], S::NOT_FOUND))
            .collect(),
        Op::RemoveMember => vec![
            case(&w.member, "a plain member", &[("group_id", g), ("user_id", &w.admin.id)], forbidden),
            case(&w.admin, "an admin removing the owner", &[("group_id", g), ("user_id", &w.owner.id)], forbidden),
            case(&w.removed, "a removed member", &[("group_id", g), ("user_id", &w.member.id)], forbidden),
            case(&w.outsider, "not a member", &[("group_id", g), ("user_id", &w.member.id)], forbidden),
        ],
        Op::SetRole => [&w.admin, &w.member, &w.removed, &w.outsider]
            .into_iter()
            .map(|u| Case {
                body: json!({"role": "admin"}),
                ..case(u, "not the owner", &[("group_id", g), ("user_id", &w.member.id)], forbidden)
            })
            .collect(),
        Op::ListMembers => [&w.removed, &w.outsider, &w.applicant]
            .into_iter()
            .map(|u| case(u, "not a member", &[("group_id", g)], forbidden))
            .collect(),
        Op::SendMessage | Op::History | Op::MarkRead | Op::SearchMessages => {
            let body = match op {
                Op::SendMessage => json!({"client_msg_id": "x1", "type": "text", "text": "let me in"}),
                _ => json!({}),
            };
            let mut out: Vec<Case> = [&w.removed, &w.outsider, &w.applicant]
                .into_iter()
                .map(|u| Case { body: body.clone(), ..case(u, "not a member", &[("conversation_id", g)], forbidden) })
                .collect();
            out.push(Case {
                body,
                ..case(&w.outsider, "not one of the two friends", &[("conversation_id", sc)], forbidden)
            });
            out
        }
    }
}

/// The route's path with its parameters filled in; search takes its conversation in the query.
fn url(path: &str, op: Op, params: &[(&'static str, String)]) -> String {
    let mut out = path.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    if op == Op::SearchMessages {
        let conv = params.iter().find(|(k, _)| *k == "conversation_id").map_or("", |(_, v)| v.as_str());
        out = format!("{out}?q=secret&conversation_id={conv}");
    }
    out
}

/// A refusal says nothing of what it protects.
fn assert_reveals_nothing(what: &str, body: &Value) {
    let obj = body.as_object().unwrap_or_else(|| panic!("{what}: not a JSON object: {body}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "{what}: {body}");
    let err = body["error"].as_object().unwrap();
    let mut keys: Vec<&String> = err.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "{what}: {body}");
    let text = body.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what}: the refusal reveals {secret:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_caller_it_must() {
    let w = world().await;
    let expired = common::token_signed_with(b"im-local-dev-secret-do-not-use-in-production", "owner", -3600);
    let forged = common::token_signed_with(b"someone-elses-key", "owner", 600);
    let mut checked = 0;
    for r in ROUTES {
        let method = Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        let filled = |u: &str| {
            let p = r.path.replace("{group_id}", &w.group).replace("{conversation_id}", &w.group);
            p.replace("{user_id}", u).replace("{from}", u)
        };
        // Bad tokens, on the real resource: 401 and nothing else.
        if r.auth() {
            let path = filled(&w.member.id);
            for (why, token) in
                [("no token", None), ("an expired token", Some(&expired)), ("another key", Some(&forged))]
            {
                let (st, body) = w.s.call(method.clone(), &path, token.map(String::as_str), Some(json!({}))).await;
                let what = format!("{} {} with {why}", r.method, r.path);
                assert_eq!(st, S::UNAUTHORIZED, "{what}: {body}");
                assert_eq!(body["error"]["code"], "unauthenticated", "{what}");
                assert_reveals_nothing(&what, &body);
                checked += 1;
            }
        }
        for c in cases(r.op, &w) {
            let path = url(r.path, r.op, &c.params);
            let body = (method != Method::GET && method != Method::DELETE).then(|| c.body.clone());
            let (st, resp) = w.s.call(method.clone(), &path, Some(&c.who.token), body).await;
            let what = format!("{} {} by {} ({})", r.method, path, c.who.id, c.why);
            assert_eq!(st, c.want, "{what}: {resp}");
            assert_reveals_nothing(&what, &resp);
            checked += 1;
        }
    }
    println!("{checked} refusals checked");

    // What the callers above could not do left no trace: the group is as it was.
    let (_, g) = w.owner.get(&w.s, &format!("/v1/groups/{}", w.group)).await;
    assert_eq!((g["name"].as_str(), g["member_count"].as_i64()), (Some("Secret Garden"), Some(3)), "{g}");
    let (_, members) = w.owner.get(&w.s, &format!("/v1/groups/{}/members", w.group)).await;
    let roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["user_id"].as_str().unwrap().into(), m["role"].as_str().unwrap().into()))
        .collect();
    assert!(roles.contains(&("admin".into(), "admin".into())) && roles.contains(&("member".into(), "member".into())));
    // And the self-scoped lists of outsiders hold nothing of it.
    for path in
        ["/v1/sync?limit=500", "/v1/conversations", "/v1/me/groups", "/v1/friends", "/v1/search/messages?q=secret"]
    {
        for u in [&w.outsider, &w.removed, &w.applicant] {
            let (st, v) = u.get(&w.s, path).await;
            assert_eq!(st, S::OK, "{path}: {v}");
            let text = v.to_string();
            for secret in ["the secret plan", "whisper between friends"] {
                assert!(!text.contains(secret), "{} sees {secret:?} in {path}: {v}", u.id);
            }
        }
    }
    // Positive controls: the same routes work for those allowed, so the refusals above were
    // about the caller, not a broken request.
    let (st, h) = w.bob.get(&w.s, &format!("/v1/conversations/{}/messages", w.single)).await;
    assert_eq!((st, h["items"][0]["text"].as_str()), (S::OK, Some("whisper between friends")), "{h}");
    let (st, h) = w.admin.get(&w.s, &format!("/v1/groups/{}/join-requests", w.group)).await;
    assert_eq!((st, h["items"][0]["user_id"].as_str()), (S::OK, Some("applicant")), "{h}");
    let (st, v) =
        w.admin.patch(&w.s, &format!("/v1/groups/{}", w.group), json!({"description": "hidden agenda"})).await;
    assert_eq!(st, S::OK, "{v}");
}

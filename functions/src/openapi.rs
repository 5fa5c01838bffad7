//! The OpenAPI 3 document of the API, generated from the code: paths, methods, path parameters
//! and security from the route table; bodies and responses from the Rust types the dispatcher
//! parses and returns (their JSON Schemas derived with schemars, constraints included); the
//! errors from the service's error type. Served at `GET /v1/openapi.json`, checked in as
//! `openapi.json` (a test fails when the two differ), and fuzzed with schemathesis.

use crate::dispatch::{DevTokenBody, FriendRequestBody, Health, MessageBody, ReadBody, RoleBody, Token};
use crate::routes::{Op, ROUTES, Route};
use im_shared::model::*;
use im_shared::service::groups::{CreateGroupInput, UpdateGroupInput};
use im_shared::service::limits;
use im_shared::service::messages::SendInput;
use im_shared::service::users::ProfileInput;
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// What an operation takes and gives, beyond what the route table says.
struct OpDoc {
    summary: &'static str,
    /// The request body's schema. A body whose fields are all optional may be left out.
    body: Option<Schema>,
    query: Vec<Value>,
    /// Success statuses, each with its body's schema (`None`: no body).
    ok: Vec<(u16, &'static str, Option<Schema>)>,
    /// Error statuses the operation itself can answer (besides the ones every route can).
    errors: &'static [u16],
}

fn limit(max: usize, default: usize) -> Value {
    json!({"name": "limit", "in": "query", "required": false,
           "description": format!("page size, 1-{max} (default {default})"),
           "schema": {"type": "integer", "minimum": 1, "maximum": max}})
}

fn cursor() -> Value {
    json!({"name": "cursor", "in": "query", "required": false,
           "description": "the next_cursor of the previous page (opaque; empty or absent: the first page); another list's cursor is a 400",
           "schema": {"type": "string"}})
}

fn int_param(name: &str, description: &str, minimum: i64) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": {"type": "integer", "format": "int64", "minimum": minimum}})
}

fn phrase() -> Value {
    json!({"name": "q", "in": "query", "required": true,
           "description": "the words to find, in order, the last one as the start of a word (case-insensitive; CJK by substring), 1-200 characters, not blank",
           "schema": {"type": "string", "minLength": 1, "maxLength": im_shared::service::search::MAX_QUERY_CHARS,
                      "pattern": "\\S"}})
}

fn list(max: (usize, usize)) -> Vec<Value> {
    vec![limit(max.1, max.0), cursor()]
}

fn doc_of(op: Op, g: &mut SchemaGenerator) -> OpDoc {
    let mut s = |f: fn(&mut SchemaGenerator) -> Schema| Some(f(g));
    macro_rules! schema {
        ($t:ty) => {
            s(|g| g.subschema_for::<$t>())
        };
    }
    let doc = |summary, body, query, ok, errors| OpDoc { summary, body, query, ok, errors };
    match op {
        Op::Health => doc("Liveness, no token needed", None, vec![], vec![(200, "up", schema!(Health))], &[]),
        Op::OpenApi => {
            let any = s(|_| schemars::json_schema!({"type": "object"}));
            doc("This document", None, vec![], vec![(200, "the OpenAPI 3 document", any)], &[])
        }
        Op::DevToken => doc(
            "A token for any user (local server in dev mode only; never on AWS)",
            schema!(DevTokenBody),
            vec![],
            vec![(200, "a signed token", schema!(Token))],
            &[400],
        ),
        Op::PutMe => doc(
            "Create or update the caller's profile",
            schema!(ProfileInput),
            vec![],
            vec![(200, "the profile", schema!(User))],
            &[400],
        ),
        Op::GetMe => doc("The caller's profile", None, vec![], vec![(200, "the profile", schema!(User))], &[404]),
        Op::GetUser => doc("A user's profile", None, vec![], vec![(200, "the profile", schema!(User))], &[400, 404]),
        Op::SendFriendRequest => doc(
            "Ask a user to be friends (if they had asked the caller, both become friends at once)",
            schema!(FriendRequestBody),
            vec![],
            vec![(201, "a pending request", schema!(FriendRequest)), (200, "now friends", schema!(Friendship))],
            &[400, 404, 409],
        ),
        Op::ListFriendRequests => {
            let mut q = list(limits::LIST);
            q.push(json!({"name": "direction", "in": "query", "required": false,
                          "schema": {"type": "string", "enum": ["incoming", "outgoing"], "default": "incoming"}}));
            doc("Pending friend requests", None, q, vec![(200, "a page", schema!(List<FriendRequest>))], &[400])
        }
        Op::AcceptFriendRequest => doc(
            "Accept a friend request",
            None,
            vec![],
            vec![(200, "the friendship", schema!(Friendship))],
            &[400, 404, 409],
        ),
        Op::RejectFriendRequest => {
            doc("Reject a friend request", None, vec![], vec![(204, "rejected", None)], &[400, 404])
        }
        Op::ListFriends => {
            doc("The caller's friends", None, list(limits::LIST), vec![(200, "a page", schema!(List<Friend>))], &[400])
        }
        Op::RemoveFriend => {
            doc("End a friendship on both sides", None, vec![], vec![(204, "ended", None)], &[400, 404])
        }
        Op::CreateGroup => doc(
            "Create a group; the caller is its owner, listed members join at once",
            schema!(CreateGroupInput),
            vec![],
            vec![(201, "the group", schema!(Group))],
            &[400, 404],
        ),
        Op::SearchGroups => {
            let mut q = list(limits::SEARCH);
            q.insert(0, phrase());
            doc("Search groups by name", None, q, vec![(200, "a page of groups", schema!(List<Group>))], &[400])
        }
        Op::GetGroup => doc("A group", None, vec![], vec![(200, "the group", schema!(Group))], &[400, 404]),
        Op::UpdateGroup => doc(
            "Change a group's name, description or join policy (owner or admin)",
            schema!(UpdateGroupInput),
            vec![],
            vec![(200, "the group", schema!(Group))],
            &[400, 403, 404],
        ),
        Op::JoinGroup => doc(
            "Join an open group, or ask to join an approval group",
            schema!(MessageBody),
            vec![],
            vec![(200, "joined", schema!(Member)), (202, "a pending request", schema!(JoinRequest))],
            &[400, 404, 409],
        ),
        Op::ListJoinRequests => doc(
            "Pending join requests (owner or admin)",
            None,
            list(limits::LIST),
            vec![(200, "a page", schema!(List<JoinRequest>))],
            &[400, 403, 404],
        ),
        Op::AcceptJoinRequest => doc(
            "Accept a join request (owner or admin)",
            None,
            vec![],
            vec![(200, "the new member", schema!(Member))],
            &[400, 403, 404, 409],
        ),
        Op::RejectJoinRequest => {
            doc("Reject a join request (owner or admin)", None, vec![], vec![(204, "rejected", None)], &[400, 403, 404])
        }
        Op::LeaveGroup => doc(
            "Leave a group (the owner cannot while others remain)",
            None,
            vec![],
            vec![(204, "left", None)],
            &[400, 404, 409],
        ),
        Op::RemoveMember => {
            doc("Remove a member (owner or admin)", None, vec![], vec![(204, "removed", None)], &[400, 403, 404, 409])
        }
        Op::SetRole => doc(
            "Make a member an admin or a plain member (owner only)",
            schema!(RoleBody),
            vec![],
            vec![(200, "the member", schema!(Member))],
            &[400, 403, 404, 409],
        ),
        Op::ListMembers => doc(
            "A group's members (members only)",
            None,
            list(limits::LIST),
            vec![(200, "a page", schema!(List<Member>))],
            &[400, 403, 404],
        ),
        Op::MyGroups => {
            doc("The caller's groups", None, list(limits::LIST), vec![(200, "a page", schema!(List<Group>))], &[400])
        }
        Op::SendMessage => doc(
            "Send a message (a retry with the same client_msg_id returns the first result)",
            schema!(SendInput),
            vec![],
            vec![(201, "sent", schema!(Message)), (200, "a retry: the first result", schema!(Message))],
            &[400, 403, 404, 409, 413],
        ),
        Op::History => {
            let q = vec![
                int_param("before", "messages with a seq below this (default: from the latest)", 1),
                limit(limits::HISTORY.1, limits::HISTORY.0),
            ];
            doc(
                "A conversation's messages, newest first",
                None,
                q,
                vec![(200, "a page", schema!(HistoryPage))],
                &[400, 403, 404],
            )
        }
        Op::Sync => {
            let q = vec![
                int_param("after", "the checkpoint: entries with a higher sync_seq", 0),
                limit(limits::SYNC.1, limits::SYNC.0),
            ];
            doc("The caller's inbox after a checkpoint", None, q, vec![(200, "a page", schema!(SyncPage))], &[400])
        }
        Op::ListConversations => doc(
            "The caller's conversations, most recent activity first, with unread counts",
            None,
            list(limits::LIST),
            vec![(200, "a page", schema!(List<ConversationSummary>))],
            &[400],
        ),
        Op::MarkRead => doc(
            "Mark a conversation read up to a seq (default: the latest)",
            schema!(ReadBody),
            vec![],
            vec![(200, "the conversation's summary", schema!(ConversationSummary))],
            &[400, 403, 404],
        ),
        Op::SearchMessages => {
            let mut q = list(limits::SEARCH);
            q.insert(0, phrase());
            q.insert(
                1,
                json!({"name": "conversation_id", "in": "query", "required": false,
                       "description": "search only this conversation, which the caller must be in (empty or absent: all of theirs)",
                       "schema": {"type": "string", "maxLength": 64}}),
            );
            doc(
                "Search the messages of the caller's conversations",
                None,
                q,
                vec![(200, "a page", schema!(List<Message>))],
                &[400, 403, 404],
            )
        }
    }
}

/// A path parameter's schema, by its name.
fn path_param(name: &str) -> Value {
    let schema = match name {
        "user_id" | "from" => json!({"type": "string", "pattern": im_shared::ids::USER_ID_PATTERN}),
        "group_id" => json!({"type": "string", "pattern": "^g_[A-Za-z0-9]{1,62}$"}),
        "conversation_id" => json!({"type": "string", "pattern": "^[gs]_[A-Za-z0-9]{1,62}$"}),
        other => unreachable!("no schema for path parameter {other}"),
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

/// Links for stateful testing (and readers): which later operations take an id from a
/// success response, e.g. a created group's id into sending to it.
fn links(op: Op, status: u16) -> Option<Value> {
    let to = |targets: &[&str], param: &str, expr: &str| {
        let mut m = Map::new();
        for t in targets {
            m.insert(t.to_string(), json!({"operationId": t, "parameters": {param: expr}}));
        }
        Value::Object(m)
    };
    let group_ops = ["get-group", "update-group", "join-group", "list-join-requests", "list-members", "leave-group"];
    let conversation_ops = ["send-message", "history", "mark-read"];
    match (op, status) {
        (Op::CreateGroup, 201) => {
            let mut l = to(&group_ops, "group_id", "$response.body#/group_id");
            l.as_object_mut().unwrap().extend(
                to(&conversation_ops, "conversation_id", "$response.body#/group_id").as_object().unwrap().clone(),
            );
            Some(l)
        }
        (Op::SendMessage, 201) => {
            Some(to(&["history", "mark-read"], "conversation_id", "$response.body#/conversation_id"))
        }
        (Op::PutMe, 200) => Some(to(&["get-user"], "user_id", "$response.body#/user_id")),
        (Op::SendFriendRequest, 200) | (Op::AcceptFriendRequest, 200) => {
            Some(to(&conversation_ops, "conversation_id", "$response.body#/conversation_id"))
        }
        _ => None,
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "invalid_argument: a malformed body or parameter, or a value out of range",
        401 => "unauthenticated: no token, or an invalid or expired one",
        403 => "permission_denied: the caller may not do this",
        404 => "not_found: no such resource (or not visible to the caller)",
        409 => "conflict: the state does not allow it (e.g. already friends)",
        413 => "too_large: the body or a field is too long",
        429 => "rate_limited: too many requests; retry after the Retry-After header",
        503 => "unavailable: a dependency is down or overloaded; retry",
        _ => "internal: an unexpected failure (logged on the server)",
    }
}

fn operation(route: &Route, g: &mut SchemaGenerator) -> Value {
    let doc = doc_of(route.op, g);
    let mut params: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(path_param)
        .collect();
    params.extend(doc.query);
    let mut responses = Map::new();
    for (status, description, schema) in doc.ok {
        let mut r = json!({"description": description});
        if let Some(schema) = schema {
            r["content"] = json!({"application/json": {"schema": schema}});
        }
        if let Some(l) = links(route.op, status) {
            r["links"] = l;
        }
        responses.insert(status.to_string(), r);
    }
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    // Every route can refuse a body that is too large or unreadable and fail over; one with a
    // token can refuse it.
    let mut statuses: Vec<u16> = doc.errors.to_vec();
    statuses.extend([400, 413, 500, 503]);
    if route.auth {
        statuses.extend([401, 429]);
    }
    statuses.sort();
    statuses.dedup();
    for status in statuses {
        responses.insert(status.to_string(), json!({"description": error_description(status), "content": error}));
    }
    let mut op = json!({
        "operationId": route.lambda,
        "summary": doc.summary,
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = doc.body {
        let required = !matches!(route.op, Op::JoinGroup | Op::MarkRead);
        op["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": body}}});
    }
    op["security"] = if route.auth { json!([{"bearer": []}]) } else { json!([]) };
    if route.local_only {
        op["description"] = json!("Served by the local server in dev mode only.");
    }
    op
}

/// `GET /v1/ws`, the local server's WebSocket: not an API operation (no Lambda serves it; on
/// AWS the WebSocket API of the template does), so it is described here, not in the route table.
fn websocket() -> Value {
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    let mut responses = Map::new();
    responses.insert(
        "101".into(),
        json!({"description": "Switching to the WebSocket protocol. The server sends JSON text frames: \
            {\"type\":\"ready\",\"user_id\":…} once, then {\"type\":\"inbox\",\"sync_seq\":n,\"conversation_id\":…} \
            whenever the caller's inbox gains an entry (a hint: GET /v1/sync reads it), and {\"type\":\"pong\"} \
            for each {\"type\":\"ping\"} the client sends."}),
    );
    for status in [400u16, 401, 429, 503] {
        responses.insert(status.to_string(), json!({"description": error_description(status), "content": error}));
    }
    json!({"get": {
        "operationId": "websocket",
        "summary": "Live updates: a WebSocket that tells each of the caller's devices when their inbox has news",
        "description": "Authenticated by the token query parameter (browsers cannot set headers on a WebSocket) or \
            the Authorization header. 400 for a request that is not a WebSocket upgrade; 429 when the user has \
            the most connections allowed open (IM_WS_MAX_PER_USER); 503 when the server does (IM_WS_MAX_CONNECTIONS).",
        "parameters": [{"name": "token", "in": "query", "required": false, "schema": {"type": "string"},
            "description": "The caller's JWT, as for every other route."}],
        "responses": responses,
        "security": [{"bearer": []}, {}],
    }})
}

/// The whole document.
pub fn document() -> Value {
    let mut g = SchemaGenerator::new(SchemaSettings::openapi3());
    let mut paths = Map::new();
    for route in ROUTES {
        let path = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        path[route.method.as_str().to_ascii_lowercase()] = operation(route, &mut g);
    }
    paths.insert("/v1/ws".into(), websocket());
    let mut schemas: Map<String, Value> = g.take_definitions(true).into_iter().collect();
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "IM API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An instant-messaging backend: profiles, friends, groups, messages with per-user inboxes, unread counts and search. Generated from the code (functions/src/openapi.rs).",
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "the local server (cargo run)"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "The caller's user id is the token's sub claim."}},
            "schemas": schemas,
        },
    })
}

fn error_schema() -> Value {
    let codes = [
        "invalid_argument",
        "unauthenticated",
        "permission_denied",
        "not_found",
        "conflict",
        "too_large",
        "rate_limited",
        "internal",
        "unavailable",
        "method_not_allowed",
    ];
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "enum": codes},
            "message": {"type": "string"},
        }}},
    })
}

/// `openapi.json` as checked in, which `GET /v1/openapi.json` serves (a test below keeps it
/// equal to [`render`]).
pub const CHECKED_IN: &str = include_str!("../../openapi.json");

/// `openapi.json`'s text.
pub fn render() -> String {
    serde_json::to_string_pretty(&document()).expect("JSON serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_document_is_what_the_code_generates() {
        assert!(CHECKED_IN == render(), "openapi.json is stale: run `cargo run -- openapi > openapi.json`");
    }

    #[test]
    fn every_route_is_documented_with_its_parameters() {
        let doc = document();
        for r in ROUTES {
            let op = &doc["paths"][r.path][r.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], r.lambda, "{} {}", r.method, r.path);
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let in_path: Vec<&str> =
                r.path.split('/').filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}'))).collect();
            assert_eq!(declared, in_path);
            assert_eq!(op["security"].as_array().unwrap().is_empty(), !r.auth);
        }
    }
}

//! The OpenAPI 3 document of the API, generated from the code: paths, methods, path parameters
//! and security from the route table; bodies and responses from the Rust types the dispatcher
//! parses and returns (their JSON Schemas derived with schemars, constraints included); the
//! errors from the service's error type. Served at `GET /v1/openapi.json`, checked in as
//! `openapi.json` (a test fails when the two differ), and fuzzed with schemathesis.

use crate::routes::{self, Op, ROUTES};
use crate::routing::Route;
use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The query parameters the route table's entries describe themselves with.
pub mod params {
    use serde_json::{Value, json};

    pub fn limit(max: usize, default: usize) -> Value {
        json!({"name": "limit", "in": "query", "required": false,
               "description": format!("page size, 1-{max} (default {default})"),
               "schema": {"type": "integer", "minimum": 1, "maximum": max}})
    }

    pub fn cursor() -> Value {
        json!({"name": "cursor", "in": "query", "required": false,
               "description": "the next_cursor of the previous page (opaque; empty or absent: the first page); another list's cursor is a 400",
               "schema": {"type": "string"}})
    }

    pub fn int_param(name: &str, description: &str, minimum: i64) -> Value {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "integer", "format": "int64", "minimum": minimum}})
    }

    pub fn phrase() -> Value {
        json!({"name": "q", "in": "query", "required": true,
               "description": "the words to find, in order, the last one as the start of a word (case-insensitive; CJK by substring), 1-200 characters, not blank",
               "schema": {"type": "string", "minLength": 1, "maxLength": im_shared::service::search::MAX_QUERY_CHARS,
                          "pattern": "\\S"}})
    }

    /// A list's parameters: `limit` (default, max) and `cursor`.
    pub fn list(max: (usize, usize)) -> Vec<Value> {
        vec![limit(max.1, max.0), cursor()]
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
    let doc = routes::doc(route.op, g);
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
    if route.auth() {
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
    if let Some((body, optional)) = doc.body {
        op["requestBody"] = json!({"required": !optional, "content": {"application/json": {"schema": body}}});
    }
    op["security"] = if route.auth() { json!([{"bearer": []}]) } else { json!([]) };
    if route.local_only() {
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

    /// A stale `openapi.json` is written anew, and the test fails so that the change is seen
    /// (and committed): after a change to the route table, `cargo test` brings it up to date.
    #[test]
    fn the_checked_in_document_is_what_the_code_generates() {
        let generated = render();
        if CHECKED_IN != generated {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.json");
            std::fs::write(path, &generated).expect("write openapi.json");
            panic!("openapi.json was stale and has been written anew from the route table: review and commit it");
        }
    }

    /// `docs/api.md`, the contract in prose, names every operation of the document as
    /// `` `METHOD /path` ``, and no operation the document lacks.
    #[test]
    fn the_api_guide_names_exactly_the_documents_operations() {
        let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
        let doc = document();
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                documented.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
        for op in &documented {
            assert!(guide.contains(&format!("`{op}`")), "docs/api.md does not name `{op}`");
        }
        for named in guide.split('`').skip(1).step_by(2) {
            let Some((method, path)) = named.split_once(' ') else { continue };
            if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method) && path.starts_with("/v1/") {
                let op = format!("{method} {}", path.split('?').next().unwrap());
                assert!(documented.contains(&op), "docs/api.md names `{op}`, which openapi.json lacks");
            }
        }
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
            assert_eq!(op["security"].as_array().unwrap().is_empty(), !r.auth());
        }
    }
}

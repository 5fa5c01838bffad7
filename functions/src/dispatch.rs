//! One request in, one response out: route lookup, authentication, parameter and body parsing,
//! the service call, and the error mapping. Every client-visible outcome is a response with a
//! JSON body `{"error": {"code", "message"}}` on failure; nothing internal reaches the client.

use crate::auth::Hs256;
use crate::routes::{self, Matched, Op, Route};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use im_shared::Error;
use im_shared::ids::validate_user_id;
use im_shared::model::JoinOutcome;
use im_shared::service::Service;
use im_shared::service::friends::{Direction, RequestOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Larger request bodies are refused with `413`.
    pub max_body_bytes: usize,
    /// Serves `POST /v1/dev/token` (local development only).
    pub dev_mode: bool,
    pub dev_token_ttl_secs: i64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { max_body_bytes: 64 * 1024, dev_mode: false, dev_token_ttl_secs: 24 * 3600 }
    }
}

pub struct App {
    pub service: Arc<Service>,
    pub auth: Auth,
    pub cfg: HttpConfig,
}

/// How a caller's identity is established.
pub enum Auth {
    /// The local server verifies the `Authorization: Bearer` HS256 JWT itself; the credential
    /// handed to [`handle`] is that header's value.
    Hs256(Box<Hs256>),
    /// On AWS the HTTP API's JWT authorizer has verified the token before the function runs;
    /// the credential is the `sub` claim from the request context, which the client cannot set.
    Authorizer,
}

impl Auth {
    /// Who the credential names, or why it is refused.
    fn caller(&self, credential: Option<&str>) -> Result<String, Error> {
        match self {
            Auth::Hs256(keys) => keys.caller(credential),
            Auth::Authorizer => {
                let sub = credential.ok_or_else(|| Error::Unauthenticated("no verified token subject".into()))?;
                validate_user_id(sub)
                    .map_err(|_| Error::Unauthenticated("token subject is not a valid user_id".into()))?;
                Ok(sub.to_string())
            }
        }
    }

    /// The caller and, when the credential is a token verified here, until when it holds
    /// (epoch seconds).
    pub fn session(&self, credential: Option<&str>) -> Result<(String, Option<i64>), Error> {
        match self {
            Auth::Hs256(keys) => keys.session(credential).map(|(user, until)| (user, Some(until))),
            Auth::Authorizer => self.caller(credential).map(|user| (user, None)),
        }
    }

    fn issue(&self, user_id: &str, ttl_secs: i64) -> Result<String, Error> {
        match self {
            Auth::Hs256(keys) => keys.issue(user_id, ttl_secs),
            Auth::Authorizer => Err(Error::not_found("no such route")),
        }
    }
}

/// A handled request's outcome, before it becomes an HTTP response: the body is already JSON.
struct Reply {
    status: StatusCode,
    body: Option<Bytes>,
}

fn reply(status: StatusCode, v: impl Serialize) -> Result<Reply, Error> {
    // Straight to bytes: through a `Value` first, a page of 100 entries built a map per entry
    // only to write it out again.
    let body = serde_json::to_vec(&v).map_err(|e| Error::Internal(format!("serializing a response: {e}")))?;
    Ok(Reply { status, body: Some(body.into()) })
}

fn no_content() -> Result<Reply, Error> {
    Ok(Reply { status: StatusCode::NO_CONTENT, body: None })
}

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response for an error: its status and a sanitized body.
pub fn error_response(e: &Error) -> http::Response<Bytes> {
    let mut resp = error_response_with(status_of(e), e.code(), &e.public_message());
    if let Error::RateLimited(_, secs) = e {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*secs));
    }
    resp
}

fn to_http(status: StatusCode, body: Option<Bytes>) -> http::Response<Bytes> {
    let mut resp = http::Response::new(body.unwrap_or_default());
    *resp.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    resp
}

/// Path and query parameters of one request.
struct Params {
    path: Vec<(&'static str, String)>,
    query: HashMap<String, String>,
}

impl Params {
    fn path(&self, name: &str) -> &str {
        self.path.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }

    fn int(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.query.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| Error::invalid(format!("{name} must be an integer"))),
        }
    }

    fn string(&self, name: &str) -> Option<String> {
        self.query.get(name).filter(|v| !v.is_empty()).cloned()
    }
}

/// The body as `T`; an empty body reads as `{}` so that all-optional bodies may be omitted.
/// Parsed straight into `T`, with no `Value` in between; the object check comes first because
/// serde would also take a struct from a JSON array.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let not_json = |e: serde_json::Error| Error::invalid(format!("request body is not valid JSON: {e}"));
    let Some(first) = body.iter().find(|b| !b.is_ascii_whitespace()) else {
        return json_body(b"{}");
    };
    if *first != b'{' {
        serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(not_json)?;
        return Err(Error::invalid("request body must be a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Error::invalid(format!("request body: {e}")),
        _ => not_json(e),
    })
}

// The request bodies the dispatcher parses itself (the service's own inputs live with it).
// Their JSON Schemas go into the OpenAPI document.

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct DevTokenBody {
    #[schemars(regex(pattern = "^[A-Za-z0-9_.@-]{1,64}$"))]
    pub user_id: String,
}
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct FriendRequestBody {
    /// The user asked.
    #[schemars(regex(pattern = "^[A-Za-z0-9_.@-]{1,64}$"))]
    pub to: String,
    #[schemars(length(max = 500))]
    pub message: Option<String>,
}
/// An optional note to whoever decides.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct MessageBody {
    #[schemars(length(max = 500))]
    pub message: Option<String>,
}
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct RoleBody {
    #[schemars(with = "AssignableRole")]
    pub role: im_shared::model::Role,
}
/// The roles an owner can give (ownership is not transferable).
#[derive(schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // only its schema is used
enum AssignableRole {
    Admin,
    Member,
}
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub struct ReadBody {
    /// Mark read up to this seq (default: the latest).
    #[schemars(range(min = 0))]
    pub seq: Option<i64>,
}

#[derive(Serialize, schemars::JsonSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}
#[derive(Serialize, schemars::JsonSchema)]
pub struct Token {
    pub token: String,
}

/// Handles one request to the local server, which serves the whole route table.
/// `credential` is what [`Auth`] checks: the `Authorization` header's value locally.
pub async fn handle(
    app: &App,
    method: &Method,
    path: &str,
    query: Option<&str>,
    credential: Option<&str>,
    body: &[u8],
) -> http::Response<Bytes> {
    match routes::find(method, path) {
        Matched::Route(r, p) if !r.local_only || app.cfg.dev_mode => serve(app, r, p, query, credential, body).await,
        Matched::MethodNotAllowed(allowed) => method_not_allowed(&allowed),
        _ => error_response(&Error::not_found("no such route")),
    }
}

/// Handles one request to a function that serves only `route` (a Lambda function: API Gateway
/// has already routed the request, and anything else reaching it is a deployment mistake).
pub async fn handle_route(
    app: &App,
    route: &'static Route,
    method: &Method,
    path: &str,
    query: Option<&str>,
    credential: Option<&str>,
    body: &[u8],
) -> http::Response<Bytes> {
    match route.params(path) {
        Some(p) if route.method == *method && !route.local_only => serve(app, route, p, query, credential, body).await,
        _ => {
            tracing::warn!(op = route.lambda, %method, path, "a request for another route reached this function");
            error_response(&Error::not_found("no such route"))
        }
    }
}

/// Authenticates, parses, runs the operation and maps its outcome to a response, with one log
/// line per request.
async fn serve(
    app: &App,
    route: &'static Route,
    path_params: Vec<(&'static str, String)>,
    query: Option<&str>,
    credential: Option<&str>,
    body: &[u8],
) -> http::Response<Bytes> {
    let started = Instant::now();
    let mut caller = None;
    let outcome = async {
        if body.len() > app.cfg.max_body_bytes {
            return Err(Error::TooLarge(format!("request body is larger than {} bytes", app.cfg.max_body_bytes)));
        }
        if route.auth {
            caller = Some(app.auth.caller(credential)?);
        }
        let query = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .map_err(|_| Error::invalid("malformed query string"))?
            .into_iter()
            .collect();
        let params = Params { path: path_params, query };
        run(app, route, &params, caller.as_deref().unwrap_or(""), body).await
    }
    .await;
    let resp = match outcome {
        Ok(r) => to_http(r.status, r.body),
        Err(e) => {
            if let Error::Internal(detail) = &e {
                tracing::error!(op = route.lambda, detail = %detail, "internal error");
            }
            error_response(&e)
        }
    };
    tracing::info!(
        op = route.lambda,
        caller = caller.as_deref().unwrap_or("-"),
        status = resp.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    resp
}

/// `405`, listing the methods the path takes (RFC 9110).
pub fn method_not_allowed(allowed: &[&str]) -> http::Response<Bytes> {
    let mut resp = error_response_with(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not accept that method",
    );
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

fn error_response_with(status: StatusCode, code: &str, message: &str) -> http::Response<Bytes> {
    to_http(status, Some(json!({"error": {"code": code, "message": message}}).to_string().into()))
}

/// The operation behind each route.
async fn run(app: &App, route: &Route, p: &Params, caller: &str, body: &[u8]) -> Result<Reply, Error> {
    use StatusCode as S;
    let svc = &app.service;
    let (limit, cursor) = (p.int("limit")?, p.string("cursor"));
    match route.op {
        Op::Health => reply(S::OK, Health { status: "ok", version: env!("CARGO_PKG_VERSION") }),
        // The checked-in document, which a test keeps equal to what `openapi::document()`
        // generates: generating it here linked schemars and every type's schema into each of
        // the 30 functions, about 0.1 MB of every zip (the 4 MB budget, README "Lambda packaging").
        Op::OpenApi => {
            Ok(Reply { status: S::OK, body: Some(Bytes::from_static(crate::openapi::CHECKED_IN.as_bytes())) })
        }
        Op::DevToken => {
            let b: DevTokenBody = json_body(body)?;
            validate_user_id(&b.user_id)?;
            reply(S::OK, Token { token: app.auth.issue(&b.user_id, app.cfg.dev_token_ttl_secs)? })
        }
        Op::PutMe => reply(S::OK, svc.put_me(caller, json_body(body)?).await?),
        Op::GetMe => reply(S::OK, svc.get_me(caller).await?),
        Op::GetUser => reply(S::OK, svc.get_user(p.path("user_id")).await?),
        Op::SendFriendRequest => {
            let b: FriendRequestBody = json_body(body)?;
            match svc.request_friend(caller, &b.to, b.message).await? {
                RequestOutcome::Pending(r) => reply(S::CREATED, r),
                RequestOutcome::Friends(f) => reply(S::OK, f),
            }
        }
        Op::ListFriendRequests => {
            // An empty value is not a direction (unlike an empty cursor, which is the first page).
            let direction = match p.query.get("direction").map(String::as_str) {
                None | Some("incoming") => Direction::Incoming,
                Some("outgoing") => Direction::Outgoing,
                Some(_) => return Err(Error::invalid("direction must be incoming or outgoing")),
            };
            reply(S::OK, svc.list_friend_requests(caller, direction, limit, cursor).await?)
        }
        Op::AcceptFriendRequest => reply(S::OK, svc.accept_friend(caller, p.path("from")).await?),
        Op::RejectFriendRequest => {
            svc.reject_friend(caller, p.path("from")).await?;
            no_content()
        }
        Op::ListFriends => reply(S::OK, svc.list_friends(caller, limit, cursor).await?),
        Op::RemoveFriend => {
            svc.remove_friend(caller, p.path("user_id")).await?;
            no_content()
        }
        Op::CreateGroup => reply(S::CREATED, svc.create_group(caller, json_body(body)?).await?),
        Op::GetGroup => reply(S::OK, svc.get_group(p.path("group_id")).await?),
        Op::UpdateGroup => reply(S::OK, svc.update_group(caller, p.path("group_id"), json_body(body)?).await?),
        Op::JoinGroup => {
            let b: MessageBody = json_body(body)?;
            match svc.join_group(caller, p.path("group_id"), b.message).await? {
                JoinOutcome::Joined(m) => reply(S::OK, m),
                JoinOutcome::Pending(r) => reply(S::ACCEPTED, r),
            }
        }
        Op::ListJoinRequests => reply(S::OK, svc.list_join_requests(caller, p.path("group_id"), limit, cursor).await?),
        Op::AcceptJoinRequest => reply(S::OK, svc.accept_join(caller, p.path("group_id"), p.path("user_id")).await?),
        Op::RejectJoinRequest => {
            svc.reject_join(caller, p.path("group_id"), p.path("user_id")).await?;
            no_content()
        }
        Op::LeaveGroup => {
            svc.leave_group(caller, p.path("group_id")).await?;
            no_content()
        }
        Op::RemoveMember => {
            svc.remove_member(caller, p.path("group_id"), p.path("user_id")).await?;
            no_content()
        }
        Op::SetRole => {
            let b: RoleBody = json_body(body)?;
            reply(S::OK, svc.set_role(caller, p.path("group_id"), p.path("user_id"), b.role).await?)
        }
        Op::ListMembers => reply(S::OK, svc.list_members(caller, p.path("group_id"), limit, cursor).await?),
        Op::MyGroups => reply(S::OK, svc.my_groups(caller, limit, cursor).await?),
        Op::SendMessage => {
            let sent = svc.send(caller, p.path("conversation_id"), json_body(body)?).await?;
            reply(if sent.created { S::CREATED } else { S::OK }, sent.message)
        }
        Op::History => reply(S::OK, svc.history(caller, p.path("conversation_id"), p.int("before")?, limit).await?),
        Op::Sync => reply(S::OK, svc.sync(caller, p.int("after")?, limit).await?),
        Op::ListConversations => reply(S::OK, svc.list_conversations(caller, limit, cursor).await?),
        Op::SearchMessages => {
            reply(S::OK, svc.search_messages(caller, p.string("q"), p.string("conversation_id"), limit, cursor).await?)
        }
        Op::SearchGroups => reply(S::OK, svc.search_groups(p.string("q"), limit, cursor).await?),
        Op::MarkRead => {
            let b: ReadBody = json_body(body)?;
            reply(S::OK, svc.mark_read(caller, p.path("conversation_id"), b.seq).await?)
        }
    }
}

//! One request in, one response out: route lookup, authentication, parameter and body parsing,
//! the service call, and the error mapping. Every client-visible outcome is a response with a
//! JSON body `{"error": {"code", "message"}}` on failure; nothing internal reaches the client.

use crate::auth::Hs256;
use crate::routes;
use crate::routing::{Matched, Req, Route};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use im_shared::Error;
use im_shared::ids::validate_user_id;
use im_shared::service::Service;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
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

    pub(crate) fn issue(&self, user_id: &str, ttl_secs: i64) -> Result<String, Error> {
        match self {
            Auth::Hs256(keys) => keys.issue(user_id, ttl_secs),
            Auth::Authorizer => Err(Error::not_found("no such route")),
        }
    }
}

/// A handled request's outcome, before it becomes an HTTP response: the body is already JSON.
pub(crate) struct Reply {
    status: StatusCode,
    body: Option<Bytes>,
}

impl Reply {
    /// A body that is JSON already.
    pub(crate) fn json(status: StatusCode, body: &'static [u8]) -> Self {
        Reply { status, body: Some(Bytes::from_static(body)) }
    }
}

pub(crate) fn reply(status: StatusCode, v: impl Serialize) -> Result<Reply, Error> {
    // Straight to bytes: through a `Value` first, a page of 100 entries built a map per entry
    // only to write it out again.
    let body = serde_json::to_vec(&v).map_err(|e| Error::Internal(format!("serializing a response: {e}")))?;
    Ok(Reply { status, body: Some(body.into()) })
}

pub(crate) fn no_content() -> Result<Reply, Error> {
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

/// The body as `T`; an empty body reads as `{}` so that all-optional bodies may be omitted.
/// Parsed straight into `T`, with no `Value` in between; the object check comes first because
/// serde would also take a struct from a JSON array.
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
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
        Matched::Route(r, p) if !r.local_only() || app.cfg.dev_mode => serve(app, r, p, query, credential, body).await,
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
        Some(p) if route.method == *method && !route.local_only() => {
            serve(app, route, p, query, credential, body).await
        }
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
        if route.auth() {
            caller = Some(app.auth.caller(credential)?);
        }
        let query = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
            .map_err(|_| Error::invalid("malformed query string"))?
            .into_iter()
            .collect();
        let mut req = Req {
            app,
            svc: &app.service,
            caller: caller.as_deref().unwrap_or(""),
            limit: None,
            cursor: None,
            path: path_params,
            query,
            body,
        };
        (req.limit, req.cursor) = (req.int("limit")?, req.string("cursor"));
        routes::run(route.op, &req).await
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

//! How the route table ([`crate::routes`]) is declared and read: what a route is, finding the
//! route of a request, what a handler gets, and the [`declare_routes!`] macro that turns the
//! table's entries into everything derived from them.
//!
//! An entry of the table names an operation once, with all that belongs to it: its method and
//! path, its function's name, who may call it, what its function may touch (the IAM policy),
//! its OpenAPI description (summary, body, query parameters, answers) and its handler. From the
//! entries the macro makes the [`Op`](crate::routes::Op) enum, the `ROUTES` table (which the
//! local server, the Lambda function, the SAM template and the tests read), the dispatch of an
//! operation to its handler, and the OpenAPI entries. The OpenAPI part is code that only the
//! document's generator calls, so the Lambda function, which never does, does not link the
//! schemas.

use crate::access::Access;
use crate::dispatch::App;
use crate::routes::Op;
use im_shared::Error;
use im_shared::service::Service;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A signed-in user: `Authorization: Bearer <JWT>`.
    User,
    /// Anyone, without a token.
    Anyone,
    /// Anyone, on the local server in dev mode only; never a Lambda function.
    DevOnly,
}

#[derive(Debug)]
pub struct Route {
    pub op: Op,
    pub method: http::Method,
    /// A path pattern: `{name}` matches one non-empty segment.
    pub path: &'static str,
    /// The function's name: the Lambda function's `IM_FUNCTION`, the template's resource, the
    /// OpenAPI `operationId` and the log field `op`.
    pub lambda: &'static str,
    pub caller: Caller,
    /// What the operation's function may touch (its IAM policy is made from this).
    pub access: Access,
}

impl Route {
    /// Needs `Authorization: Bearer <JWT>`.
    pub fn auth(&self) -> bool {
        self.caller == Caller::User
    }

    /// Served by the local server in dev mode only, never by a Lambda function.
    pub fn local_only(&self) -> bool {
        self.caller == Caller::DevOnly
    }

    /// The path parameters of `path` if it matches this route's pattern.
    pub fn params(&self, path: &str) -> Option<Vec<(&'static str, String)>> {
        match_path(self.path, trim_slash(path))
    }
}

/// The outcome of looking a request up in the table.
#[derive(Debug)]
pub enum Matched<'a> {
    Route(&'a Route, Vec<(&'static str, String)>),
    /// The path exists, with these other methods.
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

/// Matches `path` against one pattern, returning the path parameters (percent-decoded).
fn match_path(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut params = Vec::new();
    let mut segs = path.split('/');
    for pat in pattern.split('/') {
        let seg = segs.next()?;
        if let Some(name) = pat.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if seg.is_empty() {
                return None;
            }
            params.push((name, percent_decode(seg)?));
        } else if pat != seg {
            return None;
        }
    }
    segs.next().is_none().then_some(params)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `/v1/me/` is `/v1/me`.
fn trim_slash(path: &str) -> &str {
    if path.len() > 1 { path.trim_end_matches('/') } else { path }
}

/// The route of a request in `routes`.
pub fn find(routes: &'static [Route], method: &http::Method, path: &str) -> Matched<'static> {
    let path = trim_slash(path);
    // Only the request's method's routes first: the other methods' matter only for a 405.
    for r in routes.iter().filter(|r| r.method == *method) {
        if let Some(params) = match_path(r.path, path) {
            return Matched::Route(r, params);
        }
    }
    let allowed: Vec<_> =
        routes.iter().filter(|r| match_path(r.path, path).is_some()).map(|r| r.method.as_str()).collect();
    if allowed.is_empty() { Matched::NotFound } else { Matched::MethodNotAllowed(allowed) }
}

/// What a handler gets: the service, the caller, and the request's parameters and body.
pub struct Req<'a> {
    pub app: &'a App,
    pub svc: &'a Service,
    /// The caller's user id; empty on routes without a token.
    pub caller: &'a str,
    /// The `limit` and `cursor` query parameters, which every list takes (read for every route,
    /// so that a malformed `limit` is a `400` wherever it is given).
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub(crate) path: Vec<(&'static str, String)>,
    pub(crate) query: HashMap<String, String>,
    pub(crate) body: &'a [u8],
}

impl Req<'_> {
    /// A path parameter (the route's pattern names it, so it is there).
    pub fn path(&self, name: &str) -> &str {
        self.path.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str())
    }

    /// A query parameter as given (`None` when absent).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    /// An integer query parameter; a value that is not one is a `400`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.query.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| Error::invalid(format!("{name} must be an integer"))),
        }
    }

    /// A text query parameter; empty counts as absent.
    pub fn string(&self, name: &str) -> Option<String> {
        self.query.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// The body as `T` (see [`crate::dispatch::json_body`]).
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, Error> {
        crate::dispatch::json_body(self.body)
    }
}

/// What an operation takes and gives, for its OpenAPI entry.
pub struct OpDoc {
    pub summary: String,
    /// The request body's schema, and whether the body may be left out.
    pub body: Option<(schemars::Schema, bool)>,
    pub query: Vec<serde_json::Value>,
    /// Success statuses, each with its description and its body's schema (`None`: no body).
    pub ok: Vec<(u16, &'static str, Option<schemars::Schema>)>,
    /// Error statuses the operation itself can answer (besides the ones every route can).
    pub errors: &'static [u16],
}

/// Declares the route table: one entry per operation,
///
/// ```text
/// /// The OpenAPI summary (one or more doc lines).
/// OpName: METHOD "/v1/path/{param}" => "function-name" {
///     caller: Anyone,                      // optional: User (the default), Anyone, DevOnly
///     access: tables(&[..reads], &[..writes]),
///     query: vec![..OpenAPI parameters],   // optional
///     body_optional: true,                 // optional: the body may be left out
///     ok: {
///         200 "what it answers": ResponseType,
///         204 "an answer without a body",
///     },
///     errors: [400, 404],                  // what the operation itself can answer
///     run: |r, input: BodyType| expression, // r: &Req; `input` only for a body
/// }
/// ```
///
/// and makes `Op`, `ROUTES`, `run` (an operation's handler) and `doc` (its OpenAPI entry).
macro_rules! declare_routes {
    ($(
        $(#[doc = $summary:literal])+
        $op:ident: $method:ident $path:literal => $name:literal {
            $(caller: $caller:ident,)?
            access: $access:expr,
            $(query: $query:expr,)?
            $(body_optional: $optional:literal,)?
            ok: { $($status:literal $desc:literal $(: $ok:ty)?,)+ },
            errors: [$($err:literal),* $(,)?],
            run: |$r:ident $(, $b:ident: $body:ty)?| $run:expr $(,)?
        }
    )+) => {
        /// Every operation of the API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Op {
            $($op),+
        }

        /// The route table.
        pub const ROUTES: &[Route] = &[$(
            Route {
                op: Op::$op,
                method: http::Method::$method,
                path: $path,
                lambda: $name,
                caller: {
                    #[allow(unused_variables)]
                    let caller = Caller::User;
                    $(let caller = Caller::$caller;)?
                    caller
                },
                access: $access,
            }
        ),+];

        /// Runs an operation's handler.
        pub(crate) async fn run(op: Op, req: &Req<'_>) -> Result<Reply, Error> {
            match op {
                $(Op::$op => {
                    #[allow(unused_variables)]
                    let $r = req;
                    $(let $b: $body = req.body()?;)?
                    $run
                })+
            }
        }

        /// An operation's OpenAPI entry.
        #[allow(unused_variables)]
        pub(crate) fn doc(op: Op, g: &mut schemars::SchemaGenerator) -> OpDoc {
            match op {
                $(Op::$op => OpDoc {
                    summary: [$($summary),+].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" "),
                    body: {
                        let optional = false;
                        $(let optional = $optional;)?
                        let body: Option<(schemars::Schema, bool)> = None;
                        $(let body = Some((g.subschema_for::<$body>(), optional));)?
                        body
                    },
                    query: {
                        let query: Vec<serde_json::Value> = Vec::new();
                        $(let query = $query;)?
                        query
                    },
                    ok: vec![$((
                        $status,
                        $desc,
                        {
                            let schema: Option<schemars::Schema> = None;
                            $(let schema = Some(g.subschema_for::<$ok>());)?
                            schema
                        },
                    )),+],
                    errors: &[$($err),*],
                },)+
            }
        }
    };
}
pub(crate) use declare_routes;

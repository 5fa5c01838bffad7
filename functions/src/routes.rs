//! The route table: every operation of the API, named once. The local server serves all of
//! them; each Lambda function serves one (`lambda` is its name); the SAM template is checked
//! against this table.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Health,
    OpenApi,
    DevToken,
    PutMe,
    GetMe,
    GetUser,
    SendFriendRequest,
    ListFriendRequests,
    AcceptFriendRequest,
    RejectFriendRequest,
    ListFriends,
    RemoveFriend,
    CreateGroup,
    GetGroup,
    UpdateGroup,
    JoinGroup,
    ListJoinRequests,
    AcceptJoinRequest,
    RejectJoinRequest,
    LeaveGroup,
    RemoveMember,
    SetRole,
    ListMembers,
    MyGroups,
    SendMessage,
    History,
    Sync,
    ListConversations,
    MarkRead,
    SearchMessages,
    SearchGroups,
}

#[derive(Debug)]
pub struct Route {
    pub op: Op,
    pub method: Method,
    /// A path pattern: `{name}` matches one non-empty segment.
    pub path: &'static str,
    /// The function's name (the Lambda binary, and the log field `op`).
    pub lambda: &'static str,
    /// Needs `Authorization: Bearer <JWT>`.
    pub auth: bool,
    /// Served by the local server in dev mode only, never by a Lambda function.
    pub local_only: bool,
}

const fn route(op: Op, method: Method, path: &'static str, lambda: &'static str) -> Route {
    Route { op, method, path, lambda, auth: true, local_only: false }
}

/// A route that needs no token.
const fn open(op: Op, method: Method, path: &'static str, lambda: &'static str, local_only: bool) -> Route {
    Route { op, method, path, lambda, auth: false, local_only }
}

pub const ROUTES: &[Route] = &[
    open(Op::Health, Method::GET, "/v1/health", "health", false),
    open(Op::OpenApi, Method::GET, "/v1/openapi.json", "openapi", false),
    open(Op::DevToken, Method::POST, "/v1/dev/token", "dev-token", true),
    route(Op::PutMe, Method::PUT, "/v1/me", "put-me"),
    route(Op::GetMe, Method::GET, "/v1/me", "get-me"),
    route(Op::GetUser, Method::GET, "/v1/users/{user_id}", "get-user"),
    route(Op::SendFriendRequest, Method::POST, "/v1/friend-requests", "send-friend-request"),
    route(Op::ListFriendRequests, Method::GET, "/v1/friend-requests", "list-friend-requests"),
    route(Op::AcceptFriendRequest, Method::POST, "/v1/friend-requests/{from}/accept", "accept-friend-request"),
    route(Op::RejectFriendRequest, Method::POST, "/v1/friend-requests/{from}/reject", "reject-friend-request"),
    route(Op::ListFriends, Method::GET, "/v1/friends", "list-friends"),
    route(Op::RemoveFriend, Method::DELETE, "/v1/friends/{user_id}", "remove-friend"),
    route(Op::CreateGroup, Method::POST, "/v1/groups", "create-group"),
    route(Op::SearchGroups, Method::GET, "/v1/groups", "search-groups"),
    route(Op::GetGroup, Method::GET, "/v1/groups/{group_id}", "get-group"),
    route(Op::UpdateGroup, Method::PATCH, "/v1/groups/{group_id}", "update-group"),
    route(Op::JoinGroup, Method::POST, "/v1/groups/{group_id}/join", "join-group"),
    route(Op::ListJoinRequests, Method::GET, "/v1/groups/{group_id}/join-requests", "list-join-requests"),
    route(
        Op::AcceptJoinRequest,
        Method::POST,
        "/v1/groups/{group_id}/join-requests/{user_id}/accept",
        "accept-join-request",
    ),
    route(
        Op::RejectJoinRequest,
        Method::POST,
        "/v1/groups/{group_id}/join-requests/{user_id}/reject",
        "reject-join-request",
    ),
    route(Op::LeaveGroup, Method::POST, "/v1/groups/{group_id}/leave", "leave-group"),
    route(Op::RemoveMember, Method::DELETE, "/v1/groups/{group_id}/members/{user_id}", "remove-member"),
    route(Op::SetRole, Method::PUT, "/v1/groups/{group_id}/members/{user_id}/role", "set-role"),
    route(Op::ListMembers, Method::GET, "/v1/groups/{group_id}/members", "list-members"),
    route(Op::MyGroups, Method::GET, "/v1/me/groups", "my-groups"),
    route(Op::SendMessage, Method::POST, "/v1/conversations/{conversation_id}/messages", "send-message"),
    route(Op::History, Method::GET, "/v1/conversations/{conversation_id}/messages", "history"),
    route(Op::Sync, Method::GET, "/v1/sync", "sync"),
    route(Op::ListConversations, Method::GET, "/v1/conversations", "list-conversations"),
    route(Op::MarkRead, Method::POST, "/v1/conversations/{conversation_id}/read", "mark-read"),
    route(Op::SearchMessages, Method::GET, "/v1/search/messages", "search-messages"),
];

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

impl Route {
    /// The path parameters of `path` if it matches this route's pattern.
    pub fn params(&self, path: &str) -> Option<Vec<(&'static str, String)>> {
        match_path(self.path, trim_slash(path))
    }
}

/// `/v1/me/` is `/v1/me`.
fn trim_slash(path: &str) -> &str {
    if path.len() > 1 { path.trim_end_matches('/') } else { path }
}

pub fn find(method: &Method, path: &str) -> Matched<'static> {
    let path = trim_slash(path);
    // Only the request's method's routes first: the other methods' matter only for a 405.
    for r in ROUTES.iter().filter(|r| r.method == *method) {
        if let Some(params) = match_path(r.path, path) {
            return Matched::Route(r, params);
        }
    }
    let allowed: Vec<_> =
        ROUTES.iter().filter(|r| match_path(r.path, path).is_some()).map(|r| r.method.as_str()).collect();
    if allowed.is_empty() { Matched::NotFound } else { Matched::MethodNotAllowed(allowed) }
}

pub fn by_op(op: Op) -> &'static Route {
    ROUTES.iter().find(|r| r.op == op).expect("every op has a route")
}

/// The route a function of this name serves.
pub fn by_lambda(name: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.lambda == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_and_lambda_name_appears_once() {
        let mut names: Vec<_> = ROUTES.iter().map(|r| r.lambda).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ROUTES.len());
        let mut pairs: Vec<_> = ROUTES.iter().map(|r| (r.method.as_str(), r.path)).collect();
        pairs.sort();
        pairs.dedup();
        assert_eq!(pairs.len(), ROUTES.len());
    }

    #[test]
    fn paths_match_with_parameters() {
        match find(&Method::POST, "/v1/groups/g_1/join-requests/bob%40x/accept") {
            Matched::Route(r, p) => {
                assert_eq!(r.op, Op::AcceptJoinRequest);
                assert_eq!(p, vec![("group_id", "g_1".to_string()), ("user_id", "bob@x".to_string())]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(find(&Method::DELETE, "/v1/me"), Matched::MethodNotAllowed(m) if m == ["PUT", "GET"]));
        assert!(matches!(find(&Method::GET, "/v1/nope"), Matched::NotFound));
        assert!(matches!(find(&Method::GET, "/v1/users/"), Matched::NotFound));
        assert!(matches!(find(&Method::GET, "/v1/users/a/b"), Matched::NotFound));
        assert!(matches!(find(&Method::GET, "/v1/users/%zz"), Matched::NotFound));
    }
}

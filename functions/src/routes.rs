//! The route table: every operation of the API, named once, with all that belongs to it (see
//! [`declare_routes!`] for the form of an entry and what is made from it). The local server
//! serves every route; each Lambda function serves one, the one its `IM_FUNCTION` names; the
//! SAM template, the IAM policies, the OpenAPI document and the authorization matrix derive
//! from this table.
//!
//! Adding an operation: an entry here, its method on the service, its tests (the authorization
//! matrix in `tests/authz.rs` does not compile until it says who is refused), and its docs
//! (`docs/api.md`); then `cargo test` regenerates `openapi.json` and `template.yaml`.

use crate::access::{Access, SearchUse, tables};
use crate::bodies::*;
use crate::dispatch::{Reply, no_content, reply};
use crate::openapi::params::{int_param, limit, list, phrase};
use crate::routing::{Caller, OpDoc, Req, Route, declare_routes};
use http::StatusCode as S;
use im_shared::Error;
use im_shared::ids::validate_user_id;
use im_shared::model::*;
use im_shared::queue::names::FANOUT;
use im_shared::schema::*;
use im_shared::service::friends::{Direction, RequestOutcome};
use im_shared::service::groups::{CreateGroupInput, UpdateGroupInput};
use im_shared::service::limits;
use im_shared::service::messages::SendInput;
use im_shared::service::users::ProfileInput;

/// What the functions that leave or change memberships read to tell the members' devices.
const NOTICE_READS: &[&TableDef] = &[&INBOXES, &DELIVERIES, &GROUP_RELATIONS, &META];

declare_routes! {
    /// Liveness, no token needed
    Health: GET "/v1/health" => "health" {
        caller: Anyone,
        access: tables(&[], &[]),
        ok: {
            200 "up": Health,
        },
        errors: [],
        run: |r| reply(S::OK, Health { status: "ok", version: env!("CARGO_PKG_VERSION") }),
    }

    /// This document
    OpenApi: GET "/v1/openapi.json" => "openapi" {
        caller: Anyone,
        access: tables(&[], &[]),
        ok: {
            200 "the OpenAPI 3 document": AnyObject,
        },
        errors: [],
        // The checked-in document, which a test keeps equal to what `openapi::document()`
        // generates: generating it here would link schemars and every type's schema into the
        // Lambda function, about 0.1 MB of its zip (docs/performance.md, "Lambda packaging").
        run: |r| Ok(Reply::json(S::OK, crate::openapi::CHECKED_IN.as_bytes())),
    }

    /// A token for any user (local server in dev mode only; never on AWS)
    DevToken: POST "/v1/dev/token" => "dev-token" {
        caller: DevOnly,
        access: tables(&[], &[]),
        ok: {
            200 "a signed token": Token,
        },
        errors: [400],
        run: |r, b: DevTokenBody| {
            validate_user_id(&b.user_id)?;
            reply(S::OK, Token { token: r.app.auth.issue(&b.user_id, r.app.cfg.dev_token_ttl_secs)? })
        },
    }

    /// Create or update the caller's profile
    PutMe: PUT "/v1/me" => "put-me" {
        access: tables(&[&USERS], &[&USERS]),
        ok: {
            200 "the profile": User,
        },
        errors: [400],
        run: |r, input: ProfileInput| reply(S::OK, r.svc.put_me(r.caller, input).await?),
    }

    /// The caller's profile
    GetMe: GET "/v1/me" => "get-me" {
        access: tables(&[&USERS], &[]),
        ok: {
            200 "the profile": User,
        },
        errors: [404],
        run: |r| reply(S::OK, r.svc.get_me(r.caller).await?),
    }

    /// A user's profile
    GetUser: GET "/v1/users/{user_id}" => "get-user" {
        access: tables(&[&USERS], &[]),
        ok: {
            200 "the profile": User,
        },
        errors: [400, 404],
        run: |r| reply(S::OK, r.svc.get_user(r.path("user_id")).await?),
    }

    /// Ask a user to be friends (if they had asked the caller, both become friends at once)
    SendFriendRequest: POST "/v1/friend-requests" => "send-friend-request" {
        access: tables(
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &CONVERSATIONS, &META],
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        ok: {
            201 "a pending request": FriendRequest,
            200 "now friends": Friendship,
        },
        errors: [400, 404, 409],
        run: |r, b: FriendRequestBody| match r.svc.request_friend(r.caller, &b.to, b.message).await? {
            RequestOutcome::Pending(request) => reply(S::CREATED, request),
            RequestOutcome::Friends(friendship) => reply(S::OK, friendship),
        },
    }

    /// Pending friend requests
    ListFriendRequests: GET "/v1/friend-requests" => "list-friend-requests" {
        access: tables(&[&FRIEND_REQUESTS], &[]),
        query: {
            let mut q = list(limits::LIST);
            q.push(serde_json::json!({"name": "direction", "in": "query", "required": false,
                "schema": {"type": "string", "enum": ["incoming", "outgoing"], "default": "incoming"}}));
            q
        },
        ok: {
            200 "a page": List<FriendRequest>,
        },
        errors: [400],
        run: |r| {
            // An empty value is not a direction (unlike an empty cursor, which is the first page).
            let direction = match r.query("direction") {
                None | Some("incoming") => Direction::Incoming,
                Some("outgoing") => Direction::Outgoing,
                Some(_) => return Err(Error::invalid("direction must be incoming or outgoing")),
            };
            reply(S::OK, r.svc.list_friend_requests(r.caller, direction, r.limit, r.cursor.clone()).await?)
        },
    }

    /// Accept a friend request
    AcceptFriendRequest: POST "/v1/friend-requests/{from}/accept" => "accept-friend-request" {
        access: tables(
            &[&FRIEND_REQUESTS, &INBOXES, &CONVERSATIONS, &META],
            &[&USERS, &USER_RELATIONS, &FRIEND_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        ok: {
            200 "the friendship": Friendship,
        },
        errors: [400, 404, 409],
        run: |r| reply(S::OK, r.svc.accept_friend(r.caller, r.path("from")).await?),
    }

    /// Reject a friend request
    RejectFriendRequest: POST "/v1/friend-requests/{from}/reject" => "reject-friend-request" {
        access: tables(&[], &[&FRIEND_REQUESTS]),
        ok: {
            204 "rejected",
        },
        errors: [400, 404],
        run: |r| {
            r.svc.reject_friend(r.caller, r.path("from")).await?;
            no_content()
        },
    }

    /// The caller's friends
    ListFriends: GET "/v1/friends" => "list-friends" {
        access: tables(&[&USER_RELATIONS, &USERS], &[]),
        query: list(limits::LIST),
        ok: {
            200 "a page": List<Friend>,
        },
        errors: [400],
        run: |r| reply(S::OK, r.svc.list_friends(r.caller, r.limit, r.cursor.clone()).await?),
    }

    /// End a friendship on both sides
    RemoveFriend: DELETE "/v1/friends/{user_id}" => "remove-friend" {
        access: tables(&[&INBOXES], &[&USERS, &USER_RELATIONS, &INBOXES, &SYNC, &DELIVERIES]),
        ok: {
            204 "ended",
        },
        errors: [400, 404],
        run: |r| {
            r.svc.remove_friend(r.caller, r.path("user_id")).await?;
            no_content()
        },
    }

    /// Create a group; the caller is its owner, listed members join at once
    CreateGroup: POST "/v1/groups" => "create-group" {
        access: tables(
            &[&USERS, &INBOXES, &DELIVERIES],
            &[&USERS, &META, &GROUP_RELATIONS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS],
        ),
        ok: {
            201 "the group": Group,
        },
        errors: [400, 404, 409],
        run: |r, input: CreateGroupInput| reply(S::CREATED, r.svc.create_group(r.caller, input).await?),
    }

    /// Search groups by name
    SearchGroups: GET "/v1/groups" => "search-groups" {
        access: Access { search: SearchUse::Query, ..tables(&[&META], &[]) },
        query: {
            let mut q = list(limits::SEARCH);
            q.insert(0, phrase());
            q
        },
        ok: {
            200 "a page of groups": List<Group>,
        },
        errors: [400],
        run: |r| reply(S::OK, r.svc.search_groups(r.string("q"), r.limit, r.cursor.clone()).await?),
    }

    /// A group
    GetGroup: GET "/v1/groups/{group_id}" => "get-group" {
        access: tables(&[&META], &[]),
        ok: {
            200 "the group": Group,
        },
        errors: [400, 404],
        run: |r| reply(S::OK, r.svc.get_group(r.path("group_id")).await?),
    }

    /// Change a group's name, description or join policy (owner or admin)
    UpdateGroup: PATCH "/v1/groups/{group_id}" => "update-group" {
        access: Access { sends: &[FANOUT], ..tables(&[&META, &GROUP_RELATIONS], &[&META]) },
        ok: {
            200 "the group": Group,
        },
        errors: [400, 403, 404],
        run: |r, input: UpdateGroupInput| reply(S::OK, r.svc.update_group(r.caller, r.path("group_id"), input).await?),
    }

    /// Join an open group, or ask to join an approval group
    JoinGroup: POST "/v1/groups/{group_id}/join" => "join-group" {
        access: tables(
            &[&USERS, &META, &GROUP_RELATIONS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&USERS, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        body_optional: true,
        ok: {
            200 "joined": Member,
            202 "a pending request": JoinRequest,
        },
        errors: [400, 404, 409],
        run: |r, b: MessageBody| match r.svc.join_group(r.caller, r.path("group_id"), b.message).await? {
            JoinOutcome::Joined(member) => reply(S::OK, member),
            JoinOutcome::Pending(request) => reply(S::ACCEPTED, request),
        },
    }

    /// Pending join requests (owner or admin)
    ListJoinRequests: GET "/v1/groups/{group_id}/join-requests" => "list-join-requests" {
        access: tables(&[&META, &GROUP_RELATIONS, &JOIN_REQUESTS], &[]),
        query: list(limits::LIST),
        ok: {
            200 "a page": List<JoinRequest>,
        },
        errors: [400, 403, 404],
        run: |r| reply(S::OK, r.svc.list_join_requests(r.caller, r.path("group_id"), r.limit, r.cursor.clone()).await?),
    }

    /// Accept a join request (owner or admin)
    AcceptJoinRequest: POST "/v1/groups/{group_id}/join-requests/{user_id}/accept" => "accept-join-request" {
        access: tables(
            &[&META, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &DELIVERIES, &CONVERSATIONS],
            &[&USERS, &GROUP_RELATIONS, &JOIN_REQUESTS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META],
        ),
        ok: {
            200 "the new member": Member,
        },
        errors: [400, 403, 404, 409],
        run: |r| reply(S::OK, r.svc.accept_join(r.caller, r.path("group_id"), r.path("user_id")).await?),
    }

    /// Reject a join request (owner or admin)
    RejectJoinRequest: POST "/v1/groups/{group_id}/join-requests/{user_id}/reject" => "reject-join-request" {
        access: tables(&[&META, &GROUP_RELATIONS], &[&JOIN_REQUESTS]),
        ok: {
            204 "rejected",
        },
        errors: [400, 403, 404],
        run: |r| {
            r.svc.reject_join(r.caller, r.path("group_id"), r.path("user_id")).await?;
            no_content()
        },
    }

    /// Leave a group (the owner cannot while others remain)
    LeaveGroup: POST "/v1/groups/{group_id}/leave" => "leave-group" {
        access: tables(NOTICE_READS, &[&USERS, &GROUP_RELATIONS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META]),
        ok: {
            204 "left",
        },
        errors: [400, 404, 409],
        run: |r| {
            r.svc.leave_group(r.caller, r.path("group_id")).await?;
            no_content()
        },
    }

    /// Remove a member (owner or admin)
    RemoveMember: DELETE "/v1/groups/{group_id}/members/{user_id}" => "remove-member" {
        access: tables(NOTICE_READS, &[&USERS, &GROUP_RELATIONS, &INBOXES, &SYNC, &DELIVERIES, &CONVERSATIONS, &META]),
        ok: {
            204 "removed",
        },
        errors: [400, 403, 404, 409],
        run: |r| {
            r.svc.remove_member(r.caller, r.path("group_id"), r.path("user_id")).await?;
            no_content()
        },
    }

    /// Make a member an admin or a plain member (owner only)
    SetRole: PUT "/v1/groups/{group_id}/members/{user_id}/role" => "set-role" {
        access: tables(&[&META, &GROUP_RELATIONS], &[&META, &GROUP_RELATIONS]),
        ok: {
            200 "the member": Member,
        },
        errors: [400, 403, 404, 409],
        run: |r, b: RoleBody| reply(S::OK, r.svc.set_role(r.caller, r.path("group_id"), r.path("user_id"), b.role).await?),
    }

    /// A group's members (members only)
    ListMembers: GET "/v1/groups/{group_id}/members" => "list-members" {
        access: tables(&[&META, &GROUP_RELATIONS], &[]),
        query: list(limits::LIST),
        ok: {
            200 "a page": List<Member>,
        },
        errors: [400, 403, 404],
        run: |r| reply(S::OK, r.svc.list_members(r.caller, r.path("group_id"), r.limit, r.cursor.clone()).await?),
    }

    /// The caller's groups
    MyGroups: GET "/v1/me/groups" => "my-groups" {
        access: tables(&[&META, &GROUP_RELATIONS], &[]),
        query: list(limits::LIST),
        ok: {
            200 "a page": List<Group>,
        },
        errors: [400],
        run: |r| reply(S::OK, r.svc.my_groups(r.caller, r.limit, r.cursor.clone()).await?),
    }

    /// Send a message (a retry with the same client_msg_id returns the first result)
    SendMessage: POST "/v1/conversations/{conversation_id}/messages" => "send-message" {
        access: Access {
            sends: &[FANOUT],
            ..tables(
                &[&META, &USER_RELATIONS, &GROUP_RELATIONS, &SENDS, &STORE, &OUTBOX, &INBOXES, &CONVERSATIONS],
                &[&STORE, &SENDS, &OUTBOX, &INBOXES, &SYNC, &CONVERSATIONS, &META],
            )
        },
        ok: {
            201 "sent": Message,
            200 "a retry: the first result": Message,
        },
        errors: [400, 403, 404, 409, 413],
        run: |r, input: SendInput| {
            let sent = r.svc.send(r.caller, r.path("conversation_id"), input).await?;
            reply(if sent.created { S::CREATED } else { S::OK }, sent.message)
        },
    }

    /// A conversation's messages, newest first
    History: GET "/v1/conversations/{conversation_id}/messages" => "history" {
        access: tables(&[&META, &GROUP_RELATIONS, &STORE], &[]),
        query: vec![
            int_param("before", "messages with a seq below this (default: from the latest)", 1),
            limit(limits::HISTORY.1, limits::HISTORY.0),
        ],
        ok: {
            200 "a page": HistoryPage,
        },
        errors: [400, 403, 404],
        run: |r| reply(S::OK, r.svc.history(r.caller, r.path("conversation_id"), r.int("before")?, r.limit).await?),
    }

    /// The caller's inbox after a checkpoint
    Sync: GET "/v1/sync" => "sync" {
        access: tables(&[&INBOXES, &SYNC], &[]),
        query: vec![
            int_param("after", "the checkpoint: entries with a higher sync_seq", 0),
            limit(limits::SYNC.1, limits::SYNC.0),
        ],
        ok: {
            200 "a page": SyncPage,
        },
        errors: [400],
        run: |r| reply(S::OK, r.svc.sync(r.caller, r.int("after")?, r.limit).await?),
    }

    /// The caller's conversations, most recent activity first, with unread counts
    ListConversations: GET "/v1/conversations" => "list-conversations" {
        access: tables(&[&CONVERSATIONS, &META, &USERS], &[]),
        query: list(limits::LIST),
        ok: {
            200 "a page": List<ConversationSummary>,
        },
        errors: [400],
        run: |r| reply(S::OK, r.svc.list_conversations(r.caller, r.limit, r.cursor.clone()).await?),
    }

    /// Mark a conversation read up to a seq (default: the latest)
    MarkRead: POST "/v1/conversations/{conversation_id}/read" => "mark-read" {
        access: tables(&[&CONVERSATIONS, &META, &GROUP_RELATIONS, &USERS], &[&CONVERSATIONS]),
        body_optional: true,
        ok: {
            200 "the conversation's summary": ConversationSummary,
        },
        errors: [400, 403, 404],
        run: |r, b: ReadBody| reply(S::OK, r.svc.mark_read(r.caller, r.path("conversation_id"), b.seq).await?),
    }

    /// Search the messages of the caller's conversations
    SearchMessages: GET "/v1/search/messages" => "search-messages" {
        access: Access { search: SearchUse::Query, ..tables(&[&CONVERSATIONS, &STORE], &[]) },
        query: {
            let mut q = list(limits::SEARCH);
            q.insert(0, phrase());
            q.insert(1, serde_json::json!({"name": "conversation_id", "in": "query", "required": false,
                "description": "search only this conversation, which the caller must be in (empty or absent: all of theirs)",
                "schema": {"type": "string", "maxLength": 64}}));
            q
        },
        ok: {
            200 "a page": List<Message>,
        },
        errors: [400, 403, 404],
        run: |r| {
            let (q, conversation) = (r.string("q"), r.string("conversation_id"));
            reply(S::OK, r.svc.search_messages(r.caller, q, conversation, r.limit, r.cursor.clone()).await?)
        },
    }
}

/// The route of a request.
pub fn find(method: &http::Method, path: &str) -> crate::routing::Matched<'static> {
    crate::routing::find(ROUTES, method, path)
}

/// The route a function of this name serves (for tests, which name the functions they call).
#[cfg(test)]
pub fn by_lambda(name: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.lambda == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Matched;
    use http::Method;

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

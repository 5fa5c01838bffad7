//! Friendship with consent. Every change is one transaction that writes both directions of
//! `user_relations` (never A→B without B→A) together with the inbox events that report it.
//!
//! Two users asking each other at the same moment: a request is written only on condition that
//! the reverse request does not exist, so of two crossing requests one commits and the other
//! fails its condition, sees the reverse request, and accepts it instead.

use super::inbox::Payload;
use super::users::{FRIEND_COUNT, count_down, count_up};
use super::*;
use crate::ids::{single_conversation_id, validate_user_id};
use crate::model::{EntryKind, Friend, FriendRequest, Friendship, List};
use crate::notify::Notice;
use crate::schema::{FRIEND_REQUESTS, FRIEND_REQUESTS_OUTGOING, META, USER_RELATIONS};
use crate::tables::{Cond, Key, Query, TxOp};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RelationRow {
    main_user: String,
    sub_user: String,
    conversation_id: String,
    since: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RequestRow {
    to_user: String,
    from_user: String,
    message: Option<String>,
    created_at: i64,
}

impl From<RequestRow> for FriendRequest {
    fn from(r: RequestRow) -> Self {
        FriendRequest {
            from: r.from_user,
            to: r.to_user,
            message: r.message,
            created_at: r.created_at,
            status: "pending".into(),
        }
    }
}

/// What a friend request did.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestOutcome {
    Pending(FriendRequest),
    /// The other side had already asked: both are friends now.
    Friends(Friendship),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Service {
    /// Inbox appends of one event per user, as writes of a larger transaction, and the notices
    /// to send once it commits.
    async fn event_ops(&self, events: Vec<(String, Payload)>) -> Result<(Vec<TxOp>, Vec<Notice>)> {
        let users: Vec<String> = events.iter().map(|(u, _)| u.clone()).collect();
        let counters = self.inbox_counters(&users).await?;
        let ops = events.iter().zip(&counters).flat_map(|((u, p), c)| self.entry_ops(u, c.as_ref(), p)).collect();
        let notices = events.iter().zip(&counters).map(|((u, p), c)| p.notice(u, c.as_ref())).collect();
        Ok((ops, notices))
    }

    /// `POST /v1/friend-requests`.
    pub async fn request_friend(&self, caller: &str, to: &str, message: Option<String>) -> Result<RequestOutcome> {
        validate_user_id(to)?;
        if to == caller {
            return Err(Error::invalid("you cannot befriend yourself"));
        }
        check_len("message", &message, 500)?;
        self.require_caller(caller).await?;
        self.require_user(to).await?;
        let mut backoff = Backoff::new();
        loop {
            let row = RequestRow {
                to_user: to.into(),
                from_user: caller.into(),
                message: message.clone(),
                created_at: crate::time::now_ms(),
            };
            let event = Payload::event(
                EntryKind::FriendRequest,
                None,
                serde_json::to_value(FriendRequest::from(row.clone())).unwrap_or_default(),
            );
            let mut ops = vec![
                TxOp::check(&USER_RELATIONS, Key::pk_sk(caller, to), Cond::NotExists),
                TxOp::check(&FRIEND_REQUESTS, Key::pk_sk(caller, to), Cond::NotExists),
                TxOp::put(&FRIEND_REQUESTS, to_item(&row), Cond::NotExists),
            ];
            let (appends, notices) = self.event_ops(vec![(to.to_string(), event)]).await?;
            ops.extend(appends);
            match self.tables.transact(ops).await {
                Ok(()) => {
                    self.notifier.notify(notices).await;
                    return Ok(RequestOutcome::Pending(row.into()));
                }
                Err(e) => match conflict_at(&e) {
                    Some(Some(0)) => return Err(Error::conflict(format!("you are already friends with {to}"))),
                    Some(Some(1)) => return self.accept_friend(caller, to).await.map(RequestOutcome::Friends),
                    Some(Some(2)) => return Err(Error::conflict(format!("a request to {to} is already pending"))),
                    Some(_) => backoff.wait("friend request").await?,
                    None => return Err(e.into()),
                },
            }
        }
    }

    /// `POST /v1/friend-requests/{from}/accept`.
    pub async fn accept_friend(&self, caller: &str, from: &str) -> Result<Friendship> {
        validate_user_id(from)?;
        let conversation_id = single_conversation_id(caller, from);
        let mut backoff = Backoff::new();
        loop {
            if self.tables.get(&FRIEND_REQUESTS, &Key::pk_sk(caller, from)).await?.is_none() {
                return Err(Error::not_found(format!("no pending friend request from {from}")));
            }
            let since = crate::time::now_ms();
            let rel = |a: &str, b: &str| RelationRow {
                main_user: a.into(),
                sub_user: b.into(),
                conversation_id: conversation_id.clone(),
                since,
            };
            let mut ops = vec![
                TxOp::delete(&FRIEND_REQUESTS, Key::pk_sk(caller, from), Cond::Exists),
                TxOp::put(&USER_RELATIONS, to_item(&rel(caller, from)), Cond::NotExists),
                TxOp::put(&USER_RELATIONS, to_item(&rel(from, caller)), Cond::NotExists),
                // Indexes 3 and 4: the limits, which the error below names.
                count_up(caller, FRIEND_COUNT, self.cfg.max_friends_per_user),
                count_up(from, FRIEND_COUNT, self.cfg.max_friends_per_user),
            ];
            // The single chat's meta row is made once per pair and kept: a re-friend finds the
            // same history.
            let seen_up_to = match self.find_meta(&conversation_id).await? {
                Some(m) => m.last_seq,
                None => {
                    let meta = super::rows::MetaRow {
                        participants: vec![caller.to_string(), from.to_string()],
                        created_at: since,
                        ..super::rows::MetaRow::new(conversation_id.clone(), crate::ids::ConvKind::Single)
                    };
                    ops.push(TxOp::put(&META, to_item(&meta), Cond::NotExists));
                    0
                }
            };
            let people = [(caller.to_string(), Some(from.to_string())), (from.to_string(), Some(caller.to_string()))];
            ops.extend(self.new_summary_ops(&people, &conversation_id, seen_up_to).await?);
            let added = |other: &str| {
                Payload::event(
                    EntryKind::FriendAdded,
                    Some(conversation_id.clone()),
                    json!({"user_id": other, "conversation_id": conversation_id, "since": since}),
                )
            };
            let (appends, notices) =
                self.event_ops(vec![(caller.to_string(), added(from)), (from.to_string(), added(caller))]).await?;
            ops.extend(appends);
            match self.tables.transact(ops).await {
                Ok(()) => {
                    tracing::info!(a = caller, b = from, "friendship made");
                    self.notifier.notify(notices).await;
                    return Ok(Friendship { user_id: from.to_string(), conversation_id, since });
                }
                Err(e) => match conflict_at(&e) {
                    Some(Some(3)) => return Err(self.too_many_friends("you have")),
                    Some(Some(4)) => return Err(self.too_many_friends(&format!("{from} has"))),
                    Some(_) => backoff.wait("friendship").await?,
                    None => return Err(e.into()),
                },
            }
        }
    }

    fn too_many_friends(&self, who_has: &str) -> Error {
        let max = self.cfg.max_friends_per_user;
        Error::conflict(format!("{who_has} {max} friends already, the most one user may have"))
    }

    /// `POST /v1/friend-requests/{from}/reject`.
    pub async fn reject_friend(&self, caller: &str, from: &str) -> Result<()> {
        validate_user_id(from)?;
        match self.tables.delete(&FRIEND_REQUESTS, &Key::pk_sk(caller, from), Cond::Exists).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::not_found(format!("no pending friend request from {from}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// `GET /v1/friend-requests?direction=`.
    pub async fn list_friend_requests(
        &self,
        caller: &str,
        direction: Direction,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<FriendRequest>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        let q = match direction {
            Direction::Incoming => Query::new(&FRIEND_REQUESTS, caller),
            Direction::Outgoing => Query::new(&FRIEND_REQUESTS, caller).index(FRIEND_REQUESTS_OUTGOING),
        };
        let page = self.tables.query(q.limit(limit).cursor(cursor)).await?;
        let items =
            page.items.into_iter().map(|i| from_item::<RequestRow>(i).map(Into::into)).collect::<Result<_>>()?;
        Ok(List { items, next_cursor: page.cursor })
    }

    /// `GET /v1/friends`.
    pub async fn list_friends(&self, caller: &str, limit: Option<i64>, cursor: Option<String>) -> Result<List<Friend>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        let page = self.tables.query(Query::new(&USER_RELATIONS, caller).limit(limit).cursor(cursor)).await?;
        let rows: Vec<RelationRow> = page.items.into_iter().map(from_item).collect::<Result<_>>()?;
        let names = self.names_of(&rows.iter().map(|r| r.sub_user.clone()).collect::<Vec<_>>()).await?;
        let items = rows
            .into_iter()
            .map(|r| Friend {
                name: names.get(&r.sub_user).cloned().unwrap_or_default(),
                user_id: r.sub_user,
                conversation_id: r.conversation_id,
                since: r.since,
            })
            .collect();
        Ok(List { items, next_cursor: page.cursor })
    }

    /// `DELETE /v1/friends/{user_id}`: both directions at once.
    pub async fn remove_friend(&self, caller: &str, other: &str) -> Result<()> {
        validate_user_id(other)?;
        if other == caller {
            // Found by fuzzing: it used to reach a transaction naming one item twice (a 500).
            return Err(Error::invalid("you cannot unfriend yourself"));
        }
        let mut backoff = Backoff::new();
        loop {
            let removed = |u: &str| {
                Payload::event(
                    EntryKind::FriendRemoved,
                    Some(single_conversation_id(caller, other)),
                    json!({"user_id": u}),
                )
            };
            let mut ops = vec![
                TxOp::delete(&USER_RELATIONS, Key::pk_sk(caller, other), Cond::Exists),
                TxOp::delete(&USER_RELATIONS, Key::pk_sk(other, caller), Cond::Exists),
                count_down(caller, FRIEND_COUNT),
                count_down(other, FRIEND_COUNT),
            ];
            let (appends, notices) = self
                .event_ops(vec![(caller.to_string(), removed(other)), (other.to_string(), removed(caller))])
                .await?;
            ops.extend(appends);
            match self.tables.transact(ops).await {
                Ok(()) => {
                    tracing::info!(a = caller, b = other, "friendship ended");
                    self.notifier.notify(notices).await;
                    return Ok(());
                }
                Err(e) => match conflict_at(&e) {
                    Some(Some(0 | 1)) => return Err(Error::not_found(format!("you are not friends with {other}"))),
                    Some(_) => backoff.wait("unfriend").await?,
                    None => return Err(e.into()),
                },
            }
        }
    }
}

//! Groups: roles (owner, admin, member), join policies and join requests, membership.
//!
//! Membership rows and the group's `member_count` change in one transaction, with the limit on
//! members as its condition. The meta row keeps the list of admins (so a join request can be
//! announced to them without scanning the members), updated under the row's `version`.

use super::inbox::Payload;
use super::rows::{IndexJob, MemberRow, MetaRow, SummaryRow};
use super::users::{GROUP_COUNT, count_down, count_up};
use super::*;
use crate::ids::{ConvKind, char_len, new_group_id, validate_group_id, validate_user_id};
use crate::model::{EntryKind, Group, JoinOutcome, JoinPolicy, JoinRequest, List, Member, Role};
use crate::schema::{CONVERSATIONS, GROUP_RELATIONS, GROUP_RELATIONS_BY_USER, JOIN_REQUESTS, META};
use crate::tables::{Cond, Key, Query, TxOp, Update};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JoinRequestRow {
    group_id: String,
    user_id: String,
    message: Option<String>,
    created_at: i64,
}

impl From<JoinRequestRow> for JoinRequest {
    fn from(r: JoinRequestRow) -> Self {
        JoinRequest {
            group_id: r.group_id,
            user_id: r.user_id,
            message: r.message,
            created_at: r.created_at,
            status: "pending".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct CreateGroupInput {
    /// 1-100 characters, not blank.
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(max = 1000))]
    pub description: Option<String>,
    pub join_policy: JoinPolicy,
    /// Users who join at once (each must have a profile); at most 30, the rest join later.
    #[schemars(length(max = 30), inner(regex(pattern = "^[A-Za-z0-9_.@-]{1,64}$")))]
    pub members: Option<Vec<String>>,
}

/// At least one field; a field that is absent or null is left as it is.
#[derive(Debug, Clone, Deserialize, Default, schemars::JsonSchema)]
#[schemars(extend("minProperties" = 1))]
pub struct UpdateGroupInput {
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: Option<String>,
    #[schemars(length(max = 1000))]
    pub description: Option<String>,
    pub join_policy: Option<JoinPolicy>,
}

fn check_group_name(name: &str) -> Result<()> {
    let n = char_len(name);
    if n == 0 || n > 100 || name.trim().is_empty() {
        return Err(Error::invalid("name must be 1-100 characters and not blank"));
    }
    Ok(())
}

fn group_view(m: MetaRow) -> Group {
    Group {
        group_id: m.timeline_id,
        name: m.name.unwrap_or_default(),
        description: m.description.unwrap_or_default(),
        owner: m.owner.unwrap_or_default(),
        join_policy: m.join_policy.unwrap_or(JoinPolicy::Open),
        member_count: m.member_count,
        created_at: m.created_at,
    }
}

impl Service {
    async fn require_group(&self, group_id: &str) -> Result<MetaRow> {
        validate_group_id(group_id)?;
        match self.find_meta(group_id).await? {
            Some(m) if m.kind == ConvKind::Group => Ok(m),
            _ => Err(Error::not_found(format!("group {group_id} not found"))),
        }
    }

    async fn member_row(&self, group_id: &str, user: &str) -> Result<Option<MemberRow>> {
        opt_from_item(self.tables.get(&GROUP_RELATIONS, &Key::pk_sk(group_id, user)).await?)
    }

    /// The caller's membership, if their role is at least `min`; else `403`.
    async fn require_role(&self, group_id: &str, caller: &str, min: Role) -> Result<MemberRow> {
        match self.member_row(group_id, caller).await? {
            Some(m) if m.role >= min => Ok(m),
            Some(_) => Err(Error::denied(match min {
                Role::Owner => "only the group's owner may do this",
                _ => "only the group's owner or an admin may do this",
            })),
            None => Err(Error::denied("you are not a member of this group")),
        }
    }

    /// Writes that add `user` to the group: the member row, the group's count (within the
    /// group's limit), the user's count of groups (within theirs), and the conversation summary.
    async fn add_member_ops(&self, meta: &MetaRow, user: &str, role: Role, now: i64) -> Result<(MemberRow, Vec<TxOp>)> {
        let row = MemberRow {
            group_id: meta.timeline_id.clone(),
            user_id: user.into(),
            role,
            joined_at: now,
            joined_seq: meta.last_seq,
        };
        let mut ops = vec![
            TxOp::put(&GROUP_RELATIONS, to_item(&row), Cond::NotExists),
            TxOp::update(
                &META,
                Key::pk(meta.timeline_id.as_str()),
                Update::new().add("member_count", 1),
                Cond::LessThan("member_count".into(), self.cfg.max_group_members),
            ),
            count_up(user, GROUP_COUNT, self.cfg.max_groups_per_user),
        ];
        // A stale summary of an earlier membership is replaced: unread starts afresh.
        let stale = self.summaries_of(&[user.to_string()], &meta.timeline_id).await?.remove(0).map(|s| s.version);
        let summary = SummaryRow::new(user, &meta.timeline_id, None, meta.last_seq, now);
        ops.push(SummaryRow::write_op(summary, stale));
        Ok((row, ops))
    }

    /// Writes that remove a member: the row, the counts, the admin list, the summary.
    fn remove_member_ops(meta: &MetaRow, member: &MemberRow) -> Vec<TxOp> {
        let gid = meta.timeline_id.as_str();
        let mut update = Update::new().add("member_count", -1);
        let mut cond = Cond::Exists;
        if member.role == Role::Admin {
            let admins: Vec<&String> = meta.admins.iter().filter(|a| **a != member.user_id).collect();
            update = update.set("admins", json!(admins)).set("version", meta.version + 1);
            cond = Cond::equals("version", meta.version);
        }
        vec![
            TxOp::delete(&GROUP_RELATIONS, Key::pk_sk(gid, member.user_id.as_str()), Cond::Exists),
            TxOp::update(&META, Key::pk(gid), update, cond),
            TxOp::delete(&CONVERSATIONS, Key::pk_sk(member.user_id.as_str(), gid), Cond::Always),
            count_down(&member.user_id, GROUP_COUNT),
        ]
    }

    /// Best effort: the group is committed; if its index job is lost, `im-server reindex`
    /// rebuilds the index from the tables.
    async fn index_group(&self, group_id: &str) {
        if let Err(e) = self.enqueue_index(&[IndexJob::group(group_id)]).await {
            tracing::warn!(group_id, error = %e, "could not enqueue the group's index job");
        }
    }

    /// Best-effort notices: the change is committed; a lost notice is logged.
    async fn notify(&self, users: &[String], payload: Payload) {
        if let Err(e) = self.deliver_to(users, &payload, None).await {
            tracing::warn!(error = %e, "could not deliver a group notice");
        }
    }

    /// `POST /v1/groups`.
    pub async fn create_group(&self, caller: &str, input: CreateGroupInput) -> Result<Group> {
        check_group_name(&input.name)?;
        check_len("description", &input.description, 1000)?;
        let mut members: Vec<String> = Vec::new();
        for m in input.members.unwrap_or_default() {
            validate_user_id(&m)?;
            if m != caller && !members.contains(&m) {
                members.push(m);
            }
        }
        if members.len() > self.cfg.max_create_members {
            return Err(Error::invalid(format!(
                "at most {} members may be named at creation; others can join afterwards",
                self.cfg.max_create_members
            )));
        }
        if members.len() as i64 + 1 > self.cfg.max_group_members {
            return Err(Error::conflict(format!(
                "a group has at most {} members, the owner included",
                self.cfg.max_group_members
            )));
        }
        self.require_caller(caller).await?;
        let names = self.names_of(&members).await?;
        if let Some(missing) = members.iter().find(|m| !names.contains_key(*m)) {
            return Err(Error::not_found(format!("user {missing} not found")));
        }
        let now = crate::time::now_ms();
        let group_id = new_group_id();
        let meta = MetaRow {
            name: Some(input.name),
            description: Some(input.description.unwrap_or_default()),
            owner: Some(caller.into()),
            join_policy: Some(input.join_policy),
            member_count: members.len() as i64 + 1,
            created_at: now,
            ..MetaRow::new(group_id.clone(), ConvKind::Group)
        };
        let mut ops = vec![TxOp::put(&META, to_item(&meta), Cond::NotExists)];
        let everyone: Vec<String> = std::iter::once(caller.to_string()).chain(members.iter().cloned()).collect();
        // Which user's group count each write is, to name who is at their limit.
        let mut counted = std::collections::HashMap::new();
        for (i, user) in everyone.iter().enumerate() {
            let role = if i == 0 { Role::Owner } else { Role::Member };
            let row =
                MemberRow { group_id: group_id.clone(), user_id: user.clone(), role, joined_at: now, joined_seq: 0 };
            ops.push(TxOp::put(&GROUP_RELATIONS, to_item(&row), Cond::NotExists));
            let summary = SummaryRow::new(user, &group_id, None, 0, now);
            ops.push(SummaryRow::write_op(summary, None));
            counted.insert(ops.len(), user);
            ops.push(count_up(user, GROUP_COUNT, self.cfg.max_groups_per_user));
        }
        if let Err(e) = self.tables.transact(ops).await {
            return Err(match conflict_at(&e).flatten().and_then(|i| counted.get(&i)) {
                Some(user) => self.too_many_groups(user, *user == caller),
                None => e.into(),
            });
        }
        tracing::info!(group_id, owner = caller, members = everyone.len(), "group created");
        self.index_group(&group_id).await;
        self.notify(
            &everyone,
            Payload::event(EntryKind::GroupJoined, Some(group_id.clone()), json!({"group_id": group_id})),
        )
        .await;
        Ok(group_view(meta))
    }

    /// The `409` for `user` at the limit of groups, worded for whoever asked.
    fn too_many_groups(&self, user: &str, is_caller: bool) -> Error {
        let max = self.cfg.max_groups_per_user;
        if is_caller {
            Error::conflict(format!("you are already in {max} groups, the most one user may join"))
        } else {
            Error::conflict(format!("{user} is already in {max} groups, the most one user may join"))
        }
    }

    /// `GET /v1/groups/{id}`: visible to any signed-in user.
    pub async fn get_group(&self, group_id: &str) -> Result<Group> {
        Ok(group_view(self.require_group(group_id).await?))
    }

    /// `PATCH /v1/groups/{id}`: owner or admin.
    pub async fn update_group(&self, caller: &str, group_id: &str, input: UpdateGroupInput) -> Result<Group> {
        if let Some(n) = &input.name {
            check_group_name(n)?;
        }
        check_len("description", &input.description, 1000)?;
        if input.name.is_none() && input.description.is_none() && input.join_policy.is_none() {
            return Err(Error::invalid("nothing to change: give name, description or join_policy"));
        }
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Admin).await?;
        let mut backoff = Backoff::new();
        loop {
            let meta = self.require_group(group_id).await?;
            let mut update = Update::new().set("version", meta.version + 1);
            if let Some(n) = &input.name {
                update = update.set("name", n.as_str());
            }
            if let Some(d) = &input.description {
                update = update.set("description", d.as_str());
            }
            if let Some(p) = input.join_policy {
                update = update.set("join_policy", serde_json::to_value(p).unwrap_or_default());
            }
            match self.tables.update(&META, &Key::pk(group_id), update, Cond::equals("version", meta.version)).await {
                Ok(item) => {
                    let group = group_view(from_item(item)?);
                    if input.name.is_some() {
                        self.index_group(group_id).await;
                    }
                    self.enqueue_group_event(group_id, EntryKind::GroupUpdated, json!({"group": group})).await;
                    return Ok(group);
                }
                Err(e) if e.is_conflict() => backoff.wait("group update").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `POST /v1/groups/{id}/join`.
    pub async fn join_group(&self, caller: &str, group_id: &str, message: Option<String>) -> Result<JoinOutcome> {
        check_len("message", &message, 500)?;
        let meta = self.require_group(group_id).await?;
        self.require_caller(caller).await?;
        if self.member_row(group_id, caller).await?.is_some() {
            return Err(Error::conflict("you are already a member of this group"));
        }
        match meta.join_policy.unwrap_or(JoinPolicy::Open) {
            JoinPolicy::Open => self.admit(group_id, caller, None).await.map(JoinOutcome::Joined),
            JoinPolicy::Approval => {
                let row = JoinRequestRow {
                    group_id: group_id.into(),
                    user_id: caller.into(),
                    message,
                    created_at: crate::time::now_ms(),
                };
                let ops = vec![
                    TxOp::put(&JOIN_REQUESTS, to_item(&row), Cond::NotExists),
                    TxOp::check(&GROUP_RELATIONS, Key::pk_sk(group_id, caller), Cond::NotExists),
                ];
                match self.tables.transact(ops).await {
                    Ok(()) => {}
                    Err(e) => match conflict_at(&e) {
                        Some(Some(1)) => return Err(Error::conflict("you are already a member of this group")),
                        Some(_) => return Err(Error::conflict("your request to join is already pending")),
                        None => return Err(e.into()),
                    },
                }
                let request: JoinRequest = row.into();
                let deciders: Vec<String> = meta.owner.iter().chain(meta.admins.iter()).cloned().collect();
                self.notify(
                    &deciders,
                    Payload::event(
                        EntryKind::JoinRequest,
                        Some(group_id.into()),
                        serde_json::to_value(&request).unwrap_or_default(),
                    ),
                )
                .await;
                Ok(JoinOutcome::Pending(request))
            }
        }
    }

    /// Makes `user` a member, consuming their join request when `request` is set.
    async fn admit(&self, group_id: &str, user: &str, request: Option<()>) -> Result<Member> {
        let mut backoff = Backoff::new();
        loop {
            let meta = self.require_group(group_id).await?;
            let (row, mut ops) = self.add_member_ops(&meta, user, Role::Member, crate::time::now_ms()).await?;
            // The indexes of add_member_ops's writes, and of the request this admission consumes.
            let (row_at, count_at, user_count_at, request_at) = (0, 1, 2, ops.len());
            if request.is_some() {
                ops.push(TxOp::delete(&JOIN_REQUESTS, Key::pk_sk(group_id, user), Cond::Exists));
            }
            match self.tables.transact(ops).await {
                Ok(()) => {
                    tracing::info!(group_id, user, "member joined");
                    self.notify(
                        &[user.to_string()],
                        Payload::event(EntryKind::GroupJoined, Some(group_id.into()), json!({"group_id": group_id})),
                    )
                    .await;
                    return Ok(row.into());
                }
                Err(e) => match conflict_at(&e) {
                    Some(Some(i)) if i == row_at => {
                        return Err(Error::conflict(format!("{user} is already a member of this group")));
                    }
                    // Joining an open group is the user's own act; accepting a request is not.
                    Some(Some(i)) if i == user_count_at => return Err(self.too_many_groups(user, request.is_none())),
                    Some(Some(i)) if i == count_at => {
                        if self.require_group(group_id).await?.member_count >= self.cfg.max_group_members {
                            return Err(Error::conflict(format!(
                                "the group is full ({} members)",
                                self.cfg.max_group_members
                            )));
                        }
                        backoff.wait("group membership").await?
                    }
                    Some(Some(i)) if i == request_at && request.is_some() => {
                        return Err(Error::not_found(format!("no pending join request from {user}")));
                    }
                    Some(_) => backoff.wait("group membership").await?,
                    None => return Err(e.into()),
                },
            }
        }
    }

    /// `GET /v1/groups/{id}/join-requests`: owner or admin.
    pub async fn list_join_requests(
        &self,
        caller: &str,
        group_id: &str,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<JoinRequest>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Admin).await?;
        let page = self.tables.query(Query::new(&JOIN_REQUESTS, group_id).limit(limit).cursor(cursor)).await?;
        let items =
            page.items.into_iter().map(|i| from_item::<JoinRequestRow>(i).map(Into::into)).collect::<Result<_>>()?;
        Ok(List { items, next_cursor: page.cursor })
    }

    /// `POST /v1/groups/{id}/join-requests/{user}/accept`: owner or admin.
    pub async fn accept_join(&self, caller: &str, group_id: &str, user: &str) -> Result<Member> {
        validate_user_id(user)?;
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Admin).await?;
        if self.tables.get(&JOIN_REQUESTS, &Key::pk_sk(group_id, user)).await?.is_none() {
            return Err(Error::not_found(format!("no pending join request from {user}")));
        }
        self.admit(group_id, user, Some(())).await
    }

    /// `POST /v1/groups/{id}/join-requests/{user}/reject`: owner or admin.
    pub async fn reject_join(&self, caller: &str, group_id: &str, user: &str) -> Result<()> {
        validate_user_id(user)?;
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Admin).await?;
        match self.tables.delete(&JOIN_REQUESTS, &Key::pk_sk(group_id, user), Cond::Exists).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => Err(Error::not_found(format!("no pending join request from {user}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a member (the caller leaving, or being removed).
    async fn drop_member(
        &self,
        group_id: &str,
        user: &str,
        reason: &str,
        check: impl Fn(&MetaRow, &MemberRow) -> Result<()>,
    ) -> Result<()> {
        let mut backoff = Backoff::new();
        loop {
            let meta = self.require_group(group_id).await?;
            let Some(member) = self.member_row(group_id, user).await? else {
                return Err(Error::not_found(format!("{user} is not a member of this group")));
            };
            check(&meta, &member)?;
            match self.tables.transact(Self::remove_member_ops(&meta, &member)).await {
                Ok(()) => {
                    tracing::info!(group_id, user, reason, "member left");
                    self.notify(
                        &[user.to_string()],
                        Payload::event(
                            EntryKind::GroupLeft,
                            Some(group_id.into()),
                            json!({"group_id": group_id, "reason": reason}),
                        ),
                    )
                    .await;
                    return Ok(());
                }
                Err(e) if e.is_conflict() => backoff.wait("group membership").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `POST /v1/groups/{id}/leave`. The owner cannot leave while others remain.
    pub async fn leave_group(&self, caller: &str, group_id: &str) -> Result<()> {
        self.drop_member(group_id, caller, "left", |meta, member| {
            if member.role == Role::Owner && meta.member_count > 1 {
                return Err(Error::conflict("the owner cannot leave while other members remain"));
            }
            Ok(())
        })
        .await
    }

    /// `DELETE /v1/groups/{id}/members/{user}`: owner or admin; only the owner removes admins;
    /// nobody removes the owner.
    pub async fn remove_member(&self, caller: &str, group_id: &str, user: &str) -> Result<()> {
        validate_user_id(user)?;
        self.require_group(group_id).await?;
        let me = self.require_role(group_id, caller, Role::Admin).await?;
        if user == caller {
            return Err(Error::invalid("to leave a group, use POST /v1/groups/{group_id}/leave"));
        }
        self.drop_member(group_id, user, "removed", |_, target| {
            if target.role >= me.role {
                return Err(Error::denied("you may only remove members below your own role"));
            }
            Ok(())
        })
        .await
    }

    /// `PUT /v1/groups/{id}/members/{user}/role`: owner only.
    pub async fn set_role(&self, caller: &str, group_id: &str, user: &str, role: Role) -> Result<Member> {
        validate_user_id(user)?;
        if role == Role::Owner {
            return Err(Error::invalid("role must be \"admin\" or \"member\""));
        }
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Owner).await?;
        let mut backoff = Backoff::new();
        loop {
            let meta = self.require_group(group_id).await?;
            let Some(mut member) = self.member_row(group_id, user).await? else {
                return Err(Error::not_found(format!("{user} is not a member of this group")));
            };
            if member.role == Role::Owner {
                return Err(Error::conflict("the owner's role cannot be changed"));
            }
            member.role = role;
            let mut admins: Vec<String> = meta.admins.iter().filter(|a| *a != user).cloned().collect();
            if role == Role::Admin {
                admins.push(user.to_string());
            }
            let ops = vec![
                TxOp::put(&GROUP_RELATIONS, to_item(&member), Cond::Exists),
                TxOp::update(
                    &META,
                    Key::pk(group_id),
                    Update::new().set("admins", json!(admins)).set("version", meta.version + 1),
                    Cond::equals("version", meta.version),
                ),
            ];
            match self.tables.transact(ops).await {
                Ok(()) => return Ok(member.into()),
                Err(e) if e.is_conflict() => backoff.wait("role change").await?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `GET /v1/groups/{id}/members`: members only.
    pub async fn list_members(
        &self,
        caller: &str,
        group_id: &str,
        limit: Option<i64>,
        cursor: Option<String>,
    ) -> Result<List<Member>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        self.require_group(group_id).await?;
        self.require_role(group_id, caller, Role::Member).await?;
        let page = self.tables.query(Query::new(&GROUP_RELATIONS, group_id).limit(limit).cursor(cursor)).await?;
        let items = page.items.into_iter().map(|i| from_item::<MemberRow>(i).map(Into::into)).collect::<Result<_>>()?;
        Ok(List { items, next_cursor: page.cursor })
    }

    /// `GET /v1/me/groups`.
    pub async fn my_groups(&self, caller: &str, limit: Option<i64>, cursor: Option<String>) -> Result<List<Group>> {
        let limit = page_limit(limit, limits::LIST.0, limits::LIST.1)?;
        let page = self
            .tables
            .query(Query::new(&GROUP_RELATIONS, caller).index(GROUP_RELATIONS_BY_USER).limit(limit).cursor(cursor))
            .await?;
        #[derive(Deserialize)]
        struct Membership {
            group_id: String,
        }
        let ids: Vec<String> =
            page.items.into_iter().map(|i| from_item::<Membership>(i).map(|m| m.group_id)).collect::<Result<_>>()?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(List { items: self.groups_by_id(&ids).await?, next_cursor: page.cursor })
    }

    /// The groups with these ids, in the same order (ids of missing groups are skipped).
    pub(crate) async fn groups_by_id(&self, ids: &[&str]) -> Result<Vec<Group>> {
        let keys: Vec<Key> = ids.iter().map(|id| Key::pk(*id)).collect();
        self.tables
            .get_many(&META, &keys)
            .await?
            .into_iter()
            .flatten()
            .map(|i| from_item::<MetaRow>(i).map(group_view))
            .collect()
    }
}

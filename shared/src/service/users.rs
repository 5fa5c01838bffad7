//! Profiles. A user must have one before anything else involves them.

use super::*;
use crate::ids::{char_len, validate_user_id};
use crate::model::User;
use crate::schema::USERS;
use crate::tables::{Cond, Key, TxOp, Update};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
pub struct ProfileInput {
    /// 1-100 characters, not blank.
    #[schemars(length(min = 1, max = 100), regex(pattern = r"\S"))]
    pub name: String,
    #[schemars(length(max = 32))]
    pub gender: Option<String>,
    /// An http(s) URL.
    #[schemars(length(max = 2048), regex(pattern = "^https?://"))]
    pub avatar_url: Option<String>,
    #[schemars(length(max = 1000))]
    pub bio: Option<String>,
}

/// Counters on a user's profile row, kept in the transactions that change what they count, so a
/// limit on them holds under concurrency.
pub(crate) const GROUP_COUNT: &str = "group_count";
pub(crate) const FRIEND_COUNT: &str = "friend_count";

/// One more of `counter` for `user`: the write fails its condition when `user` already has
/// `limit`.
pub(crate) fn count_up(user: &str, counter: &str, limit: i64) -> TxOp {
    TxOp::update(&USERS, Key::pk(user), Update::new().add(counter, 1), Cond::CountBelow(counter.into(), limit))
}

/// One fewer of `counter` for `user`.
pub(crate) fn count_down(user: &str, counter: &str) -> TxOp {
    TxOp::update(&USERS, Key::pk(user), Update::new().add(counter, -1), Cond::Exists)
}

impl Service {
    pub async fn put_me(&self, caller: &str, input: ProfileInput) -> Result<User> {
        let n = char_len(&input.name);
        if n == 0 || n > 100 || input.name.trim().is_empty() {
            return Err(Error::invalid("name must be 1-100 characters and not blank"));
        }
        check_len("gender", &input.gender, 32)?;
        check_len("bio", &input.bio, 1000)?;
        check_len("avatar_url", &input.avatar_url, 2048)?;
        if let Some(url) = &input.avatar_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::invalid("avatar_url must be an http(s) URL"));
        }
        // created_at is kept from the first PUT; the rest is replaced (last writer wins).
        let created_at = match self.find_user(caller).await? {
            Some(u) => u.created_at,
            None => crate::time::now_ms(),
        };
        let user = User {
            user_id: caller.to_string(),
            name: input.name,
            gender: input.gender,
            avatar_url: input.avatar_url,
            bio: input.bio,
            created_at,
        };
        // An update, not a put: the row also carries the user's counters, which a profile edit
        // must not reset.
        let mut update = Update::new();
        for (attr, v) in to_item(&user) {
            if attr != USERS.pk.name {
                update = update.set(&attr, v);
            }
        }
        self.tables.update(&USERS, &Key::pk(caller), update, Cond::Always).await?;
        Ok(user)
    }

    pub async fn get_me(&self, caller: &str) -> Result<User> {
        self.find_user(caller).await?.ok_or_else(|| Error::not_found("you have no profile yet: PUT /v1/me first"))
    }

    pub async fn get_user(&self, user_id: &str) -> Result<User> {
        validate_user_id(user_id)?;
        self.require_user(user_id).await
    }

    pub(crate) async fn find_user(&self, user_id: &str) -> Result<Option<User>> {
        opt_from_item(self.tables.get(&USERS, &Key::pk(user_id)).await?)
    }

    /// The user's profile, or `404` naming them.
    pub(crate) async fn require_user(&self, user_id: &str) -> Result<User> {
        self.find_user(user_id).await?.ok_or_else(|| Error::not_found(format!("user {user_id} not found")))
    }

    /// The caller must have a profile before acting on others.
    pub(crate) async fn require_caller(&self, caller: &str) -> Result<User> {
        self.get_me(caller).await
    }

    /// Display names of many users (missing ones are absent from the map).
    pub(crate) async fn names_of(&self, ids: &[String]) -> Result<std::collections::HashMap<String, String>> {
        let keys: Vec<Key> = ids.iter().map(|i| Key::pk(i.as_str())).collect();
        let mut out = std::collections::HashMap::new();
        for item in self.tables.get_many(&USERS, &keys).await?.into_iter().flatten() {
            let u: User = from_item(item)?;
            out.insert(u.user_id, u.name);
        }
        Ok(out)
    }
}

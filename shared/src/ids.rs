//! Identifiers: validation of client-chosen ids and derivation of server-made ones.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

pub const MAX_ID_LEN: usize = 64;

/// What [`validate_user_id`] accepts, as a regular expression (for the API document).
pub const USER_ID_PATTERN: &str = "^[A-Za-z0-9_.@-]{1,64}$";

/// A `user_id` is 1–64 chars of `[A-Za-z0-9_.@-]`.
pub fn validate_user_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::invalid("user_id must be 1-64 characters"));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-')) {
        return Err(Error::invalid("user_id may contain only A-Z a-z 0-9 _ . @ -"));
    }
    Ok(())
}

/// What a conversation id names: a single chat of two friends (`s_…`) or a group (`g_…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConvKind {
    Single,
    Group,
}

impl ConvKind {
    /// Its name in stored rows and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            ConvKind::Single => "single",
            ConvKind::Group => "group",
        }
    }
}

/// Checks the shape of a conversation id (`s_…` or `g_…`, URL-safe, at most 64 chars).
pub fn parse_conversation_id(id: &str) -> Result<ConvKind> {
    let kind = if id.starts_with("s_") {
        ConvKind::Single
    } else if id.starts_with("g_") {
        ConvKind::Group
    } else {
        return Err(Error::invalid("conversation_id must start with s_ or g_"));
    };
    check_suffix(id, "conversation_id")?;
    Ok(kind)
}

pub fn validate_group_id(id: &str) -> Result<()> {
    if !id.starts_with("g_") {
        return Err(Error::invalid("group_id must start with g_"));
    }
    check_suffix(id, "group_id")
}

fn check_suffix(id: &str, what: &str) -> Result<()> {
    let rest = &id[2..];
    if rest.is_empty()
        || id.len() > MAX_ID_LEN
        || !rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(format!("{what} is malformed")));
    }
    Ok(())
}

/// The single chat of a pair of users. Stable for the pair (order does not matter), so that an
/// unfriend and re-friend finds the same history; a hash keeps it within 64 chars for any ids.
pub fn single_conversation_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(lo.as_bytes());
    h.update([0u8]);
    h.update(hi.as_bytes());
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("s_{hex}")
}

/// A new group id: `g_` and a lowercase ULID (time-ordered, 26 chars).
pub fn new_group_id() -> String {
    format!("g_{}", ulid::Ulid::generate().to_string().to_lowercase())
}

/// Length in characters (not bytes), as the API's limits count.
pub fn char_len(s: &str) -> usize {
    s.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names rows and answers carry: what serde writes, and what [`ConvKind::as_str`] says.
    #[test]
    fn conversation_kinds_are_named_single_and_group() {
        for (kind, name) in [(ConvKind::Single, "single"), (ConvKind::Group, "group")] {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            assert_eq!(kind.as_str(), name);
        }
    }

    #[test]
    fn single_id_is_stable_for_the_pair_and_well_formed() {
        let id = single_conversation_id("alice", "bob");
        assert_eq!(id, single_conversation_id("bob", "alice"));
        assert_ne!(id, single_conversation_id("alice", "carol"));
        assert_eq!(parse_conversation_id(&id), Ok(ConvKind::Single));
        let long = "x".repeat(64);
        assert!(single_conversation_id(&long, &long.replace('x', "y")).len() <= MAX_ID_LEN);
    }

    #[test]
    fn user_ids_are_checked() {
        assert!(validate_user_id("a.b@c-d_e9").is_ok());
        assert!(validate_user_id("").is_err());
        assert!(validate_user_id(&"a".repeat(65)).is_err());
        assert!(validate_user_id("a b").is_err());
        assert!(validate_user_id("a/b").is_err());
        assert!(validate_user_id("é").is_err());
    }

    #[test]
    fn conversation_ids_are_checked() {
        assert_eq!(parse_conversation_id("g_abc"), Ok(ConvKind::Group));
        assert!(parse_conversation_id("g_").is_err());
        assert!(parse_conversation_id("x_abc").is_err());
        assert!(parse_conversation_id("g_a/b").is_err());
        assert!(parse_conversation_id(&format!("g_{}", "a".repeat(63))).is_err());
        assert!(validate_group_id("s_abc").is_err());
    }
}

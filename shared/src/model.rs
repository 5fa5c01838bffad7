//! The API's resources, as the service returns them (serialized to JSON by the HTTP glue) and,
//! where they are stored as they are, as table items.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct User {
    pub user_id: String,
    pub name: String,
    pub gender: Option<String>,
    pub avatar_url: Option<String>,
    pub bio: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct FriendRequest {
    pub from: String,
    pub to: String,
    pub message: Option<String>,
    pub created_at: i64,
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Friendship {
    pub user_id: String,
    pub conversation_id: String,
    pub since: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Friend {
    pub user_id: String,
    pub name: String,
    pub conversation_id: String,
    pub since: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JoinPolicy {
    Open,
    Approval,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Group {
    pub group_id: String,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub join_policy: JoinPolicy,
    pub member_count: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Member {
    pub user_id: String,
    pub role: Role,
    pub joined_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct JoinRequest {
    pub group_id: String,
    pub user_id: String,
    pub message: Option<String>,
    pub created_at: i64,
    pub status: String,
}

/// What `POST /v1/groups/{id}/join` did.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinOutcome {
    Joined(Member),
    Pending(JoinRequest),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Message {
    pub conversation_id: String,
    pub seq: i64,
    pub sender: String,
    pub client_msg_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub send_time: i64,
}

/// A send's result: `created` is false when a retry found the first attempt's message.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub message: Message,
    pub created: bool,
}

/// What an inbox entry is: a message, or an event about the user's friends and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Message,
    FriendRequest,
    FriendAdded,
    FriendRemoved,
    GroupJoined,
    GroupLeft,
    JoinRequest,
    GroupUpdated,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct SyncEntry {
    pub sync_seq: i64,
    pub kind: EntryKind,
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct SyncPage {
    pub items: Vec<SyncEntry>,
    pub next_after: i64,
    pub has_more: bool,
    /// The checkpoint is older than the oldest kept entry: rebuild from the conversation list.
    pub reset: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct HistoryPage {
    pub items: Vec<Message>,
    pub next_before: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct ConversationSummary {
    pub conversation_id: String,
    #[serde(rename = "type")]
    pub kind: crate::ids::ConvKind,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    pub unread: i64,
    pub read_seq: i64,
    pub last_message: Option<Message>,
    pub updated_at: i64,
}

/// A page of any list.
#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
#[schemars(rename = "List_of_{T}")]
pub struct List<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

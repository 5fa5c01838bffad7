//! The request and response bodies the HTTP layer itself parses and returns (the service's own
//! inputs and views live with it). Their JSON Schemas go into the OpenAPI document.

use serde::{Deserialize, Serialize};

#[derive(Deserialize, schemars::JsonSchema)]
pub struct DevTokenBody {
    #[schemars(regex(pattern = "^[A-Za-z0-9_.@-]{1,64}$"))]
    pub user_id: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct FriendRequestBody {
    /// The user asked.
    #[schemars(regex(pattern = "^[A-Za-z0-9_.@-]{1,64}$"))]
    pub to: String,
    #[schemars(length(max = 500))]
    pub message: Option<String>,
}

/// An optional note to whoever decides.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct MessageBody {
    #[schemars(length(max = 500))]
    pub message: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
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

#[derive(Deserialize, schemars::JsonSchema)]
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

/// Any JSON object (the OpenAPI document's own schema is not described here).
pub struct AnyObject;

impl schemars::JsonSchema for AnyObject {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnyObject".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object"})
    }

    fn inline_schema() -> bool {
        true
    }
}

//! The Notify port: telling a user's connected devices that their inbox has news.
//!
//! A notice is a hint, never the only copy of anything: it carries the inbox's new `sync_seq`
//! (and the conversation it belongs to), and the client then pulls `/v1/sync` as it would have
//! anyway. So a notice that is lost, late or duplicated costs a client at most one sync, and
//! every adapter is best effort: a failure is logged, never returned to the delivery that
//! caused it (the entry is committed; a retried delivery would not add anything).
//!
//! Adapters: [`local::LocalHub`] holds the local server's WebSocket connections in memory; on
//! AWS the connections live in a table and notices go out through API Gateway's Management API.

pub mod apigw;
pub mod connections;
pub mod local;

use serde::Serialize;

/// "Your inbox has news": sent to every connection of `user_id` after an entry commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    #[serde(skip)]
    pub user_id: String,
    /// The inbox's newest entry: sync after your checkpoint to read it (and any before it).
    pub sync_seq: i64,
    /// The conversation of that entry, when it has one (a group event may not).
    pub conversation_id: Option<String>,
}

impl Notice {
    /// The frame a client receives: `{"type":"inbox","sync_seq":42,"conversation_id":"..."}`.
    pub fn to_frame(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            #[serde(flatten)]
            notice: &'a Notice,
        }
        serde_json::to_string(&Frame { kind: "inbox", notice: self }).expect("notices serialize")
    }
}

/// The answer to a frame a client sends, the same locally and on API Gateway: a pong for
/// `{"type":"ping"}` (the only frame clients send), an error frame saying so for anything else.
pub fn answer_client_frame(text: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Frame {
        #[serde(rename = "type")]
        kind: String,
    }
    let reply = match serde_json::from_str::<Frame>(text) {
        Ok(f) if f.kind == "ping" => serde_json::json!({"type": "pong"}),
        Ok(f) => serde_json::json!({
            "type": "error",
            "message": format!("unknown frame type {:?}: send {{\"type\":\"ping\"}}", f.kind),
        }),
        Err(_) => serde_json::json!({"type": "error", "message": "frames are JSON objects with a \"type\""}),
    };
    reply.to_string()
}

#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers what it can of `notices`, in order per user; never fails the caller.
    async fn notify(&self, notices: Vec<Notice>);
}

/// No connections anywhere: the functions that never deliver to inboxes, and tests.
pub struct NoNotifier;

#[async_trait::async_trait]
impl Notifier for NoNotifier {
    async fn notify(&self, _notices: Vec<Notice>) {}
}

//! The benchmark's HTTP client: what an app does, through the server's real HTTP API.

use crate::http::Http;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Clone)]
pub struct Api {
    http: Arc<Http>,
    addr: std::net::SocketAddr,
}

/// A request's method.
#[derive(Clone, Copy, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub token: String,
}

/// Requests in flight at once while setting up (users, friendships, members).
const SETUP_CONCURRENCY: usize = 32;

impl Api {
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Api { http: Arc::new(Http::new(addr)), addr }
    }

    /// The server's address for WebSockets: `ws://host:port`.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// One request's body; anything but a 2xx is an error naming the request and the answer.
    async fn request(&self, method: Method, path: &str, token: Option<&str>, body: &[u8]) -> Result<Vec<u8>, String> {
        let method = method.as_str();
        let resp = self.http.request(method, path, token, body).await.map_err(|e| format!("{method} {path}: {e}"))?;
        if !(200..300).contains(&resp.status) {
            return Err(format!("{method} {path}: {} {}", resp.status, String::from_utf8_lossy(&resp.body)));
        }
        Ok(resp.body)
    }

    /// One request, its answer as JSON (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = match body {
            Some(b) => serde_json::to_vec(&b).map_err(|e| format!("{path}: {e}"))?,
            None => Vec::new(),
        };
        let body = self.request(method, path, token, &body).await?;
        if body.is_empty() {
            Ok(Value::Null)
        } else {
            serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
        }
    }

    /// How many items a page of a list has. The page is parsed only that far: the client
    /// shares the machine with the server, and every cycle it spends is one the server loses.
    pub async fn count_items(&self, user: &User, path: &str) -> Result<usize, String> {
        #[derive(serde::Deserialize)]
        struct Page {
            items: Vec<serde::de::IgnoredAny>,
        }
        let body = self.request(Method::Get, path, Some(&user.token), &[]).await?;
        let page: Page = serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?;
        Ok(page.items.len())
    }

    pub async fn get(&self, user: &User, path: &str) -> Result<Value, String> {
        self.call(Method::Get, path, Some(&user.token), None).await
    }

    pub async fn post(&self, user: &User, path: &str, body: Value) -> Result<Value, String> {
        self.call(Method::Post, path, Some(&user.token), Some(body)).await
    }

    /// A user with a profile (a dev-mode token).
    pub async fn user(&self, id: &str) -> Result<User, String> {
        let v = self.call(Method::Post, "/v1/dev/token", None, Some(json!({"user_id": id}))).await?;
        let token = v["token"].as_str().ok_or("no token")?.to_string();
        self.call(Method::Put, "/v1/me", Some(&token), Some(json!({"name": format!("{id} name")}))).await?;
        Ok(User { id: id.to_string(), token })
    }

    pub async fn users(&self, ids: Vec<String>) -> Result<Vec<User>, String> {
        stream::iter(ids).map(|id| async move { self.user(&id).await }).buffered(SETUP_CONCURRENCY).try_collect().await
    }

    /// Makes two users friends; returns their conversation id.
    pub async fn befriend(&self, a: &User, b: &User) -> Result<String, String> {
        self.post(a, "/v1/friend-requests", json!({"to": b.id})).await?;
        let v = self.post(b, &format!("/v1/friend-requests/{}/accept", a.id), json!({})).await?;
        Ok(v["conversation_id"].as_str().ok_or("no conversation_id")?.to_string())
    }

    /// A group of `owner` and `members`: up to 29 named at creation, the rest join (it is open).
    pub async fn group(&self, owner: &User, members: &[User]) -> Result<String, String> {
        let (named, joining) = members.split_at(members.len().min(29));
        let ids: Vec<&str> = named.iter().map(|m| m.id.as_str()).collect();
        let v = self.post(owner, "/v1/groups", json!({"name": "bench", "join_policy": "open", "members": ids})).await?;
        let group = v["group_id"].as_str().ok_or("no group_id")?.to_string();
        let path = format!("/v1/groups/{group}/join");
        stream::iter(joining)
            .map(|m| self.post(m, &path, json!({})))
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(group)
    }

    /// Sends a text message; returns its seq. The body is encoded from a struct and only the
    /// answer's `seq` is parsed: this is the request the send scenarios repeat.
    pub async fn send(&self, from: &User, conversation: &str, client_msg_id: &str, text: &str) -> Result<i64, String> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            client_msg_id: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            text: &'a str,
        }
        #[derive(serde::Deserialize)]
        struct Sent {
            seq: i64,
        }
        let path = format!("/v1/conversations/{conversation}/messages");
        let body = serde_json::to_vec(&Body { client_msg_id, kind: "text", text }).map_err(|e| e.to_string())?;
        let answer = self.request(Method::Post, &path, Some(&from.token), &body).await?;
        let sent: Sent = serde_json::from_slice(&answer).map_err(|e| format!("POST {path}: {e}"))?;
        Ok(sent.seq)
    }

    /// One sync page after `after`: its entries and the checkpoint to continue from.
    pub async fn sync(&self, user: &User, after: i64, limit: usize) -> Result<(Vec<Value>, i64, bool), String> {
        let v = self.get(user, &format!("/v1/sync?after={after}&limit={limit}")).await?;
        let items = v["items"].as_array().cloned().ok_or("no items")?;
        Ok((items, v["next_after"].as_i64().ok_or("no next_after")?, v["has_more"].as_bool().unwrap_or(false)))
    }

    /// The checkpoint after everything now in `user`'s inbox.
    pub async fn sync_end(&self, user: &User) -> Result<i64, String> {
        let mut after = 0;
        loop {
            let (_, next, more) = self.sync(user, after, 500).await?;
            after = next;
            if !more {
                return Ok(after);
            }
        }
    }
}

//! `GET /v1/ws`: the local server's WebSocket, which tells a signed-in device that its inbox has
//! news (the protocol is in docs/api.md, "Live updates").
//!
//! The service's deliveries feed the [`LocalHub`] (the Notify port's local adapter); each
//! connection here is one subscription to it. A connection only ever reads its own user's
//! notices, and a notice is a hint: the client syncs, and a lost one loses nothing.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use im_functions::dispatch::{self, App};
use im_shared::Error;
use im_shared::notify::local::{Limits, LocalHub, Refused, Subscription};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the endpoint needs, and its limits.
#[derive(Clone)]
pub struct Ws {
    pub app: Arc<App>,
    pub hub: Arc<LocalHub>,
    pub stop: watch::Receiver<bool>,
    pub cfg: WsConfig,
}

#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Open connections one user may have (one per device).
    pub max_per_user: usize,
    /// Open connections in all.
    pub max_total: usize,
    /// How often the server pings; a connection silent for two of these is closed.
    pub ping_every: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig { max_per_user: 10, max_total: 10_000, ping_every: Duration::from_secs(30) }
    }
}

/// The largest frame a client may send: its frames are pings.
const MAX_CLIENT_FRAME: usize = 4096;

#[derive(Deserialize)]
struct Params {
    token: Option<String>,
}

fn refuse(e: Error) -> Response {
    crate::server::into_axum(dispatch::error_response(&e))
}

/// Authenticates (the `token` query parameter, since browsers cannot set headers on a
/// WebSocket, or `Authorization: Bearer`), registers the connection, then upgrades.
pub async fn handler(
    State(ws): State<Ws>,
    method: http::Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if method != http::Method::GET {
        return crate::server::into_axum(dispatch::method_not_allowed(&["GET"]));
    }
    let params: Params = match serde_urlencoded::from_str(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return refuse(Error::invalid(format!("bad query string: {e}"))),
    };
    let credential = match (params.token, headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())) {
        (Some(token), _) => format!("Bearer {token}"),
        (None, Some(header)) => header.to_string(),
        (None, None) => return refuse(Error::Unauthenticated("a token is required: /v1/ws?token=<JWT>".into())),
    };
    let (user, until) = match ws.app.auth.session(Some(&credential)) {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => return refuse(Error::invalid(format!("this endpoint takes a WebSocket upgrade: {e}"))),
    };
    let limits = Limits { per_user: ws.cfg.max_per_user, total: ws.cfg.max_total };
    let subscription = match ws.hub.subscribe(&user, limits) {
        Ok(s) => s,
        Err(Refused::TooManyForUser(n)) => {
            return refuse(Error::RateLimited(format!("at most {n} connections per user; close one first"), 1));
        }
        Err(Refused::TooManyInAll(n)) => {
            tracing::warn!(
                limit = n,
                "a WebSocket was refused: the server has the most it takes (IM_WS_MAX_CONNECTIONS)"
            );
            return refuse(Error::Unavailable(format!(
                "the server has {n} connections open, the most it takes; retry later"
            )));
        }
    };
    tracing::info!(user, "websocket connected");
    upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| serve(socket, user, until, subscription, ws))
}

/// `until`: when the token expires (epoch seconds); the connection is closed then.
async fn serve(mut socket: WebSocket, user: String, until: Option<i64>, mut sub: Subscription, ws: Ws) {
    let mut stop = ws.stop.clone();
    // No expiry (a credential verified elsewhere): a century, far from any overflow.
    let left = until.map_or(u64::from(u32::MAX), |t| (t - im_shared::time::now_ms() / 1000).max(0) as u64);
    let expired = tokio::time::sleep(Duration::from_secs(left));
    tokio::pin!(expired);
    let mut ping = tokio::time::interval(ws.cfg.ping_every);
    ping.tick().await; // the first tick is immediate
    let mut last_heard = Instant::now();
    let ready = serde_json::json!({"type": "ready", "user_id": user}).to_string();
    let mut closing: Option<CloseFrame> = None;
    if socket.send(Message::Text(ready.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            notice = sub.notices.recv() => {
                let Some(notice) = notice else { break };
                if socket.send(Message::Text(notice.to_frame().into())).await.is_err() {
                    break;
                }
            }
            frame = socket.recv() => {
                last_heard = Instant::now();
                match frame {
                    Some(Ok(Message::Text(text))) => {
                        let reply = im_shared::notify::answer_client_frame(&text);
                        if socket.send(Message::Text(reply.into())).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        closing = Some(close(close_code::UNSUPPORTED, "binary frames are not accepted"));
                        break;
                    }
                    // Pings are answered by the library; pongs only prove the client is there.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    // The client closed: the library has queued the answering close frame,
                    // and reading on sends it, until the connection ends.
                    Some(Ok(Message::Close(_))) => {
                        while let Some(Ok(_)) = socket.recv().await {}
                        break;
                    }
                    None => break,
                    Some(Err(e)) => {
                        tracing::debug!(user, error = %e, "websocket read failed");
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > ws.cfg.ping_every * 2 {
                    closing = Some(close(close_code::AWAY, "no answer to pings"));
                    break;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => {
                closing = Some(close(close_code::AWAY, "the server is shutting down"));
                break;
            }
            () = &mut expired => {
                closing = Some(close(close_code::POLICY, "the token has expired: connect again with a new one"));
                break;
            }
        }
    }
    if let Some(frame) = closing
        && socket.send(Message::Close(Some(frame))).await.is_ok()
    {
        // A clean close: the client answers with its own close frame, briefly awaited.
        let answered = async { while let Some(Ok(_)) = socket.recv().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), answered).await;
    }
    drop(sub); // unregistered before the log line says so
    tracing::info!(user, "websocket closed");
}

fn close(code: u16, reason: &'static str) -> CloseFrame {
    CloseFrame { code, reason: Utf8Bytes::from_static(reason) }
}

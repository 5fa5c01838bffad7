//! The local WebSocket (`/v1/ws`) through the real server binary over real HTTP: who hears of
//! what, the keep-alive, the refusals and a clean close; and the web page that uses it.

mod common;

use common::{Server, User, assert_error};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn ws_url(s: &Server, token: &str) -> String {
    format!("{}/v1/ws?token={token}", s.base.replacen("http://", "ws://", 1))
}

/// A connected device of `u`, past its `ready` frame.
async fn connect(s: &Server, u: &User) -> Socket {
    let (mut socket, resp) = tokio_tungstenite::connect_async(ws_url(s, &u.token)).await.expect("connect");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(next(&mut socket).await, json!({"type": "ready", "user_id": u.id}));
    socket
}

/// The next text frame, as JSON (5 s at most).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .expect("a good frame");
        match frame {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frames"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Asserts nothing is waiting for this device: a ping's pong is the very next frame.
async fn hears_nothing(socket: &mut Socket) {
    socket.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next(socket).await, json!({"type": "pong"}));
}

/// The refusal of an upgrade: its status and JSON body.
async fn refused(url: &str) -> (StatusCode, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().map(|b| serde_json::from_slice(b).expect("a JSON error body"));
            (resp.status(), body.unwrap_or(Value::Null))
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade went through"),
    }
}

#[tokio::test]
async fn a_message_reaches_every_device_of_both_sides_and_sync_has_it() {
    let s = Server::start();
    let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let conv = s.befriend(&alice, &bob).await;
    let (mut phone, mut laptop, mut bobs, mut carols) =
        (connect(&s, &alice).await, connect(&s, &alice).await, connect(&s, &bob).await, connect(&s, &carol).await);
    let (before, _) = alice.sync_from(&s, 0).await;
    let checkpoint = before.last().map_or(0, |e| e["sync_seq"].as_i64().unwrap());

    let (status, sent) = bob.send(&s, &conv, "m1", "hello alice").await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let heard = next(&mut phone).await;
    assert_eq!(heard, json!({"type": "inbox", "sync_seq": checkpoint + 1, "conversation_id": conv}));
    assert_eq!(next(&mut laptop).await, heard, "every device of the user hears");
    let own = next(&mut bobs).await;
    assert_eq!(own["conversation_id"], json!(conv), "the sender's devices hear of their own entry");
    hears_nothing(&mut carols).await;

    // The hint is enough to fetch the message.
    let (entries, _) = alice.sync_from(&s, checkpoint).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["sync_seq"], heard["sync_seq"]);
    assert_eq!(entries[0]["message"]["text"], json!("hello alice"));
}

#[tokio::test]
async fn group_members_hear_of_a_group_message_once_it_is_in_their_inbox() {
    let s = Server::start();
    let (alice, bob, carol) = (s.user("alice").await, s.user("bob").await, s.user("carol").await);
    let group = s.group(&alice, &[&bob], "open").await;
    let (mut bobs, mut carols) = (connect(&s, &bob).await, connect(&s, &carol).await);
    let (status, _) = alice.send(&s, &group, "g1", "hello team").await;
    assert_eq!(status, StatusCode::CREATED);
    let heard = next(&mut bobs).await;
    assert_eq!(heard["type"], json!("inbox"));
    assert_eq!(heard["conversation_id"], json!(group));
    let after = heard["sync_seq"].as_i64().unwrap() - 1;
    let (entries, _) = bob.sync_from(&s, after).await;
    assert_eq!(entries[0]["message"]["text"], json!("hello team"), "the entry was there when the hint came");
    hears_nothing(&mut carols).await;
}

#[tokio::test]
async fn keep_alive_and_frames_it_does_not_understand() {
    let s = Server::start();
    let alice = s.user("alice").await;
    let mut socket = connect(&s, &alice).await;
    hears_nothing(&mut socket).await;
    socket.send(Message::text("not json")).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], json!("error"));
    socket.send(Message::text(r#"{"type":"subscribe"}"#)).await.unwrap();
    assert_eq!(next(&mut socket).await["type"], json!("error"));
    hears_nothing(&mut socket).await; // still open
    socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_are_json_errors_before_any_upgrade() {
    let s = Server::start_with(&[("IM_WS_MAX_PER_USER", "1")]);
    let alice = s.user("alice").await;
    let base = s.base.replacen("http://", "ws://", 1);
    let (status, body) = refused(&format!("{base}/v1/ws")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (status, body) = refused(&format!("{base}/v1/ws?token=not.a.jwt")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthenticated");
    let (status, body) = alice.get(&s, "/v1/ws").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_argument");

    // One connection per user here: a second is refused until the first closes cleanly.
    let mut first = connect(&s, &alice).await;
    let (status, body) = refused(&ws_url(&s, &alice.token)).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    first.close(None).await.unwrap();
    loop {
        match first.next().await {
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("a clean close, not {e}"),
        }
    }
    s.eventually(5, "the closed connection to be forgotten", || async {
        tokio_tungstenite::connect_async(ws_url(&s, &alice.token)).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn the_server_pings_an_idle_connection() {
    let s = Server::start_with(&[("IM_WS_PING_SECS", "1")]);
    let alice = s.user("alice").await;
    let mut socket = connect(&s, &alice).await;
    let frame = tokio::time::timeout(Duration::from_secs(3), socket.next()).await.expect("a ping within 3 s");
    assert!(matches!(frame, Some(Ok(Message::Ping(_)))), "{frame:?}");
    hears_nothing(&mut socket).await; // the client's library answered it, and it stays open
}

/// The web chat page and its assets are served with a strict Content-Security-Policy.
#[tokio::test]
async fn the_chat_page_is_served_with_its_script_and_styles() {
    let s = Server::start();
    for (path, kind, marker) in
        [("/", "text/html", "/app.js"), ("/app.js", "text/javascript", "/v1/ws"), ("/app.css", "text/css", "badge")]
    {
        let resp = common::client().get(format!("{}{path}", s.base)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert!(header("content-security-policy").contains("default-src 'self'"), "{path}");
        assert!(resp.text().await.unwrap().contains(marker), "{path}");
    }
}

/// A connection lasts as long as its token: it is closed (1008) when the token expires.
#[tokio::test]
async fn a_connection_is_closed_when_its_token_expires() {
    let s = Server::start_with(&[("IM_JWT_SECRET", "ws-expiry-test")]);
    s.user("alice").await;
    // Accepted for 2 more seconds: expired 28 s ago, within the 30 s leeway tokens get.
    let token = common::token_signed_with(b"ws-expiry-test", "alice", -28);
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url(&s, &token)).await.expect("connect");
    assert_eq!(next(&mut socket).await["type"], json!("ready"));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("closed within 10 s");
    assert_eq!(closed.map(|f| f.code), Some(CloseCode::Policy));
}

#[tokio::test]
async fn past_the_servers_connection_limit_a_connection_is_refused_with_503() {
    let s = Server::start_with(&[("IM_WS_MAX_CONNECTIONS", "1")]);
    let (alice, bob) = (s.user("alice").await, s.user("bob").await);
    let _open = connect(&s, &alice).await;
    let (status, body) = refused(&ws_url(&s, &bob.token)).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
}

//! The WebSocket functions fed API Gateway's event JSON (`fixtures/ws-*.json`, in the shape
//! API Gateway sends to a Lambda proxy integration), on the embedded tables, with the issuer's
//! keys served by a loopback stand-in of an OpenID provider. The key pair is a test fixture
//! (`ws-test-key.der`, its public half in `ws-test-jwks.json`).

use super::*;
use im_shared::tables::embedded::RedbTables;
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) const AUDIENCE: &str = "im-test-client";

/// An OpenID provider on loopback: discovery and keys; counts key fetches.
pub(crate) async fn issuer() -> (String, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/keys")}).to_string();
    let counter = fetches.clone();
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", axum::routing::get(move || async move { discovery }))
        .route(
            "/keys",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { include_str!("fixtures/ws-test-jwks.json") }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, fetches)
}

fn sign(claims: Value, kid: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    encode(&header, &claims, &EncodingKey::from_rsa_der(include_bytes!("fixtures/ws-test-key.der"))).unwrap()
}

fn now() -> i64 {
    im_shared::time::now_ms() / 1000
}

pub(crate) fn token(iss: &str, sub: &str) -> String {
    sign(json!({"iss": iss, "sub": sub, "aud": AUDIENCE, "exp": now() + 300}), "test-key-1")
}

pub(crate) fn event(
    fixture: &str,
    connection_id: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> ApiGatewayWebsocketProxyRequest {
    let mut v: Value = serde_json::from_str(fixture).unwrap();
    v["requestContext"]["connectionId"] = json!(connection_id);
    match token {
        Some(t) => {
            v["queryStringParameters"] = json!({"token": t});
            v["multiValueQueryStringParameters"] = json!({"token": [t]});
        }
        None => {
            if let Some(m) = v.as_object_mut() {
                m.remove("queryStringParameters");
                m.remove("multiValueQueryStringParameters");
            }
        }
    }
    if let Some(b) = body {
        v["body"] = json!(b);
    }
    serde_json::from_value(v).unwrap()
}

pub(crate) const CONNECT: &str = include_str!("fixtures/ws-connect.json");
pub(crate) const DISCONNECT: &str = include_str!("fixtures/ws-disconnect.json");
pub(crate) const MESSAGE: &str = include_str!("fixtures/ws-message.json");

fn app(iss: &str, max_per_user: usize) -> (WsApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let tables = RedbTables::open(&dir.path().join("t.redb")).unwrap();
    let app = WsApp {
        connections: Connections::new(Arc::new(tables)),
        verifier: JwtVerifier::new(iss, &format!("another-client, {AUDIENCE}")),
        max_per_user,
    };
    (app, dir)
}

fn body(r: &ApiGatewayProxyResponse) -> Value {
    match &r.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("a text body, not {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_with_a_good_token_is_recorded_and_its_disconnect_forgets_it() {
    let (iss, _) = issuer().await;
    let (app, _dir) = app(&iss, 10);
    let r = ws_event(&app, event(CONNECT, "conn-1", Some(&token(&iss, "alice")), None)).await;
    assert_eq!(r.status_code, 200, "{:?}", r.body);
    assert_eq!(app.connections.of_user("alice").await.unwrap(), vec!["conn-1"]);
    let r = ws_event(&app, event(DISCONNECT, "conn-1", None, None)).await;
    assert_eq!(r.status_code, 200);
    assert!(app.connections.of_user("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_cognito_access_token_names_its_client_instead_of_an_audience() {
    let (iss, _) = issuer().await;
    let (app, _dir) = app(&iss, 10);
    let t = sign(
        json!({"iss": iss, "sub": "bob", "client_id": AUDIENCE, "token_use": "access", "exp": now() + 300}),
        "test-key-1",
    );
    assert_eq!(ws_event(&app, event(CONNECT, "conn-b", Some(&t), None)).await.status_code, 200);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_and_nothing_is_recorded() {
    let (iss, fetches) = issuer().await;
    let (app, _dir) = app(&iss, 10);
    let hs256 = encode(
        &Header { kid: Some("test-key-1".into()), ..Header::new(Algorithm::HS256) },
        &json!({"iss": iss, "sub": "mallory", "aud": AUDIENCE, "exp": now() + 300}),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    let cases = [
        ("no token", None),
        ("not a JWT", Some("garbage".to_string())),
        (
            "another audience",
            Some(sign(json!({"iss": iss, "sub": "mallory", "aud": "other", "exp": now() + 300}), "test-key-1")),
        ),
        (
            "another issuer",
            Some(sign(
                json!({"iss": "https://evil.example", "sub": "mallory", "aud": AUDIENCE, "exp": now() + 300}),
                "test-key-1",
            )),
        ),
        (
            "expired",
            Some(sign(json!({"iss": iss, "sub": "mallory", "aud": AUDIENCE, "exp": now() - 600}), "test-key-1")),
        ),
        (
            "an unknown key",
            Some(sign(json!({"iss": iss, "sub": "mallory", "aud": AUDIENCE, "exp": now() + 300}), "rotated-away")),
        ),
        ("a shared-secret signature", Some(hs256)),
        ("a bad user id", Some(token(&iss, "not a user id!"))),
    ];
    for (what, t) in cases {
        let r = ws_event(&app, event(CONNECT, "conn-m", t.as_deref(), None)).await;
        assert_eq!(r.status_code, 401, "{what}: {:?}", r.body);
        assert_eq!(body(&r)["error"]["code"], "unauthenticated", "{what}");
    }
    assert!(app.connections.of_user("mallory").await.unwrap().is_empty());
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "an unknown key does not refetch within a minute of the last fetch");
}

#[tokio::test]
async fn a_user_at_the_connection_limit_is_refused_with_429() {
    let (iss, _) = issuer().await;
    let (app, _dir) = app(&iss, 1);
    let t = token(&iss, "alice");
    assert_eq!(ws_event(&app, event(CONNECT, "phone", Some(&t), None)).await.status_code, 200);
    let r = ws_event(&app, event(CONNECT, "laptop", Some(&t), None)).await;
    assert_eq!(r.status_code, 429);
    assert_eq!(body(&r)["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn the_default_route_answers_pings_and_explains_anything_else() {
    let (app, _dir) = app("http://127.0.0.1:9", 10);
    let r = ws_event(&app, event(MESSAGE, "conn-1", None, None)).await;
    assert_eq!((r.status_code, body(&r)), (200, json!({"type": "pong"})));
    let r = ws_event(&app, event(MESSAGE, "conn-1", None, Some("hello"))).await;
    assert_eq!(body(&r)["type"], "error");
}

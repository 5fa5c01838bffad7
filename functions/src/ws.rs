//! The WebSocket API's functions on AWS: `$connect`, `$disconnect` and `$default`.
//!
//! API Gateway's WebSocket APIs have no JWT authorizer, so `$connect` verifies the token itself,
//! as the HTTP API's authorizer does: signed by one of the issuer's published keys (its JWKS,
//! found through `/.well-known/openid-configuration`), issued by `IM_JWT_ISSUER`, for one of
//! `IM_JWT_AUDIENCE` (the `aud` claim, or `client_id` as in Cognito's access tokens), not
//! expired. The caller's `sub` is the user. The keys are fetched on the first connection and
//! again when a token names a key not seen yet (rotation), at most once a minute.
//!
//! The protocol is the local server's (docs/api.md, "Live updates"): a client connects with
//! `?token=<JWT>`, sends `{"type":"ping"}` and gets `{"type":"pong"}` (the `$default` route's
//! response), and hears `{"type":"inbox",...}` notices posted by the functions that deliver.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use im_shared::Error;
use im_shared::ids::validate_user_id;
use im_shared::notify::connections::{ConnectError, Connections};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How soon the keys may be fetched again for a token that names an unknown key.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Verifies the issuer's tokens against its published keys.
pub struct JwtVerifier {
    issuer: String,
    /// Any of these (the template's `JwtAudience`, comma-separated as `IM_JWT_AUDIENCE`).
    audiences: Vec<String>,
    http: reqwest::Client,
    keys: Mutex<Option<(JwkSet, Instant)>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Value>,
    client_id: Option<String>,
}

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

fn unauthenticated(why: impl Into<String>) -> Error {
    Error::Unauthenticated(why.into())
}

impl JwtVerifier {
    /// `audiences`: one or more, comma-separated.
    pub fn new(issuer: &str, audiences: &str) -> Self {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client");
        JwtVerifier {
            issuer: issuer.trim_end_matches('/').to_string(),
            audiences: audiences.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
            http,
            keys: Mutex::new(None),
        }
    }

    async fn fetch_keys(&self) -> Result<JwkSet, Error> {
        let discovery: Discovery = self.get_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        self.get_json(&discovery.jwks_uri).await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, Error> {
        let unavailable =
            |e: reqwest::Error| Error::Unavailable(format!("cannot fetch the issuer's keys from {url}: {e}"));
        let resp = self.http.get(url).send().await.and_then(|r| r.error_for_status()).map_err(unavailable)?;
        resp.json().await.map_err(unavailable)
    }

    /// The key named `kid`, fetching the keys if they are not known yet, or if they were
    /// fetched long enough ago and `kid` is not among them.
    async fn key(&self, kid: &str) -> Result<DecodingKey, Error> {
        let mut keys = self.keys.lock().await;
        let stale = keys.as_ref().is_none_or(|(set, at)| set.find(kid).is_none() && at.elapsed() > REFETCH_AFTER);
        if stale {
            *keys = Some((self.fetch_keys().await?, Instant::now()));
        }
        let jwk = keys
            .as_ref()
            .and_then(|(set, _)| set.find(kid))
            .ok_or_else(|| unauthenticated("the token's signing key is unknown"))?;
        DecodingKey::from_jwk(jwk).map_err(|e| unauthenticated(format!("unusable signing key: {e}")))
    }

    /// The user a token names, or why it is refused.
    pub async fn user(&self, token: &str) -> Result<String, Error> {
        let header = decode_header(token).map_err(|_| unauthenticated("the token is not a JWT"))?;
        if !matches!(
            header.alg,
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::ES256 | Algorithm::ES384
        ) {
            return Err(unauthenticated("the token is not signed with a public-key algorithm"));
        }
        let kid = header.kid.ok_or_else(|| unauthenticated("the token names no signing key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.issuer]);
        // The audience is `aud` or, in Cognito's access tokens, `client_id`: checked below.
        v.validate_aud = false;
        let claims =
            decode::<Claims>(token, &key, &v).map_err(|e| unauthenticated(format!("invalid token: {e}")))?.claims;
        let ours = |a: Option<&str>| a.is_some_and(|a| self.audiences.iter().any(|x| x == a));
        let aud_ok = match &claims.aud {
            Some(Value::String(a)) => ours(Some(a)),
            Some(Value::Array(list)) => list.iter().any(|a| ours(a.as_str())),
            _ => ours(claims.client_id.as_deref()),
        };
        if !aud_ok {
            return Err(unauthenticated("the token is not for this API (audience)"));
        }
        let sub = claims.sub.ok_or_else(|| unauthenticated("the token has no subject"))?;
        validate_user_id(&sub).map_err(|_| unauthenticated("the token's subject is not a valid user_id"))?;
        Ok(sub)
    }
}

/// What the WebSocket functions need.
pub struct WsApp {
    pub connections: Connections,
    pub verifier: JwtVerifier,
    pub max_per_user: usize,
}

fn respond(status: i64, body: String) -> ApiGatewayProxyResponse {
    let mut r = ApiGatewayProxyResponse::default();
    r.status_code = status;
    r.body = Some(Body::Text(body));
    r
}

/// The API's JSON error, as the HTTP functions answer it.
fn refuse(e: &Error) -> ApiGatewayProxyResponse {
    let resp = crate::dispatch::error_response(e);
    respond(i64::from(resp.status().as_u16()), String::from_utf8_lossy(resp.body()).into_owned())
}

/// One event of the WebSocket API, whichever route it came by.
pub async fn ws_event(app: &WsApp, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
    let ctx = &event.request_context;
    let Some(connection_id) = ctx.connection_id.as_deref() else {
        return refuse(&Error::invalid("the event has no connection id"));
    };
    match ctx.route_key.as_deref() {
        Some("$connect") => {
            let token = event.query_string_parameters.first("token").map(str::to_string).or_else(|| {
                let h = event.headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
                h.strip_prefix("Bearer ").map(str::to_string)
            });
            let Some(token) = token else {
                return refuse(&unauthenticated("a token is required: wss://…?token=<JWT>"));
            };
            let user = match app.verifier.user(&token).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::info!(connection_id, error = %e, "websocket refused");
                    return refuse(&e);
                }
            };
            match app.connections.open(&user, connection_id, app.max_per_user).await {
                Ok(()) => {
                    tracing::info!(user, connection_id, "websocket connected");
                    respond(200, "{}".into())
                }
                Err(ConnectError::TooMany(n)) => {
                    refuse(&Error::RateLimited(format!("at most {n} connections per user; close one first"), 1))
                }
                Err(ConnectError::Store(e)) => refuse(&e),
            }
        }
        Some("$disconnect") => match app.connections.close(connection_id).await {
            Ok(user) => {
                tracing::info!(user = user.as_deref().unwrap_or("-"), connection_id, "websocket closed");
                respond(200, "{}".into())
            }
            // The row expires with the connection anyway; a failed cleanup is only logged.
            Err(e) => {
                tracing::warn!(connection_id, error = %e, "could not forget a closed connection");
                respond(200, "{}".into())
            }
        },
        _ => respond(200, im_shared::notify::answer_client_frame(event.body.as_deref().unwrap_or(""))),
    }
}

#[cfg(test)]
#[path = "ws_tests.rs"]
pub(crate) mod tests;

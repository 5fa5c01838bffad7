//! Who is calling. Locally: HS256 JWTs signed with `IM_JWT_SECRET`, the user id in `sub`. On AWS
//! (a later issue) the HTTP API's JWT authorizer has verified the token and the functions read
//! `sub` from its claims in the request context, never from anything the client controls.

use im_shared::Error;
use im_shared::ids::validate_user_id;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: i64,
}

pub struct Hs256 {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Hs256 {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        Hs256 { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// The caller named by an `Authorization` header value.
    pub fn caller(&self, authorization: Option<&str>) -> Result<String, Error> {
        self.session(authorization).map(|(user, _)| user)
    }

    /// The caller, and until when (epoch seconds) the token is accepted: its expiry plus the
    /// leeway. A WebSocket authenticated by it is closed then.
    pub fn session(&self, authorization: Option<&str>) -> Result<(String, i64), Error> {
        let header =
            authorization.ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("Authorization must be \"Bearer <token>\"".into()))?;
        let data = decode::<Claims>(token.trim(), &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthenticated(format!("invalid token: {e}")))?;
        validate_user_id(&data.claims.sub)
            .map_err(|_| Error::Unauthenticated("token subject is not a valid user_id".into()))?;
        Ok((data.claims.sub, data.claims.exp + self.validation.leeway as i64))
    }

    /// A token for `user_id`, valid for `ttl_secs` (the dev token route).
    pub fn issue(&self, user_id: &str, ttl_secs: i64) -> Result<String, Error> {
        let now = im_shared::time::now_ms() / 1000;
        encode(
            &Header::new(Algorithm::HS256),
            &Claims { sub: user_id.into(), exp: now + ttl_secs, iat: now },
            &self.encoding,
        )
        .map_err(|e| Error::Internal(format!("signing a token: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_others_are_refused() {
        let a = Hs256::new(b"secret-a");
        let b = Hs256::new(b"secret-b");
        let t = a.issue("alice", 60).unwrap();
        assert_eq!(a.caller(Some(&format!("Bearer {t}"))).unwrap(), "alice");
        assert!(matches!(b.caller(Some(&format!("Bearer {t}"))), Err(Error::Unauthenticated(_))));
        assert!(matches!(a.caller(None), Err(Error::Unauthenticated(_))));
        assert!(matches!(a.caller(Some(&t)), Err(Error::Unauthenticated(_))));
        let expired = a.issue("alice", -3600).unwrap();
        assert!(matches!(a.caller(Some(&format!("Bearer {expired}"))), Err(Error::Unauthenticated(_))));
    }
}

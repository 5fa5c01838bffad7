//! Who is calling. Locally: HS256 JWTs signed with `IM_JWT_SECRET`, the user id in `sub`. On AWS
//! (a later issue) the HTTP API's JWT authorizer has verified the token and the functions read
//! `sub` from its claims in the request context, never from anything the client controls.

use im_shared::Error;
use im_shared::ids::validate_user_id;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// Verified tokens remembered, at most. A client sends the same token with every request until
/// it renews it, so a few thousand cover the active users; past that the memory starts over.
const VERIFIED_CAP: usize = 4096;

/// How long past its `exp` a token is still accepted, for clocks that disagree a little.
const LEEWAY_SECS: i64 = 30;

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
    /// Tokens already verified: the token (signature included, so a forged one never matches)
    /// → its subject and until when it is accepted. Checking the HMAC, decoding base64 and
    /// parsing the claims took about a twentieth of the server's request CPU on a send.
    verified: Mutex<HashMap<Box<str>, (String, i64)>>,
}

impl Hs256 {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Expiry is checked by `session_at`, against its clock, for fresh and remembered tokens alike.
        validation.validate_exp = false;
        Hs256 {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// The caller named by an `Authorization` header value.
    pub fn caller(&self, authorization: Option<&str>) -> Result<String, Error> {
        self.session(authorization).map(|(user, _)| user)
    }

    /// The caller, and until when (epoch seconds) the token is accepted: its expiry plus the
    /// leeway. A WebSocket authenticated by it is closed then.
    pub fn session(&self, authorization: Option<&str>) -> Result<(String, i64), Error> {
        self.session_at(authorization, im_shared::time::now_ms() / 1000)
    }

    /// [`Self::session`] at `now` (epoch seconds).
    fn session_at(&self, authorization: Option<&str>, now: i64) -> Result<(String, i64), Error> {
        let header =
            authorization.ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer token".into()))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Error::Unauthenticated("Authorization must be \"Bearer <token>\"".into()))?
            .trim();
        let expired = || Error::Unauthenticated("the token has expired".into());
        let remembered = self.verified.lock().unwrap_or_else(PoisonError::into_inner).get(token).cloned();
        if let Some((user, until)) = remembered {
            return if now <= until { Ok((user, until)) } else { Err(expired()) };
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| Error::Unauthenticated(format!("invalid token: {e}")))?;
        validate_user_id(&data.claims.sub)
            .map_err(|_| Error::Unauthenticated("token subject is not a valid user_id".into()))?;
        let until = data.claims.exp.saturating_add(LEEWAY_SECS);
        if now > until {
            return Err(expired());
        }
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CAP {
            verified.clear();
        }
        verified.insert(token.into(), (data.claims.sub.clone(), until));
        Ok((data.claims.sub, until))
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

    #[test]
    fn a_remembered_token_still_expires_and_a_forged_one_is_never_taken_for_it() {
        let a = Hs256::new(b"secret-a");
        let t = a.issue("alice", 60).unwrap();
        let header = format!("Bearer {t}");
        let now = im_shared::time::now_ms() / 1000;
        let (user, until) = a.session_at(Some(&header), now).unwrap();
        assert_eq!(user, "alice");
        assert!((now + 60 + LEEWAY_SECS - until).abs() <= 1, "until {until}, now {now}");
        // Remembered now: the same answer while it holds, and refused once it has expired.
        assert_eq!(a.session_at(Some(&header), until).unwrap(), ("alice".to_string(), until));
        assert!(matches!(a.session_at(Some(&header), until + 1), Err(Error::Unauthenticated(_))));
        // The same claims signed with another key, or with the signature altered, are refused.
        let forged = Hs256::new(b"secret-b").issue("alice", 60).unwrap();
        assert!(matches!(a.session_at(Some(&format!("Bearer {forged}")), now), Err(Error::Unauthenticated(_))));
        // (A character well inside the signature: the last one carries padding bits.)
        let at = t.len() - 10;
        let flipped = if &t[at..=at] == "A" { "B" } else { "A" };
        let altered = format!("{}{flipped}{}", &t[..at], &t[at + 1..]);
        assert!(matches!(a.session_at(Some(&format!("Bearer {altered}")), now), Err(Error::Unauthenticated(_))));
        // A token that has expired the first time it is seen is refused too.
        let old = a.issue("alice", -LEEWAY_SECS - 5).unwrap();
        assert!(matches!(a.session_at(Some(&format!("Bearer {old}")), now), Err(Error::Unauthenticated(_))));
    }

    #[test]
    fn the_memory_of_verified_tokens_is_bounded() {
        let a = Hs256::new(b"secret-a");
        for i in 0..VERIFIED_CAP + 10 {
            let t = a.issue(&format!("user{i}"), 60).unwrap();
            assert_eq!(a.caller(Some(&format!("Bearer {t}"))).unwrap(), format!("user{i}"));
        }
        let remembered = a.verified.lock().unwrap().len();
        assert!((1..=VERIFIED_CAP).contains(&remembered), "{remembered}");
    }
}

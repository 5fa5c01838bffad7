//! The per-user send rate limit: a token bucket per sender, refilled at `rate` messages a
//! second up to `burst`. A send that finds the bucket empty is refused with `429` and the
//! whole seconds until a token is back (`Retry-After`), and writes nothing, so the client's
//! retry with the same `client_msg_id` later is an ordinary first send.
//!
//! The buckets live in the process: exact on the local server. On AWS each function instance
//! keeps its own, so the limit there is per instance (API Gateway's route throttling caps the
//! total).

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before full ones (senders idle long enough) are forgotten.
const PRUNE_ABOVE: usize = 10_000;

pub struct SendLimiter {
    /// Messages a second; 0 turns the limit off.
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SendLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        SendLimiter { rate, burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for one message of `user`, or says how long to wait.
    pub fn check(&self, user: &str) -> Result<()> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
        }
        let (tokens, at) = buckets.entry(user.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - *tokens) / self.rate).ceil().max(1.0) as u64;
        Err(Error::RateLimited(format!("too many messages: at most {} a second, retry in {wait} s", self.rate), wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_with_the_wait_then_tokens_come_back() {
        let l = SendLimiter::new(2.0, 3);
        for _ in 0..3 {
            l.check("a").unwrap();
        }
        match l.check("a") {
            Err(Error::RateLimited(_, wait)) => assert_eq!(wait, 1),
            other => panic!("{other:?}"),
        }
        l.check("b").expect("another user has a bucket of their own");
        std::thread::sleep(std::time::Duration::from_millis(600));
        l.check("a").expect("a token is back after half a second at 2/s");
        assert!(SendLimiter::new(0.0, 1).check("a").and_then(|_| SendLimiter::new(0.0, 1).check("a")).is_ok());
    }
}

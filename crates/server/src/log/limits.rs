//! Per-credential rate limiting: a token bucket for each submitter (PROTOCOL.md §6, 429). The map is
//! keyed by credential id, so it is bounded by the number of configured tokens.

use super::error::{ErrorKind, LogError};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Token buckets, one per credential.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` sustained requests with bursts of up to `burst`.
    pub fn new(per_second: f64, burst: u32) -> Self {
        RateLimiter {
            per_second,
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `id`'s bucket, or refuses with 429.
    pub fn check(&self, id: &str) -> Result<(), LogError> {
        self.check_at(id, Instant::now())
    }

    fn check_at(&self, id: &str, now: Instant) -> Result<(), LogError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry(id.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(LogError::new(
                ErrorKind::RateLimited,
                "rate limit exceeded for this credential; retry later",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills() {
        let r = RateLimiter::new(10.0, 2);
        let t = Instant::now();
        assert!(r.check_at("a", t).is_ok());
        assert!(r.check_at("a", t).is_ok());
        assert_eq!(
            r.check_at("a", t).map_err(|e| e.kind),
            Err(ErrorKind::RateLimited)
        );
        assert!(r.check_at("b", t).is_ok());
        assert!(r.check_at("a", t + Duration::from_millis(150)).is_ok());
    }
}

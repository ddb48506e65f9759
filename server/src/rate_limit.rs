//! Per-address rate limits (governor's GCRA) where a caller needs no secret of its own:
//! registration, whose deployment key is public by necessity (it ships in the page), and the
//! admin API, whose keys must not be guessable at network speed. Answers beyond a limit are 429
//! with `Retry-After` and the JSON error body.
//!
//! The address is the TCP peer, which `crate::serve` attaches to every request; behind a load
//! balancer `--client-ip-header` names the header that balancer sets (its rightmost value is the
//! one the balancer appended). Requests handled in process without a peer (tests calling the
//! router directly) are not limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{Error, Result};

/// A sustained rate and the burst allowed on top of it; `per_minute = 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl RateLimit {
    pub const OFF: Self = Self {
        per_minute: 0,
        burst: 0,
    };

    fn limiter(self) -> Option<DefaultKeyedRateLimiter<IpAddr>> {
        let rate = NonZeroU32::new(self.per_minute)?;
        let burst = NonZeroU32::new(self.burst).unwrap_or(rate);
        Some(governor::RateLimiter::keyed(
            Quota::per_minute(rate).allow_burst(burst),
        ))
    }
}

/// The limiters of one server process (each replica limits on its own).
pub struct RateLimits {
    register: Option<DefaultKeyedRateLimiter<IpAddr>>,
    admin: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Addresses refused every leader call until the instant, after too many failed ones.
    blocked_leaders: Mutex<HashMap<IpAddr, Instant>>,
}

impl RateLimits {
    pub fn new(register: RateLimit, admin: RateLimit) -> Self {
        Self {
            register: register.limiter(),
            admin: admin.limiter(),
            blocked_leaders: Mutex::new(HashMap::new()),
        }
    }

    /// One call to a helper from `peer`, whose leader token was `authenticated` or not. A leader
    /// calls its helper once per device upload of a secure round, so its authenticated calls are
    /// not limited (counted like admin requests, they capped a round's ingest at the admin
    /// burst). Failed ones count against the admin limit, and an address past it is refused
    /// every call — the right token too — until its wait is over: a guesser cannot tell a hit.
    pub fn leader_call(&self, peer: Option<IpAddr>, authenticated: bool) -> Result<()> {
        let (Some(limiter), Some(peer)) = (self.admin.as_ref(), peer) else {
            return Ok(());
        };
        let now = Instant::now();
        let mut blocked = self.blocked_leaders.lock().expect("not poisoned");
        if let Some(&until) = blocked.get(&peer) {
            if until > now {
                return Err(Error::TooManyRequests {
                    what: "failed leader authentications",
                    retry_after: (until - now).max(Duration::from_secs(1)),
                });
            }
            blocked.remove(&peer);
        }
        if authenticated {
            return Ok(());
        }
        limiter.check_key(&peer).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            blocked.insert(peer, now + wait);
            Error::TooManyRequests {
                what: "failed leader authentications",
                retry_after: wait.max(Duration::from_secs(1)),
            }
        })
    }

    /// One registration from `peer`.
    pub fn register(&self, peer: Option<IpAddr>) -> Result<()> {
        check(self.register.as_ref(), peer, "registrations")
    }

    /// One admin request from `peer`, counted before its key is checked (so a blocked address
    /// cannot learn whether a guess was right).
    pub fn admin(&self, peer: Option<IpAddr>) -> Result<()> {
        check(self.admin.as_ref(), peer, "admin requests")
    }

    /// Forgets addresses whose buckets are full again (bounded memory under many addresses).
    pub fn forget_idle(&self) {
        for limiter in [&self.register, &self.admin].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        self.blocked_leaders
            .lock()
            .expect("not poisoned")
            .retain(|_, until| *until > now);
    }
}

fn check(
    limiter: Option<&DefaultKeyedRateLimiter<IpAddr>>,
    peer: Option<IpAddr>,
    what: &'static str,
) -> Result<()> {
    let (Some(limiter), Some(peer)) = (limiter, peer) else {
        return Ok(());
    };
    limiter.check_key(&peer).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Error::TooManyRequests {
            what,
            retry_after: wait.max(Duration::from_secs(1)),
        }
    })
}

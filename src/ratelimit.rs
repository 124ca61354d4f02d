//! Limits on failures per key: per address at the token endpoints, per address and per account
//! at the sign-in pages. Client secrets are
//! 256-bit and cannot be guessed online; the limit is there so one address cannot flood the audit
//! log or burn the server's CPU with failures. Fixed one-minute windows, per node, bounded memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::UnixTime;

const WINDOW: i64 = 60;

/// Seconds until the current window ends and a blocked address or account may try again.
pub fn seconds_until_reset(now: UnixTime) -> i64 {
    WINDOW - now.rem_euclid(WINDOW)
}
const MAX_TRACKED: usize = 100_000;

pub struct FailureLimiter<K = IpAddr> {
    per_minute: u32,
    state: Mutex<(i64, HashMap<K, u32>)>,
}

impl<K: std::hash::Hash + Eq> FailureLimiter<K> {
    /// `per_minute` = 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        FailureLimiter {
            per_minute,
            state: Mutex::new((0, HashMap::new())),
        }
    }

    fn window(now: UnixTime) -> i64 {
        now.div_euclid(WINDOW)
    }

    /// True when `ip` has used up its failures in the current window.
    pub fn is_blocked(&self, ip: K, now: UnixTime) -> bool {
        if self.per_minute == 0 {
            return false;
        }
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        guard.0 == Self::window(now) && guard.1.get(&ip).is_some_and(|n| *n >= self.per_minute)
    }

    /// Records one failure; returns true if this failure reached the limit.
    pub fn record_failure(&self, ip: K, now: UnixTime) -> bool {
        if self.per_minute == 0 {
            return false;
        }
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let window = Self::window(now);
        if guard.0 != window || guard.1.len() >= MAX_TRACKED {
            guard.0 = window;
            guard.1.clear();
        }
        let n = guard.1.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        *n == self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_turns() {
        let l = FailureLimiter::new(3);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        assert!(!l.record_failure(ip, 120));
        assert!(!l.record_failure(ip, 121));
        assert!(!l.is_blocked(ip, 121));
        assert!(l.record_failure(ip, 122));
        assert!(l.is_blocked(ip, 150));
        assert!(!l.is_blocked(other, 150));
        assert!(!l.is_blocked(ip, 180), "a new window");
        assert!(!FailureLimiter::<IpAddr>::new(0).is_blocked(ip, 1));
    }
}

//! The issuer's revocation feed, held in memory next to the JWKS (Sigil's
//! `/realms/{realm}/revocations`): revoked access tokens (`jti`), ended sessions (`sid`),
//! disabled users (`sub`) and disabled clients (`client`), the last two with the time before which
//! their tokens were issued. A background task polls the feed
//! (default every 5 s) with the resource server's client credentials; each page is a JWS
//! (`typ: revocations+jwt`) verified with the issuer's keys and checked to be addressed to this
//! client, for the cursor asked, and fresh. If the feed cannot be read, the last list is kept for
//! a bounded stale period (default 2 min past the last success); after that every token is
//! refused until the feed answers again: no revocation is silently missed.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

/// How the feed is read.
#[derive(Clone)]
pub(crate) struct FeedConfig {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    pub interval: Duration,
    pub stale_period: i64,
}

impl std::fmt::Debug for FeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What stopped being valid, as last read.
#[derive(Debug, Default, Clone)]
pub(crate) struct RevocationSet {
    /// `jti` -> the token's `exp` (kept until then).
    jtis: HashMap<String, i64>,
    /// `sid` -> until when.
    sids: HashMap<String, i64>,
    /// `client_id` -> (tokens issued before this are revoked, until when).
    clients: HashMap<String, (i64, i64)>,
    /// `sub` (a disabled user) -> (tokens issued before this are revoked, until when).
    subs: HashMap<String, (i64, i64)>,
    /// The cursor to ask from next.
    pub cursor: i64,
    /// When the feed last answered (the clock's seconds); `i64::MIN` before the first answer.
    pub fetched_at: i64,
}

impl RevocationSet {
    pub fn new() -> RevocationSet {
        RevocationSet {
            fetched_at: i64::MIN,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.jtis.len() + self.sids.len() + self.clients.len() + self.subs.len()
    }

    /// Whether a token with these claims was revoked.
    pub fn revokes(&self, t: &Named<'_>) -> bool {
        if self.len() == 0 {
            return false;
        }
        // Issued in the second of the revocation or before it (seconds cannot order the two), or
        // without `iat`: cannot show it came after.
        let issued_before = |(not_before, _): &(i64, i64)| t.iat.is_none_or(|at| at <= *not_before);
        t.jti.is_some_and(|j| self.jtis.contains_key(j))
            || t.sid.is_some_and(|s| self.sids.contains_key(s))
            || t.client_id
                .and_then(|c| self.clients.get(c))
                .is_some_and(issued_before)
            || t.sub
                .and_then(|s| self.subs.get(s))
                .is_some_and(issued_before)
    }

    /// Adds a page's entries (seen before or not: the same entry twice is one) and drops those
    /// expired by more than `leeway` (the validator accepts tokens that long past their `exp`).
    pub fn apply(&mut self, page: &Page, now: i64, leeway: i64) {
        for e in &page.entries {
            match e.kind.as_str() {
                "jti" => {
                    self.jtis.insert(e.value.clone(), e.exp);
                }
                "sid" => {
                    self.sids.insert(e.value.clone(), e.exp);
                }
                "client" | "sub" => {
                    let map = if e.kind == "sub" {
                        &mut self.subs
                    } else {
                        &mut self.clients
                    };
                    let entry = map.entry(e.value.clone()).or_insert((i64::MIN, 0));
                    entry.0 = entry.0.max(e.not_before);
                    entry.1 = entry.1.max(e.exp);
                }
                _ => {} // a kind this validator does not know: newer issuers may add some
            }
        }
        let horizon = now - leeway;
        self.jtis.retain(|_, exp| *exp > horizon);
        self.sids.retain(|_, exp| *exp > horizon);
        self.clients.retain(|_, (_, exp)| *exp > horizon);
        self.subs.retain(|_, (_, exp)| *exp > horizon);
        self.fetched_at = now;
    }
}

/// The claims of a token the feed can name.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Named<'a> {
    pub jti: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub sub: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub iat: Option<i64>,
}

/// One verified page of the feed.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub after: i64,
    pub next: i64,
    #[serde(default)]
    pub more: bool,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Entry {
    #[serde(default)]
    pub seq: i64,
    pub kind: String,
    pub value: String,
    #[serde(default)]
    pub not_before: i64,
    pub exp: i64,
}

/// The media type of a feed page.
pub(crate) const TYP: &str = "revocations+jwt";

#[cfg(test)]
mod tests {
    use super::*;

    fn page(entries: Vec<Entry>, next: i64) -> Page {
        Page {
            iss: "i".into(),
            aud: "a".into(),
            iat: 0,
            after: 0,
            next,
            more: false,
            entries,
        }
    }

    fn entry(kind: &str, value: &str, not_before: i64, exp: i64) -> Entry {
        Entry {
            seq: 0,
            kind: kind.into(),
            value: value.into(),
            not_before,
            exp,
        }
    }

    #[test]
    fn entries_revoke_what_they_name_until_they_expire() {
        let mut set = RevocationSet::new();
        set.apply(
            &page(
                vec![
                    entry("jti", "j1", 0, 200),
                    entry("sid", "s1", 0, 200),
                    entry("client", "c1", 100, 200),
                    entry("sub", "u1", 100, 200),
                    entry("future-kind", "x", 0, 200),
                ],
                7,
            ),
            50,
            60,
        );
        assert_eq!((set.len(), set.fetched_at), (4, 50));
        let jti = |j| Named {
            jti: Some(j),
            ..Default::default()
        };
        let by = |client: Option<&'static str>, sub: Option<&'static str>, iat| Named {
            client_id: client,
            sub,
            iat,
            ..Default::default()
        };
        assert!(set.revokes(&jti("j1")));
        assert!(!set.revokes(&jti("j2")));
        assert!(set.revokes(&Named {
            sid: Some("s1"),
            ..Default::default()
        }));
        for (client, sub) in [(Some("c1"), None), (None, Some("u1"))] {
            assert!(set.revokes(&by(client, sub, Some(99))));
            assert!(set.revokes(&by(client, sub, Some(100))), "the same second");
            assert!(!set.revokes(&by(client, sub, Some(101))), "issued after");
            assert!(set.revokes(&by(client, sub, None)), "no iat");
        }
        assert!(!set.revokes(&by(Some("c2"), Some("u2"), Some(0))));
        // Past their expiry, entries stay for the leeway (tokens are accepted that long).
        set.apply(&page(vec![], 3), 250, 60);
        assert!(set.revokes(&jti("j1")));
        // A page with nothing new, later: expired entries go; the cursor never moves back.
        set.apply(&page(vec![], 3), 261, 60);
        assert_eq!(set.len(), 0);
        assert!(!set.revokes(&Named {
            jti: Some("j1"),
            sid: Some("s1"),
            sub: Some("u1"),
            client_id: Some("c1"),
            iat: Some(0),
        }));
    }
}

//! The tag revalidation decision, as a pure function of time.
//!
//! Timeline of a tag entry fetched at `t`:
//!
//! ```text
//! t ............ t+ttl ................ t+ttl+grace ........
//!   Fresh: use    Stale: revalidate       Expired: fetch anew
//!                 (serve if unreachable)  (fail if unreachable)
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::entry::TagEntry;

/// How long after a failed revalidation the next request serves the stale
/// mapping without probing again. Without it, every request for a tag of a
/// dead upstream would wait for a full connect timeout in turn (moka runs
/// compute calls for one key serially).
pub const DEFAULT_UNREACHABLE_BACKOFF: Duration = Duration::from_secs(1);

/// Timing parameters, from [`super::CacheConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagPolicy {
    /// Time a mapping is used without asking the upstream.
    pub ttl: Duration,
    /// Time after `ttl` during which an unreachable upstream is covered.
    pub stale_grace: Duration,
    /// See [`DEFAULT_UNREACHABLE_BACKOFF`].
    pub unreachable_backoff: Duration,
}

impl TagPolicy {
    /// Total time moka keeps a tag entry: past it, the entry is useless.
    pub fn lifetime(&self) -> Duration {
        self.ttl.saturating_add(self.stale_grace)
    }
}

/// Age class of a tag entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Younger than the TTL.
    Fresh,
    /// Past the TTL, within the grace window.
    Stale,
    /// Past TTL + grace.
    Expired,
}

/// What the caller learnt about the upstream so far in this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamState {
    /// The upstream has not been asked (first decision of a request).
    NotAsked,
    /// A probe failed with a connection error, timeout or 5xx.
    Unreachable,
}

/// What to do with a tag request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDecision {
    /// Fresh: answer with this digest, no upstream traffic.
    Use(Arc<str>),
    /// Stale: HEAD the tag upstream; this is the digest believed so far.
    Revalidate(Arc<str>),
    /// Stale and the upstream is unreachable: answer with this digest and
    /// flag the answer as stale (metric and response header).
    ServeStale(Arc<str>),
    /// Nothing usable cached: ask the upstream.
    Fetch,
    /// Nothing usable cached and the upstream is unreachable: answer an error.
    Fail,
}

/// Classifies an entry's age at `now`.
pub fn freshness(entry: &TagEntry, now: Instant, policy: &TagPolicy) -> Freshness {
    let age = now.saturating_duration_since(entry.fetched_at);
    if age < policy.ttl {
        Freshness::Fresh
    } else if age < policy.lifetime() {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

/// The revalidation decision: fresh → use; stale → revalidate (or serve stale
/// if the upstream just proved unreachable, or failed within the backoff);
/// expired or absent → fetch (or fail if unreachable).
pub fn decide(
    entry: Option<&TagEntry>,
    now: Instant,
    policy: &TagPolicy,
    upstream: UpstreamState,
) -> TagDecision {
    let Some(entry) = entry else {
        return match upstream {
            UpstreamState::NotAsked => TagDecision::Fetch,
            UpstreamState::Unreachable => TagDecision::Fail,
        };
    };
    let digest = Arc::clone(&entry.digest);
    match (freshness(entry, now, policy), upstream) {
        (Freshness::Fresh, _) => TagDecision::Use(digest),
        (Freshness::Stale, UpstreamState::Unreachable) => TagDecision::ServeStale(digest),
        (Freshness::Stale, UpstreamState::NotAsked) => {
            let recently_failed = entry
                .failed_at
                .is_some_and(|f| now.saturating_duration_since(f) < policy.unreachable_backoff);
            if recently_failed {
                TagDecision::ServeStale(digest)
            } else {
                TagDecision::Revalidate(digest)
            }
        }
        (Freshness::Expired, UpstreamState::NotAsked) => TagDecision::Fetch,
        (Freshness::Expired, UpstreamState::Unreachable) => TagDecision::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: TagPolicy = TagPolicy {
        ttl: Duration::from_secs(30),
        stale_grace: Duration::from_secs(300),
        unreachable_backoff: Duration::from_secs(1),
    };

    fn entry(t0: Instant) -> TagEntry {
        TagEntry::new("sha256:aa", t0)
    }

    #[test]
    fn freshness_boundaries() {
        let t0 = Instant::now();
        let e = entry(t0);
        assert_eq!(freshness(&e, t0, &POLICY), Freshness::Fresh);
        assert_eq!(
            freshness(&e, t0 + Duration::from_secs(29), &POLICY),
            Freshness::Fresh
        );
        assert_eq!(
            freshness(&e, t0 + Duration::from_secs(30), &POLICY),
            Freshness::Stale
        );
        assert_eq!(
            freshness(&e, t0 + Duration::from_secs(329), &POLICY),
            Freshness::Stale
        );
        assert_eq!(
            freshness(&e, t0 + Duration::from_secs(330), &POLICY),
            Freshness::Expired
        );
        // A clock that seems to go backwards is treated as age zero.
        assert_eq!(
            freshness(
                &TagEntry::new("sha256:aa", t0 + Duration::from_secs(5)),
                t0,
                &POLICY
            ),
            Freshness::Fresh
        );
    }

    #[test]
    fn decision_table() {
        use TagDecision::*;
        use UpstreamState::*;
        let t0 = Instant::now();
        let e = entry(t0);
        let d: Arc<str> = Arc::from("sha256:aa");
        let fresh = t0 + Duration::from_secs(1);
        let stale = t0 + Duration::from_secs(60);
        let expired = t0 + Duration::from_secs(400);
        assert_eq!(decide(None, t0, &POLICY, NotAsked), Fetch);
        assert_eq!(decide(None, t0, &POLICY, Unreachable), Fail);
        assert_eq!(decide(Some(&e), fresh, &POLICY, NotAsked), Use(d.clone()));
        assert_eq!(
            decide(Some(&e), fresh, &POLICY, Unreachable),
            Use(d.clone())
        );
        assert_eq!(
            decide(Some(&e), stale, &POLICY, NotAsked),
            Revalidate(d.clone())
        );
        assert_eq!(
            decide(Some(&e), stale, &POLICY, Unreachable),
            ServeStale(d.clone())
        );
        assert_eq!(decide(Some(&e), expired, &POLICY, NotAsked), Fetch);
        assert_eq!(decide(Some(&e), expired, &POLICY, Unreachable), Fail);
    }

    #[test]
    fn recent_failure_serves_stale_without_probing() {
        let t0 = Instant::now();
        let stale = t0 + Duration::from_secs(60);
        let failed = TagEntry {
            failed_at: Some(stale),
            ..entry(t0)
        };
        assert!(matches!(
            decide(
                Some(&failed),
                stale + Duration::from_millis(500),
                &POLICY,
                UpstreamState::NotAsked
            ),
            TagDecision::ServeStale(_)
        ));
        assert!(matches!(
            decide(
                Some(&failed),
                stale + Duration::from_secs(2),
                &POLICY,
                UpstreamState::NotAsked
            ),
            TagDecision::Revalidate(_)
        ));
    }

    #[test]
    fn zero_ttl_always_revalidates_and_zero_grace_never_serves_stale() {
        let t0 = Instant::now();
        let e = entry(t0);
        let always = TagPolicy {
            ttl: Duration::ZERO,
            ..POLICY
        };
        assert!(matches!(
            decide(Some(&e), t0, &always, UpstreamState::NotAsked),
            TagDecision::Revalidate(_)
        ));
        let no_grace = TagPolicy {
            stale_grace: Duration::ZERO,
            ..POLICY
        };
        let later = t0 + Duration::from_secs(31);
        assert_eq!(
            decide(Some(&e), later, &no_grace, UpstreamState::Unreachable),
            TagDecision::Fail
        );
    }
}

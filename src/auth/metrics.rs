//! Counters the proxy exports (it owns the Prometheus registry; this module
//! only counts, so it has no metrics dependency). Decisions are counted by
//! the glue from [`crate::auth::error::AuthError::reason`].

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters, shared by all issuers.
#[derive(Debug, Default)]
pub struct Counters {
    /// JWKS fetch attempts (discovery included).
    pub jwks_fetches: AtomicU64,
    /// Failed JWKS fetches.
    pub jwks_fetch_errors: AtomicU64,
    /// Introspection calls made (cache misses).
    pub introspection_calls: AtomicU64,
    /// Failed introspection calls.
    pub introspection_errors: AtomicU64,
    /// Verified-token cache hits: one per request with a known token, so counted per
    /// thread ([`crate::shard`]).
    pub token_cache_hits: crate::shard::Counter,
    /// Full validations (signature checked).
    pub token_validations: AtomicU64,
    /// Token endpoint exchanges at the IdP.
    pub idp_exchanges: AtomicU64,
}

/// A point-in-time copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CounterSnapshot {
    /// See [`Counters::jwks_fetches`].
    pub jwks_fetches: u64,
    /// See [`Counters::jwks_fetch_errors`].
    pub jwks_fetch_errors: u64,
    /// See [`Counters::introspection_calls`].
    pub introspection_calls: u64,
    /// See [`Counters::introspection_errors`].
    pub introspection_errors: u64,
    /// See [`Counters::token_cache_hits`].
    pub token_cache_hits: u64,
    /// See [`Counters::token_validations`].
    pub token_validations: u64,
    /// See [`Counters::idp_exchanges`].
    pub idp_exchanges: u64,
}

impl Counters {
    /// Read all counters.
    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            jwks_fetches: r(&self.jwks_fetches),
            jwks_fetch_errors: r(&self.jwks_fetch_errors),
            introspection_calls: r(&self.introspection_calls),
            introspection_errors: r(&self.introspection_errors),
            token_cache_hits: self.token_cache_hits.get(),
            token_validations: r(&self.token_validations),
            idp_exchanges: r(&self.idp_exchanges),
        }
    }
}

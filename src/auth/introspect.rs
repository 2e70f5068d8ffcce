//! RFC 7662 introspection for opaque access tokens.
//!
//! Answers (active or not) are cached for a short time: long enough to take
//! the IdP off the hot path, short enough that revocation takes effect
//! quickly. Inactive answers are cached too, so a client retrying with a
//! revoked token cannot turn the proxy into an amplifier against the IdP.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::auth::config::{IntrospectionConfig, IssuerConfig};
use crate::auth::error::{InvalidReason, TokenError};
use crate::auth::fetch::send;
use crate::auth::metrics::Counters;
use crate::auth::secret::Secret;

type Outcome = Result<Arc<serde_json::Value>, InvalidReason>;

/// Introspection client of one issuer.
pub struct Introspector {
    endpoint: String,
    client_id: String,
    client_secret: Secret,
    ttl: u64,
    http: reqwest::Client,
    cache: moka::future::Cache<[u8; 32], Outcome>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// Build from config.
    pub fn new(cfg: &IntrospectionConfig, http: reqwest::Client, counters: Arc<Counters>) -> Self {
        Self {
            endpoint: cfg.endpoint.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: cfg.client_secret.clone(),
            ttl: cfg.cache_seconds,
            http,
            cache: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(cfg.cache_seconds.max(1)))
                .build(),
            counters,
        }
    }

    /// Introspect; returns the claims and until when they may be trusted.
    pub async fn introspect(
        &self,
        token: &str,
        issuer: &IssuerConfig,
        now: u64,
    ) -> Result<(Arc<serde_json::Value>, u64), TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let outcome = match self.cache.get(&key).await {
            Some(o) => o,
            None => {
                let o = self.call(token).await?;
                self.cache.insert(key, o.clone()).await;
                o
            }
        };
        let claims = outcome?;
        check_claims(&claims, issuer, now)?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_u64())
            .unwrap_or(u64::MAX);
        Ok((claims, exp.min(now.saturating_add(self.ttl))))
    }

    async fn call(&self, token: &str) -> Result<Outcome, TokenError> {
        self.counters
            .introspection_calls
            .fetch_add(1, Ordering::Relaxed);
        let req = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(self.client_secret.expose()))
            .header("accept", "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let fail = |e: String| {
            self.counters
                .introspection_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(endpoint = %self.endpoint, error = %e, "introspection failed");
            TokenError::Unavailable("introspection")
        };
        let (status, body) = send(req).await.map_err(|e| fail(e.to_string()))?;
        if status != 200 {
            return Err(fail(format!("status {status}")));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        if v.get("active").and_then(|a| a.as_bool()) != Some(true) {
            return Ok(Err(InvalidReason::Inactive));
        }
        Ok(Ok(Arc::new(v)))
    }
}

/// An active answer still has to be for us: issuer, audience, expiry, and
/// not a refresh or ID token.
fn check_claims(
    v: &serde_json::Value,
    issuer: &IssuerConfig,
    now: u64,
) -> Result<(), InvalidReason> {
    if let Some(iss) = v.get("iss").and_then(|i| i.as_str()) {
        if iss != issuer.issuer {
            return Err(InvalidReason::UnknownIssuer);
        }
    }
    let auds = crate::auth::rules::string_list(v, "aud");
    if !auds.is_empty() && !auds.iter().any(|a| issuer.audiences.contains(a)) {
        return Err(InvalidReason::WrongAudience);
    }
    if v.get("exp")
        .and_then(|e| e.as_u64())
        .is_some_and(|exp| exp.saturating_add(issuer.leeway_seconds) < now)
    {
        return Err(InvalidReason::Expired);
    }
    if v.get("nbf")
        .and_then(|e| e.as_u64())
        .is_some_and(|nbf| nbf > now.saturating_add(issuer.leeway_seconds))
    {
        return Err(InvalidReason::NotYetValid);
    }
    if v.get("token_type").and_then(|t| t.as_str()) == Some("refresh_token") {
        return Err(InvalidReason::NotAccessToken);
    }
    crate::auth::token_kind::check_kind_claims(v)?;
    Ok(())
}

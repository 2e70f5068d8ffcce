//! Verification keys per issuer: OIDC discovery or a `jwks_uri`, or static
//! PEM keys.
//!
//! Rotation without restart: a token whose `kid` is unknown triggers one
//! refetch. Refetches are single-flight (concurrent misses wait for the one
//! fetch in progress, then look again) and rate-limited by a cool-down, so a
//! flood of tokens with random `kid`s costs the IdP at most one request per
//! cool-down. On fetch failure the last good key set stays in use.
//!
//! Keys named by the token itself (`jku`, `x5u`, an embedded `jwk`) are never
//! fetched or trusted: the issuer's configuration is the only source.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::auth::config::StaticKey;
use crate::auth::error::{ConfigError, TokenError};
use crate::auth::fetch::{get_json, FetchError};
use crate::auth::metrics::Counters;

/// One verification key.
#[derive(Clone)]
pub struct VerifyKey {
    /// `kid`, if the source named it.
    pub kid: Option<String>,
    /// The JWK's `alg`, if given: tokens must then use exactly it.
    pub alg: Option<Algorithm>,
    /// The key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish()
    }
}

impl VerifyKey {
    /// Whether this key may verify a token signed with `alg`: same family
    /// (an RSA key never verifies an HMAC or EC signature) and, when the key
    /// declares an `alg`, that exact one.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// A snapshot of an issuer's keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
    /// Bumped on every successful fetch; lets waiters see that someone else
    /// already refreshed while they queued.
    generation: u64,
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// Keys that may verify a token with this header. With a `kid`, only
    /// keys of that `kid`; without, every compatible key (the set is small).
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&VerifyKey> {
        self.keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .filter(|k| k.accepts(alg))
            .collect()
    }

    /// Whether a key has this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parse a JWKS document. Entries that are not usable signature keys
    /// (encryption keys, symmetric `oct` keys, unknown types) are skipped
    /// rather than failing the whole set, so one exotic key at the IdP does
    /// not lock everyone out.
    pub fn from_jwks(doc: &serde_json::Value) -> Self {
        let mut keys = Vec::new();
        for v in doc
            .get("keys")
            .and_then(|k| k.as_array())
            .into_iter()
            .flatten()
        {
            if v.get("use")
                .and_then(|u| u.as_str())
                .is_some_and(|u| u != "sig")
            {
                continue;
            }
            if v.get("kty").and_then(|k| k.as_str()) == Some("oct") {
                continue;
            }
            let Ok(jwk) = serde_json::from_value::<Jwk>(v.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                continue;
            }
            let alg = match v.get("alg").and_then(|a| a.as_str()) {
                Some(a) => match Algorithm::from_str(a) {
                    Ok(a) => Some(a),
                    Err(_) => continue,
                },
                None => None,
            };
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        Self {
            keys,
            generation: 0,
            fetched_at: None,
        }
    }

    /// Build from static PEM keys.
    pub fn from_static(issuer: &str, keys: &[StaticKey]) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::Key {
            issuer: issuer.to_owned(),
            reason,
        };
        let mut out = Vec::new();
        for k in keys {
            let pem = match (&k.pem, &k.pem_file) {
                (Some(p), None) => p.as_bytes().to_vec(),
                (None, Some(f)) => {
                    std::fs::read(f).map_err(|e| err(format!("reading {}: {e}", f.display())))?
                }
                _ => return Err(err("a static key needs exactly one of pem, pem_file".into())),
            };
            out.push(VerifyKey {
                kid: k.kid.clone(),
                alg: None,
                key: decoding_key_from_pem(&pem).map_err(err)?,
            });
        }
        Ok(Self {
            keys: out,
            generation: 1,
            fetched_at: None,
        })
    }
}

/// A PEM public key or certificate, whatever its type (RSA, EC, Ed25519).
pub fn decoding_key_from_pem(pem: &[u8]) -> Result<DecodingKey, String> {
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| "not a PEM RSA, EC or Ed25519 public key or certificate".to_owned())
}

#[derive(Debug)]
enum Source {
    Discovery,
    Uri(String),
    Static,
}

#[derive(Debug, Default)]
struct RefreshState {
    last_attempt: Option<Instant>,
    /// `jwks_uri` learnt from discovery (re-discovered if a fetch fails).
    jwks_uri: Option<String>,
}

/// The key cache of one issuer.
#[derive(Debug)]
pub struct JwksCache {
    issuer: String,
    source: Source,
    http: reqwest::Client,
    current: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    generation: AtomicU64,
    cooldown: Duration,
    max_age: Duration,
    counters: Arc<Counters>,
}

impl JwksCache {
    /// Keys from discovery (`jwks_uri = None`) or a JWKS URL; nothing is
    /// fetched until first use (or [`JwksCache::refresh_now`]), so the proxy
    /// starts even while the IdP is down.
    pub fn remote(
        issuer: &str,
        jwks_uri: Option<String>,
        http: reqwest::Client,
        cooldown: Duration,
        max_age: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            source: jwks_uri.map_or(Source::Discovery, Source::Uri),
            http,
            current: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            generation: AtomicU64::new(0),
            cooldown,
            max_age,
            counters,
        }
    }

    /// Fixed keys; never refetched.
    pub fn fixed(
        issuer: &str,
        set: KeySet,
        http: reqwest::Client,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            source: Source::Static,
            http,
            current: RwLock::new(Arc::new(set)),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            generation: AtomicU64::new(1),
            cooldown: Duration::MAX,
            max_age: Duration::MAX,
            counters,
        }
    }

    /// Current snapshot (cheap: an `Arc` clone under a read lock).
    pub fn snapshot(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Keys to verify a token with this `kid`: the snapshot if it knows the
    /// `kid` (or the token has none) and is fresh; otherwise after one
    /// single-flight, cool-down-limited refetch.
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, TokenError> {
        let snap = self.snapshot();
        let loaded = snap.generation > 0;
        let fresh = snap.fetched_at.is_none_or(|t| t.elapsed() < self.max_age);
        let known = kid.is_none_or(|k| snap.has_kid(k));
        if matches!(self.source, Source::Static) || (loaded && fresh && known) {
            return Ok(snap);
        }
        self.refresh_if_due(snap).await
    }

    /// Force a fetch now (startup warm-up, tests). Ignores the cool-down.
    pub async fn refresh_now(&self) -> Result<Arc<KeySet>, TokenError> {
        // Static keys have nothing to fetch: "refreshing" them would replace them with
        // an empty set (the start-up warm-up did, and every token became unknown-kid).
        if matches!(self.source, Source::Static) {
            return Ok(self.snapshot());
        }
        let mut st = self.refresh.lock().await;
        self.fetch_locked(&mut st).await
    }

    async fn refresh_if_due(&self, seen: Arc<KeySet>) -> Result<Arc<KeySet>, TokenError> {
        let mut st = self.refresh.lock().await;
        // Someone refreshed while we waited for the lock: use their result.
        if self.generation.load(Ordering::Acquire) != seen.generation {
            return Ok(self.snapshot());
        }
        if st.last_attempt.is_some_and(|t| t.elapsed() < self.cooldown) {
            return if seen.generation > 0 {
                Ok(seen)
            } else {
                Err(TokenError::Unavailable("jwks"))
            };
        }
        match self.fetch_locked(&mut st).await {
            Ok(s) => Ok(s),
            // Keep serving the last good keys when the IdP is down.
            Err(e) if seen.generation == 0 => Err(e),
            Err(_) => Ok(seen),
        }
    }

    async fn fetch_locked(&self, st: &mut RefreshState) -> Result<Arc<KeySet>, TokenError> {
        st.last_attempt = Some(Instant::now());
        self.counters.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch(st).await {
            Ok(mut set) => {
                let gen = self.generation.load(Ordering::Acquire) + 1;
                set.generation = gen;
                set.fetched_at = Some(Instant::now());
                let set = Arc::new(set);
                match self.current.write() {
                    Ok(mut g) => *g = set.clone(),
                    Err(poisoned) => *poisoned.into_inner() = set.clone(),
                }
                self.generation.store(gen, Ordering::Release);
                tracing::info!(issuer = %self.issuer, keys = set.len(), "jwks refreshed");
                Ok(set)
            }
            Err(e) => {
                self.counters
                    .jwks_fetch_errors
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(issuer = %self.issuer, error = %e, "jwks fetch failed");
                Err(TokenError::Unavailable("jwks"))
            }
        }
    }

    async fn fetch(&self, st: &mut RefreshState) -> Result<KeySet, FetchError> {
        let uri = match &self.source {
            Source::Static => return Ok(KeySet::default()),
            Source::Uri(u) => u.clone(),
            Source::Discovery => match st.jwks_uri.clone() {
                Some(u) => u,
                None => {
                    let u = self.discover().await?;
                    st.jwks_uri = Some(u.clone());
                    u
                }
            },
        };
        let doc = match get_json(&self.http, &uri).await {
            Ok(d) => d,
            Err(e) => {
                // The IdP may have moved its JWKS: rediscover next time.
                st.jwks_uri = None;
                return Err(e);
            }
        };
        Ok(KeySet::from_jwks(&doc))
    }

    /// OIDC discovery. The document's `issuer` must equal ours exactly
    /// (OIDC Discovery §4.3), and the JWKS must not downgrade to plain HTTP
    /// unless the issuer itself is plain HTTP (tests on loopback).
    async fn discover(&self) -> Result<String, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let doc = get_json(&self.http, &url).await?;
        if doc.get("issuer").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(FetchError::Json("discovery issuer mismatch".into()));
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or_else(|| FetchError::Json("no jwks_uri".into()))?;
        let ok_scheme = jwks.starts_with("https://")
            || (jwks.starts_with("http://") && self.issuer.starts_with("http://"));
        if !ok_scheme {
            return Err(FetchError::Json("jwks_uri scheme not allowed".into()));
        }
        Ok(jwks.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_parsing_skips_hmac_and_encryption_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]});
        let set = KeySet::from_jwks(&doc);
        assert_eq!(set.len(), 1);
        assert!(set.has_kid("sig"));
        assert_eq!(set.candidates(Some("sig"), Algorithm::ES256).len(), 1);
        // An EC key never verifies RSA or HMAC signatures.
        assert!(set.candidates(Some("sig"), Algorithm::RS256).is_empty());
        assert!(set.candidates(None, Algorithm::HS256).is_empty());
    }
}

//! Token validation: JWTs (signature, `iss`, `aud`, `exp`, `nbf`, `iat`,
//! token type) and opaque tokens (introspection), with a cache of verified
//! tokens so that the cost of a signature check is paid once per token, not
//! once per request.
//!
//! Access tokens are told apart from ID tokens by [`crate::auth::token_kind`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use crate::auth::access::{AccessEntry, Permissions, Scope};
use crate::auth::config::{AuthConfig, IssuerConfig, KeySource};
use crate::auth::error::{ConfigError, InvalidReason, TokenError};
use crate::auth::introspect::Introspector;
use crate::auth::jwks::{JwksCache, KeySet};
use crate::auth::metrics::Counters;
use crate::auth::principal::Principal;
use crate::auth::rules::{string_list, ClaimView, RuleSet};
use crate::auth::x5c::RootBundle;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Keys tried for a token without `kid`.
const MAX_KEY_CANDIDATES: usize = 4;

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

enum Keys {
    Jwks(JwksCache),
    X5c(RootBundle),
}

struct Issuer {
    cfg: IssuerConfig,
    keys: Keys,
    /// One prepared `Validation` per allowed algorithm.
    validations: Vec<(Algorithm, Validation)>,
    introspection: Option<Introspector>,
}

#[derive(Clone)]
struct CachedToken {
    principal: Arc<Principal>,
    valid_until: u64,
}

/// Validates tokens against the configured issuers and builds principals.
pub struct Validator {
    issuers: Vec<Issuer>,
    by_iss: HashMap<String, usize>,
    rules: Arc<RuleSet>,
    /// Sync, so that the express lane can look a token up without a future.
    cache: moka::sync::Cache<[u8; 32], CachedToken>,
    max_ttl: u64,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuers", &self.by_iss.keys().collect::<Vec<_>>())
            .field("cached_tokens", &self.cache.entry_count())
            .finish()
    }
}

struct TokenExpiry;

impl moka::Expiry<[u8; 32], CachedToken> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &CachedToken,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            value.valid_until.saturating_sub(now_unix()),
        ))
    }
}

impl Validator {
    /// Build from the config. Fails on unusable key material or algorithm
    /// lists, so mistakes surface at `check-config`, not at the first request.
    pub fn new(
        cfg: &AuthConfig,
        rules: Arc<RuleSet>,
        http: reqwest::Client,
        counters: Arc<Counters>,
    ) -> Result<Self, ConfigError> {
        let mut issuers = Vec::new();
        let mut by_iss = HashMap::new();
        let cooldown = Duration::from_secs(cfg.cache.jwks_refetch_cooldown_seconds);
        let max_age = Duration::from_secs(cfg.cache.jwks_max_age_seconds);
        for ic in &cfg.issuers {
            if ic.algorithms.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "issuer {}: empty algorithm list",
                    ic.issuer
                )));
            }
            let keys = match &ic.keys {
                KeySource::Discovery => Keys::Jwks(JwksCache::remote(
                    &ic.issuer,
                    None,
                    http.clone(),
                    cooldown,
                    max_age,
                    counters.clone(),
                )),
                KeySource::JwksUri(u) => Keys::Jwks(JwksCache::remote(
                    &ic.issuer,
                    Some(u.clone()),
                    http.clone(),
                    cooldown,
                    max_age,
                    counters.clone(),
                )),
                KeySource::Static(keys) => Keys::Jwks(JwksCache::fixed(
                    &ic.issuer,
                    KeySet::from_static(&ic.issuer, keys)?,
                    http.clone(),
                    counters.clone(),
                )),
                KeySource::X5cRoots(path) => {
                    let pem = std::fs::read(path).map_err(|e| ConfigError::Key {
                        issuer: ic.issuer.clone(),
                        reason: format!("reading {}: {e}", path.display()),
                    })?;
                    Keys::X5c(RootBundle::from_pem(&ic.issuer, &pem)?)
                }
            };
            let audiences = if ic.audiences.is_empty() {
                vec![cfg.service.clone()]
            } else {
                ic.audiences.clone()
            };
            let validations = ic
                .algorithms
                .iter()
                .map(|a| {
                    let alg = a.to_jwt();
                    let mut v = Validation::new(alg);
                    v.leeway = ic.leeway_seconds;
                    v.validate_exp = true;
                    v.validate_nbf = true;
                    v.validate_aud = true;
                    v.set_issuer(&[&ic.issuer]);
                    v.set_audience(&audiences);
                    v.set_required_spec_claims(&["exp", "iss", "aud"]);
                    (alg, v)
                })
                .collect();
            let introspection = ic
                .introspection
                .as_ref()
                .map(|c| Introspector::new(c, http.clone(), counters.clone()));
            if by_iss.insert(ic.issuer.clone(), issuers.len()).is_some() {
                return Err(ConfigError::Invalid(format!(
                    "issuer {} listed twice",
                    ic.issuer
                )));
            }
            issuers.push(Issuer {
                cfg: IssuerConfig {
                    audiences,
                    ..ic.clone()
                },
                keys,
                validations,
                introspection,
            });
        }
        let cache = moka::sync::Cache::builder()
            .max_capacity(cfg.cache.verified_tokens)
            .expire_after(TokenExpiry)
            .build();
        Ok(Self {
            issuers,
            by_iss,
            rules,
            cache,
            max_ttl: cfg.cache.max_token_ttl_seconds,
            counters,
        })
    }

    /// Fetch every remote JWKS now (optional; keys are otherwise fetched on
    /// first use). Returns the issuers that failed.
    pub async fn warm_up(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for i in &self.issuers {
            if let Keys::Jwks(c) = &i.keys {
                if c.refresh_now().await.is_err() {
                    failed.push(i.cfg.issuer.clone());
                }
            }
        }
        failed
    }

    /// Validate a bearer token and return its principal.
    pub async fn validate(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(InvalidReason::Malformed.into());
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_unix();
        if let Some(principal) = self.lookup(&key, now) {
            self.count_cache_hit();
            return Ok(principal);
        }
        let (principal, valid_until) = if token.bytes().filter(|b| *b == b'.').count() == 2 {
            self.validate_jwt(token, now).await?
        } else {
            self.validate_opaque(token, now).await?
        };
        let principal = Arc::new(principal);
        let valid_until = valid_until.min(now.saturating_add(self.max_ttl));
        if valid_until > now {
            self.cache.insert(
                key,
                CachedToken {
                    principal: principal.clone(),
                    valid_until,
                },
            );
        }
        Ok(principal)
    }

    /// The principal of a token verified earlier and still valid, and nothing else:
    /// no key fetch, no introspection, nothing counted. The express lane's look; what
    /// it does not find goes the long way ([`Validator::validate`]), which counts it.
    pub fn cached(&self, token: &str) -> Option<Arc<Principal>> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.lookup(&key, now_unix())
    }

    /// Counts a request answered with a cached verification.
    pub fn count_cache_hit(&self) {
        self.counters.token_cache_hits.bump();
    }

    fn lookup(&self, key: &[u8; 32], now: u64) -> Option<Arc<Principal>> {
        self.cache
            .get(key)
            .filter(|hit| hit.valid_until > now)
            .map(|hit| hit.principal)
    }

    async fn validate_jwt(&self, token: &str, now: u64) -> Result<(Principal, u64), TokenError> {
        self.counters
            .token_validations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Look at `alg` before jsonwebtoken does: `none` and HMAC are refused
        // with a precise reason whatever the issuer, and never reach a key.
        let mut segments = token.split('.');
        let header_json = segments
            .next()
            .and_then(b64_json)
            .ok_or(InvalidReason::Malformed)?;
        match header_json.get("alg").and_then(|a| a.as_str()) {
            None => return Err(InvalidReason::Malformed.into()),
            Some(a) if a.eq_ignore_ascii_case("none") || a.starts_with("HS") => {
                return Err(InvalidReason::AlgorithmNotAllowed.into())
            }
            Some(_) => {}
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => InvalidReason::AlgorithmNotAllowed,
            _ => InvalidReason::Malformed,
        })?;
        if header.crit.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(InvalidReason::CriticalHeader.into());
        }
        // The unverified `iss` only selects which keys to try; the signature
        // check below proves it.
        let unverified = segments
            .next()
            .and_then(b64_json)
            .ok_or(InvalidReason::Malformed)?;
        let iss = unverified
            .get("iss")
            .and_then(|v| v.as_str())
            .ok_or(InvalidReason::UnknownIssuer)?;
        let issuer = self
            .by_iss
            .get(iss)
            .and_then(|i| self.issuers.get(*i))
            .ok_or(InvalidReason::UnknownIssuer)?;
        let validation = issuer
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
            .map(|(_, v)| v)
            .ok_or(InvalidReason::AlgorithmNotAllowed)?;

        let claims = match &issuer.keys {
            Keys::X5c(roots) => {
                let x5c = header.x5c.as_deref().ok_or(InvalidReason::UntrustedChain)?;
                let key = roots.verify_chain(x5c)?;
                verify_with(token, &[&key], validation)?
            }
            Keys::Jwks(cache) => {
                let set = cache.keys_for(header.kid.as_deref()).await?;
                let candidates = set.candidates(header.kid.as_deref(), header.alg);
                if candidates.is_empty() {
                    return Err(InvalidReason::UnknownKey.into());
                }
                let keys: Vec<&DecodingKey> = candidates
                    .iter()
                    .take(MAX_KEY_CANDIDATES)
                    .map(|k| &k.key)
                    .collect();
                verify_with(token, &keys, validation)?
            }
        };

        let leeway = issuer.cfg.leeway_seconds;
        if claims
            .get("iat")
            .and_then(|v| v.as_u64())
            .is_some_and(|iat| iat > now.saturating_add(leeway))
        {
            return Err(InvalidReason::NotYetValid.into());
        }
        crate::auth::token_kind::check_jwt(
            header.typ.as_deref(),
            &claims,
            issuer.cfg.require_at_jwt_typ,
        )
        .map_err(|kind| {
            tracing::debug!(issuer = %issuer.cfg.issuer, ?kind, "token refused: not an access token");
            InvalidReason::from(kind)
        })?;
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(now);
        let principal = self.build_principal(&issuer.cfg, claims);
        Ok((principal, exp.saturating_add(leeway)))
    }

    async fn validate_opaque(&self, token: &str, now: u64) -> Result<(Principal, u64), TokenError> {
        let mut unavailable = None;
        let mut any = false;
        for issuer in &self.issuers {
            let Some(intro) = &issuer.introspection else {
                continue;
            };
            any = true;
            match intro.introspect(token, &issuer.cfg, now).await {
                Ok((claims, until)) => {
                    let principal = self.build_principal(&issuer.cfg, (*claims).clone());
                    return Ok((principal, until));
                }
                Err(TokenError::Unavailable(w)) => unavailable = Some(w),
                Err(TokenError::Invalid(_)) => {}
            }
        }
        match (any, unavailable) {
            (false, _) => Err(InvalidReason::Malformed.into()),
            (true, Some(w)) => Err(TokenError::Unavailable(w)),
            (true, None) => Err(InvalidReason::Inactive.into()),
        }
    }

    fn build_principal(&self, cfg: &IssuerConfig, claims: serde_json::Value) -> Principal {
        let str_claim = |n: &str| claims.get(n).and_then(|v| v.as_str()).map(str::to_owned);
        let subject = str_claim("sub").or_else(|| str_claim("username"));
        let client_id = str_claim("client_id").or_else(|| str_claim("azp"));
        let groups = string_list(&claims, &cfg.groups_claim);
        let mut permissions = Permissions::none();
        if cfg.trust_access_claim {
            if let Some(entries) = claims.get("access").and_then(|a| a.as_array()) {
                for e in entries {
                    if let Some(scope) = serde_json::from_value::<AccessEntry>(e.clone())
                        .ok()
                        .and_then(|e| e.to_scope())
                    {
                        permissions.grant(&scope);
                    }
                }
            }
        }
        if cfg.trust_scope_claim {
            if let Some(s) = claims.get("scope").and_then(|s| s.as_str()) {
                for scope in Scope::parse_many(s) {
                    permissions.grant(&scope);
                }
            }
            for s in string_list(&claims, "scp") {
                if let Some(scope) = Scope::parse(&s) {
                    permissions.grant(&scope);
                }
            }
        }
        let read_only = self.rules.apply(
            &ClaimView {
                claims: &claims,
                groups: &groups,
                client_id: client_id.as_deref(),
            },
            &mut permissions,
        );
        Principal {
            subject,
            issuer: Some(cfg.issuer.clone()),
            client_id,
            groups,
            expires_at: claims.get("exp").and_then(|v| v.as_u64()),
            claims,
            anonymous: false,
            read_only,
            permissions,
        }
    }
}

/// Decode one base64url JWT segment as JSON (no verification).
fn b64_json(segment: &str) -> Option<serde_json::Value> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Verify the signature with each key in turn; claims errors are final
/// (they come after a successful signature check).
fn verify_with(
    token: &str,
    keys: &[&DecodingKey],
    validation: &Validation,
) -> Result<serde_json::Value, TokenError> {
    let mut last = InvalidReason::BadSignature;
    for key in keys {
        match jsonwebtoken::decode::<serde_json::Value>(token, key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => {
                let reason = map_jwt_error(e.kind());
                if reason != InvalidReason::BadSignature {
                    return Err(reason.into());
                }
                last = reason;
            }
        }
    }
    Err(last.into())
}

fn map_jwt_error(kind: &ErrorKind) -> InvalidReason {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => InvalidReason::BadSignature,
        ErrorKind::ExpiredSignature => InvalidReason::Expired,
        ErrorKind::ImmatureSignature => InvalidReason::NotYetValid,
        ErrorKind::InvalidAudience => InvalidReason::WrongAudience,
        ErrorKind::InvalidIssuer => InvalidReason::UnknownIssuer,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) => {
            InvalidReason::MissingClaim
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => InvalidReason::AlgorithmNotAllowed,
        _ => InvalidReason::Malformed,
    }
}

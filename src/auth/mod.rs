//! Bearer-token authentication and per-repository authorization.
//!
//! The proxy glue does three things with this module:
//! 1. build an [`Authenticator`] from the `auth:` config at startup;
//! 2. per registry request, call [`Authenticator::authorize`] and, on error,
//!    send [`Authenticator::reject`]'s status, headers and body (upstream
//!    challenges are never forwarded: the proxy is the only authority);
//! 3. route the token endpoint path to [`Authenticator::token_endpoint`].
//!
//! Everything here is independent of Pingora, so it is unit-tested without
//! a proxy and benchmarked on its own.

pub mod access;
pub mod challenge;
pub mod config;
pub mod error;
pub mod fetch;
pub mod introspect;
pub mod jwks;
pub mod metrics;
pub mod principal;
pub mod rules;
pub mod secret;
pub mod token_endpoint;
pub mod token_kind;
pub mod validate;
pub mod x5c;

use std::sync::Arc;
use std::time::Duration;

pub use crate::auth::access::{required_scopes, Action, ActionSet, Scope, Target};
pub use crate::auth::challenge::Rejection;
pub use crate::auth::config::AuthConfig;
pub use crate::auth::error::{AuthError, ConfigError, InvalidReason, TokenError};
pub use crate::auth::principal::Principal;
pub use crate::auth::token_endpoint::{TokenBridge, TokenResponse};

use crate::auth::metrics::{CounterSnapshot, Counters};
use crate::auth::rules::RuleSet;
use crate::auth::validate::Validator;

/// What the token endpoint gives a client that brings no credentials, when
/// anonymous pulls are configured (docker, skopeo and containerd fetch a token
/// for every challenge, credentials or not). It is no secret and grants
/// exactly what no token grants: [`Authenticator::authorize`] reads it as "no
/// token". Not a JWT, so it never reaches a validator or an IdP.
pub const ANONYMOUS_TOKEN: &str = "margo-proxy-anonymous";

/// Authentication and authorization for the registry API.
#[derive(Debug)]
pub struct Authenticator {
    realm: String,
    service: String,
    validator: Arc<Validator>,
    anonymous: Arc<Principal>,
    bridge: Option<TokenBridge>,
    counters: Arc<Counters>,
}

impl Authenticator {
    /// Build from config: compiles rules, loads static keys and root bundles,
    /// builds the IdP HTTP client. Network is not touched (see
    /// [`Authenticator::warm_up`], which the server runs at start-up).
    pub fn from_config(cfg: &AuthConfig) -> Result<Self, ConfigError> {
        if cfg.realm.is_empty() || cfg.service.is_empty() {
            return Err(ConfigError::Invalid(
                "auth.realm and auth.service must not be empty".into(),
            ));
        }
        let counters = Arc::new(Counters::default());
        let http = crate::auth::fetch::client(Duration::from_secs(cfg.cache.http_timeout_seconds))?;
        let rules = Arc::new(RuleSet::compile(cfg)?);
        let validator = Arc::new(Validator::new(
            cfg,
            rules.clone(),
            http.clone(),
            counters.clone(),
        )?);
        let bridge = cfg.token_endpoint.as_ref().map(|t| {
            TokenBridge::new(
                t.clone(),
                cfg.service.clone(),
                http.clone(),
                validator.clone(),
                counters.clone(),
                rules.has_anonymous(),
            )
        });
        Ok(Self {
            realm: cfg.realm.clone(),
            service: cfg.service.clone(),
            validator,
            anonymous: Arc::new(Principal::anonymous(rules.anonymous_permissions())),
            bridge,
            counters,
        })
    }

    /// Prefetch every issuer's keys; returns the issuers that failed (the
    /// proxy should log them and carry on: keys are fetched again on use).
    pub async fn warm_up(&self) -> Vec<String> {
        self.validator.warm_up().await
    }

    /// Decide a registry request.
    ///
    /// `authorization` is the raw `Authorization` header, if any. A header
    /// with another scheme than Bearer (e.g. Basic sent pre-emptively) is
    /// answered like a missing token, so the client learns the Bearer realm.
    /// A bad Bearer token is refused even where anonymous pull would be
    /// allowed: silently downgrading would hide broken credentials.
    pub async fn authorize(
        &self,
        method: &http::Method,
        target: &Target<'_>,
        authorization: Option<&[u8]>,
    ) -> Result<Arc<Principal>, AuthError> {
        let scopes = required_scopes(method, target);
        let principal = match presented(target, authorization) {
            Presented::Challenge => return Err(AuthError::MissingToken { scopes }),
            Presented::Nothing if self.anonymous.allows_all(&scopes) => {
                return Ok(self.anonymous.clone())
            }
            Presented::Nothing => return Err(AuthError::MissingToken { scopes }),
            Presented::Token(t) => self.validator.validate(t).await,
            Presented::Malformed(reason) => Err(reason.into()),
        }
        .map_err(|e| AuthError::from_token_error(e, scopes.clone()))?;
        if principal.allows_all(&scopes) {
            Ok(principal)
        } else {
            Err(AuthError::InsufficientScope { scopes })
        }
    }

    /// The grant [`Authenticator::authorize`] would give, when memory alone decides
    /// it: no token where anonymous pulls are allowed, or a token verified earlier
    /// and still valid. `None` for everything else, refusals included: those go the
    /// long way, which answers and counts them. Counts nothing itself (see
    /// [`Authenticator::count_cached_grant`]).
    pub fn authorize_cached(
        &self,
        method: &http::Method,
        target: &Target<'_>,
        authorization: Option<&[u8]>,
    ) -> Option<Arc<Principal>> {
        let principal = match presented(target, authorization) {
            Presented::Nothing => self.anonymous.clone(),
            Presented::Token(t) => self.validator.cached(t)?,
            Presented::Challenge | Presented::Malformed(_) => return None,
        };
        principal
            .allows_all(&required_scopes(method, target))
            .then_some(principal)
    }

    /// Counts a request let through by [`Authenticator::authorize_cached`] as
    /// [`Authenticator::authorize`] would have counted it.
    pub fn count_cached_grant(&self, principal: &Principal) {
        if !principal.anonymous {
            self.validator.count_cache_hit();
        }
    }

    /// Validate a token alone (no request), e.g. for policies or tests.
    pub async fn validate_token(&self, token: &str) -> Result<Arc<Principal>, TokenError> {
        self.validator.validate(token).await
    }

    /// The response for a refusal.
    pub fn reject(&self, err: &AuthError) -> Rejection {
        crate::auth::challenge::reject(&self.realm, &self.service, err)
    }

    /// The token endpoint, if configured.
    pub fn token_endpoint(&self) -> Option<&TokenBridge> {
        self.bridge.as_ref()
    }

    /// Counters for the metrics exporter.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// The `service` name.
    pub fn service(&self) -> &str {
        &self.service
    }
}

/// What a request's `Authorization` header presents, as the decision sees it.
enum Presented<'a> {
    /// No token, on the base ping: always challenged, as distribution does with token
    /// auth (a client that got `200` there would never learn the realm, and its push
    /// would fail). Anonymous pulls go on working: repository requests pass, and the
    /// token endpoint hands credential-less clients the anonymous token, which passes
    /// the ping.
    Challenge,
    /// No token (or the anonymous one, or another scheme than Bearer).
    Nothing,
    Token(&'a str),
    Malformed(InvalidReason),
}

fn presented<'a>(target: &Target<'_>, authorization: Option<&'a [u8]>) -> Presented<'a> {
    match authorization.and_then(bearer_token) {
        Some(Ok(t)) if t == ANONYMOUS_TOKEN => Presented::Nothing,
        Some(Ok(t)) => Presented::Token(t),
        Some(Err(reason)) => Presented::Malformed(reason),
        None if matches!(target, Target::Base) => Presented::Challenge,
        None => Presented::Nothing,
    }
}

/// RFC 6750 `b64token` characters (the trailing `=` aside).
const B64TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] =
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        i += 1;
    }
    table
};

/// Extract a Bearer token: `None` if the header is absent or another scheme,
/// `Some(Err)` if it is Bearer but not a syntactically valid RFC 6750
/// `b64token`.
pub fn bearer_token(header: &[u8]) -> Option<Result<&str, InvalidReason>> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    // A table and no early exit: every pull with a token (hundreds of bytes) comes
    // through here, the express lane's too.
    let valid = !body.is_empty()
        && body
            .bytes()
            .fold(true, |ok, b| ok & B64TOKEN_BYTES[usize::from(b)]);
    Some(if valid {
        Ok(token)
    } else {
        Err(InvalidReason::Malformed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some(Ok("abc.def.ghi")));
        assert_eq!(bearer_token(b"bearer  abc=="), Some(Ok("abc==")));
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Bearer"), Some(Err(InvalidReason::Malformed)));
        assert_eq!(
            bearer_token(b"Bearer a b"),
            Some(Err(InvalidReason::Malformed))
        );
        assert_eq!(
            bearer_token(b"Bearer \"x\""),
            Some(Err(InvalidReason::Malformed))
        );
        assert_eq!(bearer_token(&[0xff, 0xfe]), None);
    }
}

#[cfg(test)]
mod security_tests;

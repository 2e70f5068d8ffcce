//! Who may clone: the registry's auth layer, with the credentials git sends. Git
//! speaks Basic (it asks its credential helper after a `401` with a Basic challenge),
//! so Basic credentials are exchanged through the token bridge (as `docker login`'s
//! are) and the token checked like any other; a bearer token (`http.extraHeader`) is
//! checked as is; no credentials pass only where `anonymous_pull` allows.
//!
//! Exchanges are cached for a minute under the SHA-256 of the header (git sends the
//! credentials on every request of a clone), never under the credentials themselves.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use super::Reply;
use crate::auth::{AuthError, Authenticator, Principal, Target};

const EXCHANGE_TTL: Duration = Duration::from_secs(60);
const EXCHANGE_ENTRIES: u64 = 10_000;

/// The Basic-to-token exchanges of recent requests.
pub struct GitAuth {
    exchanged: moka::sync::Cache<[u8; 32], Arc<str>>,
}

impl Default for GitAuth {
    fn default() -> Self {
        Self {
            exchanged: moka::sync::Cache::builder()
                .max_capacity(EXCHANGE_ENTRIES)
                .time_to_live(EXCHANGE_TTL)
                .build(),
        }
    }
}

fn is_basic(header: &[u8]) -> bool {
    header.len() > 6 && header[..6].eq_ignore_ascii_case(b"basic ")
}

impl GitAuth {
    /// The caller, allowed to pull `repo`, or the answer that refuses it.
    pub async fn authorize(
        &self,
        auth: &Authenticator,
        repo: &str,
        headers: &http::HeaderMap,
    ) -> Result<Arc<Principal>, Reply> {
        let header = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let target = Target::Repository {
            name: repo,
            mount_from: None,
        };
        let (bearer, key) = match header {
            Some(h) if is_basic(h) => {
                let key: [u8; 32] = Sha256::digest(h).into();
                let token = match self.exchanged.get(&key) {
                    Some(t) => t,
                    None => {
                        let t = exchange(auth, h).await?;
                        self.exchanged.insert(key, t.clone());
                        t
                    }
                };
                (Some(format!("Bearer {token}")), Some(key))
            }
            _ => (None, None),
        };
        let header = bearer.as_deref().map(str::as_bytes).or(header);
        match auth.authorize(&http::Method::GET, &target, header).await {
            Ok(p) => Ok(p),
            Err(e) => {
                if let Some(k) = key {
                    self.exchanged.invalidate(&k);
                }
                Err(refusal(auth, repo, &e))
            }
        }
    }
}

/// Basic credentials for a token, at the token bridge.
async fn exchange(auth: &Authenticator, header: &[u8]) -> Result<Arc<str>, Reply> {
    let Some(bridge) = auth.token_endpoint() else {
        return Err(challenge(
            auth,
            "Basic credentials need auth.token_endpoint on this proxy; send a bearer token (git -c http.extraHeader=\"Authorization: Bearer …\")",
        ));
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(header) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    let answer = bridge.handle(&http::Method::GET, &headers, None, b"").await;
    match answer.status.as_u16() {
        200 => serde_json::from_str::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(Arc::from))
            .ok_or_else(|| Reply::text(502, "margo-proxy: the token endpoint gave no token")),
        400 | 401 => Err(challenge(auth, "invalid credentials")),
        s => Err(Reply::text(
            if s >= 500 { s } else { 502 },
            "margo-proxy: the identity provider is unavailable; try again",
        )),
    }
}

/// `401` with a Basic challenge: git then asks its credential helper (or the user).
fn challenge(auth: &Authenticator, why: &str) -> Reply {
    Reply::text(401, &format!("margo-proxy: {why}")).with_header(
        http::header::WWW_AUTHENTICATE,
        format!(
            "Basic realm={}",
            crate::auth::challenge::quote(auth.service())
        ),
    )
}

fn refusal(auth: &Authenticator, repo: &str, e: &AuthError) -> Reply {
    match e {
        AuthError::MissingToken { .. } => challenge(auth, "authentication required"),
        AuthError::InvalidToken { reason, .. } => {
            challenge(auth, &format!("invalid token ({})", reason.label()))
        }
        AuthError::InsufficientScope { .. } => Reply::text(
            403,
            &format!("margo-proxy: these credentials may not pull {repo}"),
        ),
        AuthError::Unavailable { .. } => Reply::text(
            503,
            "margo-proxy: token validation is unavailable; try again",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_scheme_detection() {
        assert!(is_basic(b"Basic dXNlcjpwYXNz"));
        assert!(is_basic(b"basic dXNlcjpwYXNz"));
        assert!(!is_basic(b"Bearer x.y.z"));
        assert!(!is_basic(b"Basic"));
    }
}

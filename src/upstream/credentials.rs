//! The proxy's own credentials at an upstream: basic auth, or the distribution token flow
//! against the upstream's token service. Clients never see these.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::RwLock;

use super::challenge::{self, Challenge};

/// Largest token-service answer we read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream token service refused the proxy's credentials (status {0})")]
    Refused(u16),
    #[error("upstream token service answered garbage: {0}")]
    BadResponse(String),
}

struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone)]
struct CachedToken {
    value: Arc<str>,
    expires: Instant,
}

/// Answers "what `Authorization` do I send for this scope?".
pub struct UpstreamCredentials {
    username: String,
    password: Secret,
    ping_url: String,
    http: reqwest::Client,
    challenge: RwLock<Option<Challenge>>,
    tokens: moka::future::Cache<String, CachedToken>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl UpstreamCredentials {
    pub fn new(
        username: String,
        password: String,
        ping_url: String,
        http: reqwest::Client,
    ) -> Self {
        UpstreamCredentials {
            username,
            password: Secret(password),
            ping_url,
            http,
            challenge: RwLock::new(None),
            tokens: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password.0);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// Learns how the upstream wants to be authenticated (once, or from a 401's challenge).
    async fn challenge(&self) -> Result<Challenge, CredentialError> {
        if let Some(c) = self.challenge.read().await.clone() {
            return Ok(c);
        }
        let resp = self
            .http
            .get(&self.ping_url)
            .send()
            .await
            .map_err(|e| CredentialError::Unreachable(e.to_string()))?;
        let c = if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            resp.headers()
                .get_all(http::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(challenge::parse)
                .unwrap_or(Challenge::Basic)
        } else {
            Challenge::None
        };
        *self.challenge.write().await = Some(c.clone());
        Ok(c)
    }

    /// The upstream answered 401 to a request sent with our header for `scopes`.
    /// Only that scope's token is dropped: other scopes' tokens are still good (had
    /// they gone stale too, their own 401s drop them). `insufficient_scope` says only
    /// that this account may not do this (the upstream may grant more later). Any
    /// other refusal may mean the upstream changed how it authenticates: its new
    /// challenge, when it sent one we can answer, replaces the one learnt.
    pub async fn rejected(&self, scopes: &[String], www_authenticate: Option<&str>) {
        let learnt = self.challenge.read().await.clone();
        if let Some(Challenge::Bearer { service, .. }) = &learnt {
            self.tokens
                .invalidate(&token_key(service.as_deref(), scopes))
                .await;
        }
        if www_authenticate.is_some_and(is_insufficient_scope) {
            return;
        }
        let fresh = www_authenticate.and_then(challenge::parse);
        if fresh.is_some() && fresh != learnt {
            *self.challenge.write().await = fresh;
        }
    }

    /// The header value to send upstream for a request needing `scopes`
    /// (`repository:<name>:pull,push`...). `None` when the upstream wants nothing.
    pub async fn authorization(
        &self,
        scopes: &[String],
    ) -> Result<Option<String>, CredentialError> {
        match self.challenge().await? {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(Some(self.basic())),
            Challenge::Bearer { realm, service } => {
                let key = token_key(service.as_deref(), scopes);
                if let Some(t) = self.tokens.get(&key).await {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                    self.tokens.invalidate(&key).await;
                }
                let token = self
                    .tokens
                    .try_get_with(key, self.fetch_token(&realm, service.as_deref(), scopes))
                    .await
                    .map_err(|e: Arc<CredentialError>| match &*e {
                        CredentialError::Unreachable(m) => CredentialError::Unreachable(m.clone()),
                        CredentialError::Refused(s) => CredentialError::Refused(*s),
                        CredentialError::BadResponse(m) => CredentialError::BadResponse(m.clone()),
                    })?;
                Ok(Some(format!("Bearer {}", token.value)))
            }
        }
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<CachedToken, CredentialError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = service {
            query.push(("service", s));
        }
        for s in scopes {
            query.push(("scope", s));
        }
        let started = Instant::now();
        let resp = self
            .http
            .get(realm)
            .query(&query)
            .header(http::header::AUTHORIZATION, self.basic())
            .send()
            .await
            .map_err(|e| CredentialError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(CredentialError::Refused(resp.status().as_u16()));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| CredentialError::Unreachable(e.to_string()))?;
        if body.len() > MAX_TOKEN_RESPONSE {
            return Err(CredentialError::BadResponse("answer too large".into()));
        }
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| CredentialError::BadResponse(e.to_string()))?;
        let value = t
            .token
            .or(t.access_token)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| CredentialError::BadResponse("no token in answer".into()))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(10, 86_400));
        Ok(CachedToken {
            value: value.into(),
            expires: started + lifetime.mul_f32(0.9),
        })
    }
}

/// The token scopes an upstream request needs.
fn token_key(service: Option<&str>, scopes: &[String]) -> String {
    format!("{}|{}", service.unwrap_or(""), scopes.join(" "))
}

/// A Bearer challenge whose `error` is `insufficient_scope` (RFC 6750 §3.1).
fn is_insufficient_scope(www_authenticate: &str) -> bool {
    www_authenticate
        .to_ascii_lowercase()
        .replace(' ', "")
        .contains("error=\"insufficient_scope\"")
}

/// The token scopes a call needs, kept as borrowed parts until a token is really asked
/// for: building them costs allocations a cache hit must not pay.
#[derive(Debug, Clone)]
pub enum Scopes<'a> {
    Listed(Vec<String>),
    /// What [`scopes_for`] makes of a client request.
    Request {
        method: &'a http::Method,
        repository: Option<&'a str>,
        mount_from: Option<&'a str>,
        catalog: bool,
    },
}

impl Scopes<'_> {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Scopes::Listed(v) => v.clone(),
            Scopes::Request {
                method,
                repository,
                mount_from,
                catalog,
            } => scopes_for(method, *repository, *mount_from, *catalog),
        }
    }
}

pub fn scopes_for(
    method: &http::Method,
    upstream_name: Option<&str>,
    mount_from: Option<&str>,
    catalog: bool,
) -> Vec<String> {
    let mut scopes = Vec::new();
    if catalog {
        scopes.push("registry:catalog:*".to_owned());
    }
    if let Some(name) = upstream_name {
        let actions = match *method {
            http::Method::GET | http::Method::HEAD => "pull",
            http::Method::DELETE => "delete",
            _ => "pull,push",
        };
        scopes.push(format!("repository:{name}:{actions}"));
    }
    if let Some(from) = mount_from {
        scopes.push(format!("repository:{from}:pull"));
    }
    scopes
}

#[cfg(test)]
mod tests {
    #[test]
    fn insufficient_scope_is_told_apart_from_a_stale_token() {
        assert!(is_insufficient_scope(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull",error="insufficient_scope""#
        ));
        assert!(is_insufficient_scope(
            r#"Bearer error = "Insufficient_Scope""#
        ));
        assert!(!is_insufficient_scope(
            r#"Bearer realm="https://auth.example/token",error="invalid_token""#
        ));
        assert!(!is_insufficient_scope(r#"Basic realm="reg""#));
    }

    use super::*;

    #[test]
    fn scopes_follow_the_method() {
        assert_eq!(
            scopes_for(&http::Method::GET, Some("a/b"), None, false),
            vec!["repository:a/b:pull"]
        );
        assert_eq!(
            scopes_for(&http::Method::POST, Some("a"), Some("c"), false),
            vec!["repository:a:pull,push", "repository:c:pull"]
        );
        assert_eq!(
            scopes_for(&http::Method::DELETE, Some("a"), None, false),
            vec!["repository:a:delete"]
        );
        assert_eq!(
            scopes_for(&http::Method::GET, None, None, true),
            vec!["registry:catalog:*"]
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        crate::install_crypto_provider();
        let c = UpstreamCredentials::new(
            "u".into(),
            "hunter2".into(),
            "http://127.0.0.1:1/v2/".into(),
            reqwest::Client::new(),
        );
        assert!(!format!("{:?} {}", c.password, c.username).contains("hunter2"));
    }
}

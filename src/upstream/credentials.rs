//! The proxy's own credentials at an upstream: basic auth, or the distribution token flow
//! against the upstream's token service. Clients never see these.
//!
//! The token flow follows the distribution token specification
//! (<https://distribution.github.io/distribution/spec/auth/token/>) and the shapes real
//! token services give it: `token` and/or `access_token` in the answer, `expires_in`
//! optional (60 s when absent), several `scope` parameters, scopes with a resource class
//! (`repository(plugin):…`), and, without an account, the anonymous flow GHCR and Docker
//! Hub use for public images (a token request without credentials).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use tokio::sync::RwLock;

use super::challenge::{self, Challenge};

/// Largest token-service answer we read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Whole token request, answer included: a token service that trickles its answer must
/// not hold the request that waits for it.
const TOKEN_DEADLINE: Duration = Duration::from_secs(30);
/// Lifetime of a token whose answer has no `expires_in` (the specification's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream token service refused the proxy's credentials (status {0})")]
    Refused(u16),
    #[error("upstream token service answered garbage: {0}")]
    BadResponse(String),
    #[error("upstream token realm refused: {0}")]
    BadRealm(String),
    /// No ECR authorization token (AWS credentials, the ECR API).
    #[error(transparent)]
    Ecr(#[from] super::aws::ecr::EcrError),
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

/// Who the proxy is at the upstream.
enum Account {
    /// No account: Bearer challenges get anonymous tokens, Basic ones nothing.
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// Amazon ECR: the password is an authorization token from the ECR API.
    Ecr(super::aws::ecr::EcrTokens),
}

/// Answers "what `Authorization` do I send for this scope?".
pub struct UpstreamCredentials {
    account: Account,
    ping_url: String,
    http: reqwest::Client,
    challenge: RwLock<Option<Challenge>>,
    tokens: moka::future::Cache<String, CachedToken>,
    /// Scopes an upstream's 401 named for a request, when they differ from the ones
    /// the proxy derived (e.g. `repository(plugin):x:pull` for `repository:x:pull`):
    /// the token for that request is asked with these from then on.
    named_scopes: moka::future::Cache<Vec<String>, Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    /// Seconds: an integer as the specification says, but a float or a numeric string
    /// is read too; anything else counts as absent.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// `expires_in` in whole seconds, when it is a usable number.
fn seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl UpstreamCredentials {
    pub fn new(
        username: String,
        password: String,
        ping_url: String,
        http: reqwest::Client,
    ) -> Self {
        Self::with_account(
            Account::Basic {
                username,
                password: Secret(password),
            },
            ping_url,
            http,
        )
    }

    /// No account at the upstream: answers Bearer challenges with anonymous tokens (the
    /// token request carries no credentials), as public images on GHCR or Docker Hub need.
    pub fn anonymous(ping_url: String, http: reqwest::Client) -> Self {
        Self::with_account(Account::Anonymous, ping_url, http)
    }

    fn with_account(account: Account, ping_url: String, http: reqwest::Client) -> Self {
        UpstreamCredentials {
            account,
            ping_url,
            http,
            challenge: RwLock::new(None),
            tokens: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            named_scopes: moka::future::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        }
    }

    /// The account of an Amazon ECR registry: its `Basic` password is an ECR
    /// authorization token, fetched and renewed with the AWS credential chain.
    pub fn ecr(
        tokens: super::aws::ecr::EcrTokens,
        ping_url: String,
        http: reqwest::Client,
    ) -> Self {
        Self::with_account(Account::Ecr(tokens), ping_url, http)
    }

    /// Whether the proxy has an account of its own here (not just anonymous tokens).
    pub fn has_account(&self) -> bool {
        matches!(self.account, Account::Basic { .. } | Account::Ecr(_))
    }

    async fn basic(&self) -> Result<Option<String>, CredentialError> {
        match &self.account {
            Account::Anonymous => Ok(None),
            Account::Basic { username, password } => {
                let raw = format!("{username}:{}", password.0);
                Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                )))
            }
            Account::Ecr(tokens) => Ok(Some(tokens.authorization().await?.to_string())),
        }
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
        self.learn_named_scopes(scopes, www_authenticate).await;
        let learnt = self.challenge.read().await.clone();
        if let (Account::Ecr(tokens), Some(Challenge::Basic)) = (&self.account, &learnt) {
            // The ECR token itself was refused (revoked, or expired early).
            tokens.forget();
        }
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

    /// The upstream's refusal may say which scopes the request needs (distribution names
    /// them in its challenge, e.g. `repository(plugin):x:pull` for what the proxy asked as
    /// `repository:x:pull`): the token for this request is asked with those too from now
    /// on. The token stays cached under the request's own scopes.
    async fn learn_named_scopes(&self, scopes: &[String], www_authenticate: Option<&str>) {
        let named: Vec<String> = www_authenticate
            .map(challenge::parse_all)
            .unwrap_or_default()
            .iter()
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .flat_map(|c| c.scopes())
            .map(|s| s.to_string())
            .collect();
        let asked = self.scopes_to_ask(scopes).await;
        if named.is_empty() || named.iter().all(|n| asked.contains(n)) {
            return;
        }
        let mut wanted = asked;
        wanted.extend(named.into_iter().filter(|n| !scopes.contains(n)));
        wanted.dedup();
        self.named_scopes.insert(scopes.to_vec(), wanted).await;
    }

    /// The scopes a token is asked with for a request needing `scopes`.
    async fn scopes_to_ask(&self, scopes: &[String]) -> Vec<String> {
        self.named_scopes
            .get(scopes)
            .await
            .unwrap_or_else(|| scopes.to_vec())
    }

    /// [`Self::authorization`] for a call about to be sent, without a ping where the
    /// proxy has no account and has not been challenged yet: such an upstream may want
    /// nothing (no request spent on learning that, and a silent upstream times out on
    /// the call itself); its first 401 teaches the challenge ([`Self::rejected`]) and the
    /// call is retried with an anonymous token.
    pub async fn authorization_for_call(
        &self,
        scopes: &[String],
    ) -> Result<Option<String>, CredentialError> {
        if matches!(self.account, Account::Anonymous) && self.challenge.read().await.is_none() {
            return Ok(None);
        }
        self.authorization(scopes).await
    }

    /// The header value to send upstream for a request needing `scopes`
    /// (`repository:<name>:pull,push`...). `None` when the upstream wants nothing.
    pub async fn authorization(
        &self,
        scopes: &[String],
    ) -> Result<Option<String>, CredentialError> {
        match self.challenge().await? {
            Challenge::None => Ok(None),
            Challenge::Basic => self.basic().await,
            Challenge::Bearer { realm, service } => {
                let key = token_key(service.as_deref(), scopes);
                if let Some(t) = self.tokens.get(&key).await {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                    self.tokens.invalidate(&key).await;
                }
                let asked = self.scopes_to_ask(scopes).await;
                let token = self
                    .tokens
                    .try_get_with(key, self.fetch_token(&realm, service.as_deref(), &asked))
                    .await
                    .map_err(|e: Arc<CredentialError>| (*e).clone())?;
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
        self.check_realm(realm)?;
        let started = Instant::now();
        let mut req = self.http.get(realm).query(&query).timeout(TOKEN_DEADLINE);
        if let Some(basic) = self.basic().await? {
            req = req.header(http::header::AUTHORIZATION, basic);
        }
        let mut resp = req
            .send()
            .await
            .map_err(|e| CredentialError::Unreachable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(CredentialError::Refused(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| CredentialError::Unreachable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_TOKEN_RESPONSE {
                return Err(CredentialError::BadResponse("answer too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let (value, lifetime) = parse_token_response(&body)?;
        // Renew a little early; `issued_at` is not trusted (the two clocks differ), the
        // lifetime counts from when the proxy asked.
        Ok(CachedToken {
            value: value.into(),
            expires: started + lifetime.mul_f32(0.9),
        })
    }

    /// The proxy's password goes to the realm: only over http(s), and never over plain
    /// http when the upstream itself is reached over https.
    fn check_realm(&self, realm: &str) -> Result<(), CredentialError> {
        let lower = realm.to_ascii_lowercase();
        let https = lower.starts_with("https://");
        if !https && !lower.starts_with("http://") {
            return Err(CredentialError::BadRealm(format!(
                "{realm:?} is not an http(s) URL"
            )));
        }
        if !https && self.ping_url.to_ascii_lowercase().starts_with("https://") {
            return Err(CredentialError::BadRealm(format!(
                "{realm} is plain http while the upstream is https"
            )));
        }
        Ok(())
    }
}

/// The token and its lifetime from a token service's answer: `token`, or `access_token`
/// (OAuth 2.0 naming, which the specification accepts too), whichever is non-empty;
/// `expires_in` when given, else 60 s.
fn parse_token_response(body: &[u8]) -> Result<(String, Duration), CredentialError> {
    let t: TokenResponse =
        serde_json::from_slice(body).map_err(|e| CredentialError::BadResponse(e.to_string()))?;
    let value = [t.token, t.access_token]
        .into_iter()
        .flatten()
        .find(|v| !v.is_empty())
        .ok_or_else(|| CredentialError::BadResponse("no token in answer".into()))?;
    if value.len() > MAX_TOKEN_RESPONSE || value.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        // It goes into a header: printable ASCII only.
        return Err(CredentialError::BadResponse(
            "token is not a header-safe string".into(),
        ));
    }
    let secs = t
        .expires_in
        .as_ref()
        .and_then(seconds)
        .unwrap_or(DEFAULT_TOKEN_LIFETIME)
        .clamp(1, 86_400);
    Ok((value, Duration::from_secs(secs)))
}

/// The token scopes an upstream request needs.
fn token_key(service: Option<&str>, scopes: &[String]) -> String {
    format!("{}|{}", service.unwrap_or(""), scopes.join(" "))
}

/// A Bearer challenge whose `error` is `insufficient_scope` (RFC 6750 §3.1).
fn is_insufficient_scope(www_authenticate: &str) -> bool {
    challenge::parse_all(www_authenticate)
        .iter()
        .any(|c| c.scheme.eq_ignore_ascii_case("bearer") && c.is_insufficient_scope())
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
    fn token_answers_in_every_documented_shape() {
        let secs =
            |body: &str| parse_token_response(body.as_bytes()).map(|(t, d)| (t, d.as_secs()));
        // distribution / Docker Hub / Harbor: both names, equal.
        assert_eq!(
            secs(r#"{"token":"a","access_token":"a","expires_in":1800,"issued_at":"2026-12-01T10:00:00Z"}"#).unwrap(),
            ("a".into(), 1800)
        );
        // OAuth 2.0 naming only; `token` only (GHCR, no `expires_in`: 60 s).
        assert_eq!(
            secs(r#"{"access_token":"b","expires_in":300}"#).unwrap(),
            ("b".into(), 300)
        );
        assert_eq!(secs(r#"{"token":"c"}"#).unwrap(), ("c".into(), 60));
        // An empty `token` beside a real `access_token`.
        assert_eq!(
            secs(r#"{"token":"","access_token":"d"}"#).unwrap(),
            ("d".into(), 60)
        );
        // Lenient on the number, strict on the token.
        assert_eq!(secs(r#"{"token":"e","expires_in":"120"}"#).unwrap().1, 120);
        assert_eq!(secs(r#"{"token":"e","expires_in":90.5}"#).unwrap().1, 90);
        assert_eq!(secs(r#"{"token":"e","expires_in":-5}"#).unwrap().1, 60);
        assert_eq!(secs(r#"{"token":"e","expires_in":0}"#).unwrap().1, 1);
        assert_eq!(
            secs(r#"{"token":"e","expires_in":1e12}"#).unwrap().1,
            86_400
        );
        for bad in [
            r#"{}"#,
            r#"{"token":""}"#,
            r#"{"token":null}"#,
            r#"{"token":"a b"}"#,
            "{\"token\":\"a\\r\\nX-Evil: 1\"}",
            r#"[]"#,
            "not json",
        ] {
            assert!(secs(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn realms_that_would_leak_the_password_are_refused() {
        crate::install_crypto_provider();
        let https = UpstreamCredentials::new(
            "u".into(),
            "p".into(),
            "https://reg.example/v2/".into(),
            reqwest::Client::new(),
        );
        assert!(https.check_realm("https://auth.example/token").is_ok());
        assert!(https.check_realm("http://auth.example/token").is_err());
        assert!(https.check_realm("file:///etc/passwd").is_err());
        assert!(https.check_realm("/token").is_err());
        let http = UpstreamCredentials::anonymous(
            "http://127.0.0.1:5000/v2/".into(),
            reqwest::Client::new(),
        );
        assert!(http.check_realm("http://127.0.0.1:5001/token").is_ok());
        assert!(!http.has_account());
        assert!(matches!(&http.account, Account::Anonymous));
        assert!(https.has_account());
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
        let Account::Basic { username, password } = &c.account else {
            panic!("an account");
        };
        assert!(!format!("{password:?} {username}").contains("hunter2"));
    }
}

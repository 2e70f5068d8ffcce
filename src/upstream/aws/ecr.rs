//! Amazon ECR: the registry password is an authorization token from the ECR API's
//! `GetAuthorizationToken` (JSON 1.1 protocol), signed with SigV4 using the standard
//! credential chain ([`super::chain`]). The token is `base64("AWS:<password>")`, sent as
//! `Basic`; ECR says it lasts 12 hours (`expiresAt`).
//!
//! One token per upstream, refreshed `refresh_margin` before it expires; one refresh at
//! a time (the others keep using the old token while it is valid, or wait for the new
//! one); a failed refresh keeps a still-valid token (and is retried 30 s later, not by
//! every request). Every fetch is counted in
//! `margo_proxy_ecr_token_requests_total{upstream,result}`.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::Deserialize;

use super::chain::{self, AwsCredentials, Environment};

/// ECR's documented token lifetime, used when an answer's `expiresAt` is unusable (absent,
/// in the past, or more than a day away: clock trouble on one side or the other). An
/// early expiry is still noticed: the registry's 401 drops the token.
const DOCUMENTED_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Largest `GetAuthorizationToken` answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// The whole token request, credential chain included.
const FETCH_DEADLINE: Duration = Duration::from_secs(30);
/// After a failed renewal, how long a still-valid token serves before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(30);
const TARGET: &str = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken";

fn default_margin() -> Duration {
    Duration::from_secs(3600)
}

/// `upstreams[].credentials.ecr`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EcrConfig {
    /// The registry's AWS region (`eu-central-1`).
    pub region: String,
    /// The AWS account id owning the registry; default: the caller's own account.
    #[serde(default)]
    pub registry_id: Option<String>,
    /// The ECR API's URL instead of `https://api.ecr.<region>.amazonaws.com` (a VPC
    /// endpoint, FIPS, or a local emulator such as moto).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How long before the token's expiry it is renewed.
    #[serde(default = "default_margin", with = "crate::config::duration")]
    pub refresh_margin: Duration,
}

impl EcrConfig {
    /// What `check-config` refuses, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let r = &self.region;
        if r.is_empty()
            || r.len() > 32
            || !r
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            out.push(("region", format!("`{r}` is not an AWS region name")));
        }
        if let Some(id) = &self.registry_id {
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                out.push((
                    "registry_id",
                    format!("`{id}` is not a 12-digit AWS account id"),
                ));
            }
        }
        if let Some(e) = &self.endpoint {
            if let Err(m) = crate::upstream::url::parse_base(e) {
                out.push(("endpoint", m));
            }
        }
        if self.refresh_margin >= DOCUMENTED_LIFETIME {
            out.push((
                "refresh_margin",
                "must be shorter than the token's 12 h lifetime".to_owned(),
            ));
        }
        out
    }

    fn endpoint(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None if self.region.starts_with("cn-") => {
                format!("https://api.ecr.{}.amazonaws.com.cn", self.region)
            }
            None => format!("https://api.ecr.{}.amazonaws.com", self.region),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EcrError {
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    #[error("ECR API {endpoint} unreachable: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error("ECR GetAuthorizationToken refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("ECR GetAuthorizationToken answered garbage: {0}")]
    BadAnswer(String),
    #[error("cannot sign the ECR request: {0}")]
    Signing(String),
}

static TOKEN_REQUESTS: LazyLock<Option<prometheus::IntCounterVec>> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            format!("{}_ecr_token_requests_total", crate::metrics::PREFIX),
            "ECR GetAuthorizationToken calls, by upstream and result (ok, error)",
        ),
        &["upstream", "result"],
    )
    .ok()
});

/// Adds the ECR families to the proxy's registry (also when no upstream uses ECR: the
/// dashboard's queries find them).
pub fn register_metrics(registry: &prometheus::Registry) {
    if let Some(c) = TOKEN_REQUESTS.as_ref() {
        // Already there (a second service in one process) is fine.
        let _ = registry.register(Box::new(c.clone()));
    }
}

fn count(upstream: &str, result: &str) {
    if let Some(c) = TOKEN_REQUESTS.as_ref() {
        c.with_label_values(&[upstream, result]).inc();
    }
}

#[derive(Clone)]
struct Token {
    /// `Basic <token>`.
    header: Arc<str>,
    refresh_at: Instant,
    expires: Instant,
}

/// The ECR token of one upstream.
pub struct EcrTokens {
    upstream: String,
    cfg: EcrConfig,
    /// For the ECR API and the metadata endpoints: system roots, not the registry's CA.
    http: reqwest::Client,
    env: Box<dyn Environment + Send>,
    current: std::sync::RwLock<Option<Token>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl EcrTokens {
    pub fn new(upstream: &str, cfg: EcrConfig, http: reqwest::Client) -> Self {
        Self::with_env(upstream, cfg, http, Box::new(chain::ProcessEnv))
    }

    pub fn with_env(
        upstream: &str,
        cfg: EcrConfig,
        http: reqwest::Client,
        env: Box<dyn Environment + Send>,
    ) -> Self {
        EcrTokens {
            upstream: upstream.to_owned(),
            cfg,
            http,
            env,
            current: std::sync::RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Token> {
        self.current.read().ok().and_then(|g| g.clone())
    }

    /// The registry refused the token: fetch a new one next time.
    pub fn forget(&self) {
        if let Ok(mut g) = self.current.write() {
            *g = None;
        }
    }

    /// `Basic <token>` for the registry.
    pub async fn authorization(&self) -> Result<Arc<str>, EcrError> {
        if let Some(t) = self.current().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.header);
        }
        let _guard = match self.refreshing.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // Someone is refreshing: a token that is still valid serves meanwhile.
                if let Some(t) = self.current().filter(|t| Instant::now() < t.expires) {
                    return Ok(t.header);
                }
                self.refreshing.lock().await
            }
        };
        // The refresh we waited for may have been done.
        if let Some(t) = self.current().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.header);
        }
        let fetched = tokio::time::timeout(FETCH_DEADLINE, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(EcrError::Unreachable {
                    endpoint: self.cfg.endpoint(),
                    message: format!("no answer within {FETCH_DEADLINE:?}"),
                })
            });
        match fetched {
            Ok(t) => {
                count(&self.upstream, "ok");
                tracing::info!(upstream = %self.upstream, refresh_in = ?t.refresh_at.saturating_duration_since(Instant::now()), "ECR token fetched");
                if let Ok(mut g) = self.current.write() {
                    *g = Some(t.clone());
                }
                Ok(t.header)
            }
            Err(e) => {
                count(&self.upstream, "error");
                tracing::warn!(upstream = %self.upstream, error = %e, "ECR token fetch failed");
                let Some(mut t) = self.current().filter(|t| Instant::now() < t.expires) else {
                    return Err(e);
                };
                // The token still serves; the next attempt waits a little, so requests
                // do not each wait for an ECR API that is down or hanging.
                let left = t.expires.saturating_duration_since(Instant::now());
                t.refresh_at = Instant::now() + RETRY_AFTER.min(left / 2);
                if let Ok(mut g) = self.current.write() {
                    *g = Some(t.clone());
                }
                Ok(t.header)
            }
        }
    }

    async fn fetch(&self) -> Result<Token, EcrError> {
        let creds = chain::resolve(self.env.as_ref(), &self.http).await?;
        let endpoint = self.cfg.endpoint();
        let body = match &self.cfg.registry_id {
            Some(id) => serde_json::json!({ "registryIds": [id] }).to_string(),
            None => "{}".to_owned(),
        };
        let url = format!("{endpoint}/");
        let headers = signed_headers(
            &url,
            &self.cfg.region,
            &creds,
            body.as_bytes(),
            SystemTime::now(),
        )?;
        let started = Instant::now();
        let mut req = self.http.post(&url).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let mut resp = req.send().await.map_err(|e| EcrError::Unreachable {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let mut answer = Vec::new();
        while let Some(c) = resp.chunk().await.map_err(|e| EcrError::Unreachable {
            endpoint: endpoint.clone(),
            message: e.to_string(),
        })? {
            if answer.len() + c.len() > MAX_ANSWER {
                return Err(EcrError::BadAnswer("answer too large".into()));
            }
            answer.extend_from_slice(&c);
        }
        if !(200..300).contains(&status) {
            return Err(EcrError::Refused {
                status,
                message: aws_error_message(&answer),
            });
        }
        let (token, expires_at) = parse_answer(&answer)?;
        let lifetime = lifetime(expires_at, SystemTime::now());
        Ok(Token {
            header: format!("Basic {token}").into(),
            refresh_at: started + refresh_after(lifetime, self.cfg.refresh_margin),
            expires: started + lifetime,
        })
    }
}

/// The headers to send (`Content-Type`, `X-Amz-Target`, and the signature's own:
/// `Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`).
fn signed_headers(
    url: &str,
    region: &str,
    creds: &AwsCredentials,
    body: &[u8],
    now: SystemTime,
) -> Result<Vec<(String, String)>, EcrError> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let sig = |e: &dyn std::fmt::Display| EcrError::Signing(e.to_string());
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key.clone(),
            creds.session_token.clone(),
            None,
            "margo-proxy",
        )
        .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("ecr")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| sig(&e))?
        .into();
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-amz-json-1.1".to_owned(),
        ),
        ("x-amz-target".to_owned(), TARGET.to_owned()),
    ];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| sig(&e))?;
    let (instructions, _) = sign(signable, &params).map_err(|e| sig(&e))?.into_parts();
    let (signed, _) = instructions.into_parts();
    for h in signed {
        headers.push((h.name().to_owned(), h.value().to_owned()));
    }
    Ok(headers)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    authorization_data: Vec<AuthorizationData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuthorizationData {
    authorization_token: String,
    /// Epoch seconds (JSON 1.1 timestamps), possibly fractional.
    #[serde(default)]
    expires_at: Option<f64>,
}

/// The token (checked to be `base64("user:password")`) and when it expires.
fn parse_answer(body: &[u8]) -> Result<(String, Option<SystemTime>), EcrError> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| EcrError::BadAnswer(e.to_string()))?;
    let d = a
        .authorization_data
        .into_iter()
        .next()
        .ok_or_else(|| EcrError::BadAnswer("no authorizationData".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(d.authorization_token.as_bytes())
        .map_err(|_| EcrError::BadAnswer("authorizationToken is not base64".into()))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| EcrError::BadAnswer("authorizationToken is not text".into()))?;
    if !text
        .split_once(':')
        .is_some_and(|(u, p)| !u.is_empty() && !p.is_empty())
    {
        return Err(EcrError::BadAnswer(
            "authorizationToken is not user:password".into(),
        ));
    }
    let expires = d
        .expires_at
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e11)
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s));
    Ok((d.authorization_token, expires))
}

/// How long a token lasts from now: `expiresAt` when it is plausible, else ECR's 12 h.
fn lifetime(expires_at: Option<SystemTime>, now: SystemTime) -> Duration {
    match expires_at.and_then(|e| e.duration_since(now).ok()) {
        Some(d) if d > Duration::ZERO && d <= Duration::from_secs(86_400) => d,
        _ => DOCUMENTED_LIFETIME,
    }
}

/// When to renew: `margin` before expiry; for a lifetime shorter than the margin, half way.
fn refresh_after(lifetime: Duration, margin: Duration) -> Duration {
    match lifetime.checked_sub(margin) {
        Some(d) if d > Duration::ZERO => d,
        _ => lifetime / 2,
    }
}

/// `message` of an AWS JSON error answer (`{"__type": "...", "message": "..."}`).
fn aws_error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct AwsError {
        #[serde(default, rename = "__type")]
        kind: Option<String>,
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<AwsError>(body) {
        Ok(e) => {
            let kind = e.kind.unwrap_or_default();
            let kind = kind.rsplit('#').next().unwrap_or_default();
            let m: String = e.message.unwrap_or_default().chars().take(300).collect();
            format!("{kind}: {m}")
        }
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: token.map(str::to_owned),
            source: "test",
        }
    }

    #[test]
    fn the_request_is_signed_for_ecr_in_its_region() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_590_400); // 2025-12-01T12:00:00Z
        let h = signed_headers(
            "https://api.ecr.eu-central-1.amazonaws.com/",
            "eu-central-1",
            &creds(Some("sess")),
            b"{}",
            now,
        )
        .unwrap();
        let get = |k: &str| {
            h.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.clone())
        };
        let auth = get("authorization").unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251201/eu-central-1/ecr/aws4_request, SignedHeaders="),
            "{auth}"
        );
        let signed = auth
            .split("SignedHeaders=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        for part in [
            "content-type",
            "host",
            "x-amz-date",
            "x-amz-target",
            "x-amz-security-token",
        ] {
            assert!(
                signed.split(';').any(|s| s == part),
                "{part} not signed: {signed}"
            );
        }
        assert_eq!(get("x-amz-date").unwrap(), "20251201T120000Z");
        assert_eq!(get("x-amz-security-token").unwrap(), "sess");
        assert_eq!(get("x-amz-target").unwrap(), TARGET);
        // Deterministic: same inputs, same signature; another body, another one.
        let again = signed_headers(
            "https://api.ecr.eu-central-1.amazonaws.com/",
            "eu-central-1",
            &creds(Some("sess")),
            b"{}",
            now,
        )
        .unwrap();
        assert_eq!(h, again);
        let other = signed_headers(
            "https://api.ecr.eu-central-1.amazonaws.com/",
            "eu-central-1",
            &creds(Some("sess")),
            b"{\"registryIds\":[]}",
            now,
        )
        .unwrap();
        assert_ne!(h, other);
    }

    #[test]
    fn answers_are_read_strictly() {
        let tok = base64::engine::general_purpose::STANDARD.encode("AWS:secret");
        let body = format!(
            r#"{{"authorizationData":[{{"authorizationToken":"{tok}","expiresAt":1.7645904E9,"proxyEndpoint":"https://1.dkr.ecr"}}]}}"#
        );
        let (t, e) = parse_answer(body.as_bytes()).unwrap();
        assert_eq!(t, tok);
        assert_eq!(
            e,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_590_400))
        );
        let no_colon = base64::engine::general_purpose::STANDARD.encode("AWSsecret");
        for bad in [
            "{}".to_owned(),
            r#"{"authorizationData":[]}"#.to_owned(),
            r#"{"authorizationData":[{"authorizationToken":"%%%"}]}"#.to_owned(),
            format!(r#"{{"authorizationData":[{{"authorizationToken":"{no_colon}"}}]}}"#),
            "not json".to_owned(),
        ] {
            assert!(parse_answer(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn lifetimes_and_refresh_points() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let h = Duration::from_secs(3600);
        assert_eq!(lifetime(Some(now + 12 * h), now), 12 * h);
        assert_eq!(lifetime(Some(now + 90 * h / 60), now), 90 * h / 60);
        // In the past (moto answers 2015-01-01), absent, or absurdly far: ECR's 12 h.
        assert_eq!(lifetime(Some(now - h), now), DOCUMENTED_LIFETIME);
        assert_eq!(lifetime(None, now), DOCUMENTED_LIFETIME);
        assert_eq!(lifetime(Some(now + 48 * h), now), DOCUMENTED_LIFETIME);
        assert_eq!(refresh_after(12 * h, h), 11 * h);
        assert_eq!(refresh_after(h / 2, h), h / 4);
    }

    #[test]
    fn config_problems_name_their_key() {
        let cfg = |region: &str, id: Option<&str>, endpoint: Option<&str>, margin: u64| EcrConfig {
            region: region.into(),
            registry_id: id.map(str::to_owned),
            endpoint: endpoint.map(str::to_owned),
            refresh_margin: Duration::from_secs(margin),
        };
        assert!(cfg(
            "eu-central-1",
            Some("123456789012"),
            Some("http://127.0.0.1:5000"),
            3600
        )
        .problems()
        .is_empty());
        let keys = |c: EcrConfig| c.problems().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(cfg("EU Central", None, None, 60)), ["region"]);
        assert_eq!(
            keys(cfg("us-east-1", Some("12"), None, 60)),
            ["registry_id"]
        );
        assert_eq!(
            keys(cfg("us-east-1", None, Some("ftp://x"), 60)),
            ["endpoint"]
        );
        assert_eq!(
            keys(cfg("us-east-1", None, None, 13 * 3600)),
            ["refresh_margin"]
        );
        assert_eq!(
            cfg("cn-north-1", None, None, 1).endpoint(),
            "https://api.ecr.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            cfg("us-east-1", None, None, 1).endpoint(),
            "https://api.ecr.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn aws_errors_are_summarised() {
        assert_eq!(
            aws_error_message(br#"{"__type":"com.amazon.coral.service#UnrecognizedClientException","message":"The security token included in the request is invalid."}"#),
            "UnrecognizedClientException: The security token included in the request is invalid."
        );
    }
}

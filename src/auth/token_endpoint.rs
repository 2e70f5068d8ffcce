//! The built-in token endpoint: a bridge between stock registry clients
//! (which speak the distribution token protocol: GET with Basic credentials,
//! or the OAuth2 POST form) and an OIDC IdP (which speaks OAuth2 only).
//!
//! The bridge mints nothing: it exchanges the client's credentials at the
//! IdP and hands back the IdP's access token, which the registry then
//! validates like any other. A JWT given as the password (a token obtained
//! elsewhere, e.g. by a WFM) is validated and passed on unchanged.
//!
//! Credentials and tokens are never logged; request and response types
//! redact them in `Debug`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;

use crate::auth::config::{BridgeGrant, TokenEndpointConfig};
use crate::auth::error::{InvalidReason, TokenError};
use crate::auth::fetch::send;
use crate::auth::metrics::Counters;
use crate::auth::secret::Secret;
use crate::auth::validate::{now_unix, Validator};

/// Largest request body accepted (a form with a few fields).
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// What the glue sends back.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenResponse {
    /// Status.
    pub status: http::StatusCode,
    /// Headers (`Content-Type`, `Cache-Control: no-store`, maybe
    /// `WWW-Authenticate`).
    pub headers: Vec<(http::HeaderName, String)>,
    /// JSON body (holds the token on success: never log it).
    pub body: String,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("status", &self.status)
            .field("body", &"[redacted]")
            .finish()
    }
}

/// A parsed token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenRequest {
    /// No credentials.
    Anonymous,
    /// Username/password (GET Basic, or POST `grant_type=password`).
    Password {
        /// Username (or client id).
        username: String,
        /// Password (or client secret, or a JWT).
        password: Secret,
    },
    /// POST `grant_type=client_credentials`.
    ClientCredentials {
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
    },
    /// POST `grant_type=refresh_token`.
    Refresh {
        /// The refresh token.
        refresh_token: Secret,
    },
}

/// Why a token request was refused before reaching the IdP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Wrong method, missing/invalid fields.
    #[error("invalid_request: {0}")]
    Invalid(&'static str),
    /// `grant_type` not supported.
    #[error("unsupported_grant_type")]
    UnsupportedGrant,
    /// `service` names another registry.
    #[error("invalid_request: unknown service")]
    WrongService,
}

/// Parsed request plus the flags that shape the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedRequest {
    /// The credentials.
    pub request: TokenRequest,
    /// Registry scopes asked for (informational: permissions come from the
    /// registry's own rules, not from what the client asks).
    pub scopes: Vec<String>,
    /// The client wants a refresh token back (`offline_token=true` /
    /// `access_type=offline`).
    pub offline: bool,
}

/// Parse a token request (GET query + Authorization, or POST form).
pub fn parse_request(
    method: &http::Method,
    headers: &http::HeaderMap,
    query: Option<&str>,
    body: &[u8],
    service: &str,
) -> Result<ParsedRequest, RequestError> {
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(parse_basic)
        .transpose()?;
    let pairs: Vec<(String, String)> = match *method {
        http::Method::GET => url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect(),
        http::Method::POST => {
            if body.len() > MAX_REQUEST_BODY {
                return Err(RequestError::Invalid("body too large"));
            }
            url::form_urlencoded::parse(body).into_owned().collect()
        }
        _ => return Err(RequestError::Invalid("method not allowed")),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if get("service").is_some_and(|s| s != service) {
        return Err(RequestError::WrongService);
    }
    let scopes = pairs
        .iter()
        .filter(|(n, _)| n == "scope")
        .flat_map(|(_, v)| {
            v.split_ascii_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    if *method == http::Method::GET {
        let offline = get("offline_token").as_deref() == Some("true");
        let request = match basic {
            Some((username, password)) => {
                if get("account").is_some_and(|a| a != username) {
                    return Err(RequestError::Invalid("account does not match credentials"));
                }
                TokenRequest::Password { username, password }
            }
            None => TokenRequest::Anonymous,
        };
        return Ok(ParsedRequest {
            request,
            scopes,
            offline,
        });
    }
    let offline = get("access_type").as_deref() == Some("offline");
    let request = match get("grant_type").as_deref() {
        Some("password") => TokenRequest::Password {
            username: get("username").ok_or(RequestError::Invalid("username missing"))?,
            password: Secret::new(
                get("password").ok_or(RequestError::Invalid("password missing"))?,
            ),
        },
        Some("refresh_token") => TokenRequest::Refresh {
            refresh_token: Secret::new(
                get("refresh_token").ok_or(RequestError::Invalid("refresh_token missing"))?,
            ),
        },
        Some("client_credentials") => match (basic, get("client_id"), get("client_secret")) {
            (Some((id, secret)), _, _) => TokenRequest::ClientCredentials {
                client_id: id,
                client_secret: secret,
            },
            (None, Some(id), Some(secret)) => TokenRequest::ClientCredentials {
                client_id: id,
                client_secret: Secret::new(secret),
            },
            _ => return Err(RequestError::Invalid("client credentials missing")),
        },
        Some(_) => return Err(RequestError::UnsupportedGrant),
        None => return Err(RequestError::Invalid("grant_type missing")),
    };
    Ok(ParsedRequest {
        request,
        scopes,
        offline,
    })
}

fn parse_basic(value: &str) -> Result<(String, Secret), RequestError> {
    let bad = RequestError::Invalid("malformed basic credentials");
    let (scheme, rest) = value.trim().split_once(' ').ok_or(bad.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(RequestError::Invalid("unsupported authorization scheme"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .map_err(|_| bad.clone())?;
    let text = String::from_utf8(decoded).map_err(|_| bad.clone())?;
    let (user, pass) = text.split_once(':').ok_or(bad)?;
    Ok((user.to_owned(), Secret::new(pass)))
}

/// The bridge.
pub struct TokenBridge {
    cfg: TokenEndpointConfig,
    service: String,
    http: reqwest::Client,
    validator: Arc<Validator>,
    counters: Arc<Counters>,
    /// Anonymous pulls are configured: credential-less requests get
    /// [`crate::auth::ANONYMOUS_TOKEN`] instead of a Basic challenge.
    anonymous: bool,
}

impl std::fmt::Debug for TokenBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBridge")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Outcome of an IdP exchange.
struct Issued {
    access_token: Secret,
    expires_in: Option<u64>,
    refresh_token: Option<Secret>,
}

impl TokenBridge {
    /// Build.
    pub fn new(
        cfg: TokenEndpointConfig,
        service: String,
        http: reqwest::Client,
        validator: Arc<Validator>,
        counters: Arc<Counters>,
        anonymous: bool,
    ) -> Self {
        Self {
            cfg,
            service,
            http,
            validator,
            counters,
            anonymous,
        }
    }

    /// Path the glue routes here.
    pub fn path(&self) -> &str {
        &self.cfg.path
    }

    /// Handle one request end to end.
    pub async fn handle(
        &self,
        method: &http::Method,
        headers: &http::HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> TokenResponse {
        let parsed = match parse_request(method, headers, query, body, &self.service) {
            Ok(p) => p,
            Err(e) => {
                let (status, code) = match e {
                    RequestError::UnsupportedGrant => {
                        (http::StatusCode::BAD_REQUEST, "unsupported_grant_type")
                    }
                    _ if *method != http::Method::GET && *method != http::Method::POST => {
                        (http::StatusCode::METHOD_NOT_ALLOWED, "invalid_request")
                    }
                    _ => (http::StatusCode::BAD_REQUEST, "invalid_request"),
                };
                return error_response(status, code, &e.to_string(), None);
            }
        };
        let issued = match &parsed.request {
            TokenRequest::Anonymous if self.anonymous => {
                // What distribution token servers do for anonymous clients: a
                // token that grants what no token grants.
                return token_response(
                    crate::auth::ANONYMOUS_TOKEN,
                    self.cfg.default_expires_in,
                    None,
                );
            }
            TokenRequest::Anonymous => {
                return error_response(
                    http::StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "credentials required",
                    Some(format!(
                        "Basic realm={}",
                        crate::auth::challenge::quote(&self.service)
                    )),
                )
            }
            TokenRequest::Password { password, .. } if looks_like_jwt(password.expose()) => {
                return self.pass_through(password).await;
            }
            TokenRequest::Password { username, password } => match self.cfg.default_grant {
                BridgeGrant::ClientCredentials => {
                    self.exchange(
                        &[("grant_type", "client_credentials")],
                        Some((username, password)),
                    )
                    .await
                }
                BridgeGrant::Password => {
                    self.exchange_with_own_client(&[
                        ("grant_type", "password"),
                        ("username", username),
                        ("password", password.expose()),
                    ])
                    .await
                }
            },
            TokenRequest::ClientCredentials {
                client_id,
                client_secret,
            } => {
                self.exchange(
                    &[("grant_type", "client_credentials")],
                    Some((client_id, client_secret)),
                )
                .await
            }
            TokenRequest::Refresh { refresh_token } => {
                self.exchange_with_own_client(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                ])
                .await
            }
        };
        match issued {
            Ok(i) => self.success(i, parsed.offline).await,
            Err(r) => r,
        }
    }

    async fn pass_through(&self, token: &Secret) -> TokenResponse {
        match self.validator.validate(token.expose()).await {
            Ok(p) => {
                let expires_in = p
                    .expires_at
                    .map(|e| e.saturating_sub(now_unix()))
                    .unwrap_or(self.cfg.default_expires_in);
                token_response(token.expose(), expires_in, None)
            }
            Err(TokenError::Invalid(reason)) => error_response(
                http::StatusCode::UNAUTHORIZED,
                "invalid_grant",
                &reason.to_string(),
                None,
            ),
            Err(TokenError::Unavailable(_)) => unavailable(),
        }
    }

    async fn exchange_with_own_client(
        &self,
        form: &[(&str, &str)],
    ) -> Result<Issued, TokenResponse> {
        let (Some(id), Some(secret)) = (&self.cfg.client_id, &self.cfg.client_secret) else {
            return Err(error_response(
                http::StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "token endpoint has no client for this grant",
                None,
            ));
        };
        self.exchange(form, Some((id, secret))).await
    }

    /// POST to the IdP. Client authentication is `client_secret_basic`,
    /// with id and secret form-urlencoded first as RFC 6749 §2.3.1 requires
    /// (secrets with `:` or `%` would otherwise be misread).
    async fn exchange(
        &self,
        form: &[(&str, &str)],
        client: Option<(&String, &Secret)>,
    ) -> Result<Issued, TokenResponse> {
        self.counters.idp_exchanges.fetch_add(1, Ordering::Relaxed);
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if let Some(r) = &self.cfg.resource {
            fields.push(("resource", r));
        }
        if let Some(s) = &self.cfg.idp_scope {
            fields.push(("scope", s));
        }
        let mut req = self
            .http
            .post(&self.cfg.idp_token_url)
            .header("accept", "application/json")
            .form(&fields);
        if let Some((id, secret)) = client {
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(id), Some(enc(secret.expose())));
        }
        let (status, body) = send(req).await.map_err(|e| {
            tracing::warn!(error = %e, "token exchange at the IdP failed");
            unavailable()
        })?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if matches!(status, 400 | 401) {
            // invalid_client / invalid_grant: the caller's credentials.
            let code = json
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("invalid_grant");
            tracing::info!(idp_error = code, "token exchange refused by the IdP");
            return Err(error_response(
                http::StatusCode::UNAUTHORIZED,
                "invalid_grant",
                "invalid credentials",
                None,
            ));
        }
        if status != 200 {
            tracing::warn!(status, "token exchange: unexpected IdP status");
            return Err(error_response(
                http::StatusCode::BAD_GATEWAY,
                "server_error",
                "identity provider error",
                None,
            ));
        }
        let access_token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .ok_or_else(|| {
                error_response(
                    http::StatusCode::BAD_GATEWAY,
                    "server_error",
                    "identity provider returned no access token",
                    None,
                )
            })?;
        Ok(Issued {
            access_token: Secret::new(access_token),
            expires_in: json.get("expires_in").and_then(|e| e.as_u64()),
            refresh_token: json
                .get("refresh_token")
                .and_then(|t| t.as_str())
                .map(Secret::new),
        })
    }

    /// Validate what the IdP issued before handing it out: a token the
    /// registry would refuse (wrong audience, no JWT for lack of a resource
    /// indicator) is a configuration error, better reported here than as an
    /// endless challenge loop in the client. It also warms the cache.
    async fn success(&self, issued: Issued, offline: bool) -> TokenResponse {
        let token = issued.access_token.expose();
        let expires_in = match self.validator.validate(token).await {
            Ok(p) => issued
                .expires_in
                .or(p.expires_at.map(|e| e.saturating_sub(now_unix())))
                .unwrap_or(self.cfg.default_expires_in),
            // Signed with a key the proxy has not fetched yet: the IdP has just rotated and
            // the JWKS refetch cool-down is still running. Transient: the client may retry.
            Err(TokenError::Invalid(InvalidReason::UnknownKey)) => return unavailable(),
            Err(TokenError::Invalid(reason)) => {
                tracing::warn!(
                    reason = reason.label(),
                    "the IdP issued a token this registry does not accept (check issuer/audience/resource config)"
                );
                return error_response(
                    http::StatusCode::BAD_GATEWAY,
                    "server_error",
                    "identity provider issued an unusable token",
                    None,
                );
            }
            Err(TokenError::Unavailable(_)) => return unavailable(),
        };
        let refresh = if offline {
            issued.refresh_token.as_ref().map(Secret::expose)
        } else {
            None
        };
        token_response(token, expires_in, refresh)
    }
}

fn looks_like_jwt(s: &str) -> bool {
    s.len() > 20 && s.bytes().filter(|b| *b == b'.').count() == 2 && s.starts_with("eyJ")
}

fn headers_no_store() -> Vec<(http::HeaderName, String)> {
    vec![
        (http::header::CONTENT_TYPE, "application/json".to_owned()),
        (http::header::CACHE_CONTROL, "no-store".to_owned()),
        (http::header::PRAGMA, "no-cache".to_owned()),
    ]
}

fn token_response(token: &str, expires_in: u64, refresh: Option<&str>) -> TokenResponse {
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(now_unix()),
    });
    if let (Some(r), Some(obj)) = (refresh, body.as_object_mut()) {
        obj.insert(
            "refresh_token".into(),
            serde_json::Value::String(r.to_owned()),
        );
    }
    TokenResponse {
        status: http::StatusCode::OK,
        headers: headers_no_store(),
        body: body.to_string(),
    }
}

fn error_response(
    status: http::StatusCode,
    code: &str,
    description: &str,
    www_authenticate: Option<String>,
) -> TokenResponse {
    let oci = if status == http::StatusCode::UNAUTHORIZED {
        "UNAUTHORIZED"
    } else {
        "UNSUPPORTED"
    };
    let mut headers = headers_no_store();
    if let Some(w) = www_authenticate {
        headers.push((http::header::WWW_AUTHENTICATE, w));
    }
    TokenResponse {
        status,
        headers,
        body: serde_json::json!({
            "error": code,
            "error_description": description,
            "errors": [{"code": oci, "message": description}],
        })
        .to_string(),
    }
}

fn unavailable() -> TokenResponse {
    error_response(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "temporarily_unavailable",
        "identity provider unavailable",
        None,
    )
}

/// RFC 3339 UTC time (no date crate needed for one format).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for all u64 day counts we meet.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pass: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Basic {v}")).unwrap(),
        );
        h
    }

    #[test]
    fn get_with_basic_and_scopes() {
        let p = parse_request(
            &http::Method::GET,
            &basic("wfm", "p:a:ss"),
            Some("service=margo&scope=repository%3Aapps%2Fx%3Apull&scope=repository%3Aa%3Apush&account=wfm"),
            b"",
            "margo",
        )
        .unwrap();
        assert_eq!(p.scopes.len(), 2);
        match p.request {
            TokenRequest::Password { username, password } => {
                assert_eq!(username, "wfm");
                assert_eq!(password.expose(), "p:a:ss");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!format!("{:?}", basic_parse_debug()).contains("hunter2"));
    }

    fn basic_parse_debug() -> ParsedRequest {
        parse_request(&http::Method::GET, &basic("u", "hunter2"), None, b"", "s").unwrap()
    }

    #[test]
    fn get_refusals() {
        let e = parse_request(
            &http::Method::GET,
            &basic("a", "b"),
            Some("service=other"),
            b"",
            "margo",
        );
        assert_eq!(e.unwrap_err(), RequestError::WrongService);
        let e = parse_request(
            &http::Method::GET,
            &basic("a", "b"),
            Some("account=c"),
            b"",
            "margo",
        );
        assert!(e.is_err());
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic !!!"),
        );
        assert!(parse_request(&http::Method::GET, &h, None, b"", "m").is_err());
        let p = parse_request(&http::Method::GET, &http::HeaderMap::new(), None, b"", "m").unwrap();
        assert_eq!(p.request, TokenRequest::Anonymous);
        assert!(
            parse_request(&http::Method::PUT, &http::HeaderMap::new(), None, b"", "m").is_err()
        );
    }

    #[test]
    fn post_forms() {
        let h = http::HeaderMap::new();
        let p = parse_request(
            &http::Method::POST,
            &h,
            None,
            b"grant_type=password&username=dev&password=pw&service=m&access_type=offline&client_id=docker",
            "m",
        )
        .unwrap();
        assert!(p.offline);
        assert!(matches!(p.request, TokenRequest::Password { .. }));
        let p = parse_request(
            &http::Method::POST,
            &h,
            None,
            b"grant_type=refresh_token&refresh_token=rt",
            "m",
        )
        .unwrap();
        assert!(matches!(p.request, TokenRequest::Refresh { .. }));
        let p = parse_request(
            &http::Method::POST,
            &h,
            None,
            b"grant_type=client_credentials&client_id=c&client_secret=s",
            "m",
        )
        .unwrap();
        assert!(matches!(p.request, TokenRequest::ClientCredentials { .. }));
        assert_eq!(
            parse_request(&http::Method::POST, &h, None, b"grant_type=implicit", "m").unwrap_err(),
            RequestError::UnsupportedGrant
        );
        assert!(parse_request(
            &http::Method::POST,
            &h,
            None,
            b"grant_type=password&username=x",
            "m"
        )
        .is_err());
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}

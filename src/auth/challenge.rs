//! `WWW-Authenticate` challenges and OCI error bodies for refusals.
//!
//! Clients (docker, containerd, oras, skopeo) read `realm`, `service` and
//! `scope` from the challenge to ask the token service for a token, so the
//! scope must name exactly what the request needs, and values must be
//! RFC 7230 quoted-strings (a `"` in a value would otherwise end it early).

use crate::auth::access::Scope;
use crate::auth::error::AuthError;

/// A refusal ready to send: status, headers, JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: http::StatusCode,
    /// Headers to add (`WWW-Authenticate`, `Content-Type`,
    /// `Docker-Distribution-Api-Version`).
    pub headers: Vec<(http::HeaderName, String)>,
    /// OCI error body (also sent on HEAD by the glue as length only).
    pub body: String,
}

/// Quote a value as an RFC 7230 quoted-string; control characters (which
/// could split the header) are dropped.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Render `Bearer realm="…",service="…"[,scope="…"][,error="…"]`. Several
/// scopes go in one space-separated `scope` value, as distribution does.
pub fn bearer_challenge(
    realm: &str,
    service: &str,
    scopes: &[Scope],
    error: Option<&str>,
) -> String {
    let mut s = format!("Bearer realm={},service={}", quote(realm), quote(service));
    if !scopes.is_empty() {
        let joined = scopes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        s.push_str(",scope=");
        s.push_str(&quote(&joined));
    }
    if let Some(e) = error {
        s.push_str(",error=");
        s.push_str(&quote(e));
    }
    s
}

/// The OCI error body. `detail` lists the needed scopes (as distribution
/// does) so a human reading a client's error sees what was missing.
pub fn oci_error_body(err: &AuthError) -> String {
    let detail: Vec<serde_json::Value> = err
        .scopes()
        .iter()
        .map(|s| {
            serde_json::json!({
                "Type": match s.resource_type {
                    crate::auth::access::ResourceType::Repository => "repository",
                    crate::auth::access::ResourceType::Registry => "registry",
                },
                "Name": s.name,
                "Action": s.actions.to_string(),
            })
        })
        .collect();
    serde_json::json!({"errors": [{
        "code": err.oci_code(),
        "message": err.to_string(),
        "detail": detail,
    }]})
    .to_string()
}

/// Full rejection for an error. `Unavailable` gets no challenge: the token
/// is not at fault, so clients must not throw it away.
pub fn reject(realm: &str, service: &str, err: &AuthError) -> Rejection {
    let mut headers = vec![
        (http::header::CONTENT_TYPE, "application/json".to_owned()),
        (
            crate::oci::headers::DOCKER_DISTRIBUTION_API_VERSION.clone(),
            crate::oci::headers::API_VERSION_VALUE.to_owned(),
        ),
    ];
    let error_attr = match err {
        AuthError::MissingToken { .. } => Some(None),
        AuthError::InvalidToken { .. } => Some(Some("invalid_token")),
        AuthError::InsufficientScope { .. } => Some(Some("insufficient_scope")),
        AuthError::Unavailable { .. } => None,
    };
    if let Some(e) = error_attr {
        headers.push((
            http::header::WWW_AUTHENTICATE,
            bearer_challenge(realm, service, err.scopes(), e),
        ));
    }
    Rejection {
        status: err.status(),
        headers,
        body: oci_error_body(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::access::ActionSet;
    use crate::auth::error::InvalidReason;

    #[test]
    fn challenge_format_and_quoting() {
        let scopes = vec![
            Scope::repository("apps/x", ActionSet::PULL.union(ActionSet::PUSH)),
            Scope::repository("apps/y", ActionSet::PULL),
        ];
        assert_eq!(
            bearer_challenge("https://p/token", "margo", &scopes, Some("insufficient_scope")),
            "Bearer realm=\"https://p/token\",service=\"margo\",\
             scope=\"repository:apps/x:pull,push repository:apps/y:pull\",error=\"insufficient_scope\""
        );
        assert_eq!(quote("a\"b\\c\r\nd"), "\"a\\\"b\\\\cd\"");
    }

    #[test]
    fn rejections_map_status_code_and_challenge() {
        let scopes = vec![Scope::repository("a", ActionSet::PULL)];
        let r = reject(
            "r",
            "s",
            &AuthError::MissingToken {
                scopes: scopes.clone(),
            },
        );
        assert_eq!(r.status, 401);
        assert!(r.body.contains("UNAUTHORIZED"));
        let www = &r
            .headers
            .iter()
            .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
            .unwrap()
            .1;
        assert!(!www.contains("error="));
        let r = reject(
            "r",
            "s",
            &AuthError::InvalidToken {
                reason: InvalidReason::Expired,
                scopes: scopes.clone(),
            },
        );
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .iter()
            .any(|(_, v)| v.contains("error=\"invalid_token\"")));
        let r = reject("r", "s", &AuthError::InsufficientScope { scopes });
        assert_eq!(r.status, 403);
        assert!(r.body.contains("DENIED"));
        let r = reject("r", "s", &AuthError::Unavailable { what: "jwks" });
        assert_eq!(r.status, 503);
        assert!(!r
            .headers
            .iter()
            .any(|(n, _)| n == http::header::WWW_AUTHENTICATE));
    }
}

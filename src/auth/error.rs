//! Error types: why a request was refused, and why a config was rejected.
//!
//! Every refusal carries a `reason()` label with a small fixed set of values,
//! fit for a metrics label (never a token, a subject or a repository name).

use crate::auth::access::Scope;

/// Why a presented token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Not a JWT nor an introspectable token, bad base64/JSON, too long.
    #[error("malformed token")]
    Malformed,
    /// `Authorization` is not `Bearer <token>`.
    #[error("unsupported authorization scheme")]
    UnsupportedScheme,
    /// `alg` not in the issuer's allow-list (includes `none` and HMAC).
    #[error("signature algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `iss` missing or not a configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// No key with this `kid`, even after a refetch.
    #[error("unknown signing key")]
    UnknownKey,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` in the past (beyond leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` in the future (beyond leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this registry.
    #[error("token not issued for this registry")]
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`) is missing or ill-typed.
    #[error("required claim missing")]
    MissingClaim,
    /// An ID token presented as an access token.
    #[error("not an access token")]
    NotAccessToken,
    /// Introspection says the token is not active.
    #[error("token inactive")]
    Inactive,
    /// The `x5c` chain does not lead to a configured root.
    #[error("untrusted certificate chain")]
    UntrustedChain,
    /// A `crit` header we do not implement.
    #[error("unsupported critical header")]
    CriticalHeader,
}

impl InvalidReason {
    /// Metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedScheme => "unsupported_scheme",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::NotAccessToken => "not_access_token",
            Self::Inactive => "inactive",
            Self::UntrustedChain => "untrusted_chain",
            Self::CriticalHeader => "crit_header",
        }
    }
}

/// Outcome of token validation alone (no request context yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is bad.
    #[error("invalid token: {0}")]
    Invalid(#[from] InvalidReason),
    /// We could not decide: the IdP (JWKS, introspection) is unreachable.
    #[error("authorization service unavailable: {0}")]
    Unavailable(&'static str),
}

/// Why a request is refused. Maps to a status, an OCI error code and a
/// challenge (see [`crate::auth::challenge`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials on a protected resource: 401, plain challenge.
    #[error("authentication required")]
    MissingToken {
        /// Scopes the client should ask a token for.
        scopes: Vec<Scope>,
    },
    /// Credentials present but unusable: 401, `error="invalid_token"`.
    #[error("{reason}")]
    InvalidToken {
        /// Why.
        reason: InvalidReason,
        /// Scopes the client should ask a token for.
        scopes: Vec<Scope>,
    },
    /// Valid identity, not allowed: 403, `error="insufficient_scope"`.
    #[error("requested access to the resource is denied")]
    InsufficientScope {
        /// Scopes that were needed.
        scopes: Vec<Scope>,
    },
    /// Could not validate (IdP down): 503, so clients retry rather than
    /// drop credentials.
    #[error("authorization service unavailable")]
    Unavailable {
        /// Which dependency.
        what: &'static str,
    },
}

impl AuthError {
    /// Attach request scopes to a validation failure.
    pub fn from_token_error(e: TokenError, scopes: Vec<Scope>) -> Self {
        match e {
            TokenError::Invalid(reason) => Self::InvalidToken { reason, scopes },
            TokenError::Unavailable(what) => Self::Unavailable { what },
        }
    }

    /// HTTP status.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::MissingToken { .. } | Self::InvalidToken { .. } => http::StatusCode::UNAUTHORIZED,
            Self::InsufficientScope { .. } => http::StatusCode::FORBIDDEN,
            Self::Unavailable { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// OCI distribution error code.
    pub fn oci_code(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } | Self::InvalidToken { .. } => "UNAUTHORIZED",
            Self::InsufficientScope { .. } => "DENIED",
            Self::Unavailable { .. } => "UNAVAILABLE",
        }
    }

    /// Low-cardinality metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } => "missing_token",
            Self::InvalidToken { reason, .. } => reason.label(),
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::Unavailable { .. } => "idp_unavailable",
        }
    }

    /// Scopes of the request, for the challenge.
    pub fn scopes(&self) -> &[Scope] {
        match self {
            Self::MissingToken { scopes }
            | Self::InvalidToken { scopes, .. }
            | Self::InsufficientScope { scopes } => scopes,
            Self::Unavailable { .. } => &[],
        }
    }
}

/// A config that cannot be used. Messages name the offending item.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Bad repository glob.
    #[error("invalid pattern {pattern:?}: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Parser message.
        reason: String,
    },
    /// Bad key material.
    #[error("issuer {issuer}: {reason}")]
    Key {
        /// The issuer.
        issuer: String,
        /// What is wrong.
        reason: String,
    },
    /// Anything else inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

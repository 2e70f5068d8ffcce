//! The authenticated identity handed to authorization and, later, to the
//! proxy's policies.

use crate::auth::access::{Permissions, Scope};

/// Who is calling and what they may do. Built once per distinct token and
/// shared (`Arc`) between the requests that present it.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `sub` claim (or introspection `sub`/`username`).
    pub subject: Option<String>,
    /// `iss` of the token.
    pub issuer: Option<String>,
    /// `client_id` (RFC 9068), or `azp` as OIDC IdPs write it.
    pub client_id: Option<String>,
    /// Group memberships from the issuer's groups claim.
    pub groups: Vec<String>,
    /// Every claim, verbatim, so policies can look at IdP-specific ones.
    pub claims: serde_json::Value,
    /// `exp` in seconds since the epoch.
    pub expires_at: Option<u64>,
    /// No token was presented; the request passed on anonymous rules.
    pub anonymous: bool,
    /// Matched a `read_only` rule: push and delete are masked.
    pub read_only: bool,
    /// Effective permissions (claims ∪ rules, minus the read-only mask).
    pub permissions: Permissions,
}

impl Principal {
    /// The anonymous caller, with the given (pull-only) permissions.
    pub fn anonymous(permissions: Permissions) -> Self {
        Self {
            subject: None,
            issuer: None,
            client_id: None,
            groups: Vec::new(),
            claims: serde_json::Value::Null,
            expires_at: None,
            anonymous: true,
            read_only: true,
            permissions,
        }
    }

    /// Whether this principal may do all of `scopes`.
    pub fn allows_all(&self, scopes: &[Scope]) -> bool {
        scopes.iter().all(|s| self.permissions.allows(s))
    }

    /// A short, log-safe identifier (never a token): `sub`, else client id.
    pub fn display_name(&self) -> &str {
        if self.anonymous {
            return "anonymous";
        }
        self.subject
            .as_deref()
            .or(self.client_id.as_deref())
            .unwrap_or("unknown")
    }
}

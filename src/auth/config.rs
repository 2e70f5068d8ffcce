//! The `auth:` section of the proxy configuration.
//!
//! Every struct denies unknown fields: a misspelt key in an auth policy is a
//! security bug (the operator believes a restriction is active when it is
//! not), so it must stop `check-config` rather than be ignored.
//!
//! Secrets are [`Secret`] values: they deserialize from plain strings but never
//! show up in `Debug` output, so a config dumped in a log line leaks nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::access::Action;
use crate::auth::secret::Secret;

/// The whole `auth:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// URL that clients are sent to for a token (`realm` in the challenge).
    /// Usually the proxy's own [`TokenEndpointConfig::path`] on its public URL.
    pub realm: String,
    /// The `service` name in challenges; also the default audience of
    /// distribution-style tokens (their `aud` is the service name).
    pub service: String,
    /// Trusted token issuers. A token whose `iss` is not listed is refused.
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
    /// Claim rules granting actions on repository patterns.
    #[serde(default)]
    pub rules: Vec<ClaimRule>,
    /// Principals that never get more than `pull`, whatever else grants them
    /// (Margo WFM clients are read-only consumers of the registry).
    #[serde(default)]
    pub read_only: Vec<ClaimMatch>,
    /// Repository patterns anyone may pull without a token.
    #[serde(default)]
    pub anonymous_pull: Vec<String>,
    /// The built-in token endpoint (bridge to an OIDC IdP) for stock clients.
    #[serde(default)]
    pub token_endpoint: Option<TokenEndpointConfig>,
    /// Caches and timeouts.
    #[serde(default)]
    pub cache: CacheConfig,
}

/// One trusted issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Exact `iss` value expected in tokens (no normalisation: a trailing
    /// slash matters, as it does for OIDC).
    pub issuer: String,
    /// Accepted `aud` values. Empty means "the configured `service`", which is
    /// what distribution token servers put in `aud`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where the verification keys come from.
    #[serde(default)]
    pub keys: KeySource,
    /// Signature algorithms accepted from this issuer. HMAC and `none` are
    /// rejected at config load: a shared secret would let anyone holding it
    /// mint tokens, and `none` is no signature at all.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<AlgorithmName>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Require the RFC 9068 `typ: at+jwt` header. Turn on for IdPs that emit
    /// it (oidc-provider, Keycloak with the option, Auth0...): it is the only
    /// unambiguous way to tell an access token from an ID token.
    #[serde(default)]
    pub require_at_jwt_typ: bool,
    /// Take permissions from the distribution `access` claim.
    #[serde(default = "default_true")]
    pub trust_access_claim: bool,
    /// Take permissions from `repository:...` / `registry:...` entries of the
    /// OAuth `scope` claim.
    #[serde(default = "default_true")]
    pub trust_scope_claim: bool,
    /// Name of the claim holding group memberships (copied to
    /// [`crate::auth::principal::Principal::groups`]).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// RFC 7662 introspection for opaque (non-JWT) tokens of this issuer.
    #[serde(default)]
    pub introspection: Option<IntrospectionConfig>,
}

/// Where an issuer's verification keys come from. Exactly one source; `jku`
/// and `x5u` token headers are never followed whatever is set here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum KeySource {
    /// `{issuer}/.well-known/openid-configuration` → `jwks_uri`.
    #[default]
    Discovery,
    /// A JWKS URL given directly.
    JwksUri(String),
    /// PEM public keys (or certificates), for token servers without a JWKS.
    Static(Vec<StaticKey>),
    /// A PEM bundle of root certificates: tokens carry their signing
    /// certificate chain in `x5c` (distribution's `rootcertbundle`), and are
    /// accepted if it chains to one of these roots.
    X5cRoots(PathBuf),
}

/// A pinned public key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    /// `kid` the token header must carry; absent means "any token without a
    /// `kid`, or whose `kid` matches no other key".
    #[serde(default)]
    pub kid: Option<String>,
    /// Inline PEM (`-----BEGIN PUBLIC KEY-----`, RSA PUBLIC KEY or CERTIFICATE).
    #[serde(default)]
    pub pem: Option<String>,
    /// Or a path to the PEM file.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
}

/// RFC 7662 token introspection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The IdP's introspection endpoint.
    pub endpoint: String,
    /// Client the proxy authenticates as (client_secret_basic).
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
    /// How long an introspection answer (active or not) is reused. Short, as
    /// revocation is the point of introspection.
    #[serde(default = "default_introspection_ttl")]
    pub cache_seconds: u64,
}

/// Claim rule: when the principal's claims match, grant actions on patterns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Optional label, for logs and metrics.
    #[serde(default)]
    pub name: Option<String>,
    /// All of these must match (an empty list matches every valid token).
    #[serde(rename = "match", default)]
    pub matches: Vec<ClaimMatch>,
    /// Repository glob (`apps/**`, `apps/acme/*`) → actions.
    /// `registry:catalog` is written as the pattern `registry:catalog`.
    pub grant: BTreeMap<String, Vec<Action>>,
}

/// A claim condition: the claim (a dotted path such as `realm_access.roles`)
/// equals one of `values`, or, for an array claim, contains one of them.
/// A value `*` matches any present claim.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    /// Claim name or dotted path. `groups` resolves to the issuer's
    /// configured groups claim.
    pub claim: String,
    /// Accepted values.
    pub values: Vec<String>,
}

/// Settings of the built-in token endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEndpointConfig {
    /// Path the proxy serves it on (the glue routes it).
    #[serde(default = "default_token_path")]
    pub path: String,
    /// The IdP's token endpoint.
    pub idp_token_url: String,
    /// How username/password from a client are exchanged.
    #[serde(default)]
    pub default_grant: BridgeGrant,
    /// Client for the password and refresh_token grants (the proxy's own
    /// client at the IdP). Not used by the client-credentials exchange, where
    /// the caller's username/password *are* the client credentials.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Its secret.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// RFC 8707 `resource` sent to the IdP, so it issues a JWT for the proxy.
    #[serde(default)]
    pub resource: Option<String>,
    /// OAuth `scope` sent to the IdP (IdP scopes, not registry scopes).
    #[serde(default)]
    pub idp_scope: Option<String>,
    /// Fallback lifetime reported when neither the IdP nor the token says.
    #[serde(default = "default_expires_in")]
    pub default_expires_in: u64,
}

/// What to do with a username/password given to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BridgeGrant {
    /// username = client id, password = client secret (machine clients: WFMs,
    /// CI). Works with every OIDC IdP.
    #[default]
    ClientCredentials,
    /// Resource-owner password grant at the IdP, with the proxy's client.
    Password,
}

/// Caches, timeouts and refresh policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Verified tokens kept (each until its `exp`, capped by `max_token_ttl_seconds`).
    #[serde(default = "default_token_cache_entries")]
    pub verified_tokens: u64,
    /// Upper bound on how long a verified token is trusted without re-checking
    /// its signature (bounds the effect of a key withdrawn from the JWKS).
    #[serde(default = "default_max_token_ttl")]
    pub max_token_ttl_seconds: u64,
    /// Minimum time between two JWKS refetches caused by unknown `kid`s.
    #[serde(default = "default_jwks_cooldown")]
    pub jwks_refetch_cooldown_seconds: u64,
    /// JWKS refreshed on use when older than this.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_seconds: u64,
    /// Timeout of each call to the IdP (discovery, JWKS, introspection, token).
    #[serde(default = "default_http_timeout")]
    pub http_timeout_seconds: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            verified_tokens: default_token_cache_entries(),
            max_token_ttl_seconds: default_max_token_ttl(),
            jwks_refetch_cooldown_seconds: default_jwks_cooldown(),
            jwks_max_age_seconds: default_jwks_max_age(),
            http_timeout_seconds: default_http_timeout(),
        }
    }
}

/// Asymmetric JWS algorithms the proxy accepts. A closed list on purpose:
/// `none` and `HS*` cannot even be written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum AlgorithmName {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl AlgorithmName {
    /// The jsonwebtoken algorithm.
    pub fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            Self::RS256 => A::RS256,
            Self::RS384 => A::RS384,
            Self::RS512 => A::RS512,
            Self::PS256 => A::PS256,
            Self::PS384 => A::PS384,
            Self::PS512 => A::PS512,
            Self::ES256 => A::ES256,
            Self::ES384 => A::ES384,
            Self::EdDSA => A::EdDSA,
        }
    }
}

fn default_algorithms() -> Vec<AlgorithmName> {
    vec![
        AlgorithmName::RS256,
        AlgorithmName::PS256,
        AlgorithmName::ES256,
        AlgorithmName::EdDSA,
    ]
}
fn default_leeway() -> u64 {
    30
}
fn default_true() -> bool {
    true
}
fn default_groups_claim() -> String {
    "groups".to_owned()
}
fn default_introspection_ttl() -> u64 {
    30
}
fn default_token_path() -> String {
    "/token".to_owned()
}
fn default_expires_in() -> u64 {
    300
}
fn default_token_cache_entries() -> u64 {
    100_000
}
fn default_max_token_ttl() -> u64 {
    3600
}
fn default_jwks_cooldown() -> u64 {
    10
}
fn default_jwks_max_age() -> u64 {
    3600
}
fn default_http_timeout() -> u64 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses_and_unknown_keys_fail() {
        let json = serde_json::json!({
            "realm": "https://proxy.example/token",
            "service": "margo-proxy",
            "issuers": [{
                "issuer": "https://idp.example",
                "audiences": ["https://proxy.example"],
                "keys": {"jwks_uri": "https://idp.example/jwks"},
                "algorithms": ["RS256", "EdDSA"],
                "introspection": {"endpoint": "https://idp.example/introspect",
                                  "client_id": "proxy", "client_secret": "s3cret"}
            }],
            "rules": [{"match": [{"claim": "groups", "values": ["wfm"]}],
                       "grant": {"apps/**": ["pull"]}}],
            "read_only": [{"claim": "client_id", "values": ["wfm-1"]}],
            "anonymous_pull": ["public/**"],
            "token_endpoint": {"idp_token_url": "https://idp.example/token"}
        });
        let cfg: AuthConfig = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(cfg.issuers[0].algorithms.len(), 2);
        assert!(!format!("{cfg:?}").contains("s3cret"));

        let mut bad = json.clone();
        bad["issuers"][0]["audience"] = serde_json::json!("typo");
        assert!(serde_json::from_value::<AuthConfig>(bad).is_err());
        let mut hs = json;
        hs["issuers"][0]["algorithms"] = serde_json::json!(["HS256"]);
        assert!(serde_json::from_value::<AuthConfig>(hs).is_err());
    }
}

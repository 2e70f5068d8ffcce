//! `trust:` in the config: trust policies modelled on Notation's trust policy
//! (name, scopes, trust store, trusted identities, enforcement level) and Kyverno's
//! `verifyImages` (keys, mode), matched on the client's repository names.

use std::path::PathBuf;

use serde::Deserialize;

use super::verdict::Format;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustConfig {
    /// First policy whose `match` covers the repository applies.
    pub policies: Vec<TrustPolicyConfig>,
    /// How long a verified manifest digest stays verified without looking again.
    #[serde(default = "default_verified_ttl", with = "crate::config::duration")]
    pub verified_ttl: Duration,
    /// How long a refusal is remembered (a signature pushed straight to the upstream is
    /// found after this; one pushed through the proxy at once).
    #[serde(default = "default_refused_ttl", with = "crate::config::duration")]
    pub refused_ttl: Duration,
}

fn default_verified_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_refused_ttl() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrustMode {
    /// Unsigned manifests get `403 DENIED`.
    #[default]
    Enforce,
    /// Logged and counted, served.
    Audit,
    /// Not checked.
    Off,
}

impl TrustMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TrustMode::Enforce => "enforce",
            TrustMode::Audit => "audit",
            TrustMode::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicyConfig {
    pub name: String,
    /// Repository globs (client names), like `routes[].match`.
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    #[serde(default)]
    pub mode: TrustMode,
    /// Formats that count; default all three.
    #[serde(default = "all_formats")]
    pub formats: Vec<Format>,
    /// cosign public keys (PEM `PUBLIC KEY` files: ECDSA P-256, Ed25519, RSA).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// Notary trust store: PEM files of CA certificates.
    #[serde(default)]
    pub trust_store: Vec<PathBuf>,
    /// Notary `x509.subject` identities (`CN=CI, O=Vendor`); empty: any the store vouches for.
    #[serde(default)]
    pub trusted_identities: Vec<String>,
}

fn all_formats() -> Vec<Format> {
    Format::ALL.to_vec()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub name: String,
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: TrustConfig = serde_saphyr::from_str(
            "policies:\n  - name: v\n    match: [\"apps/**\"]\n    keys: [{name: k, path: /k.pub}]\n",
        )
        .expect("config");
        assert_eq!(c.verified_ttl, Duration::from_secs(300));
        assert_eq!(c.refused_ttl, Duration::from_secs(10));
        let p = &c.policies[0];
        assert_eq!(p.mode, TrustMode::Enforce);
        assert_eq!(p.formats, Format::ALL.to_vec());
        let typo = serde_saphyr::from_str::<TrustConfig>(
            "policies:\n  - name: v\n    match: [\"a\"]\n    mdoe: audit\n",
        );
        assert!(typo.is_err(), "unknown keys are errors");
        let format = serde_saphyr::from_str::<TrustConfig>(
            "policies:\n  - name: v\n    match: [\"a\"]\n    formats: [pgp]\n",
        );
        assert!(format.is_err(), "unknown formats are errors");
    }
}

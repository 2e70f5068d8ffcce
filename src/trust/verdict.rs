//! What checking a manifest's signatures found: one [`SignatureCheck`] per signature
//! looked at, and the [`Verdict`] over all of them.

use serde::Serialize;

/// Signature formats a trust policy may accept (config spelling in `serde`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// cosign's tag layout: `sha256-<hex>.sig` holding simple-signing payloads.
    Cosign,
    /// cosign's OCI 1.1 form: a referrer holding a Sigstore bundle (v0.3).
    CosignBundle,
    /// Notary Project signatures (JWS or COSE envelope) against an x509 trust store.
    Notary,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Cosign, Format::CosignBundle, Format::Notary];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Cosign => "cosign",
            Format::CosignBundle => "cosign-bundle",
            Format::Notary => "notary",
        }
    }
}

/// The result of checking one signature. Ordered from best to worst news for the
/// denial message: the most telling failure names why a pull was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Verified,
    /// The signing certificate (or a certificate in its chain) is expired or not yet
    /// valid, or the signature is past its own expiry.
    ExpiredCertificate,
    /// Signed by a key or certificate the policy knows, but the signature is wrong.
    BadSignature,
    /// The signature is intact but for another manifest.
    WrongDigest,
    /// No trusted key or certificate verifies it.
    UntrustedKey,
    /// The format's fields are not what its specification says.
    Malformed,
    /// A variant out of scope (keyless bundles, TSA timestamps, ES512).
    Unsupported,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::ExpiredCertificate => "expired_certificate",
            Outcome::BadSignature => "bad_signature",
            Outcome::WrongDigest => "wrong_digest",
            Outcome::UntrustedKey => "untrusted_key",
            Outcome::Malformed => "malformed",
            Outcome::Unsupported => "unsupported",
        }
    }

    /// How a denial names it.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::ExpiredCertificate => "expired certificate",
            Outcome::BadSignature => "bad signature",
            Outcome::WrongDigest => "signature is for another digest",
            Outcome::UntrustedKey => "untrusted key",
            Outcome::Malformed => "malformed signature",
            Outcome::Unsupported => "unsupported signature variant",
        }
    }

    /// Rank of a failure for the denial message (lower is more telling).
    fn rank(self) -> u8 {
        match self {
            Outcome::Verified => 0,
            Outcome::ExpiredCertificate => 1,
            Outcome::BadSignature => 2,
            Outcome::WrongDigest => 3,
            Outcome::UntrustedKey => 4,
            Outcome::Malformed => 5,
            Outcome::Unsupported => 6,
        }
    }
}

/// One signature looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    pub format: Format,
    pub outcome: Outcome,
    /// The trusted key's name, or the signing certificate's subject, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Where the signature is: the signature manifest's digest (or tag).
    pub source: String,
    /// Why, in a few words (never secret; certificate subjects and key names only).
    pub detail: String,
}

impl SignatureCheck {
    pub fn new(format: Format, outcome: Outcome, source: &str, detail: impl Into<String>) -> Self {
        SignatureCheck {
            format,
            outcome,
            identity: None,
            source: source.to_owned(),
            detail: detail.into(),
        }
    }

    pub fn with_identity(mut self, identity: Option<String>) -> Self {
        self.identity = identity;
        self
    }
}

/// All signatures of one manifest digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Verdict {
    pub checks: Vec<SignatureCheck>,
    /// The signatures could not all be read (upstream trouble): deny when unsure, and
    /// do not keep the verdict long.
    pub incomplete: Option<String>,
    /// The manifest is a referrer itself (a signature, an SBOM): not subject to the
    /// policy, so verifiers can read it. Decided once per digest, like the rest.
    pub exempt: bool,
}

impl Verdict {
    pub fn verified(&self) -> bool {
        self.checks.iter().any(|c| c.outcome == Outcome::Verified)
    }

    /// Served: exempt, or verified.
    pub fn allows(&self) -> bool {
        self.exempt || self.verified()
    }

    /// Why the manifest is not verified, for the denial (`None` when verified).
    pub fn reason(&self) -> Option<String> {
        if self.allows() {
            return None;
        }
        let worst = self.checks.iter().min_by_key(|c| c.outcome.rank());
        Some(match (worst, &self.incomplete) {
            (Some(c), _) => format!(
                "{} ({} signature {}: {})",
                c.outcome.describe(),
                c.format.as_str(),
                c.source,
                c.detail
            ),
            (None, Some(why)) => format!("signatures could not be read: {why}"),
            (None, None) => "no signature".to_owned(),
        })
    }

    /// The short reason code for logs and details.
    pub fn reason_code(&self) -> &'static str {
        if self.verified() {
            return "verified";
        }
        match self.checks.iter().min_by_key(|c| c.outcome.rank()) {
            Some(c) => c.outcome.as_str(),
            None if self.incomplete.is_some() => "unavailable",
            None => "no_signature",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_telling_failure_names_the_reason() {
        let mut v = Verdict::default();
        assert_eq!(v.reason().as_deref(), Some("no signature"));
        assert_eq!(v.reason_code(), "no_signature");
        v.checks.push(SignatureCheck::new(
            Format::Cosign,
            Outcome::UntrustedKey,
            "t",
            "x",
        ));
        v.checks.push(SignatureCheck::new(
            Format::Notary,
            Outcome::ExpiredCertificate,
            "d",
            "y",
        ));
        assert_eq!(v.reason_code(), "expired_certificate");
        assert!(v
            .reason()
            .unwrap_or_default()
            .starts_with("expired certificate (notary"));
        v.checks.push(SignatureCheck::new(
            Format::Notary,
            Outcome::Verified,
            "d",
            "ok",
        ));
        assert!(v.verified());
        assert_eq!(v.reason(), None);
    }
}

//! Distribution-style token servers (`auth.token.rootcertbundle`): the token
//! header carries the signing certificate chain in `x5c`, and the token is
//! trusted if that chain leads to a configured root. The chain is verified
//! with webpki (the same code rustls uses for TLS), then the leaf's public
//! key verifies the JWT like any other key.

use base64::Engine;
use jsonwebtoken::DecodingKey;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use crate::auth::error::{ConfigError, InvalidReason};
use crate::auth::jwks::decoding_key_from_pem;

/// At most this many certificates in `x5c` (bounds work on hostile input).
const MAX_CHAIN: usize = 5;

/// Trusted roots of one issuer.
#[derive(Debug)]
pub struct RootBundle {
    anchors: Vec<TrustAnchor<'static>>,
}

impl RootBundle {
    /// Load a PEM bundle (one or more `CERTIFICATE` blocks).
    pub fn from_pem(issuer: &str, pem: &[u8]) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::Key {
            issuer: issuer.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(pem).map_err(|_| err("root bundle is not text".into()))?;
        let mut anchors = Vec::new();
        for der in pem_blocks(text, "CERTIFICATE") {
            let cert = CertificateDer::from(der);
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| err(format!("bad root certificate: {e}")))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(err("root bundle holds no certificate".into()));
        }
        Ok(Self { anchors })
    }

    /// Verify an `x5c` header value and return the leaf's key.
    pub fn verify_chain(&self, x5c: &[String]) -> Result<DecodingKey, InvalidReason> {
        if x5c.is_empty() || x5c.len() > MAX_CHAIN {
            return Err(InvalidReason::UntrustedChain);
        }
        let ders = x5c
            .iter()
            .map(|c| base64::engine::general_purpose::STANDARD.decode(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| InvalidReason::Malformed)?;
        let certs: Vec<CertificateDer<'_>> = ders
            .iter()
            .map(|d| CertificateDer::from(d.as_slice()))
            .collect();
        let (leaf, intermediates) = certs.split_first().ok_or(InvalidReason::UntrustedChain)?;
        let ee =
            webpki::EndEntityCert::try_from(leaf).map_err(|_| InvalidReason::UntrustedChain)?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::now(),
            // Token-signing certs rarely carry an EKU; if one does, it must
            // not be limited to something unrelated.
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .or_else(|_| {
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                UnixTime::now(),
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
        })
        .map_err(|_| InvalidReason::UntrustedChain)?;
        let spki = ee.subject_public_key_info();
        let pem = to_pem("PUBLIC KEY", spki.as_ref());
        decoding_key_from_pem(pem.as_bytes()).map_err(|_| InvalidReason::UntrustedChain)
    }
}

/// DER payloads of the PEM blocks with this label.
fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let after = &rest[start + begin.len()..];
        let Some(stop) = after.find(&end) else { break };
        let b64: String = after[..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &after[stop + end.len()..];
    }
    out
}

fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

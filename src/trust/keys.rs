//! Public keys in PKIX form (`-----BEGIN PUBLIC KEY-----`, as cosign writes them, or a
//! certificate's SubjectPublicKeyInfo) and signature checks with them. Parsing is
//! x509-parser's, the arithmetic is ring's (the backend rustls already uses here).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM `PUBLIC KEY`")]
    Pem,
    #[error("not a SubjectPublicKeyInfo")]
    Spki,
    #[error("unsupported public key algorithm (ECDSA P-256/P-384, Ed25519 and RSA are)")]
    Unsupported,
}

/// The kind of a public key, which decides the signature schemes it may be used with
/// (never the other way round: an envelope's `alg` only has to agree with the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa,
}

/// How a signature is laid out and hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// cosign: ECDSA with SHA-256, ASN.1 DER signature; Ed25519 over the message;
    /// RSA PKCS#1 v1.5 with SHA-256 (sigstore's defaults for each key type).
    Cosign,
    /// JWS `alg` values the Notary Project allows (RFC 7518: fixed-width ECDSA).
    Es256,
    Es384,
    Ps256,
    Ps384,
    Ps512,
}

/// A parsed public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: KeyKind,
    /// The key as ring reads it: an uncompressed point, 32 raw bytes, or PKCS#1.
    raw: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({:?})", self.kind)
    }
}

impl PublicKey {
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (_, p) =
            x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).map_err(|_| KeyError::Pem)?;
        if p.label != "PUBLIC KEY" {
            return Err(KeyError::Pem);
        }
        Self::from_spki_der(&p.contents)
    }

    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        let (_, spki) = SubjectPublicKeyInfo::from_der(der).map_err(|_| KeyError::Spki)?;
        Self::from_spki(&spki)
    }

    pub fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, KeyError> {
        let alg = &spki.algorithm.algorithm;
        let kind = if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            match curve {
                Some(c) if c == OID_EC_P256 => KeyKind::EcdsaP256,
                Some(c) if c == OID_NIST_EC_P384 => KeyKind::EcdsaP384,
                _ => return Err(KeyError::Unsupported),
            }
        } else if *alg == OID_SIG_ED25519 {
            KeyKind::Ed25519
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            KeyKind::Rsa
        } else {
            return Err(KeyError::Unsupported);
        };
        Ok(PublicKey {
            kind,
            raw: spki.subject_public_key.data.to_vec(),
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Whether `sig` is a valid signature of `msg` under `scheme`. A scheme the key
    /// cannot be used with is a failed check, not an error.
    pub fn verify(&self, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
        let Some(alg) = algorithm(self.kind, scheme) else {
            return false;
        };
        UnparsedPublicKey::new(alg, &self.raw)
            .verify(msg, sig)
            .is_ok()
    }
}

fn algorithm(kind: KeyKind, scheme: Scheme) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match (kind, scheme) {
        (KeyKind::EcdsaP256, Scheme::Cosign) => &signature::ECDSA_P256_SHA256_ASN1,
        (KeyKind::EcdsaP384, Scheme::Cosign) => &signature::ECDSA_P384_SHA384_ASN1,
        (KeyKind::Ed25519, Scheme::Cosign) => &signature::ED25519,
        (KeyKind::Rsa, Scheme::Cosign) => &signature::RSA_PKCS1_2048_8192_SHA256,
        (KeyKind::EcdsaP256, Scheme::Es256) => &signature::ECDSA_P256_SHA256_FIXED,
        (KeyKind::EcdsaP384, Scheme::Es384) => &signature::ECDSA_P384_SHA384_FIXED,
        (KeyKind::Rsa, Scheme::Ps256) => &signature::RSA_PSS_2048_8192_SHA256,
        (KeyKind::Rsa, Scheme::Ps384) => &signature::RSA_PSS_2048_8192_SHA384,
        (KeyKind::Rsa, Scheme::Ps512) => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair};

    /// SubjectPublicKeyInfo DER for a P-256 point (RFC 5480 layout).
    pub fn p256_spki(point: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        der.extend_from_slice(point);
        der
    }

    /// SubjectPublicKeyInfo DER for an Ed25519 key (RFC 8410 layout).
    pub fn ed25519_spki(raw: &[u8]) -> Vec<u8> {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(raw);
        der
    }

    pub fn p256_pair() -> (EcdsaKeyPair, PublicKey) {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("pair");
        let key = PublicKey::from_spki_der(&p256_spki(pair.public_key().as_ref())).expect("spki");
        (pair, key)
    }

    #[test]
    fn p256_cosign_signatures_verify_and_tampering_fails() {
        let (pair, key) = p256_pair();
        assert_eq!(key.kind(), KeyKind::EcdsaP256);
        let rng = SystemRandom::new();
        let sig = pair.sign(&rng, b"payload").expect("sign");
        assert!(key.verify(Scheme::Cosign, b"payload", sig.as_ref()));
        assert!(!key.verify(Scheme::Cosign, b"payload!", sig.as_ref()));
        // The same key under a scheme of another family is refused.
        assert!(!key.verify(Scheme::Ps256, b"payload", sig.as_ref()));
        let (_, other) = p256_pair();
        assert!(!other.verify(Scheme::Cosign, b"payload", sig.as_ref()));
    }

    #[test]
    fn ed25519_keys_parse_from_pem() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let der = ed25519_spki(pair.public_key().as_ref());
        use base64::Engine as _;
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let key = PublicKey::from_pem(&pem).expect("pem");
        assert_eq!(key.kind(), KeyKind::Ed25519);
        let sig = pair.sign(b"m");
        assert!(key.verify(Scheme::Cosign, b"m", sig.as_ref()));
        assert!(!key.verify(Scheme::Cosign, b"n", sig.as_ref()));
    }

    #[test]
    fn bad_keys_are_errors() {
        assert_eq!(PublicKey::from_pem("nope"), Err(KeyError::Pem));
        assert_eq!(PublicKey::from_spki_der(b"\x30\x00"), Err(KeyError::Spki));
        let cert_pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert_eq!(PublicKey::from_pem(cert_pem), Err(KeyError::Pem));
    }
}

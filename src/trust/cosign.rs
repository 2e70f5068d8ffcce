//! cosign key-based signatures, in both layouts cosign writes:
//!
//! - the tag layout of the cosign Signature Specification (sigstore/cosign
//!   `specs/SIGNATURE_SPEC.md`): a manifest under `sha256-<hex>.sig` whose layers are
//!   `application/vnd.dev.cosign.simplesigning.v1+json` payloads, each with its
//!   base64 signature in the `dev.cosignproject.cosign/signature` annotation; the
//!   payload's `critical.image.docker-manifest-digest` names the signed manifest;
//! - the OCI 1.1 referrer of the cosign Bundle Specification (`specs/BUNDLE_SPEC.md`):
//!   artifactType `application/vnd.dev.sigstore.bundle.v0.3+json`, one layer holding a
//!   Sigstore bundle (protobuf-specs `sigstore_bundle.proto`, v0.3 JSON) whose
//!   verification material is a public key (`publicKey.hint`), signing either the
//!   manifest itself (`messageSignature`) or an in-toto statement naming it
//!   (`dsseEnvelope`).
//!
//! Keyless signatures (Fulcio certificates, Rekor entries) need the public Sigstore
//! services and are out of scope: such bundles are reported `unsupported`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::keys::{PublicKey, Scheme};
use super::verdict::{Format, Outcome, SignatureCheck};
use crate::oci::Digest;

pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE_MEDIA_TYPE_PREFIX: &str = "application/vnd.dev.sigstore.bundle";
pub const SIMPLE_SIGNING_TYPE: &str = "cosign container image signature";
const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A trusted cosign key with the name policies and logs know it by.
#[derive(Debug, Clone)]
pub struct NamedKey {
    pub name: String,
    pub key: PublicKey,
    /// base64(SHA-256(SubjectPublicKeyInfo DER)): how Sigstore bundles hint at a key.
    pub hint: String,
}

impl NamedKey {
    pub fn new(name: &str, spki_der: &[u8]) -> Result<Self, super::keys::KeyError> {
        Ok(NamedKey {
            name: name.to_owned(),
            key: PublicKey::from_spki_der(spki_der)?,
            hint: STANDARD.encode(Sha256::digest(spki_der)),
        })
    }
}

/// The cosign signature tag of `subject`: `sha256-<hex>.sig`.
pub fn signature_tag(subject: &Digest) -> String {
    format!("{}-{}.sig", subject.algorithm().as_str(), subject.encoded())
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

fn verifying_key<'k>(keys: &'k [NamedKey], msg: &[u8], sig: &[u8]) -> Option<&'k NamedKey> {
    keys.iter().find(|k| k.key.verify(Scheme::Cosign, msg, sig))
}

/// One simple-signing layer: its payload bytes and the annotation's signature.
pub fn verify_simple_signing(
    payload: &[u8],
    signature_b64: &str,
    subject: &Digest,
    keys: &[NamedKey],
    source: &str,
) -> SignatureCheck {
    let check = |o: Outcome, d: &str| SignatureCheck::new(Format::Cosign, o, source, d);
    let Ok(sig) = STANDARD.decode(signature_b64.trim()) else {
        return check(Outcome::Malformed, "signature annotation is not base64");
    };
    // Integrity first: a payload no trusted key signed says nothing, whatever it claims.
    let Some(key) = verifying_key(keys, payload, &sig) else {
        return check(
            Outcome::UntrustedKey,
            "no trusted key verifies it (signed by another key, or altered)",
        );
    };
    let named = |c: SignatureCheck| c.with_identity(Some(key.name.clone()));
    let parsed: SimpleSigning = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(_) => return named(check(Outcome::Malformed, "payload is not simple signing")),
    };
    if parsed.critical.kind != SIMPLE_SIGNING_TYPE {
        return named(check(
            Outcome::Malformed,
            "payload type is not a container image signature",
        ));
    }
    if parsed.critical.image.digest != subject.to_string() {
        return named(check(
            Outcome::WrongDigest,
            &format!("it signs {}", truncate(&parsed.critical.image.digest)),
        ));
    }
    named(check(Outcome::Verified, "simple signing payload"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    media_type: String,
    verification_material: VerificationMaterial,
    #[serde(default)]
    message_signature: Option<MessageSignature>,
    #[serde(default)]
    dsse_envelope: Option<Envelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default)]
    public_key: Option<PublicKeyRef>,
    #[serde(default)]
    certificate: Option<serde_json::Value>,
    #[serde(default)]
    x509_certificate_chain: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct PublicKeyRef {
    #[serde(default)]
    hint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageSignature {
    message_digest: MessageDigest,
    signature: String,
}

#[derive(Deserialize)]
struct MessageDigest {
    algorithm: String,
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<StatementSubject>,
}

#[derive(Deserialize)]
struct StatementSubject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE v1 pre-authentication encoding (secure-systems-lab/dsse `protocol.md`).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A Sigstore bundle attached to `subject`, whose manifest bytes are `manifest`.
pub fn verify_bundle(
    bundle: &[u8],
    subject: &Digest,
    manifest: &[u8],
    keys: &[NamedKey],
    source: &str,
) -> SignatureCheck {
    let check = |o: Outcome, d: &str| SignatureCheck::new(Format::CosignBundle, o, source, d);
    let b: Bundle = match serde_json::from_slice(bundle) {
        Ok(b) => b,
        Err(_) => return check(Outcome::Malformed, "not a Sigstore bundle"),
    };
    if !b.media_type.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
        return check(
            Outcome::Malformed,
            "bundle mediaType is not a Sigstore bundle's",
        );
    }
    let vm = &b.verification_material;
    if vm.certificate.is_some() || vm.x509_certificate_chain.is_some() {
        return check(
            Outcome::Unsupported,
            "certificate (keyless) bundles need Fulcio and Rekor, out of scope",
        );
    }
    let Some(pk) = &vm.public_key else {
        return check(Outcome::Malformed, "bundle has no verification material");
    };
    // With a hint, only the hinted key is tried: a signature that fails under it is a
    // bad signature, a hint naming no trusted key an untrusted one.
    let hinted: Vec<NamedKey> = match pk.hint.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => match keys.iter().find(|k| k.hint == h || k.name == h) {
            Some(k) => vec![k.clone()],
            None => {
                return check(
                    Outcome::UntrustedKey,
                    "its public key hint names no trusted key",
                )
            }
        },
        None => keys.to_vec(),
    };
    let failed = if pk.hint.is_some() {
        Outcome::BadSignature
    } else {
        Outcome::UntrustedKey
    };
    match (&b.message_signature, &b.dsse_envelope) {
        (Some(ms), None) => {
            if ms.message_digest.algorithm != "SHA2_256" {
                return check(Outcome::Unsupported, "message digest is not SHA2_256");
            }
            let Ok(claimed) = STANDARD.decode(&ms.message_digest.digest) else {
                return check(Outcome::Malformed, "message digest is not base64");
            };
            let Ok(sig) = STANDARD.decode(&ms.signature) else {
                return check(Outcome::Malformed, "signature is not base64");
            };
            let Some(key) = verifying_key(&hinted, manifest, &sig) else {
                // Signed over something else (or by another key): say which when we can.
                if claimed != Sha256::digest(manifest).as_slice() {
                    return check(
                        Outcome::WrongDigest,
                        "its message digest is another manifest's",
                    );
                }
                return check(failed, "the signature does not verify");
            };
            if claimed != Sha256::digest(manifest).as_slice() || !subject.verifies(manifest) {
                return check(
                    Outcome::WrongDigest,
                    "its message digest is another manifest's",
                )
                .with_identity(Some(key.name.clone()));
            }
            check(Outcome::Verified, "message signature").with_identity(Some(key.name.clone()))
        }
        (None, Some(env)) => {
            let Ok(payload) = STANDARD.decode(&env.payload) else {
                return check(Outcome::Malformed, "DSSE payload is not base64");
            };
            let signed = pae(&env.payload_type, &payload);
            let key = env.signatures.iter().find_map(|s| {
                let sig = STANDARD.decode(&s.sig).ok()?;
                verifying_key(&hinted, &signed, &sig)
            });
            let Some(key) = key else {
                return check(failed, "the DSSE signature does not verify");
            };
            let named = |c: SignatureCheck| c.with_identity(Some(key.name.clone()));
            if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
                return named(check(
                    Outcome::Malformed,
                    "DSSE payload is not an in-toto statement",
                ));
            }
            let Ok(st) = serde_json::from_slice::<Statement>(&payload) else {
                return named(check(Outcome::Malformed, "in-toto statement is not JSON"));
            };
            let alg = subject.algorithm().as_str();
            let names_it = st
                .subject
                .iter()
                .any(|s| s.digest.get(alg).map(String::as_str) == Some(subject.encoded()));
            if !names_it {
                return named(check(
                    Outcome::WrongDigest,
                    "the statement names another manifest",
                ));
            }
            named(check(Outcome::Verified, "DSSE in-toto statement"))
        }
        _ => check(
            Outcome::Malformed,
            "bundle needs exactly one of messageSignature, dsseEnvelope",
        ),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::keys::tests::{p256_pair, p256_spki};
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn named(pair: &ring::signature::EcdsaKeyPair, name: &str) -> NamedKey {
        NamedKey::new(name, &p256_spki(pair.public_key().as_ref())).expect("key")
    }

    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    /// cosign Signature Specification (sigstore/cosign specs/SIGNATURE_SPEC.md, cosign
    /// v2): simple-signing payload, base64 ECDSA-P256-SHA256 ASN.1 signature.
    #[test]
    fn simple_signing_cases() {
        let rng = SystemRandom::new();
        let (pair, _) = p256_pair();
        let (other, _) = p256_pair();
        let keys = vec![named(&pair, "vendor")];
        let subject = Digest::sha256_of(b"manifest");
        let p = payload(&subject.to_string());
        let sig = STANDARD.encode(pair.sign(&rng, &p).expect("sign"));
        let ok = verify_simple_signing(&p, &sig, &subject, &keys, "t");
        assert_eq!(ok.outcome, Outcome::Verified);
        assert_eq!(ok.identity.as_deref(), Some("vendor"));

        let mut tampered = p.clone();
        tampered.extend_from_slice(b" ");
        assert_eq!(
            verify_simple_signing(&tampered, &sig, &subject, &keys, "t").outcome,
            Outcome::UntrustedKey
        );

        let untrusted = STANDARD.encode(other.sign(&rng, &p).expect("sign"));
        assert_eq!(
            verify_simple_signing(&p, &untrusted, &subject, &keys, "t").outcome,
            Outcome::UntrustedKey
        );

        let elsewhere = Digest::sha256_of(b"other");
        assert_eq!(
            verify_simple_signing(&p, &sig, &elsewhere, &keys, "t").outcome,
            Outcome::WrongDigest
        );
        assert_eq!(
            verify_simple_signing(&p, "***", &subject, &keys, "t").outcome,
            Outcome::Malformed
        );
    }

    /// Sigstore bundle v0.3 (sigstore/protobuf-specs `sigstore_bundle.proto`,
    /// mediaType `application/vnd.dev.sigstore.bundle.v0.3+json`) with a public key.
    #[test]
    fn bundle_cases() {
        let rng = SystemRandom::new();
        let (pair, _) = p256_pair();
        let keys = vec![named(&pair, "vendor")];
        let manifest = br#"{"schemaVersion":2}"#;
        let subject = Digest::sha256_of(manifest);
        let sig = STANDARD.encode(pair.sign(&rng, manifest).expect("sign"));
        let md = STANDARD.encode(Sha256::digest(manifest));
        let hint = keys[0].hint.clone();
        let bundle = |hint: &str, sig: &str, md: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"publicKey":{{"hint":"{hint}"}},"tlogEntries":[]}},"messageSignature":{{"messageDigest":{{"algorithm":"SHA2_256","digest":"{md}"}},"signature":"{sig}"}}}}"#
            )
        };
        let ok = verify_bundle(
            bundle(&hint, &sig, &md).as_bytes(),
            &subject,
            manifest,
            &keys,
            "d",
        );
        assert_eq!(ok.outcome, Outcome::Verified, "{ok:?}");
        let bad = STANDARD.encode(pair.sign(&rng, b"x").expect("sign"));
        assert_eq!(
            verify_bundle(
                bundle(&hint, &bad, &md).as_bytes(),
                &subject,
                manifest,
                &keys,
                "d"
            )
            .outcome,
            Outcome::BadSignature
        );
        assert_eq!(
            verify_bundle(
                bundle("nope", &sig, &md).as_bytes(),
                &subject,
                manifest,
                &keys,
                "d"
            )
            .outcome,
            Outcome::UntrustedKey
        );

        // DSSE with an in-toto statement naming the subject.
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
            subject.encoded()
        );
        let dsse_sig = STANDARD.encode(
            pair.sign(&rng, &pae(IN_TOTO_PAYLOAD_TYPE, statement.as_bytes()))
                .expect("sign"),
        );
        let dsse = format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{{"publicKey":{{"hint":"{hint}"}}}},"dsseEnvelope":{{"payload":"{}","payloadType":"{IN_TOTO_PAYLOAD_TYPE}","signatures":[{{"sig":"{dsse_sig}"}}]}}}}"#,
            STANDARD.encode(&statement)
        );
        assert_eq!(
            verify_bundle(dsse.as_bytes(), &subject, manifest, &keys, "d").outcome,
            Outcome::Verified
        );
        let other = Digest::sha256_of(b"else");
        assert_eq!(
            verify_bundle(dsse.as_bytes(), &other, b"else", &keys, "d").outcome,
            Outcome::WrongDigest
        );

        let keyless = r#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{"certificate":{"rawBytes":"AA=="}},"messageSignature":{"messageDigest":{"algorithm":"SHA2_256","digest":""},"signature":""}}"#;
        assert_eq!(
            verify_bundle(keyless.as_bytes(), &subject, manifest, &keys, "d").outcome,
            Outcome::Unsupported
        );
        assert_eq!(
            verify_bundle(b"[]", &subject, manifest, &keys, "d").outcome,
            Outcome::Malformed
        );
    }

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // secure-systems-lab/dsse protocol.md: "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }
}

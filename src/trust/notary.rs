//! Notary Project signatures (notaryproject/specifications v1.1.0:
//! `signature-specification.md`, `signature-envelope-jws.md`,
//! `trust-store-trust-policy.md`): a referrer with artifactType
//! `application/vnd.cncf.notary.signature` whose layer is a signature envelope.
//! Checked, in the order the specification gives:
//! integrity (the signature under the leaf certificate's key, `alg` agreeing with the
//! key), the payload naming this manifest, authenticity (the `x5c` chain ends at a
//! certificate of the trust store, leaf with the code-signing EKU), the trusted
//! identities, and expiry (chain valid now, signing time inside the leaf's validity,
//! the signature's own `io.cncf.notary.expiry`), for JWS (`application/jose+json`) and
//! COSE_Sign1 (`application/cose`, `signature-envelope-cose.md`) envelopes alike.
//! TSA timestamps (`notary.x509.signingAuthority`) are reported `unsupported`.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Deserialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys::{KeyKind, PublicKey, Scheme};
use super::verdict::{Format, Outcome, SignatureCheck};
use crate::oci::Digest;

pub const ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
pub const JWS_MEDIA_TYPE: &str = "application/jose+json";
pub const COSE_MEDIA_TYPE: &str = "application/cose";
const PAYLOAD_CTY: &str = "application/vnd.cncf.notary.payload.v1+json";
/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER-encoded OID value.
const EKU_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
const KNOWN_CRITICAL: &[&str] = &[
    "io.cncf.notary.signingScheme",
    "io.cncf.notary.authenticSigningTime",
    "io.cncf.notary.expiry",
    "io.cncf.notary.verificationPlugin",
    "io.cncf.notary.verificationPluginMinVersion",
];
const MAX_CHAIN: usize = 8;

/// The trust store and identities of a policy.
#[derive(Debug, Clone, Default)]
pub struct NotaryTrust {
    /// DER certificates of the trust store (roots or pinned intermediates).
    pub anchors: Vec<Vec<u8>>,
    /// `x509.subject` identities (`CN=..., O=...`): every attribute listed must be in
    /// the leaf's subject. Empty: any identity the trust store vouches for.
    pub identities: Vec<String>,
}

#[derive(Deserialize)]
struct Envelope {
    payload: String,
    protected: String,
    #[serde(default)]
    header: Unprotected,
    signature: String,
}

#[derive(Deserialize, Default)]
struct Unprotected {
    #[serde(default)]
    x5c: Vec<String>,
}

#[derive(Deserialize)]
struct Protected {
    alg: String,
    #[serde(default)]
    cty: String,
    #[serde(default)]
    crit: Vec<String>,
    #[serde(rename = "io.cncf.notary.signingScheme", default)]
    signing_scheme: String,
    #[serde(rename = "io.cncf.notary.signingTime", default)]
    signing_time: Option<String>,
    #[serde(rename = "io.cncf.notary.expiry", default)]
    expiry: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    target_artifact: Target,
}

#[derive(Deserialize)]
struct Target {
    digest: String,
}

/// Verifies one JWS envelope for `subject` at time `now` (Unix seconds).
pub fn verify_jws(
    envelope: &[u8],
    subject: &Digest,
    trust: &NotaryTrust,
    now: u64,
    source: &str,
) -> SignatureCheck {
    let check = |o: Outcome, d: &str| SignatureCheck::new(Format::Notary, o, source, d);
    let Ok(env) = serde_json::from_slice::<Envelope>(envelope) else {
        return check(Outcome::Malformed, "not a flattened JWS JSON envelope");
    };
    let (Ok(protected_raw), Ok(payload_raw), Ok(sig)) = (
        URL_SAFE_NO_PAD.decode(&env.protected),
        URL_SAFE_NO_PAD.decode(&env.payload),
        URL_SAFE_NO_PAD.decode(&env.signature),
    ) else {
        return check(Outcome::Malformed, "envelope fields are not base64url");
    };
    let Ok(protected) = serde_json::from_slice::<Protected>(&protected_raw) else {
        return check(Outcome::Malformed, "protected header is not JSON");
    };
    if protected.cty != PAYLOAD_CTY {
        return check(
            Outcome::Malformed,
            "protected header `cty` is not the Notary payload",
        );
    }
    if !protected
        .crit
        .iter()
        .any(|c| c == "io.cncf.notary.signingScheme")
        || protected
            .crit
            .iter()
            .any(|c| !KNOWN_CRITICAL.contains(&c.as_str()))
    {
        return check(
            Outcome::Malformed,
            "protected header `crit` is not what the spec allows",
        );
    }
    match protected.signing_scheme.as_str() {
        "notary.x509" => {}
        "notary.x509.signingAuthority" => {
            return check(
                Outcome::Unsupported,
                "signing authority (TSA) signatures are out of scope",
            )
        }
        _ => return check(Outcome::Malformed, "unknown signing scheme"),
    }
    if env.header.x5c.is_empty() || env.header.x5c.len() > MAX_CHAIN {
        return check(
            Outcome::Malformed,
            "x5c must hold the signing certificate chain",
        );
    }
    let mut chain = Vec::with_capacity(env.header.x5c.len());
    for c in &env.header.x5c {
        match STANDARD.decode(c) {
            Ok(der) => chain.push(der),
            Err(_) => return check(Outcome::Malformed, "x5c entry is not base64"),
        }
    }
    let signing_time = match protected.signing_time.as_deref().map(rfc3339_seconds) {
        Some(Some(t)) => t,
        _ => {
            return check(
                Outcome::Malformed,
                "io.cncf.notary.signingTime missing or not RFC 3339",
            )
        }
    };
    let expiry = match protected.expiry.as_deref().map(rfc3339_seconds) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return check(Outcome::Malformed, "io.cncf.notary.expiry is not RFC 3339"),
    };
    let alg = match protected.alg.as_str() {
        "ES256" => Alg::Es256,
        "ES384" => Alg::Es384,
        "ES512" => Alg::Es512,
        "PS256" => Alg::Ps256,
        "PS384" => Alg::Ps384,
        "PS512" => Alg::Ps512,
        _ => Alg::Other,
    };
    let signing_input = format!("{}.{}", env.protected, env.payload).into_bytes();
    verify_signed(
        &Signed {
            envelope: "JWS",
            alg,
            signing_input: &signing_input,
            signature: &sig,
            payload: &payload_raw,
            chain: &chain,
            signing_time,
            expiry,
        },
        subject,
        trust,
        now,
        source,
    )
}

/// Verifies one COSE_Sign1_Tagged envelope (`signature-envelope-cose.md`) for `subject`.
pub fn verify_cose(
    envelope: &[u8],
    subject: &Digest,
    trust: &NotaryTrust,
    now: u64,
    source: &str,
) -> SignatureCheck {
    use coset::cbor::value::Value;
    use coset::{iana, Label, RegisteredLabel, RegisteredLabelWithPrivate, TaggedCborSerializable};
    let check = |o: Outcome, d: &str| SignatureCheck::new(Format::Notary, o, source, d);
    let Ok(sign1) = coset::CoseSign1::from_tagged_slice(envelope) else {
        return check(Outcome::Malformed, "not a COSE_Sign1_Tagged envelope");
    };
    let p = &sign1.protected.header;
    match &p.content_type {
        Some(RegisteredLabel::Text(t)) if t == PAYLOAD_CTY => {}
        _ => {
            return check(
                Outcome::Malformed,
                "protected header `content type` is not the Notary payload",
            )
        }
    }
    let crit: Vec<&str> = p
        .crit
        .iter()
        .filter_map(|c| match c {
            RegisteredLabelWithPrivate::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    if crit.len() != p.crit.len()
        || !crit.contains(&"io.cncf.notary.signingScheme")
        || crit.iter().any(|c| !KNOWN_CRITICAL.contains(c))
    {
        return check(
            Outcome::Malformed,
            "protected header `crit` is not what the spec allows",
        );
    }
    let field = |h: &coset::Header, name: &str| -> Option<Value> {
        h.rest
            .iter()
            .find(|(l, _)| matches!(l, Label::Text(t) if t == name))
            .map(|(_, v)| v.clone())
    };
    let epoch = |v: Option<Value>| -> Option<i64> {
        match v? {
            Value::Tag(1, inner) => match *inner {
                Value::Integer(i) => i64::try_from(i128::from(i)).ok(),
                _ => None,
            },
            _ => None,
        }
    };
    match field(p, "io.cncf.notary.signingScheme") {
        Some(Value::Text(s)) if s == "notary.x509" => {}
        Some(Value::Text(s)) if s == "notary.x509.signingAuthority" => {
            return check(
                Outcome::Unsupported,
                "signing authority (TSA) signatures are out of scope",
            )
        }
        _ => return check(Outcome::Malformed, "unknown signing scheme"),
    }
    let Some(signing_time) = epoch(field(p, "io.cncf.notary.signingTime")) else {
        return check(
            Outcome::Malformed,
            "io.cncf.notary.signingTime missing or not an epoch date/time",
        );
    };
    let expiry = match field(p, "io.cncf.notary.expiry") {
        None => None,
        v => match epoch(v) {
            Some(t) => Some(t),
            None => {
                return check(
                    Outcome::Malformed,
                    "io.cncf.notary.expiry is not an epoch date/time",
                )
            }
        },
    };
    let alg = match &p.alg {
        Some(RegisteredLabelWithPrivate::Assigned(a)) => match a {
            iana::Algorithm::ES256 => Alg::Es256,
            iana::Algorithm::ES384 => Alg::Es384,
            iana::Algorithm::ES512 => Alg::Es512,
            iana::Algorithm::PS256 => Alg::Ps256,
            iana::Algorithm::PS384 => Alg::Ps384,
            iana::Algorithm::PS512 => Alg::Ps512,
            _ => Alg::Other,
        },
        _ => Alg::Other,
    };
    // x5chain (label 33): unprotected, or protected.
    let x5chain = |h: &coset::Header| {
        h.rest
            .iter()
            .find(|(l, _)| *l == Label::Int(33))
            .map(|(_, v)| v.clone())
    };
    let chain: Vec<Vec<u8>> = match x5chain(&sign1.unprotected).or_else(|| x5chain(p)) {
        Some(Value::Bytes(b)) => vec![b],
        Some(Value::Array(a)) if !a.is_empty() && a.len() <= MAX_CHAIN => {
            match a
                .into_iter()
                .map(|v| match v {
                    Value::Bytes(b) => Some(b),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
            {
                Some(c) => c,
                None => return check(Outcome::Malformed, "x5chain entries must be byte strings"),
            }
        }
        _ => {
            return check(
                Outcome::Malformed,
                "x5chain must hold the signing certificate chain",
            )
        }
    };
    let Some(payload) = &sign1.payload else {
        return check(
            Outcome::Malformed,
            "detached payloads are not Notary signatures",
        );
    };
    let tbs = sign1.tbs_data(b"");
    verify_signed(
        &Signed {
            envelope: "COSE",
            alg,
            signing_input: &tbs,
            signature: &sign1.signature,
            payload,
            chain: &chain,
            signing_time,
            expiry,
        },
        subject,
        trust,
        now,
        source,
    )
}

/// A Notary `alg`, from a JWS name or a COSE number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Es256,
    Es384,
    Es512,
    Ps256,
    Ps384,
    Ps512,
    Other,
}

/// What both envelopes carry, decoded.
struct Signed<'a> {
    envelope: &'static str,
    alg: Alg,
    signing_input: &'a [u8],
    signature: &'a [u8],
    payload: &'a [u8],
    chain: &'a [Vec<u8>],
    /// Unix seconds.
    signing_time: i64,
    expiry: Option<i64>,
}

/// The checks after decoding, in the specification's order.
fn verify_signed(
    signed: &Signed<'_>,
    subject: &Digest,
    trust: &NotaryTrust,
    now: u64,
    source: &str,
) -> SignatureCheck {
    let check = |o: Outcome, d: &str| SignatureCheck::new(Format::Notary, o, source, d);
    let chain = signed.chain;
    let Ok((_, leaf)) = X509Certificate::from_der(&chain[0]) else {
        return check(Outcome::Malformed, "signing certificate is not X.509 DER");
    };
    let identity = Some(leaf.subject().to_string());
    let check = |o: Outcome, d: &str| check(o, d).with_identity(identity.clone());
    let Ok(key) = PublicKey::from_spki(leaf.public_key()) else {
        return check(Outcome::Unsupported, "signing key algorithm not supported");
    };
    let scheme = match (signed.alg, key.kind()) {
        (Alg::Es256, KeyKind::EcdsaP256) => Scheme::Es256,
        (Alg::Es384, KeyKind::EcdsaP384) => Scheme::Es384,
        (Alg::Ps256, KeyKind::Rsa) => Scheme::Ps256,
        (Alg::Ps384, KeyKind::Rsa) => Scheme::Ps384,
        (Alg::Ps512, KeyKind::Rsa) => Scheme::Ps512,
        (Alg::Es512, _) => return check(Outcome::Unsupported, "ES512 is not supported"),
        _ => {
            return check(
                Outcome::BadSignature,
                "`alg` does not match the signing key",
            )
        }
    };
    // 1. Integrity.
    if !key.verify(scheme, signed.signing_input, signed.signature) {
        return check(Outcome::BadSignature, "the signature does not verify");
    }
    let Ok(payload) = serde_json::from_slice::<Payload>(signed.payload) else {
        return check(Outcome::Malformed, "payload is not a Notary payload");
    };
    if payload.target_artifact.digest != subject.to_string() {
        return check(
            Outcome::WrongDigest,
            "its targetArtifact is another manifest",
        );
    }
    // 2. Authenticity: the chain leads to the trust store, at the current time.
    let anchors_der: Vec<CertificateDer<'_>> = trust
        .anchors
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let anchors: Vec<_> = anchors_der
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let ee_der = CertificateDer::from(chain[0].as_slice());
    let Ok(ee) = webpki::EndEntityCert::try_from(&ee_der) else {
        return check(Outcome::Malformed, "signing certificate is not usable");
    };
    let intermediates: Vec<CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now));
    let verified = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &intermediates,
        time,
        webpki::KeyUsage::required(EKU_CODE_SIGNING),
        None,
        None,
    );
    match verified {
        Ok(_) => {}
        Err(webpki::Error::CertExpired { .. }) => {
            return check(
                Outcome::ExpiredCertificate,
                "a certificate of its chain has expired",
            )
        }
        Err(webpki::Error::CertNotValidYet { .. }) => {
            return check(
                Outcome::ExpiredCertificate,
                "a certificate of its chain is not valid yet",
            )
        }
        Err(e) => {
            return check(
                Outcome::UntrustedKey,
                &format!("its certificate chain does not lead to the trust store ({e:?})"),
            )
        }
    }
    // 3. Trusted identity.
    if !trust.identities.is_empty() && !trust.identities.iter().any(|i| subject_matches(&leaf, i)) {
        return check(
            Outcome::UntrustedKey,
            "signing identity is not a trusted identity",
        );
    }
    // 4. Signing time inside the leaf's validity; the signature's own expiry.
    let validity = leaf.validity();
    if signed.signing_time < validity.not_before.timestamp()
        || signed.signing_time > validity.not_after.timestamp()
    {
        return check(
            Outcome::ExpiredCertificate,
            "signed outside the signing certificate's validity",
        );
    }
    if signed.expiry.is_some_and(|t| t <= now as i64) {
        return check(Outcome::ExpiredCertificate, "the signature has expired");
    }
    check(
        Outcome::Verified,
        &format!("{}, notary.x509", signed.envelope),
    )
}

/// Every `K=V` of `identity` (comma-separated) is an attribute of the leaf's subject.
fn subject_matches(leaf: &X509Certificate<'_>, identity: &str) -> bool {
    let have: Vec<String> = leaf
        .subject()
        .to_string()
        .split(',')
        .map(|p| p.trim().to_owned())
        .collect();
    identity
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .all(|want| have.iter().any(|h| h == want))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to Unix seconds.
pub fn rfc3339_seconds(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[13] != b':'
        || b[16] != b':'
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && matches!(&o[0..1], "+" | "-") && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let v = oh * 3600 + om * 60;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian), Howard Hinnant's algorithm.
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_seconds("2022-04-06T07:01:20Z"), Some(1_649_228_480));
        assert_eq!(
            rfc3339_seconds("2022-04-06T09:01:20+02:00"),
            Some(1_649_228_480)
        );
        assert_eq!(
            rfc3339_seconds("2022-04-06T07:01:20.123Z"),
            Some(1_649_228_480)
        );
        assert_eq!(rfc3339_seconds("2000-02-29T00:00:00Z"), Some(951_782_400));
        for bad in [
            "",
            "2022-04-06",
            "2022-13-06T07:01:20Z",
            "2022-04-06T07:01:20",
            "2022-04-06T07:01:20.Z",
            "２０２２-04-06T07:01:20Z",
        ] {
            assert_eq!(rfc3339_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn malformed_cose_envelopes_are_named() {
        let s = Digest::sha256_of(b"m");
        let t = NotaryTrust::default();
        assert_eq!(verify_cose(b"", &s, &t, 0, "d").outcome, Outcome::Malformed);
        assert_eq!(
            verify_cose(b"\xd2\x84", &s, &t, 0, "d").outcome,
            Outcome::Malformed
        );
        // A COSE_Sign1 without the Notary content type.
        let sign1 = coset::CoseSign1Builder::new()
            .protected(
                coset::HeaderBuilder::new()
                    .algorithm(coset::iana::Algorithm::ES256)
                    .build(),
            )
            .payload(b"{}".to_vec())
            .build();
        use coset::TaggedCborSerializable as _;
        let bytes = sign1.to_tagged_vec().expect("cbor");
        let c = verify_cose(&bytes, &s, &t, 0, "d");
        assert_eq!(c.outcome, Outcome::Malformed);
        assert!(c.detail.contains("content type"), "{}", c.detail);
    }

    #[test]
    fn malformed_envelopes_are_named() {
        let s = Digest::sha256_of(b"m");
        let t = NotaryTrust::default();
        assert_eq!(
            verify_jws(b"{}", &s, &t, 0, "d").outcome,
            Outcome::Malformed
        );
        let hdr = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","cty":"application/vnd.cncf.notary.payload.v1+json","crit":["io.cncf.notary.signingScheme","x.unknown"],"io.cncf.notary.signingScheme":"notary.x509"}"#);
        let env = format!(
            r#"{{"payload":"e30","protected":"{hdr}","header":{{"x5c":[]}},"signature":"AA"}}"#
        );
        let c = verify_jws(env.as_bytes(), &s, &t, 0, "d");
        assert_eq!(c.outcome, Outcome::Malformed);
        assert!(c.detail.contains("crit"));
        let tsa = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","cty":"application/vnd.cncf.notary.payload.v1+json","crit":["io.cncf.notary.signingScheme"],"io.cncf.notary.signingScheme":"notary.x509.signingAuthority"}"#);
        let env = format!(
            r#"{{"payload":"e30","protected":"{tsa}","header":{{"x5c":["AA=="]}},"signature":"AA"}}"#
        );
        assert_eq!(
            verify_jws(env.as_bytes(), &s, &t, 0, "d").outcome,
            Outcome::Unsupported
        );
    }
}

//! Content digests: the guarantee that nothing cached differs from what was asked.
//!
//! A registry proxy that caches by digest is only safe if it checks the digest:
//! otherwise one lying or corrupted upstream answer is replayed to a whole fleet
//! until eviction.

use super::error::DigestError;
use crate::oci::digest::DigestError as OciDigestError;

/// The algorithms a digest can be verified with: the OCI module's, the one digest
/// vocabulary of the crate.
pub use crate::oci::digest::Algorithm as DigestAlgorithm;

/// Splits and checks a digest against the OCI grammar
/// (`algorithm ":" encoded`, algorithm components `[a-z0-9]+` joined by `+._-`).
///
/// A well-formed digest with an algorithm other than sha256/sha512 is
/// [`DigestError::UnsupportedAlgorithm`], so callers can pass such requests
/// through uncached rather than refuse them.
pub fn parse_digest(digest: &str) -> Result<(DigestAlgorithm, &str), DigestError> {
    let malformed = || DigestError::Malformed(digest.to_owned());
    let (algorithm, encoded) = digest.split_once(':').ok_or_else(malformed)?;
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    if !algorithm.split(['+', '.', '_', '-']).all(component_ok) {
        return Err(malformed());
    }
    if encoded.is_empty()
        || !encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
    {
        return Err(malformed());
    }
    // The registered algorithms and their encodings are the OCI module's to check.
    match digest.parse::<crate::oci::Digest>() {
        Ok(d) => Ok((d.algorithm(), encoded)),
        Err(OciDigestError::UnsupportedAlgorithm(_)) => {
            Err(DigestError::UnsupportedAlgorithm(algorithm.to_owned()))
        }
        Err(OciDigestError::MissingAlgorithm | OciDigestError::BadEncoding { .. }) => {
            Err(malformed())
        }
    }
}

/// `sha256:<hex>` of a body: the canonical digest when the upstream names none.
pub use crate::margo::digest::sha256_digest;

/// Checks that `body` hashes to `expected`, returning the algorithm used.
pub fn verify_digest(expected: &str, body: &[u8]) -> Result<DigestAlgorithm, DigestError> {
    let (alg, encoded) = parse_digest(expected)?;
    let actual = alg.hash_hex(body);
    if actual == encoded {
        Ok(alg)
    } else {
        Err(DigestError::Mismatch {
            expected: expected.to_owned(),
            actual: format!("{}:{actual}", alg.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn verifies_sha256_and_sha512() {
        assert_eq!(
            verify_digest(EMPTY_SHA256, b""),
            Ok(DigestAlgorithm::Sha256)
        );
        assert_eq!(sha256_digest(b""), EMPTY_SHA256);
        let body = b"{\"schemaVersion\":2}";
        let d512 = format!("sha512:{}", DigestAlgorithm::Sha512.hash_hex(body));
        assert_eq!(verify_digest(&d512, body), Ok(DigestAlgorithm::Sha512));
        assert_eq!(
            verify_digest(&sha256_digest(body), body),
            Ok(DigestAlgorithm::Sha256)
        );
    }

    #[test]
    fn mismatch_names_both_digests() {
        match verify_digest(EMPTY_SHA256, b"not empty") {
            Err(DigestError::Mismatch { expected, actual }) => {
                assert_eq!(expected, EMPTY_SHA256);
                assert_eq!(actual, sha256_digest(b"not empty"));
            }
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    #[test]
    fn unknown_algorithms_and_bad_syntax_are_distinguished() {
        assert!(matches!(
            verify_digest("blake3:abcdef", b""),
            Err(DigestError::UnsupportedAlgorithm(a)) if a == "blake3"
        ));
        assert!(matches!(
            parse_digest("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "SHA256:abc",
            "sha256:xyz",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855/x",
            "sha 256:abc",
        ] {
            assert!(
                matches!(parse_digest(bad), Err(DigestError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
    }
}

//! Content digests (`algorithm:encoded`) as the OCI image spec defines them.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A syntactically valid digest. Only registered algorithms are accepted so that a digest
/// can always be verified: an unknown algorithm is an error, not a pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    encoded: String,
}

/// Registered digest algorithms (OCI image spec, "Registered algorithms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Lowercase hex of `data`'s hash under this algorithm.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Sha256 => hex::encode(Sha256::digest(data)),
            Algorithm::Sha512 => hex::encode(Sha512::digest(data)),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest has no `algorithm:` prefix")]
    MissingAlgorithm,
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("digest must be {expected} lowercase hex characters")]
    BadEncoding { expected: usize },
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn encoded(&self) -> &str {
        &self.encoded
    }

    /// Digest of `data` with the same algorithm as `self`.
    pub fn compute_like(&self, data: &[u8]) -> Digest {
        Digest {
            algorithm: self.algorithm,
            encoded: self.algorithm.hash_hex(data),
        }
    }

    /// The sha256 digest of `data` (the canonical algorithm for new content).
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            encoded: hex::encode(Sha256::digest(data)),
        }
    }

    /// True when `data` hashes to this digest.
    pub fn verifies(&self, data: &[u8]) -> bool {
        self.compute_like(data) == *self
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::MissingAlgorithm)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(truncate(other))),
        };
        let expected = algorithm.hex_len();
        if enc.len() != expected
            || !enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::BadEncoding { expected });
        }
        Ok(Digest {
            algorithm,
            encoded: enc.to_owned(),
        })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.encoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_JSON: &str =
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY_JSON.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_JSON);
    }

    #[test]
    fn verifies_content() {
        let d: Digest = EMPTY_JSON.parse().unwrap();
        assert!(d.verifies(b"{}"));
        assert!(!d.verifies(b"{ }"));
        assert_eq!(Digest::sha256_of(b"{}"), d);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!("abc".parse::<Digest>(), Err(DigestError::MissingAlgorithm));
        assert!(matches!(
            "md5:abcd".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert_eq!(
            "sha256:ABCDEF".parse::<Digest>(),
            Err(DigestError::BadEncoding { expected: 64 })
        );
        let upper = EMPTY_JSON.to_uppercase().replace("SHA256", "sha256");
        assert!(upper.parse::<Digest>().is_err());
    }

    #[test]
    fn sha512_roundtrip() {
        let d = Digest::sha256_of(b"x");
        let s512 = format!("sha512:{}", hex::encode(Sha512::digest(b"x")));
        let d512: Digest = s512.parse().unwrap();
        assert!(d512.verifies(b"x"));
        assert_ne!(d512, d);
    }
}

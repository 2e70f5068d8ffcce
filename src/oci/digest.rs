//! Content digests (`algorithm:encoded`) as the OCI image spec defines them: the one
//! digest vocabulary of the crate (paths, manifests, Margo admission, the cache).
//!
//! A registry proxy that caches or admits by digest is only safe if it checks the
//! digest: otherwise one lying or corrupted upstream answer is replayed to a whole fleet,
//! or a validated description is not the one that will be served. So verification lives
//! next to the parser, and the streaming [`HashingReader`] next to both.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// A syntactically valid digest. Only registered algorithms are accepted so that a digest
/// can always be verified: an unknown algorithm is an error, not a pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    encoded: String,
}

/// Registered digest algorithms (OCI image spec, "Registered algorithms").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Why a digest string failed the grammar; kept apart so that the message says which
/// part is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    #[error("no `algorithm:` prefix")]
    MissingAlgorithm,
    #[error("the algorithm must be `[a-z0-9]+` components joined by `+`, `.`, `_` or `-`")]
    BadAlgorithm,
    #[error("the encoded part must be `[a-zA-Z0-9=_-]+`")]
    BadCharacters,
    #[error("digest must be {expected} lowercase hex characters")]
    BadEncoding { expected: usize },
}

/// A digest string that is not a digest, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("digest {value:?} is not of the form <algorithm>:<encoded>: {reason}")]
pub struct MalformedDigest {
    /// The offending text, truncated to 160 characters.
    pub value: String,
    pub reason: Malformation,
}

/// Why a digest string or some content failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not `algorithm:encoded` per the OCI digest grammar (or a registered algorithm
    /// with a wrong encoding).
    #[error(transparent)]
    Malformed(MalformedDigest),
    /// Well-formed, but an algorithm that cannot be computed, so content cannot be
    /// checked: callers pass it through uncached or refuse it, never trust it.
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The content hashes to something else than what was named.
    #[error("content digest is {actual}, expected {expected}")]
    Mismatch { expected: String, actual: String },
    /// The content's length differs from its descriptor's size.
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
}

impl DigestError {
    fn malformed(value: &str, reason: Malformation) -> Self {
        DigestError::Malformed(MalformedDigest {
            value: value.chars().take(160).collect(),
            reason,
        })
    }
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

    /// Checks content against this digest and, when given, a descriptor's size (the
    /// cheap check first).
    pub fn verify(&self, data: &[u8], size: Option<u64>) -> Result<(), DigestError> {
        let actual_len = data.len() as u64;
        if let Some(expected) = size.filter(|s| *s != actual_len) {
            return Err(DigestError::SizeMismatch {
                expected,
                actual: actual_len,
            });
        }
        let actual = self.compute_like(data);
        if actual == *self {
            Ok(())
        } else {
            Err(DigestError::Mismatch {
                expected: self.to_string(),
                actual: actual.to_string(),
            })
        }
    }

    /// Whether this is the digest of the OCI empty descriptor's content `{}`.
    pub fn is_empty_json(&self) -> bool {
        self.algorithm == Algorithm::Sha256 && self.encoded == EMPTY_JSON_DIGEST[7..]
    }
}

/// The OCI empty descriptor's digest (the content `{}`).
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

impl Digest {
    /// `sha256:` or `sha512:` and exactly that many lowercase hex digits, else `None`.
    fn parse_registered(s: &str) -> Option<Digest> {
        let (algorithm, enc) = if let Some(enc) = s.strip_prefix("sha256:") {
            (Algorithm::Sha256, enc)
        } else {
            (Algorithm::Sha512, s.strip_prefix("sha512:")?)
        };
        let lower_hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        (enc.len() == algorithm.hex_len() && enc.as_bytes().iter().all(lower_hex)).then(|| Digest {
            algorithm,
            encoded: enc.to_owned(),
        })
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    /// The OCI grammar (`algorithm ":" encoded`, algorithm components `[a-z0-9]+`
    /// joined by `+._-`, encoded `[a-zA-Z0-9=_-]+`), then the registered algorithms'
    /// encodings. A well-formed digest with another algorithm is
    /// [`DigestError::UnsupportedAlgorithm`], not malformed, so that callers can tell
    /// "cannot verify" from "not a digest".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The digests every request carries: one pass over the bytes. Anything else takes
        // the full grammar, which also says what is wrong.
        match Self::parse_registered(s) {
            Some(d) => Ok(d),
            None => Self::parse_grammar(s),
        }
    }
}

impl Digest {
    fn parse_grammar(s: &str) -> Result<Self, DigestError> {
        let bad = |reason| DigestError::malformed(s, reason);
        let (alg, enc) = s
            .split_once(':')
            .ok_or_else(|| bad(Malformation::MissingAlgorithm))?;
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !alg.split(['+', '.', '_', '-']).all(component_ok) {
            return Err(bad(Malformation::BadAlgorithm));
        }
        if enc.is_empty()
            || !enc
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(bad(Malformation::BadCharacters));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                return Err(DigestError::UnsupportedAlgorithm(
                    other.chars().take(32).collect(),
                ))
            }
        };
        let expected = algorithm.hex_len();
        if enc.len() != expected
            || !enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(Malformation::BadEncoding { expected }));
        }
        Ok(Digest {
            algorithm,
            encoded: enc.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.encoded)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses a digest held as text (cache keys keep the client's spelling).
pub fn parse_digest(digest: &str) -> Result<Digest, DigestError> {
    digest.parse()
}

/// Checks that `body` hashes to the digest `expected` names.
pub fn verify_digest(expected: &str, body: &[u8]) -> Result<Digest, DigestError> {
    let d: Digest = expected.parse()?;
    d.verify(body, None)?;
    Ok(d)
}

/// `sha256:<hex>` of a body, as text: the canonical digest when the upstream names none.
pub fn sha256_digest(body: &[u8]) -> String {
    Digest::sha256_of(body).to_string()
}

/// Fails a read with [`io::ErrorKind::FileTooLarge`] once more than `limit` bytes came
/// through: a cap on everything streamed from the network or inflated from it.
#[derive(Debug)]
pub struct CappedReader<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R> CappedReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            count: 0,
            limit,
        }
    }
}

/// Whether an I/O error is a [`CappedReader`]'s cap.
pub fn is_cap_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::FileTooLarge
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count = self.count.saturating_add(n as u64);
        if self.count > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("stream exceeds {} bytes", self.limit),
            ));
        }
        Ok(n)
    }
}

#[derive(Debug, Clone)]
enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// A reader that hashes (with the algorithm of the digest it will be checked against)
/// and counts what passes through, and fails once more than `limit` bytes were read (so
/// a stream cannot run forever).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: CappedReader<R>,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, limit: u64, algorithm: Algorithm) -> Self {
        Self {
            inner: CappedReader::new(inner, limit),
            hasher: match algorithm {
                Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
                Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
            },
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.inner.count
    }

    /// Digest of everything read so far.
    pub fn digest(&self) -> Digest {
        let (algorithm, encoded) = match &self.hasher {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.clone().finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.clone().finalize())),
        };
        Digest { algorithm, encoded }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = buf.get(..n).unwrap_or_default();
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn reason(s: &str) -> Option<Malformation> {
        match s.parse::<Digest>() {
            Err(DigestError::Malformed(m)) => Some(m.reason),
            _ => None,
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_grammar() {
        let hex64 = "a".repeat(63) + "0";
        let hex128 = "0123456789abcdef".repeat(8);
        let inputs = [
            format!("sha256:{hex64}"),
            format!("sha512:{hex128}"),
            format!("sha256:{}", hex64.to_uppercase()),
            format!("sha256:{}", &hex64[1..]),
            format!("sha256:{hex64}0"),
            format!("sha512:{hex64}"),
            format!("sha384:{hex64}"),
            format!("sha256+b64:{hex64}"),
            "sha256:".to_owned(),
            "sha256".to_owned(),
            String::new(),
            format!("SHA256:{hex64}"),
            format!("sha256:{}g", &hex64[1..]),
        ];
        for s in inputs {
            let fast = Digest::from_str(&s).map_err(|e| e.to_string());
            let full = Digest::parse_grammar(&s).map_err(|e| e.to_string());
            assert_eq!(fast, full, "{s}");
        }
    }

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY_JSON_DIGEST.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_JSON_DIGEST);
        assert!(d.is_empty_json());
        assert!(!Digest::sha256_of(b"x").is_empty_json());
    }

    #[test]
    fn verifies_content_and_size() {
        let d: Digest = EMPTY_JSON_DIGEST.parse().unwrap();
        assert!(d.verifies(b"{}"));
        assert!(!d.verifies(b"{ }"));
        assert_eq!(Digest::sha256_of(b"{}"), d);
        assert_eq!(d.verify(b"{}", Some(2)), Ok(()));
        assert_eq!(
            d.verify(b"{}", Some(3)),
            Err(DigestError::SizeMismatch {
                expected: 3,
                actual: 2
            })
        );
        match d.verify(b"{ }", None) {
            Err(DigestError::Mismatch { expected, actual }) => {
                assert_eq!(expected, EMPTY_JSON_DIGEST);
                assert_eq!(actual, sha256_digest(b"{ }"));
            }
            other => panic!("expected mismatch, got {other:?}"),
        }
    }

    #[test]
    fn text_helpers_verify_sha256_and_sha512() {
        assert!(verify_digest(EMPTY_SHA256, b"").is_ok());
        assert_eq!(sha256_digest(b""), EMPTY_SHA256);
        let body = b"{\"schemaVersion\":2}";
        let d512 = format!("sha512:{}", Algorithm::Sha512.hash_hex(body));
        assert_eq!(
            verify_digest(&d512, body).map(|d| d.algorithm()),
            Ok(Algorithm::Sha512)
        );
        assert!(matches!(
            verify_digest(EMPTY_SHA256, b"not empty"),
            Err(DigestError::Mismatch { .. })
        ));
    }

    #[test]
    fn malformed_says_why_and_unknown_algorithms_are_distinguished() {
        assert_eq!(reason("abc"), Some(Malformation::MissingAlgorithm));
        assert_eq!(
            reason("sha256:ABCDEF"),
            Some(Malformation::BadEncoding { expected: 64 })
        );
        assert!(matches!(
            format!("md5:{}", "a".repeat(32)).parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(a)) if a == "md5"
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
            assert!(reason(bad).is_some(), "{bad:?} should be malformed");
        }
        let long = "x".repeat(10_000);
        let msg = long.parse::<Digest>().map(|_| ()).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
        assert!(msg.contains("no `algorithm:` prefix"), "{msg}");
    }

    #[test]
    fn serde_is_the_string_form() {
        let d = Digest::sha256_of(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn hashing_reader_hashes_with_the_expected_algorithm_and_caps() {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut r = HashingReader::new(&b"hello"[..], 10, alg);
            assert!(r.read_to_end(&mut out).is_ok());
            assert_eq!(r.digest().algorithm(), alg);
            assert!(r.digest().verifies(b"hello"));
            assert_eq!(r.count(), 5);
        }
        let mut r = HashingReader::new(&b"hello"[..], 3, Algorithm::Sha256);
        let err = r.read_to_end(&mut out).expect_err("over the cap");
        assert!(is_cap_error(&err), "{err}");
    }
}

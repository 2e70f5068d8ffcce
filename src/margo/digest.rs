//! sha256 content digests (`sha256:<64 hex>`), for blobs in memory and streamed.
//!
//! Blobs are fetched from the upstream by digest; verifying what arrived against the
//! descriptor is what makes "the bytes we validated are the bytes that will be served"
//! true, so the check is cheap to call and hard to get wrong.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

/// Digests are the OCI module's type; this module adds what admission needs on top:
/// verification against a descriptor, and readers that hash and cap streamed bytes.
pub use crate::oci::digest::{Algorithm, Digest};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form sha256:<64 lowercase hex>")]
    Malformed(String),
    #[error("digest algorithm of {0:?} is not supported (only sha256)")]
    Unsupported(String),
    #[error("content digest is {actual}, expected {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("content is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
}

/// Parses a descriptor's digest: sha256 or sha512 (a registered OCI algorithm, so that
/// it is reported as unsupported where only sha256 can be checked, not as malformed).
pub fn parse(s: &str) -> Result<Digest, DigestError> {
    s.parse().map_err(|_| DigestError::Malformed(s.to_owned()))
}

/// `sha256:<hex>` of the bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    Digest::sha256_of(bytes).to_string()
}

/// Checks bytes against an expected digest and, when given, size.
pub fn verify_blob(bytes: &[u8], expected: &str, size: Option<u64>) -> Result<(), DigestError> {
    let want = parse(expected)?;
    if want.algorithm() != Algorithm::Sha256 {
        return Err(DigestError::Unsupported(expected.to_owned()));
    }
    let actual_len = bytes.len() as u64;
    if let Some(size) = size.filter(|s| *s != actual_len) {
        return Err(DigestError::SizeMismatch {
            expected: size,
            actual: actual_len,
        });
    }
    let actual = sha256_digest(bytes);
    if actual != want.to_string() {
        return Err(DigestError::Mismatch {
            expected: want.to_string(),
            actual,
        });
    }
    Ok(())
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

/// A reader that hashes and counts what passes through, and fails once more than
/// `limit` bytes were read (so a stream cannot run forever).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: CappedReader<R>,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Self {
            inner: CappedReader::new(inner, limit),
            hasher: Sha256::new(),
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.inner.count
    }

    /// `sha256:<hex>` of everything read so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
}

/// The OCI empty descriptor's digest (the content `{}`).
pub const EMPTY_JSON_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_json_digest_is_sha256_of_braces() {
        assert_eq!(sha256_digest(b"{}"), EMPTY_JSON_DIGEST);
    }

    #[test]
    fn parse_table() {
        let ok = format!("sha256:{}", "a".repeat(64));
        let cases = [
            (ok.as_str(), true),
            ("sha256:abc", false),
            (&*format!("sha256:{}", "A".repeat(64)), false),
            (&*format!("md5:{}", "a".repeat(64)), false),
            ("nocolon", false),
            (&*format!("sha512:{}", "0".repeat(128)), true),
        ];
        for (s, want) in cases {
            assert_eq!(parse(s).is_ok(), want, "{s}");
        }
    }

    #[test]
    fn verify_table() {
        let d = sha256_digest(b"hello");
        assert_eq!(verify_blob(b"hello", &d, Some(5)), Ok(()));
        assert_eq!(verify_blob(b"hello", &d, None), Ok(()));
        assert!(matches!(
            verify_blob(b"hellO", &d, None),
            Err(DigestError::Mismatch { .. })
        ));
        assert_eq!(
            verify_blob(b"hello", &d, Some(6)),
            Err(DigestError::SizeMismatch {
                expected: 6,
                actual: 5
            })
        );
        let sha512 = format!("sha512:{}", "0".repeat(128));
        assert!(matches!(
            verify_blob(b"x", &sha512, None),
            Err(DigestError::Unsupported(_))
        ));
    }

    #[test]
    fn hashing_reader_hashes_and_caps() {
        let mut r = HashingReader::new(&b"hello"[..], 10);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_ok());
        assert_eq!(r.digest(), sha256_digest(b"hello"));
        assert_eq!(r.count(), 5);
        let mut r = HashingReader::new(&b"hello"[..], 3);
        let err = r.read_to_end(&mut out).expect_err("over the cap");
        assert!(is_cap_error(&err), "{err}");
    }
}

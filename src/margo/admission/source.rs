//! Where admission reads the blobs a manifest names: the upstream registry on a push,
//! an OCI image layout on disk for `validate`. Both answer the same way (bytes within
//! the cap, or one of the same errors), so the admission outcome cannot depend on
//! which one was used.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::margo::manifest::Descriptor;
use crate::oci::Digest;

/// Why a blob the checks need could not be read. The proxy answers these as OCI errors
/// (the push is refused); `validate` reports them as `margo.blob.digest` violations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("blob {digest} named by the manifest is not in the repository (push blobs first)")]
    NotFound { digest: Digest },
    #[error("layer {digest} is {size} bytes, more than the {cap} bytes admission reads")]
    TooLarge { digest: Digest, size: u64, cap: u64 },
    #[error("blob {digest} is larger than its descriptor says")]
    LongerThanDescriptor { digest: Digest },
    #[error("blob {digest} could not be read: {reason}")]
    Unavailable { digest: Digest, reason: String },
}

/// A store of blobs by digest.
///
/// Implementations return at most `descriptor.size` bytes (more is
/// [`BlobError::LongerThanDescriptor`]); the caller has already refused descriptors
/// larger than the admission cap, and verifies digest and size itself.
#[async_trait::async_trait]
pub trait BlobSource: Sync {
    async fn fetch(&self, descriptor: &Descriptor) -> Result<Bytes, BlobError>;
}

/// The blobs of an OCI image layout (`blobs/<algorithm>/<encoded>`).
#[derive(Debug, Clone)]
pub struct LayoutBlobs {
    root: PathBuf,
}

impl LayoutBlobs {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// Where the layout keeps a blob; digests are parsed, so this cannot leave `blobs/`.
    pub fn path_of(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.encoded())
    }

    /// Reads a blob synchronously (the layout is local; `validate` has no event loop to
    /// keep free), at most `max` bytes plus one so that "too long" is seen.
    pub fn read(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError> {
        let path = self.path_of(digest);
        let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BlobError::NotFound {
                digest: digest.clone(),
            },
            _ => BlobError::Unavailable {
                digest: digest.clone(),
                reason: format!("{}: {e}", path.display()),
            },
        })?;
        let mut buf = Vec::new();
        file.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| BlobError::Unavailable {
                digest: digest.clone(),
                reason: format!("{}: {e}", path.display()),
            })?;
        if buf.len() as u64 > max {
            return Err(BlobError::LongerThanDescriptor {
                digest: digest.clone(),
            });
        }
        Ok(buf)
    }
}

#[async_trait::async_trait]
impl BlobSource for LayoutBlobs {
    async fn fetch(&self, descriptor: &Descriptor) -> Result<Bytes, BlobError> {
        self.read(&descriptor.digest, descriptor.size)
            .map(Bytes::from)
    }
}

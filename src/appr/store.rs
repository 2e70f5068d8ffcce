//! What the App Registry needs of the OCI registry behind it, as a trait: the service
//! logic is tested against an in-memory registry, and the proxy glue implements it
//! over the one upstream client, with admission and policies on release pushes.

use async_trait::async_trait;
use bytes::Bytes;

use crate::oci::{Digest, OciError};

/// A manifest as read, with the digest of its bytes.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    pub digest: Digest,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The upstream failed (status the client gets, and why).
    #[error("{message}")]
    Upstream { status: u16, message: String },
    /// Admission or a policy refused a push (the OCI refusal, every violation in it).
    #[error("refused")]
    Refused(OciError),
    #[error("{what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: u64 },
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Every repository name (as clients name them) the upstreams list.
    async fn repositories(&self) -> Result<Vec<String>, StoreError>;
    /// Tags of `repo`; empty when it is unknown.
    async fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError>;
    async fn manifest(&self, repo: &str, reference: &str) -> Result<Option<Fetched>, StoreError>;
    /// A blob, checked against its digest, refused past `max` bytes.
    async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        max: u64,
    ) -> Result<Option<Bytes>, StoreError>;
    async fn put_blob(&self, repo: &str, digest: &Digest, data: Bytes) -> Result<(), StoreError>;
    /// Tags `body` in `repo`. `release`: a package release, judged by the route's Margo
    /// admission and the push policies exactly as an OCI push of it would be.
    async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        body: Bytes,
        release: bool,
    ) -> Result<Digest, StoreError>;
    /// `false` when there was nothing to delete.
    async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError>;
    /// Whether the caller may read `repo` (listings show only those).
    fn may_pull(&self, repo: &str) -> bool;
}

#[cfg(test)]
pub mod memory {
    //! An in-memory registry for the service's unit tests.
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    pub struct MemoryStore {
        /// repo → tag → manifest digest.
        pub tags: Mutex<BTreeMap<String, BTreeMap<String, Digest>>>,
        pub manifests: Mutex<BTreeMap<Digest, Bytes>>,
        pub blobs: Mutex<BTreeMap<Digest, Bytes>>,
        /// Refuse release pushes with this error (an admission stand-in).
        pub refuse: Mutex<Option<OciError>>,
        pub hidden: Vec<String>,
        /// This many channel-document writes are lost, as when a concurrent writer
        /// puts back the document it read before ours.
        pub lose_channel_writes: Mutex<u32>,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[async_trait]
    impl Store for MemoryStore {
        async fn repositories(&self) -> Result<Vec<String>, StoreError> {
            Ok(lock(&self.tags).keys().cloned().collect())
        }
        async fn tags(&self, repo: &str) -> Result<Vec<String>, StoreError> {
            Ok(lock(&self.tags)
                .get(repo)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default())
        }
        async fn manifest(
            &self,
            repo: &str,
            reference: &str,
        ) -> Result<Option<Fetched>, StoreError> {
            let digest = match reference.parse::<Digest>() {
                Ok(d) => d,
                Err(_) => match lock(&self.tags).get(repo).and_then(|t| t.get(reference)) {
                    Some(d) => d.clone(),
                    None => return Ok(None),
                },
            };
            Ok(lock(&self.manifests).get(&digest).map(|b| Fetched {
                body: b.clone(),
                digest: digest.clone(),
            }))
        }
        async fn blob(
            &self,
            _repo: &str,
            digest: &Digest,
            max: u64,
        ) -> Result<Option<Bytes>, StoreError> {
            let b = lock(&self.blobs).get(digest).cloned();
            match b {
                Some(b) if b.len() as u64 > max => Err(StoreError::TooLarge {
                    what: "blob",
                    limit: max,
                }),
                b => Ok(b),
            }
        }
        async fn put_blob(
            &self,
            _repo: &str,
            digest: &Digest,
            data: Bytes,
        ) -> Result<(), StoreError> {
            lock(&self.blobs).insert(digest.clone(), data);
            Ok(())
        }
        async fn put_manifest(
            &self,
            repo: &str,
            tag: &str,
            body: Bytes,
            release: bool,
        ) -> Result<Digest, StoreError> {
            if release {
                if let Some(e) = lock(&self.refuse).clone() {
                    return Err(StoreError::Refused(e));
                }
            }
            let d = Digest::sha256_of(&body);
            if tag == crate::appr::mapping::CHANNELS_TAG {
                let mut lose = lock(&self.lose_channel_writes);
                if *lose > 0 {
                    *lose -= 1;
                    return Ok(d);
                }
            }
            lock(&self.manifests).insert(d.clone(), body);
            lock(&self.tags)
                .entry(repo.to_owned())
                .or_default()
                .insert(tag.to_owned(), d.clone());
            Ok(d)
        }
        async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
            let mut tags = lock(&self.tags);
            let Some(t) = tags.get_mut(repo) else {
                return Ok(false);
            };
            let before = t.len();
            t.retain(|_, d| d != digest);
            Ok(t.len() != before)
        }
        fn may_pull(&self, repo: &str) -> bool {
            !self.hidden.iter().any(|h| h == repo)
        }
    }
}

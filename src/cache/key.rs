//! Cache keys.
//!
//! Keys carry the upstream id and the upstream-side repository name (after
//! route prefix rewriting): two routes may map different client names onto
//! one upstream repository, and the same client name may exist on two
//! upstreams with different content. Digests are not shared across
//! repositories on purpose: the upstream's answer is per repository (a blob or
//! manifest may exist in one and not another), and authorization is per
//! repository anyway.

use std::sync::Arc;

/// One repository on one upstream. Cloning is a pair of refcount increments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoKey {
    upstream: Arc<str>,
    repository: Arc<str>,
}

impl RepoKey {
    /// `upstream` is the upstream's config name; `repository` the name as sent upstream.
    pub fn new(upstream: impl Into<Arc<str>>, repository: impl Into<Arc<str>>) -> Self {
        Self {
            upstream: upstream.into(),
            repository: repository.into(),
        }
    }

    /// The upstream's config name.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The upstream-side repository name.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Key of a manifest by digest in this repository.
    pub fn digest(&self, digest: impl Into<Arc<str>>) -> DigestKey {
        DigestKey {
            repo: self.clone(),
            digest: digest.into(),
        }
    }

    /// Key of a tag in this repository.
    pub fn tag(&self, tag: impl Into<Arc<str>>) -> TagKey {
        TagKey {
            repo: self.clone(),
            tag: tag.into(),
        }
    }

    fn weight(&self) -> usize {
        self.upstream.len() + self.repository.len()
    }
}

/// (upstream, repository, digest): an immutable manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DigestKey {
    repo: RepoKey,
    digest: Arc<str>,
}

impl DigestKey {
    /// The repository part.
    pub fn repo(&self) -> &RepoKey {
        &self.repo
    }

    /// The digest as requested (`algorithm:hex`).
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// (upstream, repository, tag): a mutable pointer to a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TagKey {
    repo: RepoKey,
    tag: Arc<str>,
}

impl TagKey {
    /// The repository part.
    pub fn repo(&self) -> &RepoKey {
        &self.repo
    }

    /// The tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// What moka stores under: one cache for both kinds so that a single byte
/// budget (and a single eviction order) covers manifests, tags and 404s.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Digest(DigestKey),
    Tag(TagKey),
}

impl Key {
    pub(crate) fn weight(&self) -> usize {
        match self {
            Self::Digest(k) => k.repo.weight() + k.digest.len(),
            Self::Tag(k) => k.repo.weight() + k.tag.len(),
        }
    }
}

/// Whether a manifest reference from a URL is a digest rather than a tag: tags
/// cannot contain `:` (OCI grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`).
pub fn is_digest_reference(reference: &str) -> bool {
    reference.contains(':')
}

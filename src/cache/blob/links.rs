//! (upstream, repository, digest) links: which repositories the upstream confirmed
//! hold a blob. The bytes are shared by digest; serving them for a repository needs a
//! link, so a blob cached because repository A had it is never served for B unless the
//! upstream confirmed B holds it too.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;

/// Links kept; an evicted link only costs one more upstream request.
const MAX_LINKS: u64 = 512 * 1024;
/// Layers and config a manifest may link; more is not a real image.
const MAX_MANIFEST_LINKS: usize = 4096;

thread_local! {
    /// Lookups build their key here: no allocation on a hit.
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The link records.
pub struct Links {
    inner: Cache<String, (), ahash::RandomState>,
    /// Bumped by every unlink: per-thread front entries filled under an older epoch
    /// are not served (see `super::front`).
    epoch: AtomicU64,
}

impl Default for Links {
    fn default() -> Self {
        Self {
            inner: Cache::builder()
                .max_capacity(MAX_LINKS)
                .build_with_hasher(ahash::RandomState::new()),
            epoch: AtomicU64::new(0),
        }
    }
}

/// `\0` cannot occur in upstream names, repository names or digests, so keys of
/// different triples never collide.
fn write_key(out: &mut String, upstream: &str, repository: &str, digest: &str) {
    out.clear();
    out.push_str(upstream);
    out.push('\0');
    out.push_str(repository);
    out.push('\0');
    out.push_str(digest);
}

impl Links {
    /// The upstream confirmed `repository` holds `digest`.
    pub fn link(&self, upstream: &str, repository: &str, digest: &str) {
        let mut key = String::with_capacity(upstream.len() + repository.len() + digest.len() + 2);
        write_key(&mut key, upstream, repository, digest);
        self.inner.insert(key, ());
    }

    /// Whether the upstream confirmed `repository` holds `digest`.
    pub fn linked(&self, upstream: &str, repository: &str, digest: &str) -> bool {
        KEY.with(|k| {
            let mut k = k.borrow_mut();
            write_key(&mut k, upstream, repository, digest);
            self.inner.contains_key(k.as_str())
        })
    }

    /// The blob was deleted from `repository` (through the proxy).
    pub fn unlink(&self, upstream: &str, repository: &str, digest: &str) {
        // Before and after: a front fill that read the epoch in between also sees the
        // link gone in moka, or is refused for the epoch.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        KEY.with(|k| {
            let mut k = k.borrow_mut();
            write_key(&mut k, upstream, repository, digest);
            self.inner.invalidate(k.as_str());
        });
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes whenever a link is dropped.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Links every blob an image manifest lists (config and layers): the upstream
    /// accepted or served the manifest in `repository`, and registries refuse
    /// manifests whose blobs the repository does not hold. Anything that does not
    /// parse links nothing.
    pub fn link_manifest(&self, upstream: &str, repository: &str, body: &[u8]) -> usize {
        #[derive(serde::Deserialize)]
        struct Descriptor {
            digest: String,
        }
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
        }
        let Ok(m) = serde_json::from_slice::<Manifest>(body) else {
            return 0;
        };
        let mut n = 0;
        for d in m
            .config
            .iter()
            .chain(m.layers.iter())
            .take(MAX_MANIFEST_LINKS)
        {
            if d.digest.parse::<crate::oci::Digest>().is_ok() {
                self.link(upstream, repository, &d.digest);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn links_are_per_repository_and_upstream() {
        let l = Links::default();
        l.link("main", "apps/a", A);
        assert!(l.linked("main", "apps/a", A));
        assert!(!l.linked("main", "apps/b", A));
        assert!(!l.linked("other", "apps/a", A));
        // No ambiguity between name boundaries.
        assert!(!l.linked("main\0apps", "a", A));
        let before = l.epoch();
        l.unlink("main", "apps/a", A);
        assert!(!l.linked("main", "apps/a", A));
        assert_ne!(l.epoch(), before, "an unlink moves the epoch");
    }

    #[test]
    fn manifests_link_their_config_and_layers() {
        let l = Links::default();
        let layer = crate::oci::Digest::sha256_of(b"layer").to_string();
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{A}","size":2}},"layers":[{{"digest":"{layer}","size":5}},{{"digest":"md5:zz"}}]}}"#
        );
        assert_eq!(l.link_manifest("main", "b", body.as_bytes()), 2);
        assert!(l.linked("main", "b", A));
        assert!(l.linked("main", "b", &layer));
        assert!(!l.linked("main", "a", &layer));
        assert_eq!(l.link_manifest("main", "b", b"not json"), 0);
        assert_eq!(l.link_manifest("main", "b", br#"{"manifests":[]}"#), 0);
    }
}

//! Index and crawl logic over an in-memory [`PackageSource`] holding packed example
//! packages (the same bytes `margo-proxy push` sends).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use super::*;
use crate::catalog::pack::pack_dir;
use crate::catalog::source::FetchedManifest;
use crate::catalog::{Catalog, CatalogConfig};
use crate::margo::manifest::ManifestOptions;

#[derive(Default)]
pub(crate) struct MemorySource {
    /// repo → tag → manifest bytes
    pub tags: Mutex<BTreeMap<String, BTreeMap<String, Bytes>>>,
    pub blobs: Mutex<BTreeMap<String, Bytes>>,
}

impl MemorySource {
    pub fn push_dir(&self, repo: &str, tag: &str, dir: &str) {
        let packed = pack_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut blobs = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        for b in packed.blobs {
            blobs.insert(b.digest.to_string(), b.data);
        }
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(repo.into())
            .or_default()
            .insert(tag.into(), packed.manifest);
    }
}

#[async_trait]
impl PackageSource for MemorySource {
    async fn repositories(&self) -> Result<Vec<String>, SourceError> {
        Ok(self
            .tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect())
    }
    async fn tags(&self, repo: &str) -> Result<Vec<String>, SourceError> {
        let t = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        t.get(repo)
            .map(|m| m.keys().cloned().collect())
            .ok_or(SourceError::NotFound)
    }
    async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, SourceError> {
        let t = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = t
            .get(repo)
            .and_then(|m| m.get(reference))
            .cloned()
            .ok_or(SourceError::NotFound)?;
        Ok(FetchedManifest {
            digest: Digest::sha256_of(&bytes),
            bytes,
        })
    }
    async fn blob(&self, _repo: &str, digest: &Digest, max: u64) -> Result<Bytes, SourceError> {
        let b = self.blobs.lock().unwrap_or_else(|p| p.into_inner());
        let data = b
            .get(&digest.to_string())
            .cloned()
            .ok_or(SourceError::NotFound)?;
        if data.len() as u64 > max {
            return Err(SourceError::TooLarge {
                what: "blob",
                limit: max,
            });
        }
        Ok(data)
    }
    fn app_options(&self, repo: &str) -> Option<ManifestOptions> {
        repo.starts_with("apps/").then(ManifestOptions::default)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn semver_order_newest_first() {
    let mut v = vec![
        "1.0.0",
        "latest",
        "1.10.0",
        "1.2.0",
        "2.0.0-rc.1",
        "2.0.0",
        "v1.5.0",
    ];
    v.sort_by(|a, b| version_order(a, b));
    assert_eq!(
        v,
        vec![
            "2.0.0",
            "2.0.0-rc.1",
            "1.10.0",
            "v1.5.0",
            "1.2.0",
            "1.0.0",
            "latest"
        ]
    );
}

#[test]
fn load_version_reads_description_resources_and_texts() {
    let src = MemorySource::default();
    src.push_dir("apps/lm", "1.4.0", "examples/packages/line-monitor");
    let entry = runtime()
        .block_on(load_version(&src, "apps/lm", "1.4.0"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("not indexed"));
    assert_eq!(entry.description.id, "line-monitor");
    assert!(entry.report.is_empty(), "{:?}", entry.report);
    assert_eq!(entry.resources.len(), 4);
    assert!(entry
        .icon
        .as_ref()
        .is_some_and(|(b, mt)| b.starts_with(b"\x89PNG") && *mt == "image/png"));
    assert!(entry
        .texts
        .get(&ResourceKind::ReleaseNotes)
        .is_some_and(|t| t.contains("Notification channels")));
}

#[test]
fn tag_not_matching_version_is_reported_and_invalid_packages_are_skipped() {
    let src = MemorySource::default();
    src.push_dir("apps/lm", "9.9.9", "examples/packages/line-monitor");
    src.push_dir("apps/broken", "1.0.0", "examples/packages/broken-app");
    let rt = runtime();
    let e = rt
        .block_on(load_version(&src, "apps/lm", "9.9.9"))
        .ok()
        .flatten();
    assert!(e.is_some_and(|e| !e.report.is_empty()));
    let b = rt.block_on(load_version(&src, "apps/broken", "1.0.0"));
    assert!(matches!(b, Ok(None)), "{b:?}");
}

#[test]
fn crawl_replaces_the_index_and_hooks_update_it() {
    let src = Arc::new(MemorySource::default());
    src.push_dir("apps/lm", "1.4.0", "examples/packages/line-monitor");
    src.push_dir("apps/sg", "0.9.2", "examples/packages/sensor-gateway");
    let cfg = CatalogConfig {
        enabled: true,
        crawl_rps: 1000,
        ..CatalogConfig::default()
    };
    let cat = Catalog::new(cfg, src.clone());
    let rt = runtime();
    let stats = rt.block_on(cat.crawl()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (stats.repositories, stats.versions, stats.errors),
        (2, 2, 0)
    );
    assert_eq!(cat.snapshot().repos.len(), 2);

    // Deleted upstream: the next crawl drops it.
    src.tags
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove("apps/sg");
    rt.block_on(cat.crawl()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cat.snapshot().repos.contains_key("apps/sg"));

    // A push through the proxy is indexed at once, a delete by digest removes it.
    src.push_dir("apps/sg", "0.9.2", "examples/packages/sensor-gateway");
    rt.block_on(cat.on_manifest_put("apps/sg", "0.9.2"));
    let snap = cat.snapshot();
    let digest = snap
        .repos
        .get("apps/sg")
        .and_then(|r| r.latest())
        .map(|v| v.manifest_digest.to_string());
    let Some(digest) = digest else {
        panic!("push not indexed")
    };
    cat.on_manifest_delete("apps/sg", &digest);
    assert!(!cat.snapshot().repos.contains_key("apps/sg"));
    // Pushes outside app routes are ignored.
    rt.block_on(cat.on_manifest_put("other/x", "1.0.0"));
    assert!(!cat.snapshot().repos.contains_key("other/x"));
}

#[test]
fn crawl_is_paced_by_crawl_rps() {
    let src = Arc::new(MemorySource::default());
    src.push_dir("apps/lm", "1.4.0", "examples/packages/line-monitor");
    let cfg = CatalogConfig {
        enabled: true,
        crawl_rps: 20,
        ..CatalogConfig::default()
    };
    let cat = Catalog::new(cfg, src);
    let rt = runtime();
    let start = std::time::Instant::now();
    rt.block_on(cat.crawl()).unwrap_or_else(|e| panic!("{e}"));
    // One repository + one tag: two paced steps of 50 ms.
    assert!(start.elapsed() >= std::time::Duration::from_millis(100));
}

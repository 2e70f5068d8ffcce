//! The in-memory index: repository → versions, each with its parsed description, the
//! manifest digest, its resource layers and the admission report. Rebuilt from the
//! upstream (nothing is persisted); readers take an `Arc` snapshot.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::source::{PackageSource, SourceError};
use crate::margo::manifest::package::{check_package_description, layer_kind, LayerKind};
use crate::margo::manifest::{check_manifest, NextStep, Reference, RouteKind};
use crate::margo::model::ApplicationDescription;
use crate::margo::report::Report;
use crate::margo::resources::ResourceKind;
use crate::margo::validate::DescriptionLimits;
use crate::oci::Digest;

/// Largest description blob read.
pub const MAX_DESCRIPTION_BYTES: u64 = 1 << 20;
/// Largest text resource (release notes, description, licence) kept for display.
pub const MAX_TEXT_BYTES: u64 = 256 * 1024;
/// Largest icon kept for display.
pub const MAX_ICON_BYTES: u64 = 512 * 1024;

/// Icon formats the catalog serves, with their media type. No SVG: it can carry script.
pub fn icon_media_type(format: &str) -> Option<&'static str> {
    match format {
        "png" => Some("image/png"),
        "jpeg" | "jpg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

fn is_text_format(format: &str) -> bool {
    matches!(format, "markdown" | "md" | "plain" | "txt" | "text")
}

/// One resource layer of a package.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLayer {
    #[serde(serialize_with = "ser_kind")]
    pub kind: ResourceKind,
    pub format: String,
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

fn ser_kind<S: serde::Serializer>(k: &ResourceKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(k.as_str())
}

/// One package version (one tag).
#[derive(Debug, Clone)]
pub struct VersionEntry {
    pub repository: String,
    pub tag: String,
    pub manifest_digest: Digest,
    pub description_digest: String,
    pub description: Arc<ApplicationDescription>,
    pub resources: Vec<ResourceLayer>,
    /// Manifest and description violations (non-empty only for audit-mode routes).
    pub report: Report,
    /// Text resources as read (UTF-8, lossily), for display.
    pub texts: BTreeMap<ResourceKind, String>,
    /// Icon bytes and media type, when in a served format and small enough.
    pub icon: Option<(Bytes, &'static str)>,
}

impl VersionEntry {
    pub fn resource(&self, kind: ResourceKind) -> Option<&ResourceLayer> {
        self.resources.iter().find(|r| r.kind == kind)
    }
}

/// SemVer order, newest first; tags that are not SemVer come after, by name.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parse = |s: &str| semver::Version::parse(s.strip_prefix('v').unwrap_or(s)).ok();
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => y.cmp(&x).then_with(|| a.cmp(b)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.cmp(a),
    }
}

/// All versions of one repository, newest first.
#[derive(Debug, Clone, Default)]
pub struct RepoEntry {
    pub versions: Vec<Arc<VersionEntry>>,
}

impl RepoEntry {
    pub fn latest(&self) -> Option<&Arc<VersionEntry>> {
        self.versions.first()
    }

    pub fn version(&self, tag: &str) -> Option<&Arc<VersionEntry>> {
        self.versions.iter().find(|v| v.tag == tag)
    }
}

/// The whole index (cloned on write, shared on read).
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub repos: BTreeMap<String, RepoEntry>,
}

impl Index {
    pub fn upsert(&mut self, entry: VersionEntry) {
        let repo = self.repos.entry(entry.repository.clone()).or_default();
        repo.versions.retain(|v| v.tag != entry.tag);
        repo.versions.push(Arc::new(entry));
        repo.versions.sort_by(|a, b| version_order(&a.tag, &b.tag));
    }

    pub fn remove_tag(&mut self, repo: &str, tag: &str) {
        if let Some(r) = self.repos.get_mut(repo) {
            r.versions.retain(|v| v.tag != tag);
            if r.versions.is_empty() {
                self.repos.remove(repo);
            }
        }
    }

    /// A manifest deleted by digest takes every tag pointing at it.
    pub fn remove_digest(&mut self, repo: &str, digest: &Digest) {
        if let Some(r) = self.repos.get_mut(repo) {
            r.versions.retain(|v| &v.manifest_digest != digest);
            if r.versions.is_empty() {
                self.repos.remove(repo);
            }
        }
    }

    pub fn replace_repo(&mut self, repo: &str, mut versions: Vec<VersionEntry>) {
        if versions.is_empty() {
            self.repos.remove(repo);
            return;
        }
        versions.sort_by(|a, b| version_order(&a.tag, &b.tag));
        self.repos.insert(
            repo.to_owned(),
            RepoEntry {
                versions: versions.into_iter().map(Arc::new).collect(),
            },
        );
    }
}

/// Reads one tag of a repository and builds its entry. `Ok(None)`: the tag is not a
/// Margo package with a valid description (nothing to list).
pub async fn load_version(
    src: &dyn PackageSource,
    repo: &str,
    tag: &str,
) -> Result<Option<VersionEntry>, SourceError> {
    let Some(opts) = src.app_options(repo) else {
        return Err(SourceError::NotAnApp(repo.to_owned()));
    };
    let fetched = src.manifest(repo, tag).await?;
    let reference = Reference::Tag(tag.to_owned());
    let check = check_manifest(&fetched.bytes, RouteKind::App, &reference, &opts);
    let (NextStep::Description(layer), Some(manifest)) = (&check.next, &check.manifest) else {
        return Ok(None);
    };
    let layer_digest = layer.digest.clone();
    let blob = src
        .blob(repo, &layer_digest, layer.size.min(MAX_DESCRIPTION_BYTES))
        .await?;
    let pkg = check_package_description(
        manifest,
        layer,
        &blob,
        &reference,
        &opts,
        &DescriptionLimits::default(),
    );
    let Some(model) = pkg.description.and_then(|d| d.model) else {
        return Ok(None);
    };
    let mut report = check.report.clone();
    report.extend(pkg.report);

    let mut resources = Vec::new();
    let mut texts = BTreeMap::new();
    let mut icon = None;
    for l in &manifest.layers {
        let LayerKind::Resource { kind, format } = layer_kind(&l.media_type) else {
            continue;
        };
        let r = ResourceLayer {
            kind,
            format: format.clone(),
            media_type: l.media_type.clone(),
            digest: l.digest.to_string(),
            size: l.size,
            title: l.title().map(str::to_owned),
        };
        let d = l.digest.clone();
        match kind {
            ResourceKind::Icon => {
                if let (Some(mt), true) = (icon_media_type(&format), l.size <= MAX_ICON_BYTES) {
                    if icon.is_none() {
                        icon = Some((src.blob(repo, &d, l.size).await?, mt));
                    }
                }
            }
            _ if is_text_format(&format) && l.size <= MAX_TEXT_BYTES => {
                let bytes = src.blob(repo, &d, l.size).await?;
                texts
                    .entry(kind)
                    .or_insert_with(|| String::from_utf8_lossy(&bytes).into_owned());
            }
            _ => {}
        }
        resources.push(r);
    }
    Ok(Some(VersionEntry {
        repository: repo.to_owned(),
        tag: tag.to_owned(),
        manifest_digest: fetched.digest,
        description_digest: layer.digest.to_string(),
        description: Arc::new(model),
        resources,
        report,
        texts,
        icon,
    }))
}

#[cfg(test)]
pub(crate) mod tests;

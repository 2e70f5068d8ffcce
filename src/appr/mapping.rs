//! How App Registry packages sit in an OCI registry (no state of our own):
//!
//! - package `ns/pkg` is the repository `<prefix>/ns/pkg`; a release is a tag (semver
//!   build metadata `+` is spelled `_` in the tag, which may not hold `+`);
//! - a release of media type `m` is an image manifest with `artifactType`
//!   `application/vnd.appr.package-manifest.m.v0.json` (the reference's own manifest
//!   media type) and one layer, `application/vnd.appr.package.m.v0.tar+gzip`, the
//!   package tarball; that layer's digest is the release's appr digest;
//! - a Margo application package (artifactType [`MARGO_ARTIFACT_TYPE`]) is a release of
//!   media type `margo` whose tarball is built from its layers ([`super::tarball`]) and
//!   whose appr digest is the manifest's;
//! - the channels of a package are one small artifact under the tag
//!   [`CHANNELS_TAG`] ([`ChannelsDoc`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::margo::manifest::package::ARTIFACT_TYPE as MARGO_ARTIFACT_TYPE;
use crate::oci::digest::EMPTY_JSON_DIGEST;
use crate::oci::Digest;

pub const MARGO: &str = "margo";
pub const CHANNELS_TAG: &str = "_appr.channels";
pub const CHANNELS_ARTIFACT_TYPE: &str = "application/vnd.cnr.channels.v1+json";
pub const CHANNELS_ANNOTATION: &str = "io.cnr.channels";
pub const METADATA_ANNOTATION: &str = "io.cnr.metadata";
pub const CREATED_ANNOTATION: &str = "org.opencontainers.image.created";
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
const IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Most channels a package holds, and releases a channel lists.
pub const MAX_CHANNELS: usize = 1000;

/// The reference's `get_media_type`: a full manifest media type names its short form.
pub fn short_media_type(m: &str) -> &str {
    m.strip_prefix("application/vnd.appr.package-manifest.")
        .and_then(|r| r.rsplit_once(".v0.json").map(|(s, _)| s))
        .unwrap_or(m)
}

/// Media types are path segments and parts of OCI media types: a conservative grammar.
pub fn valid_media_type(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 64
        && m.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'-' | b'_' | b'.')))
}

pub fn artifact_type(media_type: &str) -> String {
    format!("application/vnd.appr.package-manifest.{media_type}.v0.json")
}

pub fn content_media_type(media_type: &str) -> String {
    format!("application/vnd.appr.package.{media_type}.v0.tar+gzip")
}

/// A release's tag (`+` is not a tag character).
pub fn tag_of(release: &str) -> String {
    release.replace('+', "_")
}

/// The release a tag holds, when it is one (a semantic version).
pub fn release_of(tag: &str) -> Option<semver::Version> {
    semver::Version::parse(&tag.replace('_', "+")).ok()
}

/// Every release among `tags`, highest first.
pub fn releases(tags: &[String]) -> Vec<semver::Version> {
    let mut v: Vec<_> = tags.iter().filter_map(|t| release_of(t)).collect();
    v.sort_by(|a, b| b.cmp(a));
    v.dedup();
    v
}

/// Why a release query selects nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Found(semver::Version),
    NoMatch,
    /// Not a version nor a version range.
    Invalid(String),
}

/// The reference's `get_release`: `default` (or none) is the highest release; an exact
/// version selects itself; a range (`>=1.0,<2.0`) the highest release it matches, stable
/// releases only unless the query names a pre-release.
pub fn select(releases: &[semver::Version], query: Option<&str>) -> Selection {
    let q = match query {
        None | Some("default") => {
            return releases
                .first()
                .cloned()
                .map_or(Selection::NoMatch, Selection::Found)
        }
        Some(q) => q.replace(' ', ""),
    };
    if let Ok(v) = semver::Version::parse(&q) {
        return match releases.iter().find(|r| **r == v) {
            Some(r) => Selection::Found(r.clone()),
            None => Selection::NoMatch,
        };
    }
    let req = match semver::VersionReq::parse(&q.replace(',', ", ")) {
        Ok(r) => r,
        Err(e) => return Selection::Invalid(e.to_string()),
    };
    let stable_only = !q.contains('-');
    releases
        .iter()
        .filter(|r| !stable_only || r.pre.is_empty())
        .find(|r| req.matches(r))
        .cloned()
        .map_or(Selection::NoMatch, Selection::Found)
}

/// What an OCI manifest is, seen from the App Registry.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// A package tarball in one layer.
    Tarball {
        media_type: String,
        digest: Digest,
        size: u64,
    },
    /// A Margo application package: files at their titles.
    Margo { files: Vec<MargoFile> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct MargoFile {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}

/// A release as read from its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseManifest {
    pub content: Content,
    pub created_at: String,
    pub metadata: Value,
}

impl ReleaseManifest {
    pub fn media_type(&self) -> &str {
        match &self.content {
            Content::Tarball { media_type, .. } => media_type,
            Content::Margo { .. } => MARGO,
        }
    }
}

#[derive(Deserialize)]
struct RawDescriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawManifest {
    #[serde(rename = "artifactType", default)]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<RawDescriptor>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Reads a release manifest; `None` when it is not an App Registry release.
pub fn parse_release(body: &[u8]) -> Option<ReleaseManifest> {
    let m: RawManifest = serde_json::from_slice(body).ok()?;
    let at = m.artifact_type.as_deref()?;
    let created_at = m
        .annotations
        .get(CREATED_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
    let metadata = m
        .annotations
        .get(METADATA_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let content = if at == MARGO_ARTIFACT_TYPE {
        let mut files = Vec::new();
        for l in &m.layers {
            let Some(path) = l.annotations.get(TITLE_ANNOTATION) else {
                continue;
            };
            files.push(MargoFile {
                path: path.clone(),
                digest: l.digest.parse().ok()?,
                size: l.size,
            });
        }
        Content::Margo { files }
    } else {
        let short = short_media_type(at);
        if short == at || m.layers.len() != 1 {
            return None;
        }
        let layer = m.layers.first()?;
        if layer.media_type != content_media_type(short) {
            return None;
        }
        Content::Tarball {
            media_type: short.to_owned(),
            digest: layer.digest.parse().ok()?,
            size: layer.size,
        }
    };
    Some(ReleaseManifest {
        content,
        created_at,
        metadata,
    })
}

fn empty_descriptor() -> Value {
    json!({"mediaType": EMPTY_MEDIA_TYPE, "digest": EMPTY_JSON_DIGEST, "size": 2, "data": "e30="})
}

/// The manifest of a tarball release.
pub fn release_manifest(
    media_type: &str,
    layer: &Digest,
    size: u64,
    filename: &str,
    created_at: &str,
    metadata: &Value,
) -> Vec<u8> {
    let mut annotations = serde_json::Map::new();
    annotations.insert(CREATED_ANNOTATION.into(), created_at.into());
    if !metadata.is_null() {
        annotations.insert(METADATA_ANNOTATION.into(), metadata.to_string().into());
    }
    let m = json!({
        "schemaVersion": 2,
        "mediaType": IMAGE_MANIFEST,
        "artifactType": artifact_type(media_type),
        "config": empty_descriptor(),
        "layers": [{
            "mediaType": content_media_type(media_type),
            "digest": layer.to_string(),
            "size": size,
            "annotations": {TITLE_ANNOTATION: filename},
        }],
        "annotations": annotations,
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

/// One channel: its current release and every release it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub current: String,
    pub releases: BTreeSet<String>,
}

/// Every channel of a package, in one artifact: updates read, change and write it
/// back, then read again to check the change holds ([`super::channels`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelsDoc {
    pub channels: BTreeMap<String, Channel>,
}

impl ChannelsDoc {
    /// Reads the channels artifact; a manifest that is not one reads as no channels.
    pub fn parse(body: &[u8]) -> Self {
        let Ok(m) = serde_json::from_slice::<RawManifest>(body) else {
            return Self::default();
        };
        if m.artifact_type.as_deref() != Some(CHANNELS_ARTIFACT_TYPE) {
            return Self::default();
        }
        m.annotations
            .get(CHANNELS_ANNOTATION)
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    pub fn manifest(&self) -> Vec<u8> {
        let doc = serde_json::to_string(self).unwrap_or_default();
        let m = json!({
            "schemaVersion": 2,
            "mediaType": IMAGE_MANIFEST,
            "artifactType": CHANNELS_ARTIFACT_TYPE,
            "config": empty_descriptor(),
            "layers": [empty_descriptor()],
            "annotations": {CHANNELS_ANNOTATION: doc},
        });
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// A channel's releases as the reference lists them: highest first.
    pub fn releases_of(c: &Channel) -> Vec<String> {
        let mut v: Vec<(semver::Version, &String)> = c
            .releases
            .iter()
            .filter_map(|r| Some((semver::Version::parse(r).ok()?, r)))
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0));
        v.into_iter().map(|(_, r)| r.clone()).collect()
    }
}

/// One update of the channels document; each is idempotent, so it can be applied
/// again to whatever a concurrent writer left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelOp {
    /// `current` becomes the release, which joins the channel (created if needed).
    Add {
        channel: String,
        release: String,
    },
    /// The release leaves the channel; the highest one left is current; an empty
    /// channel is removed.
    Remove {
        channel: String,
        release: String,
    },
    Delete {
        channel: String,
    },
}

impl ChannelOp {
    pub fn apply(&self, doc: &mut ChannelsDoc) {
        match self {
            ChannelOp::Add { channel, release } => {
                let c = doc.channels.entry(channel.clone()).or_default();
                c.current = release.clone();
                c.releases.insert(release.clone());
            }
            ChannelOp::Remove { channel, release } => {
                let Some(c) = doc.channels.get_mut(channel) else {
                    return;
                };
                c.releases.remove(release);
                match ChannelsDoc::releases_of(c).first() {
                    Some(top) => c.current = top.clone(),
                    None => {
                        doc.channels.remove(channel);
                    }
                }
            }
            ChannelOp::Delete { channel } => {
                doc.channels.remove(channel);
            }
        }
    }

    /// Whether `doc` shows the update done.
    pub fn holds_in(&self, doc: &ChannelsDoc) -> bool {
        match self {
            ChannelOp::Add { channel, release } => doc
                .channels
                .get(channel)
                .is_some_and(|c| c.current == *release && c.releases.contains(release)),
            ChannelOp::Remove { channel, release } => doc
                .channels
                .get(channel)
                .is_none_or(|c| !c.releases.contains(release)),
            ChannelOp::Delete { channel } => !doc.channels.contains_key(channel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn release_queries() {
        let rs = releases(&[
            "1.0.0".into(),
            "1.2.0".into(),
            "2.0.0-rc.1".into(),
            "latest".into(),
            "1.1.0_build.5".into(),
            CHANNELS_TAG.into(),
        ]);
        assert_eq!(
            rs,
            vec![v("2.0.0-rc.1"), v("1.2.0"), v("1.1.0+build.5"), v("1.0.0")]
        );
        assert_eq!(select(&rs, None), Selection::Found(v("2.0.0-rc.1")));
        assert_eq!(
            select(&rs, Some("default")),
            Selection::Found(v("2.0.0-rc.1"))
        );
        assert_eq!(select(&rs, Some("1.0.0")), Selection::Found(v("1.0.0")));
        assert_eq!(select(&rs, Some("1.5.0")), Selection::NoMatch);
        assert_eq!(
            select(&rs, Some(">=1.0,<2.0")),
            Selection::Found(v("1.2.0"))
        );
        assert_eq!(select(&rs, Some(">=1.0")), Selection::Found(v("1.2.0")));
        assert!(matches!(select(&rs, Some("@@")), Selection::Invalid(_)));
        assert_eq!(select(&[], None), Selection::NoMatch);
        assert_eq!(tag_of("1.1.0+build.5"), "1.1.0_build.5");
    }

    #[test]
    fn media_types() {
        assert_eq!(
            short_media_type("application/vnd.appr.package-manifest.helm.v0.json"),
            "helm"
        );
        assert_eq!(short_media_type("kpm"), "kpm");
        assert!(valid_media_type("docker-compose"));
        assert!(!valid_media_type("a/b") && !valid_media_type("") && !valid_media_type("-x"));
    }

    #[test]
    fn release_manifest_round_trips() {
        let d = Digest::sha256_of(b"x");
        let body = release_manifest(
            "kpm",
            &d,
            1,
            "ns_p_1.0.0.tar.gz",
            "2026-01-01T00:00:00Z",
            &json!({"a": 1}),
        );
        let r = parse_release(&body).unwrap_or_else(|| panic!("not a release"));
        assert_eq!(r.media_type(), "kpm");
        assert_eq!(r.metadata, json!({"a": 1}));
        assert_eq!(r.created_at, "2026-01-01T00:00:00Z");
        assert_eq!(
            r.content,
            Content::Tarball {
                media_type: "kpm".into(),
                digest: d,
                size: 1
            }
        );
        // The channels artifact and foreign manifests are not releases.
        assert_eq!(parse_release(&ChannelsDoc::default().manifest()), None);
        assert_eq!(parse_release(b"{\"layers\":[]}"), None);
        assert_eq!(parse_release(b"not json"), None);
    }

    #[test]
    fn margo_manifest_lists_its_files() {
        let d = Digest::sha256_of(b"x");
        let body = json!({"artifactType": MARGO_ARTIFACT_TYPE, "layers": [
            {"mediaType": "application/vnd.margo.app.description.v1+yaml", "digest": d.to_string(), "size": 1,
             "annotations": {TITLE_ANNOTATION: "margo.yaml"}},
            {"mediaType": "x", "digest": d.to_string(), "size": 1}]});
        let r = parse_release(body.to_string().as_bytes()).unwrap_or_else(|| panic!("not margo"));
        assert_eq!(r.media_type(), MARGO);
        let Content::Margo { files } = r.content else {
            panic!("not margo")
        };
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "margo.yaml");
    }

    #[test]
    fn channel_ops_are_idempotent_and_checkable() {
        let mut doc = ChannelsDoc::default();
        let add = |c: &str, r: &str| ChannelOp::Add {
            channel: c.into(),
            release: r.into(),
        };
        for op in [
            add("stable", "1.0.0"),
            add("stable", "1.2.0"),
            add("stable", "1.2.0"),
        ] {
            op.apply(&mut doc);
            assert!(op.holds_in(&doc));
        }
        let s = &doc.channels["stable"];
        assert_eq!(ChannelsDoc::releases_of(s), vec!["1.2.0", "1.0.0"]);
        let rm = ChannelOp::Remove {
            channel: "stable".into(),
            release: "1.2.0".into(),
        };
        assert!(!rm.holds_in(&doc));
        rm.apply(&mut doc);
        assert!(rm.holds_in(&doc));
        assert_eq!(doc.channels["stable"].current, "1.0.0");
        ChannelOp::Remove {
            channel: "stable".into(),
            release: "1.0.0".into(),
        }
        .apply(&mut doc);
        assert!(doc.channels.is_empty());
        add("beta", "1.0.0").apply(&mut doc);
        let round = ChannelsDoc::parse(&doc.manifest());
        assert_eq!(round, doc);
        let del = ChannelOp::Delete {
            channel: "beta".into(),
        };
        del.apply(&mut doc);
        assert!(del.holds_in(&doc));
        assert_eq!(ChannelsDoc::parse(b"{}"), ChannelsDoc::default());
    }
}

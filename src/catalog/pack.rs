//! Packing a package directory (`margo.yaml` + the resource files it names) into an
//! OCI image manifest and its blobs, as the registry rules say: the empty config, one
//! description layer, one layer per local resource with its title and the
//! `org.margo.app.resource` annotation. `margo-proxy push` uses it, and so do tests.
//!
//! The directory is not validated here beyond what packing needs: pushing an invalid
//! package is how one learns what the registry refuses.

use std::path::Path;

use bytes::Bytes;
use serde_json::json;

use crate::margo::manifest::package::{ARTIFACT_TYPE, DESCRIPTION_MEDIA_TYPE};
use crate::margo::resources::{normalize_relative, ResourceKind, ResourceRefs};
use crate::margo::yaml::{self, YamlLimits};
use crate::oci::digest::EMPTY_JSON_DIGEST;
use crate::oci::Digest;

/// Largest file packed.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
pub const RESOURCE_ANNOTATION: &str = "org.margo.app.resource";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge(String),
    #[error("margo.yaml: {0}")]
    Description(String),
    #[error("resource `{0}`: {1}")]
    Resource(String, String),
}

/// One blob to upload.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: Digest,
    pub data: Bytes,
}

/// A packed package.
#[derive(Debug, Clone)]
pub struct Packed {
    pub manifest: Bytes,
    pub blobs: Vec<Blob>,
}

/// `<format>` of a resource media type, from the file extension.
pub fn format_of(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "png",
        "jpg" | "jpeg" => "jpeg",
        "gif" => "gif",
        "webp" => "webp",
        "svg" => "svg+xml",
        "md" | "markdown" => "markdown",
        "pdf" => "pdf",
        "html" | "htm" => "html",
        _ => "plain",
    }
}

fn read(path: &Path) -> Result<Bytes, PackError> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| PackError::Io {
        path: shown.clone(),
        source,
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(PackError::TooLarge(shown));
    }
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| PackError::Io {
            path: shown,
            source,
        })
}

fn descriptor(b: &Blob, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "mediaType": b.media_type,
        "digest": b.digest.to_string(),
        "size": b.data.len(),
        "annotations": annotations,
    })
}

/// Packs `dir`.
pub fn pack_dir(dir: &Path) -> Result<Packed, PackError> {
    let description = read(&dir.join("margo.yaml"))?;
    pack_with(description, |rel| read(&dir.join(rel)), None)
}

/// Packs a package held in memory (path → content, `margo.yaml` at the root), as the
/// App Registry receives one; `created` becomes `org.opencontainers.image.created`.
pub fn pack_files(
    files: &std::collections::BTreeMap<String, Bytes>,
    created: Option<&str>,
) -> Result<Packed, PackError> {
    let get = |rel: &str| {
        files.get(rel).cloned().ok_or_else(|| PackError::Io {
            path: rel.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not in the package"),
        })
    };
    pack_with(get("margo.yaml")?, get, created)
}

fn pack_with(
    description: Bytes,
    read: impl Fn(&str) -> Result<Bytes, PackError>,
    created: Option<&str>,
) -> Result<Packed, PackError> {
    let tree = yaml::parse(&description, &YamlLimits::default())
        .map_err(|e| PackError::Description(e.to_string()))?;
    let refs = ResourceRefs::from_node(&tree);
    let desc_blob = Blob {
        media_type: DESCRIPTION_MEDIA_TYPE.to_owned(),
        digest: Digest::sha256_of(&description),
        data: description,
    };
    let mut layers = vec![descriptor(
        &desc_blob,
        json!({ "org.opencontainers.image.title": "margo.yaml" }),
    )];
    let mut blobs = vec![desc_blob];
    for r in refs.local() {
        let rel = normalize_relative(&r.reference)
            .map_err(|e| PackError::Resource(r.reference.clone(), e.to_string()))?;
        let data = read(&rel)?;
        let blob = Blob {
            media_type: format!(
                "application/vnd.margo.app.{}.v1+{}",
                r.kind.as_str(),
                format_of(&rel)
            ),
            digest: Digest::sha256_of(&data),
            data,
        };
        layers.push(descriptor(
            &blob,
            json!({
                "org.opencontainers.image.title": rel,
                RESOURCE_ANNOTATION: r.kind.as_str(),
            }),
        ));
        blobs.push(blob);
    }
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": EMPTY_JSON_DIGEST,
            "size": 2,
            "data": "e30="
        },
        "layers": layers,
    });
    if let (Some(c), Some(m)) = (created, manifest.as_object_mut()) {
        m.insert(
            "annotations".into(),
            json!({ "org.opencontainers.image.created": c }),
        );
    }
    let manifest =
        serde_json::to_vec_pretty(&manifest).map_err(|e| PackError::Description(e.to_string()))?;
    // The empty config is a blob too.
    blobs.push(Blob {
        media_type: "application/vnd.oci.empty.v1+json".to_owned(),
        digest: Digest::sha256_of(b"{}"),
        data: Bytes::from_static(b"{}"),
    });
    Ok(Packed {
        manifest: Bytes::from(manifest),
        blobs,
    })
}

/// Which kinds a packed manifest carries (for tests and messages).
pub fn kinds(p: &Packed) -> Vec<ResourceKind> {
    p.blobs
        .iter()
        .filter_map(|b| {
            let rest = b.media_type.strip_prefix("application/vnd.margo.app.")?;
            ResourceKind::parse(rest.split_once(".v1+")?.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::margo::manifest::{check_manifest, ManifestOptions, NextStep, Reference, RouteKind};

    #[test]
    fn packs_the_example_into_an_admissible_manifest() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/packages/line-monitor");
        let packed = match pack_dir(&dir) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let check = check_manifest(
            &packed.manifest,
            RouteKind::App,
            &Reference::Tag("1.4.0".into()),
            &ManifestOptions::default(),
        );
        assert!(check.report.is_empty(), "{:?}", check.report);
        assert!(matches!(check.next, NextStep::Description(_)));
        let mut k = kinds(&packed);
        k.sort();
        assert_eq!(
            k,
            vec![
                ResourceKind::Icon,
                ResourceKind::DescriptionFile,
                ResourceKind::LicenseFile,
                ResourceKind::ReleaseNotes
            ]
        );
    }

    #[test]
    fn format_table() {
        for (p, f) in [
            ("a/icon.PNG", "png"),
            ("x.jpg", "jpeg"),
            ("notes.md", "markdown"),
            ("LICENSE", "plain"),
            ("l.pdf", "pdf"),
        ] {
            assert_eq!(format_of(p), f, "{p}");
        }
    }

    #[test]
    fn missing_resource_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let yaml = "metadata:\n  catalog:\n    application:\n      icon: resources/nope.png\n";
        std::fs::write(dir.path().join("margo.yaml"), yaml).unwrap_or_default();
        assert!(matches!(pack_dir(dir.path()), Err(PackError::Io { .. })));
    }
}

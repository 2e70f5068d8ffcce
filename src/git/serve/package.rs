//! Which files of a package manifest go into its Git tree, within the size limits.

use serde::Deserialize;

use crate::margo::manifest::descriptor::ANNOTATION_TITLE;
use crate::margo::manifest::package::{ARTIFACT_TYPE, DESCRIPTION_MEDIA_TYPE};
use crate::oci::Digest;

/// Where the description layer goes, whatever its title: the older draft's layout.
pub const DESCRIPTION_PATH: &str = "margo.yaml";
const CREATED: &str = "org.opencontainers.image.created";
/// Media types of resource layers.
const RESOURCE_PREFIX: &str = "application/vnd.margo.app.";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    #[error("manifest is not an OCI image manifest: {0}")]
    NotAManifest(String),
    #[error("artifactType is not {ARTIFACT_TYPE}")]
    NotAnApp,
    #[error("no {DESCRIPTION_MEDIA_TYPE} layer")]
    NoDescription,
    #[error("{count} files, more than git.max_package_files ({limit})")]
    TooManyFiles { count: usize, limit: usize },
    #[error("{bytes} bytes, more than git.max_package_bytes ({limit})")]
    TooLarge { bytes: u64, limit: u64 },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    layers: Vec<Layer>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// A file to fetch: its path in the tree, digest and declared size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    pub digest: Digest,
    pub size: u64,
}

/// The files of a package manifest and its `created` annotation. Layers that are not
/// Margo resources, or carry no title, are not files of the package.
pub fn files(
    manifest: &[u8],
    max_files: usize,
    max_bytes: u64,
) -> Result<(Vec<FileRef>, Option<String>), PackageError> {
    let m: Manifest =
        serde_json::from_slice(manifest).map_err(|e| PackageError::NotAManifest(e.to_string()))?;
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(PackageError::NotAnApp);
    }
    if m.layers.len() > max_files {
        return Err(PackageError::TooManyFiles {
            count: m.layers.len(),
            limit: max_files,
        });
    }
    let total = m.layers.iter().fold(0u64, |a, l| a.saturating_add(l.size));
    if total > max_bytes {
        return Err(PackageError::TooLarge {
            bytes: total,
            limit: max_bytes,
        });
    }
    let mut out = Vec::new();
    let mut description = false;
    for l in m.layers {
        let path = if l.media_type == DESCRIPTION_MEDIA_TYPE && !description {
            description = true;
            DESCRIPTION_PATH.to_owned()
        } else if l.media_type.starts_with(RESOURCE_PREFIX) {
            match l.annotations.get(ANNOTATION_TITLE) {
                Some(t) => t.clone(),
                None => continue,
            }
        } else {
            continue;
        };
        out.push(FileRef {
            path,
            digest: l.digest,
            size: l.size,
        });
    }
    if !description {
        return Err(PackageError::NoDescription);
    }
    Ok((out, m.annotations.get(CREATED).cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    fn manifest(extra_layer: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"artifactType":"{ARTIFACT_TYPE}",
            "annotations":{{"org.opencontainers.image.created":"2024-01-02T03:04:05Z"}},
            "layers":[
              {{"mediaType":"{DESCRIPTION_MEDIA_TYPE}","digest":"{D}","size":2,"annotations":{{"org.opencontainers.image.title":"margo.yaml"}}}},
              {{"mediaType":"application/vnd.margo.app.icon.v1+png","digest":"{D}","size":3,"annotations":{{"org.opencontainers.image.title":"resources/icon.png"}}}},
              {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{D}","size":1}}{extra_layer}
            ]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn description_and_titled_resources() {
        let (f, created) = files(&manifest(""), 10, 100).unwrap();
        let paths: Vec<_> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["margo.yaml", "resources/icon.png"]);
        assert_eq!(created.as_deref(), Some("2024-01-02T03:04:05Z"));
    }

    #[test]
    fn limits_and_wrong_kinds() {
        assert_eq!(
            files(&manifest(""), 2, 100),
            Err(PackageError::TooManyFiles { count: 3, limit: 2 })
        );
        assert_eq!(
            files(&manifest(""), 10, 5),
            Err(PackageError::TooLarge { bytes: 6, limit: 5 })
        );
        let huge = format!(r#",{{"mediaType":"x","digest":"{D}","size":18446744073709551615}}"#);
        assert!(matches!(
            files(&manifest(&huge), 10, 100),
            Err(PackageError::TooLarge { .. })
        ));
        assert_eq!(
            files(br#"{"schemaVersion":2,"layers":[]}"#, 10, 100),
            Err(PackageError::NotAnApp)
        );
        assert!(matches!(
            files(b"[1]", 10, 100),
            Err(PackageError::NotAManifest(_))
        ));
    }
}

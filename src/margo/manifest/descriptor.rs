//! Lenient parsing of OCI manifests and descriptors from untrusted JSON.
//!
//! Own structs rather than the `oci-spec` crate (no longer a dependency): its strict deserialisation stops at the
//! first problem with a serde message and no path, while admission must report every
//! problem with its path (`layers[2].digest`). Its lax parts (unknown media types as
//! `Other`) would not save work either. So: `serde_json::Value` in, typed fields out,
//! a violation for each malformed field.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::oci::Digest;

pub const OCI_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_EMPTY_JSON: &str = "application/vnd.oci.empty.v1+json";
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
pub const ANNOTATION_VERSION: &str = "org.opencontainers.image.version";

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Embedded content (base64), as in the empty descriptor's `data: e30=`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl Descriptor {
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_TITLE).map(String::as_str)
    }
}

/// Whether a manifest is an image manifest or an index (by `mediaType`, or by shape
/// when `mediaType` is absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    Image,
    Index,
}

/// A manifest with its fields typed as far as they were well-formed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub kind: ManifestKind,
    pub schema_version: Option<i64>,
    pub media_type: Option<String>,
    pub artifact_type: Option<String>,
    pub config: Option<Descriptor>,
    pub layers: Vec<Descriptor>,
    /// For indexes.
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn is_index(&self) -> bool {
        self.kind == ManifestKind::Index
    }

    /// A manifest with `subject` refers to another one (signature, SBOM, attestation).
    pub fn is_referrer(&self) -> bool {
        self.subject.is_some()
    }
}

fn bad(path: FieldPath, expected: &str, value: Option<&Value>) -> Violation {
    let v = Violation::new(RuleId::ManifestDescriptor, path, expected);
    match value {
        Some(val) => v.with_value(val.clone()),
        None => v,
    }
}

fn annotations(v: Option<&Value>, path: FieldPath, out: &mut Report) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let Some(v) = v else { return map };
    let Some(obj) = v.as_object() else {
        out.push(bad(
            path,
            "annotations as a map of string to string",
            Some(v),
        ));
        return map;
    };
    for (k, val) in obj {
        match val.as_str() {
            Some(s) => {
                map.insert(k.clone(), s.to_owned());
            }
            None => out.push(bad(path.key(k), "a string annotation value", Some(val))),
        }
    }
    map
}

/// Parses a descriptor, reporting each malformed field; `None` when it is unusable.
pub(crate) fn descriptor(v: &Value, path: &FieldPath, out: &mut Report) -> Option<Descriptor> {
    let Some(obj) = v.as_object() else {
        out.push(bad(path.clone(), "a descriptor object", Some(v)));
        return None;
    };
    let media_type = obj.get("mediaType").and_then(Value::as_str);
    if media_type.is_none() {
        out.push(bad(
            path.key("mediaType"),
            "a string mediaType",
            obj.get("mediaType"),
        ));
    }
    let digest = match obj.get("digest").and_then(Value::as_str) {
        None => {
            out.push(bad(
                path.key("digest"),
                "a string digest",
                obj.get("digest"),
            ));
            None
        }
        Some(d) => match d.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(e) => {
                out.push(bad(path.key("digest"), &e.to_string(), obj.get("digest")));
                None
            }
        },
    };
    let size = obj.get("size").and_then(Value::as_u64);
    if size.is_none() {
        out.push(bad(
            path.key("size"),
            "a non-negative integer size",
            obj.get("size"),
        ));
    }
    let artifact_type = match obj.get("artifactType") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            out.push(bad(
                path.key("artifactType"),
                "a string artifactType",
                Some(other),
            ));
            None
        }
    };
    let data = match obj.get("data") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            out.push(bad(
                path.key("data"),
                "base64 data as a string",
                Some(other),
            ));
            None
        }
    };
    let annotations = annotations(obj.get("annotations"), path.key("annotations"), out);
    Some(Descriptor {
        media_type: media_type?.to_owned(),
        digest: digest?,
        size: size?,
        artifact_type,
        annotations,
        data,
    })
}

/// Default cap on manifest bytes: the OCI distribution spec has registries accept at
/// least 4 MiB manifests, and nothing legitimate is larger.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// Why manifest bytes are not a manifest at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestParseError {
    #[error("manifest is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("manifest is not JSON: {0}")]
    Json(String),
    #[error("manifest is not a JSON object")]
    NotAnObject,
}

impl ManifestParseError {
    /// As a `margo.manifest.json` violation.
    pub fn to_violation(&self) -> Violation {
        let mut v = Violation::new(
            RuleId::ManifestJson,
            FieldPath::root(),
            "a JSON object within the size limit",
        );
        v.message = format!("{} at $: {self}", RuleId::ManifestJson);
        v
    }
}

/// Parses untrusted manifest bytes. Malformed fields are reported in the returned
/// report (as `margo.manifest.descriptor` and friends); bytes that are not a JSON object
/// at all are a [`ManifestParseError`].
pub fn parse_manifest(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(Manifest, Report), ManifestParseError> {
    if bytes.len() > max_bytes {
        return Err(ManifestParseError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    // serde_json refuses nesting beyond 128 levels, so this cannot exhaust the stack.
    let v: Value =
        serde_json::from_slice(bytes).map_err(|e| ManifestParseError::Json(e.to_string()))?;
    let Some(obj) = v.as_object() else {
        return Err(ManifestParseError::NotAnObject);
    };
    let mut out = Report::new();
    let root = FieldPath::root();
    let schema_version = match obj.get("schemaVersion") {
        None => None,
        Some(sv) => {
            let n = sv.as_i64();
            if n.is_none() {
                out.push(
                    Violation::new(
                        RuleId::ManifestSchemaVersion,
                        root.key("schemaVersion"),
                        "2",
                    )
                    .with_value(sv.clone()),
                );
            }
            n
        }
    };
    let str_field = |name: &str, out: &mut Report| match obj.get(name) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            out.push(bad(root.key(name), "a string", Some(other)));
            None
        }
    };
    let media_type = str_field("mediaType", &mut out);
    let artifact_type = str_field("artifactType", &mut out);
    let list = |name: &str, out: &mut Report| -> Vec<Descriptor> {
        match obj.get(name) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, d)| descriptor(d, &root.key(name).index(i), out))
                .collect(),
            Some(other) => {
                out.push(bad(root.key(name), "an array of descriptors", Some(other)));
                Vec::new()
            }
        }
    };
    let layers = list("layers", &mut out);
    let manifests = list("manifests", &mut out);
    let config = obj
        .get("config")
        .and_then(|c| descriptor(c, &root.key("config"), &mut out));
    let subject = obj
        .get("subject")
        .and_then(|c| descriptor(c, &root.key("subject"), &mut out));
    let annotations = annotations(obj.get("annotations"), root.key("annotations"), &mut out);
    let kind = match media_type.as_deref() {
        Some(OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST) => ManifestKind::Index,
        Some(_) => ManifestKind::Image,
        None if obj.contains_key("manifests") && !obj.contains_key("layers") => ManifestKind::Index,
        None => ManifestKind::Image,
    };
    Ok((
        Manifest {
            kind,
            schema_version,
            media_type,
            artifact_type,
            config,
            layers,
            manifests,
            subject,
            annotations,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(digest: &str) -> Value {
        serde_json::json!({"mediaType": "a/b", "digest": digest, "size": 1})
    }

    #[test]
    fn descriptor_table() {
        let good = format!("sha256:{}", "a".repeat(64));
        let cases = [
            (d(&good), true, 0),
            (d("sha256:zz"), false, 1),
            (serde_json::json!({"digest": good, "size": 1}), false, 1),
            (
                serde_json::json!({"mediaType": "a/b", "digest": good, "size": -1}),
                false,
                1,
            ),
            (
                serde_json::json!({"mediaType": "a/b", "digest": good, "size": 1, "annotations": {"k": 1}}),
                true,
                1,
            ),
            (serde_json::json!("x"), false, 1),
        ];
        for (v, ok, problems) in cases {
            let mut r = Report::new();
            let got = descriptor(&v, &FieldPath::root().key("config"), &mut r);
            assert_eq!(got.is_some(), ok, "{v}");
            assert_eq!(r.len(), problems, "{v}: {:?}", r.violations());
            assert!(r
                .violations()
                .iter()
                .all(|v| v.rule == RuleId::ManifestDescriptor));
        }
    }

    #[test]
    fn parse_manifest_table() {
        let cases: [(&[u8], bool); 5] = [
            (b"{}", true),
            (b"[]", false),
            (b"not json", false),
            (&[b'['; 1000], false),
            (b"{\"schemaVersion\": 2, \"layers\": {}}", true),
        ];
        for (bytes, ok) in cases {
            assert_eq!(
                parse_manifest(bytes, DEFAULT_MAX_MANIFEST_BYTES).is_ok(),
                ok,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(parse_manifest(b"{}", 1).is_err());
    }

    #[test]
    fn kind_and_referrer_classification() {
        let idx = parse_manifest(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            DEFAULT_MAX_MANIFEST_BYTES,
        );
        assert!(matches!(idx, Ok((ref m, _)) if m.is_index()));
        let bare_idx = parse_manifest(br#"{"schemaVersion":2,"manifests":[]}"#, 1 << 20);
        assert!(matches!(bare_idx, Ok((ref m, _)) if m.is_index()));
        let subj = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_IMAGE_MANIFEST}","layers":[],"subject":{}}}"#,
            d(&format!("sha256:{}", "b".repeat(64)))
        );
        let r = parse_manifest(subj.as_bytes(), 1 << 20);
        assert!(matches!(r, Ok((ref m, _)) if m.is_referrer() && !m.is_index()));
    }
}

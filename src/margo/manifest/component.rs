//! Component manifests: Compose archives and Helm charts.

use crate::margo::manifest::descriptor::{Manifest, ANNOTATION_VERSION};
use crate::margo::manifest::{check_oci_header, value, NextStep, Reference};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};

pub const COMPOSE_ARTIFACT_TYPE: &str = "application/vnd.org.margo.component.compose+json";
pub const COMPOSE_LAYER_MEDIA_TYPE: &str = "application/vnd.org.margo.component.compose.tar+gzip";
pub const ANNOTATION_COMPONENT_TYPE: &str = "org.margo.component.type";
pub const ANNOTATION_COMPONENT_VERSION: &str = "org.margo.component.version";
pub const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
pub const HELM_PROVENANCE_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";

/// SemVer 2.0 without a leading `v` (the `semver` crate refuses `v`, leading zeros and
/// partial versions, as SemVer 2.0 does).
pub fn is_semver(s: &str) -> bool {
    semver::Version::parse(s).is_ok()
}

/// A component annotation's value and where it was found.
struct Found {
    value: String,
    path: FieldPath,
}

fn layer_annotation(key: &str) -> FieldPath {
    FieldPath::root()
        .key("layers")
        .index(0)
        .key("annotations")
        .key(key)
}

fn where_(found: &Option<Found>) -> String {
    match found {
        Some(f) => format!("; found at {}", f.path),
        None => "; found on neither".to_owned(),
    }
}

/// A component annotation, read from the layer (where the specification's prose puts
/// it) or the manifest (where margot and the specification's `oras push --annotation`
/// example put it). The layer wins; a manifest value that disagrees is a violation
/// naming both places.
fn annotation(m: &Manifest, key: &str, out: &mut Report) -> Option<Found> {
    let on_layer = m.layers.first().and_then(|l| l.annotations.get(key));
    let on_manifest = m.annotations.get(key);
    let manifest_path = FieldPath::root().key("annotations").key(key);
    match (on_layer, on_manifest) {
        (Some(l), Some(mv)) if l != mv => {
            out.push(
                Violation::new(
                    RuleId::ComponentAnnotation,
                    manifest_path,
                    format!(
                        "{l:?}, the value at {} (the layer's value wins; set one or make them agree)",
                        layer_annotation(key)
                    ),
                )
                .with_value(value(mv)),
            );
            Some(Found {
                value: l.clone(),
                path: layer_annotation(key),
            })
        }
        (Some(l), _) => Some(Found {
            value: l.clone(),
            path: layer_annotation(key),
        }),
        (None, Some(mv)) => Some(Found {
            value: mv.clone(),
            path: manifest_path,
        }),
        (None, None) => None,
    }
}

/// Compose component manifest rules. Returns the archive layer to fetch.
pub(crate) fn check_compose_manifest(
    m: &Manifest,
    reference: &Reference,
    out: &mut Report,
) -> NextStep {
    check_oci_header(m, out);
    let layers_path = FieldPath::root().key("layers");
    let [layer] = m.layers.as_slice() else {
        out.push(
            Violation::new(
                RuleId::ComponentLayer,
                layers_path,
                format!("exactly one layer of mediaType {COMPOSE_LAYER_MEDIA_TYPE}"),
            )
            .with_value(serde_json::Value::from(m.layers.len())),
        );
        return NextStep::Done;
    };
    let at = layers_path.index(0);
    if layer.media_type != COMPOSE_LAYER_MEDIA_TYPE {
        out.push(
            Violation::new(
                RuleId::ComponentLayer,
                at.key("mediaType"),
                COMPOSE_LAYER_MEDIA_TYPE,
            )
            .with_value(value(&layer.media_type)),
        );
    }
    let type_found = annotation(m, ANNOTATION_COMPONENT_TYPE, out);
    match &type_found {
        Some(found) if found.value == "compose" => {}
        other => {
            let v = Violation::new(
                RuleId::ComponentAnnotation,
                other.as_ref().map_or_else(
                    || layer_annotation(ANNOTATION_COMPONENT_TYPE),
                    |f| f.path.clone(),
                ),
                format!(
                    "\"compose\" (on the layer or the manifest{})",
                    where_(other)
                ),
            );
            out.push(match other {
                Some(f) => v.with_value(value(&f.value)),
                None => v,
            });
        }
    }
    match annotation(m, ANNOTATION_COMPONENT_VERSION, out) {
        None => out.push(Violation::new(
            RuleId::ComponentAnnotation,
            layer_annotation(ANNOTATION_COMPONENT_VERSION),
            "a SemVer 2.0 version (without `v`) on the layer or the manifest (found on neither)",
        )),
        Some(found) => {
            // margot writes the annotation in its OCI-tag form too (`1.4.2_build.7`):
            // `_` cannot occur in SemVer, so it can only stand for `+`.
            let version = found.value.replacen('_', "+", 1);
            let version = version.as_str();
            if !is_semver(version) {
                out.push(
                    Violation::new(
                        RuleId::ComponentVersion,
                        found.path.clone(),
                        "a SemVer 2.0 version without a leading `v`",
                    )
                    .with_value(value(&found.value)),
                );
            }
            if let Some(tag) = reference
                .as_tag()
                .filter(|t| !super::package::tag_matches_version(t, version))
            {
                out.push(
                    Violation::new(
                        RuleId::ComponentVersion,
                        FieldPath::root().key("tag"),
                        format!(
                            "the tag {:?} ({ANNOTATION_COMPONENT_VERSION} at {}{})",
                            version.replace('+', "_"),
                            found.path,
                            if version.contains('+') {
                                ", `+` written as `_`"
                            } else {
                                ""
                            }
                        ),
                    )
                    .with_value(value(tag)),
                );
            }
            if let Some(oci) = layer
                .annotations
                .get(ANNOTATION_VERSION)
                .filter(|o| *o != version && **o != found.value)
            {
                out.push(
                    Violation::new(
                        RuleId::ComponentVersion,
                        layer_annotation(ANNOTATION_VERSION),
                        format!(
                            "{version:?} (equal to {ANNOTATION_COMPONENT_VERSION} at {})",
                            found.path
                        ),
                    )
                    .with_value(value(oci)),
                );
            }
        }
    }
    NextStep::ComposeArchive(layer.clone())
}

/// Helm chart manifest rules (as Helm itself pushes them): Helm config, exactly one
/// chart layer, optionally one provenance layer.
pub(crate) fn check_helm_manifest(m: &Manifest, out: &mut Report) -> NextStep {
    check_oci_header(m, out);
    let root = FieldPath::root();
    if m.config.as_ref().map(|c| c.media_type.as_str()) != Some(HELM_CONFIG_MEDIA_TYPE) {
        out.push(Violation::new(
            RuleId::ManifestConfig,
            root.key("config"),
            format!("a config of mediaType {HELM_CONFIG_MEDIA_TYPE}"),
        ));
    }
    let charts = m
        .layers
        .iter()
        .filter(|l| l.media_type == HELM_CHART_MEDIA_TYPE)
        .count();
    if charts != 1 {
        out.push(
            Violation::new(
                RuleId::ComponentLayer,
                root.key("layers"),
                format!("exactly one layer of mediaType {HELM_CHART_MEDIA_TYPE}"),
            )
            .with_value(serde_json::Value::from(charts)),
        );
    }
    for (i, l) in m.layers.iter().enumerate() {
        if l.media_type != HELM_CHART_MEDIA_TYPE && l.media_type != HELM_PROVENANCE_MEDIA_TYPE {
            out.push(
                Violation::new(
                    RuleId::ManifestLayerMediaType,
                    root.key("layers").index(i).key("mediaType"),
                    format!("{HELM_CHART_MEDIA_TYPE} or {HELM_PROVENANCE_MEDIA_TYPE}"),
                )
                .with_value(value(&l.media_type)),
            );
        }
    }
    match &m.config {
        Some(c) if c.media_type == HELM_CONFIG_MEDIA_TYPE => NextStep::HelmConfig(c.clone()),
        _ => NextStep::Done,
    }
}

/// The chart's config (`Chart.yaml` as JSON): its `version` is what the tag must say,
/// as `helm push` tags it (`+` written as `_`).
pub fn check_helm_config(
    config: &crate::margo::manifest::Descriptor,
    blob: &[u8],
    reference: &Reference,
    out: &mut Report,
) {
    if let Err(e) = config.digest.verify(blob, Some(config.size)) {
        out.push(
            Violation::new(
                RuleId::BlobDigest,
                FieldPath::root().key("config"),
                format!("the blob the descriptor names ({e})"),
            )
            .with_value(value(&config.digest.to_string())),
        );
        return;
    }
    let version = serde_json::from_slice::<serde_json::Value>(blob)
        .ok()
        .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
    let Some(version) = version else {
        out.push(Violation::new(
            RuleId::ManifestConfig,
            FieldPath::root().key("config"),
            "a Helm chart config (JSON) with a string `version`",
        ));
        return;
    };
    if let Some(tag) = reference
        .as_tag()
        .filter(|t| !super::package::tag_matches_version(t, &version))
    {
        out.push(
            Violation::new(
                RuleId::ComponentVersion,
                FieldPath::root().key("tag"),
                format!(
                    "the tag {:?} (the chart's version {version:?}{})",
                    version.replace('+', "_"),
                    if version.contains('+') {
                        ", `+` written as `_`"
                    } else {
                        ""
                    }
                ),
            )
            .with_value(value(tag)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{check_manifest, ManifestOptions, RouteKind};
    use super::*;
    use crate::margo::manifest::descriptor::OCI_IMAGE_MANIFEST;
    use serde_json::json;

    fn compose_manifest() -> serde_json::Value {
        let mut layer = desc(COMPOSE_LAYER_MEDIA_TYPE, b"tgz", Some("app.tar.gz"));
        layer["annotations"]["org.margo.component.type"] = json!("compose");
        layer["annotations"]["org.margo.component.version"] = json!("1.2.3");
        layer["annotations"]["org.opencontainers.image.version"] = json!("1.2.3");
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MANIFEST,
            "artifactType": COMPOSE_ARTIFACT_TYPE,
            "config": empty_config(),
            "layers": [layer],
        })
    }

    fn helm_manifest() -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MANIFEST,
            "config": desc(HELM_CONFIG_MEDIA_TYPE, b"{}", None),
            "layers": [desc(HELM_CHART_MEDIA_TYPE, b"chart", None)],
        })
    }

    type Edit = fn(&mut serde_json::Value);
    type Case<'a> = (&'a str, Edit, &'a str, Option<(RuleId, &'a str)>);

    fn run(base: fn() -> serde_json::Value, cases: Vec<Case<'_>>) {
        for (name, edit, tag, want) in cases {
            let mut m = base();
            edit(&mut m);
            let bytes = serde_json::to_vec(&m).unwrap_or_default();
            let c = check_manifest(
                &bytes,
                RouteKind::Component,
                &reference(tag),
                &ManifestOptions::default(),
            );
            c.report.assert_expected(name, want);
        }
    }

    /// margot and the specification's `oras push --annotation` example: the component
    /// annotations on the manifest only.
    fn on_manifest(m: &mut serde_json::Value) {
        let mut ann = serde_json::Map::new();
        for k in ["org.margo.component.type", "org.margo.component.version"] {
            if let Some(v) = m["layers"][0]["annotations"]
                .as_object_mut()
                .and_then(|o| o.remove(k))
            {
                ann.insert(k.to_owned(), v);
            }
        }
        m["annotations"] = serde_json::Value::Object(ann);
    }

    #[test]
    fn component_annotations_on_the_manifest_or_the_layer() {
        run(
            compose_manifest,
            vec![
                ("on the manifest only", on_manifest, "1.2.3", None),
                (
                    "on both, agreeing",
                    |m| {
                        m["annotations"] = m["layers"][0]["annotations"].clone();
                    },
                    "1.2.3",
                    None,
                ),
                (
                    "on the manifest, tag differs",
                    on_manifest,
                    "1.2.4",
                    Some((RuleId::ComponentVersion, "tag")),
                ),
                (
                    "manifest type wrong",
                    |m| {
                        on_manifest(m);
                        m["annotations"]["org.margo.component.type"] = json!("helm");
                    },
                    "1.2.3",
                    Some((
                        RuleId::ComponentAnnotation,
                        "annotations[\"org.margo.component.type\"]",
                    )),
                ),
            ],
        );
        // Disagreement: the layer wins and the violation names both places.
        let mut m = compose_manifest();
        m["annotations"] = json!({"org.margo.component.version": "2.0.0"});
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let c = check_manifest(
            &bytes,
            RouteKind::Component,
            &reference("1.2.3"),
            &ManifestOptions::default(),
        );
        let [v] = c.report.violations() else {
            panic!("one violation: {:?}", c.report.violations());
        };
        assert_eq!(v.rule, RuleId::ComponentAnnotation);
        assert_eq!(
            v.path.to_string(),
            "annotations[\"org.margo.component.version\"]"
        );
        assert!(v.message.contains("got \"2.0.0\""), "{}", v.message);
        assert!(
            v.message.contains(
                "\"1.2.3\", the value at layers[0].annotations[\"org.margo.component.version\"]"
            ),
            "{}",
            v.message
        );
        assert!(v.message.contains("layer's value wins"), "{}", v.message);
        // The layer's value is the one checked against the tag.
        assert!(!c.report.has_rule(RuleId::ComponentVersion));
        // Neither place: the message says so.
        let mut m = compose_manifest();
        m["layers"][0]["annotations"]
            .as_object_mut()
            .map(|o| o.remove("org.margo.component.version"));
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let c = check_manifest(
            &bytes,
            RouteKind::Component,
            &reference("1.2.3"),
            &ManifestOptions::default(),
        );
        assert!(
            c.report
                .violations()
                .iter()
                .any(|v| v.message.contains("found on neither")),
            "{:?}",
            c.report.violations()
        );
    }

    #[test]
    fn build_metadata_tags_use_underscore() {
        let with_build = |m: &mut serde_json::Value| {
            m["layers"][0]["annotations"]["org.margo.component.version"] = json!("1.4.2+build.7");
            m["layers"][0]["annotations"]["org.opencontainers.image.version"] =
                json!("1.4.2+build.7");
        };
        run(
            compose_manifest,
            vec![
                ("underscore tag", with_build, "1.4.2_build.7", None),
                (
                    "annotation in tag form, as margot writes it",
                    |m| {
                        on_manifest(m);
                        m["annotations"]["org.margo.component.version"] = json!("1.4.2_build.7");
                        m["layers"][0]["annotations"]
                            .as_object_mut()
                            .map(|o| o.remove("org.opencontainers.image.version"));
                    },
                    "1.4.2_build.7",
                    None,
                ),
                (
                    "two underscores are no SemVer",
                    |m| {
                        m["layers"][0]["annotations"]["org.margo.component.version"] =
                            json!("1.4.2_a_b")
                    },
                    "1.4.2_a_b",
                    Some((
                        RuleId::ComponentVersion,
                        "layers[0].annotations[\"org.margo.component.version\"]",
                    )),
                ),
                (
                    "tag without build",
                    with_build,
                    "1.4.2",
                    Some((RuleId::ComponentVersion, "tag")),
                ),
                (
                    "other build",
                    with_build,
                    "1.4.2_build.8",
                    Some((RuleId::ComponentVersion, "tag")),
                ),
            ],
        );
    }

    #[test]
    fn semver_table() {
        for (s, want) in [
            ("1.2.3", true),
            ("1.2.3-rc.1+build.5", true),
            ("v1.2.3", false),
            ("1.2", false),
            ("01.2.3", false),
            ("", false),
        ] {
            assert_eq!(is_semver(s), want, "{s}");
        }
    }

    #[test]
    fn compose_manifest_rules() {
        run(
            compose_manifest,
            vec![
                ("valid", |_| {}, "1.2.3", None),
                (
                    "digest push",
                    |_| {},
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    None,
                ),
                (
                    "two layers",
                    |m| {
                        let l = m["layers"][0].clone();
                        if let Some(a) = m["layers"].as_array_mut() {
                            a.push(l);
                        }
                    },
                    "1.2.3",
                    Some((RuleId::ComponentLayer, "layers")),
                ),
                (
                    "no layers",
                    |m| m["layers"] = json!([]),
                    "1.2.3",
                    Some((RuleId::ComponentLayer, "layers")),
                ),
                (
                    "layer media type",
                    |m| m["layers"][0]["mediaType"] = json!("application/gzip"),
                    "1.2.3",
                    Some((RuleId::ComponentLayer, "layers[0].mediaType")),
                ),
                (
                    "type missing",
                    |m| {
                        m["layers"][0]["annotations"]
                            .as_object_mut()
                            .map(|o| o.remove("org.margo.component.type"));
                    },
                    "1.2.3",
                    Some((
                        RuleId::ComponentAnnotation,
                        "layers[0].annotations[\"org.margo.component.type\"]",
                    )),
                ),
                (
                    "type wrong",
                    |m| m["layers"][0]["annotations"]["org.margo.component.type"] = json!("helm"),
                    "1.2.3",
                    Some((
                        RuleId::ComponentAnnotation,
                        "layers[0].annotations[\"org.margo.component.type\"]",
                    )),
                ),
                (
                    "version missing",
                    |m| {
                        m["layers"][0]["annotations"]
                            .as_object_mut()
                            .map(|o| o.remove("org.margo.component.version"));
                    },
                    "1.2.3",
                    Some((
                        RuleId::ComponentAnnotation,
                        "layers[0].annotations[\"org.margo.component.version\"]",
                    )),
                ),
                (
                    "version with v",
                    |m| {
                        m["layers"][0]["annotations"]["org.margo.component.version"] =
                            json!("v1.2.3")
                    },
                    "v1.2.3",
                    Some((
                        RuleId::ComponentVersion,
                        "layers[0].annotations[\"org.margo.component.version\"]",
                    )),
                ),
                (
                    "tag differs",
                    |_| {},
                    "1.2.4",
                    Some((RuleId::ComponentVersion, "tag")),
                ),
                (
                    "oci version differs",
                    |m| {
                        m["layers"][0]["annotations"]["org.opencontainers.image.version"] =
                            json!("1.2.4")
                    },
                    "1.2.3",
                    Some((
                        RuleId::ComponentVersion,
                        "layers[0].annotations[\"org.opencontainers.image.version\"]",
                    )),
                ),
                (
                    "oci version absent ok",
                    |m| {
                        m["layers"][0]["annotations"]
                            .as_object_mut()
                            .map(|o| o.remove("org.opencontainers.image.version"));
                    },
                    "1.2.3",
                    None,
                ),
                (
                    "schemaVersion",
                    |m| m["schemaVersion"] = json!(3),
                    "1.2.3",
                    Some((RuleId::ManifestSchemaVersion, "schemaVersion")),
                ),
            ],
        );
    }

    #[test]
    fn compose_asks_for_archive() {
        let bytes = serde_json::to_vec(&compose_manifest()).unwrap_or_default();
        let c = check_manifest(
            &bytes,
            RouteKind::Component,
            &reference("1.2.3"),
            &ManifestOptions::default(),
        );
        assert!(
            matches!(c.next, NextStep::ComposeArchive(ref d) if d.media_type == COMPOSE_LAYER_MEDIA_TYPE)
        );
    }

    #[test]
    fn helm_manifest_rules() {
        run(
            helm_manifest,
            vec![
                ("valid", |_| {}, "1.0.0", None),
                (
                    "with provenance",
                    |m| {
                        let p = desc(HELM_PROVENANCE_MEDIA_TYPE, b"prov", None);
                        if let Some(a) = m["layers"].as_array_mut() {
                            a.push(p);
                        }
                    },
                    "1.0.0",
                    None,
                ),
                (
                    "no chart",
                    |m| m["layers"][0]["mediaType"] = json!(HELM_PROVENANCE_MEDIA_TYPE),
                    "1.0.0",
                    Some((RuleId::ComponentLayer, "layers")),
                ),
                (
                    "foreign layer",
                    |m| {
                        let p = desc("application/octet-stream", b"x", None);
                        if let Some(a) = m["layers"].as_array_mut() {
                            a.push(p);
                        }
                    },
                    "1.0.0",
                    Some((RuleId::ManifestLayerMediaType, "layers[1].mediaType")),
                ),
                (
                    "mediaType",
                    |m| m["mediaType"] = json!("x"),
                    "1.0.0",
                    Some((RuleId::ManifestMediaType, "mediaType")),
                ),
            ],
        );
    }
}

//! Margo Application Package manifests, and the description↔manifest cross-check.

use std::collections::HashMap;

use crate::margo::manifest::descriptor::{Descriptor, Manifest, OCI_EMPTY_JSON};
use crate::margo::manifest::{check_oci_header, value, ManifestOptions, NextStep, Reference};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::margo::resources::{normalize_relative, ResourceKind, ResourceRefs};
use crate::margo::validate::{validate_description, DescriptionCheck, DescriptionLimits};
use crate::oci::digest::EMPTY_JSON_DIGEST;

pub const ARTIFACT_TYPE: &str = "application/vnd.margo.app.v1+json";
pub const DESCRIPTION_MEDIA_TYPE: &str = "application/vnd.margo.app.description.v1+yaml";
const MARGO_APP_PREFIX: &str = "application/vnd.margo.app.";
/// The annotation the specification puts on every resource layer.
pub const ANNOTATION_RESOURCE: &str = "org.margo.app.resource";
/// margot (margo-tooling 0.10) names the `licenseFile` kind `license`.
const MARGOT_LICENSE_KIND: &str = "license";

/// What a layer of a package is, by media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    Description,
    Resource {
        kind: ResourceKind,
        format: String,
    },
    /// `application/vnd.margo.app.<something else>`.
    UnknownMargo(String),
    /// Not a Margo media type.
    Foreign,
}

/// Classifies a layer media type: `application/vnd.margo.app.<kind>.v1+<format>`.
pub fn layer_kind(media_type: &str) -> LayerKind {
    if media_type == DESCRIPTION_MEDIA_TYPE {
        return LayerKind::Description;
    }
    let Some(rest) = media_type.strip_prefix(MARGO_APP_PREFIX) else {
        return LayerKind::Foreign;
    };
    let parsed = rest.split_once(".v1+").and_then(|(kind, format)| {
        // margot's spelling is the same kind; that it deviates is reported on its own.
        let kind = match kind {
            MARGOT_LICENSE_KIND => ResourceKind::LicenseFile,
            k => ResourceKind::parse(k)?,
        };
        let format_ok = !format.is_empty()
            && format
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
        format_ok.then(|| LayerKind::Resource {
            kind,
            format: format.to_owned(),
        })
    });
    parsed.unwrap_or_else(|| LayerKind::UnknownMargo(rest.to_owned()))
}

/// Manifest-only rules of a package. Returns the description layer to fetch when
/// there is exactly one.
pub(crate) fn check_package_manifest(m: &Manifest, out: &mut Report) -> NextStep {
    check_oci_header(m, out);
    let root = FieldPath::root();
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        let v = Violation::new(
            RuleId::ManifestArtifactType,
            root.key("artifactType"),
            ARTIFACT_TYPE,
        );
        out.push(match &m.artifact_type {
            Some(s) => v.with_value(value(s)),
            None => v,
        });
    }
    check_empty_config(m.config.as_ref(), out);

    let mut description: Vec<&Descriptor> = Vec::new();
    let mut titles: HashMap<String, usize> = HashMap::new();
    for (i, layer) in m.layers.iter().enumerate() {
        let at = root.key("layers").index(i);
        match layer_kind(&layer.media_type) {
            LayerKind::Description => description.push(layer),
            LayerKind::Resource { .. } => check_resource_deviations(layer, &at, out),
            LayerKind::UnknownMargo(kind) => out.push(
                Violation::new(
                    RuleId::ManifestLayerKind,
                    at.key("mediaType"),
                    "application/vnd.margo.app.description.v1+yaml or application/vnd.margo.app.{icon|descriptionFile|licenseFile|releaseNotes}.v1+<format>",
                )
                .with_value(value(&format!("{MARGO_APP_PREFIX}{kind}"))),
            ),
            LayerKind::Foreign => out.push(
                Violation::new(
                    RuleId::ManifestLayerMediaType,
                    at.key("mediaType"),
                    "a Margo package layer media type (application/vnd.margo.app.*)",
                )
                .with_value(value(&layer.media_type)),
            ),
        }
        let title_path = at
            .key("annotations")
            .key(super::descriptor::ANNOTATION_TITLE);
        match layer.title() {
            None => out.push(Violation::new(
                RuleId::ManifestLayerTitle,
                title_path,
                "an org.opencontainers.image.title annotation with the file's path in the package",
            )),
            Some(t) => match normalize_relative(t) {
                Err(e) => out.push(
                    Violation::new(
                        RuleId::ManifestLayerTitle,
                        title_path,
                        format!("a safe relative path ({e})"),
                    )
                    .with_value(value(t)),
                ),
                Ok(norm) => {
                    if let Some(first) = titles.get(&norm) {
                        out.push(
                            Violation::new(
                                RuleId::ManifestLayerTitle,
                                title_path,
                                format!("a title not already used by layers[{first}]"),
                            )
                            .with_value(value(t)),
                        );
                    } else {
                        titles.insert(norm, i);
                    }
                }
            },
        }
    }
    if description.len() != 1 {
        out.push(
            Violation::new(
                RuleId::ManifestDescriptionLayer,
                root.key("layers"),
                format!("exactly one layer of mediaType {DESCRIPTION_MEDIA_TYPE}"),
            )
            .with_value(serde_json::Value::from(description.len())),
        );
        return NextStep::Done;
    }
    description
        .first()
        .map_or(NextStep::Done, |d| NextStep::Description((*d).clone()))
}

/// Known deviations of the reference tooling on a resource layer, reported under their
/// own rules (warnings on tolerant routes, see [`crate::margo::admission::Deviations`]).
fn check_resource_deviations(layer: &Descriptor, at: &FieldPath, out: &mut Report) {
    let margot_license = layer
        .media_type
        .strip_prefix(MARGO_APP_PREFIX)
        .and_then(|rest| rest.split_once(".v1+"))
        .is_some_and(|(kind, _)| kind == MARGOT_LICENSE_KIND);
    if margot_license {
        out.push(
            Violation::new(
                RuleId::DeviationLicenseMediaType,
                at.key("mediaType"),
                "application/vnd.margo.app.licenseFile.v1+<format> (the specification's kind; `license` is margot's spelling)",
            )
            .with_value(value(&layer.media_type)),
        );
    }
    if !layer.annotations.contains_key(ANNOTATION_RESOURCE) {
        out.push(Violation::new(
            RuleId::DeviationResourceAnnotation,
            at.key("annotations").key(ANNOTATION_RESOURCE),
            format!("an {ANNOTATION_RESOURCE} annotation on the resource layer"),
        ));
    }
}

/// Whether an OCI tag names a SemVer version. OCI tags cannot hold `+`, so build
/// metadata is written with `_` instead (`1.4.2_build.7` for `1.4.2+build.7`), as Helm
/// and margot do when they push.
pub fn tag_matches_version(tag: &str, version: &str) -> bool {
    tag == version
        || version.split_once('+').is_some_and(|(core, build)| {
            tag.strip_prefix(core)
                .and_then(|t| t.strip_prefix('_'))
                .is_some_and(|t| t == build)
        })
}

fn check_empty_config(config: Option<&Descriptor>, out: &mut Report) {
    let at = FieldPath::root().key("config");
    let expected = format!(
        "the OCI empty descriptor (mediaType {OCI_EMPTY_JSON}, size 2, digest {EMPTY_JSON_DIGEST})"
    );
    let ok = config.is_some_and(|c| {
        c.media_type == OCI_EMPTY_JSON
            && c.size == 2
            && c.digest.is_empty_json()
            && c.data.as_deref().is_none_or(|d| d == "e30=")
    });
    if !ok {
        let v = Violation::new(RuleId::ManifestConfig, at, expected);
        out.push(match config {
            Some(c) => v.with_value(serde_json::to_value(c).unwrap_or_default()),
            None => v,
        });
    }
}

/// The description↔manifest cross-check: each local resource is a layer whose title is
/// its path (after `./` normalisation) and whose media type names the same kind.
pub fn cross_check_resources(m: &Manifest, refs: &ResourceRefs, out: &mut Report) {
    let by_title: HashMap<String, &Descriptor> = m
        .layers
        .iter()
        .filter_map(|l| Some((normalize_relative(l.title()?).ok()?, l)))
        .collect();
    let app_path = FieldPath::root()
        .key("metadata")
        .key("catalog")
        .key("application");
    for r in refs.local() {
        let at = app_path.key(r.kind.as_str());
        let norm = match normalize_relative(&r.reference) {
            Ok(n) => n,
            Err(e) => {
                out.push(
                    Violation::new(
                        RuleId::PackageResourcePath,
                        at,
                        format!("a URL or a safe relative path inside the package ({e})"),
                    )
                    .with_value(value(&r.reference)),
                );
                continue;
            }
        };
        match by_title.get(&norm) {
            None => out.push(
                Violation::new(
                    RuleId::ManifestResourceMissing,
                    at,
                    format!(
                        "a layer titled {norm:?} (application/vnd.margo.app.{}.v1+<format>)",
                        r.kind.as_str()
                    ),
                )
                .with_value(value(&r.reference)),
            ),
            Some(layer) => {
                let kind_ok = matches!(layer_kind(&layer.media_type), LayerKind::Resource { kind, .. } if kind == r.kind);
                if !kind_ok {
                    out.push(
                        Violation::new(
                            RuleId::ManifestResourceKind,
                            at,
                            format!(
                                "layer {norm:?} of mediaType application/vnd.margo.app.{}.v1+<format>",
                                r.kind.as_str()
                            ),
                        )
                        .with_value(value(&layer.media_type)),
                    );
                }
            }
        }
    }
}

/// The tag rule: a tag push must use `metadata.version` or an allowed extra tag.
pub fn check_tag(
    reference: &Reference,
    version: Option<&str>,
    opts: &ManifestOptions,
    out: &mut Report,
) {
    let (Some(tag), Some(version)) = (reference.as_tag(), version) else {
        return;
    };
    if tag_matches_version(tag, version) || opts.extra_tags.iter().any(|t| t == tag) {
        return;
    }
    let mut expected = match version.replace('+', "_") {
        oci if oci != version => {
            format!("the tag {oci:?} (metadata.version {version:?}, `+` written as `_`)")
        }
        _ => format!("the tag {version:?} (metadata.version)"),
    };
    if !opts.extra_tags.is_empty() {
        expected.push_str(&format!(" or one of {}", opts.extra_tags.join(", ")));
    }
    out.push(
        Violation::new(RuleId::ManifestTag, FieldPath::root().key("tag"), expected)
            .with_value(value(tag)),
    );
}

/// Result of the second phase of a package push.
#[derive(Debug, Clone)]
pub struct PackageCheck {
    /// Digest, description, cross-check and tag violations.
    pub report: Report,
    /// The validated description (absent when the blob failed its digest check).
    pub description: Option<DescriptionCheck>,
}

/// Second phase: the description blob, fetched by the digest of `layer`.
///
/// Verifies digest and size first (nothing is parsed from bytes that are not what the
/// manifest names), then validates the description, cross-checks its resources
/// against the manifest's layers, and applies the tag rule.
pub fn check_package_description(
    manifest: &Manifest,
    layer: &Descriptor,
    blob: &[u8],
    reference: &Reference,
    opts: &ManifestOptions,
    limits: &DescriptionLimits,
) -> PackageCheck {
    let mut report = Report::with_cap(limits.max_violations);
    if let Err(e) = layer.digest.verify(blob, Some(layer.size)) {
        report.push(
            Violation::new(
                RuleId::BlobDigest,
                FieldPath::root().key("layers"),
                format!("the blob the descriptor names ({e})"),
            )
            .with_value(value(&layer.digest.to_string())),
        );
        return PackageCheck {
            report,
            description: None,
        };
    }
    let description = validate_description(blob, limits);
    report.extend(description.report.clone());
    if description.document.is_some() {
        cross_check_resources(manifest, &description.resources(), &mut report);
    }
    check_tag(reference, description.version(), opts, &mut report);
    PackageCheck {
        report,
        description: Some(description),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{check_manifest, RouteKind};
    use super::*;
    use serde_json::json;

    #[test]
    fn tag_matches_version_table() {
        for (tag, version, want) in [
            ("1.4.2", "1.4.2", true),
            ("1.4.2_build.7", "1.4.2+build.7", true),
            ("1.4.2-rc.1_b.1", "1.4.2-rc.1+b.1", true),
            ("1.4.2", "1.4.2+build.7", false),
            ("1.4.2_build.8", "1.4.2+build.7", false),
            ("1.4.2_build.7", "1.4.2", false),
            ("1.4.2build.7", "1.4.2+build.7", false),
        ] {
            assert_eq!(
                tag_matches_version(tag, version),
                want,
                "{tag} vs {version}"
            );
        }
    }

    #[test]
    fn margot_deviations_are_reported_under_their_own_rules() {
        let mut m = package_manifest(b"x");
        m["layers"][1] = desc(
            "application/vnd.margo.app.license.v1+plain",
            b"MIT",
            Some("resources/license.txt"),
        );
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let c = check_manifest(
            &bytes,
            RouteKind::App,
            &super::super::testutil::reference("0.1.0"),
            &ManifestOptions::default(),
        );
        let rules: Vec<_> = c
            .report
            .violations()
            .iter()
            .map(|v| (v.rule, v.path.to_string()))
            .collect();
        assert_eq!(
            rules,
            vec![
                (
                    RuleId::DeviationLicenseMediaType,
                    "layers[1].mediaType".to_owned()
                ),
                (
                    RuleId::DeviationResourceAnnotation,
                    "layers[1].annotations[\"org.margo.app.resource\"]".to_owned()
                ),
            ]
        );
        // Only deviations: the description is still fetched and checked.
        assert!(matches!(c.next, NextStep::Description(_)));
        // The kind is understood as licenseFile for the cross-check.
        assert!(matches!(
            layer_kind("application/vnd.margo.app.license.v1+plain"),
            LayerKind::Resource {
                kind: ResourceKind::LicenseFile,
                ..
            }
        ));
    }

    const DESC: &str = include_str!("../../../tests/fixtures/margo/valid-minimal.yaml");

    fn manifest_check(v: &serde_json::Value) -> super::super::ManifestCheck {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        check_manifest(
            &bytes,
            RouteKind::App,
            &reference("0.1.0"),
            &ManifestOptions::default(),
        )
    }

    #[test]
    fn layer_kind_table() {
        let cases = [
            (
                "application/vnd.margo.app.description.v1+yaml",
                LayerKind::Description,
            ),
            (
                "application/vnd.margo.app.icon.v1+png",
                LayerKind::Resource {
                    kind: ResourceKind::Icon,
                    format: "png".into(),
                },
            ),
            (
                "application/vnd.margo.app.licenseFile.v1+pdf",
                LayerKind::Resource {
                    kind: ResourceKind::LicenseFile,
                    format: "pdf".into(),
                },
            ),
            (
                "application/vnd.margo.app.releaseNotes.v1+markdown",
                LayerKind::Resource {
                    kind: ResourceKind::ReleaseNotes,
                    format: "markdown".into(),
                },
            ),
            (
                "application/vnd.margo.app.descriptionFile.v1+plain",
                LayerKind::Resource {
                    kind: ResourceKind::DescriptionFile,
                    format: "plain".into(),
                },
            ),
            (
                "application/vnd.margo.app.banner.v1+png",
                LayerKind::UnknownMargo("banner.v1+png".into()),
            ),
            (
                "application/vnd.margo.app.icon.v2+png",
                LayerKind::UnknownMargo("icon.v2+png".into()),
            ),
            (
                "application/vnd.margo.app.icon.v1+",
                LayerKind::UnknownMargo("icon.v1+".into()),
            ),
            ("application/octet-stream", LayerKind::Foreign),
        ];
        for (mt, want) in cases {
            assert_eq!(layer_kind(mt), want, "{mt}");
        }
    }

    #[test]
    fn package_manifest_rules_table() {
        type Edit = fn(&mut serde_json::Value);
        type Case<'a> = (&'a str, Edit, Option<(RuleId, &'a str)>);
        let cases: Vec<Case<'_>> = vec![
            ("valid", |_| {}, None),
            (
                "schemaVersion",
                |m| m["schemaVersion"] = json!(1),
                Some((RuleId::ManifestSchemaVersion, "schemaVersion")),
            ),
            (
                "mediaType",
                |m| m["mediaType"] = json!("application/vnd.docker.distribution.manifest.v2+json"),
                Some((RuleId::ManifestMediaType, "mediaType")),
            ),
            (
                "artifactType missing",
                |m| {
                    m.as_object_mut().map(|o| o.remove("artifactType"));
                },
                Some((RuleId::ManifestArtifactType, "artifactType")),
            ),
            (
                "config not empty",
                |m| m["config"] = desc("application/vnd.oci.image.config.v1+json", b"{}", None),
                Some((RuleId::ManifestConfig, "config")),
            ),
            (
                "config bad data",
                |m| m["config"]["data"] = json!("e31="),
                Some((RuleId::ManifestConfig, "config")),
            ),
            (
                "config data ok",
                |m| m["config"]["data"] = json!("e30="),
                None,
            ),
            (
                "config missing",
                |m| {
                    m.as_object_mut().map(|o| o.remove("config"));
                },
                Some((RuleId::ManifestConfig, "config")),
            ),
            (
                "no description",
                |m| {
                    m["layers"].as_array_mut().map(|l| l.remove(0));
                },
                Some((RuleId::ManifestDescriptionLayer, "layers")),
            ),
            (
                "two descriptions",
                |m| {
                    let d = desc(
                        "application/vnd.margo.app.description.v1+yaml",
                        b"y",
                        Some("other.yaml"),
                    );
                    if let Some(a) = m["layers"].as_array_mut() {
                        a.push(d);
                    }
                },
                Some((RuleId::ManifestDescriptionLayer, "layers")),
            ),
            (
                "unknown margo kind",
                |m| m["layers"][1]["mediaType"] = json!("application/vnd.margo.app.banner.v1+png"),
                Some((RuleId::ManifestLayerKind, "layers[1].mediaType")),
            ),
            (
                "foreign layer",
                |m| m["layers"][1]["mediaType"] = json!("application/octet-stream"),
                Some((RuleId::ManifestLayerMediaType, "layers[1].mediaType")),
            ),
            (
                "title missing",
                |m| {
                    m["layers"][1]
                        .as_object_mut()
                        .map(|o| o.remove("annotations"));
                },
                Some((
                    RuleId::ManifestLayerTitle,
                    "layers[1].annotations[\"org.opencontainers.image.title\"]",
                )),
            ),
            (
                "title absolute",
                |m| {
                    m["layers"][1]["annotations"]["org.opencontainers.image.title"] =
                        json!("/etc/passwd")
                },
                Some((
                    RuleId::ManifestLayerTitle,
                    "layers[1].annotations[\"org.opencontainers.image.title\"]",
                )),
            ),
            (
                "title dotdot",
                |m| {
                    m["layers"][1]["annotations"]["org.opencontainers.image.title"] =
                        json!("../x.png")
                },
                Some((
                    RuleId::ManifestLayerTitle,
                    "layers[1].annotations[\"org.opencontainers.image.title\"]",
                )),
            ),
            (
                "title duplicate after ./",
                |m| {
                    m["layers"][1]["annotations"]["org.opencontainers.image.title"] =
                        json!("./margo.yaml")
                },
                Some((
                    RuleId::ManifestLayerTitle,
                    "layers[1].annotations[\"org.opencontainers.image.title\"]",
                )),
            ),
            (
                "bad digest",
                |m| m["layers"][1]["digest"] = json!("sha256:xyz"),
                Some((RuleId::ManifestDescriptor, "layers[1].digest")),
            ),
        ];
        for (name, edit, want) in cases {
            let mut m = package_manifest(DESC.as_bytes());
            edit(&mut m);
            let c = manifest_check(&m);
            c.report.assert_expected(name, want);
        }
    }

    fn second_phase(
        desc_text: &str,
        layers_extra: &[serde_json::Value],
        reference: &str,
        opts: &ManifestOptions,
    ) -> PackageCheck {
        let mut m = package_manifest(desc_text.as_bytes());
        if let Some(l) = m["layers"].as_array_mut() {
            l.truncate(1);
            l.extend(layers_extra.iter().cloned());
        }
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let reference = super::super::testutil::reference(reference);
        let c = check_manifest(&bytes, RouteKind::App, &reference, opts);
        let (Some(manifest), NextStep::Description(layer)) = (c.manifest, c.next) else {
            panic!("first phase must pass: {:?}", c.report.violations());
        };
        check_package_description(
            &manifest,
            &layer,
            desc_text.as_bytes(),
            &reference,
            opts,
            &DescriptionLimits::default(),
        )
    }

    fn with_app(resources: &str) -> String {
        DESC.replace(
            "  catalog:\n",
            &format!("  catalog:\n    application:\n{resources}"),
        )
    }

    #[test]
    fn description_phase_table() {
        let icon = desc(
            "application/vnd.margo.app.icon.v1+png",
            b"png",
            Some("resources/icon.png"),
        );
        let license_as_icon = desc(
            "application/vnd.margo.app.icon.v1+png",
            b"l",
            Some("LICENSE.md"),
        );
        let opts = ManifestOptions::default();
        let digest_ref = format!("sha256:{}", "d".repeat(64));
        let extra = ManifestOptions {
            extra_tags: vec!["latest".into()],
            ..ManifestOptions::default()
        };
        /// name, description text, extra layers, reference, options, expectation.
        type Case<'a> = (
            &'a str,
            String,
            Vec<serde_json::Value>,
            &'a str,
            &'a ManifestOptions,
            Option<(RuleId, &'a str)>,
        );
        let build = DESC.replace("version: 0.1.0", "version: 1.4.2+build.7");
        let cases: Vec<Case<'_>> = vec![
            (
                "build metadata as _ in the tag",
                build.clone(),
                vec![],
                "1.4.2_build.7",
                &opts,
                None,
            ),
            (
                "build metadata missing from the tag",
                build.clone(),
                vec![],
                "1.4.2",
                &opts,
                Some((RuleId::ManifestTag, "tag")),
            ),
            (
                "valid",
                with_app("      icon: ./resources/icon.png\n"),
                vec![icon.clone()],
                "0.1.0",
                &opts,
                None,
            ),
            (
                "url resources are not layers",
                with_app("      icon: https://x.org/i.png\n      licenseFile: https://x.org/l\n"),
                vec![],
                "0.1.0",
                &opts,
                None,
            ),
            (
                "digest push skips tag rule",
                DESC.to_owned(),
                vec![],
                &digest_ref,
                &opts,
                None,
            ),
            (
                "resource missing",
                with_app("      icon: ./resources/other.png\n"),
                vec![icon.clone()],
                "0.1.0",
                &opts,
                Some((
                    RuleId::ManifestResourceMissing,
                    "metadata.catalog.application.icon",
                )),
            ),
            (
                "resource kind",
                with_app("      licenseFile: LICENSE.md\n"),
                vec![license_as_icon],
                "0.1.0",
                &opts,
                Some((
                    RuleId::ManifestResourceKind,
                    "metadata.catalog.application.licenseFile",
                )),
            ),
            (
                "resource path escapes",
                with_app("      releaseNotes: ../notes.md\n"),
                vec![],
                "0.1.0",
                &opts,
                Some((
                    RuleId::PackageResourcePath,
                    "metadata.catalog.application.releaseNotes",
                )),
            ),
            (
                "tag differs",
                DESC.to_owned(),
                vec![],
                "0.2.0",
                &opts,
                Some((RuleId::ManifestTag, "tag")),
            ),
            (
                "latest refused by default",
                DESC.to_owned(),
                vec![],
                "latest",
                &opts,
                Some((RuleId::ManifestTag, "tag")),
            ),
            (
                "latest allowed when configured",
                DESC.to_owned(),
                vec![],
                "latest",
                &extra,
                None,
            ),
            (
                "invalid description",
                DESC.replace("id: hello-world", "id: BAD"),
                vec![],
                "0.1.0",
                &opts,
                Some((RuleId::Pattern, "id")),
            ),
        ];
        for (name, text, layers, reference, o, want) in cases {
            let c = second_phase(&text, &layers, reference, o);
            c.report.assert_expected(name, want);
        }
    }

    #[test]
    fn blob_digest_is_verified_before_parsing() {
        let m = package_manifest(DESC.as_bytes());
        let bytes = serde_json::to_vec(&m).unwrap_or_default();
        let reference = reference("0.1.0");
        let c = check_manifest(
            &bytes,
            RouteKind::App,
            &reference,
            &ManifestOptions::default(),
        );
        let (Some(manifest), NextStep::Description(layer)) = (c.manifest, c.next) else {
            panic!("first phase must pass");
        };
        let r = check_package_description(
            &manifest,
            &layer,
            b"tampered",
            &reference,
            &ManifestOptions::default(),
            &DescriptionLimits::default(),
        );
        assert!(r.report.has_rule(RuleId::BlobDigest));
        assert!(r.description.is_none());
    }
}

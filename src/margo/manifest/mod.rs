//! Manifest admission: what a pushed manifest must look like per route kind.
//!
//! The proxy sees a manifest PUT before the upstream stores it. [`check_manifest`] runs
//! every rule that needs only the manifest bytes and says which blob, if any, must be
//! fetched next (the description of a package, the archive of a compose component).
//! The caller fetches it by digest from the upstream and finishes with
//! [`package::check_package_description`] or [`crate::margo::compose::check_archive`].

pub mod component;
pub mod descriptor;
pub mod package;

pub use descriptor::{
    parse_manifest, Descriptor, Manifest, ManifestKind, ManifestParseError,
    DEFAULT_MAX_MANIFEST_BYTES,
};

use serde::Serialize;

use crate::margo::report::{FieldPath, Report, RuleId, Violation};

/// What a repository holds, per the route configuration (shared with the config).
pub use crate::config::RouteKind;

/// The reference a manifest is pushed under: the crate's one OCI reference type.
pub use crate::oci::Reference;

/// Per-route admission options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestOptions {
    /// Image indexes are accepted (not checked further).
    pub allow_index: bool,
    /// Referrers (a `subject`, e.g. signatures, SBOMs) are accepted (not checked further).
    pub allow_referrers: bool,
    /// Tags accepted besides `metadata.version` (e.g. `latest`). Empty by default: the
    /// specification ties each tag to the version of what it points to.
    pub extra_tags: Vec<String>,
    pub max_manifest_bytes: usize,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            allow_index: false,
            allow_referrers: true,
            extra_tags: Vec::new(),
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
        }
    }
}

/// What the manifest turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestClass {
    /// Bytes that are not a JSON object.
    Unparseable,
    Index,
    /// Has a `subject` and is not the route's own artifact type.
    Referrer,
    MargoPackage,
    ComposeComponent,
    HelmChart,
    /// Anything else (only in a passthrough route, or reported as a violation).
    Other,
}

/// The blob the caller must fetch (by digest, from the upstream) to finish the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "descriptor")]
pub enum NextStep {
    /// Nothing more to fetch: the report is final.
    Done,
    /// The `margo.yaml` layer: continue with [`package::check_package_description`].
    Description(Descriptor),
    /// The compose archive layer: continue with [`crate::margo::compose::check_archive`].
    ComposeArchive(Descriptor),
    /// The Helm chart's config: continue with [`component::check_helm_config`].
    HelmConfig(Descriptor),
}

/// Outcome of the manifest-only checks.
#[derive(Debug, Clone)]
pub struct ManifestCheck {
    pub class: ManifestClass,
    /// The parsed manifest (absent when unparseable); also what policies receive.
    pub manifest: Option<Manifest>,
    pub report: Report,
    /// Set only when the manifest-level checks left something worth fetching.
    pub next: NextStep,
}

/// A string as a violation's observed value.
pub(crate) fn value(s: &str) -> serde_json::Value {
    serde_json::Value::String(s.to_owned())
}

/// Rules every Margo manifest shares: OCI image manifest, schema version 2.
pub(crate) fn check_oci_header(m: &Manifest, out: &mut Report) {
    let root = FieldPath::root();
    if m.schema_version != Some(2) {
        let v = Violation::new(
            RuleId::ManifestSchemaVersion,
            root.key("schemaVersion"),
            "2",
        );
        out.push(match m.schema_version {
            Some(n) => v.with_value(n.into()),
            None => v,
        });
    }
    if m.media_type.as_deref() != Some(descriptor::OCI_IMAGE_MANIFEST) {
        let v = Violation::new(
            RuleId::ManifestMediaType,
            root.key("mediaType"),
            descriptor::OCI_IMAGE_MANIFEST,
        );
        out.push(match &m.media_type {
            Some(s) => v.with_value(value(s)),
            None => v,
        });
    }
}

fn classify(m: &Manifest) -> ManifestClass {
    if m.is_index() {
        return ManifestClass::Index;
    }
    match m.artifact_type.as_deref() {
        Some(package::ARTIFACT_TYPE) => ManifestClass::MargoPackage,
        Some(component::COMPOSE_ARTIFACT_TYPE) => ManifestClass::ComposeComponent,
        _ if m
            .config
            .as_ref()
            .is_some_and(|c| c.media_type == component::HELM_CONFIG_MEDIA_TYPE) =>
        {
            ManifestClass::HelmChart
        }
        _ if m.is_referrer() => ManifestClass::Referrer,
        _ => ManifestClass::Other,
    }
}

/// Runs every manifest-level rule for the route.
///
/// Never panics; unparseable bytes give a `margo.manifest.json` violation (except in a
/// passthrough route, which never reports).
pub fn check_manifest(
    bytes: &[u8],
    route: RouteKind,
    reference: &Reference,
    opts: &ManifestOptions,
) -> ManifestCheck {
    let (manifest, problems) = match parse_manifest(bytes, opts.max_manifest_bytes) {
        Ok(p) => p,
        Err(e) => {
            let mut report = Report::new();
            if route != RouteKind::Passthrough {
                report.push(e.to_violation());
            }
            return ManifestCheck {
                class: ManifestClass::Unparseable,
                manifest: None,
                report,
                next: NextStep::Done,
            };
        }
    };
    let class = classify(&manifest);
    let mut report = Report::new();
    let mut next = NextStep::Done;
    match (route, class) {
        (RouteKind::Passthrough, _) => {}
        (_, ManifestClass::Index) => {
            if !opts.allow_index {
                report.push(Violation::new(
                    RuleId::ManifestIndexNotAllowed,
                    FieldPath::root().key("mediaType"),
                    "an image manifest (image indexes are not allowed in this repository)",
                ));
            }
        }
        (_, ManifestClass::Referrer) if opts.allow_referrers => {}
        (_, ManifestClass::Referrer) => report.push(Violation::new(
            RuleId::ManifestReferrerNotAllowed,
            FieldPath::root().key("subject"),
            "no subject (referrers are not allowed in this repository)",
        )),
        (RouteKind::App, _) => {
            report.extend(problems);
            next = package::check_package_manifest(&manifest, &mut report);
        }
        (RouteKind::Component, ManifestClass::HelmChart) => {
            report.extend(problems);
            next = component::check_helm_manifest(&manifest, &mut report);
        }
        (RouteKind::Component, ManifestClass::ComposeComponent) => {
            report.extend(problems);
            next = component::check_compose_manifest(&manifest, reference, &mut report);
        }
        (RouteKind::Component, _) => {
            report.extend(problems);
            report.push(
                Violation::new(
                    RuleId::ManifestArtifactType,
                    FieldPath::root().key("artifactType"),
                    format!(
                        "{} or a Helm chart (config mediaType {})",
                        component::COMPOSE_ARTIFACT_TYPE,
                        component::HELM_CONFIG_MEDIA_TYPE
                    ),
                )
                .with_value(
                    manifest
                        .artifact_type
                        .clone()
                        .map_or(serde_json::Value::Null, serde_json::Value::String),
                ),
            );
        }
    }
    // Known deviations do not stop the check: on a tolerant route they are only warnings,
    // and on a strict one the rest of the report is still worth having.
    if report.violations().iter().any(|v| !v.rule.is_deviation()) || report.omitted() > 0 {
        next = NextStep::Done;
    }
    ManifestCheck {
        class,
        manifest: Some(manifest),
        report,
        next,
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::oci::digest::{sha256_digest, EMPTY_JSON_DIGEST};
    use serde_json::json;

    pub fn desc(media_type: &str, content: &[u8], title: Option<&str>) -> serde_json::Value {
        let mut d = json!({
            "mediaType": media_type,
            "digest": sha256_digest(content),
            "size": content.len(),
        });
        if let Some(t) = title {
            d["annotations"] = json!({ "org.opencontainers.image.title": t });
        }
        d
    }

    /// A reference as the proxy parses it from the request path.
    pub fn reference(s: &str) -> super::Reference {
        super::Reference::parse(s).expect("a valid tag or digest")
    }

    pub fn empty_config() -> serde_json::Value {
        json!({"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY_JSON_DIGEST, "size": 2})
    }

    /// A valid Margo package manifest with a description and an icon layer.
    pub fn package_manifest(description: &[u8]) -> serde_json::Value {
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.margo.app.v1+json",
            "config": empty_config(),
            "layers": [
                desc("application/vnd.margo.app.description.v1+yaml", description, Some("margo.yaml")),
                resource(desc("application/vnd.margo.app.icon.v1+png", b"png", Some("resources/icon.png")), "icon"),
            ]
        })
    }

    /// A resource layer as the specification annotates it.
    pub fn resource(mut d: serde_json::Value, kind: &str) -> serde_json::Value {
        d["annotations"]["org.margo.app.resource"] = json!(kind);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use serde_json::json;

    fn run(v: &serde_json::Value, route: RouteKind, opts: &ManifestOptions) -> ManifestCheck {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        check_manifest(&bytes, route, &reference("1.0.0"), opts)
    }

    #[test]
    fn classification_table() {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let mut signature = json!({
            "schemaVersion": 2, "mediaType": descriptor::OCI_IMAGE_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
            "config": empty_config(), "layers": [],
        });
        signature["subject"] = desc(descriptor::OCI_IMAGE_MANIFEST, b"x", None);
        let helm = json!({
            "schemaVersion": 2, "mediaType": descriptor::OCI_IMAGE_MANIFEST,
            "config": desc(component::HELM_CONFIG_MEDIA_TYPE, b"{}", None),
            "layers": [desc(component::HELM_CHART_MEDIA_TYPE, b"tgz", None)],
        });
        let cases = [
            (package_manifest(b"x"), ManifestClass::MargoPackage),
            (index, ManifestClass::Index),
            (signature, ManifestClass::Referrer),
            (helm, ManifestClass::HelmChart),
            (json!({"schemaVersion": 2}), ManifestClass::Other),
        ];
        for (v, want) in cases {
            assert_eq!(
                run(&v, RouteKind::Passthrough, &ManifestOptions::default()).class,
                want,
                "{v}"
            );
        }
        let c = check_manifest(
            b"nope",
            RouteKind::App,
            &reference("x"),
            &ManifestOptions::default(),
        );
        assert_eq!(c.class, ManifestClass::Unparseable);
        assert!(c.report.has_rule(RuleId::ManifestJson));
    }

    const OCI_INDEX: &str = descriptor::OCI_IMAGE_INDEX;

    #[test]
    fn index_and_referrer_follow_options() {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []});
        let deny = ManifestOptions {
            allow_index: false,
            allow_referrers: false,
            ..ManifestOptions::default()
        };
        let allow = ManifestOptions {
            allow_index: true,
            allow_referrers: true,
            ..ManifestOptions::default()
        };
        assert!(run(&index, RouteKind::App, &deny)
            .report
            .has_rule(RuleId::ManifestIndexNotAllowed));
        assert!(run(&index, RouteKind::App, &allow).report.is_empty());
        let mut sig = json!({"schemaVersion": 2, "mediaType": descriptor::OCI_IMAGE_MANIFEST, "artifactType": "x/y", "layers": []});
        sig["subject"] = desc(descriptor::OCI_IMAGE_MANIFEST, b"x", None);
        assert!(run(&sig, RouteKind::Component, &deny)
            .report
            .has_rule(RuleId::ManifestReferrerNotAllowed));
        assert!(run(&sig, RouteKind::Component, &allow).report.is_empty());
        // Passthrough never reports.
        assert!(run(&index, RouteKind::Passthrough, &deny).report.is_empty());
    }

    #[test]
    fn app_route_asks_for_the_description() {
        let c = run(
            &package_manifest(b"x"),
            RouteKind::App,
            &ManifestOptions::default(),
        );
        assert!(c.report.is_empty(), "{:?}", c.report);
        assert!(matches!(c.next, NextStep::Description(ref d) if d.title() == Some("margo.yaml")));
    }

    #[test]
    fn component_route_refuses_other_artifacts() {
        let c = run(
            &package_manifest(b"x"),
            RouteKind::Component,
            &ManifestOptions::default(),
        );
        assert!(c.report.has_rule(RuleId::ManifestArtifactType));
        assert_eq!(c.next, NextStep::Done);
    }
}

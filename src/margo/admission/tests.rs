use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::margo::manifest::testutil::{package_manifest, reference};
use crate::margo::report::RuleId;
use crate::oci::Digest;

const MINIMAL: &str = include_str!("../../../tests/fixtures/margo/valid-minimal.yaml");

/// Blobs in memory, as an upstream registry would hold them.
#[derive(Default)]
struct Blobs {
    by_digest: HashMap<Digest, Bytes>,
    fetches: AtomicUsize,
}

impl Blobs {
    fn with(blobs: &[&[u8]]) -> Self {
        let mut s = Self::default();
        for b in blobs {
            s.by_digest
                .insert(Digest::sha256_of(b), Bytes::copy_from_slice(b));
        }
        s
    }
}

#[async_trait::async_trait]
impl BlobSource for Blobs {
    async fn fetch(&self, d: &Descriptor) -> Result<Bytes, BlobError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.by_digest
            .get(&d.digest)
            .cloned()
            .ok_or_else(|| BlobError::NotFound {
                digest: d.digest.clone(),
            })
    }
}

fn route(kind: RouteKind, mode: AdmissionMode) -> RoutePolicy {
    RoutePolicy {
        mode,
        ..RoutePolicy::default_for(kind, Deviations::Tolerant)
    }
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

#[tokio::test]
async fn valid_package_is_accepted_with_its_description() {
    let m = bytes(&package_manifest(MINIMAL.as_bytes()));
    let blobs = Blobs::with(&[MINIMAL.as_bytes(), b"png"]);
    let d = admit(
        &m,
        &reference("0.1.0"),
        &route(RouteKind::App, AdmissionMode::Enforce),
        &blobs,
        &AdmissionLimits::default(),
    )
    .await
    .expect("blobs present");
    assert_eq!(d.verdict, Verdict::Accept, "{:?}", d.report.violations());
    assert!(d.description.is_some());
    assert_eq!(blobs.fetches.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn mode_decides_between_reject_audit_and_unchecked() {
    let m = bytes(&package_manifest(MINIMAL.as_bytes()));
    let blobs = Blobs::with(&[MINIMAL.as_bytes()]);
    let limits = AdmissionLimits::default();
    let bad_tag = reference("latest");
    for (r, want) in [
        (
            route(RouteKind::App, AdmissionMode::Enforce),
            Verdict::Reject,
        ),
        (route(RouteKind::App, AdmissionMode::Audit), Verdict::Audit),
        (
            route(RouteKind::App, AdmissionMode::Off),
            Verdict::Unchecked,
        ),
        (
            route(RouteKind::Passthrough, AdmissionMode::Enforce),
            Verdict::Unchecked,
        ),
    ] {
        let d = admit(&m, &bad_tag, &r, &blobs, &limits).await.expect("ok");
        assert_eq!(d.verdict, want, "{r:?}");
        if want == Verdict::Reject || want == Verdict::Audit {
            assert!(d.report.has_rule(RuleId::ManifestTag));
        }
    }
}

#[tokio::test]
async fn missing_and_oversized_blobs_are_errors_not_accepts() {
    let m = bytes(&package_manifest(MINIMAL.as_bytes()));
    let r = route(RouteKind::App, AdmissionMode::Audit);
    let none = Blobs::default();
    let e = admit(
        &m,
        &reference("0.1.0"),
        &r,
        &none,
        &AdmissionLimits::default(),
    )
    .await;
    assert!(matches!(e, Err(BlobError::NotFound { .. })), "{e:?}");

    let blobs = Blobs::with(&[MINIMAL.as_bytes()]);
    let limits = AdmissionLimits {
        max_blob_bytes: 10,
        ..AdmissionLimits::default()
    };
    let e = admit(&m, &reference("0.1.0"), &r, &blobs, &limits).await;
    assert!(
        matches!(e, Err(BlobError::TooLarge { cap: 10, .. })),
        "{e:?}"
    );
    assert_eq!(
        blobs.fetches.load(Ordering::Relaxed),
        0,
        "an oversized descriptor is refused before reading"
    );
}

#[tokio::test]
async fn a_blob_that_is_not_what_the_descriptor_names_is_a_violation() {
    let m = bytes(&package_manifest(MINIMAL.as_bytes()));
    let mut blobs = Blobs::default();
    blobs.by_digest.insert(
        Digest::sha256_of(MINIMAL.as_bytes()),
        Bytes::from_static(b"something else"),
    );
    let d = admit(
        &m,
        &reference("0.1.0"),
        &route(RouteKind::App, AdmissionMode::Enforce),
        &blobs,
        &AdmissionLimits::default(),
    )
    .await
    .expect("fetched");
    assert_eq!(d.verdict, Verdict::Reject);
    assert!(d.report.has_rule(RuleId::BlobDigest));
}

#[test]
fn warning_headers_are_rfc_9111_warn_values_of_printable_ascii() {
    let mut warnings = Report::new();
    warnings.push(
        crate::margo::report::Violation::new(
            RuleId::DeviationLicenseMediaType,
            crate::margo::report::FieldPath::root()
                .key("layers")
                .index(1),
            "x",
        )
        .with_value(json!("a\"b\\c\né")),
    );
    let d = Decision {
        warnings,
        ..Decision::unchecked()
    };
    let h = warning_headers(&d);
    assert_eq!(h.len(), 1);
    let v = &h[0];
    assert!(
        v.starts_with("299 - \"margo.deviation.license-media-type at layers[1]"),
        "{v}"
    );
    assert!(v.ends_with('"'), "{v}");
    assert!(v.bytes().all(|b| (b' '..=b'~').contains(&b)), "{v}");
    assert!(http::HeaderValue::from_str(v).is_ok());
    // Quotes inside are escaped, so the quoted-string ends only at the end.
    let inner = &v[7..v.len() - 1];
    let mut escaped = false;
    for c in inner.chars() {
        assert!(escaped || c != '"', "unescaped quote in {v}");
        escaped = !escaped && c == '\\';
    }
}

/// A package as margot 0.10 builds it: the licence as `license.v1+plain`, resource
/// layers without `org.margo.app.resource`.
fn margot_style_package() -> (Vec<u8>, Blobs) {
    use crate::margo::manifest::testutil::desc;
    let text = MINIMAL.replace(
        "  catalog:\n",
        "  catalog:\n    application:\n      licenseFile: resources/license.txt\n",
    );
    let mut m = package_manifest(text.as_bytes());
    m["layers"][1] = desc(
        "application/vnd.margo.app.license.v1+plain",
        b"MIT",
        Some("resources/license.txt"),
    );
    let blobs = Blobs::with(&[text.as_bytes(), b"MIT"]);
    (bytes(&m), blobs)
}

#[tokio::test]
async fn deviations_warn_on_tolerant_routes_and_refuse_on_strict_ones() {
    let (m, blobs) = margot_style_package();
    let limits = AdmissionLimits::default();
    let deviations = [
        RuleId::DeviationLicenseMediaType,
        RuleId::DeviationResourceAnnotation,
    ];
    let tolerant = RoutePolicy::default_for(RouteKind::App, Deviations::Tolerant);
    let d = admit(&m, &reference("0.1.0"), &tolerant, &blobs, &limits)
        .await
        .expect("blobs");
    assert_eq!(d.verdict, Verdict::Accept, "{:?}", d.report.violations());
    assert_eq!(d.warnings.rule_ids(), deviations.to_vec());
    assert!(d.description.is_some(), "the description was still checked");
    assert_eq!(warning_headers(&d).len(), 2);

    let strict = RoutePolicy::default_for(RouteKind::App, Deviations::Strict);
    let d = admit(&m, &reference("0.1.0"), &strict, &blobs, &limits)
        .await
        .expect("blobs");
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.report.rule_ids(), deviations.to_vec());
    assert!(d.warnings.is_empty());
    assert!(warning_headers(&d).is_empty());
}

#[tokio::test]
async fn deviations_do_not_hide_real_violations() {
    let (m, blobs) = margot_style_package();
    let tolerant = RoutePolicy::default_for(RouteKind::App, Deviations::Tolerant);
    let d = admit(
        &m,
        &reference("9.9.9"),
        &tolerant,
        &blobs,
        &AdmissionLimits::default(),
    )
    .await
    .expect("blobs");
    assert_eq!(d.verdict, Verdict::Reject);
    assert_eq!(d.report.rule_ids(), vec![RuleId::ManifestTag]);
    assert_eq!(d.warnings.len(), 2);
}

/// The same package through both paths: an upstream-like source in memory and an OCI
/// layout on disk read by `validate`; the reports must be the same.
#[test]
fn validate_and_push_report_the_same() {
    use crate::margo::offline::{validate_path, OfflineOptions};
    let (m, blobs) = margot_style_package();
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |b: &[u8]| {
        let d = Digest::sha256_of(b);
        let p = dir.path().join("blobs/sha256").join(d.encoded());
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b).expect("write");
        d
    };
    for b in blobs.by_digest.values() {
        put(b);
    }
    let md = put(&m);
    std::fs::write(
        dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("write");
    for (tag, deviations) in [
        ("0.1.0", Deviations::Tolerant),
        ("0.1.0", Deviations::Strict),
        ("2.0.0", Deviations::Tolerant),
    ] {
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": m.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}}]});
        std::fs::write(dir.path().join("index.json"), bytes(&index)).expect("write");
        let offline = validate_path(
            dir.path(),
            &OfflineOptions {
                deviations,
                ..OfflineOptions::default()
            },
        );
        let [finding] = offline.findings.as_slice() else {
            panic!("one finding: {offline:?}")
        };
        let pushed = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(admit(
                &m,
                &reference(tag),
                &RoutePolicy::default_for(RouteKind::App, deviations),
                &blobs,
                &AdmissionLimits::default(),
            ))
            .expect("blobs");
        assert_eq!(finding.report, pushed.report, "{tag} {deviations:?}");
        assert_eq!(finding.warnings, pushed.warnings, "{tag} {deviations:?}");
        assert_eq!(offline.exit_code() == 0, pushed.verdict == Verdict::Accept);
    }
}

#[tokio::test]
async fn helm_chart_tags_follow_the_chart_version_with_build_metadata() {
    use crate::margo::manifest::component::{HELM_CHART_MEDIA_TYPE, HELM_CONFIG_MEDIA_TYPE};
    use crate::margo::manifest::testutil::desc;
    let config = br#"{"name":"hello","version":"1.4.2+build.7","apiVersion":"v2"}"#;
    let m = bytes(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc(HELM_CONFIG_MEDIA_TYPE, config, None),
        "layers": [desc(HELM_CHART_MEDIA_TYPE, b"chart", None)],
    }));
    let blobs = Blobs::with(&[config]);
    let r = RoutePolicy::default_for(RouteKind::Component, Deviations::Tolerant);
    let limits = AdmissionLimits::default();
    let ok = admit(&m, &reference("1.4.2_build.7"), &r, &blobs, &limits)
        .await
        .expect("blobs");
    assert_eq!(ok.verdict, Verdict::Accept, "{:?}", ok.report.violations());
    let bad = admit(&m, &reference("1.4.2"), &r, &blobs, &limits)
        .await
        .expect("blobs");
    assert_eq!(bad.report.rule_ids(), vec![RuleId::ComponentVersion]);
    assert!(bad.report.violations()[0]
        .message
        .contains("\"1.4.2_build.7\""));
}

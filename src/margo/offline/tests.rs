use std::fs;
use std::path::Path;

use serde_json::json;

use super::*;
use crate::margo::compose::testutil::{archive, valid as valid_archive, E};
use crate::margo::manifest::component::{COMPOSE_ARTIFACT_TYPE, COMPOSE_LAYER_MEDIA_TYPE};
use crate::margo::manifest::testutil::{desc, empty_config, package_manifest};
use crate::oci::digest::sha256_digest;

const MINIMAL: &str = include_str!("../../../tests/fixtures/margo/valid-minimal.yaml");
const RICH: &str = include_str!("../../../tests/fixtures/margo/valid-rich.yaml");

fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

fn write(p: &Path, bytes: &[u8]) {
    if let Some(parent) = p.parent() {
        let _ = fs::create_dir_all(parent);
    }
    if let Err(e) = fs::write(p, bytes) {
        panic!("write {}: {e}", p.display());
    }
}

fn run(p: &Path) -> Outcome {
    validate_path(p, &OfflineOptions::default())
}

fn rules(o: &Outcome) -> Vec<RuleId> {
    o.findings
        .iter()
        .flat_map(|f| f.report.violations().iter().map(|v| v.rule))
        .collect()
}

#[test]
fn description_files() {
    let d = tmp();
    let good = d.path().join("margo.yaml");
    write(&good, RICH.as_bytes());
    let o = run(&good);
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));
    assert_eq!(o.kind, Some(InputKind::Description));

    let bad = d.path().join("bad.yaml");
    write(
        &bad,
        MINIMAL.replace("id: hello-world", "id: BAD").as_bytes(),
    );
    let o = run(&bad);
    assert_eq!(o.exit_code(), 1);
    assert_eq!(rules(&o), vec![RuleId::Pattern]);

    let o = run(&d.path().join("nope.yaml"));
    assert_eq!(o.exit_code(), 2);
    assert!(o.error.is_some());
}

#[test]
fn package_directories() {
    let d = tmp();
    let desc_text = MINIMAL.replace(
        "  catalog:\n",
        "  catalog:\n    application:\n      icon: ./resources/icon.png\n      licenseFile: https://x.org/LICENSE\n",
    );
    write(&d.path().join("margo.yaml"), desc_text.as_bytes());
    let o = run(d.path());
    assert_eq!(o.exit_code(), 1);
    assert_eq!(rules(&o), vec![RuleId::PackageResourceMissing]);

    write(&d.path().join("resources/icon.png"), b"png");
    let o = run(d.path());
    assert_eq!(o.kind, Some(InputKind::PackageDirectory));
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));

    let empty = tmp();
    assert_eq!(run(empty.path()).exit_code(), 2);
}

#[test]
fn compose_archives() {
    let d = tmp();
    let good = d.path().join("app.tar.gz");
    write(&good, &valid_archive());
    let o = run(&good);
    assert_eq!(o.kind, Some(InputKind::ComposeArchive));
    assert_eq!(o.exit_code(), 0);
    let bad = d.path().join("bad.tgz");
    write(
        &bad,
        &archive(&[E::File("app/docker-compose.yml", b"x", 0o644)]),
    );
    let o = run(&bad);
    assert_eq!(o.exit_code(), 1);
    assert!(rules(&o).contains(&RuleId::ComposeFile));
}

fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let d = sha256_digest(bytes);
    let hex = d.trim_start_matches("sha256:");
    write(&layout.join("blobs/sha256").join(hex), bytes);
    d
}

fn layout_with(manifest: &serde_json::Value, tag: Option<&str>) -> tempfile::TempDir {
    let d = tmp();
    write(
        &d.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    put_blob(d.path(), b"{}");
    let mbytes = serde_json::to_vec(manifest).unwrap_or_default();
    let mdigest = put_blob(d.path(), &mbytes);
    let mut entry = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": mdigest,
        "size": mbytes.len(),
    });
    if let Some(t) = tag {
        entry["annotations"] = json!({ "org.opencontainers.image.ref.name": t });
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [entry]});
    write(
        &d.path().join("index.json"),
        &serde_json::to_vec(&index).unwrap_or_default(),
    );
    d
}

#[test]
fn oci_layout_packages() {
    let m = package_manifest(MINIMAL.as_bytes());
    let d = layout_with(&m, Some("0.1.0"));
    put_blob(d.path(), MINIMAL.as_bytes());
    put_blob(d.path(), b"png");
    let o = run(d.path());
    assert_eq!(o.kind, Some(InputKind::OciLayout));
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));

    let d = layout_with(&m, Some("latest"));
    put_blob(d.path(), MINIMAL.as_bytes());
    let o = run(d.path());
    assert_eq!(o.exit_code(), 1);
    assert_eq!(rules(&o), vec![RuleId::ManifestTag]);

    // Description blob absent from the layout.
    let d = layout_with(&m, None);
    let o = run(d.path());
    assert_eq!(rules(&o), vec![RuleId::BlobDigest]);

    let d = tmp();
    write(
        &d.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    assert_eq!(run(d.path()).exit_code(), 2);
}

#[test]
fn oci_layout_compose_component() {
    let tgz = valid_archive();
    let mut layer = desc(COMPOSE_LAYER_MEDIA_TYPE, &tgz, Some("app.tar.gz"));
    layer["annotations"]["org.margo.component.type"] = json!("compose");
    layer["annotations"]["org.margo.component.version"] = json!("1.0.0");
    let m = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": COMPOSE_ARTIFACT_TYPE,
        "config": empty_config(),
        "layers": [layer],
    });
    let d = layout_with(&m, Some("1.0.0"));
    put_blob(d.path(), &tgz);
    let o = run(d.path());
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));
}

#[test]
fn renderers() {
    let d = tmp();
    let bad = d.path().join("margo.yaml");
    write(
        &bad,
        MINIMAL
            .replace("kind: ApplicationDescription", "kind: X")
            .as_bytes(),
    );
    let o = run(&bad);
    let human = render(&o, OutputFormat::Human);
    assert!(
        human.contains("FAIL  margo.yaml: 1 violation(s)"),
        "{human}"
    );
    assert!(human.contains("margo.equals at kind"), "{human}");
    assert!(human.contains("(line 2, column 7)"), "{human}");
    let j: serde_json::Value =
        serde_json::from_str(&render(&o, OutputFormat::Json)).unwrap_or_default();
    assert_eq!(j["valid"], json!(false));
    assert_eq!(j["violations"], json!(1));
    assert_eq!(
        j["findings"][0]["report"]["violations"][0]["rule"],
        json!("margo.equals")
    );
    assert_eq!(
        j["findings"][0]["report"]["violations"][0]["path"],
        json!("kind")
    );
    let e = run(&d.path().join("missing"));
    assert!(render(&e, OutputFormat::Human).starts_with("error: "));
}

#[test]
fn margot_project_and_build_output_are_recognised() {
    let d = tmp();
    write(
        &d.path().join("margo.yaml"),
        b"apiVersion: margo.tooling/v1\nid: hello\nname: hello\ndescription: x\nversion: 0.1.0\ncompose:\n  directory: compose\n  version: 0.1.0\n",
    );
    let desc_text = MINIMAL.replace(
        "  catalog:\n",
        "  catalog:\n    application:\n      licenseFile: resources/license.txt\n",
    );
    write(&d.path().join("margo/app.yaml"), desc_text.as_bytes());
    let o = run(d.path());
    assert_eq!(o.kind, Some(InputKind::MargotProject));
    // The licence is missing: found relative to the description's directory.
    assert_eq!(rules(&o), vec![RuleId::PackageResourceMissing]);
    write(&d.path().join("margo/resources/license.txt"), b"MIT");
    let o = run(d.path());
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));
    assert!(render(&o, OutputFormat::Human).contains("margot project"));

    let o = run(&d.path().join("margo"));
    assert_eq!(o.kind, Some(InputKind::MargotOutput));
    assert_eq!(o.exit_code(), 0, "{}", render(&o, OutputFormat::Human));
    assert!(render(&o, OutputFormat::Human).contains("margot build output"));

    // A description named margo.yaml is still a package directory.
    let p = tmp();
    write(&p.path().join("margo.yaml"), MINIMAL.as_bytes());
    assert_eq!(run(p.path()).kind, Some(InputKind::PackageDirectory));
}

/// validate applies the proxy's admission limits (it used its own before): a description
/// larger than `limits.max_admission_blob_bytes` is refused offline as on push.
#[test]
fn oci_layouts_are_checked_with_the_proxys_limits() {
    let m = package_manifest(MINIMAL.as_bytes());
    let d = layout_with(&m, Some("0.1.0"));
    put_blob(d.path(), MINIMAL.as_bytes());
    put_blob(d.path(), b"png");
    let limits = crate::config::Limits {
        max_admission_blob_bytes: 64,
        ..crate::config::Limits::default()
    };
    let o = validate_path(
        d.path(),
        &OfflineOptions {
            limits: AdmissionLimits::from(&limits),
            ..OfflineOptions::default()
        },
    );
    assert_eq!(rules(&o), vec![RuleId::BlobDigest]);
    let human = render(&o, OutputFormat::Human);
    assert!(
        human.contains("more than the 64 bytes admission reads"),
        "{human}"
    );
}

//! Margo admission on push, with the `oras` Python package against a real docker-registry:
//! valid packages and components go through, invalid ones are refused with every
//! violation in the OCI error body and nothing of them stored upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const APP: &str = "application/vnd.margo.app.v1+json";
const DESCRIPTION: &str = "application/vnd.margo.app.description.v1+yaml";
const COMPOSE: &str = "application/vnd.org.margo.component.compose+json";
const COMPOSE_LAYER: &str = "application/vnd.org.margo.component.compose.tar+gzip";

fn proxy(reg: &Registry) -> Proxy {
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "audited/**", upstream: main, kind: app, mode: audit}}
  - {{match: "components/**", upstream: main, kind: component, mode: enforce}}
  - {{match: "**", upstream: main}}
"#,
        reg.url()
    ))
}

fn fixture(name: &str) -> std::path::PathBuf {
    repo_root().join("tests/fixtures/margo").join(name)
}

/// Runs `oras_tool.py push` and returns its JSON answer (status, body).
fn oras_push(
    host: &str,
    repo: &str,
    tag: &str,
    artifact_type: &str,
    files: &[String],
    annotations: &[&str],
) -> serde_json::Value {
    let mut cmd = Command::new(repo_root().join(".venv/bin/python"));
    cmd.arg(repo_root().join("tests/python/oras_tool.py"))
        .args([
            "push",
            "--registry",
            host,
            "--repo",
            repo,
            "--tag",
            tag,
            "--artifact-type",
            artifact_type,
        ]);
    for f in files {
        cmd.args(["--file", f]);
    }
    for a in annotations {
        cmd.args(["--layer-annotation", a]);
    }
    let out = cmd.output().expect("oras venv (scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The rich example package: margo.yaml plus the four catalog resources it names.
fn rich_package(dir: &Path) -> Vec<String> {
    let res = dir.join("resources");
    std::fs::create_dir_all(&res).unwrap();
    let files = [
        ("ndo-logo.png", "icon.v1+png"),
        ("description.md", "descriptionFile.v1+markdown"),
        ("release-notes.md", "releaseNotes.v1+markdown"),
        ("license.pdf", "licenseFile.v1+pdf"),
    ];
    let mut specs = vec![format!(
        "{}|{DESCRIPTION}|margo.yaml",
        fixture("valid-rich.yaml").display()
    )];
    for (name, kind) in files {
        let p = res.join(name);
        std::fs::write(&p, format!("content of {name}")).unwrap();
        specs.push(format!(
            "{}|application/vnd.margo.app.{kind}|resources/{name}",
            p.display()
        ));
    }
    specs
}

fn upstream_has_tag(reg: &Registry, repo: &str, tag: &str) -> bool {
    http()
        .get(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .status()
        == 200
}

fn errors(answer: &serde_json::Value) -> Vec<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    body["errors"].as_array().unwrap().clone()
}

#[test]
fn valid_package_is_admitted() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let dir = tempfile::tempdir().unwrap();
    let files = rich_package(dir.path());
    let r = oras_push(&p.host(), "apps/northstar/app1", "1.2.1", APP, &files, &[]);
    assert_eq!(r["status"], 201, "{r}");
    assert!(upstream_has_tag(&reg, "apps/northstar/app1", "1.2.1"));
}

#[test]
fn tag_other_than_version_is_refused_and_not_stored() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let dir = tempfile::tempdir().unwrap();
    let files = rich_package(dir.path());
    let r = oras_push(&p.host(), "apps/northstar/app1", "latest", APP, &files, &[]);
    assert_eq!(r["status"], 400, "{r}");
    let errs = errors(&r);
    assert_eq!(errs[0]["code"], "MANIFEST_INVALID");
    assert!(
        errs.iter()
            .any(|e| e["detail"]["rule"] == "margo.manifest.tag"),
        "{errs:?}"
    );
    assert!(!upstream_has_tag(&reg, "apps/northstar/app1", "latest"));
}

#[test]
fn invalid_description_lists_every_violation_with_its_path() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let files = vec![format!(
        "{}|{DESCRIPTION}|margo.yaml",
        fixture("invalid-many.yaml").display()
    )];
    let r = oras_push(&p.host(), "apps/broken", "1.0", APP, &files, &[]);
    assert_eq!(r["status"], 400, "{r}");
    let errs = errors(&r);
    assert!(errs.len() >= 10, "all violations reported: {}", errs.len());
    let rules: Vec<&str> = errs
        .iter()
        .filter_map(|e| e["detail"]["rule"].as_str())
        .collect();
    for rule in [
        "margo.equals",
        "margo.pattern",
        "margo.enum",
        "margo.unknown-field",
    ] {
        assert!(rules.contains(&rule), "{rule} missing from {rules:?}");
    }
    let id = errs
        .iter()
        .find(|e| e["detail"]["path"] == "id")
        .expect("a violation at path `id`");
    assert_eq!(id["detail"]["value"], "Bad_ID");
    assert!(id["message"].as_str().unwrap().contains("margo.pattern"));
    assert!(!upstream_has_tag(&reg, "apps/broken", "1.0"));
}

#[test]
fn wrong_artifact_type_in_an_app_route_is_refused() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.txt");
    std::fs::write(&f, "x").unwrap();
    let r = oras_push(
        &p.host(),
        "apps/other",
        "1.0.0",
        "application/vnd.example",
        &[format!("{}|text/plain|x.txt", f.display())],
        &[],
    );
    assert_eq!(r["status"], 400, "{r}");
    assert!(errors(&r)
        .iter()
        .any(|e| e["detail"]["rule"] == "margo.manifest.artifact-type"));
    // The same artifact is fine where the route is a passthrough.
    let r = oras_push(
        &p.host(),
        "misc/other",
        "1.0.0",
        "application/vnd.example",
        &[format!("{}|text/plain|x.txt", f.display())],
        &[],
    );
    assert_eq!(r["status"], 201, "{r}");
}

#[test]
fn audit_mode_forwards_and_logs() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let dir = tempfile::tempdir().unwrap();
    let files = rich_package(dir.path());
    let r = oras_push(
        &p.host(),
        "audited/app",
        "not-the-version",
        APP,
        &files,
        &[],
    );
    assert_eq!(r["status"], 201, "{r}");
    assert!(upstream_has_tag(&reg, "audited/app", "not-the-version"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        p.proc
            .log_lines()
            .iter()
            .any(|l| l.contains("margo.manifest.tag") && l.contains("audit")),
        "the violation is logged"
    );
}

fn compose_archive(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw so that unsafe names like `../x` reach the archive unchanged.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let path = dir.join("component.tar.gz");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    path
}

#[test]
fn compose_component_valid_then_unsafe_archive() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let dir = tempfile::tempdir().unwrap();
    let good = compose_archive(
        dir.path(),
        &[("hello/compose.yaml", b"services: {web: {image: nginx}}\n")],
    );
    let ann = [
        "org.margo.component.type=compose",
        "org.margo.component.version=1.0.0",
    ];
    let r = oras_push(
        &p.host(),
        "components/hello",
        "1.0.0",
        COMPOSE,
        &[format!("{}|{COMPOSE_LAYER}|hello.tar.gz", good.display())],
        &ann,
    );
    assert_eq!(r["status"], 201, "{r}");

    let bad_dir = tempfile::tempdir().unwrap();
    let bad = compose_archive(
        bad_dir.path(),
        &[
            ("hello/compose.yaml", b"services: {}\n"),
            ("hello/../../etc/passwd", b"x"),
        ],
    );
    let ann = [
        "org.margo.component.type=compose",
        "org.margo.component.version=1.0.1",
    ];
    let r = oras_push(
        &p.host(),
        "components/hello",
        "1.0.1",
        COMPOSE,
        &[format!("{}|{COMPOSE_LAYER}|hello.tar.gz", bad.display())],
        &ann,
    );
    assert_eq!(r["status"], 400, "{r}");
    assert!(
        errors(&r)
            .iter()
            .any(|e| e["detail"]["rule"] == "margo.compose.parent-dir"),
        "{r}"
    );
    assert!(!upstream_has_tag(&reg, "components/hello", "1.0.1"));
}

#[test]
fn manifest_naming_a_missing_blob_is_refused() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let c = http();
    push_blob(&c, &p.url(), "apps/ghost", EMPTY_CONFIG.as_bytes());
    let missing = sha256(b"never pushed");
    let mut m: serde_json::Value =
        serde_json::from_slice(&image_manifest(&[(missing, 12, DESCRIPTION)], Some(APP))).unwrap();
    m["layers"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.title": "margo.yaml"});
    let r = put_manifest(
        &c,
        &p.url(),
        "apps/ghost",
        "0.1.0",
        &serde_json::to_vec(&m).unwrap(),
    );
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "MANIFEST_BLOB_UNKNOWN");
}

/// A package with margot's deviations (licence as `license.v1+plain`, no
/// `org.margo.app.resource`): accepted with `Warning` headers on a tolerant route,
/// refused with the rule named on a strict one.
#[test]
fn deviations_warn_in_rfc_9111_style_or_refuse_per_route() {
    let reg = Registry::start();
    let p = Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app}}
  - {{match: "strict/**", upstream: main, kind: app, deviations: strict}}
"#,
        reg.url()
    ));
    let c = http();
    let description = std::fs::read_to_string(fixture("valid-minimal.yaml"))
        .unwrap()
        .replace(
            "  catalog:\n",
            "  catalog:\n    application:\n      licenseFile: resources/license.txt\n",
        );
    for (repo, strict) in [("apps/dev", false), ("strict/dev", true)] {
        let d = push_blob(&c, &p.url(), repo, description.as_bytes());
        let l = push_blob(&c, &p.url(), repo, b"MIT");
        push_blob(&c, &p.url(), repo, b"{}");
        let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
            &[
                (d, description.len(), DESCRIPTION),
                (l, 3, "application/vnd.margo.app.license.v1+plain"),
            ],
            Some(APP),
        ))
        .unwrap();
        m["layers"][0]["annotations"] =
            serde_json::json!({"org.opencontainers.image.title": "margo.yaml"});
        m["layers"][1]["annotations"] =
            serde_json::json!({"org.opencontainers.image.title": "resources/license.txt"});
        let r = put_manifest(
            &c,
            &p.url(),
            repo,
            "0.1.0",
            &serde_json::to_vec(&m).unwrap(),
        );
        let status = r.status().as_u16();
        let warnings: Vec<String> = r
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = r.text().unwrap();
        if strict {
            assert_eq!(status, 400, "{body}");
            assert!(warnings.is_empty(), "{warnings:?}");
            assert!(
                body.contains("margo.deviation.license-media-type"),
                "{body}"
            );
            assert!(
                body.contains("margo.deviation.resource-annotation"),
                "{body}"
            );
            assert!(!upstream_has_tag(&reg, repo, "0.1.0"));
        } else {
            assert_eq!(status, 201, "{body}");
            assert_eq!(warnings.len(), 2, "{warnings:?}");
            assert!(
                warnings[0].starts_with(
                    "299 - \"margo.deviation.license-media-type at layers[1].mediaType"
                ),
                "{warnings:?}"
            );
            assert!(
                warnings[1].starts_with("299 - \"margo.deviation.resource-annotation at layers[1]"),
                "{warnings:?}"
            );
            assert!(upstream_has_tag(&reg, repo, "0.1.0"));
        }
    }
}

/// A chart pushed the way `helm push` does (Helm config with the chart version, one
/// chart layer), versioned with SemVer build metadata: the tag carries `_` for `+`.
#[test]
fn helm_chart_with_build_metadata_is_pushed_under_its_underscore_tag() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let c = http();
    let config =
        br#"{"name":"hello","version":"1.4.2+build.7","apiVersion":"v2","type":"application"}"#;
    let chart = b"not really a tgz, Helm's layer is opaque to admission";
    let repo = "components/hello-chart";
    let cd = push_blob(&c, &p.url(), repo, config);
    let ld = push_blob(&c, &p.url(), repo, chart);
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": ld, "size": chart.len()}],
    });
    let body = serde_json::to_vec(&m).unwrap();
    let r = put_manifest(&c, &p.url(), repo, "1.4.2", &body);
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("margo.component.version") && text.contains("1.4.2_build.7"),
        "{text}"
    );
    assert!(!upstream_has_tag(&reg, repo, "1.4.2"));
    let r = put_manifest(&c, &p.url(), repo, "1.4.2_build.7", &body);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    assert!(upstream_has_tag(&reg, repo, "1.4.2_build.7"));
}

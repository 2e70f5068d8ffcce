//! Admission of what app developers really build: packages made by margot (PyPI
//! `margo-tooling` 0.10.0, the Margo project's own CLI), pushed and pulled by margot
//! through the proxy over HTTPS (margot speaks nothing else), against a real
//! docker-registry. margot's known deviations (the `license` resource kind, resource
//! layers without `org.margo.app.resource`, component annotations on the manifest, `_`
//! for `+` in versions) are accepted with warnings on tolerant routes and refused,
//! naming the rule, on strict ones; `validate` reads margot's output the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const VERSION: &str = "1.4.2+build.7";
const TAG: &str = "1.4.2_build.7";

/// The proxy on HTTPS (test CA) in front of `reg`.
fn proxy(reg: &Registry) -> Proxy {
    let tls = repo_root().join("tests/fixtures/tls");
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}", tls: {{cert: "{}", key: "{}"}}}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app}}
  - {{match: "strict/apps/**", upstream: main, kind: app, deviations: strict}}
  - {{match: "components/**", upstream: main, kind: component}}
  - {{match: "**", upstream: main}}
"#,
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
        reg.url()
    ))
}

/// A margot project: build file, description and licence, and a Compose component that
/// the description names at `registry` (for the recursive pull).
fn project(dir: &Path, registry: &str) {
    let w = |p: &str, text: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w(
        "margo.yaml",
        &format!(
            "apiVersion: margo.tooling/v1\nid: hello-margot\nname: hello-margot\n\
             description: A test app built by margot\nversion: {VERSION}\n\
             compose:\n  directory: compose\n  version: {VERSION}\n"
        ),
    );
    w(
        "margo/app.yaml",
        &format!(
            "apiVersion: margo.to/v1-alpha1\nkind: ApplicationDescription\nid: hello-margot\n\
             metadata:\n  name: Hello margot\n  version: {VERSION}\n  catalog:\n    application:\n\
             \x20     licenseFile: resources/license.txt\n    organization:\n      - name: Example\n\
             deploymentProfiles:\n  - type: compose\n    id: hello-compose\n    components:\n\
             \x20     - name: hello\n        properties:\n          repository: oci://{registry}/components/hello\n\
             \x20         revision: {TAG}\n"
        ),
    );
    w("margo/resources/license.txt", "MIT\n");
    w(
        "compose/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
}

/// Runs margot in `dir` with a private HOME and the test CA trusted.
fn margot(dir: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(repo_root().join(".venv/bin/margot"))
        .arg("--no-color")
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env(
            "REQUESTS_CA_BUNDLE",
            repo_root().join("tests/fixtures/tls/ca.crt"),
        )
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200")
        .output()
        .expect("margot in .venv (scripts/setup installs margo-tooling 0.10.0)")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn upstream_tag(reg: &Registry, repo: &str, tag: &str) -> u16 {
    http()
        .get(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .status()
        .as_u16()
}

struct Built {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    home: PathBuf,
}

fn build(registry: &str) -> Built {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    project(&dir, registry);
    let o = margot(&dir, &home, &["build"]);
    assert!(o.status.success(), "margot build: {}", text(&o));
    let o = margot(&dir, &home, &["verify", "--project-dir", "."]);
    assert!(o.status.success(), "margot verify: {}", text(&o));
    Built {
        _tmp: tmp,
        dir,
        home,
    }
}

#[test]
fn margot_packages_are_admitted_with_warnings_and_pull_back() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let b = build(&p.host());
    for (kind, repo) in [("margo", "apps/hello"), ("compose", "components/hello")] {
        let o = margot(
            &b.dir,
            &b.home,
            &[
                "push",
                "--type",
                kind,
                "--registry",
                &p.host(),
                "--repository",
                repo,
            ],
        );
        assert!(o.status.success(), "margot push {kind}: {}", text(&o));
        assert_eq!(upstream_tag(&reg, repo, TAG), 200, "{repo}:{TAG} upstream");
    }
    // The package's deviations were warnings: a log field and the metric.
    let logs = p.proc.log_lines().join("\n");
    assert!(
        logs.contains("margo.deviation.license-media-type")
            && logs.contains("margo.deviation.resource-annotation")
            && logs.contains("warnings"),
        "{logs}"
    );
    let metrics = http()
        .get(format!("{}/metrics", p.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("margo_proxy_admission_decisions_total")
                && l.contains("rule=\"margo.deviation.license-media-type\"")
                && l.contains("decision=\"warn\"")),
        "{metrics}"
    );
    // Pull back through the proxy, recursively for the app, and compare bytes.
    let out = b.dir.join("pulled");
    let uri = format!("{}/apps/hello:{TAG}", p.host());
    let o = margot(
        &b.dir,
        &b.home,
        &["pull", &uri, "--output", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "margot pull: {}", text(&o));
    let found = |name: &str| {
        walk(&out)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("{name} not pulled: {:?}", walk(&out)))
    };
    let built = b.dir.join(format!(".dist/{TAG}/margo"));
    assert_eq!(
        std::fs::read(found("app.yaml")).unwrap(),
        std::fs::read(built.join("app.yaml")).unwrap()
    );
    assert_eq!(
        std::fs::read(found("license.txt")).unwrap(),
        std::fs::read(built.join("resources/license.txt")).unwrap()
    );
    let o = margot(
        &b.dir,
        &b.home,
        &["fetch", &format!("{}/components/hello:{TAG}", p.host())],
    );
    assert!(o.status.success(), "margot fetch: {}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("org.margo.component.version"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_strict_route_refuses_margot_deviations_naming_the_rule() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let b = build(&p.host());
    let o = margot(
        &b.dir,
        &b.home,
        &[
            "push",
            "--type",
            "margo",
            "--registry",
            &p.host(),
            "--repository",
            "strict/apps/hello",
        ],
    );
    assert!(!o.status.success(), "strict push must fail: {}", text(&o));
    assert_eq!(upstream_tag(&reg, "strict/apps/hello", TAG), 404);
    let logs = p.proc.log_lines().join("\n");
    let refused = logs
        .lines()
        .find(|l| l.contains("manifest does not follow the Margo rules"))
        .unwrap_or_else(|| panic!("no admission refusal logged: {logs}"));
    assert!(refused.contains("\"reject\""), "{refused}");
    assert!(
        refused.contains("margo.deviation.license-media-type"),
        "{refused}"
    );
    assert!(
        refused.contains("margo.deviation.resource-annotation"),
        "{refused}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn validate_json(path: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let o = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .arg("validate")
        .arg(path)
        .args(["--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code().unwrap_or(-1), v)
}

/// The messages of every violation in a `validate --format json` outcome.
fn violation_messages(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| {
            f["report"]["violations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|x| x["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn validate_reads_margot_projects_build_output_and_oci_layouts_as_a_push_would() {
    let reg = Registry::start();
    let p = proxy(&reg);
    let b = build(&p.host());
    let (code, v) = validate_json(&b.dir, &[]);
    assert_eq!(
        (code, v["kind"].as_str()),
        (0, Some("margot-project")),
        "{v:#}"
    );
    let (code, v) = validate_json(&b.dir.join(format!(".dist/{TAG}/margo")), &[]);
    assert_eq!(
        (code, v["kind"].as_str()),
        (0, Some("margot-output")),
        "{v:#}"
    );

    // An OCI layout of the pushed package (copied back with skopeo), checked as a
    // push is: tolerant shows the deviations as warnings, strict as violations, and
    // the strict violations are exactly the messages the strict route answers with.
    let o = margot(
        &b.dir,
        &b.home,
        &[
            "push",
            "--type",
            "margo",
            "--registry",
            &p.host(),
            "--repository",
            "apps/hello",
        ],
    );
    assert!(o.status.success(), "margot push: {}", text(&o));
    let layout = b.dir.join("layout");
    let o = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!(
            "docker://{}/apps/hello:{TAG}",
            reg.url().trim_start_matches("http://")
        ))
        .arg(format!("oci:{}:{TAG}", layout.display()))
        .output()
        .expect("skopeo (Debian package)");
    assert!(o.status.success(), "skopeo: {}", text(&o));
    let (code, tolerant) = validate_json(&layout, &[]);
    assert_eq!(
        (code, tolerant["kind"].as_str()),
        (0, Some("oci-layout")),
        "{tolerant:#}"
    );
    assert_eq!(tolerant["warnings"], 2, "{tolerant:#}");
    let (code, strict) = validate_json(&layout, &["--deviations", "strict"]);
    assert_eq!(code, 1, "{strict:#}");

    // The same package pushed to the strict route: the refusal lists the same messages.
    let c = http();
    let manifest = c
        .get(format!("{}/v2/apps/hello/manifests/{TAG}", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let plain = Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "strict/**", upstream: main, kind: app, deviations: strict}}
"#,
        reg.url()
    ));
    for layer in m["layers"].as_array().unwrap().iter().chain([&m["config"]]) {
        let d = layer["digest"].as_str().unwrap();
        let blob = c
            .get(format!("{}/v2/apps/hello/blobs/{d}", reg.url()))
            .send()
            .unwrap()
            .bytes()
            .unwrap();
        assert_eq!(push_blob(&c, &plain.url(), "strict/hello", &blob), d);
    }
    let r = put_manifest(&c, &plain.url(), "strict/hello", TAG, &manifest);
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().unwrap();
    let pushed: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(violation_messages(&strict), pushed);
    assert!(!pushed.is_empty());
}

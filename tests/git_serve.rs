//! `git clone` of OCI packages through the proxy (`/git/`), with the real `git` CLI, the
//! `oras` Python package and a real docker-registry: files byte-identical to what was
//! pushed, a new version as a new commit and tag on `git pull` with the old commit
//! unchanged, shallow clones, protocol v0 and v2, `git push` refused, and auth (none,
//! wrong scope, Basic through the token bridge, bearer via `http.extraHeader`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::*;

const APP: &str = "application/vnd.margo.app.v1+json";
const DESCRIPTION: &str = "application/vnd.margo.app.description.v1+yaml";
const RESOURCE: &str = "http://margo-proxy.test";
const REPO: &str = "apps/acme/app";

/// The files of one version: (path in the package, content, media type).
fn package(version: &str) -> Vec<(String, Vec<u8>, String)> {
    let yaml = std::fs::read_to_string(repo_root().join("tests/fixtures/margo/valid-rich.yaml"))
        .unwrap()
        .replace("version: 1.2.1", &format!("version: {version}"));
    let mut files = vec![(
        "margo.yaml".to_owned(),
        yaml.into_bytes(),
        DESCRIPTION.to_owned(),
    )];
    for (name, kind) in [
        ("ndo-logo.png", "icon.v1+png"),
        ("description.md", "descriptionFile.v1+markdown"),
        ("release-notes.md", "releaseNotes.v1+markdown"),
        ("license.pdf", "licenseFile.v1+pdf"),
    ] {
        // Binary content too: every byte value, so a text conversion anywhere shows.
        let mut data = format!("{name} of {version}\n").into_bytes();
        data.extend(0u8..=255);
        files.push((
            format!("resources/{name}"),
            data,
            format!("application/vnd.margo.app.{kind}"),
        ));
    }
    files
}

/// Pushes `version` of the package to `host/repo` with oras.
fn push(host: &str, repo: &str, version: &str) -> Vec<(String, Vec<u8>, String)> {
    push_files(host, repo, version, package(version))
}

fn push_files(
    host: &str,
    repo: &str,
    version: &str,
    files: Vec<(String, Vec<u8>, String)>,
) -> Vec<(String, Vec<u8>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(repo_root().join(".venv/bin/python"));
    cmd.arg(repo_root().join("tests/python/oras_tool.py"))
        .args([
            "push",
            "--registry",
            host,
            "--repo",
            repo,
            "--tag",
            version,
            "--artifact-type",
            APP,
        ]);
    for (i, (path, data, media_type)) in files.iter().enumerate() {
        let p = dir.path().join(format!("f{i}"));
        std::fs::write(&p, data).unwrap();
        cmd.args(["--file", &format!("{}|{media_type}|{path}", p.display())]);
    }
    let out = cmd.output().expect("oras venv (scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 201, "push {repo}:{version}: {v}");
    files
}

/// `git` with no user or system configuration and no prompts.
fn git(home: &Path, dir: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new("git");
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        // The machine's own CA bundle setting would override the test CA of ~/.gitconfig.
        .env_remove("GIT_SSL_CAINFO")
        .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"]);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    cmd.args(args).output().expect("git (Debian's git package)")
}

fn git_ok(home: &Path, dir: Option<&Path>, args: &[&str]) -> String {
    let out = git(home, dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn assert_files(dir: &Path, files: &[(String, Vec<u8>, String)]) {
    for (path, data, _) in files {
        let got = std::fs::read(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(got == *data, "{path} differs from what was pushed");
    }
    // Nothing else in the tree.
    let listed = git_ok(dir, Some(dir), &["ls-files"]);
    let mut want: Vec<&str> = files.iter().map(|(p, _, _)| p.as_str()).collect();
    want.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
}

fn proxy_config(reg: &Registry, extra: &str) -> String {
    proxy_config_on(reg, r#"{address: "{listen}"}"#, extra)
}

fn proxy_config_on(reg: &Registry, listener: &str, extra: &str) -> String {
    format!(
        r#"listeners: [{listener}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "public/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "**", upstream: main}}
git: {{enabled: true}}
{extra}"#,
        reg.url()
    )
}

#[test]
fn clone_pull_shallow_over_v0_and_v2_and_push_is_refused() {
    let reg = Registry::start();
    let proxy = Proxy::start(&proxy_config(&reg, ""));
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let url = format!("{}/git/{REPO}.git", proxy.url());
    let v1 = push(&proxy.host(), REPO, "1.2.1");

    let mut clones: Vec<(PathBuf, &str)> = Vec::new();
    for proto in ["2", "0"] {
        let dir = home.join(format!("clone-v{proto}"));
        let p = format!("protocol.version={proto}");
        git_ok(
            home,
            None,
            &["-c", &p, "clone", &url, dir.to_str().unwrap()],
        );
        assert_files(&dir, &v1);
        assert_eq!(git_ok(home, Some(&dir), &["tag", "-l"]), "1.2.1");
        assert_eq!(
            git_ok(home, Some(&dir), &["rev-list", "--count", "HEAD"]),
            "1"
        );
        clones.push((dir, proto));
    }
    let first = git_ok(home, Some(&clones[0].0), &["rev-parse", "1.2.1^{commit}"]);
    assert_eq!(
        first,
        git_ok(home, Some(&clones[1].0), &["rev-parse", "1.2.1^{commit}"]),
        "both protocols give the same commit"
    );

    let v2 = push(&proxy.host(), REPO, "1.3.0");
    for (dir, proto) in &clones {
        let p = format!("protocol.version={proto}");
        git_ok(home, Some(dir), &["-c", &p, "pull", "--ff-only"]);
        assert_files(dir, &v2);
        assert_eq!(git_ok(home, Some(dir), &["tag", "-l"]), "1.2.1\n1.3.0");
        assert_eq!(
            git_ok(home, Some(dir), &["rev-parse", "1.2.1^{commit}"]),
            first,
            "the first version's commit never changes"
        );
        assert_eq!(git_ok(home, Some(dir), &["rev-parse", "HEAD^"]), first);
        assert_eq!(
            git_ok(home, Some(dir), &["rev-parse", "HEAD"]),
            git_ok(home, Some(dir), &["rev-parse", "1.3.0^{commit}"])
        );
        git_ok(home, Some(dir), &["fsck", "--strict"]);
        // Deterministic author, committer and message.
        let log = git_ok(
            home,
            Some(dir),
            &["log", "-1", "--format=%an <%ae>|%cn|%s", "1.2.1"],
        );
        assert_eq!(
            log,
            format!("margo-proxy <margo-proxy@localhost>|margo-proxy|{REPO} 1.2.1")
        );
    }

    for proto in ["2", "0"] {
        let dir = home.join(format!("shallow-v{proto}"));
        let p = format!("protocol.version={proto}");
        git_ok(
            home,
            None,
            &[
                "-c",
                &p,
                "clone",
                "--depth",
                "1",
                &url,
                dir.to_str().unwrap(),
            ],
        );
        assert_files(&dir, &v2);
        assert_eq!(
            git_ok(home, Some(&dir), &["rev-list", "--count", "HEAD"]),
            "1"
        );
        assert_eq!(
            git_ok(home, Some(&dir), &["rev-parse", "--is-shallow-repository"]),
            "true"
        );
        git_ok(home, Some(&dir), &["-c", &p, "fetch", "--unshallow"]);
        assert_eq!(
            git_ok(home, Some(&dir), &["rev-list", "--count", "HEAD"]),
            "2"
        );
        assert_eq!(git_ok(home, Some(&dir), &["rev-parse", "HEAD^"]), first);
    }

    // git push is refused with a message git shows.
    let dir = &clones[0].0;
    std::fs::write(dir.join("margo.yaml"), "changed\n").unwrap();
    git_ok(
        home,
        Some(dir),
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qam",
            "change",
        ],
    );
    let out = git(home, Some(dir), &["push", "origin", "HEAD:refs/heads/main"]);
    assert!(!out.status.success(), "push must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") || err.contains("git push is not supported"),
        "{err}"
    );
    let r = http()
        .post(format!("{url}/git-receive-pack"))
        .body("0000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().unwrap().contains("git push is not supported"));

    // A version with a file outside the package (pushed straight to the upstream, which
    // does no admission) is left out; the others are served.
    let reg_host = reg.url().trim_start_matches("http://").to_owned();
    let good = push_files(&reg_host, "apps/acme/hostile", "1.0.0", package("1.0.0"));
    let mut bad = package("2.0.0");
    bad[1].0 = "../../etc/passwd".into();
    push_files(&reg_host, "apps/acme/hostile", "2.0.0", bad);
    let dir = home.join("hostile");
    git_ok(
        home,
        None,
        &[
            "clone",
            &format!("{}/git/apps/acme/hostile.git", proxy.url()),
            dir.to_str().unwrap(),
        ],
    );
    assert_files(&dir, &good);
    assert_eq!(git_ok(home, Some(&dir), &["tag", "-l"]), "1.0.0");
    assert!(!home.join("etc").exists());
    assert!(proxy
        .proc
        .log_lines()
        .iter()
        .any(|l| l.contains("version left out") && l.contains("not a safe relative path")));

    // Only app routes are served.
    let out = git(
        home,
        None,
        &[
            "clone",
            &format!("{}/git/other/x.git", proxy.url()),
            home.join("other").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}

fn tls_dir() -> PathBuf {
    repo_root().join("tests/fixtures/tls")
}

/// An HTTPS listener (tests/fixtures/tls): Basic credentials travel over TLS, as git sends them.
fn auth_proxy(idp: &Idp, reg: &Registry) -> Proxy {
    let tls = tls_dir();
    Proxy::start(&proxy_config_on(
        reg,
        &format!(
            r#"{{address: "{{listen}}", tls: {{cert: "{}", key: "{}"}}}}"#,
            tls.join("server.crt").display(),
            tls.join("server.key").display()
        ),
        &format!(
            r#"auth:
  realm: "{{proxy_url}}/token"
  service: margo-it
  issuers:
    - issuer: "{issuer}"
      audiences: ["{RESOURCE}"]
      require_at_jwt_typ: true
  rules:
    - match: [{{claim: groups, values: [wfm]}}]
      grant: {{"apps/**": [pull]}}
    - match: [{{claim: groups, values: [dev-acme]}}]
      grant: {{"apps/acme/**": [pull, push, delete]}}
  anonymous_pull: ["public/**"]
  token_endpoint:
    idp_token_url: "{token_url}"
    resource: "{RESOURCE}"
    idp_scope: registry
"#,
            issuer = idp.get("issuer"),
            token_url = idp.get("token_endpoint"),
        ),
    ))
}

#[test]
fn clone_needs_the_registry_credentials() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = auth_proxy(&idp, &reg);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    // Pushed straight to the upstream: the Git side reads whatever the registry holds.
    let reg_host = reg.url().trim_start_matches("http://").to_owned();
    let files = push(&reg_host, REPO, "1.2.1");
    push(&reg_host, "public/app", "1.2.1");
    let url = |creds: &str, repo: &str| format!("https://{creds}{}/git/{repo}.git", proxy.host());
    let ca = tls_dir().join("ca.crt");
    let ca_pem = std::fs::read(&ca).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .build()
        .unwrap();
    // git trusts the test CA through the user's config file (HOME is the test's).
    std::fs::write(
        home.join(".gitconfig"),
        format!("[http]\n\tsslCAInfo = {}\n", ca.display()),
    )
    .unwrap();

    // No credentials: 401 with a Basic challenge, so git asks for credentials.
    let r = c
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            url("", REPO)
        ))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert_eq!(www, "Basic realm=\"margo-it\"");
    let out = git(
        home,
        None,
        &["clone", &url("", REPO), home.join("none").to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "a clone without credentials must fail"
    );

    // Anonymous where anonymous_pull allows.
    let dir = home.join("anon");
    git_ok(
        home,
        None,
        &["clone", &url("", "public/app"), dir.to_str().unwrap()],
    );
    assert_files(&dir, &files);

    // Basic credentials, exchanged through the token bridge.
    let dir = home.join("basic");
    git_ok(
        home,
        None,
        &[
            "clone",
            &url("registry-user:registry-user-secret@", REPO),
            dir.to_str().unwrap(),
        ],
    );
    assert_files(&dir, &files);
    let out = git(
        home,
        None,
        &[
            "clone",
            &url("registry-user:wrong@", REPO),
            home.join("wrong").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success(), "a wrong password must not clone");

    // Valid credentials without the scope: 403.
    let basic = base64::engine::general_purpose::STANDARD.encode("outsider:outsider-secret");
    let r = c
        .get(format!(
            "{}/info/refs?service=git-upload-pack",
            url("", REPO)
        ))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let out = git(
        home,
        None,
        &[
            "clone",
            &url("outsider:outsider-secret@", REPO),
            home.join("outsider").to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A bearer token from the token endpoint, via http.extraHeader.
    let basic = base64::engine::general_purpose::STANDARD.encode("wfm:wfm-secret");
    let r = c
        .get(format!("https://{}/token?service=margo-it", proxy.host()))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<serde_json::Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = home.join("bearer");
    let header = format!("http.extraHeader=Authorization: Bearer {token}");
    git_ok(
        home,
        None,
        &[
            "-c",
            &header,
            "clone",
            &url("", REPO),
            dir.to_str().unwrap(),
        ],
    );
    assert_files(&dir, &files);

    // Secrets never reach the log.
    for line in proxy.proc.log_lines() {
        assert!(
            !line.contains("registry-user-secret") && !line.contains("eyJ"),
            "{line}"
        );
    }
}

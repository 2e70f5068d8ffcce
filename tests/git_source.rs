//! A Git repository as an upstream (`upstreams[].git`, issue 18 part 1), with the real
//! `git` CLI: bare repositories served over smart HTTP(S) by `git http-backend`
//! (`tests/python/git_http.py`), or read in place from a local path. Packages are
//! pulled through the proxy with `oras` (Python) and `margot` (HTTPS, test CA).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::git::{git, git_cmd, write_app, GitHttp, Repo};
use common::*;

const TOKEN: &str = "git-remote-token-0123";
const HOOK_SECRET: &str = "webhook-secret-0123456789";

/// Polls `f` until it is true (at most `secs`).
fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tags(base: &str, repo: &str) -> Vec<String> {
    let r = http()
        .get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .unwrap();
    if r.status() != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = r.json().unwrap();
    v["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn status(p: &Proxy, upstream: &str) -> serde_json::Value {
    http()
        .get(format!("{}/git/{upstream}/status", p.admin_url()))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn oras_pull(host: &str, repo: &str, tag: &str, out: &Path) -> serde_json::Value {
    let o = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/oras_tool.py"))
        .args([
            "pull",
            "--registry",
            host,
            "--repo",
            repo,
            "--tag",
            tag,
            "--outdir",
        ])
        .arg(out)
        .output()
        .expect("oras venv (scripts/setup)");
    assert!(
        o.status.success(),
        "oras pull: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The files of the package at `tag`, as the Git tree holds them.
fn git_file(bare: &Path, tag: &str, path: &str) -> Vec<u8> {
    let out = git_cmd(bare)
        .args(["show", &format!("{tag}:{path}")])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

const FILES: [&str; 5] = [
    "margo.yaml",
    "resources/icon.png",
    "resources/description.md",
    "resources/license.txt",
    "resources/release-notes.md",
];

fn remote_proxy(remote: &str, mirror: &Path, tls_port: u16) -> Proxy {
    let t = repo_root().join("tests/fixtures/tls");
    Proxy::start(&format!(
        r#"listeners:
  - address: "{{listen}}"
  - address: "127.0.0.1:{tls_port}"
    tls: {{cert: "{cert}", key: "{key}"}}
admin: {{address: "{{admin}}"}}
upstreams:
  - name: gitapps
    git:
      remote: "{remote}"
      name: line-monitor
      ca_file: "{ca}"
      token: "{TOKEN}"
      webhook_secret: "{HOOK_SECRET}"
      fetch_interval: 1h
      mirror_dir: "{mirror}"
routes:
  - {{match: "git/**", upstream: gitapps, kind: app, rewrite: {{strip: "git/", prefix: ""}}}}
catalog: {{enabled: true}}
server: {{threads: 2}}
"#,
        cert = t.join("server.crt").display(),
        key = t.join("server.key").display(),
        ca = t.join("ca.crt").display(),
        mirror = mirror.display(),
    ))
}

/// margot with a private HOME and the test CA trusted.
fn margot(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(repo_root().join(".venv/bin/margot"))
        .arg("--no-color")
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env(
            "REQUESTS_CA_BUNDLE",
            repo_root().join("tests/fixtures/tls/ca.crt"),
        )
        .env("NO_COLOR", "1")
        .env("COLUMNS", "200")
        .output()
        .expect("margot in .venv (scripts/setup installs margo-tooling)")
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn a_git_app_at_two_tags_is_pulled_byte_identical_stable_across_restarts_and_read_only() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "line-monitor");
    write_app(&repo.work, "1.0.0", "1.0.0");
    repo.commit_and_tag("v1.0.0", true);
    write_app(&repo.work, "1.1.0", "1.1.0");
    repo.commit_and_tag("1.1.0", false);
    // A version whose tag disagrees with metadata.version: not served.
    write_app(&repo.work, "1.2.0", "1.1.9");
    repo.commit_and_tag("v1.2.0", false);
    let server = GitHttp::start(root.path(), true, Some(TOKEN));
    let mirror = root.path().join("mirror");
    let tls_port = free_port();
    let p = remote_proxy(&server.url("line-monitor"), &mirror, tls_port);
    let base = p.url();
    eventually(30, "the first snapshot", || {
        tags(&base, "git/line-monitor").len() == 2
    });
    assert_eq!(tags(&base, "git/line-monitor"), ["1.0.0", "1.1.0"]);
    let ready = http()
        .get(format!("{}/readyz", p.admin_url()))
        .send()
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().unwrap());

    // oras pulls both versions; every file is the Git tree's, byte for byte.
    let mut digests = Vec::new();
    for (git_tag, tag) in [("v1.0.0", "1.0.0"), ("1.1.0", "1.1.0")] {
        let out = root.path().join(format!("pulled-{tag}"));
        let r = oras_pull(&p.host(), "git/line-monitor", tag, &out);
        assert_eq!(
            r["artifactType"], "application/vnd.margo.app.v1+json",
            "{r}"
        );
        for f in FILES {
            assert_eq!(
                std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e} ({r})")),
                git_file(&repo.bare, git_tag, f),
                "{tag}: {f}"
            );
        }
        let get = http()
            .get(format!("{base}/v2/git/line-monitor/manifests/{tag}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(get.status(), 200);
        let h = get.headers().clone();
        let body = get.bytes().unwrap();
        let digest = h["docker-content-digest"].to_str().unwrap().to_owned();
        assert_eq!(digest, sha256(&body));
        assert_eq!(
            h["content-type"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        let head = http()
            .head(format!("{base}/v2/git/line-monitor/manifests/{digest}"))
            .send()
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(
            head.headers()["content-length"],
            body.len().to_string().as_str()
        );
        digests.push(digest);
    }
    // A blob range.
    let icon = git_file(&repo.bare, "v1.0.0", "resources/icon.png");
    let r = http()
        .get(format!(
            "{base}/v2/git/line-monitor/blobs/{}",
            sha256(&icon)
        ))
        .header("Range", "bytes=1-3")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &icon[1..4]);

    // margot pulls over HTTPS too.
    let mdir = root.path().join("margot");
    std::fs::create_dir_all(&mdir).unwrap();
    let out = mdir.join("pulled");
    let o = margot(
        &mdir,
        &[
            "pull",
            &format!("127.0.0.1:{tls_port}/git/line-monitor:1.1.0"),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        o.status.success(),
        "margot pull: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let pulled = walk(&out);
    let notes = pulled
        .iter()
        .find(|p| p.ends_with("release-notes.md"))
        .unwrap_or_else(|| panic!("no release notes in {pulled:?}"));
    assert_eq!(
        std::fs::read(notes).unwrap(),
        git_file(&repo.bare, "1.1.0", "resources/release-notes.md")
    );

    // The invalid version: not served, listed with its violation, counted, logged.
    let r = http()
        .get(format!("{base}/v2/git/line-monitor/manifests/1.2.0"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let s = status(&p, "gitapps");
    let refused = s["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{s}");
    assert_eq!(refused[0]["git_tag"], "v1.2.0");
    assert!(
        refused[0]["violations"]
            .to_string()
            .contains("margo.manifest.tag"),
        "{s}"
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
            .any(|l| l.starts_with("margo_proxy_git_refused_versions_total")
                && l.contains("reason=\"admission\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(p
        .proc
        .log_lines()
        .iter()
        .any(|l| l.contains("git: version not served") && l.contains("v1.2.0")));

    // Read-only: pushes and deletes get 405 UNSUPPORTED naming the Git-backed route.
    let c = http();
    for (method, path) in [
        (reqwest::Method::PUT, "manifests/9.9.9"),
        (reqwest::Method::DELETE, "manifests/1.0.0"),
        (reqwest::Method::POST, "blobs/uploads/"),
        (
            reqwest::Method::DELETE,
            &format!("blobs/{}", sha256(&icon))[..],
        ),
    ] {
        let r = c
            .request(method.clone(), format!("{base}/v2/git/line-monitor/{path}"))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        let body: serde_json::Value = r.json().unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("read-only and Git-backed"),
            "{body}"
        );
    }
    let catalog: serde_json::Value = c
        .get(format!("{base}/v2/_catalog"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["git/line-monitor"])
    );

    // A new tag: the webhook (wrong signature refused, right one accepted) fetches it.
    write_app(&repo.work, "1.3.0", "1.3.0");
    repo.commit_and_tag("v1.3.0", true);
    let body = br#"{"ref":"refs/tags/v1.3.0"}"#;
    let hook = format!("{}/git/gitapps/hook", p.admin_url());
    let r = c
        .post(&hook)
        .header("X-Hub-Signature-256", "sha256=00")
        .body(&body[..])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(&hook)
        .header(
            "X-Hub-Signature-256",
            margo_proxy::git::source::hook::sign(HOOK_SECRET, body).unwrap(),
        )
        .body(&body[..])
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(20, "v1.3.0 after the webhook", || {
        tags(&base, "git/line-monitor").contains(&"1.3.0".to_owned())
    });

    // A restart (fresh mirror) serves the same digests.
    drop(p);
    let p2 = remote_proxy(
        &server.url("line-monitor"),
        &root.path().join("mirror2"),
        free_port(),
    );
    eventually(30, "the snapshot after restart", || {
        tags(&p2.url(), "git/line-monitor").len() == 3
    });
    for (tag, want) in ["1.0.0", "1.1.0"].iter().zip(&digests) {
        let r = http()
            .head(format!("{}/v2/git/line-monitor/manifests/{tag}", p2.url()))
            .send()
            .unwrap();
        assert_eq!(r.headers()["docker-content-digest"], want.as_str(), "{tag}");
    }
}

/// A local path, re-read every `fetch_interval`.
fn local_proxy(path: &Path, layout: &str, interval: &str) -> Proxy {
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams:
  - name: local
    git: {{remote: "{}", layout: {layout}, name: app, fetch_interval: {interval}, max_file_bytes: 1MiB}}
routes:
  - {{match: "**", upstream: local, kind: app}}
server: {{threads: 2}}
"#,
        path.display()
    ))
}

#[test]
fn a_new_tag_appears_after_the_interval() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "app");
    write_app(&repo.work, "1.0.0", "1.0.0");
    repo.commit_and_tag("v1.0.0", false);
    let p = local_proxy(&repo.bare, "repository", "1s");
    eventually(20, "the first snapshot", || {
        tags(&p.url(), "app") == ["1.0.0"]
    });
    write_app(&repo.work, "2.0.0", "2.0.0");
    repo.commit_and_tag("v2.0.0", false);
    eventually(20, "v2.0.0 after the interval", || {
        tags(&p.url(), "app") == ["1.0.0", "2.0.0"]
    });
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn hostile_repositories_are_refused_clearly_without_reading_them_into_memory() {
    let root = tempfile::tempdir().unwrap();
    let repo = Repo::new(root.path(), "hostile");
    let w = &repo.work;
    // good: a valid app next to the hostile ones.
    write_app(&w.join("good"), "1.0.0", "1.0.0");
    // symlink: the icon is a link to /etc/passwd.
    write_app(&w.join("symlink"), "1.0.0", "1.0.0");
    std::fs::remove_file(w.join("symlink/resources/icon.png")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", w.join("symlink/resources/icon.png")).unwrap();
    // dotdot: the licence is outside the package directory.
    write_app(&w.join("dotdot"), "1.0.0", "1.0.0");
    let y = std::fs::read_to_string(w.join("dotdot/margo.yaml")).unwrap();
    std::fs::write(
        w.join("dotdot/margo.yaml"),
        y.replace("resources/license.txt", "../good/resources/license.txt"),
    )
    .unwrap();
    // huge: a 1 GiB licence (sparse on disk; git streams it into a pack).
    write_app(&w.join("huge"), "1.0.0", "1.0.0");
    let f = std::fs::File::create(w.join("huge/resources/license.txt")).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    repo.commit_and_tag("good/v1.0.0", false);
    for t in ["symlink/v1.0.0", "dotdot/v1.0.0", "huge/v1.0.0"] {
        git(w, &["tag", t]);
    }
    // many: 100k files, written with fast-import onto the same history.
    let mut stream = String::from("blob\nmark :1\ndata 2\nx\n");
    stream.push_str("commit refs/heads/many\ncommitter Dev <dev@example.com> 1767225600 +0000\ndata 5\nmany\nfrom refs/heads/main\n");
    for i in 0..100_000 {
        stream.push_str(&format!("M 100644 :1 many/f{i}\n"));
    }
    stream.push_str("\ntag many/v1.0.0\nfrom refs/heads/many\ntagger Dev <dev@example.com> 1767225600 +0000\ndata 0\n\n");
    // evil: a tree entry named `..`, which git itself never writes (crafted by hand).
    let mut fi = git_cmd(w)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(fi.stdin.as_mut().unwrap(), stream.as_bytes()).unwrap();
    drop(fi.stdin.take());
    assert!(fi.wait().unwrap().success());
    let blob = git(w, &["hash-object", "-w", "--stdin"]).trim().to_owned();
    let margo = git(w, &["rev-parse", "good/v1.0.0:good/margo.yaml"])
        .trim()
        .to_owned();
    let mut tree_bytes = Vec::new();
    for (mode, name, id) in [("100644", "..", &blob), ("100644", "margo.yaml", &margo)] {
        tree_bytes.extend_from_slice(format!("{mode} {name}\0").as_bytes());
        tree_bytes.extend_from_slice(&hex::decode(id).unwrap());
    }
    std::fs::write(root.path().join("evil.tree"), &tree_bytes).unwrap();
    let evil = git(
        w,
        &[
            "hash-object",
            "-w",
            "-t",
            "tree",
            "--literally",
            root.path().join("evil.tree").to_str().unwrap(),
        ],
    )
    .trim()
    .to_owned();
    let mut top = Vec::new();
    top.extend_from_slice(b"40000 evil\0");
    top.extend_from_slice(&hex::decode(&evil).unwrap());
    std::fs::write(root.path().join("top.tree"), &top).unwrap();
    let top = git(
        w,
        &[
            "hash-object",
            "-w",
            "-t",
            "tree",
            "--literally",
            root.path().join("top.tree").to_str().unwrap(),
        ],
    )
    .trim()
    .to_owned();
    let commit = git(w, &["commit-tree", &top, "-m", "evil"])
        .trim()
        .to_owned();
    git(w, &["tag", "evil/v1.0.0", &commit]);

    let mut p = local_proxy(w, "directories", "1h");
    eventually(60, "the first snapshot", || {
        tags(&p.url(), "good") == ["1.0.0"]
    });
    let s = status(&p, "local");
    let reason = |app: &str| {
        s["refused"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["repository"] == app)
            .unwrap_or_else(|| panic!("{app} not refused: {s}"))["reason"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        reason("symlink").contains("`resources/icon.png` is a symbolic link"),
        "{s}"
    );
    assert!(
        reason("dotdot").contains("../good/resources/license.txt"),
        "{s}"
    );
    assert!(
        reason("huge").contains("1073741824 bytes, more than max_file_bytes"),
        "{s}"
    );
    assert!(reason("many").contains("more than 1000 entries"), "{s}");
    assert!(
        reason("evil").contains("entry `..` has a forbidden name"),
        "{s}"
    );
    for app in ["symlink", "dotdot", "huge", "many", "evil"] {
        let r = http()
            .get(format!("{}/v2/{app}/tags/list", p.url()))
            .send()
            .unwrap();
        assert_eq!(r.status(), 404, "{app}");
    }
    assert!(p.proc.exited().is_none(), "the proxy is still running");
    // Bounded memory: the 1 GiB file was never read (its size comes from the header).
    let hwm = vm_hwm_kib(p.proc.pid());
    eprintln!("hostile repositories: proxy peak RSS {hwm} KiB");
    assert!(hwm < 300 * 1024, "peak RSS {hwm} KiB");
    let metrics = http()
        .get(format!("{}/metrics", p.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for reason in [
        "symlink",
        "resource",
        "file_too_large",
        "too_many_files",
        "bad_name",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("margo_proxy_git_refused_versions_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason}: {metrics}"
        );
    }
}

//! A refused push leaves nothing behind (issue 13, item 4): with `staging:` configured,
//! uploads to `app`/`component` routes land in a staging repository, so a push refused
//! by admission leaves the client's repository as it was, through the proxy and at the
//! upstream directly (`tags/list`, manifest HEAD, blob HEAD, `_catalog`), for skopeo,
//! the `oras` Python package and margot. Accepted pushes (and chunked uploads) still
//! work, a crash between the mounts and the manifest PUT is completed at restart, and
//! staged blobs are deleted by age. Real docker-registry 2.8 behind a real proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::staging::{catalog, proxy_with_env, untouched, view};
use common::*;

const APP: &str = "application/vnd.margo.app.v1+json";
const DESC: &str = "application/vnd.margo.app.description.v1+yaml";
const MARGOT_VERSION: &str = "1.4.2+build.7";
const MARGOT_TAG: &str = "1.4.2_build.7";

fn config(reg: &Registry, state: &Path, extra: &str) -> String {
    let tls = repo_root().join("tests/fixtures/tls");
    format!(
        r#"listeners:
  - {{address: "{{listen}}", tls: {{cert: "{}", key: "{}"}}}}
  - {{address: "{{plain}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app}}
  - {{match: "strict/apps/**", upstream: main, kind: app, deviations: strict}}
  - {{match: "**", upstream: main}}
server: {{threads: 2}}
staging: {{repository: margo-staging, state_dir: "{}"{extra}}}
"#,
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
        reg.url(),
        state.display()
    )
}

fn description(name: &str) -> Vec<u8> {
    std::fs::read_to_string(repo_root().join("tests/fixtures/margo/valid-minimal.yaml"))
        .unwrap()
        .replace("Hello World", name)
        .into_bytes()
}

/// A Margo package manifest: the empty config and one description layer.
fn margo_manifest(description: &str, len: usize) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(
        &[(description.to_owned(), len, DESC)],
        Some(APP),
    ))
    .unwrap();
    m["layers"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.title": "margo.yaml"});
    serde_json::to_vec(&m).unwrap()
}

/// An OCI layout of a Margo package (empty config, one description layer) tagged
/// `tag`; the blob digests (config, description).
fn margo_layout(dir: &Path, desc: &[u8], tag: &str) -> Vec<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        std::fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    let config = put(b"{}");
    let d = put(desc);
    let mut m: serde_json::Value = serde_json::from_slice(&margo_manifest(&d, desc.len())).unwrap();
    m["layers"][0]["annotations"] =
        serde_json::json!({"org.opencontainers.image.title": "margo.yaml"});
    let manifest = serde_json::to_vec(&m).unwrap();
    let md = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
                "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
    vec![config, d]
}

fn skopeo_push(layout: &Path, tag: &str, dest: &str) -> Output {
    Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"))
        .output()
        .expect("skopeo is required (scripts/setup installs it)")
}

fn oras(args: &[&str]) -> serde_json::Value {
    let out = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/python/oras_tool.py"))
        .args(args)
        .output()
        .expect("the oras venv is required (scripts/setup creates it)");
    assert!(
        out.status.success(),
        "oras_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn oras_push(host: &str, repo: &str, tag: &str, file: &Path) -> serde_json::Value {
    oras(&[
        "push",
        "--registry",
        host,
        "--repo",
        repo,
        "--tag",
        tag,
        "--artifact-type",
        APP,
        "--file",
        &format!("{}|{DESC}|margo.yaml", file.display()),
    ])
}

/// A margot project (margot speaks only HTTPS: the test CA is trusted), built.
fn margot_project(dir: &Path, home: &Path) {
    let w = |p: &str, text: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    std::fs::create_dir_all(home).unwrap();
    w(
        "margo.yaml",
        &format!(
            "apiVersion: margo.tooling/v1\nid: hello-margot\nname: hello-margot\n\
             description: A test app built by margot\nversion: {MARGOT_VERSION}\n\
             compose:\n  directory: compose\n  version: {MARGOT_VERSION}\n"
        ),
    );
    w(
        "margo/app.yaml",
        &format!(
            "apiVersion: margo.to/v1-alpha1\nkind: ApplicationDescription\nid: hello-margot\n\
             metadata:\n  name: Hello margot\n  version: {MARGOT_VERSION}\n  catalog:\n    application:\n\
             \x20     licenseFile: resources/license.txt\n    organization:\n      - name: Example\n\
             deploymentProfiles:\n  - type: compose\n    id: hello-compose\n    components:\n\
             \x20     - name: hello\n        properties:\n          repository: oci://registry.example.com/components/hello\n\
             \x20         revision: {MARGOT_TAG}\n"
        ),
    );
    w("margo/resources/license.txt", "MIT\n");
    w(
        "compose/compose.yaml",
        "services:\n  web:\n    image: nginx\n",
    );
    let o = margot(dir, home, &["build"]);
    assert!(o.status.success(), "margot build: {}", text(&o));
}

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

fn margot_push(dir: &Path, home: &Path, host: &str, repo: &str) -> Output {
    margot(
        dir,
        home,
        &[
            "push",
            "--type",
            "margo",
            "--registry",
            host,
            "--repository",
            repo,
        ],
    )
}

/// The blobs margot built for the package (its description and licence files).
fn margot_blobs(dir: &Path) -> Vec<String> {
    let built = dir.join(format!(".dist/{MARGOT_TAG}/margo"));
    ["app.yaml", "resources/license.txt"]
        .iter()
        .map(|f| sha256(&std::fs::read(built.join(f)).unwrap()))
        .collect()
}

#[test]
fn refused_pushes_leave_nothing_behind_for_skopeo_oras_and_margot() {
    let reg = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let (p, plain) = proxy_with_env(&config(&reg, state.path(), ""), &[]);
    let (up, px) = (reg.url(), format!("http://127.0.0.1:{plain}"));
    let proxy_host = format!("127.0.0.1:{plain}");
    let c = http();
    // An accepted package first: its blobs (the empty config among them) are shared
    // with the refused packages below and must survive every refusal.
    let desc = description("Shared");
    let shared = vec![
        push_blob(&c, &px, "apps/shared", b"{}"),
        push_blob(&c, &px, "apps/shared", &desc),
    ];
    let m = margo_manifest(&shared[1], desc.len());
    let r = put_manifest(&c, &px, "apps/shared", "0.1.0", &m);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let shared_view = view(&up, "apps/shared", "0.1.0", &shared);
    assert_eq!(shared_view.blob_statuses, vec![200, 200]);
    assert_eq!(shared_view.tags.as_deref(), Some(&["0.1.0".to_owned()][..]));

    let work = tempfile::tempdir().unwrap();
    // skopeo, into the existing repository and into a new one: the tag is not the
    // description's version, so both are refused.
    let layout = work.path().join("skopeo");
    let blobs = margo_layout(&layout, &description("Refused by tag"), "0.2.0");
    for repo in ["apps/shared", "apps/skopeo-new"] {
        let o = skopeo_push(&layout, "0.2.0", &format!("{proxy_host}/{repo}:0.2.0"));
        assert!(
            !o.status.success(),
            "skopeo push to {repo} must be refused: {}",
            text(&o)
        );
        assert!(
            text(&o).contains("margo.manifest.tag"),
            "skopeo says why: {}",
            text(&o)
        );
    }
    // oras, into a new repository.
    let file = work.path().join("margo.yaml");
    let oras_desc = description("Refused oras");
    std::fs::write(&file, &oras_desc).unwrap();
    let pushed = oras_push(&proxy_host, "apps/oras-new", "9.9.9", &file);
    assert_eq!(pushed["status"], 400, "{pushed}");
    // margot, into a strict route (margot's deviations are refused there).
    let (dir, home) = (work.path().join("margot"), work.path().join("home"));
    margot_project(&dir, &home);
    let o = margot_push(&dir, &home, &p.host(), "strict/apps/hello");
    assert!(!o.status.success(), "strict push must fail: {}", text(&o));
    let margot_blobs = margot_blobs(&dir);

    for base in [&up, &px] {
        // The accepted package is whole, and the refusals added nothing to its repository.
        assert_eq!(
            view(base, "apps/shared", "0.1.0", &shared),
            shared_view,
            "{base}"
        );
        assert_eq!(
            view(base, "apps/shared", "0.2.0", &blobs[1..]),
            common::staging::View {
                in_catalog: true,
                tags: Some(vec!["0.1.0".into()]),
                manifest_status: 404,
                blob_statuses: vec![404],
            },
            "{base}: apps/shared after a refused push"
        );
        // New repositories never appear: no tag, no manifest, no blob, not in _catalog.
        let oras_blobs = [sha256(b"{}"), sha256(&oras_desc)];
        assert_eq!(
            view(base, "apps/skopeo-new", "0.2.0", &blobs),
            untouched(2),
            "{base}"
        );
        assert_eq!(
            view(base, "apps/oras-new", "9.9.9", &oras_blobs),
            untouched(2),
            "{base}"
        );
        assert_eq!(
            view(base, "strict/apps/hello", MARGOT_TAG, &margot_blobs),
            untouched(2),
            "{base}"
        );
    }
    // The uploads went to staging, which the upstream lists and the proxy hides.
    assert!(
        catalog(&up)
            .iter()
            .any(|r| r == "margo-staging/apps/skopeo-new"),
        "{:?}",
        catalog(&up)
    );
    let through = catalog(&px);
    assert!(
        through.iter().all(|r| !r.starts_with("margo-staging")),
        "{through:?}"
    );
    // Staging is not addressable through the proxy.
    let r = c
        .get(format!("{px}/v2/margo-staging/apps/shared/tags/list"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn accepted_pushes_work_for_skopeo_oras_margot_and_chunked_uploads() {
    let reg = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let (p, plain) = proxy_with_env(&config(&reg, state.path(), ""), &[]);
    let (up, px) = (reg.url(), format!("http://127.0.0.1:{plain}"));
    let proxy_host = format!("127.0.0.1:{plain}");
    let c = http();
    let work = tempfile::tempdir().unwrap();
    let whole = |blobs: &[String]| common::staging::View {
        in_catalog: true,
        tags: Some(vec!["0.1.0".into()]),
        manifest_status: 200,
        blob_statuses: vec![200; blobs.len()],
    };

    let layout = work.path().join("skopeo");
    let blobs = margo_layout(&layout, &description("By skopeo"), "0.1.0");
    let o = skopeo_push(&layout, "0.1.0", &format!("{proxy_host}/apps/skopeo:0.1.0"));
    assert!(o.status.success(), "skopeo push: {}", text(&o));
    assert_eq!(view(&up, "apps/skopeo", "0.1.0", &blobs), whole(&blobs));

    let file = work.path().join("margo.yaml");
    let desc = description("By oras");
    std::fs::write(&file, &desc).unwrap();
    let pushed = oras_push(&proxy_host, "apps/oras", "0.1.0", &file);
    assert_eq!(pushed["status"], 201, "{pushed}");
    let oras_blobs = [sha256(b"{}"), sha256(&desc)];
    assert_eq!(
        view(&up, "apps/oras", "0.1.0", &oras_blobs),
        whole(&oras_blobs)
    );
    let out = work.path().join("pulled");
    oras(&[
        "pull",
        "--registry",
        &proxy_host,
        "--repo",
        "apps/oras",
        "--tag",
        "0.1.0",
        "--outdir",
        &out.to_string_lossy(),
    ]);
    assert_eq!(std::fs::read(out.join("margo.yaml")).unwrap(), desc);

    let (dir, home) = (work.path().join("margot"), work.path().join("home"));
    margot_project(&dir, &home);
    let o = margot_push(&dir, &home, &p.host(), "apps/hello");
    assert!(o.status.success(), "margot push: {}", text(&o));
    let mb = margot_blobs(&dir);
    let v = view(&up, "apps/hello", MARGOT_TAG, &mb);
    assert_eq!((v.manifest_status, v.blob_statuses), (200, vec![200, 200]));
    let pulled = dir.join("pulled");
    let o = margot(
        &dir,
        &home,
        &[
            "pull",
            &format!("{}/apps/hello:{MARGOT_TAG}", p.host()),
            "--output",
            pulled.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "margot pull: {}", text(&o));

    // A chunked upload, resumed after a status request: its session URLs name the
    // client's repository, the bytes land in staging until the manifest is accepted.
    let desc = description("Chunked");
    let (a, b) = desc.split_at(desc.len() / 2);
    let r = c
        .post(format!("{px}/v2/apps/chunked/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = location(&px, &r);
    assert!(
        loc.contains("/v2/apps/chunked/blobs/uploads/") && !loc.contains("margo-staging"),
        "{loc}"
    );
    let r = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("0-{}", a.len() - 1))
        .body(a.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let loc = location(&px, &r);
    let status = c.get(&loc).send().unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"],
        format!("0-{}", a.len() - 1).as_str()
    );
    let loc = location(&px, &status);
    let r = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Range", format!("{}-{}", a.len(), desc.len() - 1))
        .body(b.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    let loc = location(&px, &r);
    let d = sha256(&desc);
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c.put(format!("{loc}{sep}digest={d}")).send().unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    assert!(location(&px, &r).ends_with(&format!("/v2/apps/chunked/blobs/{d}")));
    let cfg = push_blob(&c, &px, "apps/chunked", b"{}");
    let blobs = vec![cfg, d.clone()];
    // Staged: the proxy finds it for the client, the real repository has nothing yet.
    assert_eq!(
        view(&px, "apps/chunked", "0.1.0", &blobs).blob_statuses,
        vec![200, 200]
    );
    assert_eq!(view(&up, "apps/chunked", "0.1.0", &blobs), untouched(2));
    let body = c
        .get(format!("{px}/v2/apps/chunked/blobs/{d}"))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&body[..], &desc[..]);
    let m = margo_manifest(&d, desc.len());
    let r = put_manifest(&c, &px, "apps/chunked", "0.1.0", &m);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    assert_eq!(view(&up, "apps/chunked", "0.1.0", &blobs), whole(&blobs));
    assert!(
        std::fs::read_dir(state.path().join("journal"))
            .unwrap()
            .next()
            .is_none(),
        "journal settled"
    );
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_crash_between_mount_and_manifest_put_is_completed_at_restart() {
    let reg = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&reg, state.path(), "");
    let (mut p, plain) = proxy_with_env(&cfg, &[("MARGO_PROXY_FAILPOINT", "staging-after-mount")]);
    let (up, px) = (reg.url(), format!("http://127.0.0.1:{plain}"));
    let c = http();
    let desc = description("Crashed");
    let blobs = vec![
        push_blob(&c, &px, "apps/crash", b"{}"),
        push_blob(&c, &px, "apps/crash", &desc),
    ];
    let m = margo_manifest(&blobs[1], desc.len());
    let answer = put_manifest_result(&c, &px, "apps/crash", "0.1.0", &m);
    assert!(
        answer.is_err(),
        "the proxy died before answering: {answer:?}"
    );
    assert!(
        p.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "failpoint aborted the proxy"
    );
    // Mounted, not yet PUT: no tag, no manifest (the blobs are linked until the restart).
    let v = view(&up, "apps/crash", "0.1.0", &blobs);
    assert!(v.tags.as_ref().is_none_or(|t| t.is_empty()), "{v:?}");
    assert_eq!(v.manifest_status, 404);
    assert_eq!(
        std::fs::read_dir(state.path().join("journal"))
            .unwrap()
            .count(),
        1
    );
    // The restart rolls the admitted push forward: the whole package, or nothing.
    let (p2, plain2) = proxy_with_env(&cfg, &[]);
    wait_for("the journal to be settled", || {
        std::fs::read_dir(state.path().join("journal"))
            .unwrap()
            .next()
            .is_none()
    });
    let logs = p2.proc.log_lines().join("\n");
    assert!(logs.contains("completed=true"), "{logs}");
    let v = view(&up, "apps/crash", "0.1.0", &blobs);
    assert_eq!(
        v,
        common::staging::View {
            in_catalog: true,
            tags: Some(vec!["0.1.0".into()]),
            manifest_status: 200,
            blob_statuses: vec![200, 200],
        }
    );
    let got = c
        .get(format!(
            "http://127.0.0.1:{plain2}/v2/apps/crash/manifests/0.1.0"
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().to_vec(), m);
}

#[test]
fn staged_blobs_are_deleted_by_age() {
    let reg = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&reg, state.path(), ", max_age: 1s, cleanup_interval: 1s");
    let (_p, plain) = proxy_with_env(&cfg, &[]);
    let (up, px) = (reg.url(), format!("http://127.0.0.1:{plain}"));
    let c = http();
    let d = push_blob(&c, &px, "apps/abandoned", b"never followed by a manifest");
    let staged = |base: &str| {
        c.head(format!("{base}/v2/margo-staging/apps/abandoned/blobs/{d}"))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(staged(&up), 200, "staged at first");
    wait_for("the staged blob to be deleted", || staged(&up) == 404);
    let through = c
        .head(format!("{px}/v2/apps/abandoned/blobs/{d}"))
        .send()
        .unwrap();
    assert_eq!(through.status(), 404);
}

/// The restart finds the tag pushed meanwhile by someone else: never overwritten; the
/// interrupted push's mounts are undone, except the blob the other package uses.
#[test]
fn a_crashed_push_whose_tag_was_taken_meanwhile_is_rolled_back_sparing_shared_blobs() {
    let reg = Registry::start();
    let state = tempfile::tempdir().unwrap();
    let cfg = config(&reg, state.path(), "");
    let (mut p, plain) = proxy_with_env(&cfg, &[("MARGO_PROXY_FAILPOINT", "staging-after-mount")]);
    let (up, px) = (reg.url(), format!("http://127.0.0.1:{plain}"));
    let c = http();
    let ours = description("Interrupted");
    let blobs = [
        push_blob(&c, &px, "apps/race", b"{}"),
        push_blob(&c, &px, "apps/race", &ours),
    ];
    let m = margo_manifest(&blobs[1], ours.len());
    let answer = put_manifest_result(&c, &px, "apps/race", "0.1.0", &m);
    assert!(
        answer.is_err(),
        "the proxy died before answering: {answer:?}"
    );
    assert!(p.proc.wait_exit(Duration::from_secs(10)).is_some());
    // Another writer, straight at the upstream, takes the tag with a package that
    // shares the empty config blob.
    let theirs = description("Other writer");
    push_blob(&c, &up, "apps/race", b"{}");
    let their_desc = push_blob(&c, &up, "apps/race", &theirs);
    let their_m = margo_manifest(&their_desc, theirs.len());
    assert_eq!(
        put_manifest(&c, &up, "apps/race", "0.1.0", &their_m).status(),
        201
    );
    let (p2, _) = proxy_with_env(&cfg, &[]);
    wait_for("the journal to be settled", || {
        std::fs::read_dir(state.path().join("journal"))
            .unwrap()
            .next()
            .is_none()
    });
    let logs = p2.proc.log_lines().join("\n");
    assert!(logs.contains("completed=false"), "{logs}");
    let all = vec![blobs[0].clone(), blobs[1].clone(), their_desc.clone()];
    let v = view(&up, "apps/race", "0.1.0", &all);
    assert_eq!(
        v.blob_statuses,
        vec![200, 404, 200],
        "only our own blob is unlinked"
    );
    let got = c
        .get(format!("{up}/v2/apps/race/manifests/0.1.0"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(
        got.bytes().unwrap().to_vec(),
        their_m,
        "the other writer's tag is kept"
    );
}

fn put_manifest_result(
    c: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    tag: &str,
    body: &[u8],
) -> reqwest::Result<reqwest::blocking::Response> {
    c.put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(body.to_vec())
        .send()
}

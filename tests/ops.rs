//! What an operator meets: signals, ports in use, `check-config` agreeing with `serve`,
//! exit codes, logs on a pipe, completions and the man page, and the Grafana dashboard's
//! queries run by a real Prometheus against a proxy that has seen traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, http, repo_root, Proxy, Registry};

const BIN: &str = env!("CARGO_BIN_EXE_margo-proxy");

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .current_dir(repo_root())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("margo-proxy");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("wait")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `serve` on a config that must be refused: waits at most 10 s for the exit.
fn serve_refuses(config: &Path) -> (i32, String) {
    let mut child = Command::new(BIN)
        .current_dir(repo_root())
        .args(["serve", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve started with a config check-config refuses: {}",
                config.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("wait");
    (out.status.code().unwrap_or(-1), stderr(&out))
}

fn wait_for_log(proxy: &Proxy, what: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = proxy
            .proc
            .log_lines()
            .into_iter()
            .filter(|l| l.contains(what))
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hup(proxy: &Proxy) {
    let ok = Command::new("kill")
        .args(["-HUP", &proxy.proc.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -HUP failed");
}

#[test]
fn sighup_without_policies_is_logged_and_the_proxy_keeps_serving() {
    let mut proxy = Proxy::in_front_of("http://127.0.0.1:1");
    hup(&proxy);
    let lines = wait_for_log(&proxy, "SIGHUP");
    assert_eq!(lines.len(), 1, "one line per SIGHUP: {lines:?}");
    assert!(lines[0].contains("nothing to reload"), "{lines:?}");
    assert!(proxy.proc.exited().is_none(), "SIGHUP killed the proxy");
    let r = http()
        .get(format!("{}/healthz", proxy.admin_url()))
        .send()
        .expect("healthz after SIGHUP");
    assert_eq!(r.status(), 200);
}

#[test]
fn sighup_with_policies_reports_the_outcome_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = policy_dir(dir.path());
    let mut proxy = Proxy::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: http://127.0.0.1:1\npolicy:\n  directories: [\"{}\"]\n  reload: {{watch: false}}\n",
        policies.display()
    ));
    hup(&proxy);
    let lines = wait_for_log(&proxy, "SIGHUP");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("policies unchanged (revision "),
        "{lines:?}"
    );
    std::fs::write(
        policies.join("extra.rego"),
        "package margo.admission.extra\n\ndeny contains \"never\" if { false }\n",
    )
    .expect("write policy");
    hup(&proxy);
    let deadline = Instant::now() + Duration::from_secs(5);
    while wait_for_log(&proxy, "SIGHUP").len() < 2 && Instant::now() < deadline {}
    let lines = wait_for_log(&proxy, "SIGHUP");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("policies reloaded: revision "),
        "{lines:?}"
    );
    assert_eq!(
        proxy
            .proc
            .log_lines()
            .iter()
            .filter(|l| l.contains("reloaded"))
            .count(),
        1,
        "a reload is logged once"
    );
    assert!(proxy.proc.exited().is_none());
}

#[test]
fn a_port_in_use_fails_fast_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let free = format!("127.0.0.1:{}", free_port());
    for args in [
        vec![
            "serve",
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            addr.as_str(),
        ],
        vec![
            "serve",
            "--upstream",
            "http://127.0.0.1:1",
            "--listen",
            free.as_str(),
            "--admin",
            addr.as_str(),
        ],
    ] {
        let start = Instant::now();
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve kept running with {addr} taken: {args:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();
        let err = stderr(&child.wait_with_output().expect("output"));
        assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
        assert_eq!(status.code(), Some(3), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].contains(&addr) && lines[0].contains("address already in use"),
            "{err}"
        );
    }
}

fn policy_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("hidden.rego"),
        "package margo.admission.hidden\n\ndecision_points := {\"tag\"}\n\ndeny contains msg if {\n  input.request.repository == \"denied\"\n  msg := \"tags of denied are hidden\"\n}\n",
    )
    .expect("write policy");
    dir
}

#[test]
fn check_config_and_serve_refuse_the_same_configs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = format!("listeners:\n  - address: 127.0.0.1:{port}\nupstreams:\n  - name: main\n    url: http://127.0.0.1:5000\n");
    let table: Vec<(&str, String, &str)> = vec![
        (
            "unset password_env",
            base.replace(
                "    url: http://127.0.0.1:5000\n",
                "    url: http://127.0.0.1:5000\n    credentials:\n      username: u\n      password_env: MARGO_TEST_SURELY_UNSET\n",
            ),
            ":8:21: upstream `main` credentials: environment variable MARGO_TEST_SURELY_UNSET is not set",
        ),
        (
            "missing policy directory",
            format!("{base}policy:\n  directories: [no/such/dir]\n"),
            ":7:17: policy directory no/such/dir does not exist",
        ),
        (
            "admin on a listener's address",
            format!("{base}admin:\n  address: 127.0.0.1:{port}\n"),
            ":7:12: admin address 127.0.0.1:",
        ),
        (
            "missing TLS cert",
            base.replace(
                &format!("  - address: 127.0.0.1:{port}\n"),
                &format!("  - address: 127.0.0.1:{port}\n    tls:\n      cert: no/cert.pem\n      key: tests/fixtures/tls/server.key\n"),
            ),
            ":4:13: TLS cert file no/cert.pem does not exist",
        ),
        (
            "threads: two",
            format!("{base}server:\n  threads: two\n"),
            ":7:12: expected a whole number of threads, got `two`",
        ),
        (
            "unknown upstream",
            format!("{base}routes:\n  - match: \"**\"\n    upstream: mian\n"),
            ":8:15: route `**` names unknown upstream `mian` (known: `main`)",
        ),
    ];
    for (name, text, want) in table {
        let file = dir.path().join(format!("{}.yaml", name.replace(' ', "_")));
        std::fs::write(&file, &text).expect("write");
        let shown = file.display().to_string();
        let check = run(&["check-config", &shown], None);
        let check_err = stderr(&check);
        assert_eq!(check.status.code(), Some(1), "{name}: {check_err}");
        assert!(
            check_err.starts_with(&format!("{shown}{want}")),
            "{name}: {check_err}"
        );
        let (code, serve_err) = serve_refuses(&file);
        assert_eq!(code, 1, "{name}: serve: {serve_err}");
        assert_eq!(
            serve_err, check_err,
            "{name}: serve and check-config differ"
        );
    }
}

#[test]
fn all_errors_at_once_and_warnings_for_unverified_tls() {
    let text = "listeners:\n  - address: localhost\nupstreams:\n  - name: main\n    url: https://127.0.0.1:5000\n    tls: {verify: false}\nroutes:\n  - match: \"**\"\n    upstream: nope\nserver:\n  threads: 0\n";
    let out = run(&["check-config", "-"], Some(text));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[0].starts_with("<stdin>:2:14: "), "{err}");
    assert!(lines[1].starts_with("<stdin>:9:15: "), "{err}");
    assert!(lines[2].starts_with("<stdin>:11:12: "), "{err}");

    let ok = text
        .replace("localhost", "127.0.0.1:8080")
        .replace("nope", "main")
        .replace("threads: 0", "threads: 1");
    let out = run(&["check-config", "-"], Some(&ok));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<stdin>: ok\n");
    assert!(
        err.starts_with("warning: <stdin>:6:19: upstream `main`: tls.verify is false"),
        "{err}"
    );
}

#[test]
fn exit_codes_follow_one_scheme() {
    let code = |args: &[&str]| run(args, None).status.code();
    assert_eq!(code(&["check-config", "no/such.yaml"]), Some(2));
    assert_eq!(code(&["serve", "--config", "no/such.yaml"]), Some(2));
    assert_eq!(code(&["serve"]), Some(2));
    assert_eq!(code(&["no-such-command"]), Some(2));
    assert_eq!(code(&["check-config", "config/local.yaml"]), Some(0));
    let out = run(
        &["serve", "--upstream", "ftp://x", "--listen", "localhost"],
        None,
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("<config>") && err.starts_with("--listen: "),
        "{err}"
    );
    assert!(err.contains("--upstream: "), "{err}");
    for sub in [
        "serve",
        "check-config",
        "validate",
        "policy",
        "completions",
        "man",
    ] {
        let out = run(&[sub, "--version"], None);
        assert_eq!(out.status.code(), Some(0), "{sub} --version");
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
    let yaml = std::fs::read_to_string(repo_root().join("tests/fixtures/margo/valid-rich.yaml"))
        .expect("fixture");
    assert_eq!(run(&["validate", "-"], Some(&yaml)).status.code(), Some(0));
    let input =
        std::fs::read_to_string(repo_root().join("policies/examples/pull.json")).expect("example");
    let out = run(&["policy", "eval", "--input", "-"], Some(&input));
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
}

#[test]
fn completions_and_man_page_are_generated() {
    let out = run(&["completions", "bash"], None);
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(script.contains("check-config") && script.contains("--upstream"));
    let mut bash = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .spawn()
        .expect("bash");
    bash.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    assert!(bash.wait().expect("bash").success(), "bash -n refused it");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = run(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("check-config"));
    }
    let out = run(&["man"], None);
    assert_eq!(out.status.code(), Some(0));
    let roff = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(roff.starts_with(".ie") || roff.contains(".TH"), "{roff}");
    // man(1) renders it: the page is well-formed roff.
    let dir = tempfile::tempdir().expect("tempdir");
    let page = dir.path().join("margo-proxy.1");
    std::fs::write(&page, &roff).expect("write");
    let rendered = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man (man-db) is required");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(rendered.status.success(), "{}", stderr(&rendered));
    assert!(
        text.contains("check-config") && text.contains("Exit codes"),
        "{text}"
    );
}

#[test]
fn logs_on_a_pipe_are_plain_and_json_lists_are_json() {
    // Text format, stderr a pipe: no escape sequences at all.
    let proxy = Proxy::in_front_of("http://127.0.0.1:1");
    let _ = http().get(format!("{}/v2/", proxy.url())).send();
    let lines = wait_for_log(&proxy, "margo_proxy::access");
    assert!(!lines.is_empty());
    for line in proxy.proc.log_lines() {
        assert!(
            !line.contains('\u{1b}'),
            "ANSI escape in a piped log: {line:?}"
        );
    }
    drop(proxy);

    // A reachable upstream: the tag policy sees the upstream's tags (an unreachable
    // one is answered 502 before any policy runs: deny when unsure).
    let reg = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = policy_dir(dir.path());
    let proxy = Proxy::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: {}\nlog:\n  format: json\npolicy:\n  directories: [\"{}\"]\n",
        reg.url(),
        policies.display()
    ));
    let r = http()
        .get(format!("{}/v2/denied/tags/list", proxy.url()))
        .header("X-Request-Id", "ops-test-1")
        .send()
        .expect("tags list");
    assert_eq!(r.status(), 403);
    wait_for_log(&proxy, "\"margo_proxy::access\"");
    let json: Vec<serde_json::Value> = proxy
        .proc
        .log_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let find = |target: &str| {
        json.iter()
            .find(|v| v["target"] == target)
            .unwrap_or_else(|| panic!("no {target} line in {json:#?}"))
    };
    let decision = find("margo_proxy::policy::decision");
    assert_eq!(decision["request_id"], "ops-test-1", "{decision}");
    assert_eq!(
        decision["deny"],
        serde_json::json!(["hidden: tags of denied are hidden"])
    );
    assert!(decision["packages"].is_array(), "{decision}");
    assert!(decision["warn"].is_array(), "{decision}");
    let access = find("margo_proxy::access");
    assert_eq!(access["client_ip"], "127.0.0.1", "{access}");
    assert_eq!(access["request_id"], "ops-test-1");
    assert_eq!(access["status"], 403);
    let start = json
        .iter()
        .find(|v| v["message"] == "margo-proxy starting")
        .expect("start line");
    assert_eq!(
        start["listeners"],
        serde_json::json!([format!("127.0.0.1:{}", proxy.port)])
    );
}

/// Panels that show nothing in this test, and why that is right.
const LEGITIMATELY_ZERO: [(&str, &str); 2] = [
    (
        "Auth denials by reason",
        "no auth section here: client auth is tests/auth.rs's",
    ),
    (
        "JWKS fetches and introspection",
        "no auth section here, so no key fetches or introspection",
    ),
];

fn panels(v: &serde_json::Value, out: &mut Vec<(String, Vec<String>)>) {
    for p in v.as_array().into_iter().flatten() {
        let exprs: Vec<String> = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["expr"].as_str().map(str::to_owned))
            .collect();
        if !exprs.is_empty() {
            out.push((p["title"].as_str().unwrap_or("").to_owned(), exprs));
        }
        panels(&p["panels"], out);
    }
}

#[test]
fn every_dashboard_panel_shows_data_in_a_real_prometheus() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let policies = policy_dir(dir.path());
    let proxy = Proxy::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: {}\n  - name: dead\n    url: http://127.0.0.1:1\nroutes:\n  - match: \"apps/**\"\n    upstream: main\n    kind: app\n  - match: \"dead/**\"\n    upstream: dead\n  - match: \"**\"\n    upstream: main\npolicy:\n  directories: [\"{}\"]\nserver:\n  threads: 2\n",
        registry.url(),
        policies.display()
    ));

    // Prometheus, run directly (not the system service), scraping the admin listener.
    let prom_port = free_port();
    let prom_dir = tempfile::tempdir().expect("tempdir");
    let prom_conf = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_conf,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: margo-proxy\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            proxy.admin_port
        ),
    )
    .expect("prometheus config");
    let mut prom = Command::new("prometheus");
    prom.arg(format!("--config.file={}", prom_conf.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"));
    let _prom =
        common::Proc::spawn_public(prom, prom_port, "prometheus (Debian package `prometheus`)");
    let c = http();
    let prom_url = format!("http://127.0.0.1:{prom_port}");

    // Traffic: a push and cached pulls, a refused app push, a policy denial, an
    // unreachable upstream, a readiness probe.
    let base = proxy.url();
    let layer = common::push_blob(&c, &base, "lib/x", b"layer");
    common::push_blob(&c, &base, "lib/x", common::EMPTY_CONFIG.as_bytes());
    let manifest = common::image_manifest(
        &[(layer, 5, "application/vnd.oci.image.layer.v1.tar")],
        None,
    );
    assert_eq!(
        common::put_manifest(&c, &base, "lib/x", "1", &manifest).status(),
        201
    );
    for _ in 0..3 {
        let r = c
            .get(format!("{base}/v2/lib/x/manifests/1"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .expect("pull");
        assert_eq!(r.status(), 200);
    }
    let bad = common::image_manifest(&[], None);
    assert_eq!(
        common::put_manifest(&c, &base, "apps/bad", "1.0.0", &bad).status(),
        400
    );
    assert_eq!(
        c.get(format!("{base}/v2/denied/tags/list"))
            .send()
            .expect("tags")
            .status(),
        403
    );
    let dead = c
        .get(format!("{base}/v2/dead/x/manifests/1"))
        .send()
        .expect("dead");
    assert!(dead.status().is_server_error(), "{}", dead.status());
    let _ = c
        .get(format!("{}/readyz", proxy.admin_url()))
        .send()
        .expect("readyz");

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("grafana/dashboard.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    assert!(all.len() > 20, "{} panels", all.len());

    let query = |expr: &str| -> usize {
        let q = expr
            .replace("$__rate_interval", "30s")
            .replace("$job", ".+")
            .replace("$instance", ".+");
        let v: serde_json::Value = c
            .get(format!("{prom_url}/api/v1/query"))
            .query(&[("query", q.as_str())])
            .send()
            .expect("query")
            .json()
            .expect("query JSON");
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().map_or(0, Vec::len)
    };
    // Scrapes every second; a rate needs two samples after the traffic.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut empty: Vec<String>;
    loop {
        empty = all
            .iter()
            .filter(|(title, exprs)| {
                !LEGITIMATELY_ZERO.iter().any(|(t, _)| t == title)
                    && exprs.iter().any(|e| query(e) == 0)
            })
            .map(|(title, _)| title.clone())
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(empty.is_empty(), "panels without data: {empty:?}");
    for (title, why) in LEGITIMATELY_ZERO {
        assert!(
            all.iter().any(|(t, _)| t == title),
            "{title} ({why}) is not a panel"
        );
    }

    // build_info carries the commit the binary was built from.
    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo_root())
        .output()
        .expect("git");
    let sha = String::from_utf8_lossy(&sha.stdout).trim().to_owned();
    let metrics = c
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains(&format!("git_sha=\"{sha}\"")),
        "build_info without commit {sha}: {}",
        metrics
            .lines()
            .find(|l| l.contains("build_info{"))
            .unwrap_or("")
    );
}

#[test]
fn examples_keep_the_admin_port_off_prometheus_default() {
    let root = repo_root();
    let mut files = vec![
        root.join("README.md"),
        root.join("grafana/prometheus.yml"),
        root.join("scripts/demo"),
    ];
    for entry in std::fs::read_dir(root.join("config")).expect("config/") {
        files.push(entry.expect("entry").path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(
            !text.contains(":9090") && !text.contains("admin.listen"),
            "{} uses Prometheus's port 9090 or the wrong key",
            f.display()
        );
    }
    let prom = std::fs::read_to_string(root.join("grafana/prometheus.yml")).expect("read");
    assert!(prom.contains("\"127.0.0.1:9091\"") && prom.contains("admin.address"));
    let local = std::fs::read_to_string(root.join("config/local.yaml")).expect("read");
    assert!(local.contains("address: 127.0.0.1:9091") && local.contains("address: 127.0.0.1:8080"));
}

#[test]
fn the_access_log_names_the_subject_never_the_token() {
    const RESOURCE: &str = "http://margo-proxy.test";
    let idp = common::Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{upstream}"}}]
log: {{format: json}}
auth:
  realm: "{{proxy_url}}/token"
  service: margo-it
  issuers:
    - issuer: "{issuer}"
      audiences: ["{RESOURCE}"]
      require_at_jwt_typ: true
  rules:
    - match: [{{claim: groups, values: [wfm]}}]
      grant: {{"apps/**": [pull]}}
  token_endpoint:
    idp_token_url: "{token_url}"
    resource: "{RESOURCE}"
    idp_scope: registry
"#,
        upstream = reg.url(),
        issuer = idp.get("issuer"),
        token_url = idp.get("token_endpoint"),
    ));
    let c = http();
    use base64::Engine;
    let creds = base64::engine::general_purpose::STANDARD.encode("wfm:wfm-secret");
    let r = c
        .get(format!(
            "{}/token?service=margo-it&scope=repository:apps/x:pull",
            proxy.url()
        ))
        .header("Authorization", format!("Basic {creds}"))
        .send()
        .expect("token");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().expect("token JSON");
    let token = v["token"].as_str().expect("token").to_owned();
    let r = c
        .get(format!("{}/v2/apps/x/tags/list", proxy.url()))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Request-Id", "ops-subject-1")
        .send()
        .expect("tags");
    assert!(r.status() == 200 || r.status() == 404, "{}", r.status());
    wait_for_log(&proxy, "ops-subject-1");
    let lines = proxy.proc.log_lines();
    let access: serde_json::Value = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["target"] == "margo_proxy::access" && v["request_id"] == "ops-subject-1")
        .expect("access line");
    let subject = access["subject"].as_str().unwrap_or_default();
    assert!(!subject.is_empty(), "no subject: {access}");
    assert_eq!(access["client_ip"], "127.0.0.1");
    for l in &lines {
        assert!(!l.contains(&token), "a token in the log: {l}");
    }
}

//! How the proxy reaches and presents upstreams: URL rewriting to the public URL and
//! between repository namespaces, the proxy's own credentials, TLS both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use common::*;

fn tls_dir() -> std::path::PathBuf {
    repo_root().join("tests/fixtures/tls")
}

#[test]
fn location_points_at_public_url_on_another_host_name() {
    let reg = Registry::start();
    // Clients know the proxy as `registry.test`, the upstream is 127.0.0.1.
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\npublic_url: http://registry.test:8443\nupstreams: [{{name: main, url: \"{}\"}}]\n",
        reg.url()
    ));
    let port = proxy.port;
    let c = http();
    let r = c
        .post(format!("http://127.0.0.1:{port}/v2/loc/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("http://registry.test:8443/v2/loc/blobs/uploads/"),
        "{loc}"
    );
    assert!(loc.contains("_state="), "query string kept: {loc}");
    assert!(
        !loc.contains(&reg.port.to_string()),
        "upstream leaked: {loc}"
    );
}

#[test]
fn prefix_rewriting_maps_names_both_ways() {
    let reg = Registry::start();
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams: [{{name: main, url: \"{}\"}}]\nroutes:\n  - {{match: \"apps/**\", upstream: main, rewrite: {{strip: \"apps/\", prefix: \"margo/apps/\"}}}}\n  - {{match: \"**\", upstream: main}}\n",
        reg.url()
    ));
    let c = http();
    let base = proxy.url();
    push_blob(&c, &base, "apps/web", EMPTY_CONFIG.as_bytes());
    let r = put_manifest(&c, &base, "apps/web", "1.0.0", &image_manifest(&[], None));
    assert_eq!(r.status(), 201);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/v2/apps/web/manifests/"),
        "{:?}",
        r.headers()["location"]
    );
    // Stored upstream under the rewritten name...
    let direct = c
        .get(format!("{}/v2/margo/apps/web/manifests/1.0.0", reg.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(direct.status(), 200);
    // ...and served to clients under theirs, tags list body included.
    let v: serde_json::Value = c
        .get(format!("{base}/v2/apps/web/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["name"], "apps/web");
    assert_eq!(v["tags"], serde_json::json!(["1.0.0"]));
    // The catalog, too, lists the names clients use, not the upstream's.
    let catalog = |url: String| -> serde_json::Value { c.get(url).send().unwrap().json().unwrap() };
    assert_eq!(
        catalog(format!("{}/v2/_catalog", reg.url()))["repositories"],
        serde_json::json!(["margo/apps/web"])
    );
    assert_eq!(
        catalog(format!("{base}/v2/_catalog"))["repositories"],
        serde_json::json!(["apps/web"])
    );
    let r = c
        .post(format!("{base}/v2/apps/web/blobs/uploads/"))
        .send()
        .unwrap();
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.contains("/v2/apps/web/blobs/uploads/"), "{loc}");
    assert!(!loc.contains("margo/apps"), "{loc}");
}

#[test]
fn basic_auth_upstream_credentials_stay_at_the_proxy() {
    let reg = Registry::start_with(RegistryOptions {
        htpasswd: Some(("proxyuser".into(), "s3cret-pass".into())),
        ..Default::default()
    });
    let c = http();
    // Direct, without credentials: refused.
    assert_eq!(
        c.get(format!("{}/v2/", reg.url())).send().unwrap().status(),
        401
    );
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{}\"\n    credentials: {{username: proxyuser, password: s3cret-pass}}\n",
        reg.url()
    ));
    let base = proxy.url();
    // Through the proxy, a client without any credentials pushes and pulls.
    let d = push_blob(&c, &base, "secured/app", b"payload");
    push_blob(&c, &base, "secured/app", EMPTY_CONFIG.as_bytes());
    let manifest = image_manifest(&[(d.clone(), 7, "application/octet-stream")], None);
    let r = put_manifest(&c, &base, "secured/app", "v1", &manifest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let r = c
        .get(format!("{base}/v2/secured/app/blobs/{d}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), b"payload");
    // The upstream's challenge never reaches the client, and the password is never logged.
    let r = c.get(format!("{base}/v2/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("www-authenticate"));
    assert!(proxy
        .proc
        .log_lines()
        .iter()
        .all(|l| !l.contains("s3cret-pass")));
}

#[test]
fn tls_upstream_is_verified_against_the_configured_ca() {
    let reg = Registry::start_with(RegistryOptions {
        tls: true,
        ..Default::default()
    });
    let url = format!("https://127.0.0.1:{}", reg.port);
    let ca = tls_dir().join("ca.crt");
    let trusted = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{url}\"\n    tls: {{ca_file: \"{}\", sni: localhost}}\n",
        ca.display()
    ));
    let c = http();
    let r = c.get(format!("{}/v2/", trusted.url())).send().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    push_blob(&c, &trusted.url(), "tls/app", b"over tls");

    // Same upstream, system roots only: the test CA is unknown, so the proxy must refuse
    // to talk to it rather than skip verification.
    let untrusted = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{url}\"\n    tls: {{sni: localhost}}\n"
    ));
    let r = c.get(format!("{}/v2/", untrusted.url())).send().unwrap();
    assert_eq!(r.status(), 502);
}

#[test]
fn tls_listener_serves_the_registry_api() {
    let reg = Registry::start();
    let tls = tls_dir();
    let proxy = Proxy::start(&format!(
        "listeners:\n  - address: \"{{listen}}\"\n    tls: {{cert: \"{}\", key: \"{}\"}}\nupstreams: [{{name: main, url: \"{}\"}}]\n",
        tls.join("server.crt").display(),
        tls.join("server.key").display(),
        reg.url()
    ));
    margo_proxy::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.crt")).unwrap()).unwrap();
    let c = reqwest::blocking::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", proxy.port);
    let r = c
        .post(format!("{base}/v2/secure/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(loc.starts_with(&format!("{base}/v2/secure/")), "{loc}");
}

#[test]
fn check_config_reports_line_precise_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listeners: [{address: \"127.0.0.1:1\"}]\nupstreams: [{name: a, url: \"http://h:1\"}]\nroutes:\n  - match: \"**\"\n    upstream: missing\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .args(["check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":5:"), "names line 5: {err}");
    assert!(err.contains("missing"), "{err}");
    for example in std::fs::read_dir(repo_root().join("config")).unwrap() {
        let path = example.unwrap().path();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
            .current_dir(repo_root())
            // config/full.yaml's password_env: check-config, like serve, needs it set.
            .env("HARBOR_PASSWORD", "example")
            .args(["check-config"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn serve_without_a_config_file() {
    let reg = Registry::start();
    // Started on a fresh port, again on another if someone else took it first.
    let (_proxy, ports) = Proc::start("margo-proxy", 1, |ports| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
        cmd.args([
            "serve",
            "--upstream",
            &reg.url(),
            "--listen",
            &format!("127.0.0.1:{}", ports[0]),
        ]);
        cmd
    });
    let r = http()
        .get(format!("http://127.0.0.1:{}/v2/", ports[0]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn a_server_whose_port_was_taken_is_started_again_on_another() {
    // Issue 12 #14: `free_port()` binds, drops and lets the server bind later; another
    // process may take the port meanwhile. Here the test itself takes the first port it
    // is given, just before the server starts.
    let mut taken: Vec<std::net::TcpListener> = Vec::new();
    // A server that fails to bind (docker-registry exits: address already in use).
    let dir = tempfile::tempdir().unwrap();
    let mut attempts = 0;
    let (_reg, ports) = Proc::start("docker-registry", 1, |ports| {
        attempts += 1;
        if attempts == 1 {
            // Bound by us, or already by someone else: taken either way.
            taken.extend(std::net::TcpListener::bind(("127.0.0.1", ports[0])).ok());
        }
        let cfg = dir.path().join(format!("config-{attempts}.yml"));
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{}\n",
                dir.path().join("storage").display(),
                ports[0]
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("docker-registry");
        cmd.arg("serve").arg(cfg);
        cmd
    });
    assert_eq!(attempts, 2);
    let r = http()
        .get(format!("http://127.0.0.1:{}/v2/", ports[0]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // A server that keeps running without its listener: the port is seen to be someone
    // else's, the server is stopped and started again on a fresh port.
    let reg = Registry::start();
    let mut attempts = 0;
    let (_proxy, ports) = Proc::start("margo-proxy", 1, |ports| {
        attempts += 1;
        if attempts == 1 {
            // Bound by us, or already by someone else: taken either way.
            taken.extend(std::net::TcpListener::bind(("127.0.0.1", ports[0])).ok());
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
        cmd.args([
            "serve",
            "--upstream",
            &reg.url(),
            "--listen",
            &format!("127.0.0.1:{}", ports[0]),
        ]);
        cmd
    });
    assert_eq!(attempts, 2);
    let r = http()
        .get(format!("http://127.0.0.1:{}/v2/", ports[0]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(taken);

    // Ports are never handed out twice in one process.
    let many: std::collections::BTreeSet<u16> = (0..200).map(|_| free_port()).collect();
    assert_eq!(many.len(), 200);
}

//! The application catalog against a real docker-registry: packages pushed with
//! `margo-proxy push` through the proxy (and directly upstream, for the crawl), read
//! back through `/margo/v1/applications`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn config(reg: &Registry, extra: &str) -> String {
    format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{}"}}]
routes:
  - {{match: "apps/**", upstream: main, kind: app, mode: enforce}}
  - {{match: "**", upstream: main}}
catalog: {{enabled: true, crawl_interval: 1s, crawl_rps: 200}}
{extra}"#,
        reg.url()
    )
}

fn push(target: &str, dir: &str, reference: &str, token: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_margo-proxy"));
    cmd.arg("push")
        .arg(repo_root().join("examples/packages").join(dir))
        .arg(format!("{target}/{reference}"))
        .arg("--plain-http");
    if let Some(t) = token {
        cmd.arg("--token").arg(t);
    }
    cmd.output().expect("run margo-proxy push")
}

fn push_ok(target: &str, dir: &str, reference: &str) {
    let out = push(target, dir, reference, None);
    assert!(
        out.status.success(),
        "push {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn get(c: &reqwest::blocking::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().expect("GET");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<String> {
    list["applications"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["repository"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

#[test]
fn listing_search_pagination_detail_and_index_updates() {
    let reg = Registry::start();
    let proxy = Proxy::start(&config(&reg, ""));
    let c = http();
    let base = proxy.url();
    let host = proxy.host();
    push_ok(&host, "line-monitor", "apps/northwind/line-monitor:1.4.0");
    push_ok(&host, "sensor-gateway", "apps/contoso/sensor-gateway:0.9.2");

    // Index updated at once by the pushes through the proxy.
    let (s, all) = get(&c, &format!("{base}/margo/v1/applications"));
    assert_eq!(s, 200, "{all}");
    assert_eq!(
        names(&all),
        vec!["apps/contoso/sensor-gateway", "apps/northwind/line-monitor"]
    );
    let lm = &all["applications"][1];
    assert_eq!(lm["id"], "line-monitor");
    assert_eq!(lm["latestVersion"], "1.4.0");
    assert_eq!(lm["profiles"], json!(["helm"]));
    assert_eq!(lm["organization"], json!(["Northwind Automation"]));
    assert_eq!(lm["requiredResources"][0]["memory"], "512Mi");
    let icon_url = lm["icon"]["url"].as_str().unwrap_or_default().to_owned();
    assert!(icon_url.starts_with("/v2/apps/northwind/line-monitor/blobs/sha256:"));
    let icon = c.get(format!("{base}{icon_url}")).send().expect("icon");
    assert_eq!(icon.status(), 200);
    assert!(icon.bytes().unwrap_or_default().starts_with(b"\x89PNG"));

    // Search, filters, pagination.
    let (_, q) = get(&c, &format!("{base}/margo/v1/applications?q=MQTT"));
    assert_eq!(names(&q), vec!["apps/contoso/sensor-gateway"]);
    let (_, p) = get(&c, &format!("{base}/margo/v1/applications?profile=helm"));
    assert_eq!(names(&p), vec!["apps/northwind/line-monitor"]);
    let (_, o) = get(
        &c,
        &format!("{base}/margo/v1/applications?organization=contoso%20edge"),
    );
    assert_eq!(names(&o), vec!["apps/contoso/sensor-gateway"]);
    let (s, bad) = get(&c, &format!("{base}/margo/v1/applications?profile=k8s"));
    assert_eq!(s, 400, "{bad}");
    assert!(bad["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .contains("profile"));
    let (_, p1) = get(&c, &format!("{base}/margo/v1/applications?per_page=1"));
    let (_, p2) = get(
        &c,
        &format!("{base}/margo/v1/applications?per_page=1&page=2"),
    );
    assert_eq!(
        (p1["total"].clone(), p1["pages"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(names(&p1), vec!["apps/contoso/sensor-gateway"]);
    assert_eq!(names(&p2), vec!["apps/northwind/line-monitor"]);

    // ETag / If-None-Match.
    let r = c
        .get(format!("{base}/margo/v1/applications"))
        .send()
        .expect("GET");
    let tag = r.headers()["etag"].to_str().unwrap_or_default().to_owned();
    let r = c
        .get(format!("{base}/margo/v1/applications"))
        .header("If-None-Match", &tag)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 304);

    // A second version: SemVer order, newest first; a changed list has a new ETag.
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &repo_root().join("examples/packages/line-monitor"),
        dir.path(),
    );
    let yaml = std::fs::read_to_string(dir.path().join("margo.yaml")).unwrap_or_default();
    std::fs::write(
        dir.path().join("margo.yaml"),
        yaml.replace("version: 1.4.0", "version: 1.10.0"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .args(["push", &dir.path().to_string_lossy()])
        .arg(format!("{host}/apps/northwind/line-monitor:1.10.0"))
        .output()
        .expect("push");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = c
        .get(format!("{base}/margo/v1/applications"))
        .header("If-None-Match", &tag)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 200);
    let (_, all) = get(&c, &format!("{base}/margo/v1/applications?q=line"));
    assert_eq!(
        all["applications"][0]["versions"],
        json!(["1.10.0", "1.4.0"])
    );
    assert_eq!(all["applications"][0]["latestVersion"], "1.10.0");

    // Version detail.
    let (s, d) = get(
        &c,
        &format!("{base}/margo/v1/applications/apps/northwind/line-monitor/versions/1.4.0"),
    );
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["description"]["metadata"]["name"], "Line Monitor");
    assert!(d["manifestDigest"]
        .as_str()
        .unwrap_or("")
        .starts_with("sha256:"));
    assert_eq!(d["components"][1]["name"], "alarm-store");
    assert_eq!(d["components"][1]["revision"], "2.1.3");
    assert_eq!(d["admission"]["clean"], true);
    let mut kinds: Vec<&str> = d["resources"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["kind"].as_str()).collect())
        .unwrap_or_default();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        vec!["descriptionFile", "icon", "licenseFile", "releaseNotes"]
    );
    let (s, _) = get(
        &c,
        &format!("{base}/margo/v1/applications/apps/northwind/line-monitor/versions/9.9.9"),
    );
    assert_eq!(s, 404);

    // The invalid package is refused and never listed.
    let out = push(&host, "broken-app", "apps/nobody/broken-app:1.0.0", None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("margo.pattern") && err.contains("id"), "{err}");

    // Delete through the proxy: gone from the index at once.
    let digest = d["manifestDigest"].as_str().unwrap_or_default().to_owned();
    let r = c
        .delete(format!(
            "{base}/v2/apps/northwind/line-monitor/manifests/{digest}"
        ))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), 202);
    let (_, all) = get(&c, &format!("{base}/margo/v1/applications?q=line"));
    assert_eq!(all["applications"][0]["versions"], json!(["1.10.0"]));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

#[test]
fn the_crawl_picks_up_a_package_pushed_directly_upstream() {
    let reg = Registry::start();
    let proxy = Proxy::start(&config(&reg, ""));
    let c = http();
    let upstream = reg.url().trim_start_matches("http://").to_owned();
    push_ok(
        &upstream,
        "sensor-gateway",
        "apps/direct/sensor-gateway:0.9.2",
    );
    wait_until("the crawl to index the direct push", || {
        let (_, all) = get(&c, &format!("{}/margo/v1/applications", proxy.url()));
        names(&all) == vec!["apps/direct/sensor-gateway".to_owned()]
    });
}

#[test]
fn every_configuration_rule_one_passing_and_one_failing_value() {
    let reg = Registry::start();
    let proxy = Proxy::start(&config(&reg, ""));
    let c = http();
    push_ok(
        &proxy.host(),
        "line-monitor",
        "apps/northwind/line-monitor:1.4.0",
    );
    let url = format!(
        "{}/margo/v1/applications/apps/northwind/line-monitor/versions/1.4.0/configuration:validate",
        proxy.url()
    );
    let post = |body: String| {
        let r = c
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .expect("POST");
        let s = r.status().as_u16();
        (s, r.json::<Value>().unwrap_or(Value::Null))
    };
    let cases: &[(&str, &str, &str, &str)] = &[
        ("dataType", "pollSeconds", "60", r#""60""#),
        ("minLength", "siteName", r#""Abc""#, r#""Ab""#),
        (
            "maxLength",
            "siteName",
            r#""Plant 12""#,
            &format!("\"{}\"", "x".repeat(41)),
        ),
        ("regexMatch", "lineCode", r#""ZZ999""#, r#""zz999""#),
        ("minValue", "pollSeconds", "5", "4"),
        ("maxValue", "pollSeconds", "3600", "3601"),
        ("minPrecision", "threshold", "0.5", "1"),
        ("maxPrecision", "threshold", "0.125", "0.1255"),
        ("options", "logLevel", r#""warn""#, r#""verbose""#),
        ("multiselect", "channels", r#"["sms","email"]"#, r#""sms""#),
        ("allowEmpty", "siteName", r#""Plant""#, r#""""#),
        ("required", "lineCode", r#""AB123""#, "null"),
    ];
    for (rule, param, good, bad) in cases {
        let with = |v: &str| {
            if *param == "lineCode" {
                format!(r#"{{"lineCode": {v}}}"#)
            } else {
                format!(r#"{{"lineCode": "AB123", "{param}": {v}}}"#)
            }
        };
        let (s, ok) = post(with(good));
        assert_eq!(
            (s, ok["valid"].clone()),
            (200, json!(true)),
            "{rule} {good}: {ok}"
        );
        let (s, ko) = post(with(bad));
        assert_eq!(s, 422, "{rule} {bad}: {ko}");
        assert_eq!(ko["violations"][0]["rule"], *rule, "{rule} {bad}: {ko}");
        assert_eq!(ko["violations"][0]["parameter"], *param, "{ko}");
        assert!(ko["violations"][0]["setting"].is_string(), "{ko}");
    }
    // The resolved targets of a valid configuration.
    let (_, ok) = post(r#"{"lineCode": "AB123", "pollSeconds": 90}"#.into());
    let api = ok["resolved"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["component"] == "monitor-api"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(api["profileType"], "helm");
    assert!(api["targets"].as_array().is_some_and(|t| t
        .iter()
        .any(|x| x["pointer"] == "polling.intervalSeconds" && x["value"] == 90)));
    // Not JSON: a clear 400.
    let (s, e) = post("not json".into());
    assert_eq!(s, 400, "{e}");
    // Larger than the catalog reads: a 413 naming the limit, body not read to its end.
    let (s, e) = post(format!(r#"{{"siteName": "{}"}}"#, "x".repeat(257 * 1024)));
    assert_eq!(s, 413, "{e}");
    assert!(
        e["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("larger than 262144 bytes")),
        "{e}"
    );
}

const KID: &str = "catalog-test";

fn auth_config(reg: &Registry) -> String {
    let pem = repo_root().join("tests/fixtures/auth/rsa_public.pem");
    config(
        reg,
        &format!(
            r#"auth:
  realm: "{{proxy_url}}/token"
  service: margo-catalog-it
  issuers:
    - issuer: https://idp.test
      audiences: [margo-catalog-it]
      keys: {{static: [{{kid: {KID}, pem_file: "{}"}}]}}
      algorithms: [RS256]
  rules:
    - match: [{{claim: groups, values: [a-readers]}}]
      grant: {{"apps/a/**": [pull]}}
    - match: [{{claim: groups, values: [dev]}}]
      grant: {{"apps/**": [pull, push]}}
"#,
            pem.display()
        ),
    )
}

fn mint(group: &str) -> String {
    mint_token(KID, "margo-catalog-it", group)
}

#[test]
fn a_token_for_apps_a_does_not_see_apps_b() {
    let reg = Registry::start();
    let proxy = Proxy::start(&auth_config(&reg));
    let c = http();
    let dev = mint("dev");
    for (dir, reference) in [
        ("line-monitor", "apps/a/line-monitor:1.4.0"),
        ("sensor-gateway", "apps/b/sensor-gateway:0.9.2"),
    ] {
        let out = push(&proxy.host(), dir, reference, Some(&dev));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = |token: Option<&str>| {
        let mut r = c.get(format!("{}/margo/v1/applications", proxy.url()));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().expect("GET");
        let s = r.status().as_u16();
        (s, r.json::<Value>().unwrap_or(Value::Null))
    };
    let (s, _) = list(None);
    assert_eq!(s, 401);
    let (s, all) = list(Some(&dev));
    assert_eq!(s, 200);
    assert_eq!(
        names(&all),
        vec!["apps/a/line-monitor", "apps/b/sensor-gateway"]
    );
    let reader = mint("a-readers");
    let (s, a) = list(Some(&reader));
    assert_eq!(s, 200);
    assert_eq!(names(&a), vec!["apps/a/line-monitor"]);
    // Nor its versions, nor its configuration check: 404 like a missing one.
    let r = c
        .get(format!(
            "{}/margo/v1/applications/apps/b/sensor-gateway/versions/0.9.2",
            proxy.url()
        ))
        .bearer_auth(&reader)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!(
            "{}/margo/v1/applications/apps/b/sensor-gateway/versions/0.9.2/configuration:validate",
            proxy.url()
        ))
        .bearer_auth(&reader)
        .body("{}")
        .send()
        .expect("POST");
    assert_eq!(r.status(), 404);
    // The web catalog without a token is the sign-in page, with the CSP.
    let r = c
        .get(format!("{}/catalog/", proxy.url()))
        .send()
        .expect("GET");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        !csp.contains("unsafe-inline") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = r.text().unwrap_or_default();
    assert!(html.contains("id=\"login\""), "{html}");
    assert!(!html.contains("sensor-gateway"));
}

//! `/v2/_catalog` merged from two real docker-registry upstreams behind one proxy with
//! rewrites: the exact merged, sorted list whatever the page size, walked through the
//! proxy's `Link` headers; `last` in the client's namespace; each upstream's own pages
//! followed and the listing read once for concurrent clients (cache, single-flight);
//! authorization filtering; tags lists under a rewrite; an upstream down.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// `apps/x` lives on `a` as `margo/apps/x`, `team/x` on `b` as `vendor/x`, the rest on `a`.
const ROUTES: &str = r#"routes:
  - {match: "apps/**", upstream: a, rewrite: {strip: "apps/", prefix: "margo/apps/"}}
  - {match: "team/**", upstream: b, rewrite: {strip: "team/", prefix: "vendor/"}}
  - {match: "**", upstream: a}
"#;

/// What clients see of the repositories [`fill`] puts on the two registries.
const MERGED: [&str; 5] = [
    "apps/db",
    "apps/web",
    "library/nginx",
    "team/alpha",
    "team/tool",
];

fn config(a: &Registry, b: &Registry, extra: &str) -> String {
    format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nadmin: {{address: \"{{admin}}\"}}\nupstreams:\n  - {{name: a, url: \"{}\"}}\n  - {{name: b, url: \"{}\"}}\n{ROUTES}{extra}",
        a.url(),
        b.url()
    )
}

fn push_image(c: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str) {
    push_blob(c, base, repo, EMPTY_CONFIG.as_bytes());
    let r = put_manifest(c, base, repo, tag, &image_manifest(&[], None));
    assert_eq!(r.status(), 201, "{repo}:{tag}");
}

/// Pushes straight to the registries, in their own namespaces: five repositories on `a`
/// (two of them no client can reach there), three on `b` (one unreachable).
fn fill(c: &reqwest::blocking::Client, a: &Registry, b: &Registry) {
    for repo in [
        "margo/apps/web",
        "margo/apps/db",
        "library/nginx",
        // A client's `apps/shadow` is rewritten to `margo/apps/shadow`; `team/ghost`
        // routes to `b`: neither is reachable on `a`.
        "apps/shadow",
        "team/ghost",
    ] {
        push_image(c, &a.url(), repo, "1.0.0");
    }
    for tag in ["1.1.0", "2.0.0"] {
        push_image(c, &a.url(), "margo/apps/web", tag);
    }
    // `other/x` on `b`: a client's `other/x` goes to `a`.
    for repo in ["vendor/tool", "vendor/alpha", "other/x"] {
        push_image(c, &b.url(), repo, "1.0.0");
    }
}

struct Page {
    status: u16,
    link: Option<String>,
    warnings: Vec<String>,
    body: Value,
}

fn get(c: &reqwest::blocking::Client, url: &str, token: Option<&str>) -> Page {
    let mut r = c.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().expect("GET");
    let header = |name: &str| -> Vec<String> {
        r.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    let link = header("link").into_iter().next();
    let warnings = header("warning");
    let status = r.status().as_u16();
    Page {
        status,
        link,
        warnings,
        body: r.json().unwrap_or(Value::Null),
    }
}

/// The target of a `Link: <…>; rel="next"` value.
fn next_target(link: &str) -> String {
    assert!(link.ends_with("; rel=\"next\""), "{link}");
    link.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(t, _)| t.to_owned())
        .expect("<target>")
}

fn names(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// Every page from `first` on, following the `Link` headers: the names and page count.
fn walk(
    c: &reqwest::blocking::Client,
    base: &str,
    first: &str,
    key: &str,
    token: Option<&str>,
) -> (Vec<String>, usize) {
    let (mut all, mut pages, mut url) = (Vec::new(), 0, format!("{base}{first}"));
    loop {
        let p = get(c, &url, token);
        assert_eq!(p.status, 200, "{url}: {}", p.body);
        pages += 1;
        assert!(pages < 50, "the links never end");
        all.extend(names(&p.body, key));
        match p.link {
            Some(link) => url = format!("{base}{}", next_target(&link)),
            None => return (all, pages),
        }
    }
}

/// Waits until the registry's log holds `want` `_catalog` reads, then a little longer to
/// be sure no more come: the exact count.
fn catalog_reads(reg: &Registry, want: usize) -> usize {
    reg.wait_for_requests("GET", "/v2/_catalog", want);
    std::thread::sleep(Duration::from_millis(300));
    reg.requests_matching("GET", "/v2/_catalog")
}

const KID: &str = "registry-catalog-test";

fn auth_section() -> String {
    format!(
        r#"auth:
  realm: "{{proxy_url}}/token"
  service: margo-catalog-merge
  issuers:
    - issuer: https://idp.test
      audiences: [margo-catalog-merge]
      keys: {{static: [{{kid: {KID}, pem_file: "{}"}}]}}
      algorithms: [RS256]
  rules:
    - match: [{{claim: groups, values: [apps-lister]}}]
      grant: {{"registry:catalog": [pull], "apps/**": [pull]}}
    - match: [{{claim: groups, values: [apps-reader]}}]
      grant: {{"apps/**": [pull]}}
"#,
        repo_root()
            .join("tests/fixtures/auth/rsa_public.pem")
            .display()
    )
}

fn mint(group: &str) -> String {
    mint_token(KID, "margo-catalog-merge", group)
}

#[test]
fn two_upstreams_merge_into_one_paginated_catalog() {
    let (a, b) = (Registry::start(), Registry::start());
    let c = http();
    fill(&c, &a, &b);
    // Upstream pages of 2 names: `a` (5 names) answers in 3 pages, `b` (3) in 2.
    let proxy = Proxy::start(&config(
        &a,
        &b,
        "registry_catalog: {cache_ttl: 60s, upstream_page_size: 2}\n",
    ));
    let base = proxy.url();

    // Eight clients at once: one listing is read (each upstream's pages once), and every
    // client gets the same first page.
    let firsts: Vec<Page> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| get(&http(), &format!("{base}/v2/_catalog?n=1"), None)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for p in &firsts {
        assert_eq!(p.status, 200, "{}", p.body);
        assert_eq!(p.body, json!({"repositories": ["apps/db"]}));
        assert_eq!(
            p.link.as_deref(),
            Some("</v2/_catalog?n=1&last=apps%2Fdb>; rel=\"next\"")
        );
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }
    assert_eq!(catalog_reads(&a, 3), 3, "a's three pages, once");
    assert_eq!(catalog_reads(&b, 2), 2, "b's two pages, once");

    // Every page size, walked through the links: the exact merged list, in order.
    for n in 1..=6 {
        let (all, pages) = walk(
            &c,
            &base,
            &format!("/v2/_catalog?n={n}"),
            "repositories",
            None,
        );
        assert_eq!(all, MERGED, "n={n}");
        assert_eq!(pages, MERGED.len().div_ceil(n), "n={n}");
    }
    // No `n`: everything (under the default page size), no link.
    let p = get(&c, &format!("{base}/v2/_catalog"), None);
    assert_eq!(names(&p.body, "repositories"), MERGED);
    assert_eq!(p.link, None);
    // Still the one listing: the walks were answered from the cache.
    assert_eq!(catalog_reads(&a, 3), 3);

    // `last` is read in the client's namespace (raw or percent-encoded)...
    let after = |q: &str| {
        names(
            &get(&c, &format!("{base}/v2/_catalog?{q}"), None).body,
            "repositories",
        )
    };
    assert_eq!(
        after("last=apps/web"),
        ["library/nginx", "team/alpha", "team/tool"]
    );
    assert_eq!(after("n=5&last=team%2Falpha"), ["team/tool"]);
    // ...where the upstream's name for `apps/web` is only a position between others.
    assert_eq!(after("last=margo/apps/web"), ["team/alpha", "team/tool"]);
    assert_eq!(after("n=2&last=apps/db"), ["apps/web", "library/nginx"]);
    // A bad `n` is a clear OCI error.
    let p = get(&c, &format!("{base}/v2/_catalog?n=many"), None);
    assert_eq!(p.status, 400);
    assert_eq!(p.body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");

    // Tags lists under a rewrite, paged by the proxy (distribution 2.8 ignores `n` and
    // `last` and lists tags unsorted): `last` is a tag, the links name the client's
    // repository, never the upstream's.
    let (tags, pages) = walk(&c, &base, "/v2/apps/web/tags/list?n=1", "tags", None);
    assert_eq!(
        (tags, pages),
        (vec!["1.0.0".into(), "1.1.0".into(), "2.0.0".into()], 3)
    );
    let p = get(
        &c,
        &format!("{base}/v2/apps/web/tags/list?n=1&last=1.0.0"),
        None,
    );
    assert_eq!(p.body, json!({"name": "apps/web", "tags": ["1.1.0"]}));
    assert_eq!(
        p.link.as_deref(),
        Some("</v2/apps/web/tags/list?n=1&last=1.1.0>; rel=\"next\"")
    );
    let p = get(
        &c,
        &format!("{base}/v2/apps/web/tags/list?last=1.1.0"),
        None,
    );
    assert_eq!(p.body, json!({"name": "apps/web", "tags": ["2.0.0"]}));
    assert_eq!(p.link, None);
    let p = get(&c, &format!("{base}/v2/team/tool/tags/list?last=0"), None);
    assert_eq!(p.body, json!({"name": "team/tool", "tags": ["1.0.0"]}));
    let p = get(&c, &format!("{base}/v2/apps/none/tags/list?n=1"), None);
    assert_eq!(p.status, 404, "{}", p.body);
    assert_eq!(p.body["errors"][0]["code"], "NAME_UNKNOWN");
    // Without `n`/`last` the list streams from the upstream, renamed.
    let p = get(&c, &format!("{base}/v2/apps/web/tags/list"), None);
    assert_eq!(p.body["name"], "apps/web");
    assert_eq!(p.body["tags"].as_array().map(Vec::len), Some(3));

    // With auth: the catalog needs its grant, and lists only what the token may pull,
    // pages filled with visible names.
    let authed = Proxy::start(&config(&a, &b, &auth_section()));
    let abase = authed.url();
    let lister = mint("apps-lister");
    let (all, pages) = walk(
        &c,
        &abase,
        "/v2/_catalog?n=1",
        "repositories",
        Some(&lister),
    );
    assert_eq!(
        (all, pages),
        (vec!["apps/db".to_owned(), "apps/web".to_owned()], 2)
    );
    let p = get(
        &c,
        &format!("{abase}/v2/_catalog"),
        Some(&mint("apps-reader")),
    );
    assert_eq!(p.status, 403, "no catalog grant: {}", p.body);
    assert_eq!(get(&c, &format!("{abase}/v2/_catalog"), None).status, 401);
}

#[test]
fn an_upstream_down_leaves_the_others_listed() {
    let (a, mut b) = (Registry::start(), Registry::start());
    let c = http();
    push_image(&c, &a.url(), "margo/apps/web", "1.0.0");
    push_image(&c, &b.url(), "vendor/tool", "1.0.0");
    let proxy = Proxy::start(&config(&a, &b, "registry_catalog: {cache_ttl: 0s}\n"));
    let url = format!("{}/v2/_catalog", proxy.url());
    let p = get(&c, &url, None);
    assert_eq!(names(&p.body, "repositories"), ["apps/web", "team/tool"]);

    b.proc.signal("KILL");
    assert!(b.proc.wait_exit(Duration::from_secs(5)).is_some());
    let p = get(&c, &url, None);
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(names(&p.body, "repositories"), ["apps/web"]);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].starts_with("299 margo-proxy \"catalog incomplete: upstream `b` left out"),
        "{:?}",
        p.warnings
    );
    let metrics = c
        .get(format!("{}/metrics", proxy.admin_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("margo_proxy_registry_catalog_upstream_failures_total{upstream=\"b\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("registry_catalog"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(proxy
        .proc
        .log_lines()
        .iter()
        .any(|l| l.contains("left out of the merged listing") && l.contains('b')));

    // Both down: an OCI error naming each, not an empty list.
    let mut a = a;
    a.proc.signal("KILL");
    assert!(a.proc.wait_exit(Duration::from_secs(5)).is_some());
    let p = get(&c, &url, None);
    assert_eq!(p.status, 502, "{}", p.body);
    assert_eq!(p.body["errors"][0]["code"], "UNAVAILABLE");
    let msg = p.body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("`a`") && msg.contains("`b`"), "{msg}");
}

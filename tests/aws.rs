//! Amazon-shaped upstreams with real parts: moto's server (PyPI `moto[server]`) for ECR's
//! `GetAuthorizationToken` and for S3, Debian's docker-registry storing into moto's S3
//! (redirects on: blob GETs answer `307` to presigned URLs) behind htpasswd for the
//! user:password moto's ECR token decodes to, skopeo and the `oras` package as clients.
//! One moto and one registry are shared by the tests running at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime};

use common::aws::{self, AwsProxy};
use common::*;

fn ecr_config(registry: &str, endpoint: &str, extra_ecr: &str, extra_upstream: &str) -> String {
    format!(
        "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: ecr\n    url: {registry}\n    credentials:\n      ecr: {{region: {}, endpoint: \"{endpoint}\"{extra_ecr}}}\n{extra_upstream}routes:\n  - match: \"**\"\n    upstream: ecr\nserver:\n  threads: 2\n",
        aws::REGION
    )
}

/// Pushes a one-layer image through `base` without client credentials; its layer digest.
fn push_image(base: &str, repo: &str, layer: &[u8]) -> (String, String) {
    let c = http();
    let d = push_blob(&c, base, repo, layer);
    let cfg = push_blob(&c, base, repo, EMPTY_CONFIG.as_bytes());
    assert_eq!(cfg, EMPTY_DIGEST);
    let m = image_manifest(
        &[(d.clone(), layer.len(), "application/octet-stream")],
        None,
    );
    let r = put_manifest(&c, base, repo, "v1", &m);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    (d, sha256(&m))
}

fn skopeo(args: &[&str]) -> std::process::Output {
    Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is required (scripts/setup installs it)")
}

/// Seconds since the epoch of an `X-Amz-Date` (`20261201T135534Z`).
fn amz_date(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(9..11) * 3600 + n(11..13) * 60 + n(13..15);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// Whether `url`'s `X-Amz-Signature` is the one the registry's S3 keys give for exactly
/// this method, host, path and query: any change on the way breaks it.
fn presigned_by_registry(method: &str, url: &str) -> bool {
    use aws_sigv4::http_request::{
        sign, PercentEncodingMode, SignableBody, SignableRequest, SignatureLocation,
        SigningSettings, UriPathNormalizationMode,
    };
    let u = url::Url::parse(url).unwrap();
    let q: Vec<(String, String)> = u.query_pairs().into_owned().collect();
    let get = |k: &str| {
        q.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let mut base = u.clone();
    base.set_query(None);
    let identity: aws_smithy_runtime_api::client::identity::Identity =
        aws_credential_types::Credentials::new(aws::S3_KEY, aws::S3_SECRET, None, None, "test")
            .into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(Duration::from_secs(get("X-Amz-Expires").parse().unwrap()));
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(aws::REGION)
        .name("s3")
        .time(amz_date(&get("X-Amz-Date")))
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        method,
        base.as_str(),
        std::iter::empty(),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, signature) = sign(req, &params).unwrap().into_parts();
    // Every query parameter is one the signature covers, with the value it signed.
    let signed: std::collections::BTreeMap<String, String> = instructions
        .params()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let given: std::collections::BTreeMap<String, String> = q.into_iter().collect();
    signature == given["X-Amz-Signature"] && signed == given
}

#[test]
fn ecr_push_and_pull_through_the_proxy_without_client_credentials() {
    let s = aws::shared();
    let proxy = AwsProxy::start(
        &ecr_config(&s.registry.url(), &s.moto.url(), "", ""),
        "AKIDPUSHPULL",
    );
    let c = http();
    // The registry itself wants the ECR account.
    let r = c.get(format!("{}/v2/", s.registry.url())).send().unwrap();
    assert_eq!(r.status(), 401);
    let layer = b"layer pushed through the proxy with an ECR token".to_vec();
    let (d, manifest) = push_image(&proxy.url(), "ecr/app", &layer);
    let r = c
        .get(format!("{}/v2/ecr/app/manifests/v1", proxy.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(sha256(&r.bytes().unwrap()), manifest);
    // The blob answer is the registry's redirect to moto's S3; the client follows it.
    let r = c
        .get(format!("{}/v2/ecr/app/blobs/{d}", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 307);
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    let got = c.get(&to).send().unwrap().bytes().unwrap();
    assert_eq!(&got[..], &layer[..]);
    // And directly at the registry, the same content is there under the ECR user.
    let r = c
        .get(format!("{}/v2/ecr/app/manifests/v1", s.registry.url()))
        .basic_auth("AWS", Some(&s.registry.password))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(sha256(&r.bytes().unwrap()), manifest);
    // The token came from moto, asked with a SigV4 signature for ECR with our keys.
    assert!(s.moto.wait_token_calls("AKIDPUSHPULL", 1) >= 1);
    let call = &s.moto.token_calls("AKIDPUSHPULL")[0];
    let auth = aws::header(call, "authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPUSHPULL/")
            && auth.contains(&format!("/{}/ecr/aws4_request", aws::REGION)),
        "{auth}"
    );
    assert_eq!(
        aws::header(call, "x-amz-security-token").as_deref(),
        Some("proxysession")
    );
    assert_eq!(
        aws::header(call, "content-type").as_deref(),
        Some("application/x-amz-json-1.1")
    );
    assert!(
        proxy.metric(r#"margo_proxy_ecr_token_requests_total{result="ok",upstream="ecr"}"#) >= 1.0
    );
}

#[test]
fn ecr_token_is_cached_single_flight_and_refreshed_before_expiry() {
    let s = aws::shared();
    // moto's tokens say they expired in 2015: read as ECR's 12 h, renewed 3 s after the
    // fetch with this margin.
    let proxy = AwsProxy::start(
        &ecr_config(
            &s.registry.url(),
            &s.moto.url(),
            ", refresh_margin: 11h59m57s",
            "",
        ),
        "AKIDREFRESH",
    );
    let url = format!("{}/v2/ecr/refresh/tags/list", proxy.url());
    let burst = || {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || http().get(&url).send().unwrap().status().as_u16())
            })
            .collect();
        for h in handles {
            // No such repository: the registry answers 404 once it took the token.
            assert_eq!(h.join().unwrap(), 404);
        }
    };
    burst();
    burst();
    assert_eq!(
        s.moto.wait_token_calls("AKIDREFRESH", 1),
        1,
        "one fetch for 16 requests"
    );
    std::thread::sleep(Duration::from_millis(3500));
    burst();
    assert_eq!(
        s.moto.wait_token_calls("AKIDREFRESH", 2),
        2,
        "refreshed once after 3 s"
    );
    assert_eq!(
        proxy.metric(r#"margo_proxy_ecr_token_requests_total{result="ok",upstream="ecr"}"#),
        2.0
    );
}

#[test]
fn ecr_api_down_gives_502_and_a_metric() {
    let s = aws::shared();
    let dead = format!("http://127.0.0.1:{}", aws::dead_port());
    let proxy = AwsProxy::start(&ecr_config(&s.registry.url(), &dead, "", ""), "AKIDDOWN");
    let c = http();
    for path in ["/v2/ecr/app/manifests/v1", "/v2/ecr/app/tags/list"] {
        let r = c.get(format!("{}{path}", proxy.url())).send().unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let body: serde_json::Value = r.json().unwrap();
        let e = &body["errors"][0];
        assert_eq!(e["code"], "UNAVAILABLE", "{body}");
        let m = e["message"].as_str().unwrap();
        assert!(m.contains("ECR API") && m.contains("unreachable"), "{m}");
    }
    assert!(
        proxy.metric(r#"margo_proxy_ecr_token_requests_total{result="error",upstream="ecr"}"#)
            >= 2.0
    );
}

#[test]
fn s3_redirects_reach_clients_intact_and_skopeo_and_oras_follow_them() {
    let s = aws::shared();
    let proxy = AwsProxy::start(
        &ecr_config(&s.registry.url(), &s.moto.url(), "", ""),
        "AKIDPASS",
    );
    let c = http();
    let layer = b"redirected layer".to_vec();
    let (d, _) = push_image(&proxy.url(), "pass/app", &layer);
    for method in ["GET", "HEAD"] {
        let r = c
            .request(
                method.parse().unwrap(),
                format!("{}/v2/pass/app/blobs/{d}", proxy.url()),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 307, "{method}");
        let to = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(
            to.starts_with(&format!("{}/{}/", s.moto.url(), aws::BUCKET)),
            "{to}"
        );
        assert!(to.contains("X-Amz-Signature="), "{to}");
        // Exactly what the registry signed: path and query untouched by the proxy.
        assert!(presigned_by_registry(method, &to), "{method} {to}");
        // The check notices a change: one more parameter, another method, another path.
        assert!(!presigned_by_registry(method, &format!("{to}&x=1")));
        assert!(!presigned_by_registry(
            if method == "GET" { "HEAD" } else { "GET" },
            &to
        ));
        assert!(!presigned_by_registry(
            method,
            &to.replacen("/data?", "/datA?", 1)
        ));
        if method == "GET" {
            let got = c.get(&to).send().unwrap();
            assert_eq!(got.status(), 200);
            assert_eq!(&got.bytes().unwrap()[..], &layer[..]);
            let seen: Vec<_> = s
                .moto
                .requests()
                .into_iter()
                .filter(|r| r["url"] == to.as_str())
                .collect();
            assert_eq!(
                seen.len(),
                1,
                "moto saw the client's GET with the URL as given"
            );
            assert_eq!(aws::header(&seen[0], "authorization"), None);
        }
    }

    // skopeo pulls through the proxy and follows the redirects to moto.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("layout");
    let o = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/pass/app:v1", proxy.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let blob = std::fs::read(out.join("blobs/sha256").join(&d[7..])).unwrap();
    assert_eq!(blob, layer);
    // oras pushes and pulls an artifact; its blob download is a redirect too.
    let file = work.path().join("notes.txt");
    std::fs::write(&file, "notes behind a presigned URL\n").unwrap();
    let py = repo_root().join(".venv/bin/python");
    let tool = repo_root().join("tests/python/oras_tool.py");
    let o = Command::new(&py)
        .arg(&tool)
        .args([
            "push",
            "--registry",
            &proxy.host(),
            "--repo",
            "pass/notes",
            "--tag",
            "1.0.0",
        ])
        .args(["--artifact-type", "application/vnd.example.notes.v1"])
        .args([
            "--file",
            &format!("{}|text/plain|notes.txt", file.display()),
        ])
        .output()
        .expect("the oras venv is required (scripts/setup creates it)");
    assert!(
        o.status.success(),
        "oras push: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let pulled = work.path().join("pulled");
    let before = s.moto.requests().len();
    let o = Command::new(&py)
        .arg(&tool)
        .args([
            "pull",
            "--registry",
            &proxy.host(),
            "--repo",
            "pass/notes",
            "--tag",
            "1.0.0",
        ])
        .args(["--outdir", &pulled.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "oras pull: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(pulled.join("notes.txt")).unwrap(),
        "notes behind a presigned URL\n"
    );
    // oras fetched the blob from moto itself, presigned, without an Authorization.
    let presigned: Vec<_> = s.moto.requests()[before..]
        .iter()
        .filter(|r| {
            r["method"] == "GET" && r["url"].as_str().unwrap_or("").contains("X-Amz-Signature=")
        })
        .cloned()
        .collect();
    assert!(!presigned.is_empty(), "oras followed the redirect to moto");
    assert!(presigned
        .iter()
        .all(|r| aws::header(r, "authorization").is_none()));
}

#[test]
fn blob_redirects_follow_streams_from_storage_and_fills_the_cache() {
    let s = aws::shared();
    let proxy = AwsProxy::start(
        &ecr_config(
            &s.registry.url(),
            &s.moto.url(),
            "",
            "    blob_redirects: follow\n",
        ),
        "AKIDFOLLOW",
    );
    let c = http();
    let layer = b"a layer the proxy fetches from object storage itself".to_vec();
    let (d, _) = push_image(&proxy.url(), "follow/app", &layer);
    let key = format!(
        "/docker/registry/v2/blobs/sha256/{}/{}/data",
        &d[7..9],
        &d[7..]
    );
    let storage_gets = || -> Vec<serde_json::Value> {
        s.moto
            .requests()
            .into_iter()
            .filter(|r| r["method"] == "GET" && r["url"].as_str().unwrap_or("").contains(&key))
            .collect()
    };
    let head = c
        .head(format!("{}/v2/follow/app/blobs/{d}", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        layer.len().to_string().as_str()
    );
    assert_eq!(head.headers()["docker-content-digest"], d.as_str());
    let r = c
        .get(format!("{}/v2/follow/app/blobs/{d}", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-margo-blob-redirect"], "followed");
    assert_eq!(&r.bytes().unwrap()[..], &layer[..]);
    let gets = storage_gets();
    assert_eq!(gets.len(), 1, "the proxy fetched the presigned URL once");
    let g = &gets[0];
    assert_eq!(
        aws::header(g, "authorization"),
        None,
        "no Authorization to the storage"
    );
    assert!(aws::header(g, "user-agent")
        .unwrap()
        .starts_with("margo-proxy/"));
    assert!(
        presigned_by_registry("GET", g["url"].as_str().unwrap()),
        "query intact"
    );
    // The blob cache filled from the followed answer: the next GET is a hit, no storage.
    let r = c
        .get(format!("{}/v2/follow/app/blobs/{d}", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-margo-cache"], "hit");
    assert_eq!(&r.bytes().unwrap()[..], &layer[..]);
    assert_eq!(storage_gets().len(), 1);
    // A client that cannot reach the storage still pulls: skopeo sees no redirect.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("layout");
    let o = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/follow/app:v1", proxy.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    assert!(
        o.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("blobs/sha256").join(&d[7..])).unwrap(),
        layer
    );
    // A range of a blob not cached yet: the storage's 206, the Range passed on to it.
    let other = b"0123456789 another layer, read in part".to_vec();
    let od = push_blob(&c, &proxy.url(), "follow/app", &other);
    let r = c
        .get(format!("{}/v2/follow/app/blobs/{od}", proxy.url()))
        .header("Range", "bytes=2-5")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 2-5/{}", other.len()).as_str()
    );
    assert_eq!(&r.bytes().unwrap()[..], b"2345");
    let okey = format!("/sha256/{}/{}/data", &od[7..9], &od[7..]);
    let ranged: Vec<_> = s
        .moto
        .requests()
        .into_iter()
        .filter(|r| r["url"].as_str().unwrap_or("").contains(&okey))
        .filter(|r| aws::header(r, "range").as_deref() == Some("bytes=2-5"))
        .collect();
    assert_eq!(ranged.len(), 1, "the storage got the client's Range");
    assert_eq!(aws::header(&ranged[0], "authorization"), None);
    // An unknown blob is the registry's own 404, relayed.
    let missing = sha256(b"not pushed");
    let r = c
        .get(format!("{}/v2/follow/app/blobs/{missing}", proxy.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn a_failed_refresh_keeps_the_valid_token_and_is_counted() {
    let s = aws::shared();
    // Its own ECR endpoint, stopped half way (the shared moto also holds the S3 data).
    let ecr = aws::Moto::start();
    let proxy = AwsProxy::start(
        &ecr_config(
            &s.registry.url(),
            &ecr.url(),
            ", refresh_margin: 11h59m57s",
            "",
        ),
        "AKIDOUTAGE",
    );
    let url = format!("{}/v2/ecr/outage/tags/list", proxy.url());
    assert_eq!(http().get(&url).send().unwrap().status(), 404);
    assert_eq!(ecr.wait_token_calls("AKIDOUTAGE", 1), 1);
    drop(ecr);
    std::thread::sleep(Duration::from_millis(3500));
    // Due for renewal, the ECR API gone: the token, still valid, keeps serving.
    assert_eq!(http().get(&url).send().unwrap().status(), 404);
    let series = |result: &str| {
        proxy.metric(&format!(
            r#"margo_proxy_ecr_token_requests_total{{result="{result}",upstream="ecr"}}"#
        ))
    };
    // One failed attempt, not one per request: the next is 30 s later.
    for _ in 0..3 {
        assert_eq!(http().get(&url).send().unwrap().status(), 404);
    }
    assert_eq!(series("ok"), 1.0);
    assert_eq!(series("error"), 1.0);
}

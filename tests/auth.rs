//! Bearer-token auth at the proxy with a real OpenID provider (oidc-provider) and a real
//! docker-registry: WFMs pull and cannot push, developers push in their namespace, stock
//! clients go through the challenge and the token endpoint, and the cache never lets an
//! unauthenticated client read.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use base64::Engine;
use common::*;

const RESOURCE: &str = "http://margo-proxy.test";

fn start(idp: &Idp, reg: &Registry) -> Proxy {
    start_with(idp, reg, "")
}

fn start_with(idp: &Idp, reg: &Registry, extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
admin: {{address: "{{admin}}"}}
upstreams: [{{name: main, url: "{upstream}"}}]
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
    - match: [{{claim: groups, values: [dev-acme]}}]
      grant: {{"apps/acme/**": [pull, push, delete]}}
  read_only: [{{claim: client_id, values: [wfm]}}]
  token_endpoint:
    idp_token_url: "{token_url}"
    resource: "{RESOURCE}"
    idp_scope: registry
{extra}"#,
        upstream = reg.url(),
        issuer = idp.get("issuer"),
        token_url = idp.get("token_endpoint"),
    ))
}

fn token(c: &reqwest::blocking::Client, proxy: &Proxy, user: &str) -> String {
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{user}-secret"));
    let r = c
        .get(format!(
            "{}/token?service=margo-it&scope=repository:apps/acme/app:pull",
            proxy.url()
        ))
        .header("Authorization", format!("Basic {creds}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "token for {user}");
    let v: serde_json::Value = r.json().unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Pushes a small manifest to apps/acme/app:1.0.0 with a developer's token.
fn developer_push(c: &reqwest::blocking::Client, proxy: &Proxy) -> (String, String) {
    let dev = token(c, proxy, "developer");
    let base = proxy.url();
    let auth = format!("Bearer {dev}");
    let r = c
        .post(format!("{base}/v2/apps/acme/app/blobs/uploads/"))
        .header("Authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "developer may start an upload");
    let loc = location(&base, &r);
    let r = c
        .put(format!("{loc}&digest={EMPTY_DIGEST}"))
        .header("Authorization", &auth)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let manifest = image_manifest(&[], None);
    let r = c
        .put(format!("{base}/v2/apps/acme/app/manifests/1.0.0"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    (dev, sha256(&manifest))
}

#[test]
fn wfm_pulls_and_is_refused_a_push_developer_pushes() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = start(&idp, &reg);
    let c = http();
    let (_dev, digest) = developer_push(&c, &proxy);
    let wfm = token(&c, &proxy, "wfm");
    let base = proxy.url();
    for _ in 0..2 {
        // The second read is a cache hit: authorization ran before it all the same.
        let r = c
            .get(format!("{base}/v2/apps/acme/app/manifests/1.0.0"))
            .header("Authorization", format!("Bearer {wfm}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    }
    let r = c
        .post(format!("{base}/v2/apps/acme/app/blobs/uploads/"))
        .header("Authorization", format!("Bearer {wfm}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "DENIED");
    // Nothing of the refused push reached the upstream.
    assert_eq!(
        reg.wait_for_requests("POST", "/v2/apps/acme/app/blobs/uploads/", 2),
        1
    );
}

#[test]
fn missing_token_gets_a_bearer_challenge_also_on_head_and_on_cache_hits() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = start(&idp, &reg);
    let c = http();
    developer_push(&c, &proxy);
    let url = format!("{}/v2/apps/acme/app/manifests/1.0.0", proxy.url());
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = c
            .request(method.clone(), &url)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{method}");
        let ch = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(ch.starts_with("Bearer realm=\""), "{ch}");
        assert!(
            ch.contains(&format!("realm=\"{}/token\"", proxy.url())),
            "{ch}"
        );
        assert!(ch.contains("service=\"margo-it\""), "{ch}");
        assert!(
            ch.contains("scope=\"repository:apps/acme/app:pull\""),
            "{ch}"
        );
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
    }
    // A forged token is refused with invalid_token.
    let r = c
        .get(&url)
        .header(
            "Authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
}

#[test]
fn developer_outside_its_namespace_is_denied() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = start(&idp, &reg);
    let c = http();
    let dev = token(&c, &proxy, "developer");
    let r = c
        .post(format!("{}/v2/apps/other/app/blobs/uploads/", proxy.url()))
        .header("Authorization", format!("Bearer {dev}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    // A mount from a repository it cannot pull is refused too.
    let r = c
        .post(format!(
            "{}/v2/apps/acme/app/blobs/uploads/?mount={EMPTY_DIGEST}&from=private/secret",
            proxy.url()
        ))
        .header("Authorization", format!("Bearer {dev}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[test]
fn skopeo_with_username_and_password_goes_through_the_token_endpoint() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = start(&idp, &reg);
    let c = http();
    developer_push(&c, &proxy);
    let dest = format!("docker://{}/apps/acme/app:1.0.0", proxy.host());
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ])
        .args(["--creds", "registry-user:registry-user-secret"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    let out = std::process::Command::new("skopeo")
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ])
        .args(["--creds", "registry-user:wrong-password"])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password must not pull");
    // Credentials and tokens never appear in the proxy's logs.
    for line in proxy.proc.log_lines() {
        assert!(
            !line.contains("registry-user-secret") && !line.contains("eyJ"),
            "{line}"
        );
    }
}

#[test]
fn key_rotation_at_the_idp_needs_no_restart() {
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    // Unknown kids trigger a JWKS refetch at most every 2 s here (10 s by default).
    let proxy = start_with(&idp, &reg, "  cache: {jwks_refetch_cooldown_seconds: 2}\n");
    let c = http();
    developer_push(&c, &proxy);
    let url = format!("{}/v2/apps/acme/app/tags/list", proxy.url());
    let before = token(&c, &proxy, "wfm");
    assert_eq!(
        c.get(&url).bearer_auth(&before).send().unwrap().status(),
        200
    );
    let r = c.post(idp.get("rotate_url")).send().unwrap();
    assert!(r.status().is_success());
    // A token signed with the new key: the proxy refetches the JWKS for the unknown kid
    // (the bridge validates what the IdP hands out, so it may wait for the cool-down).
    let mut after = String::new();
    for _ in 0..30 {
        let creds = base64::engine::general_purpose::STANDARD.encode("wfm:wfm-secret");
        let r = c
            .get(format!("{}/token?service=margo-it", proxy.url()))
            .header("Authorization", format!("Basic {creds}"))
            .send()
            .unwrap();
        if r.status() == 200 {
            after = r.json::<serde_json::Value>().unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        !after.is_empty(),
        "a token signed with the new key was issued"
    );
    let kid = |t: &str| -> String {
        let head = t.split('.').next().unwrap();
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_ne!(kid(&before), kid(&after), "the IdP signs with a new key");
    let mut status = 0;
    for _ in 0..30 {
        status = c
            .get(&url)
            .bearer_auth(&after)
            .send()
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(status, 200);
}

/// A proxy trusting, besides nothing else, an issuer whose key is the test RSA key in
/// `tests/fixtures/auth` (static keys, default settings: `typ: JWT` tokens allowed).
fn proxy_with_static_issuer(reg: &Registry) -> Proxy {
    let pem = repo_root().join("tests/fixtures/auth/rsa_public.pem");
    Proxy::start(&format!(
        r#"listeners: [{{address: "{{listen}}"}}]
upstreams: [{{name: main, url: "{upstream}"}}]
cache: {{enabled: false}}
auth:
  realm: "{{proxy_url}}/token"
  service: margo-it
  issuers:
    - issuer: "{STATIC_ISSUER}"
      audiences: ["{RESOURCE}"]
      keys: {{static: [{{kid: rsa, pem_file: "{pem}"}}]}}
  rules:
    - match: [{{claim: groups, values: [dev-acme]}}]
      grant: {{"apps/acme/**": [pull, push]}}
"#,
        upstream = reg.url(),
        pem = pem.display(),
    ))
}

const STATIC_ISSUER: &str = "https://static-issuer.test";

/// A token of the static issuer, signed as IdPs sign ID tokens (`typ: JWT`), with
/// `aud` naming the registry and `extra` claims.
fn static_token(extra: serde_json::Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({
        "iss": STATIC_ISSUER, "aud": RESOURCE, "sub": "dev", "iat": now, "exp": now + 300,
        "groups": ["dev-acme"]
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some("rsa".into());
    h.typ = Some("JWT".into());
    let key = std::fs::read(repo_root().join("tests/fixtures/auth/rsa_private.pem")).unwrap();
    jsonwebtoken::encode(
        &h,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&key).unwrap(),
    )
    .unwrap()
}

#[test]
fn id_tokens_cannot_write_a_manifest() {
    // Issue 12 #1: a Cognito-style (`token_use: id`) or Keycloak-style (`typ: ID`) ID
    // token, `aud` the registry, header `typ: JWT`, wrote a manifest.
    let reg = Registry::start();
    let proxy = proxy_with_static_issuer(&reg);
    let c = http();
    let base = proxy.url();
    let manifest = image_manifest(&[], None);
    let push = |token: &str, tag: &str| {
        let auth = format!("Bearer {token}");
        let r = c
            .post(format!("{base}/v2/apps/acme/app/blobs/uploads/"))
            .header("Authorization", &auth)
            .send()
            .unwrap();
        if r.status() != 202 {
            return r;
        }
        let loc = location(&base, &r);
        let r = c
            .put(format!("{loc}&digest={EMPTY_DIGEST}"))
            .header("Authorization", &auth)
            .body(EMPTY_CONFIG)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        c.put(format!("{base}/v2/apps/acme/app/manifests/{tag}"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap()
    };
    for (what, extra, tag) in [
        ("Cognito", serde_json::json!({"token_use": "id"}), "cognito"),
        (
            "Keycloak",
            serde_json::json!({"typ": "ID", "azp": "x"}),
            "keycloak",
        ),
    ] {
        let id_token = static_token(extra);
        let r = c
            .put(format!("{base}/v2/apps/acme/app/manifests/{tag}"))
            .header("Authorization", format!("Bearer {id_token}"))
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{what} ID token");
        let ch = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(ch.contains("error=\"invalid_token\""), "{what}: {ch}");
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED", "{what}");
        assert_eq!(push(&id_token, tag).status(), 401, "{what}: upload refused");
        assert_eq!(
            reg.wait_for_requests("PUT", &format!("/v2/apps/acme/app/manifests/{tag}"), 1),
            0,
            "{what}: nothing reached the registry"
        );
    }
    // The same token as an access token (Cognito `token_use: access`) writes.
    let access = static_token(serde_json::json!({"token_use": "access"}));
    let r = push(&access, "access");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    assert_eq!(
        reg.answered("PUT", "/v2/apps/acme/app/manifests/access", 201, 1),
        1
    );
}

/// Writes a one-layer OCI image layout (what `skopeo copy oci:` reads); returns the
/// manifest digest.
fn write_oci_layout(dir: &std::path::Path, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> String {
        let d = sha256(data);
        std::fs::write(blobs.join(&d[7..]), data).unwrap();
        d
    };
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        let content = b"anonymous pull, authenticated push\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &content[..]).unwrap();
        b.finish().unwrap();
    }
    let diff_id = sha256(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let layer_d = put(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}
    }))
    .unwrap();
    let config_d = put(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer.len()}]
    }))
    .unwrap();
    let manifest_d = put(&manifest);
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_d, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}}]
        }))
        .unwrap(),
    )
    .unwrap();
    manifest_d
}

fn skopeo(args: &[&str]) -> std::process::Output {
    std::process::Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
        .expect("skopeo is required (scripts/setup installs it)")
}

#[test]
fn skopeo_pushes_with_credentials_and_pulls_anonymously_on_one_proxy() {
    // Issue 14 #10: with `anonymous_pull`, `/v2/` answered 200, so skopeo never asked
    // for a token and its push failed "unauthorized".
    let idp = Idp::start(RESOURCE);
    let reg = Registry::start();
    let proxy = start_with(&idp, &reg, "  anonymous_pull: [\"apps/acme/**\"]\n");
    let c = http();
    // The ping is challenged, so clients learn the realm...
    let r = c.get(format!("{}/v2/", proxy.url())).send().unwrap();
    assert_eq!(r.status(), 401);
    let ch = r.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        ch.starts_with(&format!("Bearer realm=\"{}/token\"", proxy.url())),
        "{ch}"
    );

    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let digest = write_oci_layout(&src, "v1");
    let dest = format!("docker://{}/apps/acme/anon:1.0.0", proxy.host());
    // ...and push with credentials through the token endpoint.
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "registry-user:registry-user-secret",
        &format!("oci:{}:v1", src.display()),
        &dest,
    ]);
    assert!(
        out.status.success(),
        "authenticated push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        reg.answered("PUT", "/v2/apps/acme/anon/manifests/1.0.0", 201, 1),
        1
    );
    // Without credentials: pulls work, pushes do not.
    let out = skopeo(&["inspect", "--tls-verify=false", "--raw", &dest]);
    assert!(
        out.status.success(),
        "anonymous inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&out.stdout), digest);
    let back = work.path().join("back");
    let out = skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &dest,
        &format!("oci:{}:v1", back.display()),
    ]);
    assert!(
        out.status.success(),
        "anonymous pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let out = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", src.display()),
        &format!("docker://{}/apps/acme/anon:2.0.0", proxy.host()),
    ]);
    assert!(!out.status.success(), "an anonymous push must fail");
    assert_eq!(
        reg.wait_for_requests("PUT", "/v2/apps/acme/anon/manifests/2.0.0", 1),
        0
    );
    // Plain HTTP clients pull anonymously without any token dance.
    let r = c
        .get(format!("{}/v2/apps/acme/anon/manifests/1.0.0", proxy.url()))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}

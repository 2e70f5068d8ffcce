//! The proxy's own account at an upstream that speaks the distribution token flow: a real
//! `docker-registry` (distribution 2.8) with `auth: token`, and a real token issuer in this
//! process that signs ES256 JWTs with a self-signed certificate (made by `openssl` at test
//! time) which the registry trusts through its `rootcertbundle`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
const SERVICE: &str = "margo-test-registry";
const ISSUER: &str = "margo-test-token-issuer";
const USER: &str = "proxy-account";
const PASSWORD: &str = "Tok3n-Flow-s3cret";
/// Repositories under this prefix get a token that grants nothing, so the registry
/// answers the proxy with a real `insufficient_scope` challenge.
const DENIED_PREFIX: &str = "denied/";
/// How long a test's servers may live at most, whatever happens to the test.
const SERVER_LIFETIME: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------- the token issuer

/// One `GET /token` the issuer received.
#[derive(Debug, Clone)]
struct TokenRequest {
    service: Option<String>,
    scopes: Vec<String>,
    /// The Basic credentials matched the proxy's account.
    accepted: bool,
}

#[derive(Default)]
struct IssuerLog {
    requests: Vec<TokenRequest>,
    /// Every token handed out, to check none reaches a client.
    tokens: Vec<String>,
}

struct SigningKey {
    key: jsonwebtoken::EncodingKey,
    /// Base64 (standard) DER of the self-signed certificate, for the `x5c` header.
    cert_b64: String,
}

/// A distribution token server (https://distribution.github.io/distribution/spec/auth/token/)
/// on 127.0.0.1: Basic credentials in, an ES256 JWT granting the requested scopes out.
/// Stops when dropped, or after `SERVER_LIFETIME`.
struct Issuer {
    port: u16,
    log: Arc<Mutex<IssuerLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Issuer {
    fn start(signing: SigningKey, expires_in: u64) -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind issuer");
        let port = listener.local_addr().expect("issuer address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let log = Arc::new(Mutex::new(IssuerLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let jti = AtomicU64::new(0);
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve_token_request(stream, &signing, expires_in, &log2, &jti);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Issuer {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn requests(&self) -> Vec<TokenRequest> {
        self.log.lock().unwrap().requests.clone()
    }

    fn tokens(&self) -> Vec<String> {
        self.log.lock().unwrap().tokens.clone()
    }

    /// Accepted token requests asking for exactly `scopes`.
    fn count(&self, scopes: &[&str]) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.accepted && r.scopes == scopes)
            .count()
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token_request(
    mut stream: TcpStream,
    signing: &SigningKey,
    expires_in: u64,
    log: &Mutex<IssuerLog>,
    jti: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        return respond(&mut stream, "404 Not Found", &[], "{}");
    }
    let mut service = None;
    let mut scopes = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "service" => service = Some(v.into_owned()),
            "scope" => scopes.push(v.into_owned()),
            _ => {}
        }
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let accepted = headers.get("authorization") == Some(&expected);
    log.lock().unwrap().requests.push(TokenRequest {
        service: service.clone(),
        scopes: scopes.clone(),
        accepted,
    });
    if !accepted {
        return respond(
            &mut stream,
            "401 Unauthorized",
            &[("WWW-Authenticate", "Basic realm=\"token issuer\"")],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
        );
    }
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // `type:name:actions`; names never contain `:` here.
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let actions: Vec<&str> = if name.starts_with(DENIED_PREFIX) {
                Vec::new()
            } else {
                actions.split(',').collect()
            };
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": USER,
        "aud": service.as_deref().unwrap_or(SERVICE),
        "exp": now + expires_in,
        "nbf": now - 1,
        "iat": now,
        "jti": format!("jti-{}", jti.fetch_add(1, Ordering::Relaxed)),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.x5c = Some(vec![signing.cert_b64.clone()]);
    let token = jsonwebtoken::encode(&header, &claims, &signing.key).expect("sign token");
    log.lock().unwrap().tokens.push(token.clone());
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(now),
    })
    .to_string();
    respond(
        &mut stream,
        "200 OK",
        &[("Content-Type", "application/json")],
        &body,
    )
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes())?;
    stream.flush()
}

/// `2026-11-22T10:00:00Z` from Unix seconds (days-to-civil, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// An ES256 key and a self-signed certificate for it, made by `openssl` in `dir`.
/// Returns the signing key and the certificate's PEM path (the registry's root bundle).
fn make_signing_key(dir: &Path) -> (SigningKey, std::path::PathBuf) {
    assert!(
        tool_available("openssl"),
        "the `openssl` command is required to make the token issuer's certificate"
    );
    let (key, cert) = (dir.join("issuer.key"), dir.join("issuer.crt"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=margo-test-token-issuer",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key_pem = std::fs::read(&key).unwrap();
    let cert_pem = std::fs::read_to_string(&cert).unwrap();
    let cert_b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    (
        SigningKey {
            key: jsonwebtoken::EncodingKey::from_ec_pem(&key_pem).expect("PKCS#8 EC key"),
            cert_b64,
        },
        cert,
    )
}

// ------------------------------------------------------- registry with token auth

/// `docker-registry` with `auth: token` pointing at the issuer; killed when dropped.
fn token_registry(issuer: &Issuer, root_bundle: &Path) -> Registry {
    Registry::start_with(RegistryOptions {
        auth_yaml: Some(format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            issuer.realm(),
            root_bundle.display()
        )),
        ..RegistryOptions::default()
    })
}

// ------------------------------------------------------------------- test set-up

struct Setup {
    issuer: Issuer,
    registry: Registry,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let (signing, cert) = make_signing_key(dir.path());
    let issuer = Issuer::start(signing, 300);
    let registry = token_registry(&issuer, &cert);
    Setup {
        issuer,
        registry,
        _dir: dir,
    }
}

/// The proxy in front of the token-protected registry with `password` as its account's.
/// The manifest cache is off so that every pull really reaches the upstream with a token.
fn proxy_with_password(s: &Setup, password: &str) -> Proxy {
    Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{}\"\n    credentials: {{username: {USER}, password: \"{password}\"}}\ncache: {{enabled: false}}\nserver: {{threads: 2}}\n",
        s.registry.url()
    ))
}

/// Pushes a one-layer image `repo:tag` through `base`; returns (layer digest, manifest digest).
fn push_image(
    c: &reqwest::blocking::Client,
    base: &str,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> (String, String) {
    let d = push_blob(c, base, repo, layer);
    push_blob(c, base, repo, EMPTY_CONFIG.as_bytes());
    let manifest = image_manifest(
        &[(d.clone(), layer.len(), "application/octet-stream")],
        None,
    );
    let r = put_manifest(c, base, repo, tag, &manifest);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    (d, sha256(&manifest))
}

/// Pulls `repo:tag` (manifest, then its layer) through `base` and checks the bytes.
fn pull_image(c: &reqwest::blocking::Client, base: &str, repo: &str, tag: &str, layer: &[u8]) {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "manifest of {repo}:{tag}");
    let m: serde_json::Value = r.json().unwrap();
    let d = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    let r = c.get(format!("{base}/v2/{repo}/blobs/{d}")).send().unwrap();
    assert_eq!(r.status(), 200, "layer of {repo}:{tag}");
    assert_eq!(r.bytes().unwrap().as_ref(), layer);
}

/// What a client saw of one response.
struct Seen {
    what: String,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn seen(what: &str, r: reqwest::blocking::Response) -> Seen {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Seen {
        what: what.to_owned(),
        status,
        headers,
        body: r.text().unwrap_or_default(),
    }
}

// ------------------------------------------------------------------------- tests

#[test]
fn client_without_credentials_pushes_and_pulls_while_the_upstream_demands_tokens() {
    let s = setup();
    let c = http();
    let reg = s.registry.url();

    // Directly, without a token, the registry refuses everything and points at the issuer.
    let layer_digest = sha256(b"token layer");
    let direct = [
        c.get(format!("{reg}/v2/")).send().unwrap(),
        c.post(format!("{reg}/v2/tok/app/blobs/uploads/"))
            .send()
            .unwrap(),
        put_manifest(&c, &reg, "tok/app", "v1", &image_manifest(&[], None)),
        c.get(format!("{reg}/v2/tok/app/manifests/v1"))
            .send()
            .unwrap(),
        c.get(format!("{reg}/v2/tok/app/blobs/{layer_digest}"))
            .send()
            .unwrap(),
    ];
    for r in &direct {
        assert_eq!(r.status(), 401, "{} direct", r.url());
        let challenge = r.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.starts_with("Bearer ")
                && challenge.contains(&s.issuer.realm())
                && challenge.contains(SERVICE),
            "{challenge}"
        );
    }
    assert!(s.issuer.requests().is_empty());

    // Through the proxy, a client with no credentials at all pushes and pulls.
    let proxy = proxy_with_password(&s, PASSWORD);
    let base = proxy.url();
    let (d, md) = push_image(&c, &base, "tok/app", "v1", b"token layer");
    assert_eq!(d, layer_digest);
    pull_image(&c, &base, "tok/app", "v1", b"token layer");
    let r = c
        .get(format!("{base}/v2/tok/app/manifests/{md}"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .head(format!("{base}/v2/tok/app/blobs/{d}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // The registry accepted the proxy's tokens for exactly these requests...
    assert_eq!(
        s.registry
            .answered("PUT", "/v2/tok/app/manifests/v1", 201, 1),
        1
    );
    assert!(s.registry.answered("GET", "/v2/tok/app/blobs/", 200, 1) >= 1);
    // ...which the issuer minted for the proxy's account, asked with the registry's
    // service and the scopes each request needs.
    let reqs = s.issuer.requests();
    assert!(reqs.iter().all(|r| r.accepted), "{reqs:?}");
    assert!(
        reqs.iter().all(|r| r.service.as_deref() == Some(SERVICE)),
        "{reqs:?}"
    );
    assert!(
        s.issuer.count(&["repository:tok/app:pull,push"]) >= 1,
        "{reqs:?}"
    );
    assert!(
        s.issuer.count(&["repository:tok/app:pull"]) >= 1,
        "{reqs:?}"
    );
}

#[test]
fn client_never_sees_the_upstream_challenge_or_token() {
    let s = setup();
    let c = http();
    let proxy = proxy_with_password(&s, PASSWORD);
    let base = proxy.url();
    let (d, md) = push_image(&c, &base, "tok/see", "v1", b"see layer");

    // The registry does challenge a token that lacks the scope (the issuer grants nothing
    // under `denied/`): the proxy meets a real upstream challenge on that repository.
    let t: serde_json::Value = c
        .get(format!(
            "{}?service={SERVICE}&scope=repository:{DENIED_PREFIX}x:pull",
            s.issuer.realm()
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let r = c
        .get(format!(
            "{}/v2/{DENIED_PREFIX}x/manifests/v1",
            s.registry.url()
        ))
        .bearer_auth(t["token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("insufficient_scope"));

    let manifest_accept = "application/vnd.oci.image.manifest.v1+json";
    let mut all = vec![
        seen("ping", c.get(format!("{base}/v2/")).send().unwrap()),
        seen(
            "manifest by tag",
            c.get(format!("{base}/v2/tok/see/manifests/v1"))
                .header("Accept", manifest_accept)
                .send()
                .unwrap(),
        ),
        seen(
            "manifest head by digest",
            c.head(format!("{base}/v2/tok/see/manifests/{md}"))
                .header("Accept", manifest_accept)
                .send()
                .unwrap(),
        ),
        seen(
            "blob",
            c.get(format!("{base}/v2/tok/see/blobs/{d}"))
                .send()
                .unwrap(),
        ),
        seen(
            "tags",
            c.get(format!("{base}/v2/tok/see/tags/list"))
                .send()
                .unwrap(),
        ),
        seen(
            "unknown manifest",
            c.get(format!("{base}/v2/tok/see/manifests/nope"))
                .header("Accept", manifest_accept)
                .send()
                .unwrap(),
        ),
        seen(
            "upload start",
            c.post(format!("{base}/v2/tok/see/blobs/uploads/"))
                .send()
                .unwrap(),
        ),
        seen(
            "manifest push",
            put_manifest(&c, &base, "tok/see", "v2", &image_manifest(&[], None)),
        ),
        seen(
            "catalog",
            c.get(format!("{base}/v2/_catalog")).send().unwrap(),
        ),
    ];
    for x in &all {
        assert!(
            x.status < 300 || x.what == "unknown manifest",
            "{}: {}",
            x.what,
            x.status
        );
    }
    // Where the upstream challenges the proxy's token, the client still gets no challenge.
    all.push(seen(
        "denied pull",
        c.get(format!("{base}/v2/{DENIED_PREFIX}x/manifests/v1"))
            .header("Accept", manifest_accept)
            .send()
            .unwrap(),
    ));
    all.push(seen(
        "denied push",
        c.post(format!("{base}/v2/{DENIED_PREFIX}x/blobs/uploads/"))
            .send()
            .unwrap(),
    ));
    for x in &all[all.len() - 2..] {
        // Not a bare 401 (it would carry no challenge the client could answer): the
        // proxy's account was refused, and the client is told so.
        assert_eq!(x.status, 403, "{}: {}", x.what, x.body);
        let v: serde_json::Value = serde_json::from_str(&x.body).expect("OCI error body");
        assert_eq!(v["errors"][0]["code"], "DENIED", "{}: {}", x.what, x.body);
        assert!(
            !x.body.contains(DENIED_PREFIX),
            "{}: the upstream's answer is not relayed: {}",
            x.what,
            x.body
        );
    }
    assert!(
        s.registry
            .answered("GET", &format!("/v2/{DENIED_PREFIX}x/manifests/v1"), 401, 1)
            >= 1,
        "the upstream challenged the proxy"
    );

    let tokens = s.issuer.tokens();
    assert!(tokens.len() >= 3, "the token flow ran: {}", tokens.len());
    for x in &all {
        for (k, v) in &x.headers {
            assert_ne!(k, "www-authenticate", "{}: {v}", x.what);
            assert!(
                !v.contains("Bearer") && !v.contains(&s.issuer.realm()),
                "{}: {k}: {v}",
                x.what
            );
            for t in &tokens {
                assert!(!v.contains(t.as_str()), "{}: token in {k}", x.what);
            }
        }
        for t in &tokens {
            assert!(!x.body.contains(t.as_str()), "{}: token in body", x.what);
        }
    }
    for line in proxy.proc.log_lines() {
        for t in &tokens {
            assert!(!line.contains(t.as_str()), "token logged: {line}");
        }
        assert!(!line.contains(PASSWORD), "password logged: {line}");
    }
}

#[test]
fn tokens_are_cached_per_scope() {
    let s = setup();
    let c = http();
    let proxy = proxy_with_password(&s, PASSWORD);
    let base = proxy.url();
    push_image(&c, &base, "cache/one", "v1", b"layer one");
    push_image(&c, &base, "cache/two", "v1", b"layer two");
    let push_scope = ["repository:cache/one:pull,push"];
    let (one, two) = (["repository:cache/one:pull"], ["repository:cache/two:pull"]);
    // Two blob uploads (POST + PUT each) and a manifest PUT: one token for all of them.
    assert_eq!(s.issuer.count(&push_scope), 1, "{:?}", s.issuer.requests());
    assert_eq!(s.issuer.count(&one), 0);

    for _ in 0..5 {
        pull_image(&c, &base, "cache/one", "v1", b"layer one");
    }
    // Ten upstream requests, all accepted with the one cached token.
    assert_eq!(
        s.registry
            .answered("GET", "/v2/cache/one/manifests/v1", 200, 5),
        5
    );
    assert_eq!(
        s.registry.answered("GET", "/v2/cache/one/blobs/", 200, 5),
        5
    );
    assert_eq!(s.issuer.count(&one), 1, "{:?}", s.issuer.requests());

    // Another repository is another scope: a new token, once.
    for _ in 0..3 {
        pull_image(&c, &base, "cache/two", "v1", b"layer two");
    }
    assert_eq!(s.issuer.count(&two), 1, "{:?}", s.issuer.requests());
    // The first repository's token is still cached.
    pull_image(&c, &base, "cache/one", "v1", b"layer one");
    assert_eq!(s.issuer.count(&one), 1, "{:?}", s.issuer.requests());
    assert_eq!(s.issuer.count(&push_scope), 1);
}

#[test]
fn wrong_proxy_credentials_give_an_oci_error_that_never_shows_the_password() {
    let s = setup();
    let c = http();
    let wrong = "Wr0ng-Pa55word-for-proxy";
    let proxy = proxy_with_password(&s, wrong);
    let base = proxy.url();
    let all = [
        seen("ping", c.get(format!("{base}/v2/")).send().unwrap()),
        seen(
            "manifest",
            c.get(format!("{base}/v2/bad/creds/manifests/v1"))
                .send()
                .unwrap(),
        ),
        seen(
            "upload start",
            c.post(format!("{base}/v2/bad/creds/blobs/uploads/"))
                .send()
                .unwrap(),
        ),
        seen(
            "manifest push",
            put_manifest(&c, &base, "bad/creds", "v1", &image_manifest(&[], None)),
        ),
    ];
    let basic_wrong = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{wrong}"));
    for x in &all {
        // The proxy's account is broken, not the client's: a gateway error, no challenge
        // the client could answer.
        assert_eq!(x.status, 502, "{}: {}", x.what, x.body);
        let v: serde_json::Value = serde_json::from_str(&x.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", x.what, x.body));
        let e = &v["errors"][0];
        assert_eq!(e["code"], "UNAVAILABLE", "{}: {}", x.what, x.body);
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("refused the proxy's credentials"),
            "{}: {message}",
            x.what
        );
        for secret in [wrong, PASSWORD, basic_wrong.as_str()] {
            assert!(!x.body.contains(secret), "{}: {}", x.what, x.body);
            assert!(
                x.headers.iter().all(|(_, v)| !v.contains(secret)),
                "{}: secret in headers",
                x.what
            );
        }
        assert!(
            x.headers.iter().all(|(k, _)| k != "www-authenticate"),
            "{}",
            x.what
        );
    }
    // The issuer really refused the proxy's account, and minted nothing.
    let reqs = s.issuer.requests();
    assert!(reqs.len() >= all.len(), "{reqs:?}");
    assert!(reqs.iter().all(|r| !r.accepted), "{reqs:?}");
    assert!(s.issuer.tokens().is_empty());
    // The proxy stopped at the token service: nothing about the repository reached the
    // registry (its access log is written just after each response).
    std::thread::sleep(Duration::from_millis(300));
    let reached: Vec<String> = s
        .registry
        .proc
        .log_lines()
        .iter()
        .filter(|l| l.contains("/v2/bad/"))
        .cloned()
        .collect();
    assert!(reached.is_empty(), "{reached:?}");
    let logs = proxy.proc.log_lines();
    assert!(
        logs.iter()
            .any(|l| l.contains("refused the proxy's credentials")),
        "the operator can see why: {logs:?}"
    );
    for line in &logs {
        for secret in [wrong, PASSWORD, basic_wrong.as_str()] {
            assert!(!line.contains(secret), "secret logged: {line}");
        }
    }
}

#[test]
fn rfc3339_dates() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
}

#[test]
fn a_refused_scope_does_not_throw_away_the_other_tokens() {
    let s = setup();
    let c = http();
    let proxy = proxy_with_password(&s, PASSWORD);
    let base = proxy.url();
    push_image(&c, &base, "keep/one", "v1", b"kept layer");
    pull_image(&c, &base, "keep/one", "v1", b"kept layer");
    let kept = ["repository:keep/one:pull"];
    assert_eq!(s.issuer.count(&kept), 1, "{:?}", s.issuer.requests());

    // The issuer grants nothing under `denied/`: the registry answers
    // 401 insufficient_scope to the proxy's token, three times over.
    for _ in 0..3 {
        let r = c
            .get(format!("{base}/v2/{DENIED_PREFIX}y/manifests/v1"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap();
        assert_eq!(r.status(), 403);
    }
    assert!(
        s.registry
            .answered("GET", &format!("/v2/{DENIED_PREFIX}y/manifests/v1"), 401, 3)
            >= 3
    );
    // ...which says nothing about other repositories: their token stays cached.
    pull_image(&c, &base, "keep/one", "v1", b"kept layer");
    assert_eq!(s.issuer.count(&kept), 1, "{:?}", s.issuer.requests());
}

// ------------------------------------------- token services of other registries' shapes
//
// The proxy's token client (`UpstreamCredentials`) against an in-process registry ping and
// token service that answer in the shapes Harbor, Zot, GHCR and the distribution
// specification document. One case per shape.

use margo_proxy::upstream::credentials::UpstreamCredentials;

/// One request the shape server received.
#[derive(Debug, Clone)]
struct ShapeRequest {
    path: String,
    service: Option<String>,
    scopes: Vec<String>,
    authorization: Option<String>,
}

/// `GET /v2/` answers 401 with `challenge` (`{realm}` replaced by this server's token URL
/// at `token_path`); `GET token_path` answers `answer(n)` for its n-th token (from 1).
struct ShapeServer {
    port: u16,
    log: Arc<Mutex<Vec<ShapeRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ShapeServer {
    fn start(
        challenge: &str,
        token_path: &'static str,
        answer: impl Fn(usize) -> String + Send + 'static,
    ) -> ShapeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind shape server");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let challenge =
            challenge.replace("{realm}", &format!("http://127.0.0.1:{port}{token_path}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut issued = 0;
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let Ok(Some(req)) = read_shape_request(&mut stream) else {
                            continue;
                        };
                        log2.lock().unwrap().push(req.clone());
                        let _ = if req.path == "/v2/" {
                            respond(
                                &mut stream,
                                "401 Unauthorized",
                                &[("WWW-Authenticate", challenge.as_str())],
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                            )
                        } else if req.path == token_path {
                            issued += 1;
                            respond(
                                &mut stream,
                                "200 OK",
                                &[("Content-Type", "application/json")],
                                &answer(issued),
                            )
                        } else if req.authorization.is_none() {
                            // As GHCR: even public content needs a (maybe anonymous) token.
                            respond(
                                &mut stream,
                                "401 Unauthorized",
                                &[("WWW-Authenticate", challenge.as_str())],
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
                            )
                        } else {
                            respond(&mut stream, "404 Not Found", &[], "{}")
                        };
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ShapeServer {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn ping_url(&self) -> String {
        format!("http://127.0.0.1:{}/v2/", self.port)
    }

    fn token_requests(&self) -> Vec<ShapeRequest> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path != "/v2/")
            .cloned()
            .collect()
    }
}

impl Drop for ShapeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_shape_request(stream: &mut TcpStream) -> std::io::Result<Option<ShapeRequest>> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() > 64 * 1024 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .unwrap_or_default()
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut service = None;
    let mut scopes = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "service" => service = Some(v.into_owned()),
            "scope" => scopes.push(v.into_owned()),
            _ => {}
        }
    }
    Ok(Some(ShapeRequest {
        path: path.to_owned(),
        service,
        scopes,
        authorization,
    }))
}

fn client() -> reqwest::Client {
    margo_proxy::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn harbor_token_service_with_several_scopes_and_actions() {
    // Harbor's challenge, as its v2auth middleware builds it (realm `<ep>/service/token`,
    // service `harbor-registry`; quoted in https://github.com/goharbor/harbor/issues/17930),
    // token requests with Basic credentials and several scopes
    // (https://github.com/goharbor/harbor/issues/9482, https://github.com/goharbor/harbor/pull/84),
    // and an answer carrying both `token` and `access_token` with `expires_in` and
    // `issued_at` (https://distribution.github.io/distribution/spec/auth/token/).
    let srv = ShapeServer::start(
        r#"Bearer realm="{realm}",service="harbor-registry""#,
        "/service/token",
        |n| {
            format!(
                r#"{{"token":"harbor-{n}","access_token":"harbor-{n}","expires_in":1800,"issued_at":"2026-12-01T10:00:00Z"}}"#
            )
        },
    );
    let creds = UpstreamCredentials::new(
        "admin".into(),
        "Harbor12345".into(),
        srv.ping_url(),
        client(),
    );
    // A cross-repository mount: push and pull on the target, pull on the source.
    let mount = strings(&[
        "repository:library/redis:pull,push",
        "repository:library/base:pull",
    ]);
    let catalog = strings(&["registry:catalog:*"]);
    for _ in 0..3 {
        assert_eq!(
            creds.authorization(&mount).await.unwrap().as_deref(),
            Some("Bearer harbor-1")
        );
    }
    assert_eq!(
        creds.authorization(&catalog).await.unwrap().as_deref(),
        Some("Bearer harbor-2")
    );
    let reqs = srv.token_requests();
    assert_eq!(reqs.len(), 2, "one token per scope set, cached: {reqs:?}");
    assert_eq!(
        reqs[0].scopes, mount,
        "each scope its own parameter, in order"
    );
    assert_eq!(reqs[1].scopes, catalog);
    for r in &reqs {
        assert_eq!(r.service.as_deref(), Some("harbor-registry"));
        assert_eq!(
            r.authorization.as_deref(),
            Some(basic_header("admin", "Harbor12345").as_str())
        );
    }
}

#[tokio::test]
async fn zot_behind_an_oauth2_token_server_answering_access_token_only() {
    // zot's bearer mode names the realm and service of an external token server in its
    // challenge (https://zotregistry.dev/v2.1.23/articles/authn-authz/, "HTTP bearer
    // authentication"); OAuth 2.0-style servers answer with `access_token` alone, which the
    // distribution specification accepts ("For compatibility with OAuth 2.0, we will also
    // accept token under the name access_token",
    // https://distribution.github.io/distribution/spec/auth/token/).
    let srv = ShapeServer::start(
        r#"Bearer realm="{realm}",service="zot""#,
        "/auth/token",
        |n| {
            format!(
                r#"{{"access_token":"oauth-{n}","token_type":"Bearer","expires_in":300,"scope":"repository:apps/x:pull,push,delete"}}"#
            )
        },
    );
    let creds = UpstreamCredentials::new("ci".into(), "s3cret".into(), srv.ping_url(), client());
    let scopes = strings(&["repository:apps/x:pull,push,delete"]);
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer oauth-1")
    );
    let reqs = srv.token_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].service.as_deref(), Some("zot"));
    assert_eq!(reqs[0].scopes, scopes);
}

#[tokio::test]
async fn ghcr_anonymous_token_for_public_images_without_expires_in() {
    // GHCR serves public images to anyone holding a token from
    // `https://ghcr.io/token?scope=repository:<owner>/<image>:pull` asked WITHOUT credentials,
    // and its answer has `token` only, no `expires_in`
    // (https://toddysm.com/2024/02/12/authenticating-with-oci-registries-github-container-registry-ghcr-implementation).
    // Its ping challenge carries a placeholder scope, which must not be asked for.
    // The specification's default lifetime then applies: 60 seconds.
    let srv = ShapeServer::start(
        r#"Bearer realm="{realm}",service="ghcr.io",scope="repository:user/image:pull""#,
        "/token",
        |n| format!(r#"{{"token":"djE6Z2hjcg-{n}"}}"#),
    );
    let creds = UpstreamCredentials::anonymous(srv.ping_url(), client());
    assert!(!creds.has_account());
    let scopes = strings(&["repository:margo/public-app:pull"]);
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer djE6Z2hjcg-1")
    );
    // Well past what a zero or 1-second lifetime would allow: still the cached token.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer djE6Z2hjcg-1")
    );
    let reqs = srv.token_requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0].authorization, None,
        "anonymous: no credentials sent"
    );
    assert_eq!(reqs[0].service.as_deref(), Some("ghcr.io"));
    assert_eq!(
        reqs[0].scopes, scopes,
        "the request's scope, not the ping's hint"
    );
}

#[tokio::test]
async fn a_short_expires_in_is_honoured() {
    // `expires_in` is "the duration in seconds since the token was issued that it will
    // remain valid" (https://distribution.github.io/distribution/spec/auth/token/): a
    // token service that says 1 s gets asked again after it.
    let srv = ShapeServer::start(r#"Bearer realm="{realm}""#, "/token", |n| {
        format!(r#"{{"token":"short-{n}","expires_in":1}}"#)
    });
    let creds = UpstreamCredentials::new("u".into(), "p".into(), srv.ping_url(), client());
    let scopes = strings(&["repository:a:pull"]);
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer short-1")
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer short-2")
    );
    // No `service` in the challenge: none in the request.
    assert!(srv.token_requests().iter().all(|r| r.service.is_none()));
}

#[tokio::test]
async fn a_plugin_scope_named_by_the_upstream_is_asked_for() {
    // Scopes may carry a resource class: `repository(plugin):samalba/my-plugin:pull,push`
    // (https://distribution.github.io/distribution/spec/auth/scope/, "Resource Class").
    // When the upstream refuses the proxy's token naming such a scope, the next token for
    // that request is asked with it.
    let srv = ShapeServer::start(
        r#"Bearer realm="{realm}",service="registry.docker.io""#,
        "/token",
        |n| format!(r#"{{"token":"plugin-{n}","expires_in":300}}"#),
    );
    let creds = UpstreamCredentials::new("u".into(), "p".into(), srv.ping_url(), client());
    let scopes = strings(&["repository:samalba/my-plugin:pull"]);
    let other = strings(&["repository:samalba/other:pull"]);
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer plugin-1")
    );
    assert_eq!(
        creds.authorization(&other).await.unwrap().as_deref(),
        Some("Bearer plugin-2")
    );
    creds
        .rejected(
            &scopes,
            Some(
                r#"Bearer realm="x",service="registry.docker.io",scope="repository(plugin):samalba/my-plugin:pull,push",error="insufficient_scope""#,
            ),
        )
        .await;
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer plugin-3")
    );
    // Again: cached under the scopes it was asked with.
    assert_eq!(
        creds.authorization(&scopes).await.unwrap().as_deref(),
        Some("Bearer plugin-3")
    );
    // The other repository's token was not thrown away.
    assert_eq!(
        creds.authorization(&other).await.unwrap().as_deref(),
        Some("Bearer plugin-2")
    );
    let reqs = srv.token_requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    assert_eq!(
        reqs[2].scopes,
        strings(&[
            "repository:samalba/my-plugin:pull",
            "repository(plugin):samalba/my-plugin:pull,push"
        ])
    );
    // The realm is the ping's, never one a refusal names.
    assert!(reqs.iter().all(|r| r.path == "/token"));
}

/// A cached manifest is served while the upstream's token service is down: credentials
/// are asked for only when a request really goes upstream (a fresh digest hit needs
/// none), and a stale tag whose revalidation cannot get a token is served stale within
/// `stale_grace`, not refused.
#[test]
fn cache_hits_do_not_wait_for_a_token_service_that_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (signing, cert) = make_signing_key(dir.path());
    // Tokens live 10 s (the proxy renews them after 9 s).
    let issuer = Issuer::start(signing, 10);
    let registry = token_registry(&issuer, &cert);
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{}\"\n    credentials: {{username: {USER}, password: \"{PASSWORD}\"}}\ncache: {{tag_ttl: 1s, stale_grace: 5m}}\nserver: {{threads: 2}}\n",
        registry.url()
    ));
    let c = http();
    let base = proxy.url();
    let (_, manifest_digest) = push_image(&c, &base, "cached/app", "v1", b"cached layer");
    let get = |reference: &str| {
        c.get(format!("{base}/v2/cached/app/manifests/{reference}"))
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .unwrap()
    };
    let r = get("v1");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-margo-cache"], "miss");

    // The token service goes away, and every token the proxy holds expires.
    drop(issuer);
    std::thread::sleep(Duration::from_secs(10));

    let r = get(&manifest_digest);
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(r.headers()["x-margo-cache"], "hit");
    assert_eq!(sha256(&r.bytes().unwrap()), manifest_digest);
    let r = get("v1");
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    assert_eq!(r.headers()["x-margo-cache"], "stale");
}

#[test]
fn an_upstream_without_account_gets_anonymous_tokens_for_the_proxys_own_calls() {
    // GHCR-shaped upstream and no `credentials:`: the manifest read that fills the cache is
    // the proxy's own call, and must go through the anonymous token flow (no credentials
    // sent to the token service) instead of hitting the upstream bare.
    let srv = ShapeServer::start(
        r#"Bearer realm="{realm}",service="ghcr.io""#,
        "/token",
        |n| format!(r#"{{"token":"djE6Z2hjcg-{n}"}}"#),
    );
    let proxy = Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams: [{{name: ghcr, url: \"http://127.0.0.1:{}\"}}]\n",
        srv.port
    ));
    let r = http()
        .get(format!(
            "{}/v2/margo/public-app/manifests/1.0.0",
            proxy.url()
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    // The shape server has no manifests: what matters is how it was asked.
    assert_eq!(r.status(), 404, "{}", r.text().unwrap_or_default());
    let log = srv.log.lock().unwrap().clone();
    let token = log
        .iter()
        .find(|r| r.path == "/token")
        .unwrap_or_else(|| panic!("no token request: {log:?}"));
    assert_eq!(token.authorization, None, "anonymous: {log:?}");
    assert_eq!(token.scopes, ["repository:margo/public-app:pull"]);
    assert_eq!(
        log.iter()
            .filter(|r| r.path == "/v2/margo/public-app/manifests/1.0.0")
            .filter_map(|r| r.authorization.as_deref())
            .collect::<Vec<_>>(),
        ["Bearer djE6Z2hjcg-1"],
        "the refused bare read, then the one with the token: {log:?}"
    );
}

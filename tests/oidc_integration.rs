//! Integration tests against a real OpenID provider (npm `oidc-provider`,
//! started by `tests/oidc/provider.mjs` on 127.0.0.1). Node and
//! `tests/oidc/node_modules` are required (`scripts/setup` installs them): without
//! them the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use base64::Engine;
use common::Idp;
use http::Method;
use margo_proxy::auth::{AuthConfig, AuthError, Authenticator, Target};
use serde_json::json;

const RESOURCE: &str = "http://127.0.0.1:18080";

fn s<'a>(v: &'a serde_json::Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

fn config(info: &serde_json::Value) -> AuthConfig {
    serde_json::from_value(json!({
        "realm": format!("{RESOURCE}/token"),
        "service": "margo-it",
        "issuers": [{
            "issuer": s(info, "issuer"),
            "audiences": [RESOURCE],
            "require_at_jwt_typ": true,
            "introspection": {
                "endpoint": s(info, "introspection_endpoint"),
                "client_id": "developer",
                "client_secret": info["clients"]["developer"],
                "cache_seconds": 5
            }
        }],
        "rules": [
            {"match": [{"claim": "groups", "values": ["wfm"]}], "grant": {"apps/**": ["pull"]}},
            {"match": [{"claim": "groups", "values": ["dev-acme"]}],
             "grant": {"apps/acme/**": ["pull", "push"]}}
        ],
        "read_only": [{"claim": "client_id", "values": ["wfm"]}],
        "token_endpoint": {
            "idp_token_url": s(info, "token_endpoint"),
            "resource": RESOURCE,
            "idp_scope": "registry"
        },
        "cache": {"jwks_refetch_cooldown_seconds": 0}
    }))
    .expect("config")
}

fn basic(user: &str, pass: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    h.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Basic {v}")).expect("header"),
    );
    h
}

async fn bridge_token(a: &Authenticator, user: &str, pass: &str) -> String {
    let r = a
        .token_endpoint()
        .expect("token endpoint configured")
        .handle(
            &Method::GET,
            &basic(user, pass),
            Some("service=margo-it&scope=repository:apps/acme/app:pull,push"),
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "token endpoint for {user}");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap_or(0) > 0);
    assert!(body["issued_at"].as_str().is_some());
    body["token"].as_str().expect("token").to_owned()
}

fn repo(name: &str) -> Target<'_> {
    Target::Repository {
        name,
        mount_from: None,
    }
}

async fn check(a: &Authenticator, m: Method, name: &str, token: &str) -> Result<(), AuthError> {
    a.authorize(&m, &repo(name), Some(format!("Bearer {token}").as_bytes()))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn real_oidc_provider_end_to_end() {
    let idp = Idp::start(RESOURCE);
    let a = Authenticator::from_config(&config(&idp.info)).expect("authenticator");
    assert!(a.warm_up().await.is_empty(), "discovery + JWKS fetch");

    // WFM: client credentials through the bridge, pulls, is refused a push.
    let wfm = bridge_token(&a, "wfm", s(&idp.info["clients"], "wfm")).await;
    check(&a, Method::GET, "apps/acme/app", &wfm)
        .await
        .expect("wfm pull");
    let err = check(&a, Method::PUT, "apps/acme/app", &wfm)
        .await
        .unwrap_err();
    assert_eq!(a.reject(&err).status, 403);

    // Developer: OAuth2 POST form, pushes to its group's repositories only.
    let form = format!(
        "grant_type=client_credentials&client_id=developer&client_secret={}&service=margo-it",
        s(&idp.info["clients"], "developer")
    );
    let r = a
        .token_endpoint()
        .expect("bridge")
        .handle(
            &Method::POST,
            &http::HeaderMap::new(),
            None,
            form.as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    let dev: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let dev = dev["access_token"].as_str().expect("token").to_owned();
    check(&a, Method::PATCH, "apps/acme/app", &dev)
        .await
        .expect("dev push");
    assert!(check(&a, Method::PUT, "apps/other/app", &dev)
        .await
        .is_err());

    // A stock client's username/password (the registry-user client).
    let user = bridge_token(&a, "registry-user", "registry-user-secret").await;
    check(&a, Method::PUT, "apps/acme/x", &user)
        .await
        .expect("user push");

    // Wrong password: 401 from the bridge; no credentials: Basic challenge.
    let bridge = a.token_endpoint().expect("bridge");
    let r = bridge
        .handle(&Method::GET, &basic("wfm", "wrong"), None, b"")
        .await;
    assert_eq!(r.status, 401);
    let r = bridge
        .handle(&Method::GET, &http::HeaderMap::new(), None, b"")
        .await;
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == http::header::WWW_AUTHENTICATE && v.starts_with("Basic")));

    // A JWT given as the password is validated and handed back unchanged.
    let r = bridge
        .handle(&Method::GET, &basic("x", &wfm), None, b"")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(&wfm));
    let r = bridge
        .handle(&Method::GET, &basic("x", &format!("{wfm}x")), None, b"")
        .await;
    assert_eq!(r.status, 401);

    // Key rotation at the IdP while we run: new tokens accepted, old ones too.
    let http = reqwest::Client::new();
    let rotated: serde_json::Value = http
        .post(s(&idp.info, "rotate_url"))
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("rotate json");
    let after = bridge_token(&a, "developer", s(&idp.info["clients"], "developer")).await;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(after.split('.').next().unwrap_or_default())
            .expect("b64"),
    )
    .expect("header json");
    assert_eq!(header["kid"], rotated["kid"]);
    check(&a, Method::PUT, "apps/acme/app", &after)
        .await
        .expect("token signed with rotated key");
    check(&a, Method::GET, "apps/acme/app", &wfm)
        .await
        .expect("older token still valid");

    // An opaque token, validated by RFC 7662 introspection.
    let opaque: serde_json::Value = http
        .post(s(&idp.info, "token_endpoint"))
        .basic_auth("wfm", Some(s(&idp.info["clients"], "wfm")))
        .form(&[
            ("grant_type", "client_credentials"),
            ("resource", s(&idp.info, "opaque_resource")),
            ("scope", "registry"),
        ])
        .send()
        .await
        .expect("opaque token")
        .json()
        .await
        .expect("json");
    let opaque = opaque["access_token"].as_str().expect("token").to_owned();
    assert!(!opaque.contains('.'), "opaque token expected");
    check(&a, Method::GET, "apps/acme/app", &opaque)
        .await
        .expect("introspected pull");
    assert!(check(&a, Method::PUT, "apps/acme/app", &opaque)
        .await
        .is_err());
    let before = a.counters().introspection_calls;
    check(&a, Method::GET, "apps/acme/app", &opaque)
        .await
        .expect("cached");
    assert_eq!(a.counters().introspection_calls, before);
    assert!(matches!(
        check(&a, Method::GET, "apps/acme/app", "notarealtoken").await,
        Err(AuthError::InvalidToken { .. })
    ));
}

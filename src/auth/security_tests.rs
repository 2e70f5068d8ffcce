//! Security tests, one per attack, plus JWKS fetch/single-flight/rotation
//! against a tiny local HTTP server. No network beyond 127.0.0.1.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::auth::access::Target;
use crate::auth::config::AuthConfig;
use crate::auth::error::{AuthError, InvalidReason, TokenError};
use crate::auth::validate::now_unix;
use crate::auth::Authenticator;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/");
const ISS: &str = "https://issuer.test";
const AUD: &str = "https://registry.test";
const DIST_ISS: &str = "https://dist-token.test";
const SERVICE: &str = "margo-test";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIX}{name}")).unwrap()
}

fn config() -> AuthConfig {
    serde_json::from_value(json!({
        "realm": "https://registry.test/token",
        "service": SERVICE,
        "issuers": [
            {
                "issuer": ISS,
                "audiences": [AUD],
                "keys": {"static": [
                    {"kid": "rsa", "pem": fixture("rsa_public.pem")},
                    {"kid": "ec", "pem": fixture("ec_public.pem")},
                    {"kid": "ed", "pem": fixture("ed25519_public.pem")}
                ]},
                "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
                "leeway_seconds": 5
            },
            {
                "issuer": DIST_ISS,
                "keys": {"x5c_roots": format!("{FIX}ca_root.pem")},
                "algorithms": ["ES256"]
            }
        ],
        "rules": [
            {"match": [{"claim": "groups", "values": ["wfm"]}], "grant": {"apps/**": ["pull"]}},
            {"match": [{"claim": "groups", "values": ["dev-acme"]}],
             "grant": {"apps/acme/**": ["pull", "push"]}}
        ],
        "read_only": [{"claim": "client_id", "values": ["wfm"]}],
        "anonymous_pull": ["public/**"]
    }))
    .unwrap()
}

fn auth() -> Authenticator {
    Authenticator::from_config(&config()).unwrap()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let now = now_unix();
    let mut c = json!({
        "iss": ISS, "aud": AUD, "sub": "dev", "client_id": "dev",
        "iat": now, "exp": now + 300, "groups": ["dev-acme"]
    });
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if v.is_null() {
                o.remove(k);
            } else {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    c
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.typ = Some("at+jwt".into());
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).unwrap()
}

fn rs256(claims: &serde_json::Value) -> String {
    sign(Algorithm::RS256, Some("rsa"), &rsa_key(), claims)
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

const PULL_ACME: Target<'static> = Target::Repository {
    name: "apps/acme/app",
    mount_from: None,
};

async fn invalid_reason(a: &Authenticator, token: &str) -> InvalidReason {
    match a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(token)))
        .await
    {
        Err(AuthError::InvalidToken { reason, scopes }) => {
            assert_eq!(scopes.len(), 1, "challenge must carry the scope");
            reason
        }
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_tokens_of_every_algorithm_are_accepted() {
    let a = auth();
    let c = claims(json!({}));
    let rs = rs256(&c);
    let ps = sign(Algorithm::PS256, Some("rsa"), &rsa_key(), &c);
    let es = sign(
        Algorithm::ES256,
        Some("ec"),
        &EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap(),
        &c,
    );
    let ed = sign(
        Algorithm::EdDSA,
        Some("ed"),
        &EncodingKey::from_ed_pem(fixture("ed25519_private.pem").as_bytes()).unwrap(),
        &c,
    );
    for t in [rs, ps, es, ed] {
        let p = a
            .authorize(&Method::PUT, &PULL_ACME, Some(&bearer(&t)))
            .await
            .unwrap();
        assert_eq!(p.subject.as_deref(), Some("dev"));
        assert_eq!(p.groups, vec!["dev-acme".to_owned()]);
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let a = auth();
    let t = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "at+jwt"})),
        b64(&claims(json!({})))
    );
    assert_eq!(
        invalid_reason(&a, &t).await,
        InvalidReason::AlgorithmNotAllowed
    );
    let t2 = format!(
        "{}.{}.",
        b64(&json!({"alg": "None"})),
        b64(&claims(json!({})))
    );
    assert_eq!(
        invalid_reason(&a, &t2).await,
        InvalidReason::AlgorithmNotAllowed
    );
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let a = auth();
    let key = EncodingKey::from_secret(fixture("rsa_public.pem").as_bytes());
    let t = sign(Algorithm::HS256, Some("rsa"), &key, &claims(json!({})));
    assert_eq!(
        invalid_reason(&a, &t).await,
        InvalidReason::AlgorithmNotAllowed
    );
}

#[tokio::test]
async fn expired_token_is_refused() {
    let now = now_unix();
    let t = rs256(&claims(json!({"exp": now - 60, "iat": now - 400})));
    assert_eq!(invalid_reason(&auth(), &t).await, InvalidReason::Expired);
}

#[tokio::test]
async fn nbf_in_the_future_is_refused() {
    let t = rs256(&claims(json!({"nbf": now_unix() + 120})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::NotYetValid
    );
    let t = rs256(&claims(json!({"iat": now_unix() + 120})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::NotYetValid
    );
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let t = rs256(&claims(json!({"iss": "https://evil.test"})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::UnknownIssuer
    );
    let t = rs256(&claims(json!({"iss": null})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::UnknownIssuer
    );
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let t = rs256(&claims(json!({"aud": "https://other-api.test"})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::WrongAudience
    );
    let t = rs256(&claims(json!({"aud": null})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::MissingClaim
    );
    let t = rs256(&claims(json!({"exp": null})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::MissingClaim
    );
}

#[tokio::test]
async fn unknown_kid_is_refused() {
    let other = EncodingKey::from_rsa_pem(fixture("rsa2_private.pem").as_bytes()).unwrap();
    let t = sign(Algorithm::RS256, Some("nope"), &other, &claims(json!({})));
    assert_eq!(invalid_reason(&auth(), &t).await, InvalidReason::UnknownKey);
    // A known kid on a key it does not belong to is a bad signature.
    let t = sign(Algorithm::RS256, Some("rsa"), &other, &claims(json!({})));
    assert_eq!(
        invalid_reason(&auth(), &t).await,
        InvalidReason::BadSignature
    );
}

#[tokio::test]
async fn tampered_signature_is_refused() {
    let a = auth();
    let t = rs256(&claims(json!({})));
    let (head, sig) = t.rsplit_once('.').unwrap();
    let mut sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .unwrap();
    sig_bytes[10] ^= 0x01;
    let tampered = format!(
        "{head}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig_bytes)
    );
    assert_eq!(
        invalid_reason(&a, &tampered).await,
        InvalidReason::BadSignature
    );
    // Payload swapped under a valid signature (privilege escalation attempt).
    let mut parts: Vec<&str> = t.split('.').collect();
    let evil = b64(&claims(json!({"groups": ["admins"], "sub": "root"})));
    parts[1] = &evil;
    assert_eq!(
        invalid_reason(&a, &parts.join(".")).await,
        InvalidReason::BadSignature
    );
}

#[tokio::test]
async fn pull_token_used_to_push_is_refused() {
    let a = auth();
    let t = rs256(&claims(json!({
        "groups": [], "access": [{"type": "repository", "name": "apps/acme/app", "actions": ["pull"]}]
    })));
    assert!(a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
        .await
        .is_ok());
    let err = a
        .authorize(&Method::PUT, &PULL_ACME, Some(&bearer(&t)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InsufficientScope { .. }));
    let r = a.reject(&err);
    assert_eq!(r.status, 403);
    assert!(r.headers.iter().any(|(_, v)| v
        .contains("scope=\"repository:apps/acme/app:pull,push\",error=\"insufficient_scope\"")));
}

#[tokio::test]
async fn token_for_another_repository_is_refused() {
    let a = auth();
    let t = rs256(&claims(json!({
        "groups": [], "scope": "repository:apps/other:pull,push"
    })));
    let err = a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::InsufficientScope { .. }));
}

#[tokio::test]
async fn missing_token_on_protected_repository_is_challenged() {
    let a = auth();
    let err = a
        .authorize(&Method::HEAD, &PULL_ACME, None)
        .await
        .unwrap_err();
    let r = a.reject(&err);
    assert_eq!(r.status, 401);
    let www = &r
        .headers
        .iter()
        .find(|(n, _)| n == http::header::WWW_AUTHENTICATE)
        .unwrap()
        .1;
    assert_eq!(
        www,
        "Bearer realm=\"https://registry.test/token\",service=\"margo-test\",scope=\"repository:apps/acme/app:pull\""
    );
    assert!(r.body.contains("UNAUTHORIZED"));
    // Basic credentials sent pre-emptively: same challenge.
    let err = a
        .authorize(&Method::GET, &PULL_ACME, Some(b"Basic dTpw"))
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::MissingToken { .. }));
}

#[tokio::test]
async fn token_for_another_service_is_refused() {
    // Distribution-style tokens name the service in `aud`.
    let a = auth();
    let t = dist_token(json!({"aud": "another-registry"}));
    assert_eq!(invalid_reason(&a, &t).await, InvalidReason::WrongAudience);
    let ok = dist_token(json!({}));
    assert!(a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&ok)))
        .await
        .is_ok());
}

#[tokio::test]
async fn id_token_instead_of_access_token_is_refused() {
    let a = auth();
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa".into());
    // An ID token whose client id happens to equal the audience.
    let t = jsonwebtoken::encode(
        &h,
        &claims(json!({"nonce": "n-0S6", "at_hash": "x"})),
        &rsa_key(),
    )
    .unwrap();
    assert_eq!(invalid_reason(&a, &t).await, InvalidReason::NotAccessToken);
    h.typ = Some("id_token+jwt".into());
    let t = jsonwebtoken::encode(&h, &claims(json!({})), &rsa_key()).unwrap();
    assert_eq!(invalid_reason(&a, &t).await, InvalidReason::NotAccessToken);
    // A plain `JWT` typ without ID-token claims is a (distribution-style)
    // access token.
    h.typ = Some("JWT".into());
    let t = jsonwebtoken::encode(&h, &claims(json!({})), &rsa_key()).unwrap();
    assert!(a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
        .await
        .is_ok());
}

/// Signs `claims` with the trusted RSA key under header `typ: JWT`, as IdPs
/// sign their ID tokens.
fn jwt_typed(claims: &serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa".into());
    h.typ = Some("JWT".into());
    jsonwebtoken::encode(&h, claims, &rsa_key()).unwrap()
}

#[tokio::test]
async fn id_tokens_marked_only_by_their_claims_are_refused() {
    // Issue 12 #1: with the issuer's default settings, `aud` naming the registry
    // and a `typ: JWT` header, these were accepted as access tokens.
    let a = auth();
    for (what, extra) in [
        ("Cognito ID token", json!({"token_use": "id"})),
        ("Keycloak ID token", json!({"typ": "ID", "azp": "dev"})),
        ("Keycloak refresh token", json!({"typ": "Refresh"})),
        (
            "Google-style ID token",
            json!({"azp": AUD, "client_id": null, "email": "dev@example.test"}),
        ),
        ("FAPI ID token", json!({"s_hash": "x"})),
    ] {
        let t = jwt_typed(&claims(extra));
        assert_eq!(
            invalid_reason(&a, &t).await,
            InvalidReason::NotAccessToken,
            "{what}"
        );
        // Refused on a push too, never reaching the permission check.
        let err = a
            .authorize(&Method::PUT, &PULL_ACME, Some(&bearer(&t)))
            .await
            .unwrap_err();
        assert_eq!(a.reject(&err).status, 401, "{what}");
    }
    // Their access-token siblings pass: the claim decides, not the header.
    for extra in [
        json!({"token_use": "access"}),
        json!({"typ": "Bearer", "azp": "dev"}),
    ] {
        let t = jwt_typed(&claims(extra));
        assert!(a
            .authorize(&Method::PUT, &PULL_ACME, Some(&bearer(&t)))
            .await
            .is_ok());
    }
}

#[tokio::test]
async fn mount_from_a_repository_without_pull_is_refused() {
    let a = auth();
    let t = rs256(&claims(json!({})));
    let mount = Target::Repository {
        name: "apps/acme/app",
        mount_from: Some("apps/secret/app"),
    };
    let err = a
        .authorize(&Method::POST, &mount, Some(&bearer(&t)))
        .await
        .unwrap_err();
    let r = a.reject(&err);
    assert_eq!(r.status, 403);
    assert!(r
        .headers
        .iter()
        .any(|(_, v)| v.contains("repository:apps/secret/app:pull")));
    let ok_mount = Target::Repository {
        name: "apps/acme/app",
        mount_from: Some("apps/acme/base"),
    };
    assert!(a
        .authorize(&Method::POST, &ok_mount, Some(&bearer(&t)))
        .await
        .is_ok());
}

#[tokio::test]
async fn read_only_principal_cannot_push_even_with_a_push_scope() {
    let a = auth();
    let t = rs256(&claims(json!({
        "client_id": "wfm", "groups": ["wfm"], "scope": "repository:apps/acme/app:pull,push"
    })));
    let p = a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
        .await
        .unwrap();
    assert!(p.read_only);
    assert!(a
        .authorize(&Method::PATCH, &PULL_ACME, Some(&bearer(&t)))
        .await
        .is_err());
}

#[tokio::test]
async fn anonymous_pull_only_where_configured() {
    let a = auth();
    let public = Target::Repository {
        name: "public/base",
        mount_from: None,
    };
    assert!(
        a.authorize(&Method::GET, &public, None)
            .await
            .unwrap()
            .anonymous
    );
    assert!(a.authorize(&Method::PUT, &public, None).await.is_err());
    assert!(a.authorize(&Method::GET, &PULL_ACME, None).await.is_err());
    // A bad token is refused even on an anonymous route.
    assert!(a
        .authorize(&Method::GET, &public, Some(b"Bearer x.y.z"))
        .await
        .is_err());
    assert!(a
        .authorize(&Method::GET, &Target::Catalog, None)
        .await
        .is_err());
}

#[tokio::test]
async fn the_ping_is_challenged_even_with_anonymous_pull() {
    // Issue 14 #10: `/v2/` answered 200 to anonymous clients, so clients with
    // credentials never learnt the realm and their pushes failed.
    let mut cfg = config();
    cfg.token_endpoint =
        Some(serde_json::from_value(json!({"idp_token_url": "http://127.0.0.1:9/token"})).unwrap());
    let a = Authenticator::from_config(&cfg).unwrap();
    let err = a
        .authorize(&Method::GET, &Target::Base, None)
        .await
        .unwrap_err();
    assert!(matches!(err, AuthError::MissingToken { .. }), "{err:?}");
    let r = a.reject(&err);
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == http::header::WWW_AUTHENTICATE
            && v == "Bearer realm=\"https://registry.test/token\",service=\"margo-test\""));
    // A client without credentials asks the token endpoint, as for any challenge,
    // and gets the anonymous token (no IdP involved: port 9 answers nothing).
    let bridge = a.token_endpoint().unwrap();
    let answer = bridge
        .handle(
            &Method::GET,
            &http::HeaderMap::new(),
            Some("service=margo-test&scope=repository:public/base:pull"),
            b"",
        )
        .await;
    assert_eq!(answer.status, 200);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    let anon = body["token"].as_str().unwrap().to_owned();
    assert_eq!(anon, crate::auth::ANONYMOUS_TOKEN);
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    // It passes the ping and the anonymous patterns, and nothing else.
    let public = Target::Repository {
        name: "public/base",
        mount_from: None,
    };
    for (m, t, ok) in [
        (Method::GET, &Target::Base, true),
        (Method::GET, &public, true),
        (Method::HEAD, &public, true),
        (Method::PUT, &public, false),
        (Method::GET, &PULL_ACME, false),
        (Method::GET, &Target::Catalog, false),
    ] {
        let r = a.authorize(&m, t, Some(&bearer(&anon))).await;
        assert_eq!(r.is_ok(), ok, "{m} {t:?}: {r:?}");
        if let Err(e) = r {
            // Refused like no token: the client is told to authenticate.
            assert!(matches!(e, AuthError::MissingToken { .. }), "{e:?}");
        }
    }
    // A real token still passes the ping.
    let t = rs256(&claims(json!({})));
    assert!(a
        .authorize(&Method::GET, &Target::Base, Some(&bearer(&t)))
        .await
        .is_ok());
    // Without anonymous patterns, credential-less token requests are challenged.
    cfg.anonymous_pull.clear();
    let a = Authenticator::from_config(&cfg).unwrap();
    let answer = a
        .token_endpoint()
        .unwrap()
        .handle(&Method::GET, &http::HeaderMap::new(), None, b"")
        .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn garbage_is_refused_and_never_panics() {
    let a = auth();
    let valid = rs256(&claims(json!({})));
    let header_only = b64(&json!({"alg": "RS256", "kid": "rsa", "typ": "at+jwt"}));
    let mut garbage: Vec<String> = [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        "..",
        "eyJ.eyJ.eyJ",
        "%%%.%%%.%%%",
        "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "Bearer",
        "null.null.null",
        "\u{0}.\u{0}.\u{0}",
        "é.é.é",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Well-formed JSON in the wrong shapes, unsigned.
    for payload in [json!(null), json!([]), json!("x"), json!(1), json!({})] {
        garbage.push(format!("{header_only}.{}.", b64(&payload)));
        garbage.push(format!("{header_only}.{}.c2ln", b64(&payload)));
    }
    garbage.push(format!(
        "{}.{}.c2ln",
        b64(&json!([])),
        b64(&claims(json!({})))
    ));
    garbage.push(format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": 1})),
        b64(&claims(json!({})))
    ));
    // Every truncation of a valid token, and the token with a byte appended.
    for end in (0..valid.len()).step_by(7) {
        garbage.push(valid[..end].to_owned());
    }
    garbage.push(format!("{valid}A"));
    garbage.push(format!("{valid}.x"));
    garbage.push("a".repeat(20_000));
    for t in &garbage {
        let r = a
            .authorize(&Method::GET, &PULL_ACME, Some(&bearer(t)))
            .await;
        assert!(
            matches!(r, Err(AuthError::InvalidToken { .. })),
            "authorize accepted or mis-refused {t:?}: {r:?}"
        );
        let r = a.validate_token(t).await;
        assert!(
            matches!(r, Err(TokenError::Invalid(_))),
            "validate_token accepted {t:?}: {r:?}"
        );
    }
    // The control: the untouched token passes, so the refusals above are the
    // garbage's doing.
    assert!(a.validate_token(&valid).await.is_ok());
}

#[tokio::test]
async fn verified_tokens_are_cached() {
    let a = auth();
    let t = rs256(&claims(json!({})));
    for _ in 0..5 {
        a.authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
            .await
            .unwrap();
    }
    let c = a.counters();
    assert_eq!(c.token_validations, 1);
    assert_eq!(c.token_cache_hits, 4);
}

/// The express lane's look grants only what `authorize` grants, and only from memory:
/// a token is taken once `authorize` has verified it, never before; refusals, bad
/// tokens and the token-less ping are left to `authorize`; nothing is counted.
#[tokio::test]
async fn cached_decisions_grant_only_what_authorize_granted_before() {
    let a = auth();
    let dev = rs256(&claims(json!({})));
    let public = Target::Repository {
        name: "public/tool",
        mount_from: None,
    };
    let other = Target::Repository {
        name: "apps/other/app",
        mount_from: None,
    };
    let cached = |target: &Target<'_>, header: Option<&[u8]>| {
        a.authorize_cached(&Method::GET, target, header)
            .map(|p| p.anonymous)
    };
    // Not verified yet: the long way.
    assert_eq!(cached(&PULL_ACME, Some(&bearer(&dev))), None);
    assert_eq!(a.counters().token_validations, 0);
    a.authorize(&Method::GET, &PULL_ACME, Some(&bearer(&dev)))
        .await
        .unwrap();
    assert_eq!(cached(&PULL_ACME, Some(&bearer(&dev))), Some(false));
    // Verified, but not for this repository, nor for a delete (it may pull and push).
    assert_eq!(cached(&other, Some(&bearer(&dev))), None);
    assert!(a
        .authorize(&Method::GET, &other, Some(&bearer(&dev)))
        .await
        .is_err());
    assert_eq!(
        a.authorize_cached(&Method::DELETE, &PULL_ACME, Some(&bearer(&dev)))
            .map(|p| p.anonymous),
        None
    );
    // Anonymous pulls where configured, with no header, another scheme or the anonymous
    // token; never elsewhere, never the ping.
    assert_eq!(cached(&public, None), Some(true));
    assert_eq!(cached(&public, Some(b"Basic dXNlcjpwYXNz")), Some(true));
    let anon = bearer(crate::auth::ANONYMOUS_TOKEN);
    assert_eq!(cached(&public, Some(&anon)), Some(true));
    assert_eq!(cached(&PULL_ACME, None), None);
    assert_eq!(cached(&Target::Base, None), None);
    // A malformed token is refused by `authorize`, even where anonymous pull is allowed.
    assert_eq!(cached(&public, Some(b"Bearer a b")), None);
    // An expired token verified... cannot be: `authorize` refuses it, so it is never cached.
    let expired = rs256(&claims(json!({"exp": now_unix() - 60})));
    assert!(a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&expired)))
        .await
        .is_err());
    assert_eq!(cached(&PULL_ACME, Some(&bearer(&expired))), None);
    // One validation, one cache hit (the refused pull of `other`): the looks counted nothing.
    let c = a.counters();
    assert_eq!((c.token_validations, c.token_cache_hits), (2, 1));
}

#[tokio::test]
async fn x5c_chain_to_an_untrusted_root_is_refused() {
    let a = auth();
    // A certificate that is not an end-entity issued by the root (here the
    // CA itself, with a key that is not its own): refused.
    let mut h = Header::new(Algorithm::ES256);
    h.x5c = Some(vec![pem_to_b64(&fixture("ca_root.pem"))]);
    let key = EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).unwrap();
    let t = jsonwebtoken::encode(&h, &dist_claims(json!({})), &key).unwrap();
    assert_eq!(invalid_reason(&a, &t).await, InvalidReason::UntrustedChain);
    h.x5c = None;
    let t = jsonwebtoken::encode(&h, &dist_claims(json!({})), &key).unwrap();
    assert_eq!(invalid_reason(&a, &t).await, InvalidReason::UntrustedChain);
}

fn pem_to_b64(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

fn dist_claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = claims(json!({
        "iss": DIST_ISS, "aud": SERVICE, "groups": null,
        "access": [{"type": "repository", "name": "apps/acme/app", "actions": ["pull"]}]
    }));
    if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    c
}

/// A distribution token server token: ES256, `typ: JWT`, signing cert in x5c.
fn dist_token(extra: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::ES256);
    h.x5c = Some(vec![pem_to_b64(&fixture("leaf_cert.pem"))]);
    let key = EncodingKey::from_ec_pem(fixture("leaf_private.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&h, &dist_claims(extra), &key).unwrap()
}

// ---------- JWKS over HTTP: fetch, single flight, rotation ----------

/// A tiny HTTP/1.1 server on 127.0.0.1 serving one JSON document (which the
/// test can swap) and counting requests. Stops when the test's runtime ends.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    doc: Arc<Mutex<String>>,
}

async fn jwks_server(doc: String, delay: Duration) -> JwksServer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let doc = Arc::new(Mutex::new(doc));
    let (h, d) = (hits.clone(), doc.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (h, d) = (h.clone(), d.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                let body = d.lock().map(|g| g.clone()).unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    JwksServer { url, hits, doc }
}

/// The JWK of an RSA public key, read from its PEM (SubjectPublicKeyInfo).
fn rsa_jwk(pem_public: &str, kid: &str) -> serde_json::Value {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_public.as_bytes()).unwrap();
    assert_eq!(pem.label, "PUBLIC KEY");
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents).unwrap();
    let PublicKey::RSA(rsa) = spki.parsed().unwrap() else {
        panic!("{kid}: not an RSA key");
    };
    // JWK integers are unsigned big-endian without leading zeros (RFC 7518 §6.3.1).
    let unsigned = |b: &[u8]| {
        let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[start..])
    };
    json!({
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid,
        "n": unsigned(rsa.modulus), "e": unsigned(rsa.exponent)
    })
}

#[test]
fn rsa_jwk_is_the_key_of_its_pem() {
    // The JWK built from the public PEM verifies what the matching private key
    // signs, and only that.
    let t = rs256(&claims(json!({})));
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&[AUD]);
    for (pem, ok) in [("rsa_public.pem", true), ("rsa2_public.pem", false)] {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(rsa_jwk(&fixture(pem), "k")).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let verified = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v).is_ok();
        assert_eq!(verified, ok, "{pem}");
    }
}

fn remote_config(jwks_uri: &str, cooldown: u64) -> AuthConfig {
    serde_json::from_value(json!({
        "realm": "https://registry.test/token",
        "service": SERVICE,
        "issuers": [{
            "issuer": ISS, "audiences": [AUD],
            "keys": {"jwks_uri": jwks_uri}
        }],
        "rules": [{"match": [{"claim": "groups", "values": ["dev-acme"]}],
                   "grant": {"apps/acme/**": ["pull", "push"]}}],
        "cache": {"jwks_refetch_cooldown_seconds": cooldown, "http_timeout_seconds": 5}
    }))
    .unwrap()
}

#[tokio::test]
async fn unknown_kid_refetch_is_single_flight_and_cooled_down() {
    let first = json!({"keys": [rsa_jwk(&fixture("rsa_public.pem"), "first")]}).to_string();
    let srv = jwks_server(first, Duration::from_millis(200)).await;
    let a = Arc::new(Authenticator::from_config(&remote_config(&srv.url, 1)).unwrap());
    let ok = sign(
        Algorithm::RS256,
        Some("first"),
        &rsa_key(),
        &claims(json!({})),
    );
    a.validate_token(&ok).await.unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // 20 concurrent tokens with unknown kids: one refetch in total.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let a = a.clone();
        let t = sign(
            Algorithm::RS256,
            Some(&format!("rnd{i}")),
            &rsa_key(),
            &claims(json!({"jti": i})),
        );
        tasks.push(tokio::spawn(async move { a.validate_token(&t).await }));
    }
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    // Within the cool-down, more unknown kids cost nothing.
    let t = sign(
        Algorithm::RS256,
        Some("later"),
        &rsa_key(),
        &claims(json!({})),
    );
    assert!(a.validate_token(&t).await.is_err());
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn rotated_key_is_picked_up_without_restart() {
    let first = json!({"keys": [rsa_jwk(&fixture("rsa_public.pem"), "first")]}).to_string();
    let srv = jwks_server(first, Duration::ZERO).await;
    let a = Authenticator::from_config(&remote_config(&srv.url, 0)).unwrap();
    let t1 = sign(
        Algorithm::RS256,
        Some("first"),
        &rsa_key(),
        &claims(json!({})),
    );
    a.validate_token(&t1).await.unwrap();

    // The IdP rotates: new key first, old one still published.
    *srv.doc.lock().unwrap() =
        json!({"keys": [rsa_jwk(&fixture("rsa2_public.pem"), "second"), rsa_jwk(&fixture("rsa_public.pem"), "first")]}).to_string();
    let k2 = EncodingKey::from_rsa_pem(fixture("rsa2_private.pem").as_bytes()).unwrap();
    let t2 = sign(
        Algorithm::RS256,
        Some("second"),
        &k2,
        &claims(json!({"jti": "2"})),
    );
    let p = a.validate_token(&t2).await.unwrap();
    assert_eq!(p.subject.as_deref(), Some("dev"));
    assert_eq!(srv.hits.load(Ordering::SeqCst), 2);
    a.validate_token(&t1).await.unwrap();
}

#[tokio::test]
async fn idp_down_at_first_use_is_unavailable_not_invalid() {
    // Nothing listens on this port (bound then dropped).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwks", l.local_addr().unwrap());
    drop(l);
    let a = Authenticator::from_config(&remote_config(&url, 0)).unwrap();
    let t = sign(
        Algorithm::RS256,
        Some("first"),
        &rsa_key(),
        &claims(json!({})),
    );
    let err = a
        .authorize(&Method::GET, &PULL_ACME, Some(&bearer(&t)))
        .await
        .unwrap_err();
    assert_eq!(a.reject(&err).status, 503);
}

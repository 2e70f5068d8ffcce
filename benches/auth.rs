//! Token validation cost per request: cold (signature verified every time:
//! the verified-token cache is disabled via `max_token_ttl_seconds: 0`) and
//! warm (cache hit: a SHA-256 of the token and a map lookup).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use margo_proxy::auth::{AuthConfig, Authenticator, Target};
use serde_json::json;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth/");

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIX}{name}")).expect("fixture")
}

fn authenticator(max_ttl: u64) -> Authenticator {
    let cfg: AuthConfig = serde_json::from_value(json!({
        "realm": "https://registry.test/token",
        "service": "bench",
        "issuers": [{
            "issuer": "https://issuer.test",
            "audiences": ["https://registry.test"],
            "keys": {"static": [
                {"kid": "rsa", "pem": fixture("rsa_public.pem")},
                {"kid": "ec", "pem": fixture("ec_public.pem")},
                {"kid": "ed", "pem": fixture("ed25519_public.pem")}
            ]}
        }],
        "rules": [{"match": [{"claim": "groups", "values": ["dev"]}],
                   "grant": {"apps/**": ["pull", "push"]}}],
        "cache": {"max_token_ttl_seconds": max_ttl}
    }))
    .expect("config");
    Authenticator::from_config(&cfg).expect("authenticator")
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    h.typ = Some("at+jwt".into());
    let claims = json!({"iss": "https://issuer.test", "aud": "https://registry.test",
        "sub": "bench", "exp": now + 3600, "iat": now, "groups": ["dev"]});
    jsonwebtoken::encode(&h, &claims, key).expect("sign")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let target = Target::Repository {
        name: "apps/acme/app",
        mount_from: None,
    };
    let tokens = [
        (
            "RS256",
            token(
                Algorithm::RS256,
                "rsa",
                &EncodingKey::from_rsa_pem(fixture("rsa_private.pem").as_bytes()).expect("key"),
            ),
        ),
        (
            "ES256",
            token(
                Algorithm::ES256,
                "ec",
                &EncodingKey::from_ec_pem(fixture("ec_private.pem").as_bytes()).expect("key"),
            ),
        ),
        (
            "EdDSA",
            token(
                Algorithm::EdDSA,
                "ed",
                &EncodingKey::from_ed_pem(fixture("ed25519_private.pem").as_bytes()).expect("key"),
            ),
        ),
    ];
    let cold = authenticator(0);
    let warm = authenticator(3600);
    let mut g = c.benchmark_group("authorize");
    for (name, t) in &tokens {
        let header = format!("Bearer {t}");
        g.bench_function(format!("cold_{name}"), |b| {
            b.iter(|| {
                rt.block_on(cold.authorize(&Method::GET, &target, Some(header.as_bytes())))
                    .expect("valid")
            })
        });
        rt.block_on(warm.authorize(&Method::GET, &target, Some(header.as_bytes())))
            .expect("valid");
        g.bench_function(format!("warm_{name}"), |b| {
            b.iter(|| {
                rt.block_on(warm.authorize(&Method::GET, &target, Some(header.as_bytes())))
                    .expect("valid")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

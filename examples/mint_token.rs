//! Mints an RS256 access token for `scripts/bench` (the proxy checks it against the
//! matching public key configured as a static key). Test keys only.
//! Usage: mint_token PRIVATE_KEY_PEM ISSUER AUDIENCE SCOPE
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, key, iss, aud, scope] = args.as_slice() else {
        eprintln!("usage: mint_token PRIVATE_KEY_PEM ISSUER AUDIENCE SCOPE");
        std::process::exit(2);
    };
    let pem = std::fs::read(key).expect("key file");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = serde_json::json!({
        "iss": iss, "aud": aud, "sub": "bench", "client_id": "bench",
        "iat": now, "nbf": now, "exp": now + 3600, "scope": scope,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench".into());
    let key = EncodingKey::from_rsa_pem(&pem).expect("RSA private key");
    println!("{}", encode(&header, &claims, &key).expect("sign"));
}

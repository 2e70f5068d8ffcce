//! Deterministic fuzz smoke for the parsers every request meets first: the OCI API
//! path (`OciRoute::parse`), the `Authorization: Bearer` header and the express lane's
//! request head (`express::request::parse`). Thousands of mutated inputs, no nightly
//! needed (the coverage-guided targets are `fuzz/fuzz_targets/
//! {oci_route,bearer_token,express_request}.rs`). Asserts no panics and the parsers'
//! invariants.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use margo_proxy::auth::bearer_token;
use margo_proxy::express::request as express_request;
use margo_proxy::oci::{OciRoute, Reference};

const ROUNDS: usize = 100_000;

/// xorshift64*: tiny, deterministic, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8], interesting: &[&[u8]]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(3) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 | 2 => {
                let i = rng.below(len + 1);
                let piece = interesting[rng.below(interesting.len())];
                v.splice(i..i, piece.iter().copied());
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(32).min(len - i);
                v.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a slice: repeated segments, long names.
                let i = rng.below(len);
                let n = rng.below(64).min(len - i);
                let copy = v[i..i + n].to_vec();
                v.splice(i..i, copy);
            }
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

/// The canonical path of a route: what the proxy would send for it.
fn canonical_path(route: &OciRoute) -> String {
    match route {
        OciRoute::Ping => "/v2/".into(),
        OciRoute::Catalog => "/v2/_catalog".into(),
        OciRoute::Manifest { name, reference } => {
            let reference = match reference {
                Reference::Tag(t) => t.clone(),
                Reference::Digest(d) => d.to_string(),
            };
            format!("/v2/{name}/manifests/{reference}")
        }
        OciRoute::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
        OciRoute::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        OciRoute::UploadSession { name, session } => {
            format!("/v2/{name}/blobs/uploads/{session}")
        }
        OciRoute::TagsList { name } => format!("/v2/{name}/tags/list"),
        OciRoute::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
    }
}

const DIGEST: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

#[test]
fn oci_route_parse_survives_mutations_and_round_trips() {
    let seeds: Vec<String> = vec![
        "/v2/".into(),
        "/v2/_catalog".into(),
        "/v2/library/alpine/manifests/3.20".into(),
        format!("/v2/a/b/c/manifests/{DIGEST}"),
        format!("/v2/a/manifests/{}", DIGEST.replace(':', "%3A")),
        format!("/v2/apps/x/blobs/{DIGEST}"),
        "/v2/apps/x/blobs/uploads/".into(),
        "/v2/apps/x/blobs/uploads/0b6c2a4e-1d7f-4e1a-9f3a-3f8d2c0a1b2c".into(),
        "/v2/apps/x/tags/list".into(),
        format!("/v2/apps/x/referrers/{DIGEST}"),
        "/v2/blobs/uploads/".into(),
    ];
    let interesting: &[&[u8]] = &[
        b"/",
        b"//",
        b"..",
        b".",
        b"%3A",
        b"%3a",
        b":",
        b"sha256:",
        b"sha512:",
        b"manifests",
        b"blobs",
        b"uploads",
        b"tags",
        b"list",
        b"referrers",
        b"_catalog",
        b"-",
        b"__",
        b"\0",
        b"\xff",
        "é".as_bytes(),
        b"?",
        b"#",
        b" ",
        b"A",
    ];
    let mut rng = Rng(0x05ee_d0c1_f00d);
    let mut accepted = 0;
    for round in 0..ROUNDS {
        let seed = seeds[round % seeds.len()].as_bytes();
        let input = mutate(&mut rng, seed, interesting);
        let Ok(path) = std::str::from_utf8(&input) else {
            continue;
        };
        let Ok(route) = OciRoute::parse(path) else {
            continue;
        };
        accepted += 1;
        assert!(path.starts_with("/v2"), "{path:?} accepted");
        if let Some(name) = route.name() {
            assert!(path.contains(name.as_str()), "{path:?} -> {name}");
            assert!(name.as_str().len() <= 255, "{path:?}: name too long");
        }
        let again = canonical_path(&route);
        assert_eq!(
            OciRoute::parse(&again).as_ref(),
            Ok(&route),
            "{path:?} -> {route:?} -> {again:?} does not parse back"
        );
    }
    // The mutations must reach the accepting branches too, not only the refusals.
    assert!(accepted > ROUNDS / 50, "only {accepted} inputs parsed");
}

#[test]
fn bearer_token_survives_mutations_and_round_trips() {
    let seeds: [&[u8]; 6] = [
        b"Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        b"bearer  abc==",
        b"Basic dXNlcjpwYXNz",
        b"Bearer",
        b"BEARER a-b_c~d+e/f.g",
        b"",
    ];
    let interesting: &[&[u8]] = &[
        b" ",
        b"  ",
        b"=",
        b"==",
        b"\t",
        b"\"",
        b",",
        b"Bearer ",
        b"bearer",
        b"\r\n",
        b"\0",
        b"\xff",
        b".",
        b"+/",
        "é".as_bytes(),
    ];
    let mut rng = Rng(0x00be_a2e2);
    let mut accepted = 0;
    for round in 0..ROUNDS {
        let input = mutate(&mut rng, seeds[round % seeds.len()], interesting);
        let Some(parsed) = bearer_token(&input) else {
            continue;
        };
        let Ok(token) = parsed else {
            continue;
        };
        accepted += 1;
        assert!(!token.is_empty(), "{input:?}: empty token accepted");
        assert!(
            token.bytes().all(|b| b.is_ascii_graphic()),
            "{input:?}: token {token:?} has spaces or controls"
        );
        let again = format!("Bearer {token}");
        assert_eq!(
            bearer_token(again.as_bytes()),
            Some(Ok(token)),
            "{input:?}: {token:?} does not parse back"
        );
    }
    assert!(accepted > ROUNDS / 20, "only {accepted} tokens parsed");
}

#[test]
fn express_request_heads_survive_mutations_and_never_admit_answer_changing_fields() {
    // Answer-changing fields are refused; `Authorization` is kept for the auth layer.
    let seeds: [&[u8]; 4] = [
        b"GET /v2/apps/web/manifests/1.0.0 HTTP/1.1\r\nHost: r:8080\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n",
        b"HEAD /v2/a/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a HTTP/1.1\r\nhost: x\r\nX-Request-Id: r-1\r\n\r\n",
        b"GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nUser-Agent: u\r\nConnection: keep-alive\r\n\r\n",
        b"GET /v2/a/manifests/v1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n",
    ];
    let interesting: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r\n\r\n",
        b": ",
        b"Range: bytes=0-1\r\n",
        b"Authorization: Bearer x\r\n",
        b"Content-Length: 5\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Host: y\r\n",
        b"Accept: */*\r\n",
        b" ",
        b"\t",
        b"?",
        b"\0",
        b"\xff",
        b"HTTP/1.0",
    ];
    let mut rng = Rng(0x0ec5_91e5);
    let mut accepted = 0;
    for round in 0..ROUNDS {
        let input = mutate(&mut rng, seeds[round % seeds.len()], interesting);
        let Some(req) = express_request::parse(&input) else {
            continue;
        };
        accepted += 1;
        assert!(req.path.starts_with("/v2/"), "{input:?}");
        assert!(!req.path.contains('?'), "{input:?}");
        // Complete: the head ends with its blank line (CRLF or, as httparse allows, LF).
        assert!(
            input.ends_with(b"\n\r\n") || input.ends_with(b"\n\n"),
            "{input:?}"
        );
        let lower = input.to_ascii_lowercase();
        let has = |field: &[u8]| lower.windows(field.len()).any(|w| w == field);
        for field in [
            &b"\nrange:"[..],
            b"\ncontent-length:",
            b"\ntransfer-encoding:",
        ] {
            assert!(!has(field), "{input:?} accepted with {field:?}");
        }
        // Credentials are never dropped: the lane hands them to the auth layer.
        assert_eq!(
            req.authorization.is_some(),
            has(b"\nauthorization:"),
            "{input:?}"
        );
    }
    assert!(accepted > ROUNDS / 50, "only {accepted} heads accepted");
}

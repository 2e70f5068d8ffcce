#![no_main]
//! Request heads the express lane reads itself: no panics on any input, a head it
//! accepts carries no field that could change the answer, and its credentials are
//! always handed on (`tests/fuzz_smoke.rs` holds the same invariants on stable).

use libfuzzer_sys::fuzz_target;
use margo_proxy::express::request;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = request::parse(data) {
        assert!(req.path.starts_with("/v2/"));
        let lower = data.to_ascii_lowercase();
        let has = |field: &[u8]| lower.windows(field.len()).any(|w| w == field);
        for field in [&b"\nrange:"[..], b"\ncontent-length:"] {
            assert!(!has(field));
        }
        // `Authorization` is kept for the auth layer, never dropped.
        assert_eq!(req.authorization.is_some(), has(b"\nauthorization:"));
    }
});

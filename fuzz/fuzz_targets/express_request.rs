#![no_main]
//! Request heads the express lane reads itself: no panics on any input, and a head it
//! accepts carries no field that could change the answer (`tests/fuzz_smoke.rs` holds
//! the same invariants on stable).

use libfuzzer_sys::fuzz_target;
use margo_proxy::express::request;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = request::parse(data) {
        assert!(req.path.starts_with("/v2/"));
        let lower = data.to_ascii_lowercase();
        for field in [&b"\nrange:"[..], b"\nauthorization:", b"\ncontent-length:"] {
            assert!(!lower.windows(field.len()).any(|w| w == field));
        }
    }
});

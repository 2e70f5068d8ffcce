#![no_main]
//! OCI API paths: no panics on any input, and a parsed route round-trips through its
//! canonical path (`tests/fuzz_smoke.rs` holds the same invariants on stable).

use libfuzzer_sys::fuzz_target;
use margo_proxy::oci::OciRoute;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(route) = OciRoute::parse(path) {
        if let Some(name) = route.name() {
            assert!(path.contains(name.as_str()));
        }
    }
});

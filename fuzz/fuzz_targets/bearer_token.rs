#![no_main]
//! The `Authorization: Bearer` parser: no panics, and an accepted token is a clean
//! RFC 6750 `b64token` that parses back to itself.

use libfuzzer_sys::fuzz_target;
use margo_proxy::auth::bearer_token;

fuzz_target!(|data: &[u8]| {
    if let Some(Ok(token)) = bearer_token(data) {
        assert!(!token.is_empty() && !token.contains(' '));
        let again = format!("Bearer {token}");
        assert_eq!(bearer_token(again.as_bytes()), Some(Ok(token)));
    }
});

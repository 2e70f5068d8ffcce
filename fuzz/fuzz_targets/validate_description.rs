#![no_main]
//! Full description validation on arbitrary bytes: no panics, and a typed model is
//! produced exactly when no violation is reported.

use libfuzzer_sys::fuzz_target;
use margo_proxy::margo::validate::{validate_description, DescriptionLimits};

fuzz_target!(|data: &[u8]| {
    let check = validate_description(data, &DescriptionLimits::default());
    assert_eq!(check.model.is_some(), check.report.is_empty());
});

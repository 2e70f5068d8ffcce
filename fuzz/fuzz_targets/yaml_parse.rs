#![no_main]
//! The budgeted YAML parser must return Ok or Err on any bytes, never panic or hang.

use libfuzzer_sys::fuzz_target;
use margo_proxy::margo::yaml::{parse, YamlLimits};

fuzz_target!(|data: &[u8]| {
    let _ = parse(data, &YamlLimits::default());
});

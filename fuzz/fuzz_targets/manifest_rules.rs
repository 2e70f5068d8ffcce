#![no_main]
//! Manifest rules for every route kind, and the description phase with the same bytes
//! as the description blob: no panics on any input.

use libfuzzer_sys::fuzz_target;
use margo_proxy::margo::manifest::package::check_package_description;
use margo_proxy::margo::manifest::{check_manifest, ManifestOptions, NextStep, Reference, RouteKind};
use margo_proxy::margo::validate::DescriptionLimits;

fuzz_target!(|data: &[u8]| {
    let opts = ManifestOptions::default();
    let Ok(reference) = Reference::parse("1.0.0") else {
        return;
    };
    for route in [RouteKind::App, RouteKind::Component, RouteKind::Passthrough] {
        let check = check_manifest(data, route, &reference, &opts);
        if let (Some(manifest), NextStep::Description(layer)) = (&check.manifest, &check.next) {
            let _ = check_package_description(
                manifest,
                layer,
                data,
                &reference,
                &opts,
                &DescriptionLimits::default(),
            );
        }
    }
});

//! Deterministic "fuzz smoke": thousands of mutated inputs through every entry point
//! that takes untrusted bytes, asserting only that nothing panics. Runs on stable in
//! plain `cargo test` (the real fuzzing is `fuzz/`, which needs nightly).

use crate::margo::compose::{check_archive, ArchiveLimits};
use crate::margo::manifest::testutil::reference;
use crate::margo::manifest::{check_manifest, ManifestOptions, RouteKind};
use crate::margo::validate::{validate_description, DescriptionLimits};
use crate::margo::yaml::{parse, YamlLimits};

/// Three ordinary seeds, then the alias bomb.
const SEEDS: [&str; 4] = [
    include_str!("../../tests/fixtures/margo/valid-rich.yaml"),
    include_str!("../../tests/fixtures/margo/valid-minimal.yaml"),
    include_str!("../../tests/fixtures/margo/invalid-many.yaml"),
    include_str!("../../tests/fixtures/margo/invalid-alias-bomb.yaml"),
];

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

/// Bytes that matter to YAML and JSON syntax, so mutations hit the parser's branches.
const INTERESTING: &[u8] = b"-:[]{},&*!|>'\"#\n \t?%@`\\0123456789.eE+x~\xff\xc3";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(8) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let b = INTERESTING[rng.below(INTERESTING.len())];
                v.insert(i, b);
            }
            2 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(64).min(len - i);
                v.drain(i..i + n);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = rng.below(256).min(len - i);
                let chunk: Vec<u8> = v[i..i + n].to_vec();
                let j = rng.below(v.len() + 1);
                v.splice(j..j, chunk);
            }
            4 if len > 0 => v.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

#[test]
fn yaml_and_validator_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let limits = DescriptionLimits::default();
    for i in 0..2000 {
        // The alias-bomb seed is costly per run (it replays up to the budget): use it
        // one time in ten.
        let seed = if i % 10 == 9 { SEEDS[3] } else { SEEDS[i % 3] }.as_bytes();
        let input = mutate(&mut rng, seed);
        if i % 4 == 0 {
            let _ = parse(&input, &YamlLimits::default());
        }
        let c = validate_description(&input, &limits);
        // Invariant: a model exists exactly when there is nothing to report.
        assert_eq!(c.model.is_some(), c.report.is_empty());
    }
}

#[test]
fn manifest_rules_never_panic() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let seeds: Vec<Vec<u8>> = vec![
        serde_json::to_vec(&crate::margo::manifest::testutil::package_manifest(b"x")).unwrap_or_default(),
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"x","digest":"sha256:0","size":1}]}"#.to_vec(),
    ];
    for i in 0..3000 {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        for route in [RouteKind::App, RouteKind::Component, RouteKind::Passthrough] {
            let _ = check_manifest(
                &input,
                route,
                &reference("1.0.0"),
                &ManifestOptions::default(),
            );
        }
    }
}

#[test]
fn compose_archive_check_never_panics() {
    let mut rng = Rng(0x94D0_49BB_1331_11EB);
    let seed = crate::margo::compose::testutil::valid();
    let limits = ArchiveLimits::default();
    for _ in 0..500 {
        let input = mutate(&mut rng, &seed);
        let _ = check_archive(&input[..], &limits, None);
    }
}

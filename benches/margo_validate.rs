//! Admission cost on a push: validating a rich margo.yaml (the schema's richest shape),
//! the package manifest rules, and checking a 10 MiB compose archive. Target: ≤ 5 ms
//! added to a package push beyond upstream time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flate2::write::GzEncoder;
use flate2::Compression;
use margo_proxy::margo::compose::{check_archive, ArchiveLimits};
use margo_proxy::margo::manifest::{check_manifest, ManifestOptions, Reference, RouteKind};
use margo_proxy::margo::validate::{validate_description, DescriptionLimits};
use margo_proxy::oci::digest::sha256_digest;
use margo_proxy::oci::Digest;

const RICH: &str = include_str!("../tests/fixtures/margo/valid-rich.yaml");

/// A compose archive of about `target` compressed bytes: incompressible (xorshift)
/// payload files under one top directory, as a realistic worst case for reading.
fn compose_archive(target: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        builder
            .append_data(&mut h, path, data)
            .unwrap_or_else(|e| panic!("bench setup: {e}"));
    };
    add("app/compose.yaml", b"services:\n  web:\n    image: nginx\n");
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let chunk = 1024 * 1024;
    let files = target.div_ceil(chunk);
    for i in 0..files {
        let mut data = Vec::with_capacity(chunk);
        while data.len() < chunk {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            data.extend_from_slice(&state.to_le_bytes());
        }
        add(&format!("app/data/blob-{i}.bin"), &data);
    }
    let gz = builder
        .into_inner()
        .unwrap_or_else(|e| panic!("bench setup: {e}"));
    let mut out = gz.finish().unwrap_or_else(|e| panic!("bench setup: {e}"));
    out.flush().unwrap_or_else(|e| panic!("bench setup: {e}"));
    out
}

fn package_manifest(description: &[u8]) -> Vec<u8> {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.margo.app.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2
        },
        "layers": [{
            "mediaType": "application/vnd.margo.app.description.v1+yaml",
            "digest": sha256_digest(description),
            "size": description.len(),
            "annotations": {"org.opencontainers.image.title": "margo.yaml"}
        }]
    });
    serde_json::to_vec(&m).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let limits = DescriptionLimits::default();
    let mut g = c.benchmark_group("description");
    g.throughput(Throughput::Bytes(RICH.len() as u64));
    g.bench_function("validate_rich_margo_yaml", |b| {
        b.iter(|| validate_description(black_box(RICH.as_bytes()), &limits))
    });
    g.finish();

    let manifest = package_manifest(RICH.as_bytes());
    let opts = ManifestOptions::default();
    let reference = Reference::Tag("1.2.1".to_owned());
    c.bench_function("package_manifest_rules", |b| {
        b.iter(|| check_manifest(black_box(&manifest), RouteKind::App, &reference, &opts))
    });

    let archive = compose_archive(10 * 1024 * 1024);
    let digest = Digest::sha256_of(&archive);
    let size = archive.len() as u64;
    let archive_limits = ArchiveLimits::default();
    let mut g = c.benchmark_group("compose");
    g.throughput(Throughput::Bytes(size));
    g.sample_size(20);
    g.bench_function("check_10MiB_archive", |b| {
        b.iter(|| {
            check_archive(
                black_box(&archive[..]),
                &archive_limits,
                Some((&digest, size)),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Manifest cache micro-benchmarks: hit by digest, hit by tag, insert.
//!
//! `cargo bench --bench cache`. Bodies are ~1.5 KiB, a typical single-arch
//! image manifest; insert includes the sha256 verification it always does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::HeaderMap;
use margo_proxy::cache::{sha256_digest, CacheConfig, Fetched, ManifestCache, RepoKey, TagProbe};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn manifest(i: usize) -> (String, Bytes, HeaderMap) {
    let layers: String = (0..8)
        .map(|l| {
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{}\",\"size\":{}}}",
                sha256_digest(format!("{i}-{l}").as_bytes()),
                1000 + l
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let body = Bytes::from(format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"layers\":[{layers}]}}"
    ));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(OCI_MANIFEST));
    (sha256_digest(&body), body, headers)
}

#[derive(Debug)]
struct Never;

fn bench(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot build runtime: {e}");
            return;
        }
    };
    let cache = match ManifestCache::new(&CacheConfig::default()) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("bad config: {e}");
            return;
        }
    };
    let repo = RepoKey::new("hub", "apps/web");
    let (digest, body, headers) = manifest(0);
    let key = repo.digest(digest.as_str());
    let tag = repo.tag("v1.2.3");
    rt.block_on(async {
        let fill = Fetched::Manifest {
            body: body.clone(),
            headers: headers.clone(),
        };
        let _ = cache
            .get_or_fetch(&key, || async { Ok::<_, Never>(fill) })
            .await;
        let found = digest.clone();
        let _ = cache
            .resolve_tag(&tag, |_| async { TagProbe::<Never>::Found(found) })
            .await;
    });

    let mut g = c.benchmark_group("manifest_cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit_by_digest", |b| {
        b.to_async(&rt).iter(|| async {
            let m = cache
                .get_or_fetch(black_box(&key), || async { Err::<Fetched, _>(Never) })
                .await;
            black_box(m.is_ok())
        })
    });
    g.bench_function("hit_by_tag", |b| {
        b.to_async(&rt).iter(|| async {
            let r = cache
                .resolve_tag(black_box(&tag), |_| async { TagProbe::<Never>::NotFound })
                .await;
            let m = match r {
                Ok(r) => cache
                    .get_or_fetch(&repo.digest(r.digest), || async {
                        Err::<Fetched, _>(Never)
                    })
                    .await
                    .is_ok(),
                Err(_) => false,
            };
            black_box(m)
        })
    });
    let pool: Vec<_> = (1..=1024).map(manifest).collect();
    let mut i = 0usize;
    // A miss: verified and stored (each round in a repository of its own, so every
    // lookup misses).
    g.bench_function("miss_verified_1k5", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let (d, body, headers) = &pool[i % pool.len()];
            let cache = &cache;
            let repo = RepoKey::new("hub", format!("bench/{i}").as_str());
            async move {
                let k = repo.digest(d.as_str());
                let fill = Fetched::Manifest {
                    body: body.clone(),
                    headers: headers.clone(),
                };
                let r = cache
                    .get_or_fetch(&k, || async { Ok::<_, Never>(fill) })
                    .await;
                black_box(r.is_ok())
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

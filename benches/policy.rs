//! A push and a pull decision with every shipped policy loaded (and the
//! parameterised ones switched on, so they do real work).
//! Targets: push ≤ 1 ms, pull ≤ 100 µs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use margo_proxy::policy::{cli, PolicyConfig, PolicyEngine};

fn engine() -> (tempfile::TempDir, PolicyEngine) {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for entry in std::fs::read_dir(&shipped).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".rego") && !name.ends_with("_test.rego") {
            std::fs::copy(&path, dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    std::fs::write(
        dir.path().join("data.yaml"),
        "allowed_registries: {hosts: [registry.example.com]}\n\
         max_resources: {cpu_cores: 4, memory: 8Gi}\n\
         digest_pulls: {groups: [production-fleet]}\n\
         frozen_repositories: {repositories: [\"archive/**\"]}\n\
         denied_ids: {ids: [malware-miner]}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = PolicyConfig {
        directories: vec![dir.path().to_path_buf()],
        decision_log: false,
        ..PolicyConfig::default()
    };
    let engine = PolicyEngine::load(&config).unwrap_or_else(|e| panic!("{e}"));
    (dir, engine)
}

fn example(name: &str) -> margo_proxy::policy::PolicyInput {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/examples")
        .join(name);
    cli::read_input(&path).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let (_dir, engine) = engine();
    let push = example("push.json");
    let pull = example("pull.json");
    c.bench_function("policy/push_decision", |b| {
        b.iter(|| engine.evaluate(std::hint::black_box(&push)))
    });
    c.bench_function("policy/pull_decision", |b| {
        b.iter(|| engine.evaluate(std::hint::black_box(&pull)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

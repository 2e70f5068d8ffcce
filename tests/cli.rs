//! The offline commands: `validate` (Margo content) and `policy test|eval` (Rego).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::process::Command;

use common::repo_root;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_margo-proxy"))
        .current_dir(repo_root())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn validate_exit_codes_and_json() {
    let (code, _) = run(&["validate", "tests/fixtures/margo/valid-rich.yaml"]);
    assert_eq!(code, 0);
    let (code, out) = run(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/margo/invalid-many.yaml",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("margo.pattern") && text.contains("deploymentProfiles[0]"),
        "{text}"
    );
    let (code, _) = run(&["validate", "does/not/exist"]);
    assert_eq!(code, 2);
}

#[test]
fn shipped_policy_tests_pass_and_eval_prints_a_decision() {
    let (code, out) = run(&["policy", "test", "policies"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 failed"), "{out}");
    let (code, out) = run(&["policy", "eval", "--input", "policies/examples/pull.json"]);
    assert!(code == 0 || code == 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["point"], "pull");
}

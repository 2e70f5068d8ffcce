//! Unit tests of the policy engine.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::policy::cli;
use crate::policy::{
    Decision, FailureAction, Identity, Mode, Outcome, PolicyConfig, PolicyEngine, PolicyError,
    PolicyInput, PolicyService, PullInput, PushInput, ReloadOutcome, Request, RouteKind,
    INPUT_VERSION,
};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn config_for(dir: &Path) -> PolicyConfig {
    PolicyConfig {
        directories: vec![dir.to_path_buf()],
        decision_log: false,
        ..PolicyConfig::default()
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"));
}

fn load(config: &PolicyConfig) -> PolicyEngine {
    PolicyEngine::load(config).unwrap_or_else(|e| panic!("load: {e}"))
}

fn push(repository: &str, tag: &str) -> PolicyInput {
    PolicyInput::Push(PushInput {
        version: INPUT_VERSION,
        request: Request::new("PUT", repository, tag, RouteKind::App),
        identity: Identity::anonymous(),
        manifest: serde_json::json!({"schemaVersion": 2}),
        description: None,
        builtin_results: Vec::new(),
        component: None,
    })
}

fn pull(repository: &str, reference: &str, groups: &[&str]) -> PolicyInput {
    PolicyInput::Pull(PullInput {
        version: INPUT_VERSION,
        request: Request::new("GET", repository, reference, RouteKind::App),
        identity: Identity {
            subject: Some("wfm".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Identity::default()
        },
        descriptor: crate::policy::Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: "sha256:00".into(),
            size: 2,
            ..Default::default()
        },
        manifest: None,
        cache_hit: false,
        signatures: Vec::new(),
    })
}

const TWO_PACKAGES: &str = r#"
package margo.admission.strict

deny contains msg if {
    input.kind == "push"
    input.request.tag == "latest"
    msg := "no latest"
}

warn contains "pushing to a test repository" if {
    startswith(input.request.repository, "test/")
}
"#;

const STRUCTURED: &str = r#"
package margo.admission.soft

violations contains {"rule": "soft-rule", "message": "soft says no", "path": ["deploymentProfiles", 0, "id"]} if {
    input.kind == "push"
}
"#;

/// The shipped policies' own Rego tests, so `cargo test` runs them in CI.
#[test]
fn shipped_rego_tests_pass() {
    let report = cli::run_tests(&[shipped()]).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    let code = cli::print_test_report(&report, &mut out).unwrap_or(2);
    let text = String::from_utf8_lossy(&out);
    println!("{text}");
    assert!(report.results.len() >= 40, "{text}");
    assert_eq!(code, 0, "{text}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "ok.rego", TWO_PACKAGES);
    write(
        dir.path(),
        "bad.rego",
        "package margo.admission.bad\n\ndeny contains msg if {\n  msg := \n}\n",
    );
    match PolicyEngine::load(&config_for(dir.path())) {
        Err(PolicyError::Compile { file, line, .. }) => {
            assert!(file.ends_with("bad.rego"), "{file}");
            assert_eq!(line, 4);
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    let text = PolicyEngine::load(&config_for(dir.path()))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(text.contains("bad.rego:4:"), "{text}");
}

#[test]
fn missing_directory_is_an_error() {
    let config = config_for(Path::new("/nonexistent/policies"));
    assert!(matches!(
        PolicyEngine::load(&config),
        Err(PolicyError::Directory { .. })
    ));
}

#[test]
fn test_files_are_not_served() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "a.rego", TWO_PACKAGES);
    // Would deny everything if it were loaded for serving.
    write(
        dir.path(),
        "a_test.rego",
        "package margo.admission.testonly\ndeny contains \"x\" if true\n",
    );
    let engine = load(&config_for(dir.path()));
    assert_eq!(
        engine.evaluate(&push("acme/app", "1.0.0")).outcome,
        Outcome::Allow
    );
    assert_eq!(engine.packages().count(), 1);
}

#[test]
fn merging_and_modes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "strict.rego", TWO_PACKAGES);
    write(dir.path(), "soft.rego", STRUCTURED);
    let mut config = config_for(dir.path());
    config.packages.insert("soft".into(), Mode::Audit);
    let engine = load(&config);

    let d = engine.evaluate(&push("test/app", "latest"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.deny_messages(), vec!["strict: no latest".to_string()]);
    assert_eq!(d.denied_rule(), Some("strict"));
    // The audit package's violation became a warning, with its rule and path.
    let soft = d.warn.iter().find(|v| v.package == "soft");
    assert_eq!(
        soft.map(ToString::to_string).as_deref(),
        Some("soft-rule: soft says no (at deploymentProfiles[0].id)")
    );
    assert!(d
        .warn_messages()
        .contains(&"strict: pushing to a test repository".to_string()));
    assert_eq!(d.packages.len(), 2);
    assert_eq!(d.bundle_revision, engine.revision());
    assert_eq!(d.bundle_revision.len(), 64);

    // Only warnings: forwarded.
    let d = engine.evaluate(&push("acme/app", "1.0.0"));
    assert_eq!(d.outcome, Outcome::Warn);
    assert!(d.deny.is_empty());

    // Everything in audit: the same request is only warned about.
    config.default_mode = Mode::Audit;
    let d = load(&config).evaluate(&push("test/app", "latest"));
    assert_eq!(d.outcome, Outcome::Warn);
    assert_eq!(d.warn.len(), 3);

    // Off: not evaluated, not reported.
    config.default_mode = Mode::Enforce;
    config.packages.insert("strict".into(), Mode::Off);
    config.packages.insert("soft".into(), Mode::Off);
    let d = load(&config).evaluate(&push("test/app", "latest"));
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.packages.is_empty());
}

#[test]
fn params_come_from_data_files() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(
        dir.path(),
        "p.rego",
        "package margo.admission.p\ndeny contains r if { some r in data.params.p.refuse; r == input.request.repository }\n",
    );
    write(dir.path(), "data.yaml", "p:\n  refuse: [acme/bad]\n");
    let engine = load(&config_for(dir.path()));
    assert!(engine.evaluate(&push("acme/bad", "1.0.0")).is_denied());
    assert!(!engine.evaluate(&push("acme/good", "1.0.0")).is_denied());

    write(dir.path(), "data.yaml", "- not a mapping\n");
    assert!(matches!(
        PolicyEngine::load(&config_for(dir.path())),
        Err(PolicyError::Data { .. })
    ));
}

const SLOW: &str = r#"
package margo.admission.slow

deny contains "never" if {
    some i in numbers.range(1, 4000)
    some j in numbers.range(1, 4000)
    i * j < 0
}
"#;

fn slow_config(dir: &Path) -> PolicyConfig {
    let mut config = config_for(dir);
    config.limits.time_budget_ms = 20;
    config
}

#[test]
fn time_budget_fails_closed_in_enforce() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "slow.rego", SLOW);
    let config = slow_config(dir.path());
    let started = std::time::Instant::now();
    let d = load(&config).evaluate(&push("acme/app", "1.0.0"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "budget not enforced"
    );
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.denied_rule(), Some("policy-limit-exceeded"));
    assert!(d.packages[0].limit_exceeded);
}

#[test]
fn time_budget_warns_in_audit_and_is_configurable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "slow.rego", SLOW);
    let mut config = slow_config(dir.path());
    config.default_mode = Mode::Audit;
    let d = load(&config).evaluate(&push("acme/app", "1.0.0"));
    assert_eq!(d.outcome, Outcome::Warn);
    assert_eq!(d.warn[0].rule, "policy-limit-exceeded");

    // Fail open even in enforce, when the operator says so...
    config.default_mode = Mode::Enforce;
    config.limits.on_limit_exceeded = FailureAction::Warn;
    assert_eq!(
        load(&config).evaluate(&push("acme/app", "1.0.0")).outcome,
        Outcome::Warn
    );
    // ...or closed even in audit.
    config.default_mode = Mode::Audit;
    config.limits.on_limit_exceeded = FailureAction::Deny;
    assert_eq!(
        load(&config).evaluate(&push("acme/app", "1.0.0")).outcome,
        Outcome::Deny
    );
}

#[test]
fn runtime_errors_fail_closed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // regorus resolves function names lazily: an unknown function is found at
    // evaluation, where it must deny rather than pass.
    write(
        dir.path(),
        "broken.rego",
        "package margo.admission.broken\ndeny contains x if { x := no_such_function(input.kind) }\n",
    );
    write(
        dir.path(),
        "typed.rego",
        "package margo.admission.typed\ndeny contains \"n\" if { to_number(input.request.repository) > 1 }\n",
    );
    let d = load(&config_for(dir.path())).evaluate(&push("acme/app", "1.0.0"));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.deny.len(), 2, "{d:?}");
    assert!(d.deny.iter().all(|v| v.rule == "policy-error"));
    assert!(d.packages.iter().all(|p| p.error.is_some()));
}

#[test]
fn reload_swaps_and_keeps_previous_set_on_failure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "p.rego", TWO_PACKAGES);
    let service = PolicyService::new(config_for(dir.path())).unwrap_or_else(|e| panic!("{e}"));
    let before = service.current();
    assert!(!service.evaluate(&push("acme/app", "1.0.0")).is_denied());
    assert_eq!(service.reload_if_changed().ok().flatten(), None);
    assert!(matches!(
        service.reload(),
        Ok(ReloadOutcome::Unchanged { .. })
    ));

    // Change: every push denied.
    write(
        dir.path(),
        "p.rego",
        "package margo.admission.strict\ndeny contains \"all pushes refused\" if input.kind == \"push\"\n",
    );
    let outcome = service.reload_if_changed();
    assert!(
        matches!(outcome, Ok(Some(ReloadOutcome::Reloaded { .. }))),
        "{outcome:?}"
    );
    assert!(service.evaluate(&push("acme/app", "1.0.0")).is_denied());
    // The engine taken before the reload still evaluates (in-flight requests).
    assert!(!before.evaluate(&push("acme/app", "1.0.0")).is_denied());

    // Broken file: the reload fails and says where; the previous set stays.
    let live = service.current().revision().to_string();
    write(
        dir.path(),
        "p.rego",
        "package margo.admission.strict\ndeny contains if {\n",
    );
    match service.reload() {
        Err(PolicyError::Compile { file, .. }) => assert!(file.ends_with("p.rego")),
        other => panic!("expected a compile error, got {other:?}"),
    }
    assert_eq!(service.current().revision(), live);
    assert!(service.evaluate(&push("acme/app", "1.0.0")).is_denied());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_picks_up_changes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "p.rego", TWO_PACKAGES);
    let mut config = config_for(dir.path());
    config.reload.interval_ms = 100;
    let service = Arc::new(PolicyService::new(config).unwrap_or_else(|e| panic!("{e}")));
    let watcher = service.spawn_watcher();
    assert!(watcher.is_some());
    write(
        dir.path(),
        "p.rego",
        "package margo.admission.strict\ndeny contains \"frozen for the test\" if input.kind == \"push\"\n",
    );
    let mut denied = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if service.evaluate(&push("acme/app", "1.0.0")).is_denied() {
            denied = true;
            break;
        }
    }
    assert!(denied, "the watcher did not reload the changed policy");
    if let Some(w) = watcher {
        w.abort();
    }
}

#[test]
fn examples_parse_and_decide_with_shipped_policies() {
    let examples = shipped().join("examples");
    let config = config_for(&shipped());
    let expect = [
        ("push.json", Outcome::Deny),           // no license file
        ("push-component.json", Outcome::Deny), // tag latest
        ("pull.json", Outcome::Allow),
        ("delete.json", Outcome::Allow),
        ("tag.json", Outcome::Allow),
    ];
    for (name, outcome) in expect {
        let decision: Decision =
            cli::eval_file(&examples.join(name), &config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decision.outcome, outcome, "{name}: {decision:?}");
    }
    let mut out = Vec::new();
    let code = cli::cmd_eval(&examples.join("push.json"), &config, &mut out);
    assert_eq!(code, 1);
    let json: serde_json::Value =
        serde_json::from_slice(&out).unwrap_or_else(|e| panic!("eval output: {e}"));
    assert_eq!(json["outcome"], "deny");
    assert_eq!(
        json["deny"][0]["path"],
        "metadata.catalog.application.licenseFile"
    );
}

#[test]
fn shipped_policies_with_parameters() {
    // The shipped data.yaml switches the parameterised policies off; a copy with
    // values shows each of them deciding.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    for entry in fs::read_dir(shipped()).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_some_and(|e| e == "rego") {
            let name = path.file_name().unwrap_or_default();
            fs::copy(&path, dir.path().join(name)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    write(
        dir.path(),
        "data.yaml",
        "digest_pulls: {groups: [production-fleet]}\nfrozen_repositories: {repositories: [\"acme/**\"]}\n",
    );
    let engine = load(&config_for(dir.path()));
    let d = engine.evaluate(&pull("northstar/app1", "1.2.0", &["production-fleet"]));
    assert_eq!(d.denied_rule(), Some("digest-pulls"));
    assert!(!engine
        .evaluate(&pull("northstar/app1", "sha256:00", &["production-fleet"]))
        .is_denied());
    assert_eq!(
        engine.evaluate(&push("acme/x", "1.0.0")).denied_rule(),
        Some("frozen-repository")
    );
}

#[test]
fn policy_test_reports_failures() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(dir.path(), "p.rego", TWO_PACKAGES);
    write(
        dir.path(),
        "p_test.rego",
        r#"package margo.admission.strict

test_latest_denied if {
    deny["no latest"] with input as {"kind": "push", "request": {"tag": "latest", "repository": "a"}}
}

test_wrong_expectation if {
    count(deny) == 5 with input as {"kind": "push", "request": {"tag": "latest", "repository": "a"}}
}
"#,
    );
    let mut out = Vec::new();
    let code = cli::cmd_test(&[dir.path().to_path_buf()], &mut out);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("test_latest_denied: PASS"), "{text}");
    assert!(text.contains("test_wrong_expectation: FAIL"), "{text}");
    assert!(text.contains("rego: 1 passed, 1 failed"), "{text}");

    // No tests at all is not a success.
    let empty = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(empty.path(), "p.rego", TWO_PACKAGES);
    assert_eq!(
        cli::cmd_test(&[empty.path().to_path_buf()], &mut Vec::new()),
        1
    );
}

#[test]
fn config_rejects_unknown_fields_and_has_defaults() {
    let config: PolicyConfig = serde_json::from_str(r#"{"packages": {"semver_tags": "audit"}}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.directories, vec![PathBuf::from("policies")]);
    assert_eq!(config.mode_of("semver_tags"), Mode::Audit);
    assert_eq!(config.mode_of("other"), Mode::Enforce);
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"mdoe": "audit"}"#).is_err());
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"limits": {"budget": 1}}"#).is_err());
}

#[test]
fn input_carries_version_kind_and_no_token() {
    let value = serde_json::to_value(push("acme/app", "1.0.0")).unwrap_or_default();
    assert_eq!(value["version"], 1);
    assert_eq!(value["kind"], "push");
    assert_eq!(value["request"]["tag"], "1.0.0");
    assert!(value["request"].get("digest").is_none());
    let by_digest = Request::new("GET", "a", "sha256:00", RouteKind::App);
    assert_eq!(by_digest.digest.as_deref(), Some("sha256:00"));
    assert_eq!(by_digest.tag, None);
}

#[test]
fn decision_points_limit_where_a_package_runs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    write(
        dir.path(),
        "p.rego",
        "package margo.admission.pushonly\ndecision_points := {\"push\"}\ndeny contains \"always\" if true\n",
    );
    let engine = load(&config_for(dir.path()));
    assert!(engine.evaluate(&push("a/b", "1.0.0")).is_denied());
    let d = engine.evaluate(&pull("a/b", "1.0.0", &[]));
    assert_eq!(d.outcome, Outcome::Allow);
    assert!(d.packages.is_empty());

    write(
        dir.path(),
        "p.rego",
        "package margo.admission.pushonly\ndecision_points := {\"upload\"}\ndeny contains \"always\" if true\n",
    );
    assert!(matches!(
        PolicyEngine::load(&config_for(dir.path())),
        Err(PolicyError::Config(_))
    ));
}

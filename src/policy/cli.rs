//! `margo-proxy policy test DIR` and `margo-proxy policy eval --input FILE`, as
//! library functions so they can be tested and wired to any argument parser.
//!
//! Both exist so security teams can develop policies offline, with the same engine,
//! the same data files and the same input shapes as the proxy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::policy::bundle::Bundle;
use crate::policy::config::PolicyConfig;
use crate::policy::decision::Decision;
use crate::policy::engine::{self, PolicyEngine};
use crate::policy::error::PolicyError;
use crate::policy::input::{PolicyInput, INPUT_VERSION};

/// Time a single Rego test may take before it counts as an error.
pub const TEST_TIME_LIMIT: Duration = Duration::from_secs(5);

/// Result of one `test_*` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestStatus {
    Pass,
    /// The rule is false or undefined.
    Fail,
    /// The rule could not be evaluated.
    Error(String),
}

/// One test of a `policy test` run.
#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: String,
    /// `data.<package>.<rule>`.
    pub rule: String,
    pub status: TestStatus,
    /// Output of `print` calls made while the test ran.
    pub prints: Vec<String>,
    pub duration: Duration,
}

/// All tests of a `policy test` run.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub results: Vec<TestResult>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results
            .iter()
            .filter(|r| r.status == TestStatus::Pass)
            .count()
    }

    /// Failed and errored tests.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Success only when there was at least one test and none failed: a
    /// directory whose tests silently vanished must not look green.
    pub fn success(&self) -> bool {
        !self.results.is_empty() && self.failed() == 0
    }
}

/// Runs every `test_*` rule of every package (test files included) in `dirs`.
pub fn run_tests(dirs: &[PathBuf]) -> Result<TestReport, PolicyError> {
    let config = PolicyConfig::default();
    let bundle = Bundle::read(dirs, true, config.limits.max_file_bytes)?;
    let mut prepared = engine::compile(&bundle, &config.limits)?;
    prepared.set_gather_prints(true);
    let modules = prepared
        .get_policy_package_components()
        .map_err(|e| PolicyError::Bundle(e.to_string()))?;

    let mut seen = std::collections::BTreeSet::new();
    let mut report = TestReport::default();
    for file in &bundle.rego {
        let label = file.path.to_string_lossy().into_owned();
        let Some(module) = modules.iter().find(|m| m.source_file == label) else {
            continue;
        };
        if !module.components.iter().all(|c| engine::is_identifier(c)) {
            continue;
        }
        let package = format!("data.{}", module.components.join("."));
        for name in test_rule_names(&file.text) {
            // The lexical scan may see a `test_` line inside a multi-line string;
            // only rules regorus knows this module declares are tests.
            if !matches!(
                prepared.has_declared_rule_rooted_at(&label, &name),
                Ok(true)
            ) {
                continue;
            }
            let rule = format!("{package}.{name}");
            if !seen.insert(rule.clone()) {
                continue;
            }
            report.results.push(run_one(&prepared, &label, rule));
        }
    }
    Ok(report)
}

fn run_one(prepared: &regorus::Engine, file: &str, rule: String) -> TestResult {
    let mut engine = prepared.clone();
    engine.set_execution_timer_config(engine::timer(
        TEST_TIME_LIMIT,
        &PolicyConfig::default().limits,
    ));
    let start = Instant::now();
    let status = match engine.eval_rule(rule.clone()) {
        Ok(regorus::Value::Bool(true)) => TestStatus::Pass,
        Ok(_) => TestStatus::Fail,
        Err(e) => TestStatus::Error(crate::policy::error::diagnostic_message(&e.to_string())),
    };
    TestResult {
        file: file.to_string(),
        rule,
        status,
        prints: engine.take_prints().unwrap_or_default(),
        duration: start.elapsed(),
    }
}

/// Names of top-level rules starting with `test_`, in source order. Rules start
/// at column 0 in every formatted Rego file (`opa fmt`, `regal`), which keeps this
/// scan simple; [`run_tests`] confirms each name with regorus.
fn test_rule_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        if !line.starts_with("test_") {
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Writes a report the way `opa test -v` does: one line per test, prints of
/// failing tests, a summary line. Returns the process exit code: 0 all passed,
/// 1 a test failed (or there were none).
pub fn print_test_report(report: &TestReport, out: &mut dyn Write) -> std::io::Result<i32> {
    let mut current_file = "";
    for result in &report.results {
        if result.file != current_file {
            current_file = &result.file;
            writeln!(out, "{current_file}:")?;
        }
        let (status, detail) = match &result.status {
            TestStatus::Pass => ("PASS", String::new()),
            TestStatus::Fail => ("FAIL", String::new()),
            TestStatus::Error(e) => ("ERROR", format!(": {e}")),
        };
        writeln!(
            out,
            "{}: {status} ({:?}){detail}",
            result.rule, result.duration
        )?;
        if result.status != TestStatus::Pass {
            for line in &result.prints {
                writeln!(out, "  {line}")?;
            }
        }
    }
    writeln!(out, "{}", "-".repeat(80))?;
    let total = report.results.len();
    writeln!(out, "PASS: {}/{total}", report.passed())?;
    if report.failed() > 0 {
        writeln!(out, "FAIL: {}/{total}", report.failed())?;
    }
    if total == 0 {
        writeln!(out, "no test_ rules found")?;
    }
    // The plain line CI runners recognise.
    writeln!(
        out,
        "rego: {} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    Ok(if report.success() { 0 } else { 1 })
}

/// `policy test DIR`: runs the tests and prints the report. Exit code 0 all
/// passed, 1 a test failed or none exist, 2 the policies do not load.
pub fn cmd_test(dirs: &[PathBuf], out: &mut dyn Write) -> i32 {
    let result = run_tests(dirs).map_err(|e| e.to_string());
    let written = match result {
        Ok(report) => print_test_report(&report, out),
        Err(e) => writeln!(out, "error: {e}").map(|()| 2),
    };
    written.unwrap_or(2)
}

/// Reads an input document (JSON, one of the documented shapes) from `path`.
pub fn read_input(path: &Path) -> Result<PolicyInput, PolicyError> {
    let input_err = |message: String| PolicyError::Input {
        path: path.to_path_buf(),
        message,
    };
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| input_err(e.to_string()))?;
    let raw: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| input_err(e.to_string()))?;
    match raw.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(INPUT_VERSION) => {}
        other => {
            return Err(input_err(format!(
                "input.version is {other:?}, this build understands {INPUT_VERSION}"
            )))
        }
    }
    serde_json::from_value(raw).map_err(|e| input_err(e.to_string()))
}

/// `policy eval`: the decision for the input in `input_path` under the policies of
/// `config` (typically [`PolicyConfig::default`] with `directories` set).
pub fn eval_file(input_path: &Path, config: &PolicyConfig) -> Result<Decision, PolicyError> {
    let input = read_input(input_path)?;
    let engine = PolicyEngine::load(config)?;
    Ok(engine.evaluate(&input))
}

/// `policy eval --input FILE [--dir DIR]`: prints the decision as JSON. Exit code
/// 0 allow or warn, 1 deny, 2 unusable input or policies.
pub fn cmd_eval(input_path: &Path, config: &PolicyConfig, out: &mut dyn Write) -> i32 {
    let written = match eval_file(input_path, config) {
        Ok(decision) => serde_json::to_string_pretty(&decision)
            .map_err(std::io::Error::other)
            .and_then(|json| writeln!(out, "{json}"))
            .map(|()| i32::from(decision.is_denied())),
        Err(e) => writeln!(out, "error: {e}").map(|()| 2),
    };
    written.unwrap_or(2)
}

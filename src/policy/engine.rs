//! Compiling a policy bundle and evaluating it for one request.
//!
//! A [`PolicyEngine`] is immutable once built: it holds a regorus engine whose
//! modules are already analysed ("prepared"), and every evaluation works on a clone
//! of it. Cloning a prepared regorus engine copies a few reference-counted
//! pointers (measured ~0.2 µs), far cheaper than a pool's lock and bookkeeping, and
//! it means evaluations never share interpreter state.

use std::time::{Duration, Instant};

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Value;

use crate::policy::bundle::Bundle;
use crate::policy::config::{FailureAction, LimitsConfig, Mode, PolicyConfig};
use crate::policy::decision::{Decision, PackageReport, Violation};
use crate::policy::error::PolicyError;
use crate::policy::input::{DecisionPoint, PolicyInput};
use crate::policy::log;

/// Packages below this namespace are evaluated for decisions; every other package
/// is a library (helpers, shared data) or test-only.
pub const NAMESPACE: &str = "margo.admission";

/// Key below `data` at which the parameter documents (`data.yaml` ...) are merged.
pub const PARAMS_KEY: &str = "params";

/// The rules a decision package may define.
const RULES: [RuleKind; 3] = [RuleKind::Deny, RuleKind::Warn, RuleKind::Violations];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleKind {
    Deny,
    Warn,
    Violations,
}

impl RuleKind {
    fn name(self) -> &'static str {
        match self {
            RuleKind::Deny => "deny",
            RuleKind::Warn => "warn",
            RuleKind::Violations => "violations",
        }
    }
}

/// A decision package and the rules it declares.
#[derive(Debug, Clone)]
struct Package {
    /// Name below [`NAMESPACE`].
    name: String,
    mode: Mode,
    /// `data.margo.admission.<name>.<rule>` for each declared rule.
    rules: Vec<(RuleKind, String)>,
    /// The decision points the package declares in `decision_points`; `None`
    /// (not declared) means all.
    points: Option<Vec<DecisionPoint>>,
}

impl Package {
    fn applies_to(&self, point: DecisionPoint) -> bool {
        self.mode != Mode::Off && self.points.as_ref().is_none_or(|p| p.contains(&point))
    }
}

/// A compiled, immutable policy set. Share it in an `Arc`; see
/// [`crate::policy::PolicyService`] for the hot-reloading holder.
#[derive(Debug)]
pub struct PolicyEngine {
    prepared: regorus::Engine,
    packages: Vec<Package>,
    revision: String,
    limits: LimitsConfig,
    decision_log: bool,
}

impl PolicyEngine {
    /// Reads and compiles the directories of `config`.
    pub fn load(config: &PolicyConfig) -> Result<Self, PolicyError> {
        let bundle = Bundle::read(&config.directories, false, config.limits.max_file_bytes)?;
        Self::from_bundle(&bundle, config)
    }

    /// Compiles an already-read bundle.
    pub fn from_bundle(bundle: &Bundle, config: &PolicyConfig) -> Result<Self, PolicyError> {
        let prepared = compile(bundle, &config.limits)?;
        let mut packages = discover_packages(&prepared, config)?;
        for package in &mut packages {
            package.points = declared_points(&prepared, package)?;
        }
        for name in config.packages.keys() {
            if !packages.iter().any(|p| &p.name == name) {
                // Not an error: deleting a policy file must not make every later
                // reload fail; the package it configured is simply gone.
                tracing::warn!(target: "margo_proxy::policy", package = %name,
                    "policy.packages names a package that no loaded policy declares");
            }
        }
        Ok(Self {
            prepared,
            packages,
            revision: bundle.revision.clone(),
            limits: config.limits.clone(),
            decision_log: config.decision_log,
        })
    }

    /// Hash of the loaded files, reported in every decision.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The decision packages (name below `margo.admission.`) and their modes.
    pub fn packages(&self) -> impl Iterator<Item = (&str, Mode)> {
        self.packages.iter().map(|p| (p.name.as_str(), p.mode))
    }

    /// Evaluates every package for `input` and merges the results. Never fails:
    /// a package that cannot be evaluated contributes what
    /// [`LimitsConfig::on_error`] / [`LimitsConfig::on_limit_exceeded`] say.
    pub fn evaluate(&self, input: &PolicyInput) -> Decision {
        self.evaluate_for(input, None)
    }

    /// [`Self::evaluate`] for a proxied request: its decision log line carries the id.
    pub fn evaluate_for(&self, input: &PolicyInput, request_id: Option<&str>) -> Decision {
        let request = input.request();
        let value = serde_json::to_value(input)
            .map(Value::from)
            .map_err(|e| format!("input does not serialise: {e}"));
        let decision = self.evaluate_value(input.point(), value);
        if self.decision_log {
            log::log_decision(
                &decision,
                &request.repository,
                &request.reference,
                request_id,
            );
        }
        decision
    }

    fn evaluate_value(&self, point: DecisionPoint, input: Result<Value, String>) -> Decision {
        let start = Instant::now();
        let deadline = start + self.limits.time_budget();
        let mut decision = Decision::allow(point, self.revision.clone());
        let mut engine = self.prepared.clone();
        let input_error = match input {
            Ok(v) => {
                engine.set_input(v);
                None
            }
            Err(e) => Some(e),
        };
        for package in self.packages.iter().filter(|p| p.applies_to(point)) {
            let result = match &input_error {
                Some(e) => PackageResult::failed(e.clone(), false),
                None => self.evaluate_package(&mut engine, package, deadline),
            };
            self.merge(&mut decision, package, result);
        }
        decision.settle();
        decision.elapsed_us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        decision
    }

    fn evaluate_package(
        &self,
        engine: &mut regorus::Engine,
        package: &Package,
        deadline: Instant,
    ) -> PackageResult {
        let mut result = PackageResult::default();
        for (kind, path) in &package.rules {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return PackageResult::failed(
                    "time budget exhausted before evaluation".into(),
                    true,
                );
            }
            engine.set_execution_timer_config(timer(remaining, &self.limits));
            match engine.eval_rule(path.clone()) {
                Ok(value) => collect(&mut result, *kind, &package.name, &value),
                Err(err) => {
                    let limit = err.downcast_ref::<regorus::LimitError>().is_some();
                    let message = crate::policy::error::diagnostic_message(&err.to_string());
                    return PackageResult::failed(message, limit);
                }
            }
        }
        result
    }

    /// Applies the package's mode (and the failure policy) to its findings.
    fn merge(&self, decision: &mut Decision, package: &Package, result: PackageResult) {
        let mut report = PackageReport {
            package: package.name.clone(),
            mode: package.mode,
            denials: result.deny.len(),
            warnings: result.warn.len(),
            error: None,
            limit_exceeded: false,
        };
        if let Some(failure) = result.failure {
            let action = if failure.limit_exceeded {
                self.limits.on_limit_exceeded
            } else {
                self.limits.on_error
            };
            let deny = match action {
                FailureAction::FollowMode => package.mode == Mode::Enforce,
                FailureAction::Deny => true,
                FailureAction::Warn => false,
            };
            let finding = Violation {
                package: package.name.clone(),
                rule: if failure.limit_exceeded {
                    "policy-limit-exceeded".into()
                } else {
                    "policy-error".into()
                },
                message: format!(
                    "policy package {} could not be evaluated: {}",
                    package.name, failure.message
                ),
                path: None,
            };
            if deny {
                decision.deny.push(finding);
            } else {
                decision.warn.push(finding);
            }
            report.error = Some(failure.message);
            report.limit_exceeded = failure.limit_exceeded;
        } else {
            match package.mode {
                Mode::Enforce => decision.deny.extend(result.deny),
                _ => decision.warn.extend(result.deny),
            }
            decision.warn.extend(result.warn);
        }
        decision.packages.push(report);
    }
}

#[derive(Debug, Default)]
struct PackageResult {
    deny: Vec<Violation>,
    warn: Vec<Violation>,
    failure: Option<Failure>,
}

#[derive(Debug)]
struct Failure {
    message: String,
    limit_exceeded: bool,
}

impl PackageResult {
    fn failed(message: String, limit_exceeded: bool) -> Self {
        Self {
            failure: Some(Failure {
                message,
                limit_exceeded,
            }),
            ..Self::default()
        }
    }
}

/// Builds and prepares a regorus engine from a bundle (serving and `policy test`).
pub(crate) fn compile(
    bundle: &Bundle,
    limits: &LimitsConfig,
) -> Result<regorus::Engine, PolicyError> {
    let mut engine = regorus::Engine::new();
    let max_bytes = usize::try_from(limits.max_file_bytes).unwrap_or(usize::MAX);
    let mut length = regorus::PolicyLengthConfig::default();
    if let Some(n) = std::num::NonZeroUsize::new(max_bytes) {
        length.max_file_bytes = n;
    }
    engine.set_policy_length_config(length);
    // Policies that call builtins with wrong types should fail visibly, not
    // silently evaluate to undefined (which in a deny rule means "allow").
    engine.set_strict_builtin_errors(true);
    for file in &bundle.rego {
        let label = file.path.to_string_lossy().into_owned();
        engine
            .add_policy(label.clone(), file.text.clone())
            .map_err(|e| PolicyError::from_regorus(&label, &e))?;
    }
    for file in &bundle.data {
        let mut params = serde_json::Map::new();
        params.insert(PARAMS_KEY.to_string(), file.value.clone());
        engine
            .add_data(Value::from(serde_json::Value::Object(params)))
            .map_err(|e| PolicyError::Data {
                path: file.path.clone(),
                message: format!("cannot be merged with the other data files: {e}"),
            })?;
    }
    // regorus resolves functions and schedules rules lazily, on the first
    // evaluation; do it now so an unknown function is a load error with its
    // position, and so every clone starts prepared.
    engine.eval_query("true".to_string(), false).map_err(|e| {
        match PolicyError::from_regorus("", &e) {
            PolicyError::Compile { file, .. } if file.is_empty() => {
                PolicyError::Bundle(crate::policy::error::diagnostic_message(&e.to_string()))
            }
            other => other,
        }
    })?;
    Ok(engine)
}

/// Name of the optional rule by which a package limits itself to some decision
/// points. Regorus evaluates all of a module's rules once any is asked, so a pull
/// decision would otherwise pay for every push policy's helpers; skipping packages
/// that do not apply keeps a pull decision within its budget.
pub const POINTS_RULE: &str = "decision_points";

/// Reads `decision_points` of a package, which must be a constant set (or array)
/// of decision point names; it is evaluated once, at load time, without input.
fn declared_points(
    engine: &regorus::Engine,
    package: &Package,
) -> Result<Option<Vec<DecisionPoint>>, PolicyError> {
    let modules = engine
        .get_policy_package_components()
        .map_err(|e| PolicyError::Bundle(e.to_string()))?;
    let mut declared = false;
    for module in &modules {
        let mut expected: Vec<String> = NAMESPACE.split('.').map(str::to_string).collect();
        expected.extend(package.name.split('.').map(str::to_string));
        if module.components == expected
            && matches!(
                engine.has_declared_rule_rooted_at(&module.source_file, POINTS_RULE),
                Ok(true)
            )
        {
            declared = true;
        }
    }
    if !declared {
        return Ok(None);
    }
    let path = format!("data.{NAMESPACE}.{}.{POINTS_RULE}", package.name);
    let bad = |why: String| {
        PolicyError::Config(format!(
            "{path} must be a constant set of \"push\", \"pull\", \"delete\", \"tag\": {why}"
        ))
    };
    let mut engine = engine.clone();
    let value = engine
        .eval_rule(path.clone())
        .map_err(|e| bad(e.to_string()))?;
    let elements: Vec<Value> = match value {
        Value::Set(s) => s.iter().cloned().collect(),
        Value::Array(a) => a.iter().cloned().collect(),
        other => return Err(bad(json(&other))),
    };
    let mut points = Vec::new();
    for element in elements {
        let point: DecisionPoint = serde_json::to_value(&element)
            .and_then(serde_json::from_value)
            .map_err(|_| bad(json(&element)))?;
        points.push(point);
    }
    Ok(Some(points))
}

/// Finds the packages below [`NAMESPACE`] and the decision rules each declares.
fn discover_packages(
    engine: &regorus::Engine,
    config: &PolicyConfig,
) -> Result<Vec<Package>, PolicyError> {
    let modules = engine
        .get_policy_package_components()
        .map_err(|e| PolicyError::Bundle(e.to_string()))?;
    let prefix: Vec<String> = NAMESPACE.split('.').map(str::to_string).collect();
    let mut packages: Vec<Package> = Vec::new();
    for module in modules {
        let Some(rest) = module
            .components
            .strip_prefix(prefix.as_slice())
            .filter(|rest| !rest.is_empty())
        else {
            continue;
        };
        if let Some(bad) = rest.iter().find(|c| !is_identifier(c)) {
            return Err(PolicyError::Config(format!(
                "{}: package component {bad:?} below {NAMESPACE} is not an identifier",
                module.source_file
            )));
        }
        let name = rest.join(".");
        let index = match packages.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                packages.push(Package {
                    points: None,
                    mode: config.mode_of(&name),
                    name: name.clone(),
                    rules: Vec::new(),
                });
                packages.len() - 1
            }
        };
        let package = &mut packages[index];
        for kind in RULES {
            let declared = engine
                .has_declared_rule_rooted_at(&module.source_file, kind.name())
                .map_err(|e| PolicyError::Bundle(e.to_string()))?;
            if declared && !package.rules.iter().any(|(k, _)| *k == kind) {
                package
                    .rules
                    .push((kind, format!("data.{NAMESPACE}.{name}.{}", kind.name())));
            }
        }
    }
    for package in &mut packages {
        package
            .rules
            .sort_by_key(|(k, _)| RULES.iter().position(|r| r == k));
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(packages)
}

pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Turns the value of a `deny`, `warn` or `violations` rule into findings. Sets and
/// arrays are accepted; an element that is not a string or an object is shown as
/// JSON rather than dropped, so a sloppy policy still denies visibly.
fn collect(result: &mut PackageResult, kind: RuleKind, package: &str, value: &Value) {
    let elements: Vec<&Value> = match value {
        Value::Set(s) => s.iter().collect(),
        Value::Array(a) => a.iter().collect(),
        Value::Undefined | Value::Null => Vec::new(),
        Value::Bool(false) => Vec::new(),
        other => vec![other],
    };
    for element in elements {
        let finding = to_violation(package, element);
        match kind {
            RuleKind::Warn => result.warn.push(finding),
            RuleKind::Deny | RuleKind::Violations => result.deny.push(finding),
        }
    }
}

fn to_violation(package: &str, value: &Value) -> Violation {
    let mut finding = Violation {
        package: package.to_string(),
        rule: package.to_string(),
        message: String::new(),
        path: None,
    };
    match value {
        Value::String(s) => finding.message = s.to_string(),
        Value::Object(obj) => {
            let field = |k: &str| obj.get(&Value::from(k));
            if let Some(Value::String(rule)) = field("rule") {
                finding.rule = rule.to_string();
            }
            finding.message = match field("message").or_else(|| field("msg")) {
                Some(Value::String(m)) => m.to_string(),
                Some(other) => json(other),
                None => json(value),
            };
            finding.path = field("path").and_then(path_text);
        }
        other => finding.message = json(other),
    }
    finding
}

/// A path given as a string, or as an array of keys and indexes
/// (`["deploymentProfiles", 0, "id"]` → `deploymentProfiles[0].id`).
fn path_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.to_string()),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts.iter() {
                match part {
                    Value::Number(_) => out.push_str(&format!("[{}]", json(part))),
                    Value::String(s) => {
                        if !out.is_empty() {
                            out.push('.');
                        }
                        out.push_str(s);
                    }
                    other => out.push_str(&format!("[{}]", json(other))),
                }
            }
            (!out.is_empty()).then_some(out)
        }
        _ => None,
    }
}

fn json(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "<unprintable>".into())
}

/// Compile-time check that the engine can be shared between the proxy's threads.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<PolicyEngine>();
};

/// A time budget in the form regorus takes it.
pub(crate) fn timer(limit: Duration, limits: &LimitsConfig) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: limits.check_interval,
    }
}

//! The `policy:` section of the proxy configuration.
//!
//! Every struct denies unknown fields: a misspelt `mode` silently falling back to the
//! default would turn an enforced policy into nothing at all.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the decision of a policy package does to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `deny` refuses the request (`403 DENIED`).
    #[default]
    Enforce,
    /// `deny` is reported as a warning: forwarded, logged, counted. Lets a security
    /// team watch a new rule on real traffic before it bites.
    Audit,
    /// The package is not evaluated at all.
    Off,
}

impl Mode {
    /// The lowercase name used in config, logs and decisions.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Off => "off",
        }
    }
}

/// What a package that fails to evaluate (time budget exceeded, runtime error)
/// contributes to the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureAction {
    /// Follow the package's mode: a deny in `enforce` (fail closed), a warning in
    /// `audit`. The safe default: an attacker must not be able to craft an input
    /// that makes a policy time out and thereby pass.
    #[default]
    FollowMode,
    /// Always a deny, even for packages in `audit` mode.
    Deny,
    /// Always a warning (fail open), even for packages in `enforce` mode.
    Warn,
}

/// The `policy:` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directories searched recursively for `*.rego` and `data.{json,yaml,yml}`.
    /// A directory that does not exist is an error: a typo must not silently
    /// disable the policies (leave the `policy:` section out to run without any).
    pub directories: Vec<PathBuf>,
    /// Mode of every package not listed in `packages`.
    pub default_mode: Mode,
    /// Mode per package, keyed by the package name below the
    /// `margo.admission.` namespace (e.g. `allowed_registries`).
    pub packages: BTreeMap<String, Mode>,
    /// Per-request evaluation limits.
    pub limits: LimitsConfig,
    /// Hot reload of the policy directories.
    pub reload: ReloadConfig,
    /// Emit one decision log line per evaluated request.
    pub decision_log: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            directories: vec![PathBuf::from("policies")],
            default_mode: Mode::Enforce,
            packages: BTreeMap::new(),
            limits: LimitsConfig::default(),
            reload: ReloadConfig::default(),
            decision_log: true,
        }
    }
}

impl PolicyConfig {
    /// Mode of a package (by its name below `margo.admission.`).
    pub fn mode_of(&self, package: &str) -> Mode {
        self.packages
            .get(package)
            .copied()
            .unwrap_or(self.default_mode)
    }
}

/// Evaluation limits.
///
/// regorus 0.14's interpreter has no instruction counter (only its separate RVM
/// bytecode engine has `set_max_instructions`, and that engine is not what evaluates
/// the policies here). What it has is a cooperative wall-clock deadline that the
/// interpreter checks every `check_interval` units of work (loop iterations, rule
/// and expression evaluations). So the budget is a time budget for the whole
/// request (shared by all packages), and `check_interval` trades precision of the
/// deadline against clock reads. A single builtin call (e.g. a huge `numbers.range`)
/// is one unit of work and cannot be interrupted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Wall-clock budget for evaluating all packages of one request, in milliseconds.
    pub time_budget_ms: u64,
    /// Units of interpreter work between two reads of the clock.
    pub check_interval: NonZeroU32,
    /// What a package contributes when it exceeds the budget.
    pub on_limit_exceeded: FailureAction,
    /// What a package contributes when its evaluation fails otherwise (e.g. a
    /// conflict between complete rule values, a builtin error).
    pub on_error: FailureAction,
    /// Largest accepted `.rego` or data file, in bytes.
    pub max_file_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            time_budget_ms: 50,
            check_interval: NonZeroU32::MIN.saturating_add(63),
            on_limit_exceeded: FailureAction::FollowMode,
            on_error: FailureAction::FollowMode,
            max_file_bytes: 1024 * 1024,
        }
    }
}

impl LimitsConfig {
    /// The per-request budget as a duration.
    pub fn time_budget(&self) -> Duration {
        Duration::from_millis(self.time_budget_ms)
    }
}

/// Hot reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Poll the directories for changes (SIGHUP reloads work regardless).
    pub watch: bool,
    /// Poll interval in milliseconds.
    pub interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            interval_ms: 2000,
        }
    }
}

impl ReloadConfig {
    /// The poll interval, at least 100 ms so a zero in the config cannot spin.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(100))
    }
}

//! The merged result of all policy packages for one request.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::config::Mode;
use crate::policy::input::DecisionPoint;

/// The overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing to report.
    Allow,
    /// Forward the request, log and count the warnings.
    Warn,
    /// Refuse the request with `403 DENIED`.
    Deny,
}

impl Outcome {
    /// The lowercase name used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
        }
    }
}

/// One finding of a package: a `deny` or `warn` message or a `violations` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The package name below `margo.admission.` that produced it.
    pub package: String,
    /// Rule id: the `rule` of a `violations` entry, else the package name.
    pub rule: String,
    pub message: String,
    /// Field path in the input the finding is about, when the policy names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)?;
        if let Some(path) = &self.path {
            write!(f, " (at {path})")?;
        }
        Ok(())
    }
}

/// How one package was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageReport {
    /// The package name below `margo.admission.`.
    pub package: String,
    pub mode: Mode,
    /// Denials the package produced (before its mode was applied).
    pub denials: usize,
    /// Warnings the package produced.
    pub warnings: usize,
    /// Why the package could not be evaluated, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The package ran out of the request's time budget.
    #[serde(default)]
    pub limit_exceeded: bool,
}

/// The merged decision for one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub point: DecisionPoint,
    pub outcome: Outcome,
    /// Enforced denials, in package order.
    pub deny: Vec<Violation>,
    /// Warnings, including the denials of `audit` packages and failures that the
    /// configuration turns into warnings.
    pub warn: Vec<Violation>,
    /// Every package that was evaluated (packages in mode `off` are not listed).
    pub packages: Vec<PackageReport>,
    /// Hash of the loaded policy and data files.
    pub bundle_revision: String,
    /// Evaluation time in microseconds.
    pub elapsed_us: u64,
}

impl Decision {
    /// An allowing decision, for a proxy running without policies.
    pub fn allow(point: DecisionPoint, bundle_revision: impl Into<String>) -> Self {
        Self {
            point,
            outcome: Outcome::Allow,
            deny: Vec::new(),
            warn: Vec::new(),
            packages: Vec::new(),
            bundle_revision: bundle_revision.into(),
            elapsed_us: 0,
        }
    }

    /// Whether the request must be refused.
    pub fn is_denied(&self) -> bool {
        self.outcome == Outcome::Deny
    }

    /// Every denial as one line (`rule: message (at path)`), for the OCI error body.
    pub fn deny_messages(&self) -> Vec<String> {
        self.deny.iter().map(ToString::to_string).collect()
    }

    /// Every warning as one line.
    pub fn warn_messages(&self) -> Vec<String> {
        self.warn.iter().map(ToString::to_string).collect()
    }

    /// The rule of the first denial, for a `HEAD` answer, which has no body
    /// to carry the messages.
    pub fn denied_rule(&self) -> Option<&str> {
        self.deny.first().map(|v| v.rule.as_str())
    }

    /// Recomputes `outcome` from the findings.
    pub(crate) fn settle(&mut self) {
        self.outcome = if !self.deny.is_empty() {
            Outcome::Deny
        } else if !self.warn.is_empty() {
            Outcome::Warn
        } else {
            Outcome::Allow
        };
    }
}

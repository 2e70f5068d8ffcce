//! Validation of an Application Description: every violation, not just the first.
//!
//! Order of work: parse to a positioned tree ([`crate::margo::yaml`]), check the tree's
//! structure against the schema's classes ([`shape`]), check schema entries
//! ([`schema_rules`]), cross references ([`xref`]) and default values ([`values`]), and
//! only when nothing was found build the typed model. Checking the tree rather than
//! deserialising straight into the model is what lets one pass report everything.
//!
//! Rule ids used here: `margo.yaml`, `margo.required`, `margo.type`, `margo.pattern`,
//! `margo.equals`, `margo.enum`, `margo.unknown-field`, `margo.extension-value`,
//! `margo.unique`, `margo.xref.target-component`, `margo.xref.setting-parameter`,
//! `margo.xref.setting-schema`, `margo.default-value`, `margo.schema-rule`,
//! `margo.regex` (see [`crate::margo::report::RuleId`]).
//!
//! Interpretations where the schema is silent or ambiguous (documented so policy authors
//! can rely on them):
//! - a `required` multivalued slot must have at least one entry;
//! - an explicit `null` counts as absent (so it fails `required`);
//! - scalars that YAML types as numbers or booleans are not strings: `version: 1.0`
//!   is a `margo.type` violation (quote it);
//! - component names must match `^[a-z0-9-]+$` (the slot's description, as a pattern)
//!   and be unique within their profile; target components must exist in some profile;
//! - `parameters.<name>.value` may also be a sequence of scalars (for `array[...]`);
//! - a schema entry with `options` or `multiselect` is a SelectValidationSchema,
//!   otherwise its (element) dataType picks the subclass; slots of other subclasses are
//!   `margo.schema-rule` violations;
//! - `regexMatch` and LinkML patterns use search semantics (unanchored);
//! - `allowEmpty: false` refuses an empty default (the slot's name, not its inverted
//!   description text).

mod schema_rules;
mod shape;
mod values;
mod xref;

pub use schema_rules::{compile_untrusted_regex, RegexError, RegexLimits};

use crate::margo::model::ApplicationDescription;
use crate::margo::node::Node;
use crate::margo::report::{FieldPath, Report, RuleId, Violation, DEFAULT_MAX_VIOLATIONS};
use crate::margo::resources::ResourceRefs;
use crate::margo::yaml::{self, YamlLimits};

/// All limits of description validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptionLimits {
    pub yaml: YamlLimits,
    pub regex: RegexLimits,
    /// Violations kept in the report; more are only counted.
    pub max_violations: usize,
}

impl Default for DescriptionLimits {
    fn default() -> Self {
        Self {
            yaml: YamlLimits::default(),
            regex: RegexLimits::default(),
            max_violations: DEFAULT_MAX_VIOLATIONS,
        }
    }
}

/// Result of validating `margo.yaml` bytes.
#[derive(Debug, Clone)]
pub struct DescriptionCheck {
    /// Every violation found; empty means valid.
    pub report: Report,
    /// The parsed tree, when the bytes were YAML (even if invalid Margo): the manifest
    /// cross-check and policies can still look at it.
    pub document: Option<Node>,
    /// The typed model, only when the report is empty.
    pub model: Option<ApplicationDescription>,
}

impl DescriptionCheck {
    pub fn is_valid(&self) -> bool {
        self.report.is_empty()
    }

    /// The description as JSON (the shape policies receive), when it parsed.
    pub fn document_json(&self) -> Option<serde_json::Value> {
        self.document.as_ref().map(Node::to_json)
    }

    /// `metadata.version`, when it is a string (even if the description is otherwise
    /// invalid): the tag rule needs it.
    pub fn version(&self) -> Option<&str> {
        self.document
            .as_ref()?
            .get_path(&["metadata", "version"])?
            .as_str()
    }

    /// The catalog resources named by the description.
    pub fn resources(&self) -> ResourceRefs {
        match (&self.model, &self.document) {
            (Some(m), _) => m.resources(),
            (None, Some(doc)) => ResourceRefs::from_node(doc),
            (None, None) => ResourceRefs::default(),
        }
    }
}

/// Parses and validates untrusted `margo.yaml` bytes. Never panics.
pub fn validate_description(bytes: &[u8], limits: &DescriptionLimits) -> DescriptionCheck {
    let mut report = Report::with_cap(limits.max_violations);
    let root = match yaml::parse(bytes, &limits.yaml) {
        Ok(root) => root,
        Err(e) => {
            report.push(e.to_violation());
            return DescriptionCheck {
                report,
                document: None,
                model: None,
            };
        }
    };
    validate_tree(&root, limits, &mut report);
    let model = if report.is_empty() {
        to_model(&root, &mut report)
    } else {
        None
    };
    DescriptionCheck {
        report,
        document: Some(root),
        model,
    }
}

/// Validates an already parsed tree, appending to `report`.
pub fn validate_tree(root: &Node, limits: &DescriptionLimits, report: &mut Report) {
    shape::check_class(
        root,
        &shape::APPLICATION_DESCRIPTION,
        &FieldPath::root(),
        report,
    );
    if root.as_map().is_none() {
        return;
    }
    let schemas = schema_rules::check(root, &limits.regex, report);
    xref::check(root, report);
    values::check(root, &schemas, report);
}

fn to_model(root: &Node, report: &mut Report) -> Option<ApplicationDescription> {
    match serde_json::from_value(root.to_json()) {
        Ok(m) => Some(m),
        Err(e) => {
            // The structural pass should make this unreachable; if it is not, refuse
            // rather than admit a document the rest of the system cannot read.
            tracing::error!(error = %e, "validated description did not convert to the model");
            report.push(Violation::new(
                RuleId::Type,
                FieldPath::root(),
                format!("a document the typed model accepts ({e})"),
            ));
            None
        }
    }
}

#[cfg(test)]
mod linkml_conformance;
#[cfg(test)]
mod tests;

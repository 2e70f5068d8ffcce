//! `configuration.schema` entries: which subclass each is, whether its rules fit that
//! subclass and each other, and a compiled form used to check default values.

use regex::{Regex, RegexBuilder};

use crate::margo::model::{DataType, SchemaClass};
use crate::margo::node::{Node, NodeValue};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};

/// Caps for compiling `regexMatch`, which comes from untrusted input. The regex crate
/// matches in linear time, so only compilation (size of the program) needs bounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexLimits {
    /// Longest accepted pattern, in bytes.
    pub max_pattern_len: usize,
    /// `RegexBuilder::size_limit`: compiled program size.
    pub size_limit: usize,
    /// `RegexBuilder::dfa_size_limit`: lazy DFA cache.
    pub dfa_size_limit: usize,
    /// `RegexBuilder::nest_limit`: syntax nesting (stack use while parsing the pattern).
    pub nest_limit: u32,
}

impl Default for RegexLimits {
    fn default() -> Self {
        Self {
            max_pattern_len: 1024,
            size_limit: 256 * 1024,
            dfa_size_limit: 1024 * 1024,
            nest_limit: 32,
        }
    }
}

/// Why a `regexMatch` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegexError {
    #[error("pattern is {len} bytes, over the limit of {limit}")]
    TooLong { len: usize, limit: usize },
    #[error("{0}")]
    Invalid(String),
}

/// Compiles an untrusted pattern within limits. Search semantics (unanchored), like
/// LinkML/JSON Schema patterns: authors anchor with `^…$` when they mean a full match.
pub fn compile_untrusted_regex(pattern: &str, limits: &RegexLimits) -> Result<Regex, RegexError> {
    if pattern.len() > limits.max_pattern_len {
        return Err(RegexError::TooLong {
            len: pattern.len(),
            limit: limits.max_pattern_len,
        });
    }
    RegexBuilder::new(pattern)
        .size_limit(limits.size_limit)
        .dfa_size_limit(limits.dfa_size_limit)
        .nest_limit(limits.nest_limit)
        .build()
        .map_err(|e| RegexError::Invalid(e.to_string().lines().last().unwrap_or("").to_owned()))
}

/// A schema entry reduced to what value checks need. Built only for entries with a
/// valid `name` and `dataType`; missing or malformed rules are simply absent (they were
/// reported).
#[derive(Debug)]
pub(crate) struct CompiledSchema<'a> {
    pub name: &'a str,
    pub path: FieldPath,
    pub data_type: DataType,
    pub class: SchemaClass,
    pub allow_empty: Option<bool>,
    pub min_length: Option<i64>,
    pub max_length: Option<i64>,
    pub regex: Option<Regex>,
    pub min_value: Option<f64>,
    pub max_value: Option<f64>,
    pub min_precision: Option<i64>,
    pub max_precision: Option<i64>,
    pub multiselect: bool,
    pub options: Vec<&'a Node>,
}

fn int_of(n: Option<&Node>) -> Option<i64> {
    match n?.value {
        NodeValue::Int(i) => i64::try_from(i).ok(),
        _ => None,
    }
}

fn num_of(n: Option<&Node>) -> Option<f64> {
    match &n?.value {
        NodeValue::Int(i) => Some(*i as f64),
        NodeValue::Float { value, .. } if value.is_finite() => Some(*value),
        _ => None,
    }
}

fn rule(path: &FieldPath, node: Option<&Node>, expected: String) -> Violation {
    let v = Violation::new(RuleId::SchemaRule, path.clone(), expected);
    match node {
        Some(n) => v.with_value(n.to_value_hint()).with_location(n.location),
        None => v,
    }
}

/// Whether a scalar node is a value of the (scalar) data type.
pub(crate) fn fits_scalar_type(node: &Node, dt: DataType) -> bool {
    match (dt.element(), &node.value) {
        (DataType::String, NodeValue::Str(_)) => true,
        (DataType::Integer, NodeValue::Int(i)) => i64::try_from(*i).is_ok(),
        (DataType::Double, NodeValue::Int(_)) => true,
        (DataType::Double, NodeValue::Float { value, .. }) => value.is_finite(),
        (DataType::Boolean, NodeValue::Bool(_)) => true,
        _ => false,
    }
}

const RULE_SLOTS: [&str; 10] = [
    "allowEmpty",
    "minLength",
    "maxLength",
    "regexMatch",
    "minValue",
    "maxValue",
    "minPrecision",
    "maxPrecision",
    "multiselect",
    "options",
];

/// Checks every schema entry and returns the compiled ones.
pub(crate) fn check<'a>(
    root: &'a Node,
    limits: &RegexLimits,
    out: &mut Report,
) -> Vec<CompiledSchema<'a>> {
    let base = FieldPath::root().key("configuration").key("schema");
    let Some(entries) = root
        .get_path(&["configuration", "schema"])
        .and_then(Node::as_seq)
    else {
        return Vec::new();
    };
    let mut compiled = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let path = base.index(i);
        let (Some(name), Some(dt)) = (
            entry.get("name").and_then(Node::as_str),
            entry
                .get("dataType")
                .and_then(Node::as_str)
                .and_then(DataType::parse),
        ) else {
            continue;
        };
        if entry.as_map().is_none() {
            continue;
        }
        let has = |slot: &str| entry.get(slot).is_some_and(|n| !n.is_null());
        let class = SchemaClass::of(dt, has("options") || has("multiselect"));

        for slot in RULE_SLOTS {
            if has(slot) && !class.slots().contains(&slot) {
                out.push(rule(
                    &path.key(slot),
                    entry.get(slot),
                    format!(
                        "no `{slot}`: it is not a slot of {} (dataType {})",
                        class.name(),
                        dt.as_str()
                    ),
                ));
            }
        }

        let mut c = CompiledSchema {
            name,
            path: path.clone(),
            data_type: dt,
            class,
            allow_empty: entry.get("allowEmpty").and_then(|n| match n.value {
                NodeValue::Bool(b) => Some(b),
                _ => None,
            }),
            min_length: None,
            max_length: None,
            regex: None,
            min_value: None,
            max_value: None,
            min_precision: None,
            max_precision: None,
            multiselect: matches!(
                entry.get("multiselect").map(|n| &n.value),
                Some(NodeValue::Bool(true))
            ),
            options: Vec::new(),
        };

        match class {
            SchemaClass::Text => {
                c.min_length = non_negative(entry, &path, "minLength", out);
                c.max_length = non_negative(entry, &path, "maxLength", out);
                ordered(
                    &path,
                    "minLength",
                    c.min_length.map(|v| v as f64),
                    "maxLength",
                    c.max_length.map(|v| v as f64),
                    entry,
                    out,
                );
                if let Some(p) = entry.get("regexMatch") {
                    if let Some(s) = p.as_str() {
                        match compile_untrusted_regex(s, limits) {
                            Ok(r) => c.regex = Some(r),
                            Err(e) => out.push(
                                Violation::new(
                                    RuleId::Regex,
                                    path.key("regexMatch"),
                                    format!("a regular expression within limits ({e})"),
                                )
                                .with_value(serde_json::Value::String(s.to_owned()))
                                .with_location(p.location),
                            ),
                        }
                    }
                }
            }
            SchemaClass::Integer => {
                for slot in ["minValue", "maxValue"] {
                    if let Some(n) = entry.get(slot) {
                        if matches!(n.value, NodeValue::Float { .. }) {
                            out.push(rule(
                                &path.key(slot),
                                Some(n),
                                format!("an integer `{slot}` for dataType {}", dt.as_str()),
                            ));
                        }
                    }
                }
                c.min_value = int_of(entry.get("minValue")).map(|v| v as f64);
                c.max_value = int_of(entry.get("maxValue")).map(|v| v as f64);
                ordered(
                    &path,
                    "minValue",
                    c.min_value,
                    "maxValue",
                    c.max_value,
                    entry,
                    out,
                );
            }
            SchemaClass::Double => {
                c.min_value = num_of(entry.get("minValue"));
                c.max_value = num_of(entry.get("maxValue"));
                ordered(
                    &path,
                    "minValue",
                    c.min_value,
                    "maxValue",
                    c.max_value,
                    entry,
                    out,
                );
                c.min_precision = non_negative(entry, &path, "minPrecision", out);
                c.max_precision = non_negative(entry, &path, "maxPrecision", out);
                ordered(
                    &path,
                    "minPrecision",
                    c.min_precision.map(|v| v as f64),
                    "maxPrecision",
                    c.max_precision.map(|v| v as f64),
                    entry,
                    out,
                );
            }
            SchemaClass::Select => match entry.get("options") {
                None => out.push(
                    Violation::new(
                        RuleId::Required,
                        path.key("options"),
                        "`options` (required in SelectValidationSchema)",
                    )
                    .with_location(entry.location),
                ),
                Some(opts) => {
                    let items = opts.as_seq().unwrap_or(&[]);
                    if opts.as_seq().is_some() && items.is_empty() {
                        out.push(
                            Violation::new(
                                RuleId::Required,
                                path.key("options"),
                                "at least one entry in `options`",
                            )
                            .with_location(opts.location),
                        );
                    }
                    for (k, o) in items.iter().enumerate() {
                        if !fits_scalar_type(o, dt) {
                            out.push(rule(
                                &path.key("options").index(k),
                                Some(o),
                                format!("an option of dataType {}", dt.element().as_str()),
                            ));
                        }
                    }
                    c.options = items.iter().collect();
                }
            },
            SchemaClass::Boolean => {}
        }
        compiled.push(c);
    }
    compiled
}

fn non_negative(entry: &Node, path: &FieldPath, slot: &str, out: &mut Report) -> Option<i64> {
    let v = int_of(entry.get(slot))?;
    if v < 0 {
        out.push(rule(
            &path.key(slot),
            entry.get(slot),
            format!("a non-negative `{slot}`"),
        ));
        return None;
    }
    Some(v)
}

fn ordered(
    path: &FieldPath,
    lo_name: &str,
    lo: Option<f64>,
    hi_name: &str,
    hi: Option<f64>,
    entry: &Node,
    out: &mut Report,
) {
    if let (Some(lo), Some(hi)) = (lo, hi) {
        if lo > hi {
            out.push(rule(
                &path.key(lo_name),
                entry.get(lo_name),
                format!("`{lo_name}` at most `{hi_name}` ({hi})"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_limits_table() {
        let l = RegexLimits::default();
        assert!(compile_untrusted_regex("^[a-z]+$", &l).is_ok());
        assert!(matches!(
            compile_untrusted_regex(&"a".repeat(2000), &l),
            Err(RegexError::TooLong { .. })
        ));
        assert!(matches!(
            compile_untrusted_regex("(", &l),
            Err(RegexError::Invalid(_))
        ));
        // Small pattern, huge program: counted repetitions blow past size_limit.
        assert!(matches!(
            compile_untrusted_regex("(\\w{100}){100}", &l),
            Err(RegexError::Invalid(_))
        ));
        assert!(matches!(
            compile_untrusted_regex(&format!("{}a{}", "(".repeat(100), ")".repeat(100)), &l),
            Err(RegexError::Invalid(_))
        ));
    }
}

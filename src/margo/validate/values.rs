//! Default parameter values against the schema their settings reference.
//!
//! A default that its own schema rejects would be offered to every user as a value the
//! UI then refuses, so it is a packaging error worth catching at push time.

use crate::margo::model::SchemaClass;
use crate::margo::node::{Node, NodeValue};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};
use crate::margo::validate::schema_rules::{fits_scalar_type, CompiledSchema};

/// Decimal places as written: `1.50` has 2, `1e-3` has 3, `12` has 0.
pub(crate) fn decimals(node: &Node) -> Option<i64> {
    match &node.value {
        NodeValue::Int(_) => Some(0),
        NodeValue::Float { value, raw } => {
            let text = raw.clone().unwrap_or_else(|| value.to_string());
            let text = text.trim_start_matches(['+', '-']);
            let (mantissa, exp) = match text.split_once(['e', 'E']) {
                Some((m, e)) => (m, e.parse::<i64>().ok()?),
                None => (text, 0),
            };
            let frac = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
            let frac = i64::try_from(frac).ok()?;
            Some(frac.saturating_sub(exp).max(0))
        }
        _ => None,
    }
}

fn num(node: &Node) -> Option<f64> {
    match &node.value {
        NodeValue::Int(i) => Some(*i as f64),
        NodeValue::Float { value, .. } => Some(*value),
        _ => None,
    }
}

/// Scalar equality across int/float (`1` equals `1.0`), exact for strings and booleans.
fn same_scalar(a: &Node, b: &Node) -> bool {
    match (&a.value, &b.value) {
        (NodeValue::Str(x), NodeValue::Str(y)) => x == y,
        (NodeValue::Bool(x), NodeValue::Bool(y)) => x == y,
        _ => matches!((num(a), num(b)), (Some(x), Some(y)) if x == y),
    }
}

/// Problems of one element against the schema, as "expected" texts.
fn element_problems(v: &Node, s: &CompiledSchema<'_>) -> Vec<String> {
    let mut p = Vec::new();
    if !fits_scalar_type(v, s.data_type) {
        p.push(format!(
            "a value of dataType {}",
            s.data_type.element().as_str()
        ));
        return p;
    }
    match s.class {
        SchemaClass::Text => {
            if let Some(text) = v.as_str() {
                let len = i64::try_from(text.chars().count()).unwrap_or(i64::MAX);
                if let Some(min) = s.min_length.filter(|m| len < *m) {
                    p.push(format!("at least {min} characters (minLength)"));
                }
                if let Some(max) = s.max_length.filter(|m| len > *m) {
                    p.push(format!("at most {max} characters (maxLength)"));
                }
                if let Some(re) = s.regex.as_ref().filter(|r| !r.is_match(text)) {
                    p.push(format!("a match of regexMatch {}", re.as_str()));
                }
            }
        }
        SchemaClass::Integer | SchemaClass::Double => {
            if let Some(x) = num(v) {
                if let Some(min) = s.min_value.filter(|m| x < *m) {
                    p.push(format!("a value of at least {min} (minValue)"));
                }
                if let Some(max) = s.max_value.filter(|m| x > *m) {
                    p.push(format!("a value of at most {max} (maxValue)"));
                }
            }
            if let Some(d) = decimals(v) {
                if let Some(min) = s.min_precision.filter(|m| d < *m) {
                    p.push(format!("at least {min} decimal places (minPrecision)"));
                }
                if let Some(max) = s.max_precision.filter(|m| d > *m) {
                    p.push(format!("at most {max} decimal places (maxPrecision)"));
                }
            }
        }
        SchemaClass::Select => {
            if !s.options.iter().any(|o| same_scalar(o, v)) {
                let opts: Vec<String> = s.options.iter().map(|o| o.to_json().to_string()).collect();
                p.push(format!("one of the options {}", opts.join(", ")));
            }
        }
        SchemaClass::Boolean => {}
    }
    p
}

fn is_empty_value(v: &Node) -> bool {
    match &v.value {
        NodeValue::Str(s) => s.is_empty(),
        NodeValue::Seq(items) => items.is_empty(),
        _ => false,
    }
}

/// Problems of a whole default value against a schema.
pub(crate) fn value_problems(v: &Node, s: &CompiledSchema<'_>) -> Vec<String> {
    let mut p = Vec::new();
    // The slot's name says "allow empty"; its description text says the opposite. We
    // follow the name, and only when it is explicitly false.
    if s.allow_empty == Some(false) && is_empty_value(v) {
        p.push("a non-empty value (allowEmpty: false)".to_owned());
        return p;
    }
    let wants_array = s.data_type.is_array() || (s.class == SchemaClass::Select && s.multiselect);
    match (&v.value, wants_array) {
        (NodeValue::Seq(items), true) => {
            for item in items {
                p.extend(element_problems(item, s));
            }
        }
        (NodeValue::Seq(_), false) => p.push(format!(
            "a single value of dataType {} (not a sequence)",
            s.data_type.as_str()
        )),
        (_, true) => p.push(format!("a sequence (dataType {})", s.data_type.as_str())),
        (_, false) => p.extend(element_problems(v, s)),
    }
    p.dedup();
    p
}

/// For each setting, checks the referenced parameter's default `value` against the
/// referenced schema.
pub(crate) fn check(root: &Node, schemas: &[CompiledSchema<'_>], out: &mut Report) {
    let Some(params) = root.get("parameters").and_then(Node::as_map) else {
        return;
    };
    let Some(sections) = root
        .get_path(&["configuration", "sections"])
        .and_then(Node::as_seq)
    else {
        return;
    };
    let sections_path = FieldPath::root().key("configuration").key("sections");
    for (i, section) in sections.iter().enumerate() {
        let settings = section
            .get("settings")
            .and_then(Node::as_seq)
            .unwrap_or(&[]);
        for (j, setting) in settings.iter().enumerate() {
            let (Some(pname), Some(sname)) = (
                setting.get("parameter").and_then(Node::as_str),
                setting.get("schema").and_then(Node::as_str),
            ) else {
                continue;
            };
            let Some(param) = params.iter().find(|e| e.key == pname) else {
                continue;
            };
            let Some(value) = param.value.get("value").filter(|v| !v.is_null()) else {
                continue;
            };
            let Some(schema) = schemas.iter().find(|s| s.name == sname) else {
                continue;
            };
            let via = sections_path.index(i).key("settings").index(j);
            for problem in value_problems(value, schema) {
                out.push(
                    Violation::new(
                        RuleId::DefaultValue,
                        FieldPath::root().key("parameters").key(pname).key("value"),
                        format!(
                            "{problem} per schema {sname:?} ({}, via {via})",
                            schema.path
                        ),
                    )
                    .with_value(value.to_value_hint())
                    .with_location(value.location),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_table() {
        let f = |raw: &str| {
            Node::new(NodeValue::Float {
                value: raw.parse().unwrap_or(0.0),
                raw: Some(raw.to_owned()),
            })
        };
        let cases = [
            (f("1.50"), Some(2)),
            (f("-0.125"), Some(3)),
            (f("1e-3"), Some(3)),
            (f("1.5e2"), Some(0)),
            (f("12.0"), Some(1)),
            (Node::new(NodeValue::Int(3)), Some(0)),
            (Node::new(NodeValue::Str("x".into())), None),
        ];
        for (n, want) in cases {
            assert_eq!(decimals(&n), want, "{n:?}");
        }
    }
}

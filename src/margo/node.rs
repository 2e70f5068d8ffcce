//! A generic YAML tree that remembers where every node came from.
//!
//! The validator walks this tree rather than a typed model so that it can keep going
//! after the first problem (serde stops at the first) and so that every violation can
//! point at a line and column.

use crate::margo::report::Location;

/// One YAML node with its source position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub location: Option<Location>,
}

/// A mapping entry. Keys are kept as text: Margo keys are strings, and a non-string
/// scalar key (`1: x`) is simply a key that no class defines.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_location: Option<Location>,
    pub value: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    /// i128 holds every integer YAML can give through serde (i64 and u64 ranges).
    Int(i128),
    /// `raw` is the scalar's source text when known: the number of decimals written
    /// (`1.50` has two) matters for precision rules and is lost in an `f64`.
    Float {
        value: f64,
        raw: Option<String>,
    },
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Node {
    pub fn new(value: NodeValue) -> Self {
        Self {
            value,
            location: None,
        }
    }

    /// Looks a key up in a mapping node; `None` for non-mappings.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// Follows a chain of keys.
    pub fn get_path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |n, k| n.get(k))
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            NodeValue::Seq(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[Entry]> {
        match &self.value {
            NodeValue::Map(v) => Some(v),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, NodeValue::Null)
    }

    /// The YAML type name used in `margo.type` messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "boolean",
            NodeValue::Int(_) => "integer",
            NodeValue::Float { .. } => "double",
            NodeValue::Str(_) => "string",
            NodeValue::Seq(_) => "sequence",
            NodeValue::Map(_) => "mapping",
        }
    }

    /// JSON form of the subtree: the shape policies (Rego) and the typed model consume.
    ///
    /// Integers beyond the i64/u64 range and non-finite floats cannot be JSON numbers;
    /// they become strings so that no information silently turns into `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            NodeValue::Null => J::Null,
            NodeValue::Bool(b) => J::Bool(*b),
            NodeValue::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    J::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    J::from(v)
                } else {
                    J::String(i.to_string())
                }
            }
            NodeValue::Float { value, .. } => serde_json::Number::from_f64(*value)
                .map(J::Number)
                .unwrap_or_else(|| J::String(value.to_string())),
            NodeValue::Str(s) => J::String(s.clone()),
            NodeValue::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|e| (e.key.clone(), e.value.to_json()))
                    .collect(),
            ),
        }
    }

    /// A small JSON rendering for violation values: scalars as is, collections
    /// summarised, because the whole subtree can be large.
    pub fn to_value_hint(&self) -> serde_json::Value {
        match &self.value {
            NodeValue::Seq(items) => {
                serde_json::Value::String(format!("<sequence of {}>", items.len()))
            }
            NodeValue::Map(entries) => {
                serde_json::Value::String(format!("<mapping of {}>", entries.len()))
            }
            _ => self.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: Vec<(&str, Node)>) -> Node {
        Node::new(NodeValue::Map(
            entries
                .into_iter()
                .map(|(k, v)| Entry {
                    key: k.to_owned(),
                    key_location: None,
                    value: v,
                })
                .collect(),
        ))
    }

    #[test]
    fn get_path_follows_mappings() {
        let n = map(vec![(
            "a",
            map(vec![("b", Node::new(NodeValue::Str("x".into())))]),
        )]);
        assert_eq!(n.get_path(&["a", "b"]).and_then(Node::as_str), Some("x"));
        assert!(n.get_path(&["a", "c"]).is_none());
    }

    #[test]
    fn to_json_keeps_big_ints_and_non_finite_as_strings() {
        let cases = [
            (NodeValue::Int(5), serde_json::json!(5)),
            (
                NodeValue::Int(u64::MAX as i128),
                serde_json::json!(u64::MAX),
            ),
            (
                NodeValue::Int(i128::from(u64::MAX) + 1),
                serde_json::json!("18446744073709551616"),
            ),
            (
                NodeValue::Float {
                    value: f64::INFINITY,
                    raw: None,
                },
                serde_json::json!("inf"),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(Node::new(v).to_json(), want);
        }
    }
}

//! Line and column of any value in the config text, by its path
//! (`upstreams[0].credentials.password_env`), for checks whose typed field carries no span.
//!
//! The text is read a second time into an untyped tree of spanned nodes; that costs
//! microseconds on a hand-written file and keeps `Spanned` out of every config type.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// Paths to `(line, column)` of their values.
#[derive(Debug, Default)]
pub struct Locator {
    at: HashMap<String, (usize, usize)>,
}

impl Locator {
    /// Never fails: text that does not parse yields an empty locator (the parse error
    /// itself is reported elsewhere).
    pub fn new(text: &str) -> Self {
        let mut at = HashMap::new();
        if let Ok(root) = serde_saphyr::from_str::<Node>(text) {
            flatten(&root, String::new(), &mut at);
        }
        Locator { at }
    }

    /// The value at `path`, else the nearest ancestor that is in the text.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(at) = self.at.get(p) {
                return Some(*at);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn flatten(node: &Node, path: String, at: &mut HashMap<String, (usize, usize)>) {
    let mut child = |p: String, n: &Spanned<Node>| {
        at.insert(
            p.clone(),
            (n.referenced.line() as usize, n.referenced.column() as usize),
        );
        flatten(&n.value, p, at);
    };
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                child(p, v);
            }
        }
        Node::Seq(items) => {
            for (i, v) in items.iter().enumerate() {
                child(format!("{path}[{i}]"), v);
            }
        }
        Node::Scalar => {}
    }
}

enum Node {
    Map(Vec<(String, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

macro_rules! scalar {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $t) -> Result<Node, E> { Ok(Node::Scalar) })*
    };
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }
    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Spanned<Node>>()? {
            items.push(v);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(k) = map.next_key::<Key>()? {
            entries.push((k.0, map.next_value::<Spanned<Node>>()?));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key of any scalar type, as text.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_falls_back_to_ancestors() {
        let text = "a:\n  b: [x, y]\n  c:\n    - d: 1\n      e: true\nf: {g: 2}\n";
        let l = Locator::new(text);
        assert_eq!(l.find("a.b[1]"), Some((2, 10)));
        assert_eq!(l.find("a.c[0].e"), Some((5, 10)));
        assert_eq!(l.find("f.g"), Some((6, 8)));
        assert_eq!(l.find("a.c[0].zzz"), l.find("a.c[0]"));
        assert_eq!(l.find("nope"), None);
        assert!(Locator::new(": : :").find("a").is_none());
    }
}

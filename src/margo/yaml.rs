//! Parsing untrusted `margo.yaml` bytes into a [`Node`] tree, within budgets.
//!
//! The input comes from whoever can push to the registry, so every resource the parser
//! can be made to spend is capped: input size (checked before parsing), nesting depth,
//! node count, anchors/aliases and alias replay (against "billion laughs"). serde-saphyr
//! enforces those budgets while it scans, before any tree is built.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::options::{DuplicateKeyPolicy, MergeKeyPolicy, NonFiniteFloatPolicy};
use serde_saphyr::{Budget, Options, Spanned};

use crate::margo::node::{Entry, Node, NodeValue};
use crate::margo::report::{FieldPath, Location, RuleId, Violation};

/// Resource caps for one YAML document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlLimits {
    /// Largest accepted input, checked before parsing.
    pub max_bytes: usize,
    /// Deepest nesting of sequences and mappings. Parsing recurses per level (tens of
    /// KiB of stack per level in unoptimised builds), so keep this well below what a
    /// 2 MiB thread stack (tokio workers, test threads) can hold; Margo needs about 8.
    pub max_depth: usize,
    /// Most nodes (scalars, sequences, mappings), counting alias replays.
    pub max_nodes: usize,
    /// Most alias (`*name`) uses.
    pub max_aliases: usize,
    /// Most anchors (`&name`).
    pub max_anchors: usize,
    /// Most events replayed through aliases, in total: the alias-bomb cap. Rejection
    /// costs about as much as replaying this many events, so it is kept small: a real
    /// description replays a few hundred at most.
    pub max_alias_replay_events: usize,
    /// Most times one anchor may be expanded.
    pub max_expansions_per_anchor: usize,
}

/// 1 MiB is far above any real description (a rich one is a few KiB) and small enough
/// that parsing it stays in the millisecond range.
pub const DEFAULT_MAX_YAML_BYTES: usize = 1024 * 1024;

impl Default for YamlLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_YAML_BYTES,
            max_depth: 32,
            max_nodes: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_alias_replay_events: 10_000,
            max_expansions_per_anchor: 100,
        }
    }
}

/// Why bytes could not be turned into a YAML tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("input is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error(
        "invalid YAML{}: {message}{}{}",
        .location.map(|l| format!(" at line {}, column {}", l.line, l.column)).unwrap_or_default(),
        .opened.map(|l| format!("; it began at line {}, column {}", l.line, l.column)).unwrap_or_default(),
        .hint.map(|h| format!(" (hint: {h})")).unwrap_or_default()
    )]
    Syntax {
        message: String,
        /// Where parsing failed.
        location: Option<Location>,
        /// Where the construct that failed was opened, when that is elsewhere.
        opened: Option<Location>,
        hint: Option<&'static str>,
    },
}

impl YamlError {
    pub fn location(&self) -> Option<Location> {
        match self {
            YamlError::TooLarge { .. } => None,
            YamlError::Syntax { location, .. } => *location,
        }
    }

    /// The error as a `margo.yaml` violation, for reports.
    pub fn to_violation(&self) -> Violation {
        let expected = match self {
            YamlError::TooLarge { limit, .. } => {
                format!("a YAML document of at most {limit} bytes")
            }
            YamlError::Syntax { .. } => "a single well-formed YAML document".to_owned(),
        };
        let mut v = Violation::new(RuleId::Yaml, FieldPath::root(), expected)
            .with_location(self.location());
        v.message = format!("{} at {}: {}", RuleId::Yaml, FieldPath::root(), self);
        v
    }
}

fn options(limits: &YamlLimits) -> Options {
    let mut budget = Budget::default();
    budget.max_reader_input_bytes = Some(limits.max_bytes);
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_anchors;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = limits.max_bytes;
    budget.max_events = limits.max_nodes.saturating_mul(4);

    let mut opts = Options::default();
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = limits.max_alias_replay_events;
    opts.alias_limits.max_alias_expansions_per_anchor = limits.max_expansions_per_anchor;
    // YAML says keys are unique; a duplicate `id:` would let two readers disagree.
    opts.duplicate_keys = DuplicateKeyPolicy::Error;
    // `<<` merges are YAML 1.1 and make "what does this say" harder to audit.
    opts.merge_keys = MergeKeyPolicy::Error;
    // `yes`/`on` as booleans surprise people; YAML 1.2 core spellings only.
    opts.strict_booleans = true;
    // `.nan`/`.inf` become strings, so a numeric rule reports them instead of the parse failing.
    opts.non_finite_float_policy = NonFiniteFloatPolicy::AsString;
    // Custom tags carry meaning we would silently drop.
    opts.reject_unsupported_tags = true;
    // Messages go into one-line OCI errors; positions are carried separately.
    opts.with_snippet = false;
    opts
}

/// Parses one YAML document into a positioned tree.
///
/// Never panics; every failure, budget breaches included, is a [`YamlError`].
pub fn parse(bytes: &[u8], limits: &YamlLimits) -> Result<Node, YamlError> {
    if bytes.len() > limits.max_bytes {
        return Err(YamlError::TooLarge {
            size: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| YamlError::Syntax {
        message: format!("input is not UTF-8 ({e})"),
        location: None,
        opened: None,
        hint: None,
    })?;
    let parsed: Result<Spanned<RawNode>, _> =
        serde_saphyr::from_str_with_options(text, options(limits));
    match parsed {
        Ok(sp) => {
            let mut node = from_spanned(sp);
            attach_float_text(&mut node, text);
            Ok(node)
        }
        Err(e) => {
            let location = e.location().and_then(to_location);
            let mut message = one_line(&e.to_string());
            if let Some(l) = location {
                // The parser repeats the position in its text; we carry it separately.
                let suffix = format!(" at line {}, column {}", l.line, l.column);
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message = stripped.to_owned();
                }
            }
            let diagnosis = crate::margo::yaml_hint::diagnose(text, location, &message);
            Err(YamlError::Syntax {
                message,
                location,
                opened: diagnosis
                    .as_ref()
                    .and_then(|d| d.opened)
                    .filter(|o| Some(*o) != location),
                hint: diagnosis.map(|d| d.hint),
            })
        }
    }
}

fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.chars().take(500).collect()
}

fn to_location(l: serde_saphyr::Location) -> Option<Location> {
    (l.line() > 0).then(|| Location {
        line: l.line(),
        column: l.column(),
    })
}

fn from_spanned(sp: Spanned<RawNode>) -> Node {
    let mut value = sp.value.0;
    if let NodeValue::Float { raw, .. } = &mut value {
        // Stash the byte span; `attach_float_text` swaps it for the text.
        let span = sp.referenced.span();
        if let (Some(off), Some(len)) = (span.byte_offset(), span.byte_len()) {
            *raw = Some(format!("{off}:{len}"));
        }
    }
    Node {
        value,
        location: to_location(sp.referenced),
    }
}

/// Recovers the written text of float scalars (see [`NodeValue::Float`]).
///
/// Uses the location's byte span into the source; when it is unavailable or does not
/// look like the number, `raw` stays `None` and callers fall back to the f64.
fn attach_float_text(node: &mut Node, text: &str) {
    match &mut node.value {
        NodeValue::Seq(items) => items.iter_mut().for_each(|n| attach_float_text(n, text)),
        NodeValue::Map(entries) => entries
            .iter_mut()
            .for_each(|e| attach_float_text(&mut e.value, text)),
        NodeValue::Float { value, raw } => {
            let written = raw.take().and_then(|span| {
                let (off, len) = span.split_once(':')?;
                let off: usize = off.parse().ok()?;
                let len: usize = len.parse().ok()?;
                let s = text.get(off..off.checked_add(len)?)?.trim();
                // Only keep it if it really is this number's spelling.
                let parsed: f64 = s.parse().ok()?;
                (parsed == *value).then(|| s.to_owned())
            });
            *raw = written;
        }
        _ => {}
    }
}

/// The value half of a node; its position comes from the `Spanned` wrapper around it.
struct RawNode(NodeValue);

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawNode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Int(v.into())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Int(v.into())))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawNode, E> {
        Ok(RawNode(match i128::try_from(v) {
            Ok(i) => NodeValue::Int(i),
            Err(_) => NodeValue::Str(v.to_string()),
        }))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Float {
            value: v,
            raw: None,
        }))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Str(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Str(v)))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Str(
            String::from_utf8_lossy(v).into_owned(),
        )))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawNode, E> {
        Ok(RawNode(NodeValue::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawNode, D::Error> {
        RawNode::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawNode>>()? {
            items.push(from_spanned(item));
        }
        Ok(RawNode(NodeValue::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKey>>()? {
            let value = map.next_value::<Spanned<RawNode>>()?;
            entries.push(Entry {
                key: key.value.0,
                key_location: to_location(key.referenced),
                value: from_spanned(value),
            });
        }
        Ok(RawNode(NodeValue::Map(entries)))
    }
}

/// A mapping key as text; collection keys are refused (no Margo key is one).
struct RawKey(String);

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = RawKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawKey, E> {
        Ok(RawKey(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKey, E> {
        Ok(RawKey(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawKey, E> {
        Ok(RawKey(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawKey, E> {
        Ok(RawKey(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawKey, E> {
        Ok(RawKey("null".to_owned()))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawKey, E> {
        Ok(RawKey("null".to_owned()))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawKey, D::Error> {
        RawKey::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<RawKey, A::Error> {
        Err(de::Error::custom("sequence used as a mapping key"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<RawKey, A::Error> {
        Err(de::Error::custom("mapping used as a mapping key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_positions() {
        let n = parse(b"a:\n  b: [1, 2.5, x]\n", &YamlLimits::default());
        let Ok(n) = n else {
            panic!("parse failed: {n:?}");
        };
        let b = n
            .get_path(&["a", "b"])
            .and_then(Node::as_seq)
            .unwrap_or(&[]);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].value, NodeValue::Int(1));
        assert_eq!(b[2].value, NodeValue::Str("x".into()));
        assert_eq!(b[0].location.map(|l| l.line), Some(2));
        let a = n.get("a").and_then(|a| a.location);
        assert!(a.is_some());
    }

    #[test]
    fn errors_carry_line_and_column() {
        let cases: &[(&str, &[u8], Option<u64>)] = &[
            ("unclosed flow", b"a: [1, 2\nb: 3\n", Some(2)),
            ("duplicate key", b"a: 1\na: 2\n", Some(2)),
            ("bad indentation", b"a:\n  b: 1\n c: 2\n", Some(3)),
        ];
        for (name, input, line) in cases {
            let err = parse(input, &YamlLimits::default());
            let Err(err) = err else {
                panic!("{name}: parsed");
            };
            assert_eq!(err.location().map(|l| l.line), *line, "{name}: {err}");
            assert!(err.to_string().contains("line"), "{name}: {err}");
        }
    }

    #[test]
    fn refuses_oversized_input_before_parsing() {
        let limits = YamlLimits {
            max_bytes: 10,
            ..YamlLimits::default()
        };
        assert_eq!(
            parse(b"a: 0123456789", &limits),
            Err(YamlError::TooLarge {
                size: 13,
                limit: 10
            })
        );
    }

    #[test]
    fn refuses_alias_bomb() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(y.as_bytes(), &YamlLimits::default()).is_err());
    }

    #[test]
    fn refuses_deep_nesting() {
        let y = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(y.as_bytes(), &YamlLimits::default()).is_err());
        let y = (0..100)
            .map(|i| format!("{}k:", " ".repeat(i * 2)))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse(y.as_bytes(), &YamlLimits::default()).is_err());
    }

    #[test]
    fn refuses_multiple_documents_merge_keys_and_custom_tags() {
        for input in [
            &b"a: 1\n---\nb: 2\n"[..],
            b"base: &b {x: 1}\nc:\n  <<: *b\n",
            b"a: !custom 1\n",
        ] {
            assert!(
                parse(input, &YamlLimits::default()).is_err(),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn syntax(text: &str) -> (YamlError, String) {
        match parse(text.as_bytes(), &YamlLimits::default()) {
            Err(e @ YamlError::Syntax { .. }) => {
                let shown = e.to_string();
                (e, shown)
            }
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn syntax_errors_say_where_the_construct_began_with_a_hint() {
        // An unclosed `[` on line 4: the parser fails on a later line.
        let (e, shown) = syntax(
            "apiVersion: v1\nkind: ApplicationDescription\nmetadata:\n  name: [unclosed\n  version: 1.0.0\n  other: x\n",
        );
        let YamlError::Syntax {
            location,
            opened,
            hint,
            ..
        } = &e
        else {
            unreachable!()
        };
        assert!(location.is_some_and(|l| l.line > 4), "{shown}");
        assert_eq!(*opened, Some(Location { line: 4, column: 9 }), "{shown}");
        assert!(hint.is_some_and(|h| h.contains("never closed")), "{shown}");
        assert!(shown.contains("it began at line 4, column 9"), "{shown}");

        let (e, shown) = syntax("a:\n  b: 1\n\tc: 2\n");
        let YamlError::Syntax { hint, .. } = &e else {
            unreachable!()
        };
        assert!(hint.is_some_and(|h| h.contains("tab")), "{shown}");

        let (e, shown) = syntax("metadata:\n  name: a\n  version: 1\n  name: b\n");
        let YamlError::Syntax { opened, hint, .. } = &e else {
            unreachable!()
        };
        assert!(hint.is_some_and(|h| h.contains("twice")), "{shown}");
        assert_eq!(*opened, Some(Location { line: 2, column: 3 }), "{shown}");

        // The violation message carries both places.
        let v = e.to_violation();
        assert!(v.message.contains("line 2, column 3"), "{}", v.message);
    }

    #[test]
    fn scalars_follow_yaml_1_2_core() {
        let n = parse(
            b"a: yes\nb: true\nc: .inf\nd: ~\ne: 0x10\n",
            &YamlLimits::default(),
        );
        let Ok(n) = n else {
            panic!("{n:?}");
        };
        assert_eq!(
            n.get("a").map(|v| &v.value),
            Some(&NodeValue::Str("yes".into()))
        );
        assert_eq!(n.get("b").map(|v| &v.value), Some(&NodeValue::Bool(true)));
        assert!(matches!(
            n.get("c").map(|v| &v.value),
            Some(NodeValue::Str(_))
        ));
        assert_eq!(n.get("d").map(|v| &v.value), Some(&NodeValue::Null));
        assert_eq!(n.get("e").map(|v| &v.value), Some(&NodeValue::Int(16)));
    }

    #[test]
    fn non_utf8_is_an_error() {
        assert!(matches!(
            parse(&[0xff, 0xfe, b'a'], &YamlLimits::default()),
            Err(YamlError::Syntax { .. })
        ));
    }
}

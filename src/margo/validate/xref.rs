//! Cross references and uniqueness: what the schema states in words rather than slots.
//!
//! Works on the tree and skips anything of the wrong shape: the structural pass has
//! already reported it, and reporting it twice would only add noise.

use std::collections::{HashMap, HashSet};

use crate::margo::node::Node;
use crate::margo::report::{FieldPath, Report, RuleId, Violation};

fn seq(n: Option<&Node>) -> &[Node] {
    n.and_then(Node::as_seq).unwrap_or(&[])
}

/// Reports the second and later occurrences of each string in `items`.
fn unique<'a>(items: impl Iterator<Item = (&'a Node, FieldPath)>, what: &str, out: &mut Report) {
    let mut first: HashMap<&str, FieldPath> = HashMap::new();
    for (node, path) in items {
        let Some(s) = node.as_str() else { continue };
        match first.get(s) {
            Some(prev) => out.push(
                Violation::new(
                    RuleId::Unique,
                    path,
                    format!("a {what} not already used at {prev}"),
                )
                .with_value(serde_json::Value::String(s.to_owned()))
                .with_location(node.location),
            ),
            None => {
                first.insert(s, path);
            }
        }
    }
}

pub(crate) fn check(root: &Node, out: &mut Report) {
    let profiles_path = FieldPath::root().key("deploymentProfiles");
    let profiles = seq(root.get("deploymentProfiles"));

    unique(
        profiles
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.get("id").map(|id| (id, profiles_path.index(i).key("id")))),
        "deployment profile id",
        out,
    );

    // Component names are unique within a profile; the same component (e.g. `database`)
    // normally appears in both the helm and the compose profile.
    let mut component_names: HashSet<&str> = HashSet::new();
    for (i, p) in profiles.iter().enumerate() {
        let cpath = profiles_path.index(i).key("components");
        let comps = seq(p.get("components"));
        unique(
            comps
                .iter()
                .enumerate()
                .filter_map(|(j, c)| c.get("name").map(|n| (n, cpath.index(j).key("name")))),
            "component name within the profile",
            out,
        );
        component_names.extend(
            comps
                .iter()
                .filter_map(|c| c.get("name").and_then(Node::as_str)),
        );
    }

    let params_path = FieldPath::root().key("parameters");
    let params = root.get("parameters").and_then(Node::as_map).unwrap_or(&[]);
    let mut known: Vec<&str> = component_names.iter().copied().collect();
    known.sort_unstable();
    for e in params {
        let ppath = params_path.key(&e.key);
        if let Some(name) = e.value.get("name").and_then(Node::as_str) {
            if name != e.key {
                out.push(
                    Violation::new(
                        RuleId::Equals,
                        ppath.key("name"),
                        format!("{:?} (the parameter's key)", e.key),
                    )
                    .with_value(serde_json::Value::String(name.to_owned()))
                    .with_location(e.value.get("name").and_then(|n| n.location)),
                );
            }
        }
        for (t, target) in seq(e.value.get("targets")).iter().enumerate() {
            let tpath = ppath.key("targets").index(t).key("components");
            for (c, comp) in seq(target.get("components")).iter().enumerate() {
                let Some(name) = comp.as_str() else { continue };
                if !component_names.contains(name) {
                    let expected = if known.is_empty() {
                        "the name of a component of the deployment profiles (there are none)"
                            .to_owned()
                    } else {
                        format!(
                            "the name of a component of the deployment profiles: {}",
                            known.join(", ")
                        )
                    };
                    out.push(
                        Violation::new(RuleId::XrefTargetComponent, tpath.index(c), expected)
                            .with_value(serde_json::Value::String(name.to_owned()))
                            .with_location(comp.location),
                    );
                }
            }
        }
    }

    let Some(config) = root.get("configuration") else {
        return;
    };
    let schema_path = FieldPath::root().key("configuration").key("schema");
    let schemas = seq(config.get("schema"));
    unique(
        schemas
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.get("name").map(|n| (n, schema_path.index(i).key("name")))),
        "schema name",
        out,
    );
    let schema_names: HashSet<&str> = schemas
        .iter()
        .filter_map(|s| s.get("name").and_then(Node::as_str))
        .collect();
    let param_names: HashSet<&str> = params.iter().map(|e| e.key.as_str()).collect();

    let sections_path = FieldPath::root().key("configuration").key("sections");
    for (i, section) in seq(config.get("sections")).iter().enumerate() {
        for (j, setting) in seq(section.get("settings")).iter().enumerate() {
            let spath = sections_path.index(i).key("settings").index(j);
            if let Some(p) = setting.get("parameter") {
                if let Some(name) = p.as_str() {
                    if !param_names.contains(name) {
                        out.push(
                            Violation::new(
                                RuleId::XrefSettingParameter,
                                spath.key("parameter"),
                                "the name of a key of `parameters`",
                            )
                            .with_value(serde_json::Value::String(name.to_owned()))
                            .with_location(p.location),
                        );
                    }
                }
            }
            if let Some(s) = setting.get("schema") {
                if let Some(name) = s.as_str() {
                    if !schema_names.contains(name) {
                        out.push(
                            Violation::new(
                                RuleId::XrefSettingSchema,
                                spath.key("schema"),
                                "the name of an entry of `configuration.schema`",
                            )
                            .with_value(serde_json::Value::String(name.to_owned()))
                            .with_location(s.location),
                        );
                    }
                }
            }
        }
    }
}

//! Structural validation: the LinkML classes as a static table, walked over the tree.
//!
//! A table (rather than hand-written checks per class) keeps the rules next to each other
//! in the same shape as the schema, so a reviewer can compare the two line by line.

use std::sync::LazyLock;

use regex::Regex;

use crate::margo::node::{Node, NodeValue};
use crate::margo::report::{FieldPath, Report, RuleId, Violation};

/// `ApplicationDescription.id`.
pub(crate) const APP_ID: &str = "^[a-z0-9-]{1,200}$";
/// `Author.email`, unanchored as LinkML (JSON Schema) patterns are.
pub(crate) const EMAIL: &str = ".*@[a-z0-9.-]*";
/// `RequiredResources.memory`.
pub(crate) const MEMORY: &str = "^[0-9]+(Mi|Gi|Ki)$";
/// `RequiredResources.storage`.
pub(crate) const STORAGE: &str = "^[0-9]+(Mi|Gi|Ki|Ti|Pi|Ei)$";
/// Slot `type`.
pub(crate) const PROFILE_TYPE: &str = "^(helm|compose)$";
/// `Component.name`: not a LinkML `pattern`, but the slot's description says "lower
/// case letters and numbers and MAY contain dashes … MUST NOT" use anything else.
pub(crate) const COMPONENT_NAME: &str = "^[a-z0-9-]+$";
/// Specification extension keys.
pub(crate) const EXTENSION_KEY: &str = "^x-[a-z][a-z0-9-]*-extensions$";

const ALL_PATTERNS: [&str; 7] = [
    APP_ID,
    EMAIL,
    MEMORY,
    STORAGE,
    PROFILE_TYPE,
    COMPONENT_NAME,
    EXTENSION_KEY,
];

static COMPILED: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    ALL_PATTERNS
        .iter()
        .filter_map(|p| Regex::new(p).ok().map(|r| (*p, r)))
        .collect()
});

/// The compiled form of one of the constant patterns above. A pattern that failed to
/// compile (impossible for these constants, and tested) matches nothing, so it fails
/// closed rather than panicking.
pub(crate) fn pattern_matches(pattern: &str, s: &str) -> bool {
    COMPILED
        .iter()
        .find(|(p, _)| *p == pattern)
        .is_some_and(|(_, r)| r.is_match(s))
}

pub(crate) fn is_extension_key(key: &str) -> bool {
    pattern_matches(EXTENSION_KEY, key)
}

pub(crate) const CPU_ARCHITECTURES: &[&str] = &["amd64", "arm64", "arm", "riscv64", "other"];
pub(crate) const PERIPHERAL_TYPES: &[&str] =
    &["gpu", "display", "camera", "microphone", "speaker", "other"];
pub(crate) const INTERFACE_TYPES: &[&str] = &[
    "ethernet",
    "wifi",
    "cellular",
    "bluetooth",
    "usb",
    "canbus",
    "rs232",
    "other",
];
pub(crate) const DATA_TYPES: &[&str] = &[
    "string",
    "integer",
    "double",
    "boolean",
    "array[string]",
    "array[integer]",
    "array[double]",
    "array[boolean]",
];

/// The range of a slot.
pub(crate) enum Ty {
    Str,
    Bool,
    /// An integer within i64.
    Int,
    /// Integers are doubles too.
    Double,
    Enum(&'static [&'static str]),
    Class(&'static Class),
    /// `Parameter.value`: a scalar or a sequence of scalars.
    ParamValue,
    /// Any non-null scalar (`options` entries).
    Scalar,
    /// `parameters`: mapping of parameter name to `Parameter`.
    ParamMap,
}

pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub list: bool,
    pub pattern: Option<&'static str>,
    pub equals: Option<&'static str>,
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        list: false,
        pattern: None,
        equals: None,
    }
}

impl Field {
    const fn req(mut self) -> Self {
        self.required = true;
        self
    }
    const fn list(mut self) -> Self {
        self.list = true;
        self
    }
    const fn pattern(mut self, p: &'static str) -> Self {
        self.pattern = Some(p);
        self
    }
    const fn equals(mut self, s: &'static str) -> Self {
        self.equals = Some(s);
        self
    }
}

pub(crate) struct Class {
    pub name: &'static str,
    pub fields: &'static [Field],
    /// Whether the schema gives this class the `x-placeholder-extensions` slot.
    pub extensions: bool,
}

pub(crate) static APPLICATION_DESCRIPTION: Class = Class {
    name: "ApplicationDescription",
    fields: &[
        f("apiVersion", Ty::Str).req(),
        f("kind", Ty::Str).req().equals("ApplicationDescription"),
        f("id", Ty::Str).req().pattern(APP_ID),
        f("metadata", Ty::Class(&METADATA)).req(),
        f("deploymentProfiles", Ty::Class(&DEPLOYMENT_PROFILE))
            .req()
            .list(),
        f("parameters", Ty::ParamMap),
        f("configuration", Ty::Class(&CONFIGURATION)),
    ],
    extensions: true,
};

static METADATA: Class = Class {
    name: "Metadata",
    fields: &[
        f("name", Ty::Str).req(),
        f("description", Ty::Str),
        f("version", Ty::Str).req(),
        f("catalog", Ty::Class(&CATALOG)).req(),
    ],
    extensions: false,
};

static CATALOG: Class = Class {
    name: "Catalog",
    fields: &[
        f("application", Ty::Class(&APPLICATION_METADATA)),
        f("author", Ty::Class(&AUTHOR)).list(),
        f("organization", Ty::Class(&ORGANIZATION)).req().list(),
    ],
    extensions: false,
};

static APPLICATION_METADATA: Class = Class {
    name: "ApplicationMetadata",
    fields: &[
        f("descriptionFile", Ty::Str),
        f("icon", Ty::Str),
        f("licenseFile", Ty::Str),
        f("releaseNotes", Ty::Str),
        f("site", Ty::Str),
        f("tagline", Ty::Str),
        f("tags", Ty::Str).list(),
    ],
    extensions: false,
};

static AUTHOR: Class = Class {
    name: "Author",
    fields: &[f("name", Ty::Str), f("email", Ty::Str).pattern(EMAIL)],
    extensions: false,
};

static ORGANIZATION: Class = Class {
    name: "Organization",
    fields: &[f("name", Ty::Str).req(), f("site", Ty::Str)],
    extensions: false,
};

static DEPLOYMENT_PROFILE: Class = Class {
    name: "DeploymentProfile",
    fields: &[
        f("type", Ty::Str).req().pattern(PROFILE_TYPE),
        f("id", Ty::Str).req(),
        f("description", Ty::Str),
        f("requiredResources", Ty::Class(&REQUIRED_RESOURCES)),
        f("components", Ty::Class(&COMPONENT)).req().list(),
    ],
    extensions: true,
};

static REQUIRED_RESOURCES: Class = Class {
    name: "RequiredResources",
    fields: &[
        f("cpu", Ty::Class(&CPU)),
        f("memory", Ty::Str).pattern(MEMORY),
        f("storage", Ty::Str).pattern(STORAGE),
        f("peripherals", Ty::Class(&PERIPHERAL)).list(),
        f("interfaces", Ty::Class(&COMMUNICATION_INTERFACE)).list(),
    ],
    extensions: false,
};

static CPU: Class = Class {
    name: "CPU",
    fields: &[
        f("cores", Ty::Double).req(),
        f("architectures", Ty::Enum(CPU_ARCHITECTURES)).list(),
    ],
    extensions: false,
};

static PERIPHERAL: Class = Class {
    name: "Peripheral",
    fields: &[
        f("type", Ty::Enum(PERIPHERAL_TYPES)).req(),
        f("manufacturer", Ty::Str),
        f("model", Ty::Str),
    ],
    extensions: false,
};

static COMMUNICATION_INTERFACE: Class = Class {
    name: "CommunicationInterface",
    fields: &[f("type", Ty::Enum(INTERFACE_TYPES)).req()],
    extensions: false,
};

static COMPONENT: Class = Class {
    name: "Component",
    fields: &[
        f("name", Ty::Str).req().pattern(COMPONENT_NAME),
        f("properties", Ty::Class(&COMPONENT_PROPERTIES)).req(),
    ],
    extensions: true,
};

static COMPONENT_PROPERTIES: Class = Class {
    name: "ComponentProperties",
    fields: &[
        f("repository", Ty::Str),
        f("revision", Ty::Str),
        f("wait", Ty::Bool),
        f("timeout", Ty::Str),
        f("packageLocation", Ty::Str),
        f("keyLocation", Ty::Str),
    ],
    extensions: false,
};

/// `name` is the identifier and is given by the map key; a `name` inside the value is
/// tolerated (LinkML allows it) and checked against the key elsewhere.
pub(crate) static PARAMETER: Class = Class {
    name: "Parameter",
    fields: &[
        f("name", Ty::Str),
        f("value", Ty::ParamValue),
        f("targets", Ty::Class(&TARGET)).req().list(),
    ],
    extensions: false,
};

static TARGET: Class = Class {
    name: "Target",
    fields: &[
        f("pointer", Ty::Str).req(),
        f("components", Ty::Str).req().list(),
    ],
    extensions: false,
};

static CONFIGURATION: Class = Class {
    name: "Configuration",
    fields: &[
        f("sections", Ty::Class(&SECTION)).req().list(),
        f("schema", Ty::Class(&SCHEMA)).req().list(),
    ],
    extensions: false,
};

static SECTION: Class = Class {
    name: "Section",
    fields: &[
        f("name", Ty::Str).req(),
        f("settings", Ty::Class(&SETTING)).req().list(),
    ],
    extensions: false,
};

static SETTING: Class = Class {
    name: "Setting",
    fields: &[
        f("parameter", Ty::Str).req(),
        f("name", Ty::Str).req(),
        f("description", Ty::Str),
        f("immutable", Ty::Bool),
        f("schema", Ty::Str).req(),
    ],
    extensions: false,
};

/// `Schema` and the union of its subclasses' slots; which slots fit which subclass is
/// checked in `schema_rules`.
static SCHEMA: Class = Class {
    name: "Schema",
    fields: &[
        f("name", Ty::Str).req(),
        f("dataType", Ty::Enum(DATA_TYPES)).req(),
        f("allowEmpty", Ty::Bool),
        f("minLength", Ty::Int),
        f("maxLength", Ty::Int),
        f("regexMatch", Ty::Str),
        f("minValue", Ty::Double),
        f("maxValue", Ty::Double),
        f("minPrecision", Ty::Int),
        f("maxPrecision", Ty::Int),
        f("multiselect", Ty::Bool),
        f("options", Ty::Scalar).list(),
    ],
    extensions: false,
};

fn type_violation(node: &Node, path: &FieldPath, expected: &str) -> Violation {
    Violation::new(RuleId::Type, path.clone(), expected)
        .with_value(node.to_value_hint())
        .with_location(node.location)
}

/// Checks a node against a class; reports into `out` and never stops early.
pub(crate) fn check_class(node: &Node, class: &Class, path: &FieldPath, out: &mut Report) {
    let Some(entries) = node.as_map() else {
        out.push(type_violation(
            node,
            path,
            &format!("a mapping ({})", class.name),
        ));
        return;
    };
    for entry in entries {
        if class.fields.iter().any(|fd| fd.name == entry.key) {
            continue;
        }
        let at = path.key(&entry.key);
        if class.extensions && is_extension_key(&entry.key) {
            if entry.value.as_map().is_none() {
                out.push(
                    Violation::new(
                        RuleId::ExtensionValue,
                        at,
                        "a mapping (vendor extension content)",
                    )
                    .with_value(entry.value.to_value_hint())
                    .with_location(entry.value.location),
                );
            }
            continue;
        }
        let known: Vec<&str> = class.fields.iter().map(|fd| fd.name).collect();
        let mut expected = format!("one of the {} slots: {}", class.name, known.join(", "));
        if class.extensions {
            expected.push_str(", or x-<name>-extensions");
        }
        out.push(
            Violation::new(RuleId::UnknownField, at, expected)
                .with_value(serde_json::Value::String(entry.key.clone()))
                .with_location(entry.key_location),
        );
    }
    for field in class.fields {
        let at = path.key(field.name);
        match node.get(field.name) {
            None => {
                if field.required {
                    out.push(
                        Violation::new(
                            RuleId::Required,
                            at,
                            format!("`{}` (required in {})", field.name, class.name),
                        )
                        .with_location(node.location),
                    );
                }
            }
            Some(value) if value.is_null() => {
                if field.required {
                    out.push(
                        Violation::new(
                            RuleId::Required,
                            at,
                            format!("a value for `{}` (required in {})", field.name, class.name),
                        )
                        .with_location(value.location),
                    );
                }
            }
            Some(value) => check_field(value, field, &at, out),
        }
    }
}

fn check_field(node: &Node, field: &Field, path: &FieldPath, out: &mut Report) {
    if !field.list {
        check_ty(node, field, path, out);
        return;
    }
    let Some(items) = node.as_seq() else {
        out.push(type_violation(node, path, "a sequence"));
        return;
    };
    if field.required && items.is_empty() {
        out.push(
            Violation::new(
                RuleId::Required,
                path.clone(),
                format!("at least one entry in `{}`", field.name),
            )
            .with_location(node.location),
        );
    }
    for (i, item) in items.iter().enumerate() {
        check_ty(item, field, &path.index(i), out);
    }
}

fn is_scalar(n: &Node) -> bool {
    matches!(
        n.value,
        NodeValue::Bool(_) | NodeValue::Int(_) | NodeValue::Float { .. } | NodeValue::Str(_)
    )
}

fn fits_i64(i: i128) -> bool {
    i64::try_from(i).is_ok()
}

fn check_ty(node: &Node, field: &Field, path: &FieldPath, out: &mut Report) {
    match &field.ty {
        Ty::Str => {
            let Some(s) = node.as_str() else {
                let hint = if is_scalar(node) {
                    "a string (quote the value in YAML)"
                } else {
                    "a string"
                };
                out.push(type_violation(node, path, hint));
                return;
            };
            if let Some(p) = field.pattern {
                if !pattern_matches(p, s) {
                    out.push(
                        Violation::new(RuleId::Pattern, path.clone(), format!("a match of {p}"))
                            .with_value(serde_json::Value::String(s.to_owned()))
                            .with_location(node.location),
                    );
                }
            }
            if let Some(want) = field.equals {
                if s != want {
                    out.push(
                        Violation::new(RuleId::Equals, path.clone(), format!("{want:?}"))
                            .with_value(serde_json::Value::String(s.to_owned()))
                            .with_location(node.location),
                    );
                }
            }
        }
        Ty::Bool => {
            if !matches!(node.value, NodeValue::Bool(_)) {
                out.push(type_violation(node, path, "a boolean (true or false)"));
            }
        }
        Ty::Int => {
            if !matches!(node.value, NodeValue::Int(i) if fits_i64(i)) {
                out.push(type_violation(node, path, "an integer"));
            }
        }
        Ty::Double => {
            let ok = match &node.value {
                NodeValue::Int(_) => true,
                NodeValue::Float { value, .. } => value.is_finite(),
                _ => false,
            };
            if !ok {
                out.push(type_violation(node, path, "a number"));
            }
        }
        Ty::Enum(values) => match node.as_str() {
            Some(s) if values.contains(&s) => {}
            Some(s) => out.push(
                Violation::new(
                    RuleId::Enum,
                    path.clone(),
                    format!("one of {}", values.join(", ")),
                )
                .with_value(serde_json::Value::String(s.to_owned()))
                .with_location(node.location),
            ),
            None => out.push(type_violation(
                node,
                path,
                &format!("a string, one of {}", values.join(", ")),
            )),
        },
        Ty::Class(class) => check_class(node, class, path, out),
        Ty::Scalar => {
            if !is_scalar(node) {
                out.push(type_violation(node, path, "a scalar"));
            }
        }
        Ty::ParamValue => {
            let ok = match &node.value {
                NodeValue::Int(i) => fits_i64(*i),
                NodeValue::Seq(items) => items
                    .iter()
                    .all(|i| is_scalar(i) && !matches!(i.value, NodeValue::Int(n) if !fits_i64(n))),
                _ => is_scalar(node),
            };
            if !ok {
                out.push(type_violation(
                    node,
                    path,
                    "a boolean, integer, double or string, or a sequence of them",
                ));
            }
        }
        Ty::ParamMap => {
            let Some(entries) = node.as_map() else {
                out.push(type_violation(
                    node,
                    path,
                    "a mapping of parameter name to Parameter",
                ));
                return;
            };
            for e in entries {
                let at = path.key(&e.key);
                if e.key.trim().is_empty() {
                    out.push(
                        Violation::new(RuleId::Required, at.clone(), "a non-empty parameter name")
                            .with_location(e.key_location),
                    );
                }
                check_class(&e.value, &PARAMETER, &at, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_patterns_compile() {
        assert_eq!(COMPILED.len(), ALL_PATTERNS.len());
    }

    #[test]
    fn pattern_table() {
        let cases = [
            (APP_ID, "my-app-1", true),
            (APP_ID, "My_App", false),
            (APP_ID, "", false),
            (APP_ID, &"a".repeat(201), false),
            (APP_ID, &"a".repeat(200), true),
            (EMAIL, "dev@example.com", true),
            (EMAIL, "no-at-sign", false),
            (MEMORY, "512Mi", true),
            (MEMORY, "1Ti", false),
            (MEMORY, "1.5Gi", false),
            (STORAGE, "10Ti", true),
            (STORAGE, "10GB", false),
            (PROFILE_TYPE, "helm", true),
            (PROFILE_TYPE, "compose", true),
            (PROFILE_TYPE, "Helm", false),
            (COMPONENT_NAME, "db-1", true),
            (COMPONENT_NAME, "db.1", false),
            (EXTENSION_KEY, "x-acme-extensions", true),
            (EXTENSION_KEY, "x-Acme-extensions", false),
            (EXTENSION_KEY, "x--extensions", false),
            (EXTENSION_KEY, "x-acme", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(pattern_matches(p, s), want, "{p} on {s:?}");
        }
    }

    #[test]
    fn unknown_pattern_fails_closed() {
        assert!(!pattern_matches("not-a-registered-pattern", "x"));
    }
}

//! Holds the structural table ([`super::shape`], the one Rust statement of the schema's
//! shape) and the typed model ([`crate::margo::model`]) against the normative LinkML
//! file: every class, slot, `required` flag, `multivalued` flag, range, pattern,
//! `equals_string` and enum value of the LinkML must be what the Rust side encodes,
//! except for the documented interpretations listed here, each of which must still be
//! a real difference (so the list cannot rot).
//!
//! The file is read at `../shared/margo-spec/` relative to the repository root, as the
//! README says; `MARGO_SPEC_DIR` overrides the directory. A missing file fails the test.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::shape::{self, Class, Field, Ty};

fn linkml() -> Value {
    let dir = std::env::var("MARGO_SPEC_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/margo-spec").to_owned()
    });
    let path = format!("{dir}/application-description.linkml.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (set MARGO_SPEC_DIR to the margo-spec directory)"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Where the Rust table deliberately departs from the LinkML text, and why.
/// `(class, slot, aspect)`; the reasons are the validator's documented interpretations
/// (see `validate/mod.rs`).
const INTERPRETATIONS: &[(&str, &str, &str)] = &[
    // The identifier of a map entry is its key; a `name` inside is tolerated.
    ("Parameter", "name", "required"),
    // "Accepted values are string, integer, …": the description's closed list, as an enum.
    ("Schema", "dataType", "range"),
    // "The data type for each option must match the parameter setting's data type".
    ("Schema", "options", "range"),
    // Required in SelectValidationSchema only; checked per subclass in `schema_rules`.
    ("Schema", "options", "required"),
    // The slot's description: lower case letters, numbers and dashes.
    ("Component", "name", "pattern"),
];

/// A slot as the LinkML states it, after `is_a`, `slots` and `slot_usage`.
#[derive(Debug, Clone, PartialEq)]
struct Slot {
    range: String,
    required: bool,
    multivalued: bool,
    /// `inlined_as_list: false` on a multivalued slot: a map keyed by identifier.
    as_map: bool,
    pattern: Option<String>,
    equals: Option<String>,
}

fn slot_of(v: &Value) -> Slot {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
    let range = if v.get("any_of").is_some() {
        "any_of".to_owned()
    } else {
        s("range").unwrap_or_else(|| "string".to_owned())
    };
    Slot {
        range,
        required: b("required"),
        multivalued: b("multivalued"),
        as_map: b("multivalued")
            && v.get("inlined_as_list").and_then(Value::as_bool) == Some(false),
        pattern: s("pattern"),
        equals: s("equals_string"),
    }
}

/// Every class's slots, with inheritance resolved.
fn classes(schema: &Value) -> BTreeMap<String, (Option<String>, BTreeMap<String, Slot>)> {
    let top_slots = schema["slots"].as_object().cloned().unwrap_or_default();
    let raw = schema["classes"].as_object().cloned().unwrap_or_default();
    let own = |c: &Value| {
        let mut slots = BTreeMap::new();
        for (name, v) in c["attributes"].as_object().into_iter().flatten() {
            slots.insert(name.clone(), slot_of(v));
        }
        for name in c["slots"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            let v = top_slots.get(name).cloned().unwrap_or(Value::Null);
            slots.insert(name.to_owned(), slot_of(&v));
        }
        slots
    };
    let mut out = BTreeMap::new();
    for (name, c) in &raw {
        let mut slots = BTreeMap::new();
        let mut chain = vec![c.clone()];
        while let Some(parent) = chain
            .last()
            .and_then(|c| c["is_a"].as_str())
            .and_then(|p| raw.get(p))
        {
            chain.push(parent.clone());
        }
        for c in chain.iter().rev() {
            slots.extend(own(c));
            for (slot, usage) in c["slot_usage"].as_object().into_iter().flatten() {
                if let Some(s) = slots.get_mut(slot) {
                    if let Some(r) = usage["range"].as_str() {
                        s.range = r.to_owned();
                    }
                    if let Some(e) = usage["equals_string"].as_str() {
                        s.equals = Some(e.to_owned());
                    }
                }
            }
        }
        out.insert(name.clone(), (c["is_a"].as_str().map(str::to_owned), slots));
    }
    out
}

fn enums(schema: &Value) -> BTreeMap<String, BTreeSet<String>> {
    schema["enums"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let values = v["permissible_values"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            (k.clone(), values)
        })
        .collect()
}

/// The Rust table's classes, reached from the root.
fn rust_classes() -> BTreeMap<&'static str, &'static Class> {
    fn walk(c: &'static Class, out: &mut BTreeMap<&'static str, &'static Class>) {
        if out.insert(c.name, c).is_some() {
            return;
        }
        for f in c.fields {
            if let Ty::Class(child) = f.ty {
                walk(child, out);
            }
        }
        if c.name == "ApplicationDescription" {
            walk(&shape::PARAMETER, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(&shape::APPLICATION_DESCRIPTION, &mut out);
    out
}

/// The range a Rust field encodes, in LinkML's words.
fn rust_range(f: &Field, enums: &BTreeMap<String, BTreeSet<String>>) -> String {
    match f.ty {
        Ty::Str => "string".into(),
        Ty::Bool => "boolean".into(),
        Ty::Int => "integer".into(),
        Ty::Double => "double".into(),
        Ty::Class(c) => c.name.into(),
        Ty::ParamValue => "any_of".into(),
        Ty::Scalar => "scalar".into(),
        Ty::ParamMap => "Parameter".into(),
        Ty::Enum(values) => {
            let set: BTreeSet<String> = values.iter().map(|s| (*s).to_owned()).collect();
            enums
                .iter()
                .find(|(_, v)| **v == set)
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| format!("enum{set:?}"))
        }
    }
}

/// The class that stands for a LinkML class on the Rust side: subclasses that only
/// restrict (`HelmComponent`, `ComposeDeploymentProfile`…) and the validation-schema
/// subclasses fold into their parent.
fn folded_into(name: &str, is_a: Option<&str>) -> String {
    is_a.unwrap_or(name).to_owned()
}

/// Ranges that a subclass narrows: the parent's Rust field is their union.
fn union_range(a: &str, b: &str) -> String {
    match (a, b) {
        (x, y) if x == y => x.to_owned(),
        ("integer", "float" | "double") | ("float" | "double", "integer") => "double".into(),
        ("float", "double") | ("double", "float") => "double".into(),
        ("HelmComponent" | "ComposeComponent", "Component")
        | ("Component", "HelmComponent" | "ComposeComponent") => "Component".into(),
        (x, y) => format!("{x}|{y}"),
    }
}

#[test]
fn shape_table_matches_the_linkml_schema() {
    let schema = linkml();
    let enums = enums(&schema);
    let linkml_classes = classes(&schema);
    assert!(linkml_classes.len() >= 25, "{:?}", linkml_classes.keys());
    let rust = rust_classes();

    // Expected Rust classes: LinkML classes folded into their parents, slots unioned.
    let mut expected: BTreeMap<String, BTreeMap<String, Slot>> = BTreeMap::new();
    for (name, (is_a, slots)) in &linkml_classes {
        let into = folded_into(name, is_a.as_deref());
        let target = expected.entry(into).or_default();
        for (slot, s) in slots {
            match target.get_mut(slot) {
                None => {
                    target.insert(slot.clone(), s.clone());
                }
                Some(t) => {
                    t.range = union_range(&t.range, &s.range);
                    // Required in the union only when required in every subclass that
                    // has it: a subclass requirement alone is the subclass's check.
                    t.required = t.required && s.required;
                    if t.equals != s.equals {
                        t.equals = None;
                    }
                }
            }
        }
    }

    let mut differences = BTreeSet::new();
    let expected_names: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    let rust_names: BTreeSet<&str> = rust.keys().copied().collect();
    assert_eq!(expected_names, rust_names, "classes differ");
    for (class, slots) in &expected {
        let Some(rc) = rust.get(class.as_str()) else {
            continue;
        };
        let ext = slots.contains_key("x-placeholder-extensions");
        assert_eq!(rc.extensions, ext, "{class}: extensions slot");
        let rust_fields: BTreeMap<&str, &Field> = rc.fields.iter().map(|f| (f.name, f)).collect();
        let linkml_fields: BTreeSet<&str> = slots
            .keys()
            .map(String::as_str)
            .filter(|s| *s != "x-placeholder-extensions")
            .collect();
        assert_eq!(
            linkml_fields,
            rust_fields.keys().copied().collect::<BTreeSet<_>>(),
            "{class}: slots differ"
        );
        for (name, s) in slots {
            let Some(f) = rust_fields.get(name.as_str()) else {
                continue;
            };
            let mut differ = |aspect: &str, l: String, r: String| {
                if l != r {
                    differences.insert((class.clone(), name.clone(), aspect.to_owned(), l, r));
                }
            };
            differ("required", s.required.to_string(), f.required.to_string());
            differ(
                "multivalued",
                (s.multivalued && !s.as_map).to_string(),
                f.list.to_string(),
            );
            differ("range", s.range.clone(), rust_range(f, &enums));
            // The profile `type` pattern also covers the subclasses' equals_string.
            differ(
                "pattern",
                format!("{:?}", s.pattern),
                format!("{:?}", f.pattern),
            );
            differ(
                "equals",
                format!("{:?}", s.equals),
                format!("{:?}", f.equals),
            );
        }
    }
    let found: BTreeSet<(&str, &str, &str)> = differences
        .iter()
        .map(|(c, s, a, _, _)| (c.as_str(), s.as_str(), a.as_str()))
        .collect();
    let allowed: BTreeSet<(&str, &str, &str)> = INTERPRETATIONS.iter().copied().collect();
    let unexplained: Vec<_> = differences
        .iter()
        .filter(|(c, s, a, _, _)| !allowed.contains(&(c.as_str(), s.as_str(), a.as_str())))
        .collect();
    assert!(
        unexplained.is_empty(),
        "the Rust table departs from the LinkML (class, slot, aspect, linkml, rust): {unexplained:#?}"
    );
    let stale: Vec<_> = allowed.difference(&found).collect();
    assert!(
        stale.is_empty(),
        "interpretations that are no difference: {stale:?}"
    );

    // The helm/compose subclasses' equals_string values are what the type pattern allows.
    for (name, (_, slots)) in &linkml_classes {
        if let Some(e) = slots.get("type").and_then(|s| s.equals.as_deref()) {
            assert!(
                shape::pattern_matches(shape::PROFILE_TYPE, e),
                "{name}: {e}"
            );
        }
    }
}

/// A value of a field's range that the validator accepts. `schema` holds one entry
/// per LinkML validation-schema subclass (their slots do not mix).
fn sample(f: &Field, schema: &[Value]) -> Value {
    match f.ty {
        Ty::Str => match f.pattern {
            Some(p) if p == shape::EMAIL => json!("dev@example.com"),
            Some(p) if p == shape::MEMORY => json!("512Mi"),
            Some(p) if p == shape::STORAGE => json!("1Gi"),
            Some(p) if p == shape::PROFILE_TYPE => json!("helm"),
            _ => json!(f.equals.unwrap_or("a-name")),
        },
        Ty::Bool => json!(true),
        Ty::Int => json!(3),
        Ty::Double => json!(1.5),
        Ty::Enum(values) => json!(values.first().copied().unwrap_or_default()),
        Ty::Class(c) if c.name == "Schema" => Value::Array(schema.to_vec()),
        Ty::Class(c) => maximal(c, schema),
        Ty::ParamValue | Ty::Scalar => json!("x"),
        Ty::ParamMap => json!({}),
    }
}

/// An object of the class with every field set.
fn maximal(c: &Class, schema: &[Value]) -> Value {
    let mut m = serde_json::Map::new();
    for f in c.fields {
        let v = sample(f, schema);
        let v = match (&v, f.list) {
            (Value::Array(_), true) if matches!(f.ty, Ty::Class(c) if c.name == "Schema") => v,
            (_, true) => json!([v]),
            _ => v,
        };
        m.insert(f.name.to_owned(), v);
    }
    Value::Object(m)
}

/// One schema entry per LinkML subclass of `Schema`, with every slot the subclass has.
fn schema_entries(linkml: &Value) -> Vec<Value> {
    let table: BTreeMap<&str, &Field> = rust_classes()
        .get("Schema")
        .map(|c| c.fields.iter().map(|f| (f.name, f)).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (name, (is_a, slots)) in classes(linkml) {
        if is_a.as_deref() != Some("Schema") {
            continue;
        }
        let data_type = match name.as_str() {
            "BooleanValidationSchema" => "boolean",
            "NumericIntegerValidationSchema" => "integer",
            "NumericDoubleValidationSchema" => "double",
            _ => "string",
        };
        let mut m = serde_json::Map::new();
        for slot in slots.keys() {
            let Some(f) = table.get(slot.as_str()) else {
                panic!("{name}.{slot} is not in the table")
            };
            let v = match (f.name, data_type) {
                ("minValue" | "maxValue", "integer") => json!(3),
                ("minLength", _) => json!(1),
                ("maxLength", _) => json!(10),
                _ => sample(f, &[]),
            };
            m.insert(slot.clone(), if f.list { json!([v]) } else { v });
        }
        m.insert("name".into(), json!(name));
        m.insert("dataType".into(), json!(data_type));
        out.push(Value::Object(m));
    }
    assert_eq!(out.len(), 5, "five validation-schema subclasses");
    out
}

#[test]
fn typed_model_reads_every_field_of_the_table() {
    // Classes reached from the root, each filled with every field the table knows; the
    // model must read them and write them back unchanged (no field lost or refused).
    let schema = schema_entries(&linkml());
    for (name, c) in rust_classes() {
        let mut doc = maximal(c, &schema);
        // The whole document must also be valid, or the sample proves nothing: give
        // the setting a parameter and a schema entry to name.
        if name == "ApplicationDescription" {
            let mut param = maximal(&shape::PARAMETER, &schema);
            param.as_object_mut().map(|m| m.remove("name"));
            doc["parameters"] = json!({ "a-name": param });
            doc["configuration"]["sections"][0]["settings"][0]["schema"] =
                json!("TextValidationSchema");
            doc["parameters"]["a-name"]["value"] = json!("a-name");
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let check = super::validate_description(&bytes, &super::DescriptionLimits::default());
            assert!(check.is_valid(), "{:?}", check.report.violations());
        }
        let back = match name {
            "ApplicationDescription" => {
                model_roundtrip::<crate::margo::model::ApplicationDescription>(&doc)
            }
            "Metadata" => model_roundtrip::<crate::margo::model::Metadata>(&doc),
            "Catalog" => model_roundtrip::<crate::margo::model::Catalog>(&doc),
            "ApplicationMetadata" => {
                model_roundtrip::<crate::margo::model::ApplicationMetadata>(&doc)
            }
            "Author" => model_roundtrip::<crate::margo::model::Author>(&doc),
            "Organization" => model_roundtrip::<crate::margo::model::Organization>(&doc),
            "DeploymentProfile" => model_roundtrip::<crate::margo::model::DeploymentProfile>(&doc),
            "RequiredResources" => model_roundtrip::<crate::margo::model::RequiredResources>(&doc),
            "CPU" => model_roundtrip::<crate::margo::model::Cpu>(&doc),
            "Peripheral" => model_roundtrip::<crate::margo::model::Peripheral>(&doc),
            "CommunicationInterface" => {
                model_roundtrip::<crate::margo::model::CommunicationInterface>(&doc)
            }
            "Component" => model_roundtrip::<crate::margo::model::Component>(&doc),
            "ComponentProperties" => {
                model_roundtrip::<crate::margo::model::ComponentProperties>(&doc)
            }
            "Target" => model_roundtrip::<crate::margo::model::Target>(&doc),
            "Configuration" => model_roundtrip::<crate::margo::model::Configuration>(&doc),
            "Section" => model_roundtrip::<crate::margo::model::Section>(&doc),
            "Setting" => model_roundtrip::<crate::margo::model::Setting>(&doc),
            "Parameter" => {
                // The model drops `name` (the map key is the identifier).
                let mut d = doc.clone();
                d.as_object_mut().map(|m| m.remove("name"));
                let back = model_roundtrip::<crate::margo::model::Parameter>(&d);
                assert_eq!(back, d, "Parameter");
                continue;
            }
            "Schema" => {
                for entry in &schema {
                    let back = model_roundtrip::<crate::margo::model::Schema>(entry);
                    assert_eq!(&back, entry, "Schema");
                }
                continue;
            }
            other => panic!("no model type is checked for class {other}"),
        };
        assert_eq!(back, doc, "{name}: the model does not hold every field");
    }
    // Every enum value of the table is a value of the model's enums.
    for f in rust_classes().values().flat_map(|c| c.fields) {
        if let Ty::Enum(values) = f.ty {
            for v in values {
                let ok = match f.name {
                    "architectures" => {
                        serde_json::from_value::<crate::margo::model::CpuArchitectureType>(json!(v))
                            .is_ok()
                    }
                    "type" if values.contains(&"gpu") => {
                        serde_json::from_value::<crate::margo::model::PeripheralType>(json!(v))
                            .is_ok()
                    }
                    "type" => serde_json::from_value::<
                        crate::margo::model::CommunicationInterfaceType,
                    >(json!(v))
                    .is_ok(),
                    "dataType" => {
                        serde_json::from_value::<crate::margo::model::DataType>(json!(v)).is_ok()
                    }
                    other => panic!("enum field {other} has no model type checked"),
                };
                assert!(ok, "{}: {v} not in the model", f.name);
            }
        }
    }
}

fn model_roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> Value {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("the model refuses {doc}: {e}"));
    serde_json::to_value(typed).unwrap_or_default()
}

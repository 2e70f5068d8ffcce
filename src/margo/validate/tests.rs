//! Table-driven tests, one table per rule, each with valid and invalid cases written
//! from the schema.

use super::*;

const BASE: &str = "\
apiVersion: margo.to/v1-alpha1
kind: ApplicationDescription
id: hello-world
metadata:
  name: Hello World
  version: 0.1.0
  catalog:
    organization:
      - name: Example Org
deploymentProfiles:
  - type: compose
    id: hello-compose
    components:
      - name: hello
        properties:
          repository: oci://registry.example.com/components/hello
          revision: 0.1.0
parameters:
  greeting:
    value: hi
    targets:
      - pointer: GREETING
        components: [hello]
configuration:
  sections:
    - name: General
      settings:
        - parameter: greeting
          name: Greeting
          schema: text
  schema:
    - name: text
      dataType: string
";

const RICH: &str = include_str!("../../../tests/fixtures/margo/valid-rich.yaml");
const MINIMAL: &str = include_str!("../../../tests/fixtures/margo/valid-minimal.yaml");
const INVALID_MANY: &str = include_str!("../../../tests/fixtures/margo/invalid-many.yaml");

/// BASE with textual replacements; panics (test bug) if a `from` is not in the text.
fn doc(edits: &[(&str, &str)]) -> String {
    let mut s = BASE.to_owned();
    for (from, to) in edits {
        assert!(s.contains(from), "edit target {from:?} not in document");
        s = s.replacen(from, to, 1);
    }
    s
}

/// BASE with the `text` schema entry and the greeting default replaced.
fn schema_doc(schema: &str, value: &str) -> String {
    doc(&[
        ("    - name: text\n      dataType: string\n", schema),
        ("value: hi", value),
    ])
}

fn check(text: &str) -> DescriptionCheck {
    validate_description(text.as_bytes(), &DescriptionLimits::default())
}

fn rules_at(c: &DescriptionCheck) -> Vec<(String, String)> {
    c.report
        .violations()
        .iter()
        .map(|v| (v.rule.as_str().to_owned(), v.path.to_string()))
        .collect()
}

/// Runs a table: `None` expects a valid document, `Some((rule, path))` expects that
/// violation among those reported.
/// Expected outcome of a case: `None` valid, or a rule at a path.
type Expect<'a> = Option<(RuleId, &'a str)>;

fn run(table: &[(&str, String, Expect<'_>)]) {
    for (name, text, want) in table {
        let c = check(text);
        match want {
            None => assert!(
                c.is_valid(),
                "{name}: expected valid, got {:?}",
                c.report
                    .violations()
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
            ),
            Some((rule, path)) => assert!(
                c.report
                    .violations()
                    .iter()
                    .any(|v| v.rule == *rule && v.path.to_string() == *path),
                "{name}: expected {rule} at {path}, got {:?}",
                rules_at(&c)
            ),
        }
    }
}

#[test]
fn fixtures_valid_are_valid_and_build_the_model() {
    for (name, text) in [("base", BASE), ("rich", RICH), ("minimal", MINIMAL)] {
        let c = check(text);
        assert!(c.is_valid(), "{name}: {:?}", rules_at(&c));
        assert!(c.model.is_some(), "{name}: model built");
    }
}

#[test]
fn rich_model_has_every_part() {
    let c = check(RICH);
    let Some(m) = c.model else {
        panic!("rich fixture must be valid: {:?}", rules_at(&check(RICH)));
    };
    assert_eq!(m.id, "northstar-digitron");
    assert_eq!(m.deployment_profiles.len(), 2);
    assert_eq!(
        m.deployment_profiles[0].profile_type,
        crate::margo::model::ProfileType::Helm
    );
    assert!(m.deployment_profiles[0]
        .extensions
        .contains_key("x-northstar-extensions"));
    assert!(m.deployment_profiles[0].components[1]
        .extensions
        .contains_key("x-acme-extensions"));
    assert!(m.extensions.contains_key("x-northstar-extensions"));
    assert_eq!(m.parameters.len(), 10);
    let conf = m.configuration.as_ref().map(|c| c.schema.len());
    assert_eq!(conf, Some(8));
    assert_eq!(c.report.len(), 0);
    assert_eq!(m.resources().local().count(), 4);
}

#[test]
fn model_serialises_back_to_the_same_json_shape() {
    let c = check(MINIMAL);
    let (Some(m), Some(doc)) = (c.model, c.document) else {
        panic!("minimal must be valid");
    };
    let back = serde_json::to_value(&m).unwrap_or_default();
    assert_eq!(back, doc.to_json());
}

#[test]
fn invalid_many_reports_every_marked_violation() {
    let c = check(INVALID_MANY);
    let marked = INVALID_MANY.matches("# violation").count()
        + INVALID_MANY.matches("-> margo.default-value").count();
    assert!(
        c.report.len() >= marked,
        "found {} of {marked}: {:?}",
        c.report.len(),
        rules_at(&c)
    );
    for rule in [
        RuleId::Required,
        RuleId::Type,
        RuleId::Pattern,
        RuleId::Equals,
        RuleId::Enum,
        RuleId::UnknownField,
        RuleId::ExtensionValue,
        RuleId::Unique,
        RuleId::XrefTargetComponent,
        RuleId::XrefSettingParameter,
        RuleId::XrefSettingSchema,
        RuleId::DefaultValue,
        RuleId::SchemaRule,
        RuleId::Regex,
    ] {
        assert!(
            c.report.has_rule(rule),
            "{rule} missing: {:?}",
            rules_at(&c)
        );
    }
    assert!(c.model.is_none());
    // Every violation of a parsed document carries a position.
    assert!(c.report.violations().iter().all(|v| v.location.is_some()));
}

#[test]
fn rule_yaml() {
    let cases: &[(&[u8], Option<u64>)] = &[
        (b"a: [1,\n", Some(1)),
        (b"\xff\xfe", None),
        (
            include_bytes!("../../../tests/fixtures/margo/invalid-yaml-syntax.yaml"),
            Some(5),
        ),
    ];
    for (input, line) in cases {
        let c = validate_description(input, &DescriptionLimits::default());
        assert_eq!(c.report.violations().len(), 1);
        let v = &c.report.violations()[0];
        assert_eq!(v.rule, RuleId::Yaml);
        assert_eq!(v.location.map(|l| l.line), *line, "{}", v.message);
        assert!(v.message.starts_with("margo.yaml at $:"), "{}", v.message);
    }
    let bomb = include_bytes!("../../../tests/fixtures/margo/invalid-alias-bomb.yaml");
    let c = validate_description(bomb, &DescriptionLimits::default());
    assert!(c.report.has_rule(RuleId::Yaml));
}

#[test]
fn rule_required() {
    run(&[
        ("base valid", doc(&[]), None),
        (
            "apiVersion missing",
            doc(&[("apiVersion: margo.to/v1-alpha1\n", "")]),
            Some((RuleId::Required, "apiVersion")),
        ),
        (
            "id null",
            doc(&[("id: hello-world", "id: ~")]),
            Some((RuleId::Required, "id")),
        ),
        (
            "metadata.version missing",
            doc(&[("  version: 0.1.0\n", "")]),
            Some((RuleId::Required, "metadata.version")),
        ),
        (
            "organization empty",
            doc(&[("    organization:\n      - name: Example Org\n", "    organization: []\n")]),
            Some((RuleId::Required, "metadata.catalog.organization")),
        ),
        (
            "organization name missing",
            doc(&[("      - name: Example Org", "      - site: https://x.org")]),
            Some((RuleId::Required, "metadata.catalog.organization[0].name")),
        ),
        (
            "deploymentProfiles empty",
            doc(&[("deploymentProfiles:\n  - type", "deploymentProfiles: []\nxx:\n  - type")]),
            Some((RuleId::Required, "deploymentProfiles")),
        ),
        (
            "component properties missing",
            doc(&[(
                "        properties:\n          repository: oci://registry.example.com/components/hello\n          revision: 0.1.0\n",
                "",
            )]),
            Some((RuleId::Required, "deploymentProfiles[0].components[0].properties")),
        ),
        (
            "profile type missing",
            doc(&[("  - type: compose\n    id", "  - id")]),
            Some((RuleId::Required, "deploymentProfiles[0].type")),
        ),
        (
            "cpu cores missing",
            doc(&[("    components:", "    requiredResources:\n      cpu:\n        architectures: [arm]\n    components:")]),
            Some((RuleId::Required, "deploymentProfiles[0].requiredResources.cpu.cores")),
        ),
        (
            "target pointer missing",
            doc(&[("      - pointer: GREETING\n        components", "      - components")]),
            Some((RuleId::Required, "parameters.greeting.targets[0].pointer")),
        ),
        (
            "targets missing",
            doc(&[("    targets:\n      - pointer: GREETING\n        components: [hello]\n", "")]),
            Some((RuleId::Required, "parameters.greeting.targets")),
        ),
        (
            "setting schema missing",
            doc(&[("          schema: text\n", "")]),
            Some((RuleId::Required, "configuration.sections[0].settings[0].schema")),
        ),
        (
            "configuration schema missing",
            doc(&[("  schema:\n    - name: text\n      dataType: string\n", "")]),
            Some((RuleId::Required, "configuration.schema")),
        ),
        (
            "select options missing",
            schema_doc("    - name: text\n      dataType: string\n      multiselect: false\n", "value: hi"),
            Some((RuleId::Required, "configuration.schema[0].options")),
        ),
        (
            "select options empty",
            schema_doc("    - name: text\n      dataType: string\n      options: []\n", "value: hi"),
            Some((RuleId::Required, "configuration.schema[0].options")),
        ),
    ]);
}

#[test]
fn rule_type() {
    run(&[
        (
            "numeric version",
            doc(&[("version: 0.1.0", "version: 1.0")]),
            Some((RuleId::Type, "metadata.version")),
        ),
        (
            "quoted version valid",
            doc(&[("version: 0.1.0", "version: \"1.0\"")]),
            None,
        ),
        (
            "wait as string",
            doc(&[("revision: 0.1.0\n", "revision: 0.1.0\n          wait: \"true\"\n")]),
            Some((RuleId::Type, "deploymentProfiles[0].components[0].properties.wait")),
        ),
        (
            "wait yes is not a boolean in YAML 1.2",
            doc(&[("revision: 0.1.0\n", "revision: 0.1.0\n          wait: yes\n")]),
            Some((RuleId::Type, "deploymentProfiles[0].components[0].properties.wait")),
        ),
        (
            "cores as string",
            doc(&[("    components:", "    requiredResources:\n      cpu:\n        cores: many\n    components:")]),
            Some((RuleId::Type, "deploymentProfiles[0].requiredResources.cpu.cores")),
        ),
        (
            "cores integer valid",
            doc(&[("    components:", "    requiredResources:\n      cpu:\n        cores: 2\n    components:")]),
            None,
        ),
        (
            "profiles as mapping",
            doc(&[("deploymentProfiles:\n  - type", "deploymentProfiles:\n  p:\n    type")]),
            Some((RuleId::Type, "deploymentProfiles")),
        ),
        (
            "target components as string",
            doc(&[("components: [hello]", "components: hello")]),
            Some((RuleId::Type, "parameters.greeting.targets[0].components")),
        ),
        (
            "parameter value mapping",
            doc(&[("value: hi", "value: {a: 1}")]),
            Some((RuleId::Type, "parameters.greeting.value")),
        ),
        (
            "parameter as list",
            doc(&[("  greeting:\n    value: hi\n    targets:\n      - pointer: GREETING\n        components: [hello]\n", "  greeting: [1]\n")]),
            Some((RuleId::Type, "parameters.greeting")),
        ),
        (
            "minLength float",
            schema_doc("    - name: text\n      dataType: string\n      minLength: 1.5\n", "value: hi"),
            Some((RuleId::Type, "configuration.schema[0].minLength")),
        ),
        (
            "root not a mapping",
            "- a\n- b\n".to_owned(),
            Some((RuleId::Type, "$")),
        ),
        (
            "empty document",
            String::new(),
            Some((RuleId::Type, "$")),
        ),
    ]);
}

#[test]
fn rule_pattern() {
    run(&[
        ("id ok", doc(&[("id: hello-world", "id: a-1")]), None),
        (
            "id upper",
            doc(&[("id: hello-world", "id: Hello")]),
            Some((RuleId::Pattern, "id")),
        ),
        (
            "id underscore",
            doc(&[("id: hello-world", "id: a_b")]),
            Some((RuleId::Pattern, "id")),
        ),
        (
            "id period",
            doc(&[("id: hello-world", "id: a.b")]),
            Some((RuleId::Pattern, "id")),
        ),
        (
            "id too long",
            doc(&[("id: hello-world", &format!("id: {}", "a".repeat(201)))]),
            Some((RuleId::Pattern, "id")),
        ),
        (
            "id empty",
            doc(&[("id: hello-world", "id: \"\"")]),
            Some((RuleId::Pattern, "id")),
        ),
        (
            "profile type",
            doc(&[("type: compose", "type: docker")]),
            Some((RuleId::Pattern, "deploymentProfiles[0].type")),
        ),
        (
            "memory",
            doc(&[(
                "    components:",
                "    requiredResources:\n      memory: 1GB\n    components:",
            )]),
            Some((
                RuleId::Pattern,
                "deploymentProfiles[0].requiredResources.memory",
            )),
        ),
        (
            "memory Ti not allowed",
            doc(&[(
                "    components:",
                "    requiredResources:\n      memory: 1Ti\n    components:",
            )]),
            Some((
                RuleId::Pattern,
                "deploymentProfiles[0].requiredResources.memory",
            )),
        ),
        (
            "storage Ti allowed",
            doc(&[(
                "    components:",
                "    requiredResources:\n      storage: 1Ti\n      memory: 64Ki\n    components:",
            )]),
            None,
        ),
        (
            "storage",
            doc(&[(
                "    components:",
                "    requiredResources:\n      storage: 10G\n    components:",
            )]),
            Some((
                RuleId::Pattern,
                "deploymentProfiles[0].requiredResources.storage",
            )),
        ),
        (
            "email",
            doc(&[(
                "    organization:",
                "    author:\n      - email: nobody\n    organization:",
            )]),
            Some((RuleId::Pattern, "metadata.catalog.author[0].email")),
        ),
        (
            "component name",
            doc(&[
                ("      - name: hello", "      - name: Hello_World"),
                ("components: [hello]", "components: [Hello_World]"),
            ]),
            Some((RuleId::Pattern, "deploymentProfiles[0].components[0].name")),
        ),
    ]);
}

#[test]
fn rule_equals() {
    run(&[
        (
            "kind",
            doc(&[("kind: ApplicationDescription", "kind: App")]),
            Some((RuleId::Equals, "kind")),
        ),
        (
            "kind case",
            doc(&[(
                "kind: ApplicationDescription",
                "kind: applicationdescription",
            )]),
            Some((RuleId::Equals, "kind")),
        ),
        (
            "parameter name equal to key",
            doc(&[("    value: hi", "    name: greeting\n    value: hi")]),
            None,
        ),
        (
            "parameter name differs from key",
            doc(&[("    value: hi", "    name: other\n    value: hi")]),
            Some((RuleId::Equals, "parameters.greeting.name")),
        ),
    ]);
}

#[test]
fn rule_enum() {
    let rr = |body: &str| {
        doc(&[(
            "    components:",
            &format!("    requiredResources:\n{body}    components:"),
        )])
    };
    run(&[
        ("arch ok", rr("      cpu:\n        cores: 1\n        architectures: [amd64, arm64, arm, riscv64, other]\n"), None),
        (
            "arch",
            rr("      cpu:\n        cores: 1\n        architectures: [x86]\n"),
            Some((RuleId::Enum, "deploymentProfiles[0].requiredResources.cpu.architectures[0]")),
        ),
        ("peripheral ok", rr("      peripherals:\n        - type: speaker\n"), None),
        (
            "peripheral",
            rr("      peripherals:\n        - type: keyboard\n"),
            Some((RuleId::Enum, "deploymentProfiles[0].requiredResources.peripherals[0].type")),
        ),
        ("interface ok", rr("      interfaces:\n        - type: canbus\n"), None),
        (
            "interface",
            rr("      interfaces:\n        - type: serial\n"),
            Some((RuleId::Enum, "deploymentProfiles[0].requiredResources.interfaces[0].type")),
        ),
        (
            "interface case",
            rr("      interfaces:\n        - type: WiFi\n"),
            Some((RuleId::Enum, "deploymentProfiles[0].requiredResources.interfaces[0].type")),
        ),
        (
            "dataType",
            schema_doc("    - name: text\n      dataType: float\n", "value: hi"),
            Some((RuleId::Enum, "configuration.schema[0].dataType")),
        ),
    ]);
}

#[test]
fn rule_unknown_field_and_extensions() {
    run(&[
        (
            "root extension",
            doc(&[(
                "id: hello-world",
                "id: hello-world\nx-acme-extensions:\n  a: 1",
            )]),
            None,
        ),
        (
            "profile extension",
            doc(&[(
                "    id: hello-compose",
                "    id: hello-compose\n    x-acme-extensions: {a: 1}",
            )]),
            None,
        ),
        (
            "component extension",
            doc(&[(
                "      - name: hello",
                "      - name: hello\n        x-acme-corp-extensions: {}",
            )]),
            None,
        ),
        (
            "root unknown",
            doc(&[("id: hello-world", "id: hello-world\nfoo: 1")]),
            Some((RuleId::UnknownField, "foo")),
        ),
        (
            "extension key on Metadata is unknown",
            doc(&[(
                "  name: Hello World",
                "  name: Hello World\n  x-acme-extensions: {a: 1}",
            )]),
            Some((RuleId::UnknownField, "metadata.x-acme-extensions")),
        ),
        (
            "malformed extension key",
            doc(&[(
                "id: hello-world",
                "id: hello-world\nx-Acme-extensions: {a: 1}",
            )]),
            Some((RuleId::UnknownField, "x-Acme-extensions")),
        ),
        (
            "old metadata.id",
            doc(&[("  name: Hello World", "  name: Hello World\n  id: hello")]),
            Some((RuleId::UnknownField, "metadata.id")),
        ),
        (
            "component properties unknown",
            doc(&[("revision: 0.1.0\n", "revision: 0.1.0\n          chart: x\n")]),
            Some((
                RuleId::UnknownField,
                "deploymentProfiles[0].components[0].properties.chart",
            )),
        ),
        (
            "root extension not mapping",
            doc(&[("id: hello-world", "id: hello-world\nx-acme-extensions: 5")]),
            Some((RuleId::ExtensionValue, "x-acme-extensions")),
        ),
        (
            "profile extension list",
            doc(&[(
                "    id: hello-compose",
                "    id: hello-compose\n    x-acme-extensions: [a]",
            )]),
            Some((
                RuleId::ExtensionValue,
                "deploymentProfiles[0].x-acme-extensions",
            )),
        ),
        (
            "component extension null",
            doc(&[(
                "      - name: hello",
                "      - name: hello\n        x-acme-extensions:",
            )]),
            Some((
                RuleId::ExtensionValue,
                "deploymentProfiles[0].components[0].x-acme-extensions",
            )),
        ),
    ]);
}

#[test]
fn rule_unique() {
    let second_profile = concat!(
        "  - type: helm\n",
        "    id: hello-compose\n",
        "    components:\n",
        "      - name: hello\n",
        "        properties: {}\n",
        "parameters:"
    );
    let dup_component = "      - name: hello\n        properties: {}\nparameters:";
    run(&[
        (
            "same component in two profiles is fine",
            doc(&[(
                "parameters:",
                &second_profile.replace("id: hello-compose", "id: hello-helm"),
            )]),
            None,
        ),
        (
            "profile ids",
            doc(&[("parameters:", second_profile)]),
            Some((RuleId::Unique, "deploymentProfiles[1].id")),
        ),
        (
            "component names in a profile",
            doc(&[("parameters:", dup_component)]),
            Some((RuleId::Unique, "deploymentProfiles[0].components[1].name")),
        ),
        (
            "schema names",
            doc(&[(
                "      dataType: string\n",
                "      dataType: string\n    - name: text\n      dataType: integer\n",
            )]),
            Some((RuleId::Unique, "configuration.schema[1].name")),
        ),
    ]);
}

#[test]
fn rule_xref() {
    run(&[
        (
            "target component",
            doc(&[("components: [hello]", "components: [hello, nope]")]),
            Some((
                RuleId::XrefTargetComponent,
                "parameters.greeting.targets[0].components[1]",
            )),
        ),
        (
            "setting parameter",
            doc(&[("- parameter: greeting", "- parameter: greting")]),
            Some((
                RuleId::XrefSettingParameter,
                "configuration.sections[0].settings[0].parameter",
            )),
        ),
        (
            "setting schema",
            doc(&[("schema: text", "schema: txt")]),
            Some((
                RuleId::XrefSettingSchema,
                "configuration.sections[0].settings[0].schema",
            )),
        ),
    ]);
}

#[test]
fn rule_default_value() {
    let path = "parameters.greeting.value";
    let dv = Some((RuleId::DefaultValue, path));
    let s = |body: &str| format!("    - name: text\n{body}");
    run(&[
        ("string ok", schema_doc(&s("      dataType: string\n"), "value: hi"), None),
        ("string got int", schema_doc(&s("      dataType: string\n"), "value: 5"), dv),
        ("minLength ok", schema_doc(&s("      dataType: string\n      minLength: 2\n"), "value: hi"), None),
        ("minLength", schema_doc(&s("      dataType: string\n      minLength: 3\n"), "value: hi"), dv),
        ("maxLength", schema_doc(&s("      dataType: string\n      maxLength: 1\n"), "value: hi"), dv),
        ("maxLength counts chars", schema_doc(&s("      dataType: string\n      maxLength: 2\n"), "value: \"éé\""), None),
        ("regex ok", schema_doc(&s("      dataType: string\n      regexMatch: ^h\n"), "value: hi"), None),
        ("regex", schema_doc(&s("      dataType: string\n      regexMatch: ^x\n"), "value: hi"), dv),
        ("allowEmpty false", schema_doc(&s("      dataType: string\n      allowEmpty: false\n"), "value: \"\""), dv),
        ("allowEmpty true", schema_doc(&s("      dataType: string\n      allowEmpty: true\n"), "value: \"\""), None),
        ("integer ok", schema_doc(&s("      dataType: integer\n      minValue: 1\n      maxValue: 10\n"), "value: 5"), None),
        ("integer got double", schema_doc(&s("      dataType: integer\n"), "value: 5.5"), dv),
        ("integer got string", schema_doc(&s("      dataType: integer\n"), "value: \"5\""), dv),
        ("minValue", schema_doc(&s("      dataType: integer\n      minValue: 10\n"), "value: 5"), dv),
        ("maxValue", schema_doc(&s("      dataType: integer\n      maxValue: 1\n"), "value: 5"), dv),
        ("double accepts int", schema_doc(&s("      dataType: double\n"), "value: 5"), None),
        ("double range", schema_doc(&s("      dataType: double\n      maxValue: 0.5\n"), "value: 0.75"), dv),
        ("precision ok", schema_doc(&s("      dataType: double\n      minPrecision: 2\n      maxPrecision: 2\n"), "value: 1.50"), None),
        ("minPrecision", schema_doc(&s("      dataType: double\n      minPrecision: 2\n"), "value: 1.5"), dv),
        ("maxPrecision", schema_doc(&s("      dataType: double\n      maxPrecision: 1\n"), "value: 1.25"), dv),
        ("boolean ok", schema_doc(&s("      dataType: boolean\n"), "value: true"), None),
        ("boolean got string", schema_doc(&s("      dataType: boolean\n"), "value: \"true\""), dv),
        ("options ok", schema_doc(&s("      dataType: string\n      options: [hi, ho]\n"), "value: hi"), None),
        ("options", schema_doc(&s("      dataType: string\n      options: [ho]\n"), "value: hi"), dv),
        ("integer options", schema_doc(&s("      dataType: integer\n      options: [1, 2]\n"), "value: 2"), None),
        (
            "multiselect ok",
            schema_doc(&s("      dataType: array[string]\n      multiselect: true\n      options: [hi, ho]\n"), "value: [hi, ho]"),
            None,
        ),
        (
            "multiselect element",
            schema_doc(&s("      dataType: array[string]\n      multiselect: true\n      options: [hi]\n"), "value: [hi, ho]"),
            dv,
        ),
        ("array got scalar", schema_doc(&s("      dataType: array[integer]\n"), "value: 1"), dv),
        ("array ok", schema_doc(&s("      dataType: array[integer]\n      maxValue: 3\n"), "value: [1, 2]"), None),
        ("array element range", schema_doc(&s("      dataType: array[integer]\n      maxValue: 3\n"), "value: [1, 5]"), dv),
        ("scalar got array", schema_doc(&s("      dataType: string\n"), "value: [hi]"), dv),
        ("no default is fine", schema_doc(&s("      dataType: integer\n      minValue: 10\n"), "value: ~"), None),
    ]);
}

#[test]
fn rule_schema_rule_and_regex() {
    let s = |body: &str| schema_doc(&format!("    - name: text\n{body}"), "value: ~");
    run(&[
        ("length on integer", s("      dataType: integer\n      minLength: 1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minLength"))),
        ("precision on integer", s("      dataType: integer\n      maxPrecision: 1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].maxPrecision"))),
        ("value on string", s("      dataType: string\n      minValue: 1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minValue"))),
        ("regex on select", s("      dataType: string\n      options: [a]\n      regexMatch: a\n"), Some((RuleId::SchemaRule, "configuration.schema[0].regexMatch"))),
        ("min above max", s("      dataType: integer\n      minValue: 5\n      maxValue: 1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minValue"))),
        ("length min above max", s("      dataType: string\n      minLength: 5\n      maxLength: 1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minLength"))),
        ("negative length", s("      dataType: string\n      minLength: -1\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minLength"))),
        ("float bound on integer", s("      dataType: integer\n      minValue: 0.5\n"), Some((RuleId::SchemaRule, "configuration.schema[0].minValue"))),
        ("option of wrong type", s("      dataType: integer\n      options: [1, two]\n"), Some((RuleId::SchemaRule, "configuration.schema[0].options[1]"))),
        ("double bounds ok", s("      dataType: double\n      minValue: 0\n      maxValue: 0.5\n      minPrecision: 0\n"), None),
        ("regex invalid", s("      dataType: string\n      regexMatch: \"(\"\n"), Some((RuleId::Regex, "configuration.schema[0].regexMatch"))),
        (
            "regex too big",
            s("      dataType: string\n      regexMatch: \"(\\\\w{100}){100}\"\n"),
            Some((RuleId::Regex, "configuration.schema[0].regexMatch")),
        ),
    ]);
}

#[test]
fn violations_carry_value_expected_location_and_message() {
    let c = check(&doc(&[("id: hello-world", "id: Bad_Id")]));
    let v = &c.report.violations()[0];
    assert_eq!(v.rule, RuleId::Pattern);
    assert_eq!(v.value, Some(serde_json::json!("Bad_Id")));
    assert_eq!(v.expected, "a match of ^[a-z0-9-]{1,200}$");
    assert_eq!(v.location.map(|l| (l.line, l.column)), Some((3, 5)));
    assert!(
        v.message.starts_with("margo.pattern at id: got \"Bad_Id\""),
        "{}",
        v.message
    );
}

#[test]
fn accessors_work_on_invalid_documents() {
    let c = check(&doc(&[
        ("id: hello-world", "id: BAD"),
        (
            "  catalog:\n",
            "  catalog:\n    application:\n      icon: ./i.png\n",
        ),
    ]));
    assert!(!c.is_valid());
    assert_eq!(c.version(), Some("0.1.0"));
    assert_eq!(c.resources().0.len(), 1);
    assert!(c.document_json().is_some());
}

#[test]
fn fixture_not_a_mapping_is_a_type_violation_at_root() {
    let c = check(include_str!(
        "../../../tests/fixtures/margo/invalid-not-mapping.yaml"
    ));
    assert_eq!(
        rules_at(&c),
        vec![("margo.type".to_owned(), "$".to_owned())]
    );
}

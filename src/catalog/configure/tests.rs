use super::*;
use crate::margo::validate::{validate_description, DescriptionLimits};

const LINE_MONITOR: &str = include_str!("../../../examples/packages/line-monitor/margo.yaml");

fn desc() -> ApplicationDescription {
    let check = validate_description(LINE_MONITOR.as_bytes(), &DescriptionLimits::default());
    match check.model {
        Some(m) => m,
        None => panic!("example invalid: {:?}", check.report),
    }
}

fn run(body: &str) -> ConfigOutcome {
    let input = match parse_body(body.as_bytes()) {
        Ok(i) => i,
        Err(e) => panic!("{body}: {e}"),
    };
    validate(&desc(), &input, &RegexLimits::default())
}

/// Minimal valid input: the one setting without default or allowEmpty.
const BASE: &str = r#""lineCode": "AB123""#;

fn with(extra: &str) -> String {
    if extra.is_empty() {
        format!("{{{BASE}}}")
    } else {
        format!("{{{BASE}, {extra}}}")
    }
}

fn rules_of(o: &ConfigOutcome) -> Vec<(String, ConfigRule)> {
    o.violations
        .iter()
        .map(|v| (v.parameter.clone(), v.rule))
        .collect()
}

#[test]
fn defaults_plus_required_value_are_valid() {
    let o = run(&with(""));
    assert!(o.valid, "{:?}", o.violations);
}

#[test]
fn every_rule_one_passing_and_one_failing_value() {
    // (rule, parameter, passing JSON value, failing JSON value)
    let cases: &[(ConfigRule, &str, &str, &str)] = &[
        (ConfigRule::DataType, "pollSeconds", "60", r#""60""#),
        (ConfigRule::DataType, "notify", "false", r#""yes""#),
        (ConfigRule::MinLength, "siteName", r#""Abc""#, r#""Ab""#),
        (
            ConfigRule::MaxLength,
            "siteName",
            r#""Plant 12""#,
            r#""0123456789012345678901234567890123456789x""#,
        ),
        (ConfigRule::MinValue, "pollSeconds", "5", "4"),
        (ConfigRule::MaxValue, "pollSeconds", "3600", "3601"),
        (ConfigRule::MinValue, "threshold", "0.0", "-0.5"),
        (ConfigRule::MaxValue, "threshold", "1.000", "1.5"),
        (ConfigRule::MinPrecision, "threshold", "0.5", "1"),
        (ConfigRule::MaxPrecision, "threshold", "0.125", "0.1255"),
        (ConfigRule::Options, "logLevel", r#""warn""#, r#""verbose""#),
        (
            ConfigRule::Options,
            "channels",
            r#"["sms", "webhook"]"#,
            r#"["sms", "pager"]"#,
        ),
        (
            ConfigRule::Multiselect,
            "logLevel",
            r#""info""#,
            r#"["info"]"#,
        ),
        (
            ConfigRule::Multiselect,
            "channels",
            r#"["sms"]"#,
            r#""sms""#,
        ),
        (ConfigRule::AllowEmpty, "siteName", r#""Plant""#, r#""""#),
        (ConfigRule::AllowEmpty, "channels", r#"["email"]"#, "[]"),
        (ConfigRule::Required, "siteName", r#""Plant""#, "null"),
    ];
    for (rule, param, good, bad) in cases {
        let ok = run(&with(&format!("\"{param}\": {good}")));
        assert!(ok.valid, "{rule:?} {param}={good}: {:?}", ok.violations);
        let ko = run(&with(&format!("\"{param}\": {bad}")));
        assert_eq!(
            rules_of(&ko),
            vec![((*param).to_owned(), *rule)],
            "{rule:?} {param}={bad}"
        );
        assert!(!ko.valid);
    }
}

#[test]
fn regex_match_passes_and_fails_with_setting_name() {
    let ok = run(r#"{"lineCode": "ZZ999"}"#);
    assert!(ok.valid, "{:?}", ok.violations);
    let ko = run(r#"{"lineCode": "ab12"}"#);
    assert_eq!(ko.violations.len(), 1);
    let v = &ko.violations[0];
    assert_eq!(v.rule, ConfigRule::RegexMatch);
    assert_eq!(v.parameter, "lineCode");
    assert_eq!(v.setting.as_deref(), Some("Line code"));
    assert!(v.message.contains("Line code"), "{}", v.message);
    assert!(v.message.contains("^[A-Z]{2}[0-9]{3}$"), "{}", v.message);
}

#[test]
fn required_setting_without_default_is_reported() {
    let o = run("{}");
    assert_eq!(
        rules_of(&o),
        vec![("lineCode".into(), ConfigRule::Required)]
    );
}

#[test]
fn allow_empty_true_accepts_empty_and_absent() {
    assert!(run(&with(r#""operatorNote": """#)).valid);
    assert!(run(&with("")).valid);
}

#[test]
fn unknown_parameters_are_refused() {
    let o = run(&with(r#""rootPassword": "x""#));
    assert_eq!(
        rules_of(&o),
        vec![("rootPassword".into(), ConfigRule::UnknownParameter)]
    );
}

#[test]
fn every_violation_is_reported_not_just_the_first() {
    let o = run(r#"{"lineCode": "x", "pollSeconds": 1, "threshold": 7.5, "logLevel": "loud"}"#);
    let rules = rules_of(&o);
    assert_eq!(rules.len(), 4, "{rules:?}");
}

#[test]
fn resolved_targets_per_component() {
    let o = run(&with(r#""pollSeconds": 90, "channels": ["sms", "email"]"#));
    assert!(o.valid);
    let api = o
        .resolved
        .iter()
        .find(|c| c.component == "monitor-api")
        .map(|c| c.targets.clone())
        .unwrap_or_default();
    let get = |ptr: &str| {
        api.iter()
            .find(|t| t.pointer == ptr)
            .map(|t| t.value.clone())
    };
    assert_eq!(get("polling.intervalSeconds"), Some(serde_json::json!(90)));
    assert_eq!(get("line.code"), Some(serde_json::json!("AB123")));
    assert_eq!(get("site.name"), Some(serde_json::json!("Plant 1")));
    let store = o
        .resolved
        .iter()
        .find(|c| c.component == "alarm-store")
        .map(|c| c.targets.clone())
        .unwrap_or_default();
    assert!(store
        .iter()
        .any(|t| t.pointer == "alarms.channels" && t.value == serde_json::json!(["sms", "email"])));
}

#[test]
fn compose_targets_are_environment_strings() {
    let v = InputValue::Array(vec![
        InputValue::String("a".into()),
        InputValue::String("b".into()),
    ]);
    assert_eq!(v.to_env(), "a,b");
    assert_eq!(InputValue::Bool(true).to_env(), "true");
    assert_eq!(InputValue::Int(7).to_env(), "7");
}

#[test]
fn body_limits_and_shapes() {
    assert_eq!(
        parse_body(&vec![b' '; MAX_BODY_BYTES + 1]),
        Err(BodyError::TooLarge)
    );
    assert!(matches!(parse_body(b"[1]"), Err(BodyError::NotAnObject(_))));
    assert!(matches!(parse_body(b"{"), Err(BodyError::NotAnObject(_))));
    let nested = parse_body(br#"{"a": [[1]], "b": {"c": 1}}"#);
    let Ok(nested) = nested else {
        panic!("{nested:?}")
    };
    assert_eq!(
        nested.get("a"),
        Some(&InputValue::Array(vec![InputValue::Object]))
    );
    assert_eq!(nested.get("b"), Some(&InputValue::Object));
    let o = run(&with(r#""siteName": {"x": 1}"#));
    assert_eq!(
        rules_of(&o),
        vec![("siteName".into(), ConfigRule::DataType)]
    );
    let long = "x".repeat(MAX_VALUE_CHARS + 1);
    let o = run(&with(&format!(r#""operatorNote": "{long}""#)));
    assert_eq!(
        rules_of(&o),
        vec![("operatorNote".into(), ConfigRule::MaxLength)]
    );
}

#[test]
fn decimals_as_written() {
    let cases = [
        ("1.50", 2),
        ("-0.125", 3),
        ("1e-3", 3),
        ("1.5e2", 0),
        ("12", 0),
    ];
    for (t, d) in cases {
        assert_eq!(float_decimals(t), d, "{t}");
    }
    let parsed = parse_body(br#"{"x": 1.50}"#).unwrap_or_default();
    assert_eq!(
        parsed.get("x"),
        Some(&InputValue::Double {
            value: 1.5,
            decimals: 2
        })
    );
}

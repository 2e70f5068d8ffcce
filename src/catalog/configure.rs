//! The parameter step of the specification, served by the registry: user-supplied values
//! checked against `configuration.schema`, and the values a WOS would inject per
//! component (Helm values pointer or Compose environment variable).
//!
//! Interpretations (the schema text is ambiguous in places; these follow the margo
//! validator in `crate::margo::validate` so push-time and form-time agree):
//! - every setting needs a value (the user's, else the parameter's default) unless its
//!   schema says `allowEmpty: true`: that is what "required settings" means here;
//! - an empty string or empty array counts as empty;
//! - `regexMatch` has search semantics (anchor with `^…$`), compiled within
//!   [`RegexLimits`]; strings longer than [`MAX_VALUE_CHARS`] are refused before any
//!   rule runs;
//! - precision is the number of decimal places as written in the request (`1.50` has
//!   two), which is why the body is read with its raw number text;
//! - a value for a parameter no setting shows is refused: nothing says how to check it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::margo::model::{
    ApplicationDescription, DataType, ParameterValue, ProfileType, ScalarValue, Schema,
    SchemaRules, Setting,
};
use crate::margo::validate::{compile_untrusted_regex, RegexLimits};

/// Largest request body of `configuration:validate`.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest string value checked (characters).
pub const MAX_VALUE_CHARS: usize = 16 * 1024;
/// Most elements of one array value.
pub const MAX_ARRAY_LEN: usize = 1024;

/// The rule a value broke; named as in the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ConfigRule {
    Required,
    AllowEmpty,
    DataType,
    MinLength,
    MaxLength,
    RegexMatch,
    MinValue,
    MaxValue,
    MinPrecision,
    MaxPrecision,
    Options,
    Multiselect,
    UnknownParameter,
    /// The schema itself cannot be applied (e.g. its `regexMatch` is over the limits).
    Schema,
}

/// One broken rule for one setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigViolation {
    /// The parameter name (the key in the request).
    pub parameter: String,
    /// The setting's display name, when a setting shows the parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    pub rule: ConfigRule,
    pub message: String,
}

/// Why the request body is not a set of values at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body must be a JSON object of parameter names to values: {0}")]
    NotAnObject(String),
}

/// A submitted value, with the decimal places of numbers as written.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValue {
    Null,
    Bool(bool),
    Int(i64),
    /// A number with a fraction or exponent (or an integer beyond i64).
    Double {
        value: f64,
        decimals: u32,
    },
    String(String),
    Array(Vec<InputValue>),
    /// An object: never a valid parameter value.
    Object,
}

impl InputValue {
    fn parse_raw(raw: &RawValue, depth: u8) -> Result<Self, String> {
        let text = raw.get().trim();
        match text.as_bytes().first() {
            Some(b'[') if depth == 0 => {
                let items: Vec<Box<RawValue>> =
                    serde_json::from_str(text).map_err(|e| e.to_string())?;
                if items.len() > MAX_ARRAY_LEN {
                    return Err(format!("arrays have at most {MAX_ARRAY_LEN} elements"));
                }
                items
                    .iter()
                    .map(|i| Self::parse_raw(i, depth + 1))
                    .collect::<Result<Vec<_>, _>>()
                    .map(InputValue::Array)
            }
            Some(b'[') | Some(b'{') => Ok(InputValue::Object),
            Some(b'-' | b'0'..=b'9') => Ok(number(text)),
            _ => match serde_json::from_str::<Value>(text).map_err(|e| e.to_string())? {
                Value::Null => Ok(InputValue::Null),
                Value::Bool(b) => Ok(InputValue::Bool(b)),
                Value::String(s) => Ok(InputValue::String(s)),
                _ => Ok(InputValue::Object),
            },
        }
    }

    fn from_default(v: &ParameterValue) -> Self {
        match v {
            ParameterValue::Boolean(b) => InputValue::Bool(*b),
            ParameterValue::Integer(i) => InputValue::Int(*i),
            ParameterValue::Double(d) => InputValue::Double {
                value: *d,
                decimals: float_decimals(&d.to_string()),
            },
            ParameterValue::String(s) => InputValue::String(s.clone()),
            ParameterValue::Array(items) => {
                InputValue::Array(items.iter().map(Self::from_scalar).collect())
            }
        }
    }

    fn from_scalar(v: &ScalarValue) -> Self {
        match v {
            ScalarValue::Boolean(b) => InputValue::Bool(*b),
            ScalarValue::Integer(i) => InputValue::Int(*i),
            ScalarValue::Double(d) => InputValue::Double {
                value: *d,
                decimals: float_decimals(&d.to_string()),
            },
            ScalarValue::String(s) => InputValue::String(s.clone()),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            InputValue::Null => true,
            InputValue::String(s) => s.is_empty(),
            InputValue::Array(a) => a.is_empty(),
            _ => false,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            InputValue::Int(i) => Some(*i as f64),
            InputValue::Double { value, .. } => Some(*value),
            _ => None,
        }
    }

    fn decimals(&self) -> Option<u32> {
        match self {
            InputValue::Int(_) => Some(0),
            InputValue::Double { decimals, .. } => Some(*decimals),
            _ => None,
        }
    }

    fn fits(&self, dt: DataType) -> bool {
        match (dt.element(), self) {
            (DataType::String, InputValue::String(_)) => true,
            (DataType::Integer, InputValue::Int(_)) => true,
            (DataType::Double, InputValue::Int(_)) => true,
            (DataType::Double, InputValue::Double { value, .. }) => value.is_finite(),
            (DataType::Boolean, InputValue::Bool(_)) => true,
            _ => false,
        }
    }

    /// The JSON a WOS would use (Helm values keep types).
    pub fn to_json(&self) -> Value {
        match self {
            InputValue::Null | InputValue::Object => Value::Null,
            InputValue::Bool(b) => Value::Bool(*b),
            InputValue::Int(i) => Value::from(*i),
            InputValue::Double { value, .. } => serde_json::Number::from_f64(*value)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            InputValue::String(s) => Value::String(s.clone()),
            InputValue::Array(a) => Value::Array(a.iter().map(Self::to_json).collect()),
        }
    }

    /// The text of a Compose environment variable: scalars as written, arrays
    /// comma-joined (environment variables are strings).
    pub fn to_env(&self) -> String {
        match self {
            InputValue::String(s) => s.clone(),
            InputValue::Array(a) => a.iter().map(Self::to_env).collect::<Vec<_>>().join(","),
            other => match other.to_json() {
                Value::Null => String::new(),
                v => v.to_string(),
            },
        }
    }
}

fn number(text: &str) -> InputValue {
    if let Ok(i) = text.parse::<i64>() {
        return InputValue::Int(i);
    }
    InputValue::Double {
        value: text.parse::<f64>().unwrap_or(f64::NAN),
        decimals: float_decimals(text),
    }
}

/// Decimal places as written: `1.50` has 2, `1e-3` has 3, `1.5e2` has 0.
pub fn float_decimals(text: &str) -> u32 {
    let t = text.trim_start_matches(['+', '-']);
    let (mantissa, exp) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().unwrap_or(0)),
        None => (t, 0),
    };
    let frac = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let d = i64::try_from(frac).unwrap_or(i64::MAX).saturating_sub(exp);
    u32::try_from(d.max(0)).unwrap_or(u32::MAX)
}

/// Parses the request body: a JSON object of parameter names to values.
pub fn parse_body(body: &[u8]) -> Result<BTreeMap<String, InputValue>, BodyError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(BodyError::TooLarge);
    }
    let raw: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(body).map_err(|e| BodyError::NotAnObject(e.to_string()))?;
    raw.into_iter()
        .map(|(k, v)| {
            InputValue::parse_raw(&v, 0)
                .map(|iv| (k.clone(), iv))
                .map_err(|e| BodyError::NotAnObject(format!("`{k}`: {e}")))
        })
        .collect()
}

/// One value a WOS injects into one component.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedTarget {
    pub parameter: String,
    /// Helm: the `--set` style dot path in `values.yaml`; Compose: the variable name.
    pub pointer: String,
    /// Helm: the typed value; Compose: the variable's text.
    pub value: Value,
}

/// Everything one component of one deployment profile receives.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedComponent {
    pub profile: String,
    pub profile_type: ProfileType,
    pub component: String,
    /// `helm`: values pointers; `compose`: environment variables.
    pub targets: Vec<ResolvedTarget>,
}

/// The answer of `configuration:validate`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigOutcome {
    pub valid: bool,
    pub violations: Vec<ConfigViolation>,
    /// The values a WOS would inject, per profile and component (also when invalid, for
    /// the values that passed, so a form can show them).
    pub resolved: Vec<ResolvedComponent>,
}

struct Check<'a> {
    parameter: &'a str,
    setting: Option<&'a Setting>,
    out: &'a mut Vec<ConfigViolation>,
}

impl Check<'_> {
    fn push(&mut self, rule: ConfigRule, message: String) {
        let who = match self.setting {
            Some(s) => format!("{:?} ({})", s.name, self.parameter),
            None => self.parameter.to_owned(),
        };
        self.out.push(ConfigViolation {
            parameter: self.parameter.to_owned(),
            setting: self.setting.map(|s| s.name.clone()),
            rule,
            message: format!("{who}: {message}"),
        });
    }
}

fn settings(desc: &ApplicationDescription) -> impl Iterator<Item = &Setting> {
    desc.configuration
        .iter()
        .flat_map(|c| c.sections.iter().flat_map(|s| s.settings.iter()))
}

fn schema_of<'a>(desc: &'a ApplicationDescription, name: &str) -> Option<&'a Schema> {
    desc.configuration
        .as_ref()?
        .schema
        .iter()
        .find(|s| s.name == name)
}

fn allow_empty(rules: &SchemaRules) -> bool {
    let a = match rules {
        SchemaRules::Text { allow_empty, .. }
        | SchemaRules::Boolean { allow_empty }
        | SchemaRules::Integer { allow_empty, .. }
        | SchemaRules::Double { allow_empty, .. }
        | SchemaRules::Select { allow_empty, .. } => *allow_empty,
    };
    a == Some(true)
}

fn same_option(v: &InputValue, o: &ScalarValue) -> bool {
    match (v, o) {
        (InputValue::String(a), ScalarValue::String(b)) => a == b,
        (InputValue::Bool(a), ScalarValue::Boolean(b)) => a == b,
        _ => match (v.as_f64(), InputValue::from_scalar(o).as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

fn show_options(options: &[ScalarValue]) -> String {
    options
        .iter()
        .map(|o| InputValue::from_scalar(o).to_json().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rules on one scalar element (array elements one by one).
fn check_element(v: &InputValue, schema: &Schema, limits: &RegexLimits, c: &mut Check<'_>) {
    if !v.fits(schema.data_type) {
        c.push(
            ConfigRule::DataType,
            format!("expected a {}", schema.data_type.element().as_str()),
        );
        return;
    }
    match &schema.rules {
        SchemaRules::Text {
            min_length,
            max_length,
            regex_match,
            ..
        } => {
            let InputValue::String(s) = v else { return };
            let len = s.chars().count() as u64;
            if let Some(min) = min_length.filter(|m| len < *m) {
                c.push(
                    ConfigRule::MinLength,
                    format!("at least {min} characters (got {len})"),
                );
            }
            if let Some(max) = max_length.filter(|m| len > *m) {
                c.push(
                    ConfigRule::MaxLength,
                    format!("at most {max} characters (got {len})"),
                );
            }
            if let Some(pattern) = regex_match {
                match compile_untrusted_regex(pattern, limits) {
                    Ok(re) if !re.is_match(s) => c.push(
                        ConfigRule::RegexMatch,
                        format!("must match the regular expression {pattern}"),
                    ),
                    Ok(_) => {}
                    Err(e) => c.push(
                        ConfigRule::Schema,
                        format!("the schema's regexMatch cannot be used ({e})"),
                    ),
                }
            }
        }
        SchemaRules::Integer {
            min_value,
            max_value,
            ..
        } => {
            let InputValue::Int(x) = v else { return };
            if let Some(min) = min_value.filter(|m| x < m) {
                c.push(ConfigRule::MinValue, format!("at least {min} (got {x})"));
            }
            if let Some(max) = max_value.filter(|m| x > m) {
                c.push(ConfigRule::MaxValue, format!("at most {max} (got {x})"));
            }
        }
        SchemaRules::Double {
            min_value,
            max_value,
            min_precision,
            max_precision,
            ..
        } => {
            let (Some(x), Some(d)) = (v.as_f64(), v.decimals()) else {
                return;
            };
            if let Some(min) = min_value.filter(|m| x < *m) {
                c.push(ConfigRule::MinValue, format!("at least {min} (got {x})"));
            }
            if let Some(max) = max_value.filter(|m| x > *m) {
                c.push(ConfigRule::MaxValue, format!("at most {max} (got {x})"));
            }
            if let Some(min) = min_precision.filter(|m| d < *m) {
                c.push(
                    ConfigRule::MinPrecision,
                    format!("at least {min} decimal places (got {d})"),
                );
            }
            if let Some(max) = max_precision.filter(|m| d > *m) {
                c.push(
                    ConfigRule::MaxPrecision,
                    format!("at most {max} decimal places (got {d})"),
                );
            }
        }
        SchemaRules::Select { options, .. } => {
            if !options.iter().any(|o| same_option(v, o)) {
                c.push(
                    ConfigRule::Options,
                    format!("one of the options {}", show_options(options)),
                );
            }
        }
        SchemaRules::Boolean { .. } => {}
    }
}

/// Checks one value (already known non-empty) against its schema.
fn check_value(v: &InputValue, schema: &Schema, limits: &RegexLimits, c: &mut Check<'_>) {
    if let InputValue::String(s) = v {
        if s.chars().count() > MAX_VALUE_CHARS {
            c.push(
                ConfigRule::MaxLength,
                format!("values are at most {MAX_VALUE_CHARS} characters"),
            );
            return;
        }
    }
    let multiselect = matches!(
        schema.rules,
        SchemaRules::Select {
            multiselect: Some(true),
            ..
        }
    );
    let wants_array = schema.data_type.is_array() || multiselect;
    match (v, wants_array) {
        (InputValue::Array(items), true) => {
            let before = c.out.len();
            for item in items {
                check_element(item, schema, limits, c);
            }
            // One entry per rule is enough for a form: collapse repeats.
            let mut seen = Vec::new();
            let mut k = before;
            while k < c.out.len() {
                if seen.contains(&c.out[k].rule) {
                    c.out.remove(k);
                } else {
                    seen.push(c.out[k].rule);
                    k += 1;
                }
            }
        }
        (InputValue::Array(_), false) => {
            let rule = if matches!(schema.rules, SchemaRules::Select { .. }) {
                ConfigRule::Multiselect
            } else {
                ConfigRule::DataType
            };
            c.push(
                rule,
                format!("expected a single {}", schema.data_type.as_str()),
            );
        }
        (_, true) => c.push(
            if multiselect {
                ConfigRule::Multiselect
            } else {
                ConfigRule::DataType
            },
            format!(
                "expected an array of {} (dataType {}{})",
                schema.data_type.element().as_str(),
                schema.data_type.as_str(),
                if multiselect { ", multiselect" } else { "" }
            ),
        ),
        (_, false) => check_element(v, schema, limits, c),
    }
}

/// Validates submitted values against the description and resolves the targets.
pub fn validate(
    desc: &ApplicationDescription,
    input: &BTreeMap<String, InputValue>,
    limits: &RegexLimits,
) -> ConfigOutcome {
    let mut violations = Vec::new();
    let mut accepted: BTreeMap<&str, InputValue> = BTreeMap::new();
    let shown: Vec<&Setting> = settings(desc).collect();

    for key in input.keys() {
        if !shown.iter().any(|s| &s.parameter == key) {
            Check {
                parameter: key,
                setting: None,
                out: &mut violations,
            }
            .push(
                ConfigRule::UnknownParameter,
                "no setting of this application takes this parameter".into(),
            );
        }
    }

    for setting in &shown {
        let mut c = Check {
            parameter: &setting.parameter,
            setting: Some(setting),
            out: &mut violations,
        };
        let Some(schema) = schema_of(desc, &setting.schema) else {
            c.push(
                ConfigRule::Schema,
                format!("schema {:?} is not defined", setting.schema),
            );
            continue;
        };
        let value = match input.get(&setting.parameter) {
            Some(v) => Some(v.clone()),
            None => desc
                .parameters
                .get(&setting.parameter)
                .and_then(|p| p.value.as_ref())
                .map(InputValue::from_default),
        };
        let empty_ok = allow_empty(&schema.rules);
        match value {
            None | Some(InputValue::Null) if !empty_ok => {
                c.push(
                    ConfigRule::Required,
                    "a value is required (the schema does not allow it empty)".into(),
                );
            }
            None | Some(InputValue::Null) => {}
            Some(v) if v.is_empty() => {
                if empty_ok {
                    accepted.insert(&setting.parameter, v);
                } else {
                    c.push(
                        ConfigRule::AllowEmpty,
                        "must not be empty (allowEmpty is not true)".into(),
                    );
                }
            }
            Some(v) => {
                let before = c.out.len();
                check_value(&v, schema, limits, &mut c);
                if c.out.len() == before {
                    accepted.insert(&setting.parameter, v);
                }
            }
        }
    }
    // Parameters without a setting still reach their components with their defaults.
    for (name, p) in &desc.parameters {
        if !shown.iter().any(|s| &s.parameter == name) {
            if let Some(v) = &p.value {
                accepted.insert(name, InputValue::from_default(v));
            }
        }
    }

    ConfigOutcome {
        valid: violations.is_empty(),
        violations,
        resolved: resolve(desc, &accepted),
    }
}

/// For every profile and component, the pointers its parameters target and the value.
fn resolve(
    desc: &ApplicationDescription,
    values: &BTreeMap<&str, InputValue>,
) -> Vec<ResolvedComponent> {
    let mut out = Vec::new();
    for profile in &desc.deployment_profiles {
        for component in &profile.components {
            let mut targets = Vec::new();
            for (name, p) in &desc.parameters {
                let Some(v) = values.get(name.as_str()) else {
                    continue;
                };
                for t in &p.targets {
                    if t.components.iter().any(|c| c == &component.name) {
                        targets.push(ResolvedTarget {
                            parameter: name.clone(),
                            pointer: t.pointer.clone(),
                            value: match profile.profile_type {
                                ProfileType::Helm => v.to_json(),
                                ProfileType::Compose => Value::String(v.to_env()),
                            },
                        });
                    }
                }
            }
            out.push(ResolvedComponent {
                profile: profile.id.clone(),
                profile_type: profile.profile_type,
                component: component.name.clone(),
                targets,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;

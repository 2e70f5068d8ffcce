//! Typed model of the Margo Application Description (`margo.yaml`).
//!
//! A typed view, not a second statement of the schema: what a `margo.yaml` may contain
//! is `validate/shape.rs`'s table alone (the validator decides), and a test
//! (`validate/linkml_conformance.rs`) holds that table against
//! `application-description.linkml.yaml` and this model against the table (every field
//! of every class read and written back, every enum value known), so that the model can
//! never refuse a description the validator accepted. It uses the schema's camelCase
//! names. The model is built only from a document the validator has
//! accepted, so it encodes the schema's closed sets as enums (kind, profile type,
//! architectures, peripherals, interfaces, data types, schema classes) instead of
//! strings: code that holds an [`ApplicationDescription`] need not re-check them.
//!
//! The LinkML subclasses that only restrict a slot (`HelmDeploymentProfile`,
//! `ComposeDeploymentProfile`, `HelmComponent`, `ComposeComponent`) are represented by
//! [`ProfileType`] on one [`DeploymentProfile`] struct and type aliases: they add no
//! fields, and one struct keeps serialisation identical to the YAML.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Vendor extensions: `x-<name>-extensions` keys, each a mapping whose content is the
/// vendor's business (kept as JSON so it round-trips untouched).
pub type Extensions = BTreeMap<String, serde_json::Map<String, serde_json::Value>>;

/// Root class `ApplicationDescription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationDescription {
    pub api_version: String,
    pub kind: Kind,
    /// `^[a-z0-9-]{1,200}$`.
    pub id: String,
    pub metadata: Metadata,
    pub deployment_profiles: Vec<DeploymentProfile>,
    /// `map[string]Parameter`; the key is the parameter's name (its identifier).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Parameter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Configuration>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `kind` has `equals_string: ApplicationDescription`: a one-value enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    ApplicationDescription,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub version: String,
    pub catalog: Catalog,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author: Vec<Author>,
    /// At least one.
    pub organization: Vec<Organization>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagline: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pattern `.*@[a-z0-9.-]*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// `DeploymentProfile` and its subclasses `HelmDeploymentProfile` /
/// `ComposeDeploymentProfile` (selected by `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentProfile {
    #[serde(rename = "type")]
    pub profile_type: ProfileType,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_resources: Option<RequiredResources>,
    pub components: Vec<Component>,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// Slot `type`, pattern `^(helm|compose)$`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    Helm,
    Compose,
}

impl ProfileType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileType::Helm => "helm",
            ProfileType::Compose => "compose",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Pattern `^[0-9]+(Mi|Gi|Ki)$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Pattern `^[0-9]+(Mi|Gi|Ki|Ti|Pi|Ei)$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peripherals: Vec<Peripheral>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<CommunicationInterface>,
}

/// Class `CPU`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cpu {
    pub cores: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<CpuArchitectureType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuArchitectureType {
    Amd64,
    Arm64,
    Arm,
    Riscv64,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peripheral {
    #[serde(rename = "type")]
    pub peripheral_type: PeripheralType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeripheralType {
    Gpu,
    Display,
    Camera,
    Microphone,
    Speaker,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommunicationInterface {
    #[serde(rename = "type")]
    pub interface_type: CommunicationInterfaceType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommunicationInterfaceType {
    Ethernet,
    Wifi,
    Cellular,
    Bluetooth,
    Usb,
    Canbus,
    Rs232,
    Other,
}

/// Class `Component` (and `HelmComponent` / `ComposeComponent`, which add nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    pub name: String,
    pub properties: ComponentProperties,
    #[serde(flatten)]
    pub extensions: Extensions,
}

/// `HelmComponent is_a Component`, no extra slots.
pub type HelmComponent = Component;
/// `ComposeComponent is_a Component`, no extra slots.
pub type ComposeComponent = Component;
/// `HelmDeploymentProfile is_a DeploymentProfile` with `type: helm`.
pub type HelmDeploymentProfile = DeploymentProfile;
/// `ComposeDeploymentProfile is_a DeploymentProfile` with `type: compose`.
pub type ComposeDeploymentProfile = DeploymentProfile;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// `##m##s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_location: Option<String>,
}

/// Class `Parameter`. Its identifier `name` is the key in `parameters`; a `name`
/// inside the value is accepted when equal to the key and is not kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ParameterValue>,
    pub targets: Vec<Target>,
}

/// `value: any_of [boolean, integer, double, string]`; arrays of those too, as the
/// slot's description accepts `array[...]` types ("support for arrays still TBD").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParameterValue {
    Boolean(bool),
    Integer(i64),
    Double(f64),
    String(String),
    Array(Vec<ScalarValue>),
}

/// One element of an array value or of `options`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScalarValue {
    Boolean(bool),
    Integer(i64),
    Double(f64),
    String(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub pointer: String,
    /// Names of components of the deployment profiles.
    pub components: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Configuration {
    pub sections: Vec<Section>,
    pub schema: Vec<Schema>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Section {
    pub name: String,
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    /// Name of a key of `parameters`.
    pub parameter: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// Name of a `configuration.schema` entry.
    pub schema: String,
}

/// `Schema.dataType`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    #[default]
    #[serde(rename = "string")]
    String,
    #[serde(rename = "integer")]
    Integer,
    #[serde(rename = "double")]
    Double,
    #[serde(rename = "boolean")]
    Boolean,
    #[serde(rename = "array[string]")]
    ArrayString,
    #[serde(rename = "array[integer]")]
    ArrayInteger,
    #[serde(rename = "array[double]")]
    ArrayDouble,
    #[serde(rename = "array[boolean]")]
    ArrayBoolean,
}

impl DataType {
    pub const ALL: [DataType; 8] = [
        DataType::String,
        DataType::Integer,
        DataType::Double,
        DataType::Boolean,
        DataType::ArrayString,
        DataType::ArrayInteger,
        DataType::ArrayDouble,
        DataType::ArrayBoolean,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Integer => "integer",
            DataType::Double => "double",
            DataType::Boolean => "boolean",
            DataType::ArrayString => "array[string]",
            DataType::ArrayInteger => "array[integer]",
            DataType::ArrayDouble => "array[double]",
            DataType::ArrayBoolean => "array[boolean]",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// The element type of an array type; a scalar type is its own element.
    pub fn element(self) -> DataType {
        match self {
            DataType::ArrayString => DataType::String,
            DataType::ArrayInteger => DataType::Integer,
            DataType::ArrayDouble => DataType::Double,
            DataType::ArrayBoolean => DataType::Boolean,
            scalar => scalar,
        }
    }

    pub fn is_array(self) -> bool {
        self.element() != self
    }
}

/// Class `Schema` with its subclass chosen by content: `options`/`multiselect` make a
/// `SelectValidationSchema`; otherwise the (element) dataType picks Text, Boolean,
/// NumericInteger or NumericDouble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SchemaRepr", into = "SchemaRepr")]
pub struct Schema {
    pub name: String,
    pub data_type: DataType,
    pub rules: SchemaRules,
}

/// The validation rules of one schema subclass: only the rules that class defines can
/// be present.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaRules {
    /// `TextValidationSchema`.
    Text {
        allow_empty: Option<bool>,
        min_length: Option<u64>,
        max_length: Option<u64>,
        regex_match: Option<String>,
    },
    /// `BooleanValidationSchema`.
    Boolean { allow_empty: Option<bool> },
    /// `NumericIntegerValidationSchema`.
    Integer {
        allow_empty: Option<bool>,
        min_value: Option<i64>,
        max_value: Option<i64>,
    },
    /// `NumericDoubleValidationSchema`.
    Double {
        allow_empty: Option<bool>,
        min_value: Option<f64>,
        max_value: Option<f64>,
        min_precision: Option<u32>,
        max_precision: Option<u32>,
    },
    /// `SelectValidationSchema`.
    Select {
        allow_empty: Option<bool>,
        multiselect: Option<bool>,
        options: Vec<ScalarValue>,
    },
}

/// The flat YAML shape of a schema entry; converted to [`Schema`] with the subclass
/// decided, which is where a rule that does not fit the class is refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchemaRepr {
    pub name: String,
    pub data_type: DataType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_empty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_match: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value: Option<serde_json::Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_precision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_precision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiselect: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<ScalarValue>>,
}

/// The subclass a schema entry belongs to (see [`Schema`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaClass {
    Text,
    Boolean,
    Integer,
    Double,
    Select,
}

impl SchemaClass {
    /// Decides the subclass from `dataType` and whether select slots are present.
    pub fn of(data_type: DataType, has_select_slots: bool) -> Self {
        if has_select_slots {
            return SchemaClass::Select;
        }
        match data_type.element() {
            DataType::Integer => SchemaClass::Integer,
            DataType::Double => SchemaClass::Double,
            DataType::Boolean => SchemaClass::Boolean,
            _ => SchemaClass::Text,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SchemaClass::Text => "TextValidationSchema",
            SchemaClass::Boolean => "BooleanValidationSchema",
            SchemaClass::Integer => "NumericIntegerValidationSchema",
            SchemaClass::Double => "NumericDoubleValidationSchema",
            SchemaClass::Select => "SelectValidationSchema",
        }
    }

    /// The slots (beyond `name`, `dataType`) this subclass defines.
    pub fn slots(self) -> &'static [&'static str] {
        match self {
            SchemaClass::Text => &["allowEmpty", "minLength", "maxLength", "regexMatch"],
            SchemaClass::Boolean => &["allowEmpty"],
            SchemaClass::Integer => &["allowEmpty", "minValue", "maxValue"],
            SchemaClass::Double => &[
                "allowEmpty",
                "minValue",
                "maxValue",
                "minPrecision",
                "maxPrecision",
            ],
            SchemaClass::Select => &["allowEmpty", "multiselect", "options"],
        }
    }
}

/// Why a flat schema entry does not form a valid subclass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaShapeError {
    #[error("`{slot}` is not a slot of {class}")]
    SlotNotInClass {
        slot: &'static str,
        class: &'static str,
    },
    #[error("`options` is required in SelectValidationSchema")]
    MissingOptions,
    #[error("`{slot}` must be an integer, got {value}")]
    NotAnInteger { slot: &'static str, value: String },
}

fn as_i64(
    slot: &'static str,
    v: Option<serde_json::Number>,
) -> Result<Option<i64>, SchemaShapeError> {
    match v {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| SchemaShapeError::NotAnInteger {
                slot,
                value: n.to_string(),
            }),
    }
}

impl TryFrom<SchemaRepr> for Schema {
    type Error = SchemaShapeError;

    fn try_from(r: SchemaRepr) -> Result<Self, Self::Error> {
        let select = r.options.is_some() || r.multiselect.is_some();
        let class = SchemaClass::of(r.data_type, select);
        let present: [(&'static str, bool); 10] = [
            ("minLength", r.min_length.is_some()),
            ("maxLength", r.max_length.is_some()),
            ("regexMatch", r.regex_match.is_some()),
            ("minValue", r.min_value.is_some()),
            ("maxValue", r.max_value.is_some()),
            ("minPrecision", r.min_precision.is_some()),
            ("maxPrecision", r.max_precision.is_some()),
            ("multiselect", r.multiselect.is_some()),
            ("options", r.options.is_some()),
            ("allowEmpty", r.allow_empty.is_some()),
        ];
        if let Some((slot, _)) = present
            .iter()
            .find(|(slot, there)| *there && !class.slots().contains(slot))
        {
            return Err(SchemaShapeError::SlotNotInClass {
                slot,
                class: class.name(),
            });
        }
        let rules = match class {
            SchemaClass::Text => SchemaRules::Text {
                allow_empty: r.allow_empty,
                min_length: r.min_length,
                max_length: r.max_length,
                regex_match: r.regex_match,
            },
            SchemaClass::Boolean => SchemaRules::Boolean {
                allow_empty: r.allow_empty,
            },
            SchemaClass::Integer => SchemaRules::Integer {
                allow_empty: r.allow_empty,
                min_value: as_i64("minValue", r.min_value)?,
                max_value: as_i64("maxValue", r.max_value)?,
            },
            SchemaClass::Double => SchemaRules::Double {
                allow_empty: r.allow_empty,
                min_value: r.min_value.as_ref().and_then(serde_json::Number::as_f64),
                max_value: r.max_value.as_ref().and_then(serde_json::Number::as_f64),
                min_precision: r.min_precision,
                max_precision: r.max_precision,
            },
            SchemaClass::Select => SchemaRules::Select {
                allow_empty: r.allow_empty,
                multiselect: r.multiselect,
                options: r.options.ok_or(SchemaShapeError::MissingOptions)?,
            },
        };
        Ok(Schema {
            name: r.name,
            data_type: r.data_type,
            rules,
        })
    }
}

impl From<Schema> for SchemaRepr {
    fn from(s: Schema) -> Self {
        let mut r = SchemaRepr {
            name: s.name,
            data_type: s.data_type,
            ..SchemaRepr::default()
        };
        match s.rules {
            SchemaRules::Text {
                allow_empty,
                min_length,
                max_length,
                regex_match,
            } => {
                r.allow_empty = allow_empty;
                r.min_length = min_length;
                r.max_length = max_length;
                r.regex_match = regex_match;
            }
            SchemaRules::Boolean { allow_empty } => r.allow_empty = allow_empty,
            SchemaRules::Integer {
                allow_empty,
                min_value,
                max_value,
            } => {
                r.allow_empty = allow_empty;
                r.min_value = min_value.map(serde_json::Number::from);
                r.max_value = max_value.map(serde_json::Number::from);
            }
            SchemaRules::Double {
                allow_empty,
                min_value,
                max_value,
                min_precision,
                max_precision,
            } => {
                r.allow_empty = allow_empty;
                r.min_value = min_value.and_then(serde_json::Number::from_f64);
                r.max_value = max_value.and_then(serde_json::Number::from_f64);
                r.min_precision = min_precision;
                r.max_precision = max_precision;
            }
            SchemaRules::Select {
                allow_empty,
                multiselect,
                options,
            } => {
                r.allow_empty = allow_empty;
                r.multiselect = multiselect;
                r.options = Some(options);
            }
        }
        r
    }
}

impl ApplicationDescription {
    /// All component names of all profiles, in document order (with repeats across
    /// profiles: the same component usually appears in a helm and a compose profile).
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.deployment_profiles
            .iter()
            .flat_map(|p| p.components.iter().map(|c| c.name.as_str()))
    }

    /// The application's catalog resources, for the manifest cross-check.
    pub fn resources(&self) -> crate::margo::resources::ResourceRefs {
        crate::margo::resources::ResourceRefs::from_metadata(
            self.metadata.catalog.application.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_class_follows_data_type_and_select_slots() {
        let cases = [
            (DataType::String, false, SchemaClass::Text),
            (DataType::Integer, false, SchemaClass::Integer),
            (DataType::Double, false, SchemaClass::Double),
            (DataType::Boolean, false, SchemaClass::Boolean),
            (DataType::ArrayInteger, false, SchemaClass::Integer),
            (DataType::String, true, SchemaClass::Select),
            (DataType::ArrayString, true, SchemaClass::Select),
        ];
        for (dt, sel, want) in cases {
            assert_eq!(SchemaClass::of(dt, sel), want, "{dt:?} select={sel}");
        }
    }

    #[test]
    fn schema_try_from_refuses_slots_of_other_classes() {
        let cases = [
            (
                SchemaRepr {
                    name: "a".into(),
                    data_type: DataType::Integer,
                    min_length: Some(1),
                    ..SchemaRepr::default()
                },
                Err(SchemaShapeError::SlotNotInClass {
                    slot: "minLength",
                    class: "NumericIntegerValidationSchema",
                }),
            ),
            (
                SchemaRepr {
                    name: "a".into(),
                    data_type: DataType::String,
                    multiselect: Some(true),
                    ..SchemaRepr::default()
                },
                Err(SchemaShapeError::MissingOptions),
            ),
            (
                SchemaRepr {
                    name: "a".into(),
                    data_type: DataType::Integer,
                    min_value: serde_json::Number::from_f64(1.5),
                    ..SchemaRepr::default()
                },
                Err(SchemaShapeError::NotAnInteger {
                    slot: "minValue",
                    value: "1.5".into(),
                }),
            ),
        ];
        for (repr, want) in cases {
            assert_eq!(Schema::try_from(repr.clone()).map(|_| ()), want, "{repr:?}");
        }
    }

    #[test]
    fn schema_round_trips_through_json() {
        let json = serde_json::json!({
            "name": "port", "dataType": "integer", "minValue": 1, "maxValue": 65535
        });
        let s: Result<Schema, _> = serde_json::from_value(json);
        let Ok(s) = s else {
            panic!("{s:?}");
        };
        assert_eq!(
            s.rules,
            SchemaRules::Integer {
                allow_empty: None,
                min_value: Some(1),
                max_value: Some(65535)
            }
        );
        let back = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(back["maxValue"], serde_json::json!(65535));
    }

    #[test]
    fn data_type_parse_and_element() {
        assert_eq!(
            DataType::parse("array[double]"),
            Some(DataType::ArrayDouble)
        );
        assert_eq!(DataType::parse("float"), None);
        assert_eq!(DataType::ArrayDouble.element(), DataType::Double);
        assert!(DataType::ArrayBoolean.is_array());
        assert!(!DataType::Boolean.is_array());
    }
}

//! Violations and reports: the one currency every check in this module pays in.
//!
//! A rule id is an enum rather than a free string so that the set of ids is closed
//! (metrics labels stay bounded, policies can rely on them) and so that a typo in a
//! check is a compile error instead of a silently new rule.

use std::fmt;

use serde::Serialize;

/// Stable identifiers of every rule this module checks.
///
/// The string form (`as_str`) is the public contract: it appears in OCI error bodies,
/// JSON output, metrics and policy inputs. Never rename a variant's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleId {
    // ---- margo.yaml (Application Description) ----
    /// The bytes are not a single, well-formed YAML document within the parse budgets.
    Yaml,
    /// A `required` slot of the schema is missing, null, or (multivalued) empty.
    Required,
    /// A value has the wrong YAML type for the slot's `range`.
    Type,
    /// A string does not match the slot's `pattern`.
    Pattern,
    /// A string differs from the slot's `equals_string`.
    Equals,
    /// A value is not one of the permissible values of an enum.
    Enum,
    /// A key that the schema does not define.
    UnknownField,
    /// A vendor extension (`x-<name>-extensions`) whose value is not a mapping.
    ExtensionValue,
    /// Two entries share an identifier that must be unique.
    Unique,
    /// A target's `components` entry names no component of any deployment profile.
    XrefTargetComponent,
    /// A setting's `parameter` names no parameter.
    XrefSettingParameter,
    /// A setting's `schema` names no schema entry.
    XrefSettingSchema,
    /// A parameter's default `value` does not satisfy the schema its setting references.
    DefaultValue,
    /// A schema entry is inconsistent: a rule that does not apply to its dataType,
    /// min above max, negative lengths, options of the wrong type.
    SchemaRule,
    /// A `regexMatch` does not compile within the size limits.
    Regex,

    // ---- package directory / resources ----
    /// A resource named in `metadata.catalog.application` is missing from the package.
    PackageResourceMissing,
    /// A resource path is not a safe relative path inside the package.
    PackageResourcePath,

    // ---- OCI manifests ----
    /// The manifest bytes are not a JSON object within the size limit.
    ManifestJson,
    /// `schemaVersion` is not 2.
    ManifestSchemaVersion,
    /// `mediaType` is not the OCI image manifest media type.
    ManifestMediaType,
    /// `artifactType` is not the one the route requires.
    ManifestArtifactType,
    /// `config` is not the OCI empty descriptor (or, for Helm, not the Helm config).
    ManifestConfig,
    /// A descriptor is malformed (mediaType, digest or size missing or invalid).
    ManifestDescriptor,
    /// Not exactly one description layer.
    ManifestDescriptionLayer,
    /// A layer media type that is not allowed in this kind of artifact.
    ManifestLayerMediaType,
    /// An `application/vnd.margo.app.*` layer kind this module does not know.
    ManifestLayerKind,
    /// A layer title missing, unsafe (absolute, `..`, empty) or duplicated.
    ManifestLayerTitle,
    /// A resource named by the description has no layer with that title.
    ManifestResourceMissing,
    /// A resource layer's media type kind differs from the kind the description names.
    ManifestResourceKind,
    /// A tag push whose tag is not `metadata.version` (nor an allowed extra tag).
    ManifestTag,
    /// An image index where the route does not allow one.
    ManifestIndexNotAllowed,
    /// A referrer (manifest with `subject`) where the route does not allow one.
    ManifestReferrerNotAllowed,
    /// A fetched blob's digest or size differs from its descriptor.
    BlobDigest,

    // ---- known deviations of the reference tooling (warnings on tolerant routes) ----
    /// A resource layer of kind `license` (margot's) instead of the spec's `licenseFile`.
    DeviationLicenseMediaType,
    /// A resource layer without the `org.margo.app.resource` annotation.
    DeviationResourceAnnotation,

    // ---- component manifests ----
    /// Not exactly one compose archive layer.
    ComponentLayer,
    /// A required component annotation is missing or wrong.
    ComponentAnnotation,
    /// `org.margo.component.version` is not SemVer 2.0 without `v`, or differs from the tag.
    ComponentVersion,

    // ---- compose archives ----
    /// Not a readable gzip-compressed tar stream.
    ComposeArchiveFormat,
    /// The decompressed or compressed size cap was exceeded.
    ComposeArchiveSize,
    /// The entry-count cap was exceeded.
    ComposeArchiveEntries,
    /// Not exactly one top-level directory.
    ComposeTopDir,
    /// `compose.yaml` missing in the top directory, or another compose file name present.
    ComposeFile,
    /// An absolute entry path.
    ComposeAbsolutePath,
    /// An entry path with a `..` component.
    ComposeParentDir,
    /// A symlink or hard link whose target leaves the top directory.
    ComposeLinkEscape,
    /// A device file, fifo or other special entry.
    ComposeSpecialFile,
    /// setuid, setgid or sticky bit set.
    ComposeModeBits,
}

impl RuleId {
    /// Every rule, for documentation, metrics pre-registration and tests.
    pub const ALL: &'static [RuleId] = &[
        RuleId::Yaml,
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
        RuleId::PackageResourceMissing,
        RuleId::PackageResourcePath,
        RuleId::ManifestJson,
        RuleId::ManifestSchemaVersion,
        RuleId::ManifestMediaType,
        RuleId::ManifestArtifactType,
        RuleId::ManifestConfig,
        RuleId::ManifestDescriptor,
        RuleId::ManifestDescriptionLayer,
        RuleId::ManifestLayerMediaType,
        RuleId::ManifestLayerKind,
        RuleId::ManifestLayerTitle,
        RuleId::ManifestResourceMissing,
        RuleId::ManifestResourceKind,
        RuleId::ManifestTag,
        RuleId::ManifestIndexNotAllowed,
        RuleId::ManifestReferrerNotAllowed,
        RuleId::BlobDigest,
        RuleId::DeviationLicenseMediaType,
        RuleId::DeviationResourceAnnotation,
        RuleId::ComponentLayer,
        RuleId::ComponentAnnotation,
        RuleId::ComponentVersion,
        RuleId::ComposeArchiveFormat,
        RuleId::ComposeArchiveSize,
        RuleId::ComposeArchiveEntries,
        RuleId::ComposeTopDir,
        RuleId::ComposeFile,
        RuleId::ComposeAbsolutePath,
        RuleId::ComposeParentDir,
        RuleId::ComposeLinkEscape,
        RuleId::ComposeSpecialFile,
        RuleId::ComposeModeBits,
    ];

    /// The stable, public spelling of the rule id.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::Yaml => "margo.yaml",
            RuleId::Required => "margo.required",
            RuleId::Type => "margo.type",
            RuleId::Pattern => "margo.pattern",
            RuleId::Equals => "margo.equals",
            RuleId::Enum => "margo.enum",
            RuleId::UnknownField => "margo.unknown-field",
            RuleId::ExtensionValue => "margo.extension-value",
            RuleId::Unique => "margo.unique",
            RuleId::XrefTargetComponent => "margo.xref.target-component",
            RuleId::XrefSettingParameter => "margo.xref.setting-parameter",
            RuleId::XrefSettingSchema => "margo.xref.setting-schema",
            RuleId::DefaultValue => "margo.default-value",
            RuleId::SchemaRule => "margo.schema-rule",
            RuleId::Regex => "margo.regex",
            RuleId::PackageResourceMissing => "margo.package.resource-missing",
            RuleId::PackageResourcePath => "margo.package.resource-path",
            RuleId::ManifestJson => "margo.manifest.json",
            RuleId::ManifestSchemaVersion => "margo.manifest.schema-version",
            RuleId::ManifestMediaType => "margo.manifest.media-type",
            RuleId::ManifestArtifactType => "margo.manifest.artifact-type",
            RuleId::ManifestConfig => "margo.manifest.config",
            RuleId::ManifestDescriptor => "margo.manifest.descriptor",
            RuleId::ManifestDescriptionLayer => "margo.manifest.description-layer",
            RuleId::ManifestLayerMediaType => "margo.manifest.layer-media-type",
            RuleId::ManifestLayerKind => "margo.manifest.layer-kind",
            RuleId::ManifestLayerTitle => "margo.manifest.layer-title",
            RuleId::ManifestResourceMissing => "margo.manifest.resource-missing",
            RuleId::ManifestResourceKind => "margo.manifest.resource-kind",
            RuleId::ManifestTag => "margo.manifest.tag",
            RuleId::ManifestIndexNotAllowed => "margo.manifest.index-not-allowed",
            RuleId::ManifestReferrerNotAllowed => "margo.manifest.referrer-not-allowed",
            RuleId::BlobDigest => "margo.blob.digest",
            RuleId::DeviationLicenseMediaType => "margo.deviation.license-media-type",
            RuleId::DeviationResourceAnnotation => "margo.deviation.resource-annotation",
            RuleId::ComponentLayer => "margo.component.layer",
            RuleId::ComponentAnnotation => "margo.component.annotation",
            RuleId::ComponentVersion => "margo.component.version",
            RuleId::ComposeArchiveFormat => "margo.compose.archive-format",
            RuleId::ComposeArchiveSize => "margo.compose.archive-size",
            RuleId::ComposeArchiveEntries => "margo.compose.archive-entries",
            RuleId::ComposeTopDir => "margo.compose.top-dir",
            RuleId::ComposeFile => "margo.compose.compose-file",
            RuleId::ComposeAbsolutePath => "margo.compose.absolute-path",
            RuleId::ComposeParentDir => "margo.compose.parent-dir",
            RuleId::ComposeLinkEscape => "margo.compose.link-escape",
            RuleId::ComposeSpecialFile => "margo.compose.special-file",
            RuleId::ComposeModeBits => "margo.compose.mode-bits",
        }
    }
}

impl RuleId {
    /// A known deviation of the reference tooling: a warning on tolerant routes, a
    /// violation on strict ones.
    pub const fn is_deviation(self) -> bool {
        matches!(
            self,
            RuleId::DeviationLicenseMediaType | RuleId::DeviationResourceAnnotation
        )
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A position in the source text, 1-based, in characters (as the YAML parser reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A path into a document, rendered as `deploymentProfiles[1].components[0].name`.
///
/// Kept structured (not a string built on the fly) so that children are cheap to derive
/// and keys containing dots or brackets can be quoted unambiguously when rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Key(key.to_owned()));
        Self(v)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut v = self.0.clone();
        v.push(Segment::Index(index));
        Self(v)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

fn is_plain_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("$");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Segment::Key(k) => {
                    // serde_json string escaping gives an unambiguous, copy-pastable form.
                    let quoted = serde_json::to_string(k).map_err(|_| fmt::Error)?;
                    write!(f, "[{quoted}]")?;
                }
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Longest rendering of an offending value kept in a violation: the value comes from
/// untrusted input and ends up in error bodies and logs.
const MAX_VALUE_CHARS: usize = 256;

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub rule: RuleId,
    /// Where in the checked document; `$` is the whole document.
    pub path: FieldPath,
    /// The offending value (truncated when long), if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// What the rule expected instead.
    pub expected: String,
    /// Human message naming the rule and the path.
    pub message: String,
    /// Source position, when the checked input is text we parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

impl Violation {
    /// Builds a violation; the message always starts with rule and path so that a
    /// reader of a bare OCI error message knows which rule fired where.
    pub fn new(rule: RuleId, path: FieldPath, expected: impl Into<String>) -> Self {
        let expected = expected.into();
        let message = format!("{rule} at {path}: expected {expected}");
        Self {
            rule,
            path,
            value: None,
            expected,
            message,
            location: None,
        }
    }

    /// Attaches the offending value, truncating long strings.
    pub fn with_value(mut self, value: serde_json::Value) -> Self {
        let value = truncate_value(value);
        let shown = match &value {
            serde_json::Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        let shown: String = shown.chars().take(MAX_VALUE_CHARS + 8).collect();
        self.message = format!(
            "{} at {}: got {}, expected {}",
            self.rule, self.path, shown, self.expected
        );
        self.value = Some(value);
        self
    }

    pub fn with_location(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

fn truncate_value(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
            let mut t: String = s.chars().take(MAX_VALUE_CHARS).collect();
            t.push('…');
            serde_json::Value::String(t)
        }
        v @ (serde_json::Value::Array(_) | serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                let mut t: String = text.chars().take(MAX_VALUE_CHARS).collect();
                t.push('…');
                serde_json::Value::String(t)
            } else {
                v
            }
        }
        v => v,
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some(loc) => write!(
                f,
                "{} (line {}, column {})",
                self.message, loc.line, loc.column
            ),
            None => f.write_str(&self.message),
        }
    }
}

/// Default cap on kept violations: a hostile document can produce one violation per
/// node, and the report ends up in a response body.
pub const DEFAULT_MAX_VIOLATIONS: usize = 500;

/// All violations found by one or more checks, in discovery order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    violations: Vec<Violation>,
    /// Violations found beyond the cap and dropped.
    #[serde(skip_serializing_if = "is_zero")]
    omitted: usize,
    #[serde(skip)]
    max: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for Report {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
impl Report {
    /// Table-test check: `None` expects no violation, `Some((rule, path))` expects one
    /// of that rule at that path; the failure message lists what was found.
    pub fn assert_expected(&self, case: &str, want: Option<(RuleId, &str)>) {
        match want {
            None => assert!(self.is_empty(), "{case}: {:?}", self.violations()),
            Some((rule, path)) => assert!(
                self.violations()
                    .iter()
                    .any(|v| v.rule == rule && v.path.to_string() == path),
                "{case}: want {rule} at {path}, got {:?}",
                self.violations()
                    .iter()
                    .map(|v| (v.rule.as_str(), v.path.to_string()))
                    .collect::<Vec<_>>()
            ),
        }
    }
}

impl Report {
    pub fn new() -> Self {
        Self::with_cap(DEFAULT_MAX_VIOLATIONS)
    }

    pub fn with_cap(max: usize) -> Self {
        Self {
            violations: Vec::new(),
            omitted: 0,
            max,
        }
    }

    pub fn push(&mut self, v: Violation) {
        if self.violations.len() < self.max {
            self.violations.push(v);
        } else {
            self.omitted = self.omitted.saturating_add(1);
        }
    }

    pub fn extend(&mut self, other: Report) {
        self.omitted = self.omitted.saturating_add(other.omitted);
        for v in other.violations {
            self.push(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty() && self.omitted == 0
    }

    /// Moves the violations `pred` picks into a new report with the same cap (what
    /// was omitted stays counted here).
    pub fn split_off(&mut self, pred: impl Fn(&Violation) -> bool) -> Report {
        let (picked, kept) = std::mem::take(&mut self.violations)
            .into_iter()
            .partition(pred);
        self.violations = kept;
        Report {
            violations: picked,
            omitted: 0,
            max: self.max,
        }
    }

    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }

    /// How many violations were dropped because of the cap.
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// Total violations found, kept or not.
    pub fn len(&self) -> usize {
        self.violations.len().saturating_add(self.omitted)
    }

    pub fn has_rule(&self, rule: RuleId) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }

    /// Distinct rule ids, sorted: the label set for metrics.
    pub fn rule_ids(&self) -> Vec<RuleId> {
        let mut ids: Vec<RuleId> = self.violations.iter().map(|v| v.rule).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Rewrites each violation's path under `prefix`, for reports about a nested
    /// document (e.g. a manifest inside an OCI layout).
    pub fn prefixed(mut self, prefix: &FieldPath) -> Self {
        for v in &mut self.violations {
            let mut segs = prefix.segments().to_vec();
            segs.extend(v.path.segments().iter().cloned());
            let old = v.path.to_string();
            v.path = FieldPath(segs);
            let new = v.path.to_string();
            v.message = v
                .message
                .replacen(&format!(" at {old}:"), &format!(" at {new}:"), 1);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for r in RuleId::ALL {
            assert!(r.as_str().starts_with("margo."), "{r}");
            assert!(seen.insert(r.as_str()), "duplicate {r}");
        }
    }

    #[test]
    fn path_renders_keys_indexes_and_quotes_odd_keys() {
        let cases = [
            (FieldPath::root(), "$"),
            (
                FieldPath::root()
                    .key("deploymentProfiles")
                    .index(1)
                    .key("components")
                    .index(0)
                    .key("name"),
                "deploymentProfiles[1].components[0].name",
            ),
            (
                FieldPath::root().key("parameters").key("a.b").key("value"),
                "parameters[\"a.b\"].value",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(p.to_string(), want);
        }
    }

    #[test]
    fn violation_message_names_rule_path_and_value() {
        let v = Violation::new(RuleId::Pattern, FieldPath::root().key("id"), "^[a-z]$")
            .with_value(serde_json::json!("Bad"));
        assert_eq!(
            v.message,
            "margo.pattern at id: got \"Bad\", expected ^[a-z]$"
        );
    }

    #[test]
    fn long_values_are_truncated() {
        let v = Violation::new(RuleId::Type, FieldPath::root(), "x")
            .with_value(serde_json::json!("a".repeat(10_000)));
        let Some(serde_json::Value::String(s)) = v.value else {
            panic!("value kept as string");
        };
        assert_eq!(s.chars().count(), MAX_VALUE_CHARS + 1);
    }

    #[test]
    fn report_caps_and_counts_omitted() {
        let mut r = Report::with_cap(2);
        for _ in 0..5 {
            r.push(Violation::new(RuleId::Type, FieldPath::root(), "x"));
        }
        assert_eq!(r.violations().len(), 2);
        assert_eq!(r.omitted(), 3);
        assert_eq!(r.len(), 5);
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["omitted"], 3);
    }

    #[test]
    fn prefixed_rewrites_path_and_message() {
        let mut r = Report::new();
        r.push(Violation::new(
            RuleId::Required,
            FieldPath::root().key("id"),
            "a value",
        ));
        let r = r.prefixed(&FieldPath::root().key("manifests").index(2));
        assert_eq!(r.violations()[0].path.to_string(), "manifests[2].id");
        assert!(r.violations()[0].message.contains(" at manifests[2].id:"));
    }
}

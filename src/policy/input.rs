//! The input documents given to the policies, one per decision point.
//!
//! These shapes are a public contract with the security teams who write Rego
//! against them: `input.version` is bumped on any incompatible change, and
//! `policies/README.md` documents every field with an example. OCI objects
//! (manifest, descriptor) keep their OCI spelling (`mediaType`, `artifactType`) so
//! a policy reads them like the OCI specification; everything the proxy adds is
//! snake_case.
//!
//! Nothing here may carry a credential: [`Identity`] holds the verified claims of a
//! token, never the token itself, because inputs end up in decision logs and in
//! `policy eval` files shared between teams.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of the input documents (`input.version`).
pub const INPUT_VERSION: u32 = 1;

/// The point of the request flow at which the policies are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionPoint {
    /// `PUT /v2/<name>/manifests/<reference>`.
    Push,
    /// `GET|HEAD /v2/<name>/manifests/<reference>`, also when served from the cache.
    Pull,
    /// `DELETE /v2/<name>/manifests/<reference>` or `/blobs/<digest>`.
    Delete,
    /// `GET /v2/<name>/tags/list`.
    Tag,
}

impl DecisionPoint {
    /// The lowercase name (`input.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionPoint::Push => "push",
            DecisionPoint::Pull => "pull",
            DecisionPoint::Delete => "delete",
            DecisionPoint::Tag => "tag",
        }
    }
}

/// The route kind of the repository (shared with the config).
pub use crate::config::RouteKind;

/// One input document; serialised with `kind` naming the decision point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PolicyInput {
    Push(PushInput),
    Pull(PullInput),
    Delete(DeleteInput),
    Tag(TagInput),
}

impl PolicyInput {
    /// The decision point of this input.
    pub fn point(&self) -> DecisionPoint {
        match self {
            PolicyInput::Push(_) => DecisionPoint::Push,
            PolicyInput::Pull(_) => DecisionPoint::Pull,
            PolicyInput::Delete(_) => DecisionPoint::Delete,
            PolicyInput::Tag(_) => DecisionPoint::Tag,
        }
    }

    /// The request common to all decision points.
    pub fn request(&self) -> &Request {
        match self {
            PolicyInput::Push(i) => &i.request,
            PolicyInput::Pull(i) => &i.request,
            PolicyInput::Delete(i) => &i.request,
            PolicyInput::Tag(i) => &i.request,
        }
    }
}

/// The HTTP request, as far as policies care.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `GET`, `HEAD`, `PUT`, `DELETE`.
    pub method: String,
    /// The repository (`<name>` of the OCI API), e.g. `northstar/app1`.
    pub repository: String,
    /// The reference as in the URL: a tag or a digest (empty for `tags/list`).
    #[serde(default)]
    pub reference: String,
    /// The reference when it is a tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The reference when it is a digest (`sha256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Kind of the route the repository belongs to.
    pub route_kind: RouteKind,
}

impl Request {
    /// Builds a request and fills `tag` or `digest` from `reference` the way the OCI
    /// distribution spec tells them apart (a digest contains `:`).
    pub fn new(
        method: impl Into<String>,
        repository: impl Into<String>,
        reference: impl Into<String>,
        route_kind: RouteKind,
    ) -> Self {
        let reference = reference.into();
        let (tag, digest) = if reference.is_empty() {
            (None, None)
        } else if reference.contains(':') {
            (None, Some(reference.clone()))
        } else {
            (Some(reference.clone()), None)
        };
        Self {
            method: method.into(),
            repository: repository.into(),
            reference,
            tag,
            digest,
            route_kind,
        }
    }
}

/// Who is asking. Anonymous requests have every field empty.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// `sub` of the verified token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// `iss` of the verified token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `client_id` / `azp` of the verified token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Groups (or roles) the proxy's auth config maps from the token.
    #[serde(default)]
    pub groups: Vec<String>,
    /// All verified claims of the token (never the raw token).
    #[serde(default)]
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The identity of an unauthenticated request.
    pub fn anonymous() -> Self {
        Self::default()
    }
}

/// Result of one built-in Margo admission rule (issue #3), passed to policies so
/// they can, e.g., enforce a rule the route only audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuiltinResult {
    /// Stable rule id.
    pub rule: String,
    /// Field path (`deploymentProfiles[1].components[0].name`), empty for the manifest.
    #[serde(default)]
    pub path: String,
    pub message: String,
}

/// What the proxy knows about a Compose component being pushed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentInput {
    /// Annotations of the archive layer (`org.margo.component.*`, `org.opencontainers.image.*`).
    #[serde(default)]
    pub layer_annotations: BTreeMap<String, String>,
    /// Paths of the archive entries, in archive order (`app/compose.yaml`, ...).
    #[serde(default)]
    pub files: Vec<String>,
}

/// `input` for a manifest push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushInput {
    /// [`INPUT_VERSION`].
    pub version: u32,
    pub request: Request,
    pub identity: Identity,
    /// The manifest as pushed, parsed.
    pub manifest: Value,
    /// The parsed `margo.yaml` of a Margo Application Package (`app` routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Value>,
    /// Results of the built-in Margo rules (empty when everything passed).
    #[serde(default)]
    pub builtin_results: Vec<BuiltinResult>,
    /// Compose component details (`component` routes with a Compose archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentInput>,
}

/// An OCI descriptor of the manifest being pulled or deleted.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    #[serde(
        rename = "artifactType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub digest: String,
    pub size: u64,
}

/// `input` for a manifest pull (GET or HEAD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullInput {
    /// [`INPUT_VERSION`].
    pub version: u32,
    pub request: Request,
    pub identity: Identity,
    pub descriptor: Descriptor,
    /// The parsed manifest, when the proxy has it (cache hit); policies must not
    /// rely on it being present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Value>,
    /// Whether the manifest is served from the proxy's cache.
    #[serde(default)]
    pub cache_hit: bool,
    /// The signatures the repository's trust policy checked for this manifest (absent
    /// when no trust policy covers it), e.g. to require two identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<SignatureInput>,
}

/// One signature of the pulled manifest, as the trust policy found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureInput {
    /// `cosign`, `cosign-bundle` or `notary`.
    pub format: String,
    /// `verified`, `untrusted_key`, `bad_signature`, `wrong_digest`,
    /// `expired_certificate`, `malformed`, `unsupported`.
    pub result: String,
    pub verified: bool,
    /// The trusted key's name (cosign) or the certificate subject (Notary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The signature manifest's digest, or the cosign signature tag.
    pub source: String,
}

/// What a delete removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteTarget {
    Manifest,
    Blob,
}

/// `input` for a delete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// [`INPUT_VERSION`].
    pub version: u32,
    pub request: Request,
    pub identity: Identity,
    pub target: DeleteTarget,
    /// The descriptor of the manifest being deleted, when the proxy knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<Descriptor>,
}

/// `input` for a tags list (`GET /v2/<name>/tags/list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagInput {
    /// [`INPUT_VERSION`].
    pub version: u32,
    pub request: Request,
    pub identity: Identity,
    /// The tags of the (page of the) list the upstream answered.
    #[serde(default)]
    pub tags: Vec<String>,
}

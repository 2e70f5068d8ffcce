//! The one admission driver: what a manifest push must satisfy on a route, decided the
//! same way whether the push arrives at the proxy or a developer runs
//! `margo-proxy validate` on an OCI layout.
//!
//! [`admit`] runs the manifest rules, reads the blob they point at (the `margo.yaml`
//! description or the Compose archive) from a [`BlobSource`], runs the blob's rules, and
//! decides accept / audit / reject from the route's mode. Known deviations of the
//! reference tooling are warnings on tolerant routes and violations on strict ones.
//! Both callers pass [`AdmissionLimits`] built from the same `limits:` config, so
//! "validate checks as a push is checked" holds by construction, not by two copies
//! agreeing.

mod source;

pub use source::{BlobError, BlobSource, LayoutBlobs};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::AdmissionMode;
use crate::margo::compose::{self, ArchiveLimits};
use crate::margo::manifest::{
    self, package, Descriptor, ManifestCheck, ManifestOptions, NextStep, Reference, RouteKind,
};
use crate::margo::report::Report;
use crate::margo::validate::DescriptionLimits;

/// What a route does with the known deviations of the reference tooling (margot's
/// `license` resource kind, resource layers without `org.margo.app.resource`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Deviations {
    /// Refused, with the deviation's rule named.
    Strict,
    /// Accepted with a warning (a `Warning` header, a log field and a metric). The
    /// default: packages built by margot, the Margo project's own CLI, are pushable.
    #[default]
    Tolerant,
}

/// The admission-relevant part of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    pub kind: RouteKind,
    pub mode: AdmissionMode,
    pub deviations: Deviations,
    pub allow_index: bool,
    pub allow_referrers: bool,
    pub extra_tags: Vec<String>,
}

impl RoutePolicy {
    pub fn of_route(route: &crate::upstream::routing::Route) -> Self {
        Self {
            kind: route.kind,
            mode: route.mode,
            deviations: route.deviations,
            allow_index: route.allow_index,
            allow_referrers: route.allow_referrers,
            extra_tags: route.extra_tags.clone(),
        }
    }

    /// A route of `kind` with every other setting at its config default, enforcing:
    /// what `validate` checks against.
    pub fn default_for(kind: RouteKind, deviations: Deviations) -> Self {
        Self {
            kind,
            mode: AdmissionMode::Enforce,
            deviations,
            allow_index: true,
            allow_referrers: true,
            extra_tags: Vec::new(),
        }
    }

    fn manifest_options(&self, limits: &AdmissionLimits) -> ManifestOptions {
        ManifestOptions {
            allow_index: self.allow_index,
            allow_referrers: self.allow_referrers,
            extra_tags: self.extra_tags.clone(),
            max_manifest_bytes: limits.max_manifest_bytes,
        }
    }
}

/// Every size and budget admission applies, from the `limits:` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_manifest_bytes: usize,
    /// Largest blob read for admission (description, Compose archive).
    pub max_blob_bytes: u64,
    pub description: DescriptionLimits,
    pub archive: ArchiveLimits,
}

impl From<&crate::config::Limits> for AdmissionLimits {
    fn from(l: &crate::config::Limits) -> Self {
        Self {
            max_manifest_bytes: usize::try_from(l.max_manifest_bytes).unwrap_or(usize::MAX),
            max_blob_bytes: l.max_admission_blob_bytes,
            description: DescriptionLimits::default(),
            archive: ArchiveLimits {
                max_compressed_bytes: l.max_admission_blob_bytes,
                ..ArchiveLimits::default()
            },
        }
    }
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self::from(&crate::config::Limits::default())
    }
}

/// The outcome for the push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The route checks nothing (passthrough, or `mode: off`).
    Unchecked,
    Accept,
    /// Violations found, forwarded anyway (`mode: audit`).
    Audit,
    /// Violations found, refused (`mode: enforce`).
    Reject,
}

impl Verdict {
    /// The `decision` label of the admission metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchecked => "unchecked",
            Verdict::Accept => "accept",
            Verdict::Audit => "audit",
            Verdict::Reject => "reject",
        }
    }
}

/// What admission found out, for the answer, the logs and policies.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    pub check: Option<ManifestCheck>,
    /// Violations (deviations included on strict routes).
    pub report: Report,
    /// Tolerated deviations (tolerant routes): accepted, but said.
    pub warnings: Report,
    /// The parsed `margo.yaml` (app routes), as JSON.
    pub description: Option<serde_json::Value>,
    /// Paths in the Compose archive (component routes).
    pub archive_files: Option<Vec<String>>,
}

impl Decision {
    pub fn unchecked() -> Self {
        Self {
            verdict: Verdict::Unchecked,
            check: None,
            report: Report::new(),
            warnings: Report::new(),
            description: None,
            archive_files: None,
        }
    }
}

/// Decides a manifest push. `Err` is a blob the checks need that could not be read
/// (the push cannot be judged, so it is not accepted).
pub async fn admit(
    manifest_bytes: &[u8],
    reference: &Reference,
    route: &RoutePolicy,
    blobs: &dyn BlobSource,
    limits: &AdmissionLimits,
) -> Result<Decision, BlobError> {
    if route.mode == AdmissionMode::Off || route.kind == RouteKind::Passthrough {
        return Ok(Decision::unchecked());
    }
    let opts = route.manifest_options(limits);
    let check = manifest::check_manifest(manifest_bytes, route.kind, reference, &opts);
    let mut report = check.report.clone();
    let mut description = None;
    let mut archive_files = None;
    match (&check.next, &check.manifest) {
        (NextStep::Description(layer), Some(m)) => {
            let blob = fetch(blobs, layer, limits).await?;
            let pkg = package::check_package_description(
                m,
                layer,
                &blob,
                reference,
                &opts,
                &limits.description,
            );
            description = pkg.description.as_ref().and_then(|d| d.document_json());
            report.extend(pkg.report);
        }
        (NextStep::ComposeArchive(layer), _) => {
            let blob = fetch(blobs, layer, limits).await?;
            let expected = (layer.digest.clone(), layer.size);
            let archive_limits = limits.archive.clone();
            // Decompressing is CPU work: keep it off the event loop.
            let archive = tokio::task::spawn_blocking(move || {
                compose::check_archive(
                    std::io::Cursor::new(blob),
                    &archive_limits,
                    Some((&expected.0, expected.1)),
                )
            })
            .await
            .map_err(|e| BlobError::Unavailable {
                digest: layer.digest.clone(),
                reason: format!("archive check failed: {e}"),
            })?;
            archive_files = Some(archive.entries.iter().map(|e| e.path.clone()).collect());
            report.extend(archive.report);
        }
        (NextStep::HelmConfig(config), _) => {
            let blob = fetch(blobs, config, limits).await?;
            manifest::component::check_helm_config(config, &blob, reference, &mut report);
        }
        _ => {}
    }
    let warnings = match route.deviations {
        Deviations::Tolerant => report.split_off(|v| v.rule.is_deviation()),
        Deviations::Strict => Report::new(),
    };
    let verdict = if report.is_empty() {
        Verdict::Accept
    } else if route.mode == AdmissionMode::Enforce {
        Verdict::Reject
    } else {
        Verdict::Audit
    };
    Ok(Decision {
        verdict,
        check: Some(check),
        report,
        warnings,
        description,
        archive_files,
    })
}

/// `Warning` header values for the tolerated deviations, one each, as distribution
/// sends them: warn-code 299 ("miscellaneous persistent warning"), agent `-`, the
/// message as a quoted string (RFC 9111 §5.5, formerly RFC 7234 §5.5). The message
/// holds untrusted text, so it is cut to printable ASCII and quotes are escaped.
pub fn warning_headers(decision: &Decision) -> Vec<String> {
    decision
        .warnings
        .violations()
        .iter()
        .map(|v| {
            let mut text = String::with_capacity(v.message.len() + 10);
            text.push_str("299 - \"");
            for c in v.message.chars().take(512) {
                match c {
                    '"' | '\\' => {
                        text.push('\\');
                        text.push(c);
                    }
                    ' '..='~' => text.push(c),
                    _ => text.push('?'),
                }
            }
            text.push('"');
            text
        })
        .collect()
}

/// Reads a blob a descriptor names, refusing descriptors over the cap before asking.
async fn fetch(
    blobs: &dyn BlobSource,
    layer: &Descriptor,
    limits: &AdmissionLimits,
) -> Result<Bytes, BlobError> {
    if layer.size > limits.max_blob_bytes {
        return Err(BlobError::TooLarge {
            digest: layer.digest.clone(),
            size: layer.size,
            cap: limits.max_blob_bytes,
        });
    }
    blobs.fetch(layer).await
}

#[cfg(test)]
mod tests;

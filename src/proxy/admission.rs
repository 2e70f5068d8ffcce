//! Margo admission of a manifest push: the manifest rules, then the blob they point at
//! (the `margo.yaml` description or the Compose archive), fetched from the upstream by
//! digest. Runs before anything of the push is sent upstream.

use bytes::Bytes;

use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::config::{AdmissionMode, RouteKind};
use crate::margo::compose::{self, ArchiveLimits};
use crate::margo::manifest::{
    self, package, Descriptor, ManifestCheck, ManifestOptions, NextStep, Reference,
};
use crate::margo::report::Report;
use crate::margo::validate::DescriptionLimits;
use crate::oci::{OciError, OciErrorCode};
use crate::upstream::registry::{Caller, RegistryError};
use crate::upstream::Upstream;

/// What admission found out, for the answer and for policies.
pub struct Admitted {
    pub check: Option<ManifestCheck>,
    pub report: Report,
    /// The parsed `margo.yaml` (app routes), as JSON.
    pub description: Option<serde_json::Value>,
    /// Paths in the Compose archive (component routes).
    pub archive_files: Option<Vec<String>>,
}

/// Runs the Margo rules of the route on a manifest push. `Err` is the refusal to send
/// (enforce mode, or a blob the checks need that cannot be fetched).
pub async fn admit(
    proxy: &MargoProxy,
    ctx: &RequestCtx,
    upstream: &Upstream,
    caller: &Caller<'_>,
    body: &Bytes,
) -> Result<Admitted, OciError> {
    let none = Admitted {
        check: None,
        report: Report::new(),
        description: None,
        archive_files: None,
    };
    let Some(matched) = ctx.forward.as_ref().and_then(|f| f.matched.as_ref()) else {
        return Ok(none);
    };
    let route = &matched.route;
    if route.mode == AdmissionMode::Off || route.kind == RouteKind::Passthrough {
        return Ok(none);
    }
    let reference = Reference::parse(&ctx.reference().unwrap_or_default());
    let limits = &proxy.state.limits;
    let opts = ManifestOptions {
        allow_index: route.allow_index,
        allow_referrers: route.allow_referrers,
        extra_tags: route.extra_tags.clone(),
        max_manifest_bytes: usize::try_from(limits.max_manifest_bytes).unwrap_or(usize::MAX),
    };
    let check = manifest::check_manifest(body, route.kind, &reference, &opts);
    let mut report = check.report.clone();
    let mut description = None;
    let mut archive_files = None;
    match (&check.next, &check.manifest) {
        (NextStep::Description(layer), Some(m)) => {
            let blob = fetch_blob(
                caller,
                upstream,
                matched.upstream_name.as_str(),
                layer,
                limits.max_admission_blob_bytes,
            )
            .await?;
            let pkg = package::check_package_description(
                m,
                layer,
                &blob,
                &reference,
                &opts,
                &DescriptionLimits::default(),
            );
            description = pkg.description.as_ref().and_then(|d| d.document_json());
            report.extend(pkg.report);
        }
        (NextStep::ComposeArchive(layer), _) => {
            let blob = fetch_blob(
                caller,
                upstream,
                matched.upstream_name.as_str(),
                layer,
                limits.max_admission_blob_bytes,
            )
            .await?;
            let expected = (layer.digest.to_string(), layer.size);
            let archive_limits = ArchiveLimits {
                max_compressed_bytes: limits.max_admission_blob_bytes,
                ..ArchiveLimits::default()
            };
            // Decompressing is CPU work: keep it off the proxy's event loop.
            let archive = tokio::task::spawn_blocking(move || {
                compose::check_archive(
                    std::io::Cursor::new(blob),
                    &archive_limits,
                    Some((expected.0.as_str(), expected.1)),
                )
            })
            .await
            .map_err(|_| OciError::new(OciErrorCode::Unavailable, "archive check failed"))?;
            archive_files = Some(archive.entries.iter().map(|e| e.path.clone()).collect());
            report.extend(archive.report);
        }
        _ => {}
    }
    let decision = if report.is_empty() {
        "accept"
    } else if route.mode == AdmissionMode::Enforce {
        "reject"
    } else {
        "audit"
    };
    for rule in report.rule_ids() {
        proxy
            .state
            .metrics
            .admission_decision(rule.as_str(), decision);
    }
    if report.is_empty() {
        proxy.state.metrics.admission_decision("none", decision);
    }
    if !report.is_empty() {
        let messages: Vec<&str> = report
            .violations()
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        tracing::warn!(
            target: "margo_proxy::admission",
            request_id = %ctx.request_id,
            repository = ctx.repository().unwrap_or(""),
            reference = %ctx.reference().unwrap_or_default(),
            decision,
            violations = ?messages,
            "manifest does not follow the Margo rules"
        );
        if route.mode == AdmissionMode::Enforce {
            return Err(refusal(&report));
        }
    }
    Ok(Admitted {
        check: Some(check),
        report,
        description,
        archive_files,
    })
}

/// `400 MANIFEST_INVALID`, one error entry per violation (its message names rule and
/// path), the structured violation in each entry's `detail`.
pub fn refusal(report: &Report) -> OciError {
    let mut violations = report.violations().iter();
    let Some(first) = violations.next() else {
        return OciError::new(OciErrorCode::ManifestInvalid, "manifest invalid");
    };
    let detail = |v: &crate::margo::report::Violation| serde_json::to_value(v).unwrap_or_default();
    let mut err = OciError::new(OciErrorCode::ManifestInvalid, first.message.clone())
        .with_detail(detail(first));
    for v in violations {
        err.push(OciErrorCode::ManifestInvalid, v.message.clone(), detail(v));
    }
    if report.omitted() > 0 {
        err.push(
            OciErrorCode::ManifestInvalid,
            format!("{} more violations not listed", report.omitted()),
            serde_json::Value::Null,
        );
    }
    err
}

/// Fetches a blob the manifest names from the upstream (blobs are pushed before the
/// manifest), bounded by the descriptor's size and the configured cap, checked against
/// its digest.
async fn fetch_blob(
    caller: &Caller<'_>,
    upstream: &Upstream,
    upstream_name: &str,
    layer: &Descriptor,
    cap: u64,
) -> Result<Bytes, OciError> {
    if layer.size > cap {
        return Err(OciError::new(
            OciErrorCode::SizeInvalid,
            format!(
                "layer {} is {} bytes, more than the {cap} bytes admission reads",
                layer.digest, layer.size
            ),
        ));
    }
    let digest: crate::oci::Digest = layer.digest.parse().map_err(|_| {
        OciError::new(
            OciErrorCode::DigestInvalid,
            format!("invalid digest `{}`", layer.digest),
        )
    })?;
    match upstream
        .registry()
        .blob_bytes(caller, upstream_name, &digest, layer.size)
        .await
    {
        Ok(Some(blob)) => Ok(blob),
        Ok(None) => Err(OciError::new(
            OciErrorCode::ManifestBlobUnknown,
            format!(
                "blob {} named by the manifest is not in the repository (push blobs first)",
                layer.digest
            ),
        )
        .with_detail(serde_json::json!({ "digest": layer.digest.to_string() }))),
        Err(RegistryError::TooLarge { .. }) => Err(OciError::new(
            OciErrorCode::SizeInvalid,
            format!("blob {} is larger than its descriptor says", layer.digest),
        )),
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "admission blob fetch failed");
            Err(e.to_oci())
        }
    }
}

//! Margo admission of a manifest push, as Pingora glue: the route's rules run in
//! [`crate::margo::admission::admit`] over a blob source that reads from the upstream
//! by digest (blobs are pushed before the manifest). Runs before anything of the push
//! is sent upstream.

use bytes::Bytes;

use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::margo::admission::{self, AdmissionLimits, BlobError, BlobSource, RoutePolicy, Verdict};
use crate::margo::manifest::Descriptor;
use crate::margo::report::Report;
use crate::metrics::AdmissionDecision;
use crate::oci::{OciError, OciErrorCode, OciRoute};
use crate::upstream::registry::{Caller, RegistryError};
use crate::upstream::Upstream;

/// What admission found out, for the answer and for policies.
pub type Admitted = admission::Decision;

/// Runs the Margo rules of the route on a manifest push. `Err` is the refusal to send
/// (enforce mode, or a blob the checks need that cannot be fetched).
pub async fn admit(
    proxy: &MargoProxy,
    ctx: &RequestCtx,
    upstream: &Upstream,
    caller: &Caller<'_>,
    body: &Bytes,
) -> Result<Admitted, OciError> {
    let (Some(matched), Some(OciRoute::Manifest { reference, .. })) = (
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
        ctx.route.as_ref(),
    ) else {
        return Ok(admission::Decision::unchecked());
    };
    let route = RoutePolicy::of_route(&matched.route);
    let limits = AdmissionLimits::from(&proxy.state.limits);
    // Blobs of a push in progress are in staging (when the route stages uploads).
    let staged = proxy
        .state
        .staging
        .as_ref()
        .filter(|s| ctx.forward.as_ref().is_some_and(|f| s.applies(f)))
        .and_then(|s| s.staged_name(&matched.upstream_name));
    let source = UpstreamBlobs {
        caller,
        upstream,
        upstream_name: matched.upstream_name.as_str(),
        staged: staged.as_ref().map(|s| s.as_str()),
    };
    let decision = admission::admit(body, reference, &route, &source, &limits)
        .await
        .map_err(|e| blob_refusal(upstream, &e))?;
    if decision.verdict == Verdict::Unchecked {
        return Ok(decision);
    }
    let label = match decision.verdict {
        Verdict::Accept | Verdict::Unchecked => AdmissionDecision::Accept,
        Verdict::Audit => AdmissionDecision::Audit,
        Verdict::Reject => AdmissionDecision::Reject,
    };
    let metrics = &proxy.state.metrics;
    for rule in decision.report.rule_ids() {
        metrics.admission_decision(rule.as_str(), label);
    }
    for rule in decision.warnings.rule_ids() {
        metrics.admission_decision(rule.as_str(), AdmissionDecision::Warn);
    }
    if decision.report.is_empty() {
        metrics.admission_decision("none", label);
    }
    if !decision.warnings.is_empty() {
        tracing::info!(
            target: "margo_proxy::admission",
            request_id = %ctx.request_id,
            repository = ctx.repository().unwrap_or(""),
            reference = %reference,
            decision = label.as_str(),
            warnings = %serde_json::to_string(&messages(&decision.warnings)).unwrap_or_default(),
            "manifest accepted with known deviations of the reference tooling"
        );
    }
    if !decision.report.is_empty() {
        tracing::warn!(
            target: "margo_proxy::admission",
            request_id = %ctx.request_id,
            repository = ctx.repository().unwrap_or(""),
            reference = %reference,
            decision = label.as_str(),
            violations = %serde_json::to_string(&messages(&decision.report)).unwrap_or_default(),
            warnings = %serde_json::to_string(&messages(&decision.warnings)).unwrap_or_default(),
            "manifest does not follow the Margo rules"
        );
    }
    if decision.verdict == Verdict::Reject {
        return Err(refusal(&decision.report));
    }
    Ok(decision)
}

fn messages(report: &Report) -> Vec<&str> {
    report
        .violations()
        .iter()
        .map(|v| v.message.as_str())
        .collect()
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

/// A blob the checks need could not be read: the push cannot be judged.
fn blob_refusal(upstream: &Upstream, e: &BlobError) -> OciError {
    match e {
        BlobError::NotFound { digest } => {
            OciError::new(OciErrorCode::ManifestBlobUnknown, e.to_string())
                .with_detail(serde_json::json!({ "digest": digest.to_string() }))
        }
        BlobError::TooLarge { .. } | BlobError::LongerThanDescriptor { .. } => {
            OciError::new(OciErrorCode::SizeInvalid, e.to_string())
        }
        BlobError::Unavailable { .. } => {
            tracing::warn!(upstream = %upstream.name, error = %e, "admission blob fetch failed");
            OciError::new(
                OciErrorCode::Unavailable,
                "upstream registry unavailable for admission",
            )
        }
    }
}

/// The upstream's blobs, read through the registry client with the push's caller
/// (the proxy's account or the client's own credentials, as for the push itself).
struct UpstreamBlobs<'a> {
    caller: &'a Caller<'a>,
    upstream: &'a Upstream,
    upstream_name: &'a str,
    /// The staging repository, read when the real one lacks the blob.
    staged: Option<&'a str>,
}

#[async_trait::async_trait]
impl BlobSource for UpstreamBlobs<'_> {
    /// Bounded by the descriptor's size (admission has refused sizes over its cap),
    /// checked against its digest by the client.
    async fn fetch(&self, layer: &Descriptor) -> Result<Bytes, BlobError> {
        let unavailable = |reason: String| BlobError::Unavailable {
            digest: layer.digest.clone(),
            reason,
        };
        let registry = self.upstream.registry();
        let mut read = registry
            .blob_bytes(self.caller, self.upstream_name, &layer.digest, layer.size)
            .await;
        if let (Ok(None), Some(staged)) = (&read, self.staged) {
            let caller = crate::staging::promote::scoped(
                self.caller,
                vec![format!("repository:{staged}:pull")],
            );
            read = registry
                .blob_bytes(&caller, staged, &layer.digest, layer.size)
                .await;
        }
        match read {
            Ok(Some(blob)) => Ok(blob),
            Ok(None) => Err(BlobError::NotFound {
                digest: layer.digest.clone(),
            }),
            Err(RegistryError::TooLarge { .. }) => Err(BlobError::LongerThanDescriptor {
                digest: layer.digest.clone(),
            }),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }
}

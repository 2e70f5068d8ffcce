//! Building the policy input documents from what the proxy knows about a request, and
//! turning a decision into an answer. The engine itself lives in [`crate::policy`].

use std::sync::Arc;

use super::admission::Admitted;
use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::config::RouteKind;
use crate::oci::{OciError, OciErrorCode, OciRoute};
use crate::policy::input::{
    BuiltinResult, ComponentInput, DeleteInput, DeleteTarget, Descriptor, Identity, PullInput,
    PushInput, Request, TagInput, INPUT_VERSION,
};
use crate::policy::{Decision, PolicyInput, PolicyService};

/// Response header naming the denying rule, for HEAD answers (which have no body).
pub const DENIED_HEADER: &str = "X-Margo-Policy-Denied";

fn identity(ctx: &RequestCtx) -> Identity {
    match &ctx.principal {
        Some(p) if !p.anonymous => Identity {
            subject: p.subject.clone(),
            issuer: p.issuer.clone(),
            client_id: p.client_id.clone(),
            groups: p.groups.clone(),
            claims: p.claims.as_object().cloned().unwrap_or_default(),
        },
        _ => Identity::anonymous(),
    }
}

fn request(ctx: &RequestCtx, method: &http::Method) -> Request {
    let kind = ctx
        .forward
        .as_ref()
        .and_then(|f| f.matched.as_ref())
        .map(|m| m.route.kind)
        .unwrap_or(RouteKind::Passthrough);
    Request::new(
        method.as_str(),
        ctx.repository().unwrap_or_default(),
        ctx.reference().unwrap_or_default(),
        kind,
    )
}

/// Evaluates off the event loop (a policy may use up its whole time budget).
async fn evaluate(service: &Arc<PolicyService>, input: PolicyInput) -> Decision {
    let svc = service.clone();
    let point = input.point();
    match tokio::task::spawn_blocking(move || svc.evaluate(&input)).await {
        Ok(d) => d,
        Err(_) => {
            // The evaluation thread died: fail closed.
            let mut d = Decision::allow(point, "unknown");
            d.outcome = crate::policy::Outcome::Deny;
            d.deny.push(crate::policy::Violation {
                package: "margo-proxy".into(),
                rule: "policy-error".into(),
                message: "policy evaluation failed".into(),
                path: None,
            });
            d
        }
    }
}

/// `403 DENIED` listing every denial message; `None` when the decision allows.
fn answer(proxy: &MargoProxy, ctx: &mut RequestCtx, decision: &Decision) -> Option<OciError> {
    proxy
        .state
        .metrics
        .policy_decision(decision.outcome.as_str());
    if !decision.warn.is_empty() {
        tracing::warn!(target: "margo_proxy::policy", request_id = %ctx.request_id,
            warnings = ?decision.warn_messages(), "policy warnings");
    }
    if !decision.is_denied() {
        return None;
    }
    ctx.policy_denied_rule = decision.denied_rule().map(str::to_owned);
    let mut messages = decision.deny.iter();
    let first = messages.next()?;
    let detail = |v: &crate::policy::Violation| serde_json::to_value(v).unwrap_or_default();
    let mut err =
        OciError::new(OciErrorCode::Denied, first.message.clone()).with_detail(detail(first));
    for v in messages {
        err.push(OciErrorCode::Denied, v.message.clone(), detail(v));
    }
    Some(err)
}

/// The push decision, after the built-in Margo rules.
pub async fn push(
    proxy: &MargoProxy,
    ctx: &mut RequestCtx,
    method: &http::Method,
    body: &[u8],
    admitted: Admitted,
) -> Option<OciError> {
    let service = proxy.state.policy.clone()?;
    let manifest: serde_json::Value =
        serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
    let component = admitted.archive_files.map(|files| ComponentInput {
        layer_annotations: admitted
            .check
            .as_ref()
            .and_then(|c| c.manifest.as_ref())
            .and_then(|m| m.layers.first())
            .map(|l| l.annotations.clone())
            .unwrap_or_default(),
        files,
    });
    let input = PolicyInput::Push(PushInput {
        version: INPUT_VERSION,
        request: request(ctx, method),
        identity: identity(ctx),
        manifest,
        description: admitted.description,
        builtin_results: admitted
            .report
            .violations()
            .iter()
            .map(|v| BuiltinResult {
                rule: v.rule.as_str().to_owned(),
                path: v.path.to_string(),
                message: v.message.clone(),
            })
            .collect(),
        component,
    });
    let decision = evaluate(&service, input).await;
    answer(proxy, ctx, &decision)
}

/// The pull decision for a manifest whose content the proxy holds.
pub async fn pull(
    proxy: &MargoProxy,
    ctx: &mut RequestCtx,
    method: &http::Method,
    content_type: &str,
    digest: &str,
    body: &[u8],
    cache_hit: bool,
) -> Option<OciError> {
    let service = proxy.state.policy.clone()?;
    let manifest: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| manifest.as_ref().and_then(|m| m.get(k));
    let descriptor = Descriptor {
        media_type: content_type.to_owned(),
        artifact_type: field("artifactType")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        annotations: field("annotations")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
        digest: digest.to_owned(),
        size: body.len() as u64,
    };
    let input = PolicyInput::Pull(PullInput {
        version: INPUT_VERSION,
        request: request(ctx, method),
        identity: identity(ctx),
        descriptor,
        manifest,
        cache_hit,
        signatures: signatures(ctx),
    });
    // Pull decisions are small (tens of µs) and sit on the cache-hit path: evaluated in
    // place, since a hand-off to the blocking pool costs more than the decision.
    let decision = service.evaluate_memoised(&input);
    answer(proxy, ctx, &decision)
}

/// Deletes and tag listings, decided before anything goes upstream.
pub async fn before_proxying(
    proxy: &MargoProxy,
    ctx: &mut RequestCtx,
    method: &http::Method,
) -> Option<OciError> {
    let service = proxy.state.policy.clone()?;
    let input = match (&ctx.route, ctx.operation) {
        (Some(OciRoute::Manifest { .. }), "manifest_delete")
        | (Some(OciRoute::Blob { .. }), "blob_delete") => PolicyInput::Delete(DeleteInput {
            version: INPUT_VERSION,
            request: request(ctx, method),
            identity: identity(ctx),
            target: if ctx.operation == "blob_delete" {
                DeleteTarget::Blob
            } else {
                DeleteTarget::Manifest
            },
            descriptor: None,
        }),
        (Some(OciRoute::TagsList { .. }), _) => PolicyInput::Tag(TagInput {
            version: INPUT_VERSION,
            request: request(ctx, method),
            identity: identity(ctx),
            tags: Vec::new(),
        }),
        _ => return None,
    };
    let decision = evaluate(&service, input).await;
    answer(proxy, ctx, &decision)
}

/// `input.signatures` from what the trust policy found (see [`super::trust`]).
fn signatures(ctx: &RequestCtx) -> Vec<crate::policy::input::SignatureInput> {
    let Some(v) = &ctx.trust_verdict else {
        return Vec::new();
    };
    v.checks
        .iter()
        .map(|c| crate::policy::input::SignatureInput {
            format: c.format.as_str().to_owned(),
            result: c.outcome.as_str().to_owned(),
            verified: c.outcome == crate::trust::Outcome::Verified,
            identity: c.identity.clone(),
            source: c.source.clone(),
        })
        .collect()
}

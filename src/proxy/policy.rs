//! Building the policy input documents from what the proxy knows about a request, and
//! turning a decision into an answer. The engine itself lives in [`crate::policy`].

use std::sync::Arc;

use pingora::proxy::Session;

use super::admission::Admitted;
use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::config::RouteKind;
use crate::oci::headers::DOCKER_CONTENT_DIGEST;
use crate::oci::{OciError, OciErrorCode, OciRoute, Operation};
use crate::policy::input::{
    BuiltinResult, ComponentInput, DeleteInput, DeleteTarget, Descriptor, Identity, PullInput,
    PushInput, Request, TagInput, INPUT_VERSION,
};
use crate::policy::{Decision, PolicyInput, PolicyService};
use crate::registry_catalog::page::{self, PageRequest};
use crate::registry_catalog::tags;

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
async fn evaluate(service: &Arc<PolicyService>, input: PolicyInput, ctx: &RequestCtx) -> Decision {
    let svc = service.clone();
    let point = input.point();
    let request_id = ctx.request_id.to_string();
    match tokio::task::spawn_blocking(move || svc.evaluate_for(&input, &request_id)).await {
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
            warnings = %serde_json::to_string(&decision.warn_messages()).unwrap_or_default(), "policy warnings");
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
    let decision = evaluate(&service, input, ctx).await;
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
    let descriptor = descriptor(content_type, digest, body);
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
    let decision = service.evaluate_memoised(&input, ctx.request_id.as_str());
    answer(proxy, ctx, &decision)
}

/// Largest tags-list page read for a tag policy.
const MAX_TAGS_PAGE: u64 = 4 << 20;

/// Method the read before a delete asks its token scope for.
static READ: http::Method = http::Method::GET;

/// Deletes and tag listings, decided before anything goes upstream. Their inputs are
/// read from the upstream first (the page of tags the client asked for; the manifest
/// being deleted): a policy on them must see what the documentation promises, and a
/// read that fails denies (the upstream would most likely fail the request anyway).
pub async fn before_proxying(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &mut RequestCtx,
) -> Option<OciError> {
    let service = proxy.state.policy.clone()?;
    let method = session.req_header().method.clone();
    let input = match (&ctx.route, ctx.operation) {
        (Some(OciRoute::Manifest { .. }), Operation::ManifestDelete) => {
            let descriptor = match deleted_manifest(proxy, session, ctx).await {
                Ok(d) => d,
                Err(e) => return Some(e),
            };
            PolicyInput::Delete(DeleteInput {
                version: INPUT_VERSION,
                request: request(ctx, &method),
                identity: identity(ctx),
                target: DeleteTarget::Manifest,
                descriptor,
            })
        }
        (Some(OciRoute::Blob { .. }), Operation::BlobDelete) => PolicyInput::Delete(DeleteInput {
            version: INPUT_VERSION,
            request: request(ctx, &method),
            identity: identity(ctx),
            target: DeleteTarget::Blob,
            descriptor: None,
        }),
        (Some(OciRoute::TagsList { .. }), _) => {
            let tags = match listed_tags(proxy, session, ctx).await {
                Ok(t) => t,
                Err(e) => return Some(e),
            };
            PolicyInput::Tag(TagInput {
                version: INPUT_VERSION,
                request: request(ctx, &method),
                identity: identity(ctx),
                tags,
            })
        }
        _ => return None,
    };
    let decision = evaluate(&service, input, ctx).await;
    answer(proxy, ctx, &decision)
}

/// The page of tags the client's request names, as the upstream answers it (empty
/// when the repository is unknown: the pass-through then answers the upstream's 404).
async fn listed_tags(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
) -> Result<Vec<String>, OciError> {
    let (Some(upstream), Some(fwd)) = (proxy.upstream_of(ctx), ctx.forward.as_ref()) else {
        return Ok(Vec::new());
    };
    let caller = proxy.caller(session, ctx, upstream, &session.req_header().method);
    let query = session.req_header().uri.query();
    if let (true, Some(m)) = (tags::wants_page(query), fwd.matched.as_ref()) {
        // The proxy pages this list itself: the policy sees that very page.
        let req = PageRequest::parse(query, proxy.state.registry_catalog.page_size())
            .map_err(|e| e.to_oci())?;
        let all = tags::read_sorted(upstream, &caller, m.upstream_name.as_str())
            .await
            .map_err(|e| e.to_oci())?
            .unwrap_or_default();
        let shown = page::page(&all, &req, "", |_| true).items;
        return Ok(shown.into_iter().map(str::to_owned).collect());
    }
    match upstream
        .registry()
        .tags_page(&caller, &fwd.path_and_query, MAX_TAGS_PAGE)
        .await
    {
        Ok(page) => Ok(page.map(|(tags, _)| tags).unwrap_or_default()),
        Err(e) => Err(e.to_oci()),
    }
}

/// The descriptor of the manifest a delete names (`None` when the upstream does not
/// have it: the pass-through then answers the upstream's 404).
async fn deleted_manifest(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &RequestCtx,
) -> Result<Option<Descriptor>, OciError> {
    let (Some(upstream), Some(matched), Some(reference)) = (
        proxy.upstream_of(ctx),
        ctx.forward.as_ref().and_then(|f| f.matched.as_ref()),
        ctx.reference(),
    ) else {
        return Ok(None);
    };
    let caller = proxy.caller(session, ctx, upstream, &READ);
    let max = proxy.state.limits.max_manifest_bytes;
    let manifest = upstream
        .registry()
        .manifest_get(&caller, matched.upstream_name.as_str(), &reference, max)
        .await
        .map_err(|e| e.to_oci())?;
    let Some(m) = manifest else {
        return Ok(None);
    };
    let header = |n: &http::HeaderName| {
        m.headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let digest = header(&DOCKER_CONTENT_DIGEST)
        .filter(|d| {
            d.parse::<crate::oci::Digest>()
                .is_ok_and(|d| d.verifies(&m.body))
        })
        .unwrap_or_else(|| crate::oci::Digest::sha256_of(&m.body).to_string());
    Ok(Some(descriptor(
        &header(&http::header::CONTENT_TYPE).unwrap_or_default(),
        &digest,
        &m.body,
    )))
}

/// A manifest's descriptor as policies see it.
fn descriptor(content_type: &str, digest: &str, body: &[u8]) -> Descriptor {
    let manifest: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| manifest.as_ref().and_then(|m| m.get(k));
    Descriptor {
        media_type: content_type.to_owned(),
        artifact_type: field("artifactType")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        annotations: field("annotations")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default(),
        digest: digest.to_owned(),
        size: body.len() as u64,
    }
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

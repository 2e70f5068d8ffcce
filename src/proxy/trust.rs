//! Glue for signature-required pulls (logic in [`crate::trust`]): before a manifest
//! GET/HEAD is answered, its digest's verdict under the repository's trust policy.

use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::MargoProxy;
use crate::oci::{Digest, OciError, OciErrorCode, OciRoute};
use crate::trust::{self, Decision, Subject, TrustMode};

/// Whether a trust policy covers the request's repository.
pub fn applies(proxy: &MargoProxy, ctx: &RequestCtx) -> bool {
    match (&proxy.state.trust, ctx.repository()) {
        (Some(t), Some(r)) => t.policy_for(r).is_some(),
        _ => false,
    }
}

/// `Some(403 DENIED)` when an enforcing policy finds no valid signature for the
/// manifest (`digest`, `body`). Leaves the verdict in `ctx` for the pull policy.
pub async fn check_pull(
    proxy: &MargoProxy,
    session: &Session,
    ctx: &mut RequestCtx,
    digest: &str,
    body: &[u8],
) -> Option<OciError> {
    let service = proxy.state.trust.clone()?;
    let policy = service.policy_for(ctx.repository()?)?;
    let tag = match &ctx.route {
        Some(OciRoute::Manifest { reference, .. }) => reference.as_tag(),
        _ => None,
    };
    if tag.is_some_and(trust::exempt_tag) {
        return None;
    }
    // Both callers hold a body already checked against this digest (the cache verifies
    // what it stores, the pass-through read checks it), so it is not hashed again here.
    let digest = digest
        .parse::<Digest>()
        .unwrap_or_else(|_| Digest::sha256_of(body));
    let verdict = {
        let Some(s) = super::referrers::side(proxy, session, ctx) else {
            return Some(OciError::new(
                OciErrorCode::Denied,
                "trust: request was not routed",
            ));
        };
        let subject = Subject {
            upstream_idx: s.idx,
            upstream: &s.upstream.name,
            repository: s.repo,
            digest: &digest,
            manifest: body,
        };
        service
            .verdict(policy, &proxy.state.referrers, &s.io, &subject)
            .await
    };
    if verdict.exempt {
        return None;
    }
    ctx.trust_verdict = Some(verdict.clone());
    let Some(reason) = verdict.reason() else {
        service.count_decision(policy, Decision::Allow);
        return None;
    };
    tracing::warn!(
        target: "margo_proxy::trust",
        request_id = %ctx.request_id,
        repository = %ctx.repository().unwrap_or_default(),
        %digest,
        policy = %policy.name,
        mode = policy.mode.as_str(),
        reason = %reason,
        "manifest has no valid signature"
    );
    if policy.mode == TrustMode::Audit {
        service.count_decision(policy, Decision::Audit);
        return None;
    }
    service.count_decision(policy, Decision::Deny);
    let detail = serde_json::json!({
        "policy": policy.name,
        "reason": verdict.reason_code(),
        "digest": digest.to_string(),
        "signatures": verdict.checks,
    });
    Some(
        OciError::new(
            OciErrorCode::Denied,
            format!("trust policy `{}`: {digest} refused: {reason}", policy.name),
        )
        .with_detail(detail),
    )
}

//! The decision log: one event per evaluated request, target
//! `margo_proxy::policy::decision`, rendered as a JSON line by the proxy's JSON
//! subscriber.
//!
//! The identity is deliberately absent except for its subject: claims may carry
//! personal data, and no token is ever part of an input.

use crate::policy::decision::Decision;

/// The tracing target of decision log events.
pub const DECISION_TARGET: &str = "margo_proxy::policy::decision";

/// Emits the decision log event for one request.
pub(crate) fn log_decision(
    decision: &Decision,
    repository: &str,
    reference: &str,
    request_id: Option<&str>,
) {
    // Lists are emitted as JSON text: tracing fields are scalars, and a JSON
    // formatter then yields one parseable line either way.
    let deny = serde_json::to_string(&decision.deny_messages()).unwrap_or_default();
    let warn = serde_json::to_string(&decision.warn_messages()).unwrap_or_default();
    let packages = serde_json::to_string(&decision.packages).unwrap_or_default();
    tracing::info!(
        target: DECISION_TARGET,
        request_id = request_id.unwrap_or(""),
        bundle_revision = %decision.bundle_revision,
        point = decision.point.as_str(),
        repository = %repository,
        reference = %reference,
        outcome = decision.outcome.as_str(),
        deny = %deny,
        warn = %warn,
        packages = %packages,
        elapsed_us = decision.elapsed_us,
        "policy decision"
    );
}

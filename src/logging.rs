//! Structured logs: the subscriber set-up and the one access-log event per request.

use pingora::proxy::Session;
use pingora::Error;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::proxy::ctx::RequestCtx;

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(cfg.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests start several proxies in one process) keeps the first one.
    let _ = result;
}

/// One event per request, target `margo_proxy::access`. Never logs credentials: only the
/// fields listed here are read from the request.
/// `total` is the request's duration, measured once by the caller for log and metrics.
pub fn access(
    session: &Session,
    e: Option<&Error>,
    ctx: &RequestCtx,
    status: u16,
    total: std::time::Duration,
) {
    let req = session.req_header();
    // Field values are computed only when the event is enabled.
    tracing::info!(
        target: "margo_proxy::access",
        request_id = %ctx.request_id,
        method = %req.method,
        operation = ctx.operation.as_str(),
        repository = ctx.repository().unwrap_or(""),
        reference = ctx.reference().unwrap_or_default(),
        status,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        total_ms = total.as_secs_f64() * 1000.0,
        upstream_ms = ctx.upstream_elapsed.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        cache = ctx.cache_result.map_or("none", |c| c.as_str()),
        refusal = ctx.refusal.as_deref().unwrap_or(""),
        error = e.map(|e| e.to_string()).unwrap_or_default(),
        "request"
    );
}

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
    let (writer, guard) = sink();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests start several proxies in one process) keeps the first one.
    if result.is_ok() {
        let _ = SINK_GUARD.set(guard);
    }
}

/// Keeps the log writer thread for the life of the process (Pingora ends it with
/// `exit`, so nothing would drop a guard held on the stack anyway).
static SINK_GUARD: std::sync::OnceLock<tracing_appender::non_blocking::WorkerGuard> =
    std::sync::OnceLock::new();

/// Lines queued for the writer thread before request threads wait for it.
const QUEUED_LINES: usize = 64 * 1024;

/// stderr behind a writer thread: a request thread only formats its line and queues
/// it, never waits for a `write(2)` (a blocking write per line, on a stderr lock every
/// worker shares, was most of what the access log cost). The thread writes through a
/// buffer and flushes whenever the queue runs dry, so lines still appear at once when
/// the proxy is not busy, and in few large writes when it is. Not lossy: a full queue
/// holds requests back rather than drop their lines.
fn sink() -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("margo-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ))
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
        operation = ctx.operation,
        repository = ctx.repository().unwrap_or(""),
        reference = ctx.reference().unwrap_or_default(),
        status,
        bytes_in = session.body_bytes_read(),
        bytes_out = session.body_bytes_sent(),
        total_ms = total.as_secs_f64() * 1000.0,
        upstream_ms = ctx.upstream_elapsed.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        cache = ctx.cache_result.unwrap_or("none"),
        refusal = ctx.refusal.as_deref().unwrap_or(""),
        error = e.map(|e| e.to_string()).unwrap_or_default(),
        "request"
    );
}

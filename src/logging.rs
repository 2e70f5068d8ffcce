//! Structured logs on standard error (standard output is for command results): the
//! subscriber set-up and the one access-log event per request.
//!
//! Text logs are coloured only on a terminal, and never with `NO_COLOR` set. JSON logs
//! are one object per line; fields that hold lists or objects (see [`JSON_FIELDS`]) are
//! JSON values in it, not strings of JSON, so `jq '.deny[0]'` works.

use std::io::IsTerminal;

use pingora::proxy::Session;
use pingora::Error;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};
use crate::proxy::ctx::RequestCtx;

/// Fields whose value is JSON text (tracing fields are scalars): embedded as JSON in
/// JSON logs. Text logs show the text.
pub const JSON_FIELDS: [&str; 6] = [
    "deny",
    "warn",
    "packages",
    "violations",
    "listeners",
    "warnings",
];

/// Colour only for a person at a terminal: not in files, pipes or journald, and not
/// when `NO_COLOR` (https://no-color.org) is set to anything non-empty.
fn colour(no_color: Option<std::ffi::OsString>, terminal: bool) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(cfg.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::env::var_os("NO_COLOR"),
        std::io::stderr().is_terminal(),
    );
    let (writer, guard) = sink();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let result = match cfg.format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .try_init(),
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

/// One JSON object per event: `timestamp`, `level`, `target`, the fields of the
/// enclosing spans, then the event's own fields (`message` included).
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut obj = serde_json::Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        obj.insert("timestamp".into(), ts.into());
        let meta = event.metadata();
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(serde_json::Value::Object(map)) =
                    serde_json::from_str::<serde_json::Value>(fields)
                {
                    obj.extend(map);
                }
            }
        }
        event.record(&mut JsonVisitor(&mut obj));
        let line = serde_json::to_string(&obj).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonVisitor<'_> {
    fn text(&mut self, field: &Field, text: String) {
        let value = if JSON_FIELDS.contains(&field.name()) {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        } else {
            serde_json::Value::String(text)
        };
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}

/// One event per request, target `margo_proxy::access`. Never logs credentials: only the
/// fields listed here are read from the request; `subject` is the token's `sub` claim,
/// never the token. `total` is the request's duration, measured once by the caller for
/// log and metrics.
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
        client_ip = %ClientIp(session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        subject = ctx
            .principal
            .as_ref()
            .filter(|p| !p.anonymous)
            .and_then(|p| p.subject.as_deref())
            .unwrap_or(""),
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

/// The client's IP for the access log, written without an allocation per request;
/// empty for Unix-socket clients.
struct ClientIp(Option<std::net::IpAddr>);

impl std::fmt::Display for ClientIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(None, true));
        assert!(!colour(None, false));
        assert!(!colour(Some("1".into()), true));
        assert!(colour(Some("".into()), true));
    }

    #[test]
    fn json_fields_are_json_values() {
        use tracing_subscriber::layer::SubscriberExt;
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(JsonFields::new())
                .event_format(JsonLines)
                .with_writer(move || Sink(sink.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("req", request_id = "r-1");
            let _g = span.enter();
            tracing::info!(deny = %r#"["no"]"#, packages = ?vec!["a"], repository = "[x", n = 3, "policy decision");
        });
        let text = String::from_utf8(buf.lock().expect("lock").clone()).expect("utf8");
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(v["deny"], serde_json::json!(["no"]));
        assert_eq!(v["packages"], serde_json::json!(["a"]));
        assert_eq!(v["repository"], "[x");
        assert_eq!(v["n"], 3);
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["message"], "policy decision");
        assert_eq!(v["level"], "INFO");
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

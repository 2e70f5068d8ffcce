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

pub mod access;
pub mod queue;

use access::AccessRecord;
use queue::{LogQueue, Message};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(cfg.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = colour(
        std::env::var_os("NO_COLOR"),
        std::io::stderr().is_terminal(),
    );
    // A second init (tests start several proxies in one process) keeps the first one.
    let queue = QUEUE.get_or_init(
        || match LogQueue::start(cfg.format, ansi, std::io::stderr()) {
            Ok(q) => Some(q),
            Err(e) => {
                eprintln!("margo-proxy: no log writer thread ({e}): logging to stderr directly");
                None
            }
        },
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Sink(queue.as_ref()))
        .with_ansi(ansi);
    let _ = match cfg.format {
        LogFormat::Json => builder
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The log writer thread's queue (see [`queue`]); `None` if the thread could not start.
/// Pingora ends the process with `exit`, so lines still queued then may be lost.
static QUEUE: std::sync::OnceLock<Option<LogQueue>> = std::sync::OnceLock::new();

/// Where `tracing` lines go: the writer thread's queue, else stderr directly.
struct Sink(Option<&'static LogQueue>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.0)
    }
}

struct SinkWriter(Option<&'static LogQueue>);

impl std::io::Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0 {
            Some(mut q) => q.write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// One line per request, target `margo_proxy::access`. Never logs credentials: only
/// the fields listed here are read from the request; `subject` is the token's `sub`
/// claim, never the token. `total` is the request's duration, measured once by the
/// caller for log and metrics. The request thread moves what the line needs out of
/// `ctx` (the request is over) into a record and renders it into its own log buffer,
/// which the writer thread drains (see [`queue`]); the `tracing` event is the fallback
/// when no writer runs.
pub fn access(
    session: &Session,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
    status: u16,
    total: std::time::Duration,
) {
    if !access_enabled() {
        return;
    }
    log_access(AccessRecord {
        at: std::time::SystemTime::now(),
        request_id: std::mem::take(&mut ctx.request_id),
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        principal: ctx.principal.take(),
        method: session.req_header().method.clone(),
        operation: ctx.operation,
        route: ctx.route.take(),
        status,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        total,
        upstream: ctx.upstream_elapsed,
        cache: ctx.cache_result,
        refusal: ctx.refusal.take(),
        error: e.map(|e| e.to_string()),
    });
}

/// Whether access lines are written at the configured level.
pub fn access_enabled() -> bool {
    tracing::enabled!(target: "margo_proxy::access", tracing::Level::INFO)
}

/// Hands one access line to the writer thread (or to `tracing` when none runs).
pub fn log_access(record: AccessRecord) {
    match QUEUE.get() {
        Some(Some(q)) => q.send(Message::Access(record)),
        _ => record.emit(),
    }
}

impl AccessRecord {
    /// As a `tracing` event, for subscribers other than [`init`]'s.
    fn emit(&self) {
        let mut reference = Vec::new();
        access::reference(self.route.as_ref(), &mut reference);
        tracing::info!(
            target: "margo_proxy::access",
            request_id = %self.request_id,
            client_ip = %ClientIp(self.client_ip),
            subject = self.subject(),
            method = %self.method,
            operation = self.operation.as_str(),
            repository = self.repository(),
            reference = &*String::from_utf8_lossy(&reference),
            status = self.status,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            total_ms = self.total.as_secs_f64() * 1000.0,
            upstream_ms = self.upstream.map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            cache = self.cache.map_or("none", |c| c.as_str()),
            refusal = self.refusal.as_deref().unwrap_or(""),
            error = self.error.as_deref().unwrap_or(""),
            "request"
        );
    }
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

    /// The writer thread renders access lines as `tracing_subscriber` rendered the
    /// event before: the same text, field for field (timestamps aside).
    #[test]
    fn access_lines_match_what_tracing_wrote() {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        let route = crate::oci::OciRoute::parse("/v2/apps/x/manifests/1.0.0").expect("route");
        let record = AccessRecord {
            at: std::time::SystemTime::now(),
            request_id: crate::proxy::ctx::request_id(None),
            client_ip: Some("10.1.2.3".parse().expect("ip")),
            principal: Some(std::sync::Arc::new(crate::auth::Principal {
                subject: Some("a \"quoted\"\tsubject".into()),
                anonymous: false,
                ..crate::auth::Principal::anonymous(Default::default())
            })),
            method: http::Method::GET,
            operation: crate::oci::Operation::ManifestGet,
            route: Some(route),
            status: 502,
            bytes_in: 12,
            bytes_out: 345,
            total: std::time::Duration::from_micros(1_500),
            upstream: Some(std::time::Duration::from_millis(1)),
            cache: Some(crate::cache::CacheResult::Miss),
            refusal: Some("upstream `main` unreachable".into()),
            error: Some("Connection refused\n(os error 111)".into()),
        };
        tracing::subscriber::with_default(subscriber, || record.emit());
        let theirs = String::from_utf8(buf.lock().expect("lock").clone()).expect("utf8");
        let mut ours = Vec::new();
        record.render(LogFormat::Text, false, &mut ours);
        let ours = String::from_utf8(ours).expect("utf8");
        let (_time, ours) = ours.split_once(' ').expect("timestamp first");
        assert_eq!(ours.trim_start(), theirs.trim_start());
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

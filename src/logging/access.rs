//! The access-log record: what a request thread hands the log writer thread, and how
//! that thread renders it, in the same text and JSON shapes as every other log line.
//!
//! Request threads only move values they already hold into an [`AccessRecord`] (the
//! parsed route, the request id, the principal): no formatting, no allocation. Going
//! through `tracing`'s formatter instead cost a warm cache hit a third of its
//! instructions (field visitors, `Debug` escaping of every string, a timestamp), on
//! the request thread.

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::Principal;
use crate::cache::CacheResult;
use crate::config::LogFormat;
use crate::oci::{OciRoute, Operation};
use crate::proxy::ctx::RequestId;

/// The target access lines carry (filters and log readers select on it).
pub const TARGET: &str = "margo_proxy::access";

/// One request, as the access log shows it. Never holds credentials: `principal` is
/// rendered as its `sub` claim only.
pub struct AccessRecord {
    pub at: SystemTime,
    pub request_id: RequestId,
    pub client_ip: Option<IpAddr>,
    pub principal: Option<Arc<Principal>>,
    pub method: http::Method,
    pub operation: Operation,
    pub route: Option<OciRoute>,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub total: Duration,
    pub upstream: Option<Duration>,
    pub cache: Option<CacheResult>,
    pub refusal: Option<String>,
    pub error: Option<String>,
}

impl AccessRecord {
    pub(super) fn subject(&self) -> &str {
        self.principal
            .as_ref()
            .filter(|p| !p.anonymous)
            .and_then(|p| p.subject.as_deref())
            .unwrap_or("")
    }

    pub(super) fn repository(&self) -> &str {
        self.route
            .as_ref()
            .and_then(|r| r.name())
            .map_or("", |n| n.as_str())
    }

    /// Appends the record as one line (newline included).
    pub fn render(&self, format: LogFormat, ansi: bool, out: &mut Vec<u8>) {
        match format {
            LogFormat::Text => self.render_text(ansi, out),
            LogFormat::Json => self.render_json(out),
        }
    }

    /// `tracing_subscriber`'s default line: `<time>  INFO <target>: request k=v ...`,
    /// strings quoted and escaped as `Debug` does, as `tracing::info!` wrote them.
    fn render_text(&self, ansi: bool, out: &mut Vec<u8>) {
        let mut w = Text { out, ansi };
        if ansi {
            w.out.extend_from_slice(b"\x1b[2m");
        }
        timestamp(self.at, w.out);
        if ansi {
            w.out.extend_from_slice(b"\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2m");
            w.out.extend_from_slice(TARGET.as_bytes());
            w.out.extend_from_slice(b"\x1b[0m\x1b[2m:\x1b[0m request");
        } else {
            w.out.extend_from_slice(b"  INFO ");
            w.out.extend_from_slice(TARGET.as_bytes());
            w.out.extend_from_slice(b": request");
        }
        w.raw("request_id", self.request_id.as_str());
        match self.client_ip {
            Some(ip) => w.display("client_ip", ip),
            None => w.raw("client_ip", ""),
        }
        w.quoted("subject", self.subject());
        w.raw("method", self.method.as_str());
        w.quoted("operation", self.operation.as_str());
        w.quoted("repository", self.repository());
        w.reference(self.route.as_ref());
        w.display("status", self.status);
        w.display("bytes_in", self.bytes_in);
        w.display("bytes_out", self.bytes_out);
        w.millis("total_ms", Some(self.total));
        w.millis("upstream_ms", self.upstream);
        w.quoted("cache", self.cache.map_or("none", |c| c.as_str()));
        w.quoted("refusal", self.refusal.as_deref().unwrap_or(""));
        w.quoted("error", self.error.as_deref().unwrap_or(""));
        w.out.push(b'\n');
    }

    /// One JSON object, as the JSON log format writes every event.
    fn render_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(self.at, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":\"");
        out.extend_from_slice(TARGET.as_bytes());
        out.extend_from_slice(b"\",\"message\":\"request\"");
        let mut s = |name: &str, value: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            json_string(value, out);
        };
        s("request_id", self.request_id.as_str());
        s("subject", self.subject());
        s("method", self.method.as_str());
        s("operation", self.operation.as_str());
        s("repository", self.repository());
        s("cache", self.cache.map_or("none", |c| c.as_str()));
        s("refusal", self.refusal.as_deref().unwrap_or(""));
        s("error", self.error.as_deref().unwrap_or(""));
        out.extend_from_slice(b",\"client_ip\":\"");
        if let Some(ip) = self.client_ip {
            let _ = write!(out, "{ip}");
        }
        out.extend_from_slice(b"\",\"reference\":\"");
        // Tags and digests are [A-Za-z0-9_.:+-]: nothing to escape.
        reference(self.route.as_ref(), out);
        let _ = write!(
            out,
            "\",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"total_ms\":{},\"upstream_ms\":{}}}",
            self.status,
            self.bytes_in,
            self.bytes_out,
            millis(Some(self.total)),
            millis(self.upstream),
        );
        out.push(b'\n');
    }
}

/// The manifest reference or digest a route names (`ctx.reference()`), written in place.
pub(super) fn reference(route: Option<&OciRoute>, out: &mut Vec<u8>) {
    let _ = match route {
        Some(OciRoute::Manifest { reference, .. }) => write!(out, "{reference}"),
        Some(OciRoute::Blob { digest, .. }) | Some(OciRoute::Referrers { digest, .. }) => {
            write!(out, "{digest}")
        }
        _ => Ok(()),
    };
}

fn millis(d: Option<Duration>) -> f64 {
    d.map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// ` name=value` pairs in `tracing_subscriber`'s default style.
struct Text<'a> {
    out: &'a mut Vec<u8>,
    ansi: bool,
}

impl Text<'_> {
    fn name(&mut self, name: &str) {
        if self.ansi {
            self.out.extend_from_slice(b" \x1b[3m");
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b"\x1b[0m\x1b[2m=\x1b[0m");
        } else {
            self.out.push(b' ');
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'=');
        }
    }

    /// A value recorded with `%` (Display): written as is.
    fn raw(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn display(&mut self, name: &str, value: impl std::fmt::Display) {
        self.name(name);
        let _ = write!(self.out, "{value}");
    }

    /// A string field: quoted, escaped as `{:?}` does, so untrusted text (a token's
    /// `sub`, an error message) cannot forge fields or lines.
    fn quoted(&mut self, name: &str, value: &str) {
        self.name(name);
        let plain = value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'\'');
        if plain {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            let _ = write!(self.out, "{value:?}");
        }
    }

    fn reference(&mut self, route: Option<&OciRoute>) {
        self.name("reference");
        self.out.push(b'"');
        reference(route, self.out);
        self.out.push(b'"');
    }

    /// `f64` fields are recorded through `Debug`.
    fn millis(&mut self, name: &str, d: Option<Duration>) {
        self.name(name);
        let _ = write!(self.out, "{:?}", millis(d));
    }
}

/// A JSON string literal (RFC 8259 escapes).
fn json_string(value: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, b) in value.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&value.as_bytes()[start..]);
    out.push(b'"');
}

/// RFC 3339 in UTC with microseconds (`2026-12-01T13:40:26.123456Z`), as
/// `tracing_subscriber`'s `SystemTime` writes it.
pub fn timestamp(at: SystemTime, out: &mut Vec<u8>) {
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn record() -> AccessRecord {
        let route = OciRoute::parse(
            "/v2/apps/x/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        )
        .expect("route");
        AccessRecord {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_596_426_123_456),
            request_id: crate::proxy::ctx::request_id(Some(&HeaderValue::from_static("r-1"))),
            client_ip: Some("127.0.0.1".parse().expect("ip")),
            principal: Some(Arc::new(Principal {
                subject: Some("evil\" status=200\nnext".into()),
                ..Principal::anonymous()
            })),
            method: http::Method::GET,
            operation: Operation::BlobGet,
            route: Some(route),
            status: 200,
            bytes_in: 0,
            bytes_out: 3072,
            total: Duration::from_micros(250),
            upstream: None,
            cache: Some(CacheResult::BlobMemory),
            refusal: None,
            error: None,
        }
    }

    fn text(r: &AccessRecord) -> String {
        let mut out = Vec::new();
        r.render(LogFormat::Text, false, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn timestamps_are_rfc3339_utc_micros() {
        let mut out = Vec::new();
        timestamp(SystemTime::UNIX_EPOCH, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
        // 2000-02-29 (a leap day of a century leap year) and a date in 2100.
        for (secs, want) in [
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (1_764_596_426, "2025-12-01T13:40:26.000000Z"),
        ] {
            let mut out = Vec::new();
            timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            assert_eq!(String::from_utf8(out).expect("utf8"), want);
        }
    }

    #[test]
    fn text_lines_have_tracing_s_shape_and_escape_untrusted_text() {
        let mut r = record();
        r.principal = Some(Arc::new(Principal {
            subject: Some("ci-bot".into()),
            ..Principal::anonymous()
        }));
        let line = text(&r);
        assert_eq!(
            line,
            "2025-12-01T13:40:26.123456Z  INFO margo_proxy::access: request request_id=r-1 \
             client_ip=127.0.0.1 subject=\"\" method=GET operation=\"blob_get\" \
             repository=\"apps/x\" \
             reference=\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\" \
             status=200 bytes_in=0 bytes_out=3072 total_ms=0.25 upstream_ms=0.0 \
             cache=\"blob_memory\" refusal=\"\" error=\"\"\n"
                .replace("subject=\"\"", "subject=\"ci-bot\"")
        );
        // An anonymous principal's subject is not shown; a hostile one is escaped.
        let mut anon = record();
        anon.principal = Some(Arc::new(Principal::anonymous()));
        assert!(text(&anon).contains(" subject=\"\" "));
        let r = record();
        let mut named = (*r.principal.clone().expect("principal")).clone();
        named.anonymous = false;
        let r = AccessRecord {
            principal: Some(Arc::new(named)),
            ..r
        };
        let line = text(&r);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(
            line.contains(r#"subject="evil\" status=200\nnext""#),
            "{line}"
        );
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut r = record();
        let mut named = (*r.principal.clone().expect("principal")).clone();
        named.anonymous = false;
        r.principal = Some(Arc::new(named));
        r.error = Some("tab\there \u{1} ctl".into());
        r.upstream = Some(Duration::from_millis(2));
        let mut out = Vec::new();
        r.render(LogFormat::Json, false, &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).expect("one JSON object");
        assert_eq!(v["target"], TARGET);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["timestamp"], "2025-12-01T13:40:26.123456Z");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["client_ip"], "127.0.0.1");
        assert_eq!(v["subject"], "evil\" status=200\nnext");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["operation"], "blob_get");
        assert_eq!(v["repository"], "apps/x");
        assert_eq!(
            v["reference"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes_out"], 3072);
        assert_eq!(v["total_ms"], 0.25);
        assert_eq!(v["upstream_ms"], 2.0);
        assert_eq!(v["cache"], "blob_memory");
        assert_eq!(v["error"], "tab\there \u{1} ctl");
    }
}

//! The access-log record and how it is rendered, in the same text and JSON shapes as
//! every other log line.
//!
//! Request threads move values they already hold into an [`AccessRecord`] (the parsed
//! route, the request id, the principal) and render it straight into their own log
//! buffer ([`super::queue`]): no `fmt`, no allocation. Going through `tracing`'s
//! formatter instead cost a warm cache hit a third of its instructions (field
//! visitors, `Debug` escaping of every string, a timestamp).

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::Principal;
use crate::cache::CacheResult;
use crate::config::LogFormat;
use crate::oci::{Digest, OciRoute, Operation, Reference};
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
            w.out
                .extend_from_slice(b"\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2m");
            w.out.extend_from_slice(TARGET.as_bytes());
            w.out.extend_from_slice(b"\x1b[0m\x1b[2m:\x1b[0m request");
        } else {
            w.out.extend_from_slice(b"  INFO ");
            w.out.extend_from_slice(TARGET.as_bytes());
            w.out.extend_from_slice(b": request");
        }
        w.raw(" request_id=", self.request_id.as_str());
        w.name(" client_ip=");
        if let Some(addr) = self.client_ip {
            ip(addr, w.out);
        }
        w.quoted(" subject=", self.subject());
        w.raw(" method=", self.method.as_str());
        w.quoted(" operation=", self.operation.as_str());
        w.quoted(" repository=", self.repository());
        w.reference(self.route.as_ref());
        w.number(" status=", u64::from(self.status));
        w.number(" bytes_in=", self.bytes_in as u64);
        w.number(" bytes_out=", self.bytes_out as u64);
        w.millis(" total_ms=", Some(self.total));
        w.millis(" upstream_ms=", self.upstream);
        w.quoted(" cache=", self.cache.map_or("none", |c| c.as_str()));
        w.quoted(" refusal=", self.refusal.as_deref().unwrap_or(""));
        w.quoted(" error=", self.error.as_deref().unwrap_or(""));
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
        if let Some(addr) = self.client_ip {
            ip(addr, out);
        }
        out.extend_from_slice(b"\",\"reference\":\"");
        // Tags and digests are [A-Za-z0-9_.:+-]: nothing to escape.
        reference(self.route.as_ref(), out);
        out.extend_from_slice(b"\",\"status\":");
        decimal(u64::from(self.status), out);
        out.extend_from_slice(b",\"bytes_in\":");
        decimal(self.bytes_in as u64, out);
        out.extend_from_slice(b",\"bytes_out\":");
        decimal(self.bytes_out as u64, out);
        out.extend_from_slice(b",\"total_ms\":");
        millis(Some(self.total), out);
        out.extend_from_slice(b",\"upstream_ms\":");
        millis(self.upstream, out);
        out.push(b'}');
        out.push(b'\n');
    }
}

/// The manifest reference or digest a route names (`ctx.reference()`), written in place.
pub(super) fn reference(route: Option<&OciRoute>, out: &mut Vec<u8>) {
    let digest = |d: &Digest, out: &mut Vec<u8>| {
        out.extend_from_slice(d.algorithm().as_str().as_bytes());
        out.push(b':');
        out.extend_from_slice(d.encoded().as_bytes());
    };
    match route {
        Some(OciRoute::Manifest { reference, .. }) => match reference {
            Reference::Tag(tag) => out.extend_from_slice(tag.as_bytes()),
            Reference::Digest(d) => digest(d, out),
        },
        Some(OciRoute::Blob { digest: d, .. }) | Some(OciRoute::Referrers { digest: d, .. }) => {
            digest(d, out)
        }
        _ => {}
    }
}

/// ` name=value` pairs in `tracing_subscriber`'s default style.
struct Text<'a> {
    out: &'a mut Vec<u8>,
    ansi: bool,
}

impl Text<'_> {
    /// `key` is ` name=`, so the plain case is one copy.
    #[inline(always)]
    fn name(&mut self, key: &str) {
        if self.ansi {
            let name = key.trim_start_matches(' ').trim_end_matches('=');
            self.out.extend_from_slice(b" \x1b[3m");
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b"\x1b[0m\x1b[2m=\x1b[0m");
        } else {
            self.out.extend_from_slice(key.as_bytes());
        }
    }

    /// A value recorded with `%` (Display): written as is.
    #[inline(always)]
    fn raw(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.extend_from_slice(value.as_bytes());
    }

    #[inline(always)]
    fn number(&mut self, name: &str, value: u64) {
        self.name(name);
        decimal(value, self.out);
    }

    /// A string field: quoted, escaped as `{:?}` does, so untrusted text (a token's
    /// `sub`, an error message) cannot forge fields or lines.
    #[inline(always)]
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
        self.name(" reference=");
        self.out.push(b'"');
        reference(route, self.out);
        self.out.push(b'"');
    }

    /// `f64` fields are recorded through `Debug`: see [`millis`].
    #[inline(always)]
    fn millis(&mut self, name: &str, d: Option<Duration>) {
        self.name(name);
        millis(d, self.out);
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
/// `tracing_subscriber`'s `SystemTime` writes it. The date and time up to the second
/// are formatted once per second (per thread): lines within a second share them.
pub fn timestamp(at: SystemTime, out: &mut Vec<u8>) {
    thread_local! {
        static PREFIX: std::cell::RefCell<(u64, [u8; 20])> =
            const { std::cell::RefCell::new((u64::MAX, [0; 20])) };
    }
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    PREFIX.with(|p| {
        let mut p = p.borrow_mut();
        if p.0 != secs {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (y, m, d) = civil_from_days(days);
            let mut text = Vec::with_capacity(20);
            let _ = write!(
                text,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
            );
            // Years past 9999 are not RFC 3339: write them, just unshared.
            match <[u8; 20]>::try_from(text.as_slice()) {
                Ok(prefix) => *p = (secs, prefix),
                Err(_) => {
                    *p = (u64::MAX, [0; 20]);
                    out.extend_from_slice(&text);
                    return;
                }
            }
        }
        out.extend_from_slice(&p.1);
    });
    let mut micros = [b'0'; 6];
    let mut n = since.subsec_micros();
    for digit in micros.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&micros);
    out.push(b'Z');
}

/// Decimal digits of `n`, without going through `fmt` (`itoa`: two digits per step).
fn decimal(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Milliseconds to the nanosecond, as `f64`'s `Debug` writes such a value (`0.25`,
/// `1.234567`, `3.0`), without float formatting.
fn millis(d: Option<Duration>, out: &mut Vec<u8>) {
    let nanos = u64::try_from(d.map_or(0, |d| d.as_nanos())).unwrap_or(u64::MAX);
    decimal(nanos / 1_000_000, out);
    out.push(b'.');
    let mut frac = nanos % 1_000_000;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut width = 6;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    let mut digits = [b'0'; 6];
    for digit in digits[..width].iter_mut().rev() {
        *digit = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// The client's address, IPv4 without going through `fmt`.
fn ip(addr: IpAddr, out: &mut Vec<u8>) {
    match addr {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(u64::from(octet), out);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
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
            principal: Some(named("evil\" status=200\nnext")),
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

    fn named(subject: &str) -> Arc<Principal> {
        Arc::new(Principal {
            subject: Some(subject.into()),
            anonymous: false,
            ..Principal::anonymous(Default::default())
        })
    }

    fn text(r: &AccessRecord) -> String {
        let mut out = Vec::new();
        r.render(LogFormat::Text, false, &mut out);
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn numbers_are_written_as_fmt_would() {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).expect("utf8")
        };
        for n in [0, 7, 10, 65_535, u64::MAX] {
            assert_eq!(text(&|o| decimal(n, o)), n.to_string());
        }
        for nanos in [
            0u64, 250_000, 1_000_000, 1_234_567, 1_500_000, 3_000_001, 999,
        ] {
            let d = Duration::from_nanos(nanos);
            let want = format!("{:?}", nanos as f64 / 1e6);
            assert_eq!(text(&|o| millis(Some(d), o)), want, "{nanos} ns");
        }
        assert_eq!(text(&|o| millis(None, o)), "0.0");
        for addr in ["127.0.0.1", "10.200.3.0", "::1", "fe80::1:2"] {
            let a: IpAddr = addr.parse().expect("ip");
            assert_eq!(text(&|o| ip(a, o)), a.to_string());
        }
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
        r.principal = Some(named("ci-bot"));
        let line = text(&r);
        assert_eq!(
            line,
            "2025-12-01T13:40:26.123456Z  INFO margo_proxy::access: request request_id=r-1 \
             client_ip=127.0.0.1 subject=\"\" method=GET operation=\"blob_get\" \
             repository=\"apps/x\" \
             reference=\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\" \
             status=200 bytes_in=0 bytes_out=3072 total_ms=0.25 upstream_ms=0.0 \
             cache=\"memory\" refusal=\"\" error=\"\"\n"
                .replace("subject=\"\"", "subject=\"ci-bot\"")
        );
        // An anonymous principal's subject is not shown; a hostile one is escaped.
        let mut anon = record();
        anon.principal = Some(Arc::new(Principal {
            subject: Some("someone".into()),
            ..Principal::anonymous(Default::default())
        }));
        assert!(text(&anon).contains(" subject=\"\" "));
        let line = text(&record());
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(
            line.contains(r#"subject="evil\" status=200\nnext""#),
            "{line}"
        );
    }

    #[test]
    fn coloured_lines_are_the_plain_ones_with_escapes() {
        let r = record();
        let mut coloured = Vec::new();
        r.render(LogFormat::Text, true, &mut coloured);
        let coloured = String::from_utf8(coloured).expect("utf8");
        assert!(coloured.contains('\u{1b}'));
        let mut stripped = String::new();
        let mut chars = coloured.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                stripped.push(c);
            }
        }
        assert_eq!(stripped, text(&r));
    }

    #[test]
    fn json_lines_parse_and_carry_every_field() {
        let mut r = record();
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
        assert_eq!(v["cache"], "memory");
        assert_eq!(v["error"], "tab\there \u{1} ctl");
    }
}

//! `Accept` negotiation for cached manifests.
//!
//! The cache always fetches with [`FULL_ACCEPT`] so it stores the manifest as
//! the upstream holds it, then decides per client whether that stored type may
//! be replayed. Registries do not convert between OCI and Docker types: CNCF
//! distribution returns the stored manifest only if its type is accepted and
//! otherwise answers 404 (OCI types) or rewrites to schema1 (Docker types by
//! tag). The cache cannot imitate those fallbacks, so whenever the client does
//! not accept the stored type the answer is [`Negotiation::Bypass`]: the
//! request goes to the upstream untouched and its own behaviour applies.
//!
//! Choices:
//! - Wildcards (`*/*`, `application/*`) are honoured as RFC 9110 says. A client
//!   that sent `*/*` truly accepts any type, and replaying the stored bytes
//!   can never confuse it; distribution 2.8 ignores wildcards and would 404 an
//!   OCI manifest, so this is strictly more helpful, never less.
//! - No `Accept` header at all is [`Negotiation::Bypass`]: that is what old
//!   clients send, and the upstream's legacy conversions are meant for them.
//! - `q=0` excludes a type even when a wildcard would admit it; the most
//!   specific matching range decides (RFC 9110 §12.5.1).

use http::header::{HeaderMap, ACCEPT};

/// OCI image manifest (also used by artifacts).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// `Accept` value for the cache's own upstream requests (fetch and HEAD
/// revalidation), so the upstream returns the stored manifest rather than a
/// conversion tailored to one client.
pub const FULL_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Whether a cached entry may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// Replay the cached entry.
    Serve,
    /// Forward the request upstream as if there were no cache.
    Bypass,
}

/// One media range from an `Accept` header, borrowed from the header value: a
/// cache hit negotiates without allocating.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MediaRange<'a> {
    /// `type`, possibly `*`; compared case-insensitively.
    pub main: &'a str,
    /// `subtype`, possibly `*`; compared case-insensitively.
    pub sub: &'a str,
    /// Quality in thousandths (0..=1000), avoiding float comparisons.
    pub q: u16,
}

impl MediaRange<'_> {
    /// 2 for an exact type, 1 for `type/*`, 0 for `*/*`.
    fn specificity(&self) -> u8 {
        match (self.main, self.sub) {
            ("*", _) => 0,
            (_, "*") => 1,
            _ => 2,
        }
    }

    fn matches(&self, main: &str, sub: &str) -> bool {
        (self.main == "*" || self.main.eq_ignore_ascii_case(main))
            && (self.sub == "*" || self.sub.eq_ignore_ascii_case(sub))
    }
}

/// Parses the raw values of a request's `Accept` headers. Values that are not visible
/// ASCII are skipped (as `HeaderValue::to_str` refuses them) and malformed ranges
/// dropped (never guessed at), which at worst means a bypass to the upstream.
pub fn parse_accept<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> impl Iterator<Item = MediaRange<'a>> {
    values
        .filter(|v| v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)))
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(split_outside_quotes)
        .filter_map(parse_range)
}

/// Splits on commas that are not inside a quoted parameter value.
fn split_outside_quotes(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let v = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, c) in v.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    rest = Some(&v[i + 1..]);
                    return Some(&v[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(v)
    })
}

fn parse_range(raw: &str) -> Option<MediaRange<'_>> {
    let mut params = raw.split(';');
    let essence = params.next()?.trim();
    if essence.is_empty() {
        return None;
    }
    let (main, sub) = essence.split_once('/')?;
    let (main, sub) = (main.trim(), sub.trim());
    let token_ok = |t: &str| !t.is_empty() && t.bytes().all(is_token_byte);
    if !token_ok(main) || !token_ok(sub) || (main == "*" && sub != "*") {
        return None;
    }
    let mut q = 1000;
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            q = parse_qvalue(value.trim())?;
        }
    }
    Some(MediaRange { main, sub, q })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 qvalue: `0[.ddd]` or `1[.000]`, in thousandths.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // "5" is 500 thousandths, "05" is 50: pad on the right to three digits.
    let frac_val = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

/// Decides whether a cached manifest of `content_type` may answer a request
/// carrying `accept` (see the module docs for the rules). Runs on every cache
/// hit, so it walks the header in place instead of collecting ranges.
pub fn negotiate(accept: &HeaderMap, content_type: &str) -> Negotiation {
    negotiate_values(
        || accept.get_all(ACCEPT).iter().map(|v| v.as_bytes()),
        content_type,
    )
}

/// [`negotiate`] over the raw `Accept` values of a request (`values` walks them, and
/// is called at most twice), for heads not parsed into a `HeaderMap` (the express
/// lane's).
pub fn negotiate_values<'a, I>(values: impl Fn() -> I, content_type: &str) -> Negotiation
where
    I: Iterator<Item = &'a [u8]>,
{
    let mut probe = values().peekable();
    if probe.peek().is_none() {
        return Negotiation::Bypass;
    }
    if lists_exactly(probe, content_type) {
        return Negotiation::Serve;
    }
    negotiate_ranges(parse_accept(values()), content_type)
}

/// The common case, decided without parsing: the stored type is listed as is,
/// without parameters, so with q=1. Nothing can outrank that (the most
/// specific match wins, and among equals the highest q), so it is served.
/// Works on bytes: media types are ASCII, and a value that is not is no match.
fn lists_exactly<'a>(values: impl Iterator<Item = &'a [u8]>, content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    values.filter(|v| !v.contains(&b'"')).any(|v| {
        v.eq_ignore_ascii_case(essence)
            || v.split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(essence))
    })
}

/// [`negotiate`] over already-parsed ranges.
pub fn negotiate_ranges<'a>(
    ranges: impl IntoIterator<Item = MediaRange<'a>>,
    content_type: &str,
) -> Negotiation {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((main, sub)) = essence.split_once('/') else {
        return Negotiation::Bypass;
    };
    let best = ranges
        .into_iter()
        .filter(|r| r.matches(main, sub))
        .max_by_key(|r| (r.specificity(), r.q));
    match best {
        Some(r) if r.q > 0 => Negotiation::Serve,
        _ => Negotiation::Bypass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn values(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
        h.get_all(ACCEPT).iter().map(|v| v.as_bytes())
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT, HeaderValue::from_str(v).expect("valid header"));
        }
        h
    }

    #[test]
    fn exact_type_in_a_list_is_served() {
        let h = headers(&[
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        ]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Serve);
        assert_eq!(negotiate(&h, DOCKER_MANIFEST), Negotiation::Serve);
        assert_eq!(negotiate(&h, OCI_INDEX), Negotiation::Bypass);
    }

    #[test]
    fn docker_manifest_is_not_served_to_an_oci_only_client() {
        let h = headers(&[OCI_MANIFEST, OCI_INDEX]);
        assert_eq!(negotiate(&h, DOCKER_MANIFEST), Negotiation::Bypass);
        assert_eq!(negotiate(&h, DOCKER_MANIFEST_LIST), Negotiation::Bypass);
        assert_eq!(negotiate(&h, OCI_INDEX), Negotiation::Serve);
    }

    #[test]
    fn multiple_header_lines_are_combined() {
        let h = headers(&[OCI_MANIFEST, DOCKER_MANIFEST_LIST]);
        assert_eq!(negotiate(&h, DOCKER_MANIFEST_LIST), Negotiation::Serve);
    }

    #[test]
    fn absent_accept_bypasses_but_wildcards_serve() {
        assert_eq!(
            negotiate(&HeaderMap::new(), OCI_MANIFEST),
            Negotiation::Bypass
        );
        assert_eq!(
            negotiate(&headers(&["*/*"]), OCI_MANIFEST),
            Negotiation::Serve
        );
        assert_eq!(
            negotiate(&headers(&["application/*"]), DOCKER_MANIFEST),
            Negotiation::Serve
        );
        assert_eq!(
            negotiate(&headers(&["text/*"]), OCI_MANIFEST),
            Negotiation::Bypass
        );
        // An Accept header that parses to nothing accepts nothing.
        assert_eq!(
            negotiate(&headers(&[""]), OCI_MANIFEST),
            Negotiation::Bypass
        );
    }

    #[test]
    fn q_zero_excludes_even_under_a_wildcard() {
        let h = headers(&["*/*, application/vnd.oci.image.manifest.v1+json;q=0"]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Bypass);
        assert_eq!(negotiate(&h, OCI_INDEX), Negotiation::Serve);
        let h = headers(&["application/vnd.oci.image.manifest.v1+json; q=0.0"]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Bypass);
        let h = headers(&["application/vnd.oci.image.manifest.v1+json;q=0.001"]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Serve);
        let h = headers(&["*/*;q=0"]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Bypass);
    }

    #[test]
    fn params_case_and_whitespace_are_tolerated() {
        let h = headers(&[
            " Application/VND.OCI.Image.Manifest.v1+JSON ; charset=\"utf-8, really\" ; Q=0.5 ",
        ]);
        let ranges: Vec<_> = parse_accept(values(&h)).collect();
        assert_eq!(ranges.len(), 1, "{ranges:?}");
        assert_eq!(ranges[0].q, 500);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Serve);
        // The stored content type's own parameters do not matter either.
        assert_eq!(
            negotiate(
                &headers(&[OCI_MANIFEST]),
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8"
            ),
            Negotiation::Serve
        );
    }

    #[test]
    fn an_exact_listing_outranks_a_zero_quality_duplicate() {
        // Two exact ranges: the higher quality decides, as in the full parse.
        let h = headers(&[&format!("{OCI_MANIFEST};q=0"), OCI_MANIFEST]);
        assert_eq!(negotiate(&h, OCI_MANIFEST), Negotiation::Serve);
        assert_eq!(
            negotiate_ranges(parse_accept(values(&h)), OCI_MANIFEST),
            Negotiation::Serve
        );
        // A parameter-less listing inside a quoted string is not a listing.
        let quoted = headers(&[&format!("text/plain;x=\"a,{OCI_MANIFEST}\"")]);
        assert_eq!(negotiate(&quoted, OCI_MANIFEST), Negotiation::Bypass);
    }

    #[test]
    fn malformed_ranges_are_dropped() {
        for bad in [
            "application",
            "*/json",
            "application/",
            "/json",
            "application/vnd.oci.image.manifest.v1+json;q=2",
            "application/vnd.oci.image.manifest.v1+json;q=0.1234",
            "application/vnd.oci.image.manifest.v1+json;q=abc",
            "appli cation/json",
        ] {
            assert_eq!(parse_accept(values(&headers(&[bad]))).count(), 0, "{bad:?}");
        }
        assert_eq!(parse_qvalue("1.000"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("1.5"), None);
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0.001"), Some(1));
        assert_eq!(parse_qvalue("0"), Some(0));
    }

    #[test]
    fn content_type_without_slash_is_never_served() {
        assert_eq!(
            negotiate(&headers(&["*/*"]), "garbage"),
            Negotiation::Bypass
        );
    }
}

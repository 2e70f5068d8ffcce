//! Which request heads the express lane may answer, read from the raw head.
//!
//! Only the plainest requests qualify; everything else goes to Pingora, which is never
//! wrong. The rules lean on the side of falling back: a header this lane does not know
//! might change the answer (`Range`, `If-None-Match`, framing), so any
//! header outside a short list sends the request the long way. `Authorization` is
//! kept for [`super::Express`] to decide: without proxy auth it sends the request to
//! Pingora too.

/// Header fields beyond these send the request to Pingora.
const MAX_FIELDS: usize = 16;
/// `Accept` fields kept (more are unusual: the request goes to Pingora).
const MAX_ACCEPT: usize = 4;
/// Longest client request id taken as is (as `proxy::ctx::request_id`).
const MAX_REQUEST_ID: usize = 128;

/// The methods the lane answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    pub fn http(self) -> http::Method {
        match self {
            Method::Get => http::Method::GET,
            Method::Head => http::Method::HEAD,
        }
    }
}

/// A request head the lane may answer: `GET`/`HEAD` of an origin-form `/v2/` path
/// without a query, HTTP/1.1, one `Host`, no body, and only these header fields.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    pub path: &'a str,
    accept: [&'a [u8]; MAX_ACCEPT],
    accepts: usize,
    /// The client's `X-Request-Id`, when it is one the proxy keeps (short, printable).
    pub request_id: Option<&'a [u8]>,
    /// The `Authorization` field (at most one), for the proxy's auth to decide.
    pub authorization: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// The `Accept` field values, in order.
    pub fn accept(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.accept[..self.accepts].iter().copied()
    }
}

/// `head` is one complete request head (through its blank line). `None`: not for the
/// express lane.
pub fn parse(head: &[u8]) -> Option<Request<'_>> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    if req.version != Some(1) {
        return None;
    }
    let method = match req.method? {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return None,
    };
    let path = req.path?;
    if !path.starts_with("/v2/")
        || !path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        return None;
    }
    let mut out = Request {
        method,
        path,
        accept: [&[]; MAX_ACCEPT],
        accepts: 0,
        request_id: None,
        authorization: None,
    };
    let mut hosts = 0;
    let mut ids = 0;
    let mut authorizations = 0;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value;
        if name.eq_ignore_ascii_case(b"host") {
            if !value.iter().all(|&b| is_authority_byte(b)) || value.is_empty() {
                return None;
            }
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"accept") {
            *out.accept.get_mut(out.accepts)? = value;
            out.accepts += 1;
        } else if name.eq_ignore_ascii_case(b"x-request-id") {
            ids += 1;
            out.request_id = kept_request_id(value);
        } else if name.eq_ignore_ascii_case(b"authorization") {
            authorizations += 1;
            out.authorization = Some(value);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if !(name.eq_ignore_ascii_case(b"user-agent")
            || name.eq_ignore_ascii_case(b"accept-encoding"))
        {
            return None;
        }
    }
    // Pingora takes the first of several `X-Request-Id`s (and `Authorization`s); rare
    // enough to leave to it.
    (hosts == 1 && ids <= 1 && authorizations <= 1).then_some(out)
}

/// What `proxy::ctx::request_id` keeps of a client's id: short printable ASCII.
fn kept_request_id(value: &[u8]) -> Option<&[u8]> {
    (!value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value.iter().all(|b| b.is_ascii_graphic()))
    .then_some(value)
}

/// `Host` is a host name or address and an optional port.
fn is_authority_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[&str]) -> Vec<u8> {
        let mut h = lines.join("\r\n");
        h.push_str("\r\n\r\n");
        h.into_bytes()
    }

    const GET: &str = "GET /v2/apps/web/manifests/1.0.0 HTTP/1.1";

    #[test]
    fn a_plain_pull_qualifies() {
        let h = head(&[
            GET,
            "Host: registry.local:8080",
            "User-Agent: containerd/2.0",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            "Accept: application/vnd.oci.image.index.v1+json",
            "Connection: keep-alive",
            "X-Request-Id: abc-1",
        ]);
        let r = parse(&h).expect("qualifies");
        assert_eq!(r.method, Method::Get);
        assert_eq!(r.path, "/v2/apps/web/manifests/1.0.0");
        assert_eq!(r.accept().count(), 2);
        assert_eq!(r.request_id, Some(&b"abc-1"[..]));
        let h = head(&["HEAD /v2/a/blobs/sha256:00 HTTP/1.1", "host: x"]);
        let r = parse(&h).expect("HEAD");
        assert_eq!(r.method, Method::Head);
        assert_eq!(r.accept().count(), 0);
    }

    #[test]
    fn anything_that_could_change_the_answer_goes_to_pingora() {
        let refused: &[&[&str]] = &[
            &[GET],
            &[GET, "Host: a", "Host: b"],
            &[GET, "Host: a b"],
            &[GET, "Host: a", "Range: bytes=0-1"],
            &[GET, "Host: a", "If-None-Match: \"x\""],
            &[
                GET,
                "Host: a",
                "Authorization: Bearer t",
                "Authorization: Bearer u",
            ],
            &[GET, "Host: a", "Content-Length: 0"],
            &[GET, "Host: a", "Transfer-Encoding: chunked"],
            &[GET, "Host: a", "Connection: close"],
            &[GET, "Host: a", "Connection: upgrade"],
            &[GET, "Host: a", "Expect: 100-continue"],
            &[GET, "Host: a", "X-Request-Id: 1", "X-Request-Id: 2"],
            &[
                GET,
                "Host: a",
                "Accept: a",
                "Accept: b",
                "Accept: c",
                "Accept: d",
                "Accept: e",
            ],
            &["GET /v2/apps/web/manifests/1.0.0 HTTP/1.0", "Host: a"],
            &["PUT /v2/apps/web/manifests/1.0.0 HTTP/1.1", "Host: a"],
            &["GET /v2/apps/web/tags/list?n=1 HTTP/1.1", "Host: a"],
            &["GET /catalog HTTP/1.1", "Host: a"],
            &["GET http://a/v2/x/manifests/1 HTTP/1.1", "Host: a"],
        ];
        for lines in refused {
            assert!(parse(&head(lines)).is_none(), "{lines:?}");
        }
    }

    #[test]
    fn a_head_with_bytes_after_it_or_cut_short_does_not_qualify() {
        let mut h = head(&[GET, "Host: a"]);
        assert!(parse(&h).is_some());
        h.extend_from_slice(b"GET /v2/");
        assert!(parse(&h).is_none());
        let h = head(&[GET, "Host: a"]);
        assert!(parse(&h[..h.len() - 2]).is_none());
    }

    #[test]
    fn the_authorization_field_is_kept_for_the_proxy_auth_to_decide() {
        let h = head(&[GET, "Host: a", "Authorization: Bearer t.u.v"]);
        let r = parse(&h).expect("qualifies");
        assert_eq!(r.authorization, Some(&b"Bearer t.u.v"[..]));
        let h = head(&[GET, "Host: a"]);
        assert_eq!(parse(&h).expect("qualifies").authorization, None);
    }

    #[test]
    fn unkept_request_ids_are_dropped_not_refused() {
        let long = format!("X-Request-Id: {}", "x".repeat(200));
        let h = head(&[GET, "Host: a", &long]);
        let r = parse(&h).expect("qualifies");
        assert_eq!(r.request_id, None);
    }

    #[test]
    fn no_input_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let base = head(&[GET, "Host: a", "Accept: */*"]);
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut h = base.clone();
            let at = (seed as usize) % h.len();
            h[at] = (seed >> 32) as u8;
            h.truncate(at + 1 + (seed as usize >> 40) % (h.len() - at));
            let _ = parse(&h);
        }
    }
}

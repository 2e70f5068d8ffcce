//! Request framing the proxy refuses instead of forwarding (RFC 9112 §6.3): a request
//! whose length two parties could read differently can smuggle a second request past
//! whichever of them reads it the other way.
//!
//! Pingora 0.9.1 accepts identical duplicate `Content-Length` fields and forwards all of
//! them, and silently drops `Content-Length` when `Transfer-Encoding` is present; the
//! latter is only visible in the raw head, which is scanned only when that case is
//! possible.

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::oci::{OciError, OciErrorCode};

/// The framing fault of a request, if any. `raw_head` is read only when the request has
/// `Transfer-Encoding`.
pub fn check(req: &RequestHeader, raw_head: impl FnOnce() -> bytes::Bytes) -> Option<OciError> {
    let mut lengths = req.headers.get_all(CONTENT_LENGTH).iter();
    let first = lengths.next();
    if lengths.next().is_some() || first.is_some_and(|v| v.as_bytes().contains(&b',')) {
        return Some(refusal(
            "the request has more than one Content-Length",
            "header.Content-Length",
        ));
    }
    if req.headers.contains_key(TRANSFER_ENCODING) && has_content_length_line(&raw_head()) {
        return Some(refusal(
            "the request has both Transfer-Encoding and Content-Length",
            "header.Transfer-Encoding",
        ));
    }
    None
}

fn refusal(message: &str, path: &str) -> OciError {
    OciError::new(
        OciErrorCode::SizeInvalid,
        format!("{message} (RFC 9112 §6.3: ambiguous message framing)"),
    )
    .with_status(400)
    .with_detail(serde_json::json!({
        "rule": "rfc9112-6.3",
        "path": path,
        "message": message,
    }))
}

fn has_content_length_line(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("PUT", b"/v2/a/blobs/uploads/x", None).expect("request");
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).expect("header");
        }
        r
    }

    fn no_raw() -> bytes::Bytes {
        panic!("the raw head is only read when Transfer-Encoding is present")
    }

    #[test]
    fn one_content_length_passes() {
        assert!(check(&req(&[("Content-Length", "5")]), no_raw).is_none());
        assert!(check(&req(&[]), no_raw).is_none());
    }

    #[test]
    fn duplicate_content_length_is_refused() {
        let err = check(
            &req(&[("Content-Length", "5"), ("Content-Length", "5")]),
            no_raw,
        )
        .expect("refused");
        assert_eq!(err.status, 400);
        assert_eq!(err.errors[0].detail["rule"], "rfc9112-6.3");
        assert!(check(&req(&[("Content-Length", "5, 5")]), no_raw).is_some());
    }

    #[test]
    fn content_length_beside_transfer_encoding_is_refused() {
        // Pingora has already removed the Content-Length from the parsed header.
        let r = req(&[("Transfer-Encoding", "chunked")]);
        let raw = || {
            bytes::Bytes::from_static(
                b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n\r\n",
            )
        };
        assert!(check(&r, raw).is_some());
        let raw = || {
            bytes::Bytes::from_static(
                b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 5\r\n\r\n",
            )
        };
        assert!(check(&r, raw).is_none());
    }
}

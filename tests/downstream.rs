//! The client side of the proxy, driven with raw TCP clients against the real binary in
//! front of a real `docker-registry`: responses that fail after they started, slow and
//! oversized request heads, ambiguous framing, pipelining, graceful shutdown, and how
//! client disconnects are logged.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http, metric, push_blob, sha256, Proxy, Registry};

fn proxy_config(upstream: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - address: \"{{listen}}\"\nupstreams:\n  - name: main\n    url: {upstream}\nserver:\n  threads: 2\n{extra}"
    )
}

/// Log lines without the ANSI colour codes of the text format.
fn plain_log(p: &Proxy) -> Vec<String> {
    p.proc
        .log_lines()
        .into_iter()
        .map(|l| {
            let mut out = String::new();
            let mut chars = l.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

fn connect(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect to the proxy");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    s
}

/// Everything the server sends until it closes (or 20 s pass: then the test fails).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "the server did not close the connection: {e}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a Content-Length body (none for HEAD) from `buf` at `*pos`,
/// reading more from `s` as needed.
fn next_response(s: &mut TcpStream, buf: &mut Vec<u8>, pos: &mut usize, head: bool) -> Response {
    let mut chunk = [0u8; 65536];
    let end = loop {
        if let Some(i) = buf[*pos..].windows(4).position(|w| w == b"\r\n\r\n") {
            break *pos + i + 4;
        }
        let n = s.read(&mut chunk).expect("read response head");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf[*pos..])
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let text = String::from_utf8_lossy(&buf[*pos..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked && !head {
        // A body the proxy rewrote (a tags list) goes out chunked: RFC 9112 §7.1.
        let mut body = Vec::new();
        let mut at = end;
        loop {
            let line_end = loop {
                if let Some(i) = buf[at..].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                let n = s.read(&mut chunk).expect("read chunk size");
                assert!(n > 0, "connection closed in a chunked body");
                buf.extend_from_slice(&chunk[..n]);
            };
            let size_text = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            let data_end = line_end + 2 + size + 2;
            while buf.len() < data_end {
                let n = s.read(&mut chunk).expect("read chunk");
                assert!(n > 0, "connection closed in a chunk");
                buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            at = data_end;
            if size == 0 {
                break;
            }
        }
        *pos = at;
        return Response {
            status,
            headers,
            body,
        };
    }
    let len: usize = if head {
        0
    } else {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("neither Content-Length nor chunked: {text}"))
    };
    while buf.len() < end + len {
        let n = s.read(&mut chunk).expect("read response body");
        assert!(n > 0, "connection closed in a response body");
        buf.extend_from_slice(&chunk[..n]);
    }
    *pos = end + len;
    Response {
        status,
        headers,
        body: buf[end..end + len].to_vec(),
    }
}

fn assert_oci_error(body: &[u8], what: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let first = &v["errors"][0];
    assert!(
        first["code"].is_string() && first["message"].is_string(),
        "{what}: not an OCI error body: {v}"
    );
    v
}

/// Fault 2: docker-registry answers `Range: bytes=500-0` with 416, `Content-Length:
/// 2048` and a 14-byte body. The proxy used to append its own error JSON to that body.
#[test]
fn a_started_response_is_cut_short_never_appended_to() {
    let reg = Registry::start();
    let c = http();
    let blob: Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
    let digest = push_blob(&c, &reg.url(), "cut/short", &blob);
    let p = Proxy::start(&proxy_config(&reg.url(), ""));

    let mut s = connect(&p);
    write!(
        s,
        "GET /v2/cut/short/blobs/{digest} HTTP/1.1\r\nHost: x\r\nRange: bytes=500-0\r\n\r\n"
    )
    .expect("send");
    let got = read_to_close(&mut s);
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&got[..split]).to_lowercase();
    let body = &got[split..];
    assert!(head.starts_with("http/1.1 416"), "{head}");
    assert!(head.contains("content-length: 2048"), "{head}");
    assert!(
        body.len() < 2048,
        "the body must stay short of its announced length, got {} bytes",
        body.len()
    );
    assert!(
        !String::from_utf8_lossy(body).contains("errors"),
        "the proxy appended to a started body: {:?}",
        String::from_utf8_lossy(body)
    );
    assert_eq!(
        body, b"invalid range\n",
        "the upstream's bytes, and only them"
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = plain_log(&p);
        let line = log
            .iter()
            .find(|l| l.contains("margo_proxy::access") && l.contains("blob_get"));
        if let Some(line) = line {
            assert!(line.contains("status=416"), "real status logged: {line}");
            assert!(line.contains("prematurely closed"), "cause logged: {line}");
            assert!(
                !line.contains("upstream registry unavailable"),
                "no invented refusal: {line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no access log line: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fault 5: 100 connections sending one header byte per second are all closed (with a
/// 408 OCI error) within the header timeout, while a normal client is still served.
#[test]
fn slowloris_connections_are_closed_within_the_header_timeout() {
    let reg = Registry::start();
    let p = Proxy::start(&proxy_config(
        &reg.url(),
        "timeouts:\n  downstream_header: 2s\n",
    ));
    let trickle =
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut conns: Vec<(TcpStream, Vec<u8>, Option<Duration>)> = (0..100)
        .map(|_| {
            let s = TcpStream::connect(("127.0.0.1", p.port)).expect("connect");
            s.set_nonblocking(true).expect("nonblocking");
            (s, Vec::new(), None)
        })
        .collect();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(8) && conns.iter().any(|c| c.2.is_none()) {
        for (s, got, closed) in conns.iter_mut().filter(|c| c.2.is_none()) {
            if sent < trickle.len() {
                let _ = s.write(&trickle[sent..sent + 1]);
            }
            let mut buf = [0u8; 4096];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        *closed = Some(started.elapsed());
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *closed = Some(started.elapsed());
                        break;
                    }
                }
            }
        }
        sent += 1;
        if sent == 1 {
            // Meanwhile an ordinary client is served at once.
            let r = http()
                .get(format!("{}/v2/", p.url()))
                .send()
                .expect("normal request");
            assert_eq!(r.status(), 200);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for (i, (_, got, closed)) in conns.iter().enumerate() {
        let closed = closed.unwrap_or_else(|| panic!("connection {i} still open after 8 s"));
        assert!(
            closed < Duration::from_secs(5),
            "connection {i} closed only after {closed:?} (timeout 2 s)"
        );
        let text = String::from_utf8_lossy(got);
        assert!(text.starts_with("HTTP/1.1 408"), "connection {i}: {text}");
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4..];
        let v = assert_oci_error(body, "408");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("timeouts.downstream_header"),
            "{v}"
        );
    }
    let errors: Vec<_> = plain_log(&p)
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(errors.is_empty(), "refusals are not errors: {errors:?}");
}

/// Fault 11: heads the proxy refuses get an OCI body, not Pingora's empty 400.
#[test]
fn oversized_request_heads_get_oci_errors() {
    let reg = Registry::start();
    let p = Proxy::start(&proxy_config(&reg.url(), ""));
    let long_url = format!(
        "GET /v2/a/manifests/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    )
    .into_bytes();
    let big_header = {
        let mut h = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        h.extend(std::iter::repeat_n(b'b', 1 << 20));
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    let many_fields = {
        let mut h = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..300 {
            h.extend(format!("X-F{i}: v\r\n").bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    for (what, req, status, mentions) in [
        ("70 kB URL", long_url, 414, "request line"),
        (
            "1 MiB header",
            big_header,
            431,
            "limits.max_request_header_bytes",
        ),
        ("300 header fields", many_fields, 431, "header fields"),
    ] {
        let mut s = connect(&p);
        let mut w = s.try_clone().expect("clone");
        // The proxy answers before the client is done sending: write from a thread.
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&req);
        });
        let got = read_to_close(&mut s);
        let _ = writer.join();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {text}"
        );
        assert!(
            text.to_lowercase().contains("connection: close"),
            "{what}: {text}"
        );
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4..];
        let v = assert_oci_error(body, what);
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(mentions),
            "{what}: {v}"
        );
    }
    // An ordinary head still passes, right at the size of a big bearer token.
    let r = http()
        .get(format!("{}/v2/", p.url()))
        .header("X-Token", "t".repeat(16 * 1024))
        .send()
        .expect("request with a 16 KiB header");
    assert_eq!(r.status(), 200);
}

/// Fault 6: ambiguous framing is refused with 400 and never reaches the upstream.
#[test]
fn ambiguous_content_length_is_refused_and_never_forwarded() {
    let reg = Registry::start();
    let p = Proxy::start(&proxy_config(&reg.url(), ""));
    let cases: [(&str, &str, &[u8]); 2] = [
        (
            "duplicate Content-Length",
            "dup",
            b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        ),
        (
            "Content-Length with Transfer-Encoding",
            "te",
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
    ];
    for (what, repo, rest) in cases {
        let mut s = connect(&p);
        let mut req = format!(
            "PUT /v2/framing/{repo}/blobs/uploads/0123?digest=sha256:{} HTTP/1.1\r\nHost: x\r\n",
            "0".repeat(64)
        )
        .into_bytes();
        req.extend_from_slice(rest);
        s.write_all(&req).expect("send");
        let got = read_to_close(&mut s);
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{what}: {text}");
        let body = &got[got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4..];
        let v = assert_oci_error(body, what);
        assert_eq!(
            v["errors"][0]["detail"]["rule"], "rfc9112-6.3",
            "{what}: {v}"
        );
        assert_eq!(
            reg.wait_for_requests("PUT", &format!("/v2/framing/{repo}/"), 1),
            0,
            "{what}: forwarded upstream"
        );
    }
}

/// Fault 12: pipelined requests are answered in order (RFC 9112 §9.3.2), whether the
/// upstream or the proxy's cache answers them.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let reg = Registry::start();
    let c = http();
    let layer = push_blob(&c, &reg.url(), "pipe/line", b"layer");
    push_blob(&c, &reg.url(), "pipe/line", common::EMPTY_CONFIG.as_bytes());
    let manifest = common::image_manifest(
        &[(layer, 5, "application/vnd.oci.image.layer.v1.tar")],
        None,
    );
    let r = common::put_manifest(&c, &reg.url(), "pipe/line", "v1", &manifest);
    assert_eq!(r.status(), 201);
    let p = Proxy::start(&proxy_config(&reg.url(), ""));
    let accept = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";

    // Two GETs the upstream answers.
    let mut s = connect(&p);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nGET /v2/pipe/line/tags/list HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let (mut buf, mut pos) = (Vec::new(), 0);
    let first = next_response(&mut s, &mut buf, &mut pos, false);
    let second = next_response(&mut s, &mut buf, &mut pos, false);
    assert_eq!((first.status, second.status), (200, 200));
    assert!(String::from_utf8_lossy(&second.body).contains("v1"));

    // HEAD then GET of a manifest (the first pull fills the cache).
    let mut s = connect(&p);
    write!(
        s,
        "HEAD /v2/pipe/line/manifests/v1 HTTP/1.1\r\nHost: x\r\n{accept}\r\nGET /v2/pipe/line/manifests/v1 HTTP/1.1\r\nHost: x\r\n{accept}\r\n"
    )
    .expect("send");
    let (mut buf, mut pos) = (Vec::new(), 0);
    let head = next_response(&mut s, &mut buf, &mut pos, true);
    let get = next_response(&mut s, &mut buf, &mut pos, false);
    assert_eq!((head.status, get.status), (200, 200));
    assert_eq!(get.body, manifest);

    // Three GETs the cache answers (respond::write), then one the upstream answers.
    let mut s = connect(&p);
    let one = format!("GET /v2/pipe/line/manifests/v1 HTTP/1.1\r\nHost: x\r\n{accept}\r\n");
    write!(s, "{one}{one}{one}GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let (mut buf, mut pos) = (Vec::new(), 0);
    for i in 0..3 {
        let r = next_response(&mut s, &mut buf, &mut pos, false);
        assert_eq!(r.status, 200, "cached answer {i}");
        assert_eq!(r.body, manifest, "cached answer {i}");
        assert!(r.header("x-request-id").is_some());
    }
    let last = next_response(&mut s, &mut buf, &mut pos, false);
    assert_eq!(last.status, 200);
    assert_eq!(last.body, b"{}");

    // A pipelined PUT whose head arrives with the previous request and whose body comes
    // later: the body must pass straight through (its head was never read from the socket).
    let mut s = connect(&p);
    write!(
        s,
        "GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nPUT /v2/pipe/line/manifests/v2 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\n\r\n",
        manifest.len()
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&manifest).expect("send body");
    let started = Instant::now();
    let (mut buf, mut pos) = (Vec::new(), 0);
    let ping = next_response(&mut s, &mut buf, &mut pos, false);
    let put = next_response(&mut s, &mut buf, &mut pos, false);
    assert_eq!(ping.status, 200);
    assert_eq!(put.status, 201, "{}", String::from_utf8_lossy(&put.body));
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Fault 7: SIGTERM during a 256 MiB download lets it finish byte-exact, refuses new
/// connections, and the process exits right after, long before `shutdown_timeout`.
#[test]
fn sigterm_lets_an_in_flight_download_finish_then_exits() {
    let reg = Registry::start();
    let c = http();
    let blob: Vec<u8> = (0..256u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let digest = push_blob(&c, &reg.url(), "big/blob", &blob);
    drop(blob);
    let mut p = Proxy::start(&proxy_config(&reg.url(), "  shutdown_timeout: 60s\n"));
    let mut s = connect(&p);
    write!(
        s,
        "GET /v2/big/blob/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .expect("send");
    let mut got = Vec::with_capacity(257 << 20);
    let mut buf = vec![0u8; 1 << 20];
    while got.len() < 4 << 20 {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
    }
    p.proc.signal("TERM");
    // Stay slow for a while: the download must outlive the signal by seconds.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        TcpStream::connect(("127.0.0.1", p.port)).is_err(),
        "the listener still accepts after SIGTERM"
    );
    loop {
        let n = s.read(&mut buf).expect("read after SIGTERM");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let done = Instant::now();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert!(got.starts_with(b"HTTP/1.1 200"));
    assert_eq!(
        got.len() - split,
        256 << 20,
        "the download was cut after SIGTERM"
    );
    assert_eq!(
        sha256(&got[split..]),
        digest,
        "the download is not byte-exact"
    );
    let status = p
        .proc
        .wait_exit(Duration::from_secs(10))
        .expect("the proxy still runs 10 s after its last request");
    assert!(
        done.elapsed() < Duration::from_secs(5),
        "exit took {:?} after the last request",
        done.elapsed()
    );
    assert!(status.success(), "exit status {status}");
}

/// Fault 13: a client that goes away mid-download is routine: logged at info with the
/// cause, not at ERROR.
#[test]
fn client_disconnects_are_logged_at_info_with_the_cause() {
    let reg = Registry::start();
    let c = http();
    let blob = vec![7u8; 32 << 20];
    let digest = push_blob(&c, &reg.url(), "gone/away", &blob);
    let p = Proxy::start(&proxy_config(&reg.url(), ""));
    {
        let mut s = connect(&p);
        write!(
            s,
            "GET /v2/gone/away/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("send");
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0);
        s.shutdown(std::net::Shutdown::Both).expect("shutdown");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = plain_log(&p);
        if let Some(line) = log.iter().find(|l| l.contains("client disconnected")) {
            assert!(line.contains(" INFO "), "{line}");
            assert!(line.contains("cause="), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no disconnect logged: {log:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let errors: Vec<_> = plain_log(&p)
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .collect();
    assert!(
        errors.is_empty(),
        "a disconnect is not an error: {errors:#?}"
    );
}

/// A package in the registry: manifest `v1` listing a 3 KiB and a 10 KiB blob.
fn push_small_package(reg: &Registry, repo: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let c = http();
    let blobs: Vec<Vec<u8>> = [(3u8, 3072usize), (9, 10_240)]
        .iter()
        .map(|&(seed, len)| (0..len).map(|i| (i as u8).wrapping_mul(seed)).collect())
        .collect();
    let digests: Vec<String> = blobs
        .iter()
        .map(|b| push_blob(&c, &reg.url(), repo, b))
        .collect();
    push_blob(&c, &reg.url(), repo, common::EMPTY_CONFIG.as_bytes());
    let manifest = common::image_manifest(
        &[
            (
                digests[0].clone(),
                3072,
                "application/vnd.margo.app.description.v1+yaml",
            ),
            (digests[1].clone(), 10_240, "image/png"),
        ],
        Some("application/vnd.margo.app.v1+json"),
    );
    let r = common::put_manifest(&c, &reg.url(), repo, "v1", &manifest);
    assert_eq!(r.status(), 201);
    (manifest, digests.into_iter().zip(blobs).collect())
}

/// Sends `request` `n` times on one keep-alive connection; the answers.
fn exchange(p: &Proxy, request: &str, head: bool, n: usize) -> Vec<Response> {
    let mut s = connect(p);
    let (mut buf, mut pos) = (Vec::new(), 0);
    (0..n)
        .map(|_| {
            s.write_all(request.as_bytes()).expect("send");
            next_response(&mut s, &mut buf, &mut pos, head)
        })
        .collect()
}

/// An answer as compared across the two paths: the `Date` and a generated request id
/// differ by nature (the id must still be a fresh UUID).
fn comparable(r: &Response, client_id: bool) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let headers = r
        .headers
        .iter()
        .filter(|(n, _)| n != "Date")
        .map(|(n, v)| match (n.as_str(), client_id) {
            ("x-request-id", false) => {
                assert_eq!(v.len(), 36, "a generated id: {v}");
                (n.clone(), "<generated>".to_owned())
            }
            _ => (n.clone(), v.clone()),
        })
        .collect();
    (r.status, headers, r.body.clone())
}

/// The express lane answers warm pulls with the very bytes of Pingora's path (header
/// names, order and values, body), counts them, and Pingora's path (`express: false`)
/// never does.
#[test]
fn express_answers_are_the_bytes_of_the_proxy_path() {
    let reg = Registry::start();
    let (manifest, blobs) = push_small_package(&reg, "fast/lane");
    let config = |express: bool| {
        format!(
            "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: {}\nserver:\n  threads: 2\n  express: {express}\n",
            reg.url()
        )
    };
    let fast = Proxy::start(&config(true));
    let slow = Proxy::start(&config(false));
    let digest = sha256(&manifest);
    let oci = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";
    let kinds: Vec<(String, bool, bool)> = vec![
        (format!("GET /v2/fast/lane/manifests/v1 HTTP/1.1\r\nHost: x\r\n{oci}\r\n"), false, false),
        (format!("HEAD /v2/fast/lane/manifests/v1 HTTP/1.1\r\nHost: x\r\n{oci}\r\n"), true, false),
        (format!("GET /v2/fast/lane/manifests/{digest} HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nAccept: text/plain, application/vnd.oci.image.manifest.v1+json;q=0.5\r\nConnection: keep-alive\r\n\r\n"), false, false),
        (format!("GET /v2/fast/lane/manifests/v1 HTTP/1.1\r\nHost: x\r\nX-Request-Id: pull-7\r\n{oci}\r\n"), false, true),
        (format!("GET /v2/fast/lane/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n", blobs[0].0), false, false),
        (format!("HEAD /v2/fast/lane/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n", blobs[1].0), true, false),
        (format!("GET /v2/fast/lane/blobs/{} HTTP/1.1\r\nHost: x\r\n\r\n", blobs[1].0), false, false),
    ];
    // Warm both proxies' caches and every worker thread's front (a connection stays on
    // the thread that accepted it, so use several).
    for p in [&fast, &slow] {
        for (request, head, _) in &kinds {
            for _ in 0..6 {
                exchange(p, request, *head, 2);
            }
        }
    }
    let before = metric(&fast, "margo_proxy_express_answers_total");
    for (request, head, client_id) in &kinds {
        let got = exchange(&fast, request, *head, 20);
        let want = exchange(&slow, request, *head, 20);
        let reference = comparable(&want[0], *client_id);
        for (i, r) in got.iter().chain(want.iter()).enumerate() {
            assert_eq!(
                comparable(r, *client_id),
                reference,
                "{request:?} answer {i}"
            );
        }
        assert_eq!(reference.0, 200, "{request:?}");
        if !head {
            let expected = if request.contains("/manifests/") {
                manifest.clone()
            } else {
                blobs
                    .iter()
                    .find(|(d, _)| request.contains(d.as_str()))
                    .expect("blob")
                    .1
                    .clone()
            };
            assert_eq!(reference.2, expected, "{request:?}");
        }
    }
    let answered = metric(&fast, "margo_proxy_express_answers_total") - before;
    assert!(
        answered >= 100.0,
        "the express lane answered {answered} of the 140 warm pulls"
    );
    assert_eq!(metric(&slow, "margo_proxy_express_answers_total"), 0.0);
    // On one connection: a lone request, two pipelined ones (Pingora takes those and
    // the bytes it read past the first), then lone ones again; all in order.
    let get = &kinds[0].0;
    let blob_get = &kinds[4].0;
    let mut s = connect(&fast);
    let (mut buf, mut pos) = (Vec::new(), 0);
    for batch in [
        vec![get],
        vec![blob_get, get],
        vec![get, blob_get, get],
        vec![blob_get],
        vec![get],
    ] {
        let text: String = batch.iter().map(|r| r.as_str()).collect();
        s.write_all(text.as_bytes()).expect("send");
        for request in batch {
            let r = next_response(&mut s, &mut buf, &mut pos, false);
            let want = if request == get {
                &manifest
            } else {
                &blobs[0].1
            };
            assert_eq!((r.status, &r.body), (200, want), "{request:?}");
        }
    }
    // Not for the lane: a range, a conditional request, a query. Pingora answers them.
    let range = exchange(
        &fast,
        &format!(
            "GET /v2/fast/lane/blobs/{} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n",
            blobs[1].0
        ),
        false,
        1,
    );
    assert_eq!(range[0].status, 206);
    assert_eq!(range[0].body, blobs[1].1[..10]);
    let before = metric(&fast, "margo_proxy_express_answers_total");
    let close = exchange(
        &fast,
        &format!(
            "GET /v2/fast/lane/manifests/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{oci}\r\n"
        ),
        false,
        1,
    );
    assert_eq!(close[0].status, 200);
    assert_eq!(close[0].header("connection"), Some("close"));
    assert_eq!(metric(&fast, "margo_proxy_express_answers_total"), before);
}

const EXPRESS_KID: &str = "express-auth";

/// With client auth on, the lane answers the pulls the caller may make when memory
/// decides the grant (a token verified before, an anonymous pull), with the bytes,
/// access-log subject and auth counts of Pingora's path; every refusal stays
/// Pingora's, with the same `401`/`403` answers: authorization runs before the cache.
#[test]
fn express_answers_granted_pulls_and_leaves_refusals_to_pingora() {
    let reg = Registry::start();
    let (manifest, blobs) = push_small_package(&reg, "private/app");
    let (open_manifest, _) = push_small_package(&reg, "open/app");
    let config = |express: bool| {
        format!(
            r#"listeners:
  - address: "{{listen}}"
admin:
  address: "{{admin}}"
upstreams:
  - name: main
    url: {}
server:
  threads: 2
  express: {express}
auth:
  realm: "{{proxy_url}}/token"
  service: margo-express
  issuers:
    - issuer: https://idp.test
      audiences: [margo-express]
      keys: {{static: [{{kid: {EXPRESS_KID}, pem_file: "{}"}}]}}
      algorithms: [RS256]
  rules:
    - match: [{{claim: groups, values: [readers]}}]
      grant: {{"private/**": [pull]}}
    - match: [{{claim: groups, values: [others]}}]
      grant: {{"elsewhere/**": [pull]}}
  anonymous_pull: ["open/**"]
"#,
            reg.url(),
            common::repo_root()
                .join("tests/fixtures/auth/rsa_public.pem")
                .display()
        )
    };
    let fast = Proxy::start(&config(true));
    let slow = Proxy::start(&config(false));
    let reader = common::mint_token(EXPRESS_KID, "margo-express", "readers");
    let other = common::mint_token(EXPRESS_KID, "margo-express", "others");
    let oci = "Accept: application/vnd.oci.image.manifest.v1+json\r\n";
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    let granted: Vec<(String, bool)> = vec![
        (
            format!(
                "GET /v2/private/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{}{oci}\r\n",
                bearer(&reader)
            ),
            false,
        ),
        (
            format!(
                "HEAD /v2/private/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{oci}{}\r\n",
                bearer(&reader)
            ),
            true,
        ),
        (
            format!(
                "GET /v2/private/app/blobs/{} HTTP/1.1\r\nHost: x\r\n{}\r\n",
                blobs[0].0,
                bearer(&reader)
            ),
            false,
        ),
        (
            format!("GET /v2/open/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{oci}\r\n"),
            false,
        ),
    ];
    for p in [&fast, &slow] {
        for (request, head) in &granted {
            for _ in 0..6 {
                exchange(p, request, *head, 2);
            }
        }
    }
    let allowed = r#"margo_proxy_auth_decisions_total{reason="token",result="allow"}"#;
    let anonymous = r#"margo_proxy_auth_decisions_total{reason="anonymous",result="allow"}"#;
    let counts = |p: &Proxy| {
        [
            metric(p, allowed),
            metric(p, anonymous),
            metric(p, "margo_proxy_express_answers_total"),
        ]
    };
    let (fast_before, slow_before) = (counts(&fast), counts(&slow));
    for (request, head) in &granted {
        let got = exchange(&fast, request, *head, 20);
        let want = exchange(&slow, request, *head, 20);
        let reference = comparable(&want[0], false);
        for (i, r) in got.iter().chain(want.iter()).enumerate() {
            assert_eq!(comparable(r, false), reference, "{request:?} answer {i}");
        }
        assert_eq!(reference.0, 200, "{request:?}");
        if !head {
            let expected = if request.contains("/blobs/") {
                &blobs[0].1
            } else if request.contains("open/") {
                &open_manifest
            } else {
                &manifest
            };
            assert_eq!(&reference.2, expected, "{request:?}");
        }
    }
    let (fast_after, slow_after) = (counts(&fast), counts(&slow));
    let delta = |a: [f64; 3], b: [f64; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let (fast_delta, slow_delta) = (
        delta(fast_after, fast_before),
        delta(slow_after, slow_before),
    );
    assert_eq!(
        fast_delta[..2],
        [60.0, 20.0],
        "auth decisions counted once per request"
    );
    assert_eq!(
        slow_delta[..2],
        fast_delta[..2],
        "the same decisions on both paths"
    );
    assert!(
        fast_delta[2] >= 60.0,
        "the lane answered {} of the 80 pulls",
        fast_delta[2]
    );
    assert_eq!(slow_delta[2], 0.0);

    // Every blob pull so far came with the reader's token (12 warming, 20 compared):
    // each line names its subject, whichever path answered it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines: Vec<String> = plain_log(&fast)
            .into_iter()
            .filter(|l| l.contains("margo_proxy::access") && l.contains("blob_get"))
            .collect();
        if lines.len() >= 32 {
            assert_eq!(lines.len(), 32, "{lines:?}");
            for l in &lines {
                assert!(l.contains("subject=\"readers\""), "{l}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "{} blob_get lines", lines.len());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Refusals: no token, a token for other repositories, a bad token, a token-less
    // ping. Pingora answers each, on both proxies alike, and the lane answers none.
    let refused = [
        (format!("GET /v2/private/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{oci}\r\n"), 401),
        (format!("GET /v2/private/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{}{oci}\r\n", bearer(&other)), 403),
        (format!("GET /v2/private/app/blobs/{} HTTP/1.1\r\nHost: x\r\n{}\r\n", blobs[0].0, bearer(&other)), 403),
        (format!("GET /v2/open/app/manifests/v1 HTTP/1.1\r\nHost: x\r\n{}{oci}\r\n", bearer("not.a.token")), 401),
        (format!("GET /v2/private/app/manifests/v1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {reader}\r\nAuthorization: Bearer {reader}\r\n{oci}\r\n"), 200),
        ("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(), 401),
    ];
    // The challenge's realm is each proxy's own address.
    let own = |p: &Proxy, r: &Response| {
        let (status, headers, body) = comparable(r, false);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (n, v.replace(&p.url(), "<proxy>")))
            .collect();
        (status, headers, body)
    };
    let before = metric(&fast, "margo_proxy_express_answers_total");
    for (request, status) in &refused {
        let got = exchange(&fast, request, false, 3);
        let want = exchange(&slow, request, false, 3);
        let reference = own(&slow, &want[0]);
        for (p, r) in got
            .iter()
            .map(|r| (&fast, r))
            .chain(want.iter().map(|r| (&slow, r)))
        {
            assert_eq!(r.status, *status, "{request:?}");
            assert_eq!(own(p, r), reference, "{request:?}");
        }
        if *status != 200 {
            assert!(
                want[0]
                    .header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer realm=")),
                "{request:?}: {:?}",
                want[0].headers
            );
        }
    }
    assert_eq!(metric(&fast, "margo_proxy_express_answers_total"), before);
}

/// A keep-alive connection the express lane has answered on (tries new connections
/// until one lands on a worker thread whose cache front holds the manifest).
fn express_connection(p: &Proxy, get: &str, manifest: &[u8]) -> TcpStream {
    for _ in 0..50 {
        let before = metric(p, "margo_proxy_express_answers_total");
        let mut s = connect(p);
        let (mut buf, mut pos) = (Vec::new(), 0);
        s.write_all(get.as_bytes()).expect("send");
        let r = next_response(&mut s, &mut buf, &mut pos, false);
        assert_eq!(r.body, manifest);
        if metric(p, "margo_proxy_express_answers_total") > before {
            return s;
        }
    }
    panic!("no connection was answered by the express lane");
}

/// A connection idle after an express answer ends at the keep-alive timeout, and at
/// shutdown right away (not at the keep-alive timeout, here a minute).
#[test]
fn idle_express_connections_end_at_the_keepalive_timeout_and_at_shutdown() {
    let reg = Registry::start();
    let (manifest, _) = push_small_package(&reg, "idle/lane");
    let config = |keepalive: &str| {
        format!(
            "listeners:\n  - address: \"{{listen}}\"\nadmin:\n  address: \"{{admin}}\"\nupstreams:\n  - name: main\n    url: {}\nserver:\n  threads: 2\ntimeouts:\n  downstream_keepalive: {keepalive}\n",
            reg.url()
        )
    };
    let get = "GET /v2/idle/lane/manifests/v1 HTTP/1.1\r\nHost: x\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n";
    let p = Proxy::start(&config("1s"));
    let mut s = express_connection(&p, get, &manifest);
    let idle = Instant::now();
    assert!(read_to_close(&mut s).is_empty());
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}, keep-alive timeout 1s"
    );
    let mut p = Proxy::start(&config("60s"));
    let mut s = express_connection(&p, get, &manifest);
    p.proc.signal("TERM");
    let asked = Instant::now();
    assert!(read_to_close(&mut s).is_empty());
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        p.proc.wait_exit(Duration::from_secs(10)).is_some(),
        "still running"
    );
}

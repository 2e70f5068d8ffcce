//! Upstream faults no stock registry produces on demand: headers trickled a byte at a
//! time, silence, oversized answers to a push, a stale token. The upstream here is a
//! small HTTP/1.1 server on 127.0.0.1 that plays one scripted fault per test (a fault
//! injector, in the role `tc`/toxiproxy would have); the proxy is the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// How long a fault server lives at most, whatever happens to the test.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// What the fault server does with one request.
enum Reply {
    /// Reads the request and never answers (until the server stops).
    Silent,
    /// Writes these bytes one at a time, `pause` apart.
    Trickle(Vec<u8>, Duration),
    /// Writes these bytes at once.
    Send(Vec<u8>),
}

type Script = dyn Fn(u16, &str, usize) -> Reply + Send + Sync;

/// The scripted upstream: `script(port, request head, index)` decides each answer.
struct FaultServer {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FaultServer {
    fn start(script: impl Fn(u16, &str, usize) -> Reply + Send + Sync + 'static) -> FaultServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fault server");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::new(script);
        let (heads2, stop2) = (heads.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let count = Arc::new(AtomicUsize::new(0));
            while !stop2.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (heads, stop, script, count) =
                            (heads2.clone(), stop2.clone(), script.clone(), count.clone());
                        std::thread::spawn(move || {
                            serve(stream, port, &heads, &stop, &*script, &count, started)
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FaultServer {
            port,
            heads,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Requests received whose first line starts with `start`.
    fn count(&self, start: &str) -> usize {
        self.heads().iter().filter(|h| h.starts_with(start)).count()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    port: u16,
    heads: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    script: &Script,
    count: &AtomicUsize,
    started: Instant,
) {
    let alive = || !stop.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = Vec::new();
    while alive() {
        // One request: head, then a Content-Length body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if !alive() {
                        return;
                    }
                }
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().unwrap_or(0))
            })
            .unwrap_or(0);
        while buf.len() < head_end + len && alive() {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        buf.drain(..(head_end + len).min(buf.len()));
        heads.lock().unwrap().push(head.clone());
        let n = count.fetch_add(1, Ordering::SeqCst);
        match script(port, &head, n) {
            Reply::Silent => {
                while alive() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Reply::Trickle(bytes, pause) => {
                for b in bytes {
                    if !alive() || stream.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            }
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).is_err() {
                    return;
                }
            }
        }
    }
}

fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response head long enough that, at one byte per 100 ms, it takes a minute.
fn slow_head() -> Vec<u8> {
    let pad = "a".repeat(560);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: {pad}\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

fn proxy(upstream: &str, cache: bool, extra: &str) -> Proxy {
    Proxy::start(&format!(
        "listeners: [{{address: \"{{listen}}\"}}]\nupstreams:\n  - name: main\n    url: \"{upstream}\"\n{extra}timeouts: {{read: 1s}}\ncache: {{enabled: {cache}}}\nserver: {{threads: 2}}\n"
    ))
}

/// A `504` whose body is an OCI error with code `UNAVAILABLE`.
fn assert_gateway_timeout(r: reqwest::blocking::Response, what: &str) {
    assert_eq!(r.status(), 504, "{what}");
    let v: serde_json::Value = r.json().expect("OCI error body");
    assert_eq!(v["errors"][0]["code"], "UNAVAILABLE", "{what}: {v}");
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";

#[test]
fn headers_trickled_a_byte_at_a_time_are_cut_on_the_streamed_path() {
    let up = FaultServer::start(|_, _, _| Reply::Trickle(slow_head(), Duration::from_millis(100)));
    let p = proxy(&up.url(), false, "");
    let c = http();
    for path in ["/v2/a/manifests/1.0.0", "/v2/a/tags/list"] {
        let started = Instant::now();
        let r = c
            .get(format!("{}{path}", p.url()))
            .header("Accept", ACCEPT)
            .send()
            .expect("an answer before the client gives up");
        assert_gateway_timeout(r, path);
        // The head would take a minute; the deadline is the 1 s read timeout.
        assert!(started.elapsed() < Duration::from_secs(10), "{path}");
    }
}

#[test]
fn headers_trickled_a_byte_at_a_time_are_cut_on_the_cache_path() {
    let up = FaultServer::start(|_, _, _| Reply::Trickle(slow_head(), Duration::from_millis(100)));
    let p = proxy(&up.url(), true, "");
    let started = Instant::now();
    let r = http()
        .get(format!("{}/v2/a/manifests/1.0.0", p.url()))
        .header("Accept", ACCEPT)
        .send()
        .expect("an answer before the client gives up");
    assert_gateway_timeout(r, "manifest GET by tag");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_silent_upstream_costs_one_timeout_with_the_cache_on() {
    let up = FaultServer::start(|_, _, _| Reply::Silent);
    let p = proxy(&up.url(), true, "");
    let r = http()
        .get(format!("{}/v2/a/manifests/1.0.0", p.url()))
        .header("Accept", ACCEPT)
        .send()
        .expect("an answer");
    assert_gateway_timeout(r, "manifest GET by tag");
    // One exchange timed out (the cache's tag probe); the request was not proxied
    // again to time out a second time.
    std::thread::sleep(Duration::from_millis(300));
    let heads = up.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].starts_with("HEAD /v2/a/manifests/1.0.0"),
        "{heads:?}"
    );
}

#[test]
fn a_re_issued_push_chains_x_forwarded_for_and_refuses_an_oversized_answer() {
    // 100 KiB, chunked, so only reading it shows its size.
    let big = "x".repeat(100 * 1024);
    let chunked = format!(
        "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nDocker-Content-Digest: sha256:{}\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        "0".repeat(64),
        big.len()
    );
    let up = FaultServer::start(move |_, head, _| {
        if head.starts_with("PUT ") {
            Reply::Send(chunked.clone().into_bytes())
        } else {
            Reply::Send(response("404 Not Found", &[], b""))
        }
    });
    let p = proxy(&up.url(), true, "");
    let manifest = image_manifest(&[], None);
    let r = http()
        .put(format!("{}/v2/lib/app/manifests/1.0.0", p.url()))
        .header("Content-Type", ACCEPT)
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Request-Id", "push-42")
        .body(manifest)
        .send()
        .unwrap();
    assert_eq!(r.status(), 502, "an answer the proxy cannot relay whole");
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["errors"][0]["code"], "SIZE_INVALID", "{v}");
    let heads = up.heads();
    let put = heads
        .iter()
        .find(|h| h.starts_with("PUT /v2/lib/app/manifests/1.0.0"))
        .expect("the push was re-issued")
        .to_ascii_lowercase();
    assert!(
        put.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\r\n"),
        "{put}"
    );
    assert!(put.contains("x-request-id: push-42\r\n"), "{put}");
    assert!(put.contains("x-forwarded-proto: http\r\n"), "{put}");
}

#[test]
fn an_upstream_401_on_a_re_issued_push_is_retried_with_a_fresh_token() {
    let tokens = Arc::new(AtomicUsize::new(0));
    let puts = Arc::new(AtomicUsize::new(0));
    let (tokens2, puts2) = (tokens.clone(), puts.clone());
    let up = FaultServer::start(move |port, head, _| {
        let challenge = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fault\"");
        if head.starts_with("GET /v2/ ") {
            Reply::Send(response(
                "401 Unauthorized",
                &[("WWW-Authenticate", &challenge)],
                b"",
            ))
        } else if head.starts_with("GET /token") {
            let n = tokens2.fetch_add(1, Ordering::SeqCst) + 1;
            let body = format!("{{\"token\":\"t{n}\",\"expires_in\":300}}");
            Reply::Send(response("200 OK", &[], body.as_bytes()))
        } else if head.starts_with("PUT ") {
            // The first token "expired" at the upstream; the second one is good.
            if puts2.fetch_add(1, Ordering::SeqCst) == 0 {
                let stale = format!("{challenge},error=\"invalid_token\"");
                Reply::Send(response(
                    "401 Unauthorized",
                    &[("WWW-Authenticate", &stale)],
                    b"",
                ))
            } else {
                Reply::Send(response("201 Created", &[], b""))
            }
        } else {
            Reply::Send(response("404 Not Found", &[], b""))
        }
    });
    let p = proxy(
        &up.url(),
        false,
        "    credentials: {username: u, password: p}\n",
    );
    let r = http()
        .put(format!("{}/v2/lib/app/manifests/1.0.0", p.url()))
        .header("Content-Type", ACCEPT)
        .body(image_manifest(&[], None))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    assert_eq!(puts.load(Ordering::SeqCst), 2, "{:?}", up.heads());
    assert_eq!(up.count("GET /token"), 2, "{:?}", up.heads());
    let second = up
        .heads()
        .into_iter()
        .filter(|h| h.starts_with("PUT "))
        .nth(1)
        .unwrap()
        .to_ascii_lowercase();
    assert!(second.contains("authorization: bearer t2\r\n"), "{second}");
}

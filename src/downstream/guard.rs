//! The client connection as Pingora reads it, with the request head held back until it
//! is complete.
//!
//! Pingora 0.9.1 bounds each read of a request head, not the whole head (a client
//! sending one byte per second keeps its connection forever), and refuses oversized
//! heads with a bare 400 after buffering up to 1 MiB. This wrapper sits under Pingora's
//! HTTP/1 session: it reads the head itself, within `timeouts.downstream_header` and the
//! [`HeadLimits`], and hands it over only once it is complete. A head that is too slow
//! or too large is answered here (408, 414 or 431 with an OCI body and
//! `Connection: close`) and the connection ends as if the client had closed it before
//! sending anything, which Pingora treats as routine.
//!
//! The request body and everything after it pass through untouched. The proxy marks the
//! head as read in `early_request_filter` ([`GuardedStream::head_read`]), which covers a
//! pipelined head that Pingora already holds and never reads from the socket.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::head::{HeadLimit, HeadLimits, HeadScanner, Scan};
use crate::oci::{OciError, OciErrorCode};

/// Read size while collecting a head.
const READ_CHUNK: usize = 8 * 1024;

thread_local! {
    /// Where heads are read before they are appended to a connection's `held` bytes.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}
/// After a refusal, how long (and how much) the client's unread bytes are drained so the
/// close is a FIN the client reads our answer before, not a reset that discards it.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// What every connection's guard is held to, built once from the config.
#[derive(Debug, Clone, Copy)]
pub struct HeadPolicy {
    /// From accept (first request) or the first byte (later requests) to the end of
    /// the head.
    pub timeout: Duration,
    pub limits: HeadLimits,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Timeout,
    TooLarge(HeadLimit),
}

impl Refusal {
    /// The response: status line, headers and OCI body, ready for the wire.
    pub fn response(self, policy: &HeadPolicy) -> Vec<u8> {
        let (status, reason, message) = match self {
            Refusal::Timeout => (
                408,
                "Request Timeout",
                format!(
                    "the request header was not complete within {:?} (timeouts.downstream_header)",
                    policy.timeout
                ),
            ),
            Refusal::TooLarge(HeadLimit::RequestLine) => (
                414,
                "URI Too Long",
                format!(
                    "the request line is longer than {} bytes",
                    policy.limits.max_request_line
                ),
            ),
            Refusal::TooLarge(HeadLimit::Fields) => (
                431,
                "Request Header Fields Too Large",
                format!(
                    "the request has more than {} header fields",
                    policy.limits.max_fields
                ),
            ),
            Refusal::TooLarge(HeadLimit::Bytes) => (
                431,
                "Request Header Fields Too Large",
                format!(
                    "the request header is larger than {} bytes (limits.max_request_header_bytes)",
                    policy.limits.max_bytes
                ),
            ),
        };
        let code = match self {
            Refusal::Timeout => OciErrorCode::Unavailable,
            Refusal::TooLarge(_) => OciErrorCode::SizeInvalid,
        };
        let body = OciError::new(code, message).with_status(status).body();
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}: {}\r\nConnection: close\r\n\r\n",
            body.len(),
            crate::oci::headers::DOCKER_DISTRIBUTION_API_VERSION.as_str(),
            crate::oci::headers::API_VERSION_VALUE,
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    }

    pub fn status(self) -> u16 {
        match self {
            Refusal::Timeout => 408,
            Refusal::TooLarge(HeadLimit::RequestLine) => 414,
            Refusal::TooLarge(_) => 431,
        }
    }
}

enum Phase {
    /// Collecting a head in `held`.
    Head,
    /// Handing `held[released..]` to Pingora.
    Release,
    /// Body and anything after it: plain pass-through.
    Body,
    /// Writing `answer[written..]`, then shutting the write side.
    Refusing {
        answer: Vec<u8>,
        written: usize,
        flushed: bool,
    },
    /// Draining what the client still sends, until EOF, [`LINGER`] or [`LINGER_BYTES`].
    Linger { drained: usize },
    /// Reads report end of stream.
    Closed,
}

/// A client connection whose request heads are bounded in time and size.
pub struct GuardedStream {
    inner: Stream,
    policy: Arc<HeadPolicy>,
    phase: Phase,
    held: Vec<u8>,
    released: usize,
    scanner: HeadScanner,
    /// When the head must be complete; `None` until a later request's first byte.
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Set by the proxy once Pingora has parsed a head (it may never read one from the
    /// socket: a pipelined request can arrive with the previous one's bytes).
    head_read: AtomicBool,
    /// The current head's length in `held`, once it is complete.
    head_len: usize,
    /// Bytes past the head handed to Pingora since [`Self::wait_next`]: while none
    /// were, and it read the head from here, Pingora holds nothing of the next request
    /// (no pipelined prefix).
    beyond_head: usize,
    /// Pingora read this request's whole head from here (not from bytes it already held).
    head_handed: bool,
    /// Waiting for a kept-alive connection's next request: `deadline` is the
    /// keep-alive timeout, and becomes the head's once a first byte comes.
    idle: bool,
    peer: Option<SocketAddr>,
}

/// What [`GuardedStream::complete_head`] found.
pub enum HeadWait<'a> {
    /// A complete head, and nothing after it yet.
    Alone(&'a [u8]),
    /// Anything else (more bytes after the head, a refusal, the end): Pingora reads it.
    Other,
}

impl std::fmt::Debug for GuardedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedStream")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl GuardedStream {
    /// A freshly accepted connection: its first head is due `policy.timeout` from now.
    pub fn new(inner: Stream, policy: Arc<HeadPolicy>) -> Self {
        let peer = inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()));
        GuardedStream {
            inner,
            scanner: HeadScanner::new(policy.limits),
            deadline: Some(Instant::now() + policy.timeout),
            policy,
            phase: Phase::Head,
            held: Vec::new(),
            released: 0,
            timer: None,
            head_read: AtomicBool::new(false),
            head_len: 0,
            beyond_head: 0,
            head_handed: false,
            idle: false,
            peer,
        }
    }

    /// The client's address, when it is an IP socket.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Waits for the current request's head (bounded as Pingora's reads of it are).
    pub async fn complete_head(&mut self) -> HeadWait<'_> {
        let waited = std::future::poll_fn(|cx| match self.phase {
            Phase::Head => self.poll_head(cx),
            _ => Poll::Ready(Ok(())),
        })
        .await;
        match (waited, &self.phase) {
            (Ok(()), Phase::Release)
                if self.head_len > 0 && self.released == 0 && self.held.len() == self.head_len =>
            {
                HeadWait::Alone(&self.held)
            }
            _ => HeadWait::Other,
        }
    }

    /// Whether Pingora was handed only the head since [`Self::wait_next`], so that
    /// it holds none of the next request's bytes.
    pub fn handed_only_head(&self) -> bool {
        self.head_handed && self.beyond_head == 0
    }

    /// The request is answered and the connection kept alive: guard the next head, and
    /// wait at most `keepalive` for its first byte (Pingora bounds its own wait too, but
    /// the express lane waits here); the head's own deadline starts with that byte.
    pub fn wait_next(&mut self, keepalive: Duration) {
        self.phase = Phase::Head;
        self.held.clear();
        self.released = 0;
        self.scanner.reset();
        self.deadline = Some(Instant::now() + keepalive);
        self.idle = true;
        self.head_len = 0;
        self.beyond_head = 0;
        self.head_handed = false;
        self.head_read.store(false, Ordering::Relaxed);
    }

    /// Pingora has parsed the current head: stop guarding until the next request.
    pub fn head_read(&self) {
        self.head_read.store(true, Ordering::Relaxed);
    }

    fn refuse(&mut self, refusal: Refusal) {
        tracing::info!(
            target: "margo_proxy::downstream",
            peer = ?self.peer,
            status = refusal.status(),
            cause = ?refusal,
            head_bytes = self.scanner.seen(),
            "request refused before its header was complete; closing the connection"
        );
        self.held = Vec::new();
        self.timer = None;
        self.phase = Phase::Refusing {
            answer: refusal.response(&self.policy),
            written: 0,
            flushed: false,
        };
    }

    /// Collects head bytes until the head is complete, refused, or the client is gone.
    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.head_read.load(Ordering::Relaxed) {
                self.phase = Phase::Release;
                return Poll::Ready(Ok(()));
            }
            let old = self.held.len();
            let inner = &mut self.inner;
            let held = &mut self.held;
            // Read into this thread's scratch buffer, zeroed once, and keep only what
            // came: growing `held` by a zeroed chunk for every poll (two per request on
            // a keep-alive connection: one finds nothing yet) cost more than the read.
            let (polled, n) = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut rb = ReadBuf::new(&mut scratch[..]);
                let polled = Pin::new(&mut **inner).poll_read(cx, &mut rb);
                let n = rb.filled().len();
                held.extend_from_slice(&scratch[..n]);
                (polled, n)
            });
            match polled {
                Poll::Pending => {
                    let Some(deadline) = self.deadline else {
                        return Poll::Pending;
                    };
                    // One timer per connection, moved to each head's deadline.
                    let timer = match self.timer.as_mut() {
                        Some(timer) => {
                            if timer.deadline() != deadline {
                                timer.as_mut().reset(deadline);
                            }
                            timer
                        }
                        None => self
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    ready!(timer.as_mut().poll(cx));
                    if self.held.is_empty() {
                        // Nothing sent at all: an idle connection, closed without a word.
                        tracing::debug!(target: "margo_proxy::downstream", peer = ?self.peer, "idle connection closed: no request within the header timeout");
                        self.phase = Phase::Closed;
                        return Poll::Ready(Ok(()));
                    }
                    self.refuse(Refusal::Timeout);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(target: "margo_proxy::downstream", peer = ?self.peer, error = %e, held = self.held.len(), "client connection failed before its request header was complete");
                    self.phase = Phase::Closed;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) if n == 0 => {
                    if !self.held.is_empty() {
                        tracing::debug!(target: "margo_proxy::downstream", peer = ?self.peer, held = self.held.len(), "client closed the connection in the middle of a request header");
                    }
                    self.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    if self.deadline.is_none() || self.idle {
                        self.deadline = Some(Instant::now() + self.policy.timeout);
                        self.idle = false;
                    }
                    match self.scanner.scan(&self.held[old..]) {
                        Scan::Incomplete => continue,
                        Scan::Complete { len } => {
                            self.head_len = old + len;
                            self.phase = Phase::Release;
                            return Poll::Ready(Ok(()));
                        }
                        Scan::TooLarge(limit) => {
                            self.refuse(Refusal::TooLarge(limit));
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
            }
        }
    }

    /// Writes the refusal, shuts the write side, then lingers.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Phase::Refusing {
            answer,
            written,
            flushed,
        } = &mut self.phase
        else {
            return Poll::Ready(Ok(()));
        };
        let inner = Pin::new(&mut *self.inner);
        let mut inner = inner;
        while *written < answer.len() {
            match ready!(inner.as_mut().poll_write(cx, &answer[*written..])) {
                Ok(0) | Err(_) => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => *written += n,
            }
        }
        if !*flushed {
            if ready!(inner.as_mut().poll_flush(cx)).is_err() {
                self.phase = Phase::Closed;
                return Poll::Ready(Ok(()));
            }
            *flushed = true;
        }
        // The FIN goes out now; the client's remaining bytes are read and dropped.
        let _ = ready!(inner.as_mut().poll_shutdown(cx));
        self.phase = Phase::Linger { drained: 0 };
        self.timer = Some(Box::pin(tokio::time::sleep(LINGER)));
        Poll::Ready(Ok(()))
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut scratch = [0u8; 4096];
        loop {
            let Phase::Linger { drained } = &mut self.phase else {
                return Poll::Ready(Ok(()));
            };
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if !rb.filled().is_empty() && *drained < LINGER_BYTES => {
                    *drained += rb.filled().len();
                }
                Poll::Pending => {
                    if let Some(timer) = self.timer.as_mut() {
                        ready!(timer.as_mut().poll(cx));
                    }
                    self.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
                _ => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &this.phase {
                Phase::Body => {
                    let before = buf.filled().len();
                    let polled = Pin::new(&mut *this.inner).poll_read(cx, buf);
                    this.beyond_head += buf.filled().len() - before;
                    return polled;
                }
                Phase::Head => ready!(this.poll_head(cx))?,
                Phase::Release => {
                    let rest = &this.held[this.released..];
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    let past_head = |at: usize| at.saturating_sub(this.head_len);
                    this.beyond_head += past_head(this.released + n) - past_head(this.released);
                    this.released += n;
                    if this.head_len > 0 && this.released >= this.head_len {
                        this.head_handed = true;
                    }
                    if this.released >= this.held.len() {
                        this.held.clear();
                        if this.held.capacity() > 4 * READ_CHUNK {
                            this.held.shrink_to(READ_CHUNK);
                        }
                        this.released = 0;
                        this.phase = Phase::Body;
                        if n == 0 {
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Refusing { .. } => ready!(this.poll_refusal(cx))?,
                Phase::Linger { .. } => ready!(this.poll_linger(cx))?,
                // End of stream, with no head bytes handed over: Pingora closes quietly.
                Phase::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for GuardedStream {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for GuardedStream {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for GuardedStream {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for GuardedStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for GuardedStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for GuardedStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for GuardedStream {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

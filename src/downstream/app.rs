//! The registry listener's connection loop: Pingora's HTTP/1 keep-alive loop with each
//! connection wrapped in a [`GuardedStream`] and counted for the shutdown drain.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use super::drain::Drain;
use super::guard::{GuardedStream, HeadPolicy};

/// Wraps an HTTP app (the Pingora proxy) for the registry listeners.
pub struct DownstreamApp<A> {
    inner: Arc<A>,
    policy: Arc<HeadPolicy>,
    drain: Arc<Drain>,
    /// Seconds an idle keep-alive connection is kept for its next request.
    keepalive: u64,
}

impl<A> DownstreamApp<A> {
    pub fn new(inner: A, policy: HeadPolicy, drain: Arc<Drain>, keepalive: u64) -> Self {
        DownstreamApp {
            inner: Arc::new(inner),
            policy: Arc::new(policy),
            drain,
            keepalive,
        }
    }
}

/// The guard back from a finished request, re-armed for the next one. Only guarded
/// streams are handed to the app, so `None` (the connection ends) cannot happen.
fn rearm(stream: Stream) -> Option<Stream> {
    let mut guarded = stream.into_any().downcast::<GuardedStream>().ok()?;
    guarded.next_request();
    Some(guarded)
}

#[async_trait]
impl<A> ServerApp for DownstreamApp<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _live = self.drain.enter();
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            // HTTP/2 has its own framing and flow control; Pingora's loop serves it.
            return ServerApp::process_new(&self.inner, stream, shutdown).await;
        }
        let stream: Stream = Box::new(GuardedStream::new(stream, self.policy.clone()));
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(self.keepalive));
        // RFC 9112 §9.3.2: answer pipelined requests in order instead of dropping them.
        session.set_pipelining_enabled(true);
        let mut result = self.inner.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(rearm(stream)?);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.inner.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

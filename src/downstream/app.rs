//! The registry listener's connection loop: Pingora's HTTP/1 keep-alive loop with each
//! connection wrapped in a [`GuardedStream`] and counted for the shutdown drain, and
//! the express lane ([`crate::express`]) given the first look at each complete head.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use super::drain::Drain;
use super::guard::{GuardedStream, HeadPolicy, HeadWait};
use crate::express::Express;

/// Wraps an HTTP app (the Pingora proxy) for the registry listeners.
pub struct DownstreamApp<A> {
    inner: Arc<A>,
    policy: Arc<HeadPolicy>,
    drain: Arc<Drain>,
    /// How long an idle keep-alive connection is kept for its next request.
    keepalive: Duration,
    express: Option<Arc<Express>>,
}

impl<A> DownstreamApp<A> {
    pub fn new(
        inner: A,
        policy: HeadPolicy,
        drain: Arc<Drain>,
        keepalive: Duration,
        express: Option<Arc<Express>>,
    ) -> Self {
        DownstreamApp {
            inner: Arc::new(inner),
            policy: Arc::new(policy),
            drain,
            keepalive,
            express,
        }
    }
}

/// The guard back from a finished request. Only guarded streams are handed to the
/// app, so `None` (the connection ends) cannot happen.
fn take_back(stream: Stream) -> Option<Box<GuardedStream>> {
    stream.into_any().downcast::<GuardedStream>().ok()
}

/// Resolves when the server starts shutting down (never, once nobody can tell it to).
async fn shutting_down(shutdown: &mut ShutdownWatch) {
    if shutdown.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How an express turn ended.
enum Turn {
    /// Answered; the connection waits for its next request.
    Answered,
    /// Pingora takes this request (its head is still held for it).
    Pingora,
    /// The connection ends.
    Close,
}

impl<A> DownstreamApp<A> {
    /// Offers the connection's next request to the express lane.
    async fn express_turn(
        &self,
        express: &Express,
        guarded: &mut GuardedStream,
        shutdown: &mut ShutdownWatch,
        out: &mut Vec<u8>,
    ) -> Turn {
        // Idle keep-alive connections end at shutdown, as Pingora's own wait does.
        let head = tokio::select! {
            biased;
            head = guarded.complete_head() => head,
            () = shutting_down(shutdown) => return Turn::Close,
        };
        let HeadWait::Alone(head) = head else {
            return Turn::Pingora;
        };
        let started = Instant::now();
        out.clear();
        let Some(answered) = express.answer(head, out) else {
            return Turn::Pingora;
        };
        let sent = guarded.write_all(out).await.is_ok()
            && (answered.body.is_empty() || guarded.write_all(&answered.body).await.is_ok())
            && guarded.flush().await.is_ok();
        express.finished(answered, guarded.peer(), started, sent);
        if !sent {
            return Turn::Close;
        }
        guarded.wait_next(self.keepalive);
        Turn::Answered
    }
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
        let mut guarded = Box::new(GuardedStream::new(stream, self.policy.clone()));
        let mut watch = shutdown.clone();
        let mut out = Vec::new();
        // Whether Pingora holds none of the next request's bytes (then the next head is
        // in the guard, where the express lane can look at it).
        let mut at_head = true;
        let mut settings: Option<HttpPersistentSettings> = None;
        loop {
            if let (Some(express), true) = (&self.express, at_head && !*shutdown.borrow()) {
                match self
                    .express_turn(express, &mut guarded, &mut watch, &mut out)
                    .await
                {
                    Turn::Answered => continue,
                    Turn::Close => return None,
                    Turn::Pingora => {}
                }
            }
            let mut session = ServerSession::new_http1(guarded);
            match settings.take() {
                Some(settings) => settings.apply_to_session(&mut session),
                None => {
                    let keepalive = self.keepalive.as_secs();
                    session.set_keepalive((!*shutdown.borrow()).then_some(keepalive));
                    // RFC 9112 §9.3.2: answer pipelined requests in order instead of
                    // dropping them.
                    session.set_pipelining_enabled(true);
                }
            }
            let (stream, next) = self
                .inner
                .process_new_http(session, shutdown)
                .await?
                .consume();
            guarded = take_back(stream)?;
            at_head = guarded.handed_only_head();
            guarded.wait_next(self.keepalive);
            // Pingora's settings carry what it read past this request (a pipelined
            // prefix): they go to its next session, unless it read nothing past it.
            settings = if at_head { None } else { next };
        }
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

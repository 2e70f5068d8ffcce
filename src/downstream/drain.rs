//! Graceful shutdown that waits for in-flight requests, and no longer than needed.
//!
//! Pingora 0.9.1 on SIGTERM stops accepting, sleeps `grace_period_seconds` whatever
//! happens, then shuts its runtimes down, which drops every task still running: a
//! download still streaming is cut. `graceful_shutdown_timeout_seconds` only bounds
//! that runtime teardown. So the proxy counts its open client connections itself and
//! owns the signal: on SIGTERM or SIGINT it keeps accepting for `server.grace_period`
//! (a load balancer notices), then lets Pingora stop the listeners, and exits as soon
//! as the last connection is done, or after `server.shutdown_timeout` at the latest.
//! Idle keep-alive connections are closed by Pingora at that point; a connection
//! finishing its request gets `Connection: close`. A second signal exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

/// How often the drain checks for the last connection.
const POLL: Duration = Duration::from_millis(20);

/// Open client connections of the registry service.
#[derive(Debug, Default)]
pub struct Drain {
    live: AtomicUsize,
}

/// One open connection; dropping it ends it.
pub struct Live(Arc<Drain>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drain {
    pub fn enter(self: &Arc<Self>) -> Live {
        self.live.fetch_add(1, Ordering::AcqRel);
        Live(self.clone())
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

/// The shutdown signal handed to Pingora's `Server::run`.
pub struct DrainingShutdown {
    pub drain: Arc<Drain>,
    /// Keep accepting this long after the signal.
    pub grace_period: Duration,
    /// Longest wait for in-flight requests once the listeners are closed.
    pub shutdown_timeout: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainingShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot listen for shutdown signals; exiting");
            return ShutdownSignal::FastShutdown;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = quit.recv() => "SIGQUIT",
        };
        tracing::info!(
            signal = name,
            grace_period = ?self.grace_period,
            shutdown_timeout = ?self.shutdown_timeout,
            open_connections = self.drain.live(),
            "shutting down: accepting during the grace period, then draining in-flight requests"
        );
        tokio::select! {
            _ = tokio::time::sleep(self.grace_period) => {},
            _ = term.recv() => exit_now("second signal during the grace period"),
            _ = int.recv() => exit_now("second signal during the grace period"),
            _ = quit.recv() => exit_now("second signal during the grace period"),
        }
        let drain = self.drain.clone();
        let timeout = self.shutdown_timeout;
        // Runs on the runtime that awaited this signal, which Pingora keeps alive while
        // it waits for its services to stop.
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            // Let the listeners see the shutdown before counting down.
            tokio::time::sleep(POLL).await;
            loop {
                let live = drain.live();
                if live == 0 {
                    tracing::info!("all client connections are done; exiting");
                    std::process::exit(0);
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        open_connections = live,
                        "server.shutdown_timeout reached; exiting with requests in flight"
                    );
                    std::process::exit(0);
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {},
                    _ = term.recv() => exit_now("second signal while draining"),
                    _ = int.recv() => exit_now("second signal while draining"),
                    _ = quit.recv() => exit_now("second signal while draining"),
                }
            }
        });
        ShutdownSignal::GracefulTerminate
    }
}

fn exit_now(why: &str) -> ! {
    tracing::warn!("{why}: exiting now");
    std::process::exit(1)
}

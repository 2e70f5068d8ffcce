//! A deadline for an upstream's response headers on the streamed (Pingora) path.
//!
//! Pingora's `read_timeout` bounds each read, not the response head: an upstream that
//! writes its status line and headers one byte a second keeps a request open forever.
//! Pingora 0.9.1 has no option for a total header deadline, so this watchdog provides
//! one: armed once the request (and its body) has been sent, it shuts the upstream
//! socket down when the headers have not arrived in time, which makes Pingora's pending
//! read fail at once. Bodies are not covered: a blob may legitimately stream for long,
//! and each of its reads stays bounded by `read_timeout`.
//!
//! The watchdog works on its own duplicate of the socket's descriptor, so it can never
//! shut down another connection that happened to get the same descriptor number after
//! this one closed.

use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The request (body) is still going up: the upstream cannot answer yet.
    Sending,
    /// Everything was sent; the head must be in by then.
    Waiting(Instant),
    /// The head arrived.
    Done,
}

/// Held in the request's context; dropping it (request over) stops the watchdog.
#[derive(Debug)]
pub struct HeaderDeadline {
    phase: watch::Sender<Phase>,
    fired: Arc<AtomicBool>,
    limit: Duration,
}

impl HeaderDeadline {
    /// Watches the upstream connection `fd` (just connected or reused). Must run inside
    /// a Tokio runtime. `None` when the descriptor cannot be duplicated: the request
    /// then runs with the per-read timeout only, as before.
    pub fn watch(fd: RawFd, limit: Duration) -> Option<Self> {
        let borrowed = borrow_for_this_call(fd)?;
        let socket = TcpStream::from(borrowed.try_clone_to_owned().ok()?);
        let (tx, mut rx) = watch::channel(Phase::Sending);
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        tokio::spawn(async move {
            loop {
                let phase = *rx.borrow_and_update();
                match phase {
                    Phase::Done => return,
                    Phase::Sending => {
                        if rx.changed().await.is_err() {
                            return;
                        }
                    }
                    Phase::Waiting(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {
                                flag.store(true, Ordering::Release);
                                // Wakes Pingora's pending read with an EOF/error.
                                let _ = socket.shutdown(Shutdown::Both);
                                return;
                            }
                            changed = rx.changed() => if changed.is_err() { return },
                        }
                    }
                }
            }
        });
        Some(HeaderDeadline {
            phase: tx,
            fired,
            limit,
        })
    }

    /// The request is fully sent: the clock starts.
    pub fn request_sent(&self) {
        let at = Instant::now() + self.limit;
        self.phase.send_if_modified(|p| {
            if *p == Phase::Sending {
                *p = Phase::Waiting(at);
                true
            } else {
                false
            }
        });
    }

    /// The response head arrived in time.
    pub fn headers_arrived(&self) {
        let _ = self.phase.send(Phase::Done);
    }

    /// The deadline passed and the connection was cut: the failure is a timeout.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// Borrows a descriptor Pingora owns for the duration of one call.
fn borrow_for_this_call<'a>(fd: RawFd) -> Option<BorrowedFd<'a>> {
    if fd < 0 {
        return None;
    }
    // `BorrowedFd::borrow_raw` is the only way from a raw descriptor; it is sound here
    // because Pingora keeps `fd` open for the whole phase that hands it to us, and the
    // borrow is turned into an owned duplicate before that phase returns.
    // SAFETY: see above; `fd` is open and outlives the borrow.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn cuts_the_connection_when_headers_are_late() {
        let (mut ours, _peer) = pair();
        let d = HeaderDeadline::watch(ours.as_raw_fd(), Duration::from_millis(100)).unwrap();
        // Not armed while the request is being sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!d.fired());
        d.request_sent();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(d.fired());
        ours.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(ours.read(&mut b).unwrap(), 0, "read end was shut down");
    }

    #[tokio::test]
    async fn headers_in_time_disarm_it_and_the_socket_stays_usable() {
        let (ours, mut peer) = pair();
        let d = HeaderDeadline::watch(ours.as_raw_fd(), Duration::from_millis(100)).unwrap();
        d.request_sent();
        d.headers_arrived();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(!d.fired());
        use std::io::Write;
        (&ours).write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"x");
    }
}

//! The log writer thread and its queue: request threads hand over what a line needs,
//! the writer thread renders and writes it.
//!
//! - Access records ([`super::access::AccessRecord`]) are queued as raw fields and
//!   rendered here, so a request thread neither formats nor allocates for its line.
//! - Every other line (formatted by `tracing_subscriber`, rare) is queued as bytes.
//!
//! One queue keeps lines in the order they were logged. The queue is bounded and not
//! lossy: when it is full, request threads wait rather than drop lines. The thread
//! writes through a buffer and, after each batch, pauses briefly ([`BATCH_PAUSE`]) so
//! that under load lines accumulate into few large writes and request threads rarely
//! have to wake it (a wake-up is a system call on the request thread).

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use super::access::AccessRecord;
use crate::config::LogFormat;

/// Lines queued before request threads wait for the writer.
pub const QUEUED_LINES: usize = 8 * 1024;
/// Buffered bytes written at once.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long the writer lets lines accumulate after writing a batch.
pub const BATCH_PAUSE: Duration = Duration::from_millis(1);

/// What goes through the queue. Records travel by value in the queue's preallocated
/// slots: boxing them would cost every request an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// A line formatted elsewhere, newline included.
    Line(Vec<u8>),
    Access(AccessRecord),
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct LogQueue {
    tx: SyncSender<Message>,
}

impl LogQueue {
    /// Starts the writer thread rendering access records as `format` (`ansi`: with
    /// colours) and writing everything to `out`.
    pub fn start<W: Write + Send + 'static>(
        format: LogFormat,
        ansi: bool,
        out: W,
    ) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(QUEUED_LINES);
        std::thread::Builder::new()
            .name("margo-log".into())
            .spawn(move || run(rx, format, ansi, out))?;
        Ok(Self { tx })
    }

    /// Queues a message, waiting for room when the queue is full. A writer that is
    /// gone (its output failed) drops the message: logging never stops requests.
    pub fn send(&self, msg: Message) {
        match self.tx.try_send(msg) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(msg)) => {
                let _ = self.tx.send(msg);
            }
        }
    }
}

/// `tracing_subscriber` writes each formatted event with one `write_all`: one line.
impl Write for &LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(Message::Line(buf.to_vec()));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For `tracing_subscriber::fmt().with_writer(...)`.
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

fn run<W: Write>(rx: Receiver<Message>, format: LogFormat, ansi: bool, mut out: W) {
    let mut buf = Vec::with_capacity(WRITE_BUFFER);
    // Blocks only when the queue ran dry during the pause: the proxy is idle.
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            match msg {
                Message::Line(line) => buf.extend_from_slice(&line),
                Message::Access(record) => record.render(format, ansi, &mut buf),
            }
            if buf.len() >= WRITE_BUFFER && write(&mut out, &mut buf).is_err() {
                return;
            }
            next = rx.try_recv().ok();
        }
        if write(&mut out, &mut buf).is_err() {
            return;
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

fn write<W: Write>(out: &mut W, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let result = out.write_all(buf).and_then(|()| out.flush());
    buf.clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Instant, SystemTime};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(n: u16) -> AccessRecord {
        AccessRecord {
            at: SystemTime::UNIX_EPOCH,
            request_id: crate::proxy::ctx::request_id(None),
            client_ip: None,
            principal: None,
            method: http::Method::HEAD,
            operation: crate::oci::Operation::Other,
            route: None,
            status: n,
            bytes_in: 0,
            bytes_out: 0,
            total: Duration::ZERO,
            upstream: None,
            cache: None,
            refusal: None,
            error: None,
        }
    }

    fn wait_for_lines(out: &Shared, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf8");
            if text.lines().count() >= n || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn lines_come_out_whole_and_in_the_order_they_were_queued() {
        let out = Shared::default();
        let q = LogQueue::start(LogFormat::Text, false, out.clone()).expect("writer");
        // More than the queue holds: senders wait, nothing is dropped.
        let total = QUEUED_LINES * 2 + 3;
        for i in 0..total {
            if i % 2 == 0 {
                (&q).write_all(format!("line {i}\n").as_bytes())
                    .expect("queued");
            } else {
                q.send(Message::Access(record(
                    u16::try_from(i % 600).expect("small"),
                )));
            }
        }
        let text = wait_for_lines(&out, total);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), total);
        for (i, line) in lines.iter().enumerate() {
            if i % 2 == 0 {
                assert_eq!(*line, format!("line {i}"));
            } else {
                assert!(
                    line.contains(" INFO margo_proxy::access: request ")
                        && line.contains(&format!(" status={} ", i % 600)),
                    "{i}: {line}"
                );
            }
        }
    }

    #[test]
    fn a_single_line_is_written_at_once_when_idle() {
        let out = Shared::default();
        let q = LogQueue::start(LogFormat::Json, false, out.clone()).expect("writer");
        q.send(Message::Access(record(204)));
        let text = wait_for_lines(&out, 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).expect("JSON line");
        assert_eq!(v["status"], 204);
        assert_eq!(v["method"], "HEAD");
    }

    #[test]
    fn a_failing_output_does_not_block_senders() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("gone"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let q = LogQueue::start(LogFormat::Text, false, Broken).expect("writer");
        let started = Instant::now();
        for i in 0..(QUEUED_LINES * 3) {
            q.send(Message::Access(record(
                u16::try_from(i % 600).expect("small"),
            )));
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}

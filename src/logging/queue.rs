//! The log writer thread and the per-thread buffers it drains.
//!
//! - Each thread that logs appends whole lines to a buffer of its own: access records
//!   ([`super::access::AccessRecord`]) are rendered there, without `fmt` or an
//!   allocation, and every other line (formatted by `tracing_subscriber`, rare) is
//!   copied in. Nothing crosses threads per line: a queue of records cost every
//!   request two moves of the record and the channel's synchronisation, a fifth of
//!   the access log's cost once cache hits became cheap (`scripts/bench_instr`).
//! - The writer thread sleeps until a thread's buffer receives its first line, lets
//!   lines accumulate for [`BATCH_PAUSE`], then swaps every buffer out and writes them
//!   (a few large writes). A request thread wakes it at most once per batch.
//!
//! Lines from one thread keep their order; lines of different threads are ordered by
//! batch. The buffers are bounded and not lossy: a thread whose buffer holds
//! [`MAX_BUFFERED`] bytes waits for the writer rather than drop lines. A writer whose
//! output failed is gone, and lines are then dropped: logging never stops requests.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

use super::access::AccessRecord;
use crate::config::LogFormat;

/// Bytes one thread may have waiting before it waits for the writer.
pub const MAX_BUFFERED: usize = 4 << 20;
/// How long the writer lets lines accumulate after the first one of a batch.
pub const BATCH_PAUSE: Duration = Duration::from_millis(1);
/// What a drained buffer keeps of its capacity for the next batch.
const KEPT_CAPACITY: usize = 64 * 1024;

/// What a thread hands the log: a whole line. Rendered where it is sent, never
/// stored, so the size of a record by value costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Message {
    /// A line formatted elsewhere, newline included.
    Line(Vec<u8>),
    Access(AccessRecord),
}

/// One thread's pending lines.
type Buffer = Mutex<Vec<u8>>;

struct Shared {
    id: u64,
    format: LogFormat,
    ansi: bool,
    /// Every thread's buffer; the writer drops those whose thread has ended.
    buffers: Mutex<Vec<Arc<Buffer>>>,
    writer: std::thread::Thread,
    /// Cleared when the output failed: lines are dropped from then on.
    alive: AtomicBool,
    /// Signalled after each batch, for threads waiting on a full buffer.
    drained: (Mutex<u64>, Condvar),
}

/// The last sender gone: the writer thread ends.
impl Drop for Shared {
    fn drop(&mut self) {
        self.writer.unpark();
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's buffer in each queue it logged to (one in the proxy; tests start
    /// several queues).
    static MINE: RefCell<Vec<(u64, Arc<Buffer>)>> = const { RefCell::new(Vec::new()) };
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while appending left whole lines or none: carry on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogQueue {
    /// Starts the writer thread rendering access records as `format` (`ansi`: with
    /// colours) and writing everything to `out`.
    pub fn start<W: Write + Send + 'static>(
        format: LogFormat,
        ansi: bool,
        out: W,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Weak<Shared>>(1);
        let handle = std::thread::Builder::new()
            .name("margo-log".into())
            .spawn(move || {
                if let Ok(shared) = rx.recv() {
                    run(shared, out);
                }
            })?;
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            format,
            ansi,
            buffers: Mutex::new(Vec::new()),
            writer: handle.thread().clone(),
            alive: AtomicBool::new(true),
            drained: (Mutex::new(0), Condvar::new()),
        });
        // The writer holds the queue weakly: dropping the last sender ends it.
        let _ = tx.send(Arc::downgrade(&shared));
        Ok(Self { shared })
    }

    /// Appends a line to this thread's buffer, waiting for room when it is full.
    pub fn send(&self, msg: Message) {
        let shared = &self.shared;
        if !shared.alive.load(Ordering::Relaxed) {
            return;
        }
        let full = MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            let at = match mine.iter().position(|(id, _)| *id == shared.id) {
                Some(at) => at,
                None => {
                    let b = Arc::new(Mutex::new(Vec::new()));
                    lock(&shared.buffers).push(b.clone());
                    mine.push((shared.id, b));
                    mine.len() - 1
                }
            };
            let buffer = &mine[at].1;
            let mut buf = lock(buffer);
            let was_empty = buf.is_empty();
            match msg {
                Message::Line(line) => buf.extend_from_slice(&line),
                Message::Access(record) => record.render(shared.format, shared.ansi, &mut buf),
            }
            let full = buf.len() >= MAX_BUFFERED;
            drop(buf);
            if was_empty || full {
                shared.writer.unpark();
            }
            full.then(|| buffer.clone())
        });
        if let Some(buffer) = full {
            self.wait_for_room(&buffer);
        }
    }

    fn wait_for_room(&self, buffer: &Buffer) {
        let (batches, cv) = &self.shared.drained;
        let mut seen = lock(batches);
        while lock(buffer).len() >= MAX_BUFFERED && self.shared.alive.load(Ordering::Relaxed) {
            self.shared.writer.unpark();
            seen = cv
                .wait_timeout(seen, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
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

fn run<W: Write>(shared: Weak<Shared>, mut out: W) {
    let mut spare = Vec::with_capacity(KEPT_CAPACITY);
    loop {
        std::thread::park();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        std::thread::sleep(BATCH_PAUSE);
        // Swap each buffer out (the lock is held for a pointer swap, not the write).
        let buffers: Vec<Arc<Buffer>> = {
            let mut all = lock(&shared.buffers);
            // A buffer only this list holds belongs to a thread that has ended.
            all.retain(|b| Arc::strong_count(b) > 1 || !lock(b).is_empty());
            all.clone()
        };
        for buffer in &buffers {
            std::mem::swap(&mut *lock(buffer), &mut spare);
            if spare.is_empty() {
                continue;
            }
            let written = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            spare.shrink_to(KEPT_CAPACITY);
            if written.is_err() {
                shared.alive.store(false, Ordering::Relaxed);
                shared.drained.1.notify_all();
                return;
            }
        }
        *lock(&shared.drained.0) += 1;
        shared.drained.1.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::{Instant, SystemTime};

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);
    impl Write for Out {
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

    fn wait_for_lines(out: &Out, n: usize) -> String {
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
        let out = Out::default();
        let q = LogQueue::start(LogFormat::Text, false, out.clone()).expect("writer");
        // More than a thread's buffer holds: the sender waits, nothing is dropped.
        let pad = "x".repeat(1000);
        let total = 3 * MAX_BUFFERED / 1000 + 3;
        for i in 0..total {
            if i % 2 == 0 {
                (&q).write_all(format!("line {i} {pad}\n").as_bytes())
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
                assert_eq!(*line, format!("line {i} {pad}"));
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
        let out = Out::default();
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
        let line = vec![b'x'; 1000];
        for _ in 0..(3 * MAX_BUFFERED / 1000) {
            q.send(Message::Line(line.clone()));
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn every_thread_s_lines_arrive_each_in_its_own_order() {
        let out = Out::default();
        let q = LogQueue::start(LogFormat::Text, false, out.clone()).expect("writer");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let q = q.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        (&q).write_all(format!("t{t} {i}\n").as_bytes())
                            .expect("queued");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let text = wait_for_lines(&out, 20_000);
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').expect("t i");
            let t: usize = t[1..].parse().expect("thread");
            assert_eq!(i.parse::<usize>().expect("index"), next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
    }
}

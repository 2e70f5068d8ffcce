//! Where a request's head (request line and header fields) ends, and whether it stays
//! within the limits, decided on the bytes as they arrive and before Pingora parses
//! them, so that a refusal can carry an OCI body and a slow head can be timed out.
//!
//! The grammar is HTTP/1.1's as httparse reads it: lines end in LF or CRLF, the head
//! ends at the first empty line, and empty lines before the request line are ignored
//! (RFC 9112 §2.2).

/// Largest request line (method, target, version): longer URLs get 414.
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
/// Most header fields in one request: more get 431 (Pingora's own cap is 256).
pub const MAX_FIELDS: usize = 128;

/// The caps one head is held to.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Whole head, request line included.
    pub max_bytes: usize,
    pub max_request_line: usize,
    pub max_fields: usize,
}

/// Which cap a head broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLimit {
    RequestLine,
    Fields,
    Bytes,
}

/// What the bytes seen so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// More bytes are needed.
    Incomplete,
    /// The head ends after `len` bytes of the chunk just scanned.
    Complete {
        len: usize,
    },
    TooLarge(HeadLimit),
}

/// Incremental scanner for one head; [`HeadScanner::reset`] before the next request.
#[derive(Debug, Clone)]
pub struct HeadScanner {
    limits: HeadLimits,
    /// A byte other than CR/LF has been seen (leading empty lines are skipped).
    started: bool,
    /// The last byte was the LF ending a line, or that LF followed by CR.
    at_line_start: bool,
    cr_at_line_start: bool,
    /// Lines ended so far (the request line is the first).
    lines: usize,
    /// Bytes of the head so far, leading empty lines included.
    bytes: usize,
    /// Bytes of the request line so far.
    request_line: usize,
}

impl HeadScanner {
    pub fn new(limits: HeadLimits) -> Self {
        HeadScanner {
            limits,
            started: false,
            at_line_start: false,
            cr_at_line_start: false,
            lines: 0,
            bytes: 0,
            request_line: 0,
        }
    }

    pub fn reset(&mut self) {
        *self = HeadScanner::new(self.limits);
    }

    /// Bytes of the head seen so far.
    pub fn seen(&self) -> usize {
        self.bytes
    }

    /// Feeds the next bytes of the connection.
    ///
    /// Runs of bytes inside a line are skipped with `memchr` and counted at once: the
    /// byte-at-a-time loop this replaces cost a cached manifest GET more instructions than
    /// all of the proxy's routing (the tests compare both on random heads).
    pub fn scan(&mut self, chunk: &[u8]) -> Scan {
        let mut i = 0;
        while i < chunk.len() {
            if self.started && !self.at_line_start {
                // Mid-line: every byte up to the next LF is ordinary.
                let run = memchr::memchr(b'\n', &chunk[i..]).unwrap_or(chunk.len() - i);
                if let Some(limit) = self.count_ordinary(run) {
                    return Scan::TooLarge(limit);
                }
                i += run;
                if i == chunk.len() {
                    break;
                }
            }
            if let Some(scan) = self.byte(chunk[i], i) {
                return scan;
            }
            i += 1;
        }
        Scan::Incomplete
    }

    /// Counts `run` bytes that end no line, as [`Self::byte`] would one by one: the
    /// first byte over a cap decides which cap is reported.
    fn count_ordinary(&mut self, run: usize) -> Option<HeadLimit> {
        if run == 0 {
            return None;
        }
        let to_bytes_cap = self.limits.max_bytes.saturating_sub(self.bytes);
        let to_line_cap = if self.lines == 0 {
            self.limits
                .max_request_line
                .saturating_sub(self.request_line)
        } else {
            usize::MAX
        };
        if run > to_line_cap && to_line_cap <= to_bytes_cap {
            return Some(HeadLimit::RequestLine);
        }
        if run > to_bytes_cap {
            return Some(HeadLimit::Bytes);
        }
        self.bytes += run;
        if self.lines == 0 {
            self.request_line += run;
        }
        self.at_line_start = false;
        self.cr_at_line_start = false;
        None
    }

    /// One byte at offset `i` of the chunk.
    fn byte(&mut self, b: u8, i: usize) -> Option<Scan> {
        self.bytes += 1;
        if !self.started {
            if b == b'\r' || b == b'\n' {
                return None;
            }
            self.started = true;
        }
        match b {
            b'\n' if self.at_line_start => return Some(Scan::Complete { len: i + 1 }),
            b'\n' => {
                self.lines += 1;
                if self.lines > self.limits.max_fields.saturating_add(1) {
                    return Some(Scan::TooLarge(HeadLimit::Fields));
                }
                self.at_line_start = true;
                self.cr_at_line_start = false;
            }
            b'\r' if self.at_line_start && !self.cr_at_line_start => {
                self.cr_at_line_start = true;
            }
            _ => {
                self.at_line_start = false;
                self.cr_at_line_start = false;
            }
        }
        if self.lines == 0 {
            self.request_line += 1;
            if self.request_line > self.limits.max_request_line {
                return Some(Scan::TooLarge(HeadLimit::RequestLine));
            }
        }
        if self.bytes > self.limits.max_bytes {
            return Some(Scan::TooLarge(HeadLimit::Bytes));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_bytes: 1024,
            max_request_line: 64,
            max_fields: 4,
        }
    }

    fn scan_all(bytes: &[u8]) -> Scan {
        HeadScanner::new(limits()).scan(bytes)
    }

    /// The byte-at-a-time scanner `scan` replaced, kept as the reference it must agree
    /// with.
    fn reference(s: &mut HeadScanner, chunk: &[u8]) -> Scan {
        for (i, &b) in chunk.iter().enumerate() {
            if let Some(scan) = s.byte(b, i) {
                return scan;
            }
        }
        Scan::Incomplete
    }

    #[test]
    fn agrees_with_the_byte_at_a_time_scanner_on_random_heads() {
        // A small xorshift: deterministic, no dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"\r\n\r\naG: /";
        for _ in 0..20_000 {
            let len = usize::try_from(next() % 200).expect("small");
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[usize::try_from(next()).expect("fits") % alphabet.len()])
                .collect();
            let cut = usize::try_from(next()).expect("fits") % (len + 1);
            let lim = HeadLimits {
                max_bytes: usize::try_from(next() % 150).expect("small"),
                max_request_line: usize::try_from(next() % 60).expect("small"),
                max_fields: usize::try_from(next() % 8).expect("small"),
            };
            let (mut fast, mut slow) = (HeadScanner::new(lim), HeadScanner::new(lim));
            let (a, b) = (
                fast.scan(&bytes[..cut]),
                reference(&mut slow, &bytes[..cut]),
            );
            assert_eq!(a, b, "{bytes:?} cut {cut} {lim:?}");
            if a == Scan::Incomplete {
                let (a, b) = (
                    fast.scan(&bytes[cut..]),
                    reference(&mut slow, &bytes[cut..]),
                );
                assert_eq!(a, b, "{bytes:?} cut {cut} {lim:?}");
                if a != Scan::Incomplete && !matches!(a, Scan::TooLarge(_)) {
                    assert_eq!(fast.seen(), slow.seen(), "{bytes:?} cut {cut} {lim:?}");
                }
            }
        }
    }

    #[test]
    fn crlf_head_ends_at_the_empty_line() {
        let req = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        assert_eq!(scan_all(req), Scan::Complete { len: req.len() - 4 });
    }

    #[test]
    fn bare_lf_heads_end_too() {
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\nHost: x\n\n"),
            Scan::Complete { len: 24 }
        );
        assert_eq!(
            scan_all(b"GET / HTTP/1.1\nHost: x\n\r\n"),
            Scan::Complete { len: 25 }
        );
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let req = b"\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(scan_all(req), Scan::Complete { len: req.len() });
    }

    #[test]
    fn split_anywhere_gives_the_same_end() {
        let req = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\n";
        for cut in 0..req.len() {
            let mut s = HeadScanner::new(limits());
            let first = s.scan(&req[..cut]);
            if first == Scan::Incomplete {
                assert_eq!(
                    s.scan(&req[cut..]),
                    Scan::Complete {
                        len: req.len() - cut
                    },
                    "cut at {cut}"
                );
            } else {
                assert_eq!(first, Scan::Complete { len: cut }, "cut at {cut}");
            }
        }
    }

    #[test]
    fn cr_inside_a_line_is_not_an_end() {
        assert_eq!(scan_all(b"GET / HTTP/1.1\r\nA: b\rc\r\n"), Scan::Incomplete);
    }

    #[test]
    fn long_request_line_is_refused() {
        let mut req = b"GET /".to_vec();
        req.extend(std::iter::repeat_n(b'a', 100));
        assert_eq!(scan_all(&req), Scan::TooLarge(HeadLimit::RequestLine));
    }

    #[test]
    fn too_many_fields_are_refused() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..5 {
            req.extend(format!("H{i}: v\r\n").bytes());
        }
        assert_eq!(scan_all(&req), Scan::TooLarge(HeadLimit::Fields));
    }

    #[test]
    fn too_many_bytes_are_refused() {
        let mut req = b"GET / HTTP/1.1\r\nA: ".to_vec();
        req.extend(std::iter::repeat_n(b'v', 2000));
        assert_eq!(scan_all(&req), Scan::TooLarge(HeadLimit::Bytes));
    }

    #[test]
    fn reset_starts_a_new_head() {
        let mut s = HeadScanner::new(limits());
        assert_eq!(
            s.scan(b"GET / HTTP/1.1\r\n\r\n"),
            Scan::Complete { len: 18 }
        );
        s.reset();
        assert_eq!(s.seen(), 0);
        assert_eq!(s.scan(b"GET / HTTP/1.1\r\n"), Scan::Incomplete);
    }
}

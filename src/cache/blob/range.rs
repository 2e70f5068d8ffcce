//! `Range` requests against a cached blob (RFC 9110 §14). Only one byte range is
//! answered from the cache; anything else goes upstream as the client sent it, so
//! the cache never answers a range request worse than the upstream would.

/// What to do with a request's `Range` header for a blob of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No `Range` header: the whole blob, 200.
    Whole,
    /// One satisfiable range: `206` with `Content-Range: bytes start-end/len`
    /// (`end` inclusive).
    Partial { start: u64, end: u64 },
    /// One syntactically valid range that starts past the end: `416` with
    /// `Content-Range: bytes */len`.
    Unsatisfiable,
    /// Several ranges, another unit, or a header we cannot read: pass it through.
    PassThrough,
}

/// Longest `Range` header value looked at; anything longer is passed through.
const MAX_RANGE_HEADER: usize = 256;

/// Decides for a `Range` header value (`None`: no header).
pub fn decide(header: Option<&[u8]>, len: u64) -> RangeAnswer {
    let Some(raw) = header else {
        return RangeAnswer::Whole;
    };
    if raw.len() > MAX_RANGE_HEADER {
        return RangeAnswer::PassThrough;
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return RangeAnswer::PassThrough;
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeAnswer::PassThrough;
    };
    if spec.contains(',') {
        return RangeAnswer::PassThrough;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAnswer::PassThrough;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim().is_empty(), num(first), num(last)) {
        // `bytes=-N`: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        // `bytes=A-` or `bytes=A-B`.
        (false, Some(start), end) if last.trim().is_empty() || end.is_some() => {
            if let Some(e) = end {
                if e < start {
                    return RangeAnswer::PassThrough;
                }
            }
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeAnswer::Partial { start, end }
        }
        _ => RangeAnswer::PassThrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(h: &str, len: u64) -> RangeAnswer {
        decide(Some(h.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(decide(None, 10), RangeAnswer::Whole);
        assert_eq!(
            d("bytes=0-3", 10),
            RangeAnswer::Partial { start: 0, end: 3 }
        );
        assert_eq!(d("bytes=4-", 10), RangeAnswer::Partial { start: 4, end: 9 });
        assert_eq!(d("bytes=-3", 10), RangeAnswer::Partial { start: 7, end: 9 });
        assert_eq!(
            d("bytes=-30", 10),
            RangeAnswer::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            d("bytes=5-100", 10),
            RangeAnswer::Partial { start: 5, end: 9 }
        );
        assert_eq!(
            d(" bytes=9-9 ", 10),
            RangeAnswer::Partial { start: 9, end: 9 }
        );
    }

    #[test]
    fn unsatisfiable_and_pass_through() {
        assert_eq!(d("bytes=10-", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(d("bytes=-0", 10), RangeAnswer::Unsatisfiable);
        assert_eq!(d("bytes=0-1,3-4", 10), RangeAnswer::PassThrough);
        assert_eq!(d("items=0-1", 10), RangeAnswer::PassThrough);
        assert_eq!(d("bytes=5-2", 10), RangeAnswer::PassThrough);
        assert_eq!(d("bytes=x-2", 10), RangeAnswer::PassThrough);
        assert_eq!(d("bytes=-", 10), RangeAnswer::PassThrough);
        assert_eq!(d("bytes=+1-2", 10), RangeAnswer::PassThrough);
        assert_eq!(
            d("bytes=99999999999999999999999-", 10),
            RangeAnswer::PassThrough
        );
        assert_eq!(decide(Some(&[0xff, 0xfe]), 10), RangeAnswer::PassThrough);
        assert_eq!(
            d(&format!("bytes=0-{}", "1".repeat(300)), 10),
            RangeAnswer::PassThrough
        );
    }
}

//! Git's pkt-line framing (gitprotocol-common): written for answers, read from request
//! bodies with every length checked, so a hostile body is an error, never a panic.

/// Largest pkt-line, header included.
pub const MAX_PKT: usize = 65520;
/// Largest payload of a side-band-64k packet (the band byte takes one).
pub const MAX_BAND_DATA: usize = MAX_PKT - 5;

/// One packet of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Flush,
    Delim,
    ResponseEnd,
    /// A data line, its trailing `\n` removed.
    Line(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PktError {
    #[error("pkt-line: truncated packet at byte {0}")]
    Truncated(usize),
    #[error("pkt-line: bad length header at byte {0}")]
    BadLength(usize),
}

/// Every packet of `body`, in order.
pub fn parse(body: &[u8]) -> Result<Vec<Packet<'_>>, PktError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let head = body.get(at..at + 4).ok_or(PktError::Truncated(at))?;
        let text = std::str::from_utf8(head).map_err(|_| PktError::BadLength(at))?;
        let len = usize::from_str_radix(text, 16).map_err(|_| PktError::BadLength(at))?;
        match len {
            0 => out.push(Packet::Flush),
            1 => out.push(Packet::Delim),
            2 => out.push(Packet::ResponseEnd),
            3 => return Err(PktError::BadLength(at)),
            n if n > MAX_PKT => return Err(PktError::BadLength(at)),
            n => {
                let data = body.get(at + 4..at + n).ok_or(PktError::Truncated(at))?;
                out.push(Packet::Line(data.strip_suffix(b"\n").unwrap_or(data)));
                at += n;
                continue;
            }
        }
        at += 4;
    }
    Ok(out)
}

/// Appends one data packet (callers keep `data` under [`MAX_PKT`] - 4 bytes).
pub fn line(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    out.extend_from_slice(data);
}

/// Appends a text line, `\n`-terminated.
pub fn text(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(format!("{:04x}", s.len() + 5).as_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(b'\n');
}

pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0000");
}

pub fn delim(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0001");
}

/// Appends `data` on side band `band` (1: pack data, 2: progress, 3: fatal error).
pub fn band(out: &mut Vec<u8>, band: u8, data: &[u8]) {
    for chunk in data.chunks(MAX_BAND_DATA) {
        out.extend_from_slice(format!("{:04x}", chunk.len() + 5).as_bytes());
        out.push(band);
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_special_packets() {
        let mut b = Vec::new();
        text(&mut b, "want abc");
        delim(&mut b);
        line(&mut b, b"done");
        flush(&mut b);
        assert_eq!(&b[..4], b"000d");
        assert_eq!(
            parse(&b).unwrap(),
            vec![
                Packet::Line(b"want abc"),
                Packet::Delim,
                Packet::Line(b"done"),
                Packet::Flush
            ]
        );
    }

    #[test]
    fn hostile_lengths_are_errors() {
        assert_eq!(parse(b"00"), Err(PktError::Truncated(0)));
        assert_eq!(parse(b"0003"), Err(PktError::BadLength(0)));
        assert_eq!(parse(b"zzzz"), Err(PktError::BadLength(0)));
        assert_eq!(parse(b"0010abc"), Err(PktError::Truncated(0)));
        assert_eq!(parse(b"fff1"), Err(PktError::BadLength(0)));
        assert_eq!(parse("\u{e9}00".as_bytes()), Err(PktError::BadLength(0)));
    }

    #[test]
    fn bands_split_at_64k() {
        let mut b = Vec::new();
        band(&mut b, 1, &vec![7u8; MAX_BAND_DATA + 10]);
        let p = parse(&b).unwrap();
        assert_eq!(p.len(), 2);
        assert!(matches!(p[0], Packet::Line(d) if d.len() == MAX_BAND_DATA + 1 && d[0] == 1));
    }
}

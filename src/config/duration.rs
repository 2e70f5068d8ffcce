//! Durations in config files are humane strings: one or more `<integer><unit>` groups
//! with units `ms`, `s`, `m`, `h`, `d` (`"250ms"`, `"30s"`, `"1h30m"`). A bare number is
//! refused on purpose: `ttl: 30` reads as seconds to one operator and milliseconds to the
//! next, and either guess can leave a cache useless or stale for hours.

use std::time::Duration;

use serde::{de, Deserializer, Serializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration `{0}`: use whole numbers with units (ms, s, m, h, d), e.g. `30s` or `1m30s`"
)]
pub struct DurationError(String);

pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError(input.chars().take(40).collect());
    let s = input.trim();
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let (number, tail) = rest.split_at(digits);
        let value: u64 = number.parse().map_err(|_| invalid())?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.checked_mul(60).ok_or_else(invalid)?),
            "h" => Duration::from_secs(value.checked_mul(3600).ok_or_else(invalid)?),
            "d" => Duration::from_secs(value.checked_mul(86_400).ok_or_else(invalid)?),
            _ => return Err(invalid()),
        };
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = tail;
    }
    Ok(total)
}

/// Formats a duration the way [`parse`] reads it back.
pub fn format(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        let secs = d.as_secs();
        if secs != 0 && secs % 3600 == 0 {
            format!("{}h", secs / 3600)
        } else if secs != 0 && secs % 60 == 0 {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// serde adapter: `#[serde(with = "crate::config::duration")]`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// serde adapter: `#[serde(with = "crate::config::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration string such as \"30s\", \"5m\" or \"250ms\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humane_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn refuses_ambiguous_or_broken_input() {
        for bad in [
            "",
            "30",
            "s",
            "5x",
            "-5s",
            "1.5s",
            "5 m",
            "99999999999999999999s",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_secs(30),
            Duration::from_secs(300),
            Duration::from_secs(7200),
            Duration::from_millis(1500),
        ] {
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}

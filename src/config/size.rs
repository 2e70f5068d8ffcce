//! Byte sizes in config files: `4MiB`, `512KiB`, `1GiB`, or a bare number of bytes.

use serde::{de, Deserialize, Deserializer};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid size `{0}`: use a number with a unit (B, KiB, MiB, GiB), e.g. `4MiB`")]
pub struct SizeError(String);

pub fn parse(s: &str) -> Result<u64, SizeError> {
    let s = s.trim();
    let err = || SizeError(s.chars().take(40).collect());
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return Err(err()),
    };
    value.checked_mul(mult).ok_or_else(err)
}

/// serde adapter: `#[serde(with = "crate::config::size")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(b) => Ok(b),
        Raw::Text(t) => parse(&t).map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("4MiB"), Ok(4 << 20));
        assert_eq!(parse("512KiB"), Ok(512 << 10));
        assert_eq!(parse("100"), Ok(100));
        assert!(parse("1PiB").is_err());
        assert!(parse("99999999999999999999GiB").is_err());
    }
}

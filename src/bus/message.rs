//! What replicas tell each other, and how it is sealed.
//!
//! Wire format, version 1: `v1.<hex HMAC-SHA256 of the JSON>.<JSON>`. The JSON is
//! a [`Message`]. A replica that cannot verify the MAC, or reads a version it does
//! not know, drops the message and counts it; it never acts on it. Invalidations are
//! idempotent, so a replayed message can only cost a cache refill; the timestamp
//! window keeps even that short.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::oci::name::RepoName;

/// Largest message read off the bus.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most invalidations in one message (a batch of a burst of pushes).
pub const MAX_BATCH: usize = 256;
/// Messages older (or further in the future) than this are refused.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

const VERSION_PREFIX: &str = "v1.";

/// One thing a replica must forget. Names are as the upstream knows them (after
/// route rewriting), so every replica maps them to its cache keys the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Invalidation {
    /// A manifest was pushed under `reference` (a tag, or a digest).
    ManifestPut {
        upstream: String,
        repository: String,
        reference: String,
    },
    /// A manifest (by digest) or a tag was deleted.
    ManifestDelete {
        upstream: String,
        repository: String,
        reference: String,
    },
    /// Something changed in the repository and the event does not say what.
    Repository {
        upstream: String,
        repository: String,
    },
    /// The sender lost invalidations it could not publish (its bus connection
    /// was down and more repositories changed than it keeps track of).
    AllTags,
}

impl Invalidation {
    /// The (upstream, repository) it is about; `None` for [`Self::AllTags`].
    pub fn target(&self) -> Option<(&str, &str)> {
        match self {
            Self::ManifestPut {
                upstream,
                repository,
                ..
            }
            | Self::ManifestDelete {
                upstream,
                repository,
                ..
            }
            | Self::Repository {
                upstream,
                repository,
            } => Some((upstream, repository)),
            Self::AllTags => None,
        }
    }

    /// Names that could not come from a registry are refused before they reach the
    /// cache (they could never match an entry, but they must not reach logs raw).
    fn check(&self) -> Result<(), MessageError> {
        let Some((upstream, repository)) = self.target() else {
            return Ok(());
        };
        RepoName::parse(repository)
            .map_err(|e| MessageError::Invalid(format!("repository: {e}")))?;
        if upstream.is_empty() || upstream.len() > 128 {
            return Err(MessageError::Invalid("upstream name".into()));
        }
        match self {
            Self::ManifestPut { reference, .. } | Self::ManifestDelete { reference, .. } => {
                if crate::oci::Reference::parse(reference).is_err() {
                    return Err(MessageError::Invalid(format!(
                        "reference `{}`",
                        reference.escape_debug()
                    )));
                }
            }
            Self::Repository { .. } | Self::AllTags => {}
        }
        Ok(())
    }
}

/// One bus message: a batch of invalidations from one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The sending replica's id, so it can skip its own messages.
    pub origin: String,
    /// Per-origin sequence number (for logs and gap detection).
    pub seq: u64,
    /// Unix seconds at sending.
    pub ts: u64,
    pub invalidations: Vec<Invalidation>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("unknown message version or framing")]
    Framing,
    #[error("message authentication failed")]
    BadMac,
    #[error("message is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("message timestamp outside the {}-second window", MAX_CLOCK_SKEW.as_secs())]
    Stale,
    #[error("invalid field: {0}")]
    Invalid(String),
}

impl MessageError {
    /// The `result` label value for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Framing => "malformed",
            Self::BadMac => "forged",
            Self::Malformed(_) | Self::Invalid(_) => "malformed",
            Self::Stale => "stale",
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seals a message for the wire.
pub fn seal(msg: &Message, key: &[u8]) -> Result<String, MessageError> {
    let json = serde_json::to_string(msg).map_err(|e| MessageError::Malformed(e.to_string()))?;
    let mut m = mac(key);
    m.update(json.as_bytes());
    let tag = hex::encode(m.finalize().into_bytes());
    let wire = format!("{VERSION_PREFIX}{tag}.{json}");
    if wire.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge);
    }
    Ok(wire)
}

/// Verifies and parses a message read off the bus. The MAC is checked (in constant
/// time) before the JSON is parsed, so unauthenticated input reaches no parser.
pub fn open(wire: &[u8], key: &[u8], now: u64) -> Result<Message, MessageError> {
    if wire.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge);
    }
    let rest = wire
        .strip_prefix(VERSION_PREFIX.as_bytes())
        .ok_or(MessageError::Framing)?;
    let dot = rest
        .iter()
        .position(|b| *b == b'.')
        .ok_or(MessageError::Framing)?;
    let (tag_hex, json) = (&rest[..dot], &rest[dot + 1..]);
    let tag = hex::decode(tag_hex).map_err(|_| MessageError::Framing)?;
    let mut m = mac(key);
    m.update(json);
    m.verify_slice(&tag).map_err(|_| MessageError::BadMac)?;
    let msg: Message =
        serde_json::from_slice(json).map_err(|e| MessageError::Malformed(e.to_string()))?;
    if msg.ts.abs_diff(now) > MAX_CLOCK_SKEW.as_secs() {
        return Err(MessageError::Stale);
    }
    if msg.invalidations.len() > MAX_BATCH {
        return Err(MessageError::Invalid("too many invalidations".into()));
    }
    if msg.origin.is_empty() || msg.origin.len() > 64 {
        return Err(MessageError::Invalid("origin".into()));
    }
    for inv in &msg.invalidations {
        inv.check()?;
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn msg() -> Message {
        Message {
            origin: "replica-a".into(),
            seq: 7,
            ts: 1_000_000,
            invalidations: vec![
                Invalidation::ManifestPut {
                    upstream: "hub".into(),
                    repository: "apps/x".into(),
                    reference: "1.0.0".into(),
                },
                Invalidation::ManifestDelete {
                    upstream: "hub".into(),
                    repository: "apps/x".into(),
                    reference: format!("sha256:{}", "a".repeat(64)),
                },
                Invalidation::Repository {
                    upstream: "hub".into(),
                    repository: "apps/y".into(),
                },
                Invalidation::AllTags,
            ],
        }
    }

    #[test]
    fn round_trip() {
        let wire = seal(&msg(), KEY).expect("seals");
        assert!(wire.starts_with("v1."));
        assert_eq!(open(wire.as_bytes(), KEY, 1_000_010), Ok(msg()));
    }

    #[test]
    fn wrong_key_or_tampered_body_is_forged() {
        let wire = seal(&msg(), KEY).expect("seals");
        let other = b"ffffffffffffffffffffffffffffffff";
        assert_eq!(
            open(wire.as_bytes(), other, 1_000_000),
            Err(MessageError::BadMac)
        );
        let tampered = wire.replace("apps/x", "apps/z");
        assert_eq!(
            open(tampered.as_bytes(), KEY, 1_000_000),
            Err(MessageError::BadMac)
        );
        assert_eq!(MessageError::BadMac.label(), "forged");
    }

    #[test]
    fn framing_age_and_fields_are_checked() {
        assert_eq!(open(b"hello", KEY, 0), Err(MessageError::Framing));
        assert_eq!(open(b"v1.zz.{}", KEY, 0), Err(MessageError::Framing));
        assert_eq!(open(b"v2.00.{}", KEY, 0), Err(MessageError::Framing));
        let wire = seal(&msg(), KEY).expect("seals");
        assert_eq!(
            open(wire.as_bytes(), KEY, 1_000_000 + 301),
            Err(MessageError::Stale)
        );
        let mut bad = msg();
        bad.invalidations = vec![Invalidation::Repository {
            upstream: "hub".into(),
            repository: "Bad Name\n".into(),
        }];
        let wire = seal(&bad, KEY).expect("seals");
        assert!(matches!(
            open(wire.as_bytes(), KEY, 1_000_000),
            Err(MessageError::Invalid(_))
        ));
        let huge = vec![b'x'; MAX_MESSAGE_BYTES + 1];
        assert_eq!(open(&huge, KEY, 0), Err(MessageError::TooLarge));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed & 0xff) as u8
                })
                .collect();
            let mut framed = b"v1.".to_vec();
            framed.extend_from_slice(&bytes);
            assert!(open(&bytes, KEY, 0).is_err());
            assert!(open(&framed, KEY, 0).is_err());
        }
    }
}

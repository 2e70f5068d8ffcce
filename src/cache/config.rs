//! The `cache:` section of the proxy configuration.
//!
//! Durations are humane strings ([`crate::config::duration`]); sizes are bytes or
//! `256MiB`-style strings ([`crate::config::size`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// Default manifest cache budget: plenty for thousands of manifests (most are a
/// few KiB) while staying small next to the proxy's other memory use.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// OCI distribution-spec: registries SHOULD accept manifests of at least 4 MiB
/// and most refuse larger ones, so anything bigger is an outlier not worth memory.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Short enough that a tag moved directly on the upstream shows up quickly,
/// long enough that a polling fleet costs one HEAD per tag per TTL.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(30);
/// How long a stale tag mapping may cover for an unreachable upstream.
pub const DEFAULT_STALE_GRACE: Duration = Duration::from_secs(300);

/// The weigher reports `u32`, so a single entry can never weigh more than this;
/// keeping `max_manifest_bytes` well below it leaves room for headers and key.
const MAX_ENTRY_BYTES: u64 = (u32::MAX / 2) as u64;

/// Configuration of the manifest cache (`cache:` in the YAML file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Turns the whole cache off; every manifest request then goes upstream.
    pub enabled: bool,
    /// Capacity in bytes, measured by a weigher over body + headers + key.
    #[serde(deserialize_with = "crate::config::size::deserialize")]
    pub max_bytes: u64,
    /// How long a tag → digest mapping is trusted without asking the upstream.
    #[serde(with = "crate::config::duration")]
    pub tag_ttl: Duration,
    /// After `tag_ttl`, how long a stale mapping may still be served when the
    /// upstream cannot be reached (connection error, timeout, 5xx).
    #[serde(with = "crate::config::duration")]
    pub stale_grace: Duration,
    /// How long a 404 for a tag or digest is remembered; `"0s"` (the default)
    /// disables negative caching.
    #[serde(with = "crate::config::duration")]
    pub negative_ttl: Duration,
    /// Manifests larger than this are served but never cached.
    #[serde(deserialize_with = "crate::config::size::deserialize")]
    pub max_manifest_bytes: u64,
    /// The blob cache (`cache.blobs`), on whenever `enabled` is.
    pub blobs: super::blob::BlobCacheConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: DEFAULT_MAX_BYTES,
            tag_ttl: DEFAULT_TAG_TTL,
            stale_grace: DEFAULT_STALE_GRACE,
            negative_ttl: Duration::ZERO,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            blobs: super::blob::BlobCacheConfig::default(),
        }
    }
}

impl CacheConfig {
    /// Checks the relations between fields that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.blobs.validate()?;
        if self.max_manifest_bytes == 0 {
            return Err(ConfigError::ZeroMaxManifestBytes);
        }
        if self.max_manifest_bytes > MAX_ENTRY_BYTES {
            return Err(ConfigError::MaxManifestBytesTooLarge {
                value: self.max_manifest_bytes,
                limit: MAX_ENTRY_BYTES,
            });
        }
        if self.enabled && self.max_bytes < self.max_manifest_bytes {
            return Err(ConfigError::CapacityBelowManifestLimit {
                max_bytes: self.max_bytes,
                max_manifest_bytes: self.max_manifest_bytes,
            });
        }
        Ok(())
    }

    /// Whether 404 answers are remembered at all.
    pub fn negative_caching(&self) -> bool {
        !self.negative_ttl.is_zero()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let cfg: CacheConfig =
            serde_json::from_str(r#"{"tag_ttl":"1m","negative_ttl":"10s"}"#).expect("valid config");
        assert_eq!(cfg.tag_ttl, Duration::from_secs(60));
        assert_eq!(cfg.negative_ttl, Duration::from_secs(10));
        assert!(cfg.negative_caching());
        assert_eq!(cfg.max_bytes, DEFAULT_MAX_BYTES);
        assert!(cfg.enabled);

        assert!(!CacheConfig::default().negative_caching());
        assert!(serde_json::from_str::<CacheConfig>(r#"{"ttl":"1m"}"#).is_err());
        assert!(serde_json::from_str::<CacheConfig>(r#"{"tag_ttl":30}"#).is_err());
        assert!(serde_json::from_str::<CacheConfig>(r#"{"tag_ttl":"30"}"#).is_err());
    }

    #[test]
    fn serializes_back_to_the_same_config() {
        let cfg = CacheConfig {
            tag_ttl: Duration::from_secs(90),
            ..CacheConfig::default()
        };
        let json = serde_json::to_string(&cfg).expect("serializable");
        assert!(json.contains(r#""tag_ttl":"90s""#), "{json}");
        let back: Result<CacheConfig, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(cfg));
    }

    #[test]
    fn validate_catches_inconsistent_limits() {
        assert!(CacheConfig::default().validate().is_ok());
        let tiny = CacheConfig {
            max_bytes: 1024,
            ..CacheConfig::default()
        };
        assert!(matches!(
            tiny.validate(),
            Err(ConfigError::CapacityBelowManifestLimit { .. })
        ));
        // A disabled cache does not care about its capacity.
        let off = CacheConfig {
            enabled: false,
            ..tiny
        };
        assert!(off.validate().is_ok());
        let zero = CacheConfig {
            max_manifest_bytes: 0,
            ..CacheConfig::default()
        };
        assert!(matches!(
            zero.validate(),
            Err(ConfigError::ZeroMaxManifestBytes)
        ));
    }
}

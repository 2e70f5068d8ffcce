//! The `cache.blobs:` section: budgets of the blob cache's two tiers.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default memory budget: the small blobs of many packages (descriptions, icons,
/// licences are a few KiB each) next to the manifest cache's own 256 MiB.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default largest blob kept in memory: bigger ones go to the disk tier, if any.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 1024 * 1024;
/// The memory tier's weigher reports `u32`.
const MAX_MEMORY_BLOB: u64 = (u32::MAX / 2) as u64;

/// `cache.blobs` in the YAML file. The whole blob cache follows `cache.enabled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobCacheConfig {
    /// Bytes the memory tier may hold; `0` turns the memory tier off.
    #[serde(deserialize_with = "crate::config::size::deserialize")]
    pub memory_max_bytes: u64,
    /// Largest blob kept in memory; larger blobs go to the disk tier when there is one.
    #[serde(deserialize_with = "crate::config::size::deserialize")]
    pub max_blob_bytes: u64,
    /// The disk tier, off unless configured.
    pub disk: Option<DiskConfig>,
}

/// `cache.blobs.disk`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Directory owned by the proxy; re-indexed at start, so blobs survive restarts.
    pub dir: PathBuf,
    /// Bytes the directory may hold (blob files, headers included); least recently
    /// used blobs are deleted first.
    #[serde(deserialize_with = "crate::config::size::deserialize")]
    pub max_bytes: u64,
}

impl Default for BlobCacheConfig {
    fn default() -> Self {
        Self {
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            disk: None,
        }
    }
}

/// A `cache.blobs` section that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobConfigError {
    #[error("cache.blobs.max_blob_bytes ({max_blob_bytes}) is larger than cache.blobs.memory_max_bytes ({memory_max_bytes})")]
    BlobLargerThanMemory {
        max_blob_bytes: u64,
        memory_max_bytes: u64,
    },
    #[error("cache.blobs.max_blob_bytes {0} exceeds the limit of {MAX_MEMORY_BLOB} bytes")]
    BlobTooLarge(u64),
    #[error("cache.blobs.disk.max_bytes must be greater than 0")]
    ZeroDisk,
    #[error("cache.blobs.disk.dir must not be empty")]
    EmptyDir,
}

impl BlobCacheConfig {
    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), BlobConfigError> {
        if self.max_blob_bytes > MAX_MEMORY_BLOB {
            return Err(BlobConfigError::BlobTooLarge(self.max_blob_bytes));
        }
        if self.memory_max_bytes > 0 && self.max_blob_bytes > self.memory_max_bytes {
            return Err(BlobConfigError::BlobLargerThanMemory {
                max_blob_bytes: self.max_blob_bytes,
                memory_max_bytes: self.memory_max_bytes,
            });
        }
        if let Some(d) = &self.disk {
            if d.max_bytes == 0 {
                return Err(BlobConfigError::ZeroDisk);
            }
            if d.dir.as_os_str().is_empty() {
                return Err(BlobConfigError::EmptyDir);
            }
        }
        Ok(())
    }

    /// Whether any tier is on.
    pub fn any_tier(&self) -> bool {
        self.memory_max_bytes > 0 || self.disk.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_unknown_keys_and_sizes() {
        let c: BlobCacheConfig = serde_json::from_str("{}").expect("empty section");
        assert_eq!(c, BlobCacheConfig::default());
        assert_eq!(c.max_blob_bytes, 1 << 20);
        assert!(c.disk.is_none());
        let c: BlobCacheConfig = serde_json::from_str(
            r#"{"memory_max_bytes":"64MiB","disk":{"dir":"/var/cache/m","max_bytes":"10GiB"}}"#,
        )
        .expect("valid");
        assert_eq!(c.memory_max_bytes, 64 << 20);
        assert_eq!(c.disk.as_ref().map(|d| d.max_bytes), Some(10 << 30));
        assert!(serde_json::from_str::<BlobCacheConfig>(r#"{"max_bytes":1}"#).is_err());
        assert!(serde_json::from_str::<BlobCacheConfig>(r#"{"disk":{"dir":"/x"}}"#).is_err());
        assert!(serde_json::from_str::<BlobCacheConfig>(
            r#"{"disk":{"dir":"/x","max_bytes":1,"ttl":1}}"#
        )
        .is_err());
    }

    #[test]
    fn validate_catches_impossible_budgets() {
        assert!(BlobCacheConfig::default().validate().is_ok());
        let c = BlobCacheConfig {
            memory_max_bytes: 1000,
            ..BlobCacheConfig::default()
        };
        assert!(matches!(
            c.validate(),
            Err(BlobConfigError::BlobLargerThanMemory { .. })
        ));
        let off = BlobCacheConfig {
            memory_max_bytes: 0,
            ..BlobCacheConfig::default()
        };
        assert!(off.validate().is_ok());
        assert!(!off.any_tier());
        let disk = BlobCacheConfig {
            disk: Some(DiskConfig {
                dir: "/tmp/x".into(),
                max_bytes: 0,
            }),
            ..BlobCacheConfig::default()
        };
        assert_eq!(disk.validate(), Err(BlobConfigError::ZeroDisk));
    }
}

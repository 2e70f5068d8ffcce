//! `catalog:` in the config file.

use std::time::Duration;

use serde::Deserialize;

/// The application catalog (JSON API under `/margo/v1/`, web pages under `/catalog/`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    /// Off by default: the catalog reads every package of the `app` routes from the
    /// upstream at start-up, which an operator should opt into.
    pub enabled: bool,
    /// How often the whole upstream is crawled again, to pick up what was pushed there
    /// directly (pushes through the proxy update the index at once).
    #[serde(with = "crate::config::duration")]
    pub crawl_interval: Duration,
    /// Most upstream requests per second a crawl makes, so a crawl of a big registry
    /// never competes with the fleet's pulls.
    pub crawl_rps: u32,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            crawl_interval: Duration::from_secs(300),
            crawl_rps: 20,
        }
    }
}

impl CatalogConfig {
    /// Pause between two crawl requests (`crawl_rps` 0 is read as 1).
    pub fn crawl_pause(&self) -> Duration {
        Duration::from_secs(1) / self.crawl_rps.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_pause() {
        let c = CatalogConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.crawl_pause(), Duration::from_millis(50));
        let zero = CatalogConfig {
            crawl_rps: 0,
            ..CatalogConfig::default()
        };
        assert_eq!(zero.crawl_pause(), Duration::from_secs(1));
    }
}

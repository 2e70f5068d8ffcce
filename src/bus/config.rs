//! The `bus:` and `events:` config sections.

use std::path::PathBuf;

use serde::Deserialize;

use crate::auth::secret::Secret;

/// Shortest HMAC key accepted: a shared secret guessable by brute force would
/// let any host on the Redis network flush every replica's cache.
pub const MIN_SECRET_BYTES: usize = 32;

/// The invalidation bus between replicas (Redis or Valkey pub/sub). Absent: each
/// replica's cache is private and converges by the tag TTL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// `redis://[user:password@]host:port[/db]`; Valkey speaks the same protocol.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Read the URL from this environment variable (it may carry a password).
    #[serde(default)]
    pub url_env: Option<String>,
    /// The pub/sub channel every replica of one deployment shares.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// The HMAC-SHA256 key that authenticates messages: exactly one of the three.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

fn default_channel() -> String {
    "margo-proxy:invalidations".into()
}

/// Upstream registries' own push/delete notifications, received on the admin
/// listener. Absent: the endpoints answer 404.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The bearer token senders present (`Authorization: Bearer <token>`): exactly
    /// one of the three.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// One of a literal, an environment variable or a file, as everywhere in the config.
fn resolve(
    what: &str,
    literal: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Secret, String> {
    match (literal, env, file) {
        (Some(s), None, None) => Ok(s.clone()),
        (None, Some(var), None) => std::env::var(var)
            .map(Secret::new)
            .map_err(|_| format!("{what}: environment variable {var} is not set")),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\n', '\r'])))
            .map_err(|e| format!("{what}: cannot read {}: {e}", path.display())),
        _ => Err(format!(
            "{what}: set exactly one of {what}, {what}_env, {what}_file"
        )),
    }
}

impl BusConfig {
    /// The Redis URL, checked for a scheme the client speaks.
    pub fn resolve_url(&self) -> Result<Secret, String> {
        let url = match (&self.url, &self.url_env) {
            (Some(u), None) => u.clone(),
            (None, Some(var)) => std::env::var(var)
                .map(Secret::new)
                .map_err(|_| format!("bus.url_env: environment variable {var} is not set"))?,
            _ => return Err("bus: set exactly one of url, url_env".into()),
        };
        let scheme_ok = [
            "redis://",
            "rediss://",
            "valkey://",
            "valkeys://",
            "redis+unix://",
            "unix://",
        ]
        .iter()
        .any(|s| url.expose().starts_with(s));
        if !scheme_ok {
            return Err("bus.url: expected a redis:// or rediss:// URL".into());
        }
        Ok(url)
    }

    /// The HMAC key, at least [`MIN_SECRET_BYTES`] long.
    pub fn resolve_secret(&self) -> Result<Secret, String> {
        let s = resolve("secret", &self.secret, &self.secret_env, &self.secret_file)
            .map_err(|e| format!("bus.{e}"))?;
        if s.expose().len() < MIN_SECRET_BYTES {
            return Err(format!(
                "bus.secret: at least {MIN_SECRET_BYTES} bytes are required (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(s)
    }

    /// Every check `serve` makes before starting, for `check-config` too.
    pub fn validate(&self) -> Result<(), String> {
        self.resolve_url()?;
        self.resolve_secret()?;
        if self.channel.is_empty() || self.channel.len() > 256 {
            return Err("bus.channel: 1 to 256 characters".into());
        }
        Ok(())
    }
}

impl EventsConfig {
    pub fn resolve_token(&self) -> Result<Secret, String> {
        let t = resolve("token", &self.token, &self.token_env, &self.token_file)
            .map_err(|e| format!("events.{e}"))?;
        if t.expose().len() < 16 {
            return Err("events.token: at least 16 characters are required".into());
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus(yaml: &str) -> BusConfig {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn secrets_are_required_and_long_enough() {
        let ok = bus("url: redis://127.0.0.1:6379\nsecret: 0123456789abcdef0123456789abcdef\n");
        assert!(ok.validate().is_ok());
        assert_eq!(ok.channel, "margo-proxy:invalidations");
        let short = bus("url: redis://127.0.0.1:6379\nsecret: short\n");
        assert!(short.validate().unwrap_err().contains("32 bytes"));
        let none = bus("url: redis://127.0.0.1:6379\n");
        assert!(none.validate().unwrap_err().contains("exactly one"));
        let bad = bus("url: http://127.0.0.1:6379\nsecret: 0123456789abcdef0123456789abcdef\n");
        assert!(bad.validate().unwrap_err().contains("redis://"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let b = bus("url: redis://:pw@127.0.0.1:6379\nsecret: 0123456789abcdef0123456789abcdef\n");
        let shown = format!("{b:?}");
        assert!(!shown.contains("pw@") && !shown.contains("0123456789abcdef"));
    }
}

//! The YAML configuration: what the proxy listens on, which upstream registries it fronts,
//! how repository names route to them, and the limits it holds requests to.
//!
//! Unknown keys are errors (a typo must not silently turn a protection off), and every
//! error names the line and column it comes from.

pub mod duration;
pub mod size;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// Largest config file read: configs are hand-written, anything bigger is a mistake.
const MAX_CONFIG_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: file is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where registry clients connect.
    pub listeners: Vec<Spanned<Listener>>,
    /// Health, readiness and metrics: kept off the registry port.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// How clients reach the proxy (`https://registry.example.com`). Used to rewrite the
    /// `Location` headers the upstream sends; derived from the request's Host when unset.
    #[serde(default)]
    pub public_url: Option<Spanned<String>>,
    pub upstreams: Vec<Spanned<UpstreamConfig>>,
    /// First match wins. Defaults to one route `**` to the first upstream.
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    #[serde(default)]
    pub metrics: crate::metrics::MetricsConfig,
    /// Bearer-token authentication of clients. Absent: the proxy authenticates nobody
    /// (the upstream's own auth, if any, still applies).
    #[serde(default)]
    pub auth: Option<crate::auth::AuthConfig>,
    /// Rego admission policies. Absent: no policies are evaluated.
    #[serde(default)]
    pub policy: Option<crate::policy::PolicyConfig>,
    /// Signature-required pulls. Absent: nothing is checked.
    #[serde(default)]
    pub trust: Option<crate::trust::TrustConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub address: String,
    #[serde(default)]
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub address: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `http://host:port` or `https://host[:port]`, no path.
    pub url: String,
    #[serde(default)]
    pub tls: UpstreamTls,
    #[serde(default)]
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Verify the upstream's certificate. Turning this off is for labs only.
    #[serde(default = "yes")]
    pub verify: bool,
    /// PEM bundle of CAs to trust instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Server name to send and verify; defaults to the URL's host.
    #[serde(default)]
    pub sni: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls {
            verify: true,
            ca_file: None,
            sni: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// The proxy's own account at the upstream. Used for basic auth or for the distribution
/// token flow, whichever the upstream's challenge asks for.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    /// Read the password from this environment variable (keeps secrets out of the file).
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn resolve_password(&self) -> Result<String, String> {
        match (&self.password, &self.password_env, &self.password_file) {
            (Some(p), None, None) => Ok(p.clone()),
            (None, Some(var), None) => {
                std::env::var(var).map_err(|_| format!("environment variable {var} is not set"))
            }
            (None, None, Some(file)) => std::fs::read_to_string(file)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
            _ => Err("set exactly one of password, password_env, password_file".into()),
        }
    }
}

/// What the proxy does with a repository: which upstream holds it, under which name,
/// and which admission rules apply to pushes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Repository-name glob: `*` stays inside one path component, `**` spans several.
    #[serde(rename = "match")]
    pub pattern: String,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    #[serde(default)]
    pub kind: RouteKind,
    #[serde(default)]
    pub mode: AdmissionMode,
    /// Tags allowed besides `metadata.version` on app routes (e.g. `latest`).
    #[serde(default)]
    pub extra_tags: Vec<String>,
    /// Accept image indexes on this route.
    #[serde(default = "yes")]
    pub allow_index: bool,
    /// Accept referrers (manifests with a `subject`: signatures, SBOMs).
    #[serde(default = "yes")]
    pub allow_referrers: bool,
}

/// `strip` is removed from the client's name and `prefix` put in front of what is left,
/// giving the name at the upstream (and the reverse on the way back).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    #[serde(default)]
    pub strip: String,
    #[serde(default)]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// Margo Application Packages.
    App,
    /// Compose archives and Helm charts.
    Component,
    /// Anything OCI.
    #[default]
    Passthrough,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    #[default]
    Enforce,
    Audit,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_connect", with = "duration")]
    pub connect: Duration,
    /// Longest wait for the next bytes from an upstream (not the whole response).
    #[serde(default = "d_read", with = "duration")]
    pub read: Duration,
    #[serde(default = "d_read", with = "duration")]
    pub write: Duration,
    /// How long a pooled upstream connection may sit unused.
    #[serde(default = "d_idle", with = "duration")]
    pub idle: Duration,
    /// Longest wait for a client's next request on a keep-alive connection.
    #[serde(default = "d_idle", with = "duration")]
    pub downstream_keepalive: Duration,
}

fn d_connect() -> Duration {
    Duration::from_secs(5)
}
fn d_read() -> Duration {
    Duration::from_secs(60)
}
fn d_idle() -> Duration {
    Duration::from_secs(60)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: d_connect(),
            read: d_read(),
            write: d_read(),
            idle: d_idle(),
            downstream_keepalive: d_idle(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Manifests are small by spec (registries cap them at 4 MiB); bigger pushes are refused.
    #[serde(default = "d_manifest", with = "size")]
    pub max_manifest_bytes: u64,
    /// Largest blob the proxy reads itself for admission (descriptions, compose archives).
    #[serde(default = "d_admission_blob", with = "size")]
    pub max_admission_blob_bytes: u64,
}

fn d_manifest() -> u64 {
    4 << 20
}
fn d_admission_blob() -> u64 {
    64 << 20
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: d_manifest(),
            max_admission_blob_bytes: d_admission_blob(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads of the registry service. Pingora's default is 1.
    #[serde(default = "d_threads")]
    pub threads: usize,
    /// On shutdown, keep accepting for this long (lets a load balancer drain us)...
    #[serde(default = "d_grace", with = "duration")]
    pub grace_period: Duration,
    /// ...then give in-flight requests this long to finish. Pingora's default is 300 s.
    #[serde(default = "d_shutdown", with = "duration")]
    pub shutdown_timeout: Duration,
    /// Let idle worker threads steal connections from busy ones (one shared Tokio
    /// runtime). Off gives each thread its own runtime and I/O driver: fewer cross-thread
    /// wake-ups on small requests, less balance under uneven load. Also, in Pingora 0.9.1,
    /// worse upstream connection reuse: the pool's idle watcher is spawned on a random
    /// runtime, and when it races the next request on another thread the connection is
    /// dropped ("failed to acquire reusable stream"): a quarter of pass-through requests
    /// reconnected in our measurement. Fine for cache-heavy pulls, not for pass-through.
    #[serde(default = "yes")]
    pub work_stealing: bool,
}

fn d_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}
fn d_grace() -> Duration {
    Duration::from_secs(0)
}
fn d_shutdown() -> Duration {
    Duration::from_secs(10)
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            threads: d_threads(),
            grace_period: d_grace(),
            shutdown_timeout: d_shutdown(),
            work_stealing: true,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// `tracing` filter, e.g. `info` or `margo_proxy=debug`; `RUST_LOG` wins when set.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Reads, parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::Parse {
            path: path.to_owned(),
            message: "file is not UTF-8".into(),
        })?;
        let config = Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ConfigError::Invalid {
                line,
                column,
                message,
                ..
            } => ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parses and checks config text (the path in errors is `<config>`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_depth: 32,
                max_anchors: 64,
                max_aliases: 1_000,
                max_events: 200_000,
            },
        };
        let mut config: Config =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Parse {
                path: PathBuf::from("<config>"),
                message: e.to_string(),
            })?;
        if config.routes.is_empty() {
            if let Some(first) = config.upstreams.first() {
                config.routes.push(Spanned {
                    value: RouteConfig::catch_all(&first.value.name),
                    referenced: first.referenced,
                    defined: first.defined,
                });
            }
        }
        crate::config::check::check(&config)?;
        Ok(config)
    }

    /// The no-file case: one plain listener, one upstream, everything routed to it.
    pub fn simple(
        upstream: &str,
        listen: &str,
        admin: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let mut text = format!(
            "listeners:\n  - address: {listen:?}\nupstreams:\n  - name: upstream\n    url: {upstream:?}\n"
        );
        if let Some(admin) = admin {
            text.push_str(&format!("admin:\n  address: {admin:?}\n"));
        }
        Self::parse(&text)
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams
            .iter()
            .map(|u| &u.value)
            .find(|u| u.name == name)
    }
}

impl RouteConfig {
    pub fn catch_all(upstream: &str) -> Self {
        RouteConfig {
            pattern: "**".into(),
            upstream: Spanned {
                value: upstream.to_owned(),
                referenced: serde_saphyr::Location::UNKNOWN,
                defined: serde_saphyr::Location::UNKNOWN,
            },
            rewrite: None,
            kind: RouteKind::Passthrough,
            mode: AdmissionMode::Enforce,
            extra_tags: Vec::new(),
            allow_index: true,
            allow_referrers: true,
        }
    }
}

pub mod check;

pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080 or [::]:443"))
}

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

pub use diagnostic::{Diagnostic, Diagnostics, Origin};

/// Why a config cannot be used. [`ConfigError::exit_code`] maps it to the CLI's scheme.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, permissions).
    #[error("cannot read {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    /// The text was read and is wrong: every finding, each with its line and column.
    #[error("{0}")]
    Invalid(Diagnostics),
}

impl ConfigError {
    /// 2 when the input could not be read, 1 when it was read and is invalid (the
    /// scheme of every subcommand, see the README's "Exit codes").
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::Read { .. } => 2,
            ConfigError::Invalid(_) => 1,
        }
    }

    /// The findings, for callers that want them one by one.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(d) => &d.items,
        }
    }
}

/// A checked config and what it is legal but unwise to run with (`tls.verify: false`).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Diagnostics,
    /// Where each value is in the text, for findings made after loading.
    pub locator: locate::Locator,
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
    /// The invalidation bus shared by replicas. Absent: caches are per replica.
    #[serde(default)]
    pub bus: Option<crate::bus::BusConfig>,
    /// Upstream registries' push/delete notifications on the admin listener.
    #[serde(default)]
    pub events: Option<crate::bus::EventsConfig>,
    /// The application catalog (`/margo/v1/applications`, `/catalog/`). Off by default.
    #[serde(default)]
    pub catalog: crate::catalog::CatalogConfig,
    /// The CNCF App Registry API (`/cnr/...`) over the upstream. Off by default.
    #[serde(default)]
    pub appr: crate::appr::ApprConfig,
    /// Signature-required pulls. Absent: nothing is checked.
    #[serde(default)]
    pub trust: Option<crate::trust::TrustConfig>,
    /// `git clone` of the `app` routes' packages under `/git/`. Off by default.
    #[serde(default)]
    pub git: crate::git::serve::GitServeConfig,
    /// Uploads to `app`/`component` routes land in a staging repository until their
    /// manifest is accepted. Absent: uploads go straight to the client's repository.
    #[serde(default)]
    pub staging: Option<crate::staging::StagingConfig>,
    /// `/v2/_catalog` merged from every upstream: caching and bounds.
    #[serde(default)]
    pub registry_catalog: crate::registry_catalog::RegistryCatalogConfig,
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
    /// `http://host:port` or `https://host[:port]`, no path. Empty for a Git upstream.
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub tls: UpstreamTls,
    #[serde(default)]
    pub credentials: Option<Credentials>,
    /// What blob GETs answered with a redirect to object storage get (`pass`: the
    /// client follows it; `follow`: the proxy fetches it and streams it).
    #[serde(default)]
    pub blob_redirects: crate::upstream::redirect::BlobRedirects,
    /// A Git repository instead of a registry (`url` is then left out).
    #[serde(default)]
    pub git: Option<crate::git::source::GitConfig>,
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
/// token flow, whichever the upstream's challenge asks for. Either `username` with one
/// password source, or `ecr` (Amazon ECR: the password is an ECR authorization token).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub ecr: Option<crate::upstream::aws::ecr::EcrConfig>,
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
            .field("ecr", &self.ecr)
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
    /// Known deviations of the reference tooling: `tolerant` (warn) or `strict` (refuse).
    #[serde(default)]
    pub deviations: crate::margo::admission::Deviations,
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
    /// Longest time a client may take to send a request's head (request line and
    /// header fields), from accept or from the head's first byte (slowloris).
    #[serde(default = "d_downstream_header", with = "duration")]
    pub downstream_header: Duration,
}

fn d_downstream_header() -> Duration {
    Duration::from_secs(10)
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
            downstream_header: d_downstream_header(),
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
    /// Largest request head (request line and header fields) a client may send; bigger
    /// heads get `431` with an OCI body. Pingora's own limit is 1 MiB, answered bare.
    #[serde(default = "d_request_header", with = "size")]
    pub max_request_header_bytes: u64,
}

fn d_request_header() -> u64 {
    64 << 10
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
            max_request_header_bytes: d_request_header(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Worker threads of the registry service. Pingora's default is 1.
    #[serde(default = "d_threads", deserialize_with = "parse::threads")]
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
    /// How worker threads take connections; see [`RuntimeMode`].
    #[serde(default)]
    pub runtime: RuntimeMode,
    /// Answer plain warm-cache pulls at the connection, before Pingora's proxy (see
    /// `crate::express`); only where no auth, policy, trust, Git upstream or staging is
    /// configured. Off: every request goes through Pingora (same answers, slower).
    #[serde(default = "yes")]
    pub express: bool,
}

/// How the registry listener's worker threads share the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeMode {
    /// One single-worker runtime and one `SO_REUSEPORT` listening socket per thread, as
    /// nginx runs its workers with `reuseport`: the kernel spreads new connections over
    /// the threads and a request never crosses threads, so there are no cross-thread
    /// wake-ups and no stolen tasks. Each thread keeps its own upstream connection pool,
    /// so the pool race of `work_stealing: false` does not arise. A connection stays on
    /// the thread that accepted it (a few busy connections can load one thread more).
    /// Needs fixed ports: a listener on port 0 falls back to `shared`.
    #[default]
    PerThread,
    /// One runtime for all threads, Pingora's own model; `work_stealing` applies.
    Shared,
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
            runtime: RuntimeMode::default(),
            express: true,
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
    /// Reads, parses and checks a config file (`-`: standard input).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Ok(Self::load_checked(path)?.config)
    }

    /// [`Config::load`], with the warnings. `serve` and `check-config` both come here.
    pub fn load_checked(path: &Path) -> Result<Loaded, ConfigError> {
        let (origin, read) = if path == Path::new("-") {
            let mut buf = Vec::new();
            let r = std::io::Read::read_to_end(
                &mut std::io::Read::take(std::io::stdin().lock(), MAX_CONFIG_BYTES as u64 + 1),
                &mut buf,
            );
            (Origin::Stdin, r.map(|_| buf))
        } else {
            (Origin::File(path.to_owned()), std::fs::read(path))
        };
        let bytes = read.map_err(|source| ConfigError::Read {
            name: match &origin {
                Origin::Stdin => "standard input".into(),
                _ => path.display().to_string(),
            },
            source,
        })?;
        let whole_file = |message: String| {
            ConfigError::Invalid(Diagnostics {
                origin: origin.clone(),
                items: vec![Diagnostic::new(1, 1, message)],
            })
        };
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(whole_file(format!(
                "file is larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            whole_file(format!(
                "file is not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Self::parse_from(&text, origin)
    }

    /// Parses and checks config text (the file in errors is `<config>`).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Ok(Self::parse_from(text, Origin::Text)?.config)
    }

    /// Parses and checks text from `origin`: every finding, not only the first.
    pub fn parse_from(text: &str, origin: Origin) -> Result<Loaded, ConfigError> {
        let invalid = |items: Vec<Diagnostic>| {
            ConfigError::Invalid(Diagnostics {
                origin: origin.clone(),
                items,
            })
        };
        let mut config: Config = match parse::typed(text) {
            Ok(c) => c,
            Err(first) => return Err(invalid(parse::all_errors(text, first))),
        };
        if config.routes.is_empty() {
            if let Some(first) = config.upstreams.first() {
                config.routes.push(Spanned {
                    value: RouteConfig::catch_all(&first.value.name),
                    referenced: first.referenced,
                    defined: first.defined,
                });
            }
        }
        let locator = locate::Locator::new(text);
        let report = check::check(&config, &locator);
        if !report.errors.is_empty() {
            return Err(invalid(report.errors));
        }
        Ok(Loaded {
            config,
            locator,
            warnings: Diagnostics {
                origin,
                items: report.warnings,
            },
        })
    }

    /// The no-file case: one plain listener, one upstream, everything routed to it.
    pub fn simple(
        upstream: &str,
        listen: &str,
        admin: Option<&str>,
    ) -> Result<Config, ConfigError> {
        Ok(Self::simple_checked(upstream, listen, admin)?.config)
    }

    /// [`Config::simple`] with the warnings; findings name the flags, not a file.
    pub fn simple_checked(
        upstream: &str,
        listen: &str,
        admin: Option<&str>,
    ) -> Result<Loaded, ConfigError> {
        let mut text = format!(
            "listeners:\n  - address: {listen:?}\nupstreams:\n  - name: upstream\n    url: {upstream:?}\n"
        );
        if let Some(admin) = admin {
            text.push_str(&format!("admin:\n  address: {admin:?}\n"));
        }
        // The lines above are the ones `diagnostic::ARGUMENT_LINES` names flags for.
        Self::parse_from(&text, Origin::Arguments)
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
            deviations: Default::default(),
        }
    }
}

pub mod check;
mod diagnostic;
#[cfg(test)]
mod keys;
pub mod locate;
mod parse;

pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("`{s}` is not an address like 127.0.0.1:8080 or [::]:443"))
}

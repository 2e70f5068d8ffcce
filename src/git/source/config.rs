//! `upstreams[].git`: a Git repository (local path or `https://` remote) that the proxy
//! mirrors and serves as Margo Application Packages.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::secret::Secret;
use crate::config::{duration, size};

/// How applications sit in the repository.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One application: `margo.yaml` at the root; tags `v1.2.3` or `1.2.3`.
    #[default]
    Repository,
    /// One application per top-level directory; tags `<app>/v1.2.3` or `<app>/1.2.3`.
    Directories,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    /// A local repository path, or an `https://` (`http://` for labs) Git remote.
    pub remote: String,
    #[serde(default)]
    pub layout: Layout,
    /// The repository name of the one application (`layout: repository`); default: the
    /// upstream's name.
    #[serde(default)]
    pub name: Option<String>,
    /// How often the remote is fetched again (webhooks fetch at once).
    #[serde(default = "d_interval", with = "duration")]
    pub fetch_interval: Duration,
    /// Where the bare mirror of a remote lives; default: a directory of its own under
    /// the system temp directory. Unused for local paths (read in place).
    #[serde(default)]
    pub mirror_dir: Option<PathBuf>,
    /// PEM CAs to trust for an `https://` remote instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Basic auth at the remote (with one of `password`, `password_env`, `password_file`).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Bearer token at the remote (one of `token`, `token_env`, `token_file`).
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Shared secret of `POST /git/<upstream>/hook` on the admin listener (GitHub/Gitea
    /// `X-Hub-Signature-256`, or `Authorization: Bearer <secret>`). None: no webhook.
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    #[serde(default)]
    pub webhook_secret_env: Option<String>,
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Largest file served; bigger ones refuse their package without being read.
    #[serde(default = "d_file", with = "size")]
    pub max_file_bytes: u64,
    /// Largest package (sum of the files served).
    #[serde(default = "d_package", with = "size")]
    pub max_package_bytes: u64,
    /// Most entries (files and directories) in a package directory.
    #[serde(default = "d_files")]
    pub max_files: usize,
    /// Most tags read.
    #[serde(default = "d_tags")]
    pub max_tags: usize,
}

fn d_interval() -> Duration {
    Duration::from_secs(300)
}
fn d_file() -> u64 {
    16 << 20
}
fn d_package() -> u64 {
    64 << 20
}
fn d_files() -> usize {
    1000
}
fn d_tags() -> usize {
    10_000
}

/// Shortest webhook secret accepted.
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// How the proxy authenticates at the remote.
#[derive(Debug, Clone)]
pub enum RemoteAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

fn resolve(
    what: &str,
    literal: &Option<Secret>,
    env: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, String> {
    match (literal, env, file) {
        (None, None, None) => Ok(None),
        (Some(s), None, None) => Ok(Some(s.clone())),
        (None, Some(var), None) => std::env::var(var)
            .map(|v| Some(Secret::new(v)))
            .map_err(|_| format!("git.{what}_env: environment variable {var} is not set")),
        (None, None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| Some(Secret::new(s.trim_end_matches(['\n', '\r']))))
            .map_err(|e| format!("git.{what}_file: cannot read {}: {e}", path.display())),
        _ => Err(format!(
            "git: set at most one of {what}, {what}_env, {what}_file"
        )),
    }
}

/// Where the repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// Read in place.
    Local(PathBuf),
    /// Fetched into a bare mirror.
    Url { url: String, tls: bool },
}

impl GitConfig {
    pub fn remote(&self) -> Result<Remote, String> {
        let r = self.remote.as_str();
        if r.is_empty() {
            return Err("git.remote: a path or an https:// URL is required".into());
        }
        if let Some(rest) = r
            .strip_prefix("https://")
            .or_else(|| r.strip_prefix("http://"))
        {
            if rest.is_empty() || rest.contains(['\n', '\r', ' ']) {
                return Err(format!("git.remote: `{r}` is not a URL"));
            }
            return Ok(Remote::Url {
                url: r.to_owned(),
                tls: r.starts_with("https://"),
            });
        }
        if r.contains("://") || r.contains('@') && r.contains(':') {
            return Err(format!(
                "git.remote: `{r}`: only local paths and http(s):// remotes are supported"
            ));
        }
        Ok(Remote::Local(PathBuf::from(r)))
    }

    pub fn auth(&self) -> Result<RemoteAuth, String> {
        let password = resolve(
            "password",
            &self.password,
            &self.password_env,
            &self.password_file,
        )?;
        let token = resolve("token", &self.token, &self.token_env, &self.token_file)?;
        match (&self.username, password, token) {
            (None, None, None) => Ok(RemoteAuth::None),
            (Some(u), Some(p), None) => Ok(RemoteAuth::Basic {
                username: u.clone(),
                password: p,
            }),
            (None, None, Some(t)) => Ok(RemoteAuth::Bearer(t)),
            (Some(_), None, _) => Err("git.username needs a password".into()),
            _ => Err("git: use either username and password, or a token".into()),
        }
    }

    pub fn webhook_secret(&self) -> Result<Option<Secret>, String> {
        let s = resolve(
            "webhook_secret",
            &self.webhook_secret,
            &self.webhook_secret_env,
            &self.webhook_secret_file,
        )?;
        if let Some(s) = &s {
            if s.expose().len() < MIN_WEBHOOK_SECRET {
                return Err(format!(
                    "git.webhook_secret: at least {MIN_WEBHOOK_SECRET} characters are required"
                ));
            }
        }
        Ok(s)
    }

    /// Every check `serve` makes before starting, for `check-config` too.
    pub fn validate(&self) -> Result<(), String> {
        let remote = self.remote()?;
        let auth = self.auth()?;
        self.webhook_secret()?;
        if let (Remote::Url { tls: false, .. }, false) = (&remote, matches!(auth, RemoteAuth::None))
        {
            return Err("git: credentials are never sent to a plain http:// remote".into());
        }
        if let (Remote::Local(_), false) = (&remote, matches!(auth, RemoteAuth::None)) {
            return Err("git: credentials are for http(s) remotes, not local paths".into());
        }
        if let Some(ca) = &self.ca_file {
            crate::upstream::tls::load_ca(ca).map_err(|e| format!("git.ca_file: {e}"))?;
        }
        if self.fetch_interval < Duration::from_secs(1) {
            return Err("git.fetch_interval must be at least 1s".into());
        }
        if self.max_files == 0 || self.max_file_bytes == 0 || self.max_package_bytes == 0 {
            return Err(
                "git: max_files, max_file_bytes and max_package_bytes must be above 0".into(),
            );
        }
        if let Some(n) = &self.name {
            crate::oci::RepoName::parse(n).map_err(|e| format!("git.name: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> GitConfig {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn remotes_and_credentials() {
        assert_eq!(
            cfg("remote: /srv/apps.git\n").remote(),
            Ok(Remote::Local("/srv/apps.git".into()))
        );
        assert!(cfg("remote: ssh://git@h/x\n").remote().is_err());
        assert!(cfg("remote: git@h:x\n").remote().is_err());
        let basic = cfg("remote: https://h/x.git\nusername: u\npassword: p\n");
        assert!(matches!(basic.auth(), Ok(RemoteAuth::Basic { .. })));
        basic.validate().expect("valid");
        let plain = cfg("remote: http://h/x.git\ntoken: t\n");
        assert!(plain.validate().unwrap_err().contains("plain http"));
        let both = cfg("remote: https://h/x.git\ntoken: t\nusername: u\npassword: p\n");
        assert!(both.auth().is_err());
        let short = cfg("remote: /x\nwebhook_secret: short\n");
        assert!(short.validate().unwrap_err().contains("16 characters"));
        assert_eq!(
            format!("{:?}", cfg("remote: /x\ntoken: hunter2\n").token),
            "Some([redacted])"
        );
    }
}

//! Getting the repository: local paths are opened in place; `http(s)://` remotes are
//! fetched with gitoxide into a bare mirror (tags only: they are what is served), with
//! the configured credentials and CA bundle and no credential helpers or prompts.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use gix::protocol::transport::client::blocking_io::http;

use super::config::{GitConfig, Remote, RemoteAuth};

/// Longest one HTTP request of a fetch may take (a pack download included).
const FETCH_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open the repository at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("fetching {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{0}")]
    Config(String),
}

/// The repository's location and how to reach it, resolved once.
pub struct Source {
    remote: Remote,
    auth: RemoteAuth,
    ca: Option<Vec<Vec<u8>>>,
    mirror: PathBuf,
}

impl Source {
    pub fn new(cfg: &GitConfig, upstream: &str) -> Result<Self, FetchError> {
        let remote = cfg.remote().map_err(FetchError::Config)?;
        let auth = cfg.auth().map_err(FetchError::Config)?;
        let ca = match &cfg.ca_file {
            Some(p) => Some(crate::upstream::tls::load_ca(p).map_err(FetchError::Config)?),
            None => None,
        };
        let mirror = match (&remote, &cfg.mirror_dir) {
            (Remote::Local(p), _) => p.clone(),
            (Remote::Url { .. }, Some(d)) => d.clone(),
            (Remote::Url { .. }, None) => std::env::temp_dir()
                .join(format!("margo-proxy-git-{}-{upstream}", std::process::id())),
        };
        Ok(Self {
            remote,
            auth,
            ca,
            mirror,
        })
    }

    /// The URL or path, for logs (never with credentials: they are not in it).
    pub fn shown(&self) -> String {
        match &self.remote {
            Remote::Local(p) => p.display().to_string(),
            Remote::Url { url, .. } => url.clone(),
        }
    }

    /// Brings the mirror up to date and opens it.
    pub fn update(&self) -> Result<gix::Repository, FetchError> {
        match &self.remote {
            Remote::Local(p) => open(p),
            Remote::Url { url, .. } => {
                let repo = if self.mirror.join("HEAD").exists() {
                    open(&self.mirror)?
                } else {
                    std::fs::create_dir_all(&self.mirror).map_err(|e| FetchError::Open {
                        path: self.mirror.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    gix::init_bare(&self.mirror).map_err(|e| FetchError::Open {
                        path: self.mirror.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    open(&self.mirror)?
                };
                self.fetch(&repo, url)?;
                // Re-open: the refs just written are read fresh.
                open(&self.mirror)
            }
        }
    }

    fn fetch(&self, repo: &gix::Repository, url: &str) -> Result<(), FetchError> {
        let err = |e: &dyn std::fmt::Display| FetchError::Fetch {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let remote = repo
            .remote_at(url)
            .map_err(|e| err(&e))?
            .with_fetch_tags(gix::remote::fetch::Tags::None)
            .with_refspecs(["+refs/tags/*:refs/tags/*"], gix::remote::Direction::Fetch)
            .map_err(|e| err(&e))?;
        let mut conn = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| err(&e))?;
        let mut options = http::Options {
            user_agent: Some(concat!("margo-proxy/", env!("CARGO_PKG_VERSION")).to_owned()),
            ..Default::default()
        };
        match &self.auth {
            RemoteAuth::None => {}
            RemoteAuth::Basic { username, password } => {
                use base64::Engine;
                let raw = format!("{username}:{}", password.expose());
                options.extra_headers.push(format!(
                    "Authorization: Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ));
            }
            RemoteAuth::Bearer(t) => options
                .extra_headers
                .push(format!("Authorization: Bearer {}", t.expose())),
        }
        // reqwest's blocking client has no overall deadline by default: a remote that
        // stalls would hold the fetch thread forever. The CA bundle goes in here too
        // (the reqwest backend does not read `http.sslCAInfo`).
        let ders = self.ca.clone();
        let backend = http::reqwest::Options {
            configure_client: Some(Box::new(
                move |builder: reqwest::blocking::ClientBuilder| {
                    let builder = builder.timeout(FETCH_REQUEST_TIMEOUT);
                    Ok(match &ders {
                        Some(ders) => builder.tls_certs_only(
                            ders.iter()
                                .filter_map(|d| reqwest::Certificate::from_der(d).ok())
                                .collect::<Vec<_>>(),
                        ),
                        None => builder,
                    })
                },
            )),
            configure_request: None,
        };
        options.backend = Some(Arc::new(Mutex::new(backend)));
        conn.set_transport_options(Box::new(options));
        // Credentials come from the config only: no helpers, no prompts.
        conn.set_credentials(|_| Ok(None));
        let interrupt = AtomicBool::new(false);
        conn.prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|e| err(&e))?
            .receive(gix::progress::Discard, &interrupt)
            .map_err(|e| err(&e))?;
        Ok(())
    }
}

fn open(path: &Path) -> Result<gix::Repository, FetchError> {
    gix::open_opts(path, gix::open::Options::isolated()).map_err(|e| FetchError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

//! The registries behind the proxy: how to reach them (Pingora peers for streamed traffic,
//! a small HTTP client for the proxy's own calls), how to authenticate, how names map.

pub mod aws;
pub mod challenge;
pub mod credentials;
pub mod deadline;
pub mod forward;
pub mod forwarded;
pub mod location;
pub mod redirect;
pub mod registry;
pub mod routing;
pub mod tls;
pub mod url;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Timeouts, UpstreamConfig};
use credentials::UpstreamCredentials;
use url::BaseUrl;

/// How long a DNS answer for an upstream is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot resolve upstream `{0}`")]
    Resolve(String),
    #[error("upstream `{name}` config: {message}")]
    Config { name: String, message: String },
}

/// One upstream registry, ready to use.
pub struct Upstream {
    pub name: String,
    pub base: BaseUrl,
    /// Never empty: Pingora silently skips certificate verification on an empty SNI.
    sni: String,
    verify: bool,
    ca: Option<Arc<CaType>>,
    timeouts: Timeouts,
    /// The proxy's own HTTP client for this upstream (admission fetches, re-issued
    /// manifest pushes, token flow, health checks), with the same trust settings.
    pub http: reqwest::Client,
    /// Always set: the configured account, or anonymous (see [`Upstream::has_account`]).
    pub credentials: Option<UpstreamCredentials>,
    /// What a blob redirect to object storage gets.
    pub blob_redirects: redirect::BlobRedirects,
    /// The client for object storage when redirects are followed: system roots (the
    /// storage is not the registry), no redirects of its own, never the proxy's
    /// credentials.
    storage: Option<reqwest::Client>,
    /// Served from a Git mirror, not over HTTP.
    pub git: bool,
    dns: moka::future::Cache<(), SocketAddr>,
}

impl Upstream {
    pub fn from_config(cfg: &UpstreamConfig, timeouts: &Timeouts) -> Result<Self, UpstreamError> {
        let err = |message: String| UpstreamError::Config {
            name: cfg.name.clone(),
            message,
        };
        // A Git upstream is answered by the proxy itself (`crate::git::source`); its
        // base is a name that never resolves (RFC 6761), should anything try.
        let base = match &cfg.git {
            Some(_) => url::parse_base("http://git.invalid").map_err(err)?,
            None => url::parse_base(&cfg.url).map_err(err)?,
        };
        let sni = cfg.tls.sni.clone().unwrap_or_else(|| base.host.clone());
        if sni.is_empty() {
            return Err(err("TLS server name is empty".into()));
        }
        let ca_ders = match &cfg.tls.ca_file {
            Some(p) => Some(tls::load_ca(p).map_err(err)?),
            None => None,
        };
        crate::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .pool_idle_timeout(timeouts.idle)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("margo-proxy/", env!("CARGO_PKG_VERSION")));
        if let Some(ders) = &ca_ders {
            let certs: Result<Vec<_>, _> = ders
                .iter()
                .map(|d| reqwest::Certificate::from_der(d))
                .collect();
            builder = builder.tls_certs_only(certs.map_err(|e| err(e.to_string()))?);
        }
        if !cfg.tls.verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| err(e.to_string()))?;
        let ping = format!("{base}/v2/");
        // Without an account the proxy's own calls still answer a Bearer challenge, with
        // anonymous tokens (public images on GHCR or Docker Hub need one for every read).
        let credentials = match &cfg.credentials {
            Some(c) => match (&c.ecr, &c.username) {
                (Some(ecr), None) => Some(UpstreamCredentials::ecr(
                    aws::ecr::EcrTokens::new(
                        &cfg.name,
                        ecr.clone(),
                        aws_client(timeouts).map_err(err)?,
                    ),
                    ping,
                    http.clone(),
                )),
                (None, Some(username)) => Some(UpstreamCredentials::new(
                    username.clone(),
                    c.resolve_password().map_err(err)?,
                    ping,
                    http.clone(),
                )),
                _ => {
                    return Err(err(
                        "credentials: set username and a password, or ecr".into()
                    ))
                }
            },
            None => Some(UpstreamCredentials::anonymous(ping, http.clone())),
        };
        let storage = match cfg.blob_redirects {
            redirect::BlobRedirects::Follow => {
                Some(redirect::storage_client(timeouts, cfg.tls.verify).map_err(err)?)
            }
            redirect::BlobRedirects::Pass => None,
        };
        Ok(Upstream {
            name: cfg.name.clone(),
            sni,
            verify: cfg.tls.verify,
            ca: ca_ders.as_deref().map(tls::pingora_ca),
            timeouts: timeouts.clone(),
            http,
            credentials,
            blob_redirects: cfg.blob_redirects,
            storage,
            git: cfg.git.is_some(),
            dns: moka::future::Cache::builder()
                .max_capacity(1)
                .time_to_live(DNS_TTL)
                .build(),
            base,
        })
    }

    /// The object-storage client, when this upstream's redirects are followed.
    pub fn storage(&self) -> Option<&reqwest::Client> {
        self.storage.as_ref()
    }

    /// The proxy has an account of its own here (configured credentials), not only the
    /// anonymous token flow: then clients' own credentials never go upstream.
    pub fn has_account(&self) -> bool {
        self.credentials.as_ref().is_some_and(|c| c.has_account())
    }

    /// A Pingora peer for this upstream with every timeout set (Pingora's are unset).
    pub async fn peer(&self) -> Result<HttpPeer, UpstreamError> {
        let addr = self.resolve().await?;
        let mut peer = HttpPeer::new(addr, self.base.is_tls(), self.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.timeouts.connect);
        o.total_connection_timeout = Some(self.timeouts.connect * 2);
        o.read_timeout = Some(self.timeouts.read);
        o.write_timeout = Some(self.timeouts.write);
        o.idle_timeout = Some(self.timeouts.idle);
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        if let Some(ca) = &self.ca {
            o.ca = Some(ca.clone());
        }
        Ok(peer)
    }

    async fn resolve(&self) -> Result<SocketAddr, UpstreamError> {
        let host = self.base.host.clone();
        let port = self.base.port;
        self.dns
            .try_get_with((), async move {
                if let Ok(ip) = host.parse::<std::net::IpAddr>() {
                    return Ok(SocketAddr::new(ip, port));
                }
                tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .ok()
                    .and_then(|mut it| it.next())
                    .ok_or(())
            })
            .await
            .map_err(|_: Arc<()>| UpstreamError::Resolve(self.base.authority()))
    }

    /// Absolute URL of `path_and_query` at this upstream.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// `/v2/` answers at all (any status below 500 means the registry is up).
    pub async fn is_ready(&self) -> bool {
        if self.git {
            // Its readiness is the mirror's (see the admin listener).
            return true;
        }
        match self
            .http
            .get(self.url("/v2/"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16() < 500,
            Err(_) => false,
        }
    }
}

/// The client for the AWS APIs (ECR, metadata endpoints): system roots, whatever CA the
/// registry itself is trusted with.
fn aws_client(timeouts: &Timeouts) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .read_timeout(timeouts.read)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("margo-proxy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

//! From a checked config to running Pingora services, with Pingora's defaults (one
//! thread, five-minute shutdown that cuts in-flight requests) replaced by the config's
//! and by [`crate::downstream`]'s connection guard and shutdown drain.

use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::{Config, RuntimeMode};
use crate::downstream::drain::{Drain, DrainingShutdown};
use crate::downstream::guard::HeadPolicy;
use crate::downstream::head::{self, HeadLimits};
use crate::downstream::DownstreamApp;
use crate::proxy::{MargoProxy, ProxyState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
}

/// Write buffer of each client connection. Pingora's default (1460 bytes) sent the
/// head of every cached blob answer (3 KiB description, 10 KiB icon) in one `sendto`
/// and its body in another: twice the segments and wake-ups for the client. With room
/// for a small blob and its head they leave in one; bodies larger than the buffer are
/// written through it unbuffered, as before.
const DOWNSTREAM_WRITE_BUFFER: usize = 16 * 1024;

/// A built server and the shutdown that drains it.
pub struct Built {
    pub server: Server,
    pub shutdown: DrainingShutdown,
}

/// Builds the server. Split from [`run`] so tests can inspect what would be started.
pub fn build(config: &Config) -> Result<Built, ServeError> {
    crate::install_crypto_provider();
    let conf = ServerConf {
        threads: config.server.threads,
        // The drain (see `downstream::drain`) exits as soon as the last connection is
        // done; Pingora's fixed sleep is only the backstop behind it.
        grace_period_seconds: Some(config.server.shutdown_timeout.as_secs() + 2),
        graceful_shutdown_timeout_seconds: Some(1),
        // The registry port must not retry non-idempotent uploads on its own.
        max_retries: 1,
        work_stealing: config.server.work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let (state, bus_worker) = ProxyState::from_config(config).map_err(ServeError::Setup)?;
    let state = Arc::new(state);
    if let Some(worker) = bus_worker {
        worker
            .spawn(state.coherence.clone())
            .map_err(ServeError::Setup)?;
    }
    let events_token = match &config.events {
        Some(e) => Some(e.resolve_token().map_err(ServeError::Setup)?),
        None => None,
    };
    crate::signals::spawn_reloader(state.policy.clone()).map_err(ServeError::Setup)?;
    if let Some(catalog) = &state.catalog {
        catalog
            .spawn_crawler()
            .map_err(|e| ServeError::Setup(format!("catalog crawler: {e}")))?;
    }
    if let Some(git) = &state.git {
        if let Some(catalog) = state.catalog.clone() {
            // New or changed Git tags are indexed at once, not at the next crawl.
            git.on_change(Arc::new(
                move || match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        if let Err(e) = rt.block_on(catalog.crawl()) {
                            tracing::warn!(error = %e, "catalog crawl after a Git change failed");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "catalog crawl after a Git change: no runtime")
                    }
                },
            ));
        }
        git.spawn()
            .map_err(|e| ServeError::Setup(format!("git mirrors: {e}")))?;
    }
    if let Some(staging) = &state.staging {
        staging
            .spawn_worker(state.upstreams.clone())
            .map_err(|e| ServeError::Setup(format!("staging worker: {e}")))?;
    }
    let upstreams = state.upstreams.clone();
    let metrics_state = state.clone();
    let drain = std::sync::Arc::new(Drain::default());
    let head_policy = HeadPolicy {
        timeout: config.timeouts.downstream_header,
        limits: HeadLimits {
            max_bytes: usize::try_from(config.limits.max_request_header_bytes)
                .unwrap_or(usize::MAX),
            max_request_line: head::MAX_REQUEST_LINE,
            max_fields: head::MAX_FIELDS,
        },
    };
    // Per-thread mode: one service (one single-worker runtime) for each thread, each with
    // its own SO_REUSEPORT socket per address; see `RuntimeMode::PerThread`. Not one
    // shared socket: Pingora 0.9.1 hands a second service on the same address string the
    // first one's socket, and each then closes it at shutdown; the second close aborts
    // the process (or, in a release build, may close whatever socket reused the number).
    // So each service spells the address its own way (`distinct_spelling`).
    let per_thread = config.server.runtime == RuntimeMode::PerThread
        && config.server.threads > 1
        && config
            .listeners
            .iter()
            .all(|l| !l.value.address.ends_with(":0"));
    let services = if per_thread { config.server.threads } else { 1 };
    let express = crate::express::Express::for_state(&state, config.server.express).map(Arc::new);
    for i in 0..services {
        let app = pingora::proxy::http_proxy(
            &server.configuration,
            MargoProxy {
                state: state.clone(),
            },
        );
        let name = if per_thread {
            format!("margo-proxy registry {i}")
        } else {
            "margo-proxy registry".to_owned()
        };
        let mut proxy = Service::new(
            name,
            DownstreamApp::new(
                app,
                head_policy,
                drain.clone(),
                config.timeouts.downstream_keepalive,
                express.clone(),
            ),
        );
        let sock = per_thread.then(|| {
            proxy.threads = Some(1);
            let mut opts = TcpSocketOptions::default();
            opts.so_reuseport = Some(true);
            opts
        });
        for l in &config.listeners {
            let l = &l.value;
            let mut endpoint = ListenerConfig::tcp(distinct_spelling(&l.address, i))
                .l4_buffer(L4BufferSettings::default().write(DOWNSTREAM_WRITE_BUFFER));
            if let Some(opts) = sock.clone() {
                endpoint = endpoint.tcp_socket_options(opts);
            }
            if let Some(tls) = &l.tls {
                let settings = TlsSettings::intermediate(
                    &tls.cert.to_string_lossy(),
                    &tls.key.to_string_lossy(),
                )
                .map_err(|e| ServeError::Setup(format!("TLS listener {}: {e}", l.address)))?;
                endpoint = endpoint.tls(settings);
            }
            proxy.add_listener(endpoint);
        }
        server.add_service(proxy);
    }
    if let Some(auth) = state.auth.clone() {
        server.add_service(pingora::services::background::background_service(
            "auth key warm-up",
            AuthWarmUp(auth),
        ));
    }

    if let Some(admin) = &config.admin {
        let mut svc = Service::new(
            "margo-proxy admin".to_owned(),
            HttpServer::new_app(AdminApp {
                upstreams,
                metrics: Some(metrics_state.metrics.clone()),
                cache: metrics_state.cache.clone(),
                blobs: metrics_state.blobs.clone(),
                auth: metrics_state.auth.clone(),
                coherence: metrics_state.coherence.clone(),
                events_token,
                git: metrics_state.git.clone(),
            }),
        );
        svc.add_tcp(&admin.address);
        server.add_service(svc);
    }
    Ok(Built {
        server,
        shutdown: DrainingShutdown {
            drain,
            grace_period: config.server.grace_period,
            shutdown_timeout: config.server.shutdown_timeout,
        },
    })
}

/// `address` with `n` zeros before its port (`127.0.0.1:8080`, `127.0.0.1:08080`...):
/// the same socket address, a different key in Pingora's table of bound sockets.
fn distinct_spelling(address: &str, n: usize) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) => format!("{host}:{}{port}", "0".repeat(n)),
        None => address.to_owned(),
    }
}

/// Fetches the issuers' keys at start-up, so the first client does not wait for
/// discovery and JWKS (a failure is logged; keys are fetched again on use).
struct AuthWarmUp(Arc<crate::auth::Authenticator>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for AuthWarmUp {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {
        for issuer in self.0.warm_up().await {
            tracing::warn!(%issuer, "could not fetch the issuer's keys at start-up; retrying on use");
        }
    }
}

/// Runs until SIGTERM, SIGINT or SIGQUIT, then drains (see [`DrainingShutdown`]).
pub fn run(config: &Config) -> Result<(), ServeError> {
    let Built { server, shutdown } = build(config)?;
    tracing::info!(
        listeners = ?config.listeners.iter().map(|l| l.value.address.as_str()).collect::<Vec<_>>(),
        "margo-proxy starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(shutdown),
    });
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::distinct_spelling;
    use std::net::SocketAddr;

    #[test]
    fn every_spelling_is_the_same_socket_address() {
        for a in ["127.0.0.1:8080", "[::1]:5000"] {
            let want: SocketAddr = a.parse().expect("address");
            for n in 0..4 {
                let spelled = distinct_spelling(a, n);
                assert_eq!(
                    spelled.parse::<SocketAddr>().expect("parses"),
                    want,
                    "{spelled}"
                );
                assert_eq!(spelled == a, n == 0);
            }
        }
    }
}

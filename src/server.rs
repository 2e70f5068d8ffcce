//! From a checked config to running Pingora services, with Pingora's defaults (one
//! thread, five-minute shutdown) replaced by the config's.

use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::Config;
use crate::proxy::{MargoProxy, ProxyState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
}

/// Builds the server. Split from [`run`] so tests can inspect what would be started.
pub fn build(config: &Config) -> Result<Server, ServeError> {
    crate::install_crypto_provider();
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.shutdown_timeout.as_secs()),
        // The registry port must not retry non-idempotent uploads on its own.
        max_retries: 1,
        work_stealing: config.server.work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let state = Arc::new(ProxyState::from_config(config).map_err(ServeError::Setup)?);
    if let Some(policy) = &state.policy {
        spawn_policy_reloader(policy.clone())?;
    }
    let upstreams = state.upstreams.clone();
    let metrics_state = state.clone();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        MargoProxy {
            state: state.clone(),
        },
        "margo-proxy registry",
    );
    for l in &config.listeners {
        let l = &l.value;
        match &l.tls {
            None => proxy.add_tcp(&l.address),
            Some(tls) => proxy
                .add_tls(
                    &l.address,
                    &tls.cert.to_string_lossy(),
                    &tls.key.to_string_lossy(),
                )
                .map_err(|e| ServeError::Setup(format!("TLS listener {}: {e}", l.address)))?,
        }
    }
    server.add_service(proxy);

    if let Some(admin) = &config.admin {
        let mut svc = Service::new(
            "margo-proxy admin".to_owned(),
            HttpServer::new_app(AdminApp {
                upstreams,
                metrics: Some(metrics_state.metrics.clone()),
                cache: metrics_state.cache.clone(),
                blobs: metrics_state.blobs.clone(),
                auth: metrics_state.auth.clone(),
            }),
        );
        svc.add_tcp(&admin.address);
        server.add_service(svc);
    }
    Ok(server)
}

/// Runs until SIGTERM/SIGINT (graceful) or SIGQUIT.
pub fn run(config: &Config) -> Result<(), ServeError> {
    let server = build(config)?;
    tracing::info!(
        listeners = ?config.listeners.iter().map(|l| l.value.address.as_str()).collect::<Vec<_>>(),
        "margo-proxy starting"
    );
    server.run_forever()
}

/// Hot reload of the Rego policies: the file watcher, and SIGHUP for an explicit reload.
/// Runs on its own small runtime so it works before and beside Pingora's.
fn spawn_policy_reloader(policy: Arc<crate::policy::PolicyService>) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Setup(format!("policy reloader: {e}")))?;
    std::thread::Builder::new()
        .name("policy-reload".into())
        .spawn(move || {
            rt.block_on(async move {
                let _watcher = policy.spawn_watcher();
                let Ok(mut hup) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    tracing::warn!("cannot listen for SIGHUP; policies reload on change only");
                    return std::future::pending::<()>().await;
                };
                while hup.recv().await.is_some() {
                    let p = policy.clone();
                    match tokio::task::spawn_blocking(move || p.reload()).await {
                        Ok(Ok(outcome)) => tracing::info!(?outcome, "policies reloaded on SIGHUP"),
                        Ok(Err(e)) => tracing::error!(error = %e, "policy reload failed; keeping the previous set"),
                        Err(e) => tracing::error!(error = %e, "policy reload task failed"),
                    }
                }
            })
        })
        .map_err(|e| ServeError::Setup(format!("policy reloader: {e}")))?;
    Ok(())
}

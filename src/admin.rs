//! The admin listener: liveness, readiness and metrics, away from the registry port so
//! that neither registry clients nor an auth layer can interfere with probes.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::cache::ManifestCache;
use crate::metrics::Metrics;
use crate::upstream::Upstream;

pub struct AdminApp {
    pub upstreams: Vec<Arc<Upstream>>,
    /// `None` answers 404 on `/metrics`.
    pub metrics: Option<Arc<Metrics>>,
    pub cache: Option<Arc<ManifestCache>>,
    pub blobs: Option<Arc<crate::cache::blob::BlobCache>>,
    pub auth: Option<Arc<crate::auth::Authenticator>>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/healthz" => text(200, "ok\n".into()),
            "/readyz" => {
                let checks = futures::future::join_all(
                    self.upstreams
                        .iter()
                        .map(|u| async move { (u.name.clone(), u.is_ready().await) }),
                )
                .await;
                if let Some(m) = &self.metrics {
                    for (name, ok) in &checks {
                        m.set_upstream_up(name, *ok);
                    }
                }
                let ready = checks.iter().all(|(_, ok)| *ok);
                let body = checks
                    .iter()
                    .map(|(n, ok)| {
                        format!("upstream {n}: {}\n", if *ok { "ok" } else { "unreachable" })
                    })
                    .collect::<String>();
                text(if ready { 200 } else { 503 }, body)
            }
            "/metrics" => match &self.metrics {
                Some(metrics) => {
                    if let Some(auth) = &self.auth {
                        metrics.sync_auth(&auth.counters());
                    }
                    if let Some(cache) = &self.cache {
                        cache.run_pending_tasks().await;
                        metrics.sync_cache(&cache.stats());
                    }
                    if let Some(blobs) = &self.blobs {
                        metrics.sync_blobs(&blobs.stats());
                    }
                    let body = match metrics.encode() {
                        Ok(b) => b,
                        Err(e) => return text(500, format!("metrics: {e}\n")),
                    };
                    let mut r = text(200, body);
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    r
                }
                None => text(404, "metrics disabled\n".into()),
            },
            _ => text(404, "not found\n".into()),
        }
    }
}

fn text(status: u16, body: String) -> Response<Vec<u8>> {
    let mut r = Response::new(body.into_bytes());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    let len = r.body().len();
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
    r
}

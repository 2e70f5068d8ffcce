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
    pub coherence: Arc<crate::bus::Coherence>,
    /// The bearer token upstream notifications must carry; `None`: no event endpoints.
    pub events_token: Option<crate::auth::secret::Secret>,
    /// Git upstreams: their webhooks (`POST /git/<upstream>/hook`), status and readiness.
    pub git: Option<Arc<crate::git::source::GitSources>>,
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        if let Some(rest) = path.strip_prefix("/events/") {
            return self.upstream_event(session, rest).await;
        }
        if let Some(rest) = path.strip_prefix("/git/") {
            return self.git_endpoint(session, rest).await;
        }
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
                let mut checks = checks;
                for m in self.git.iter().flat_map(|g| g.mirrors()) {
                    // A Git upstream is ready once its first snapshot was read.
                    if let Some(c) = checks.iter_mut().find(|(n, _)| *n == m.upstream) {
                        c.1 = m.is_ready();
                    }
                }
                let ready = checks.iter().all(|(_, ok)| *ok);
                let mut body = checks
                    .iter()
                    .map(|(n, ok)| {
                        format!("upstream {n}: {}\n", if *ok { "ok" } else { "unreachable" })
                    })
                    .collect::<String>();
                // A down bus degrades coherence (tags stale up to their TTL); the
                // replica still serves, so it stays ready.
                match self.coherence.status.connected() {
                    Some(true) => body.push_str("bus: connected\n"),
                    Some(false) => {
                        body.push_str("bus: disconnected (degraded: tags converge by TTL)\n")
                    }
                    None => {}
                }
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

/// Longest an event sender may take to deliver its body.
const EVENT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl AdminApp {
    /// `POST /events/<upstream>/<distribution|harbor|zot>`: an upstream's own
    /// notification of pushes and deletes, authenticated by the bearer token.
    async fn upstream_event(&self, session: &mut ServerSession, rest: &str) -> Response<Vec<u8>> {
        use crate::bus::events::{EventFormat, MAX_EVENT_BODY};
        let Some(token) = &self.events_token else {
            return text(
                404,
                "upstream events are not enabled (no `events:` section)\n".into(),
            );
        };
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !token.ct_eq(presented) {
            self.coherence.metrics.event("any", "unauthorized");
            let mut r = text(401, "missing or wrong bearer token\n".into());
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"margo-proxy events\""),
            );
            return r;
        }
        let (upstream, format) = match rest.split_once('/') {
            Some((u, f)) => (u, EventFormat::from_path_segment(f)),
            None => (rest, None),
        };
        let Some(format) = format else {
            return text(
                404,
                "expected /events/<upstream>/<distribution|harbor|zot>\n".into(),
            );
        };
        if !self.coherence.knows_upstream(upstream) {
            return text(
                404,
                format!("no upstream named `{}`\n", upstream.escape_debug()),
            );
        }
        if session.req_header().method != http::Method::POST {
            return text(405, "POST an event delivery here\n".into());
        }
        let ce_type = session
            .req_header()
            .headers
            .get("ce-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = tokio::time::timeout(EVENT_BODY_TIMEOUT, async {
            let mut body = Vec::new();
            while let Some(chunk) = session.read_request_body().await? {
                if body.len() + chunk.len() > MAX_EVENT_BODY {
                    return Ok(None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, Box<pingora::Error>>(Some(body))
        })
        .await;
        let body = match body {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return text(413, format!("event body over {MAX_EVENT_BODY} bytes\n")),
            Ok(Err(_)) | Err(_) => return text(400, "could not read the event body\n".into()),
        };
        match self
            .coherence
            .upstream_event(format, upstream, ce_type.as_deref(), &body)
            .await
        {
            Ok(n) => text(200, format!("{n} invalidations applied\n")),
            Err(e) => text(400, format!("{e}\n")),
        }
    }
}

impl AdminApp {
    /// `POST /git/<upstream>/hook`: fetch now (authenticated by the upstream's
    /// `webhook_secret`); `GET /git/<upstream>/status`: served tags and refused versions.
    async fn git_endpoint(&self, session: &mut ServerSession, rest: &str) -> Response<Vec<u8>> {
        use crate::git::source::hook;
        let Some((upstream, action)) = rest.split_once('/') else {
            return text(
                404,
                "expected /git/<upstream>/hook or /git/<upstream>/status\n".into(),
            );
        };
        let Some(mirror) = self.git.as_ref().and_then(|g| g.by_name(upstream)) else {
            return text(
                404,
                format!("no Git upstream named `{}`\n", upstream.escape_debug()),
            );
        };
        let method = session.req_header().method.clone();
        match (action, method) {
            ("status", http::Method::GET) => {
                let snap = mirror.snapshot();
                let tags: std::collections::BTreeMap<_, _> = snap
                    .repos
                    .iter()
                    .map(|(r, v)| (r.clone(), v.tags.keys().cloned().collect::<Vec<_>>()))
                    .collect();
                let body = serde_json::json!({
                    "upstream": mirror.upstream,
                    "ready": mirror.is_ready(),
                    "repositories": tags,
                    "refused": snap.refused,
                });
                let mut r = text(200, body.to_string());
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                r
            }
            ("hook", http::Method::POST) => {
                let Some(secret) = &mirror.webhook_secret else {
                    return text(404, "this Git upstream has no webhook_secret\n".into());
                };
                let header = |n: &str| {
                    session
                        .req_header()
                        .headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (sig, authz) = (header("x-hub-signature-256"), header("authorization"));
                let body = tokio::time::timeout(EVENT_BODY_TIMEOUT, async {
                    let mut body = Vec::new();
                    while let Some(chunk) = session.read_request_body().await? {
                        if body.len() + chunk.len() > hook::MAX_HOOK_BODY {
                            return Ok(None);
                        }
                        body.extend_from_slice(&chunk);
                    }
                    Ok::<_, Box<pingora::Error>>(Some(body))
                })
                .await;
                let body = match body {
                    Ok(Ok(Some(b))) => b,
                    Ok(Ok(None)) => return text(413, "webhook body too large\n".into()),
                    Ok(Err(_)) | Err(_) => return text(400, "could not read the body\n".into()),
                };
                if hook::authenticate(secret, sig.as_deref(), authz.as_deref(), &body).is_none() {
                    tracing::warn!(upstream, "git webhook: bad or missing signature");
                    return text(
                        401,
                        "missing or wrong X-Hub-Signature-256 (or bearer secret)\n".into(),
                    );
                }
                mirror.trigger();
                text(202, "fetch scheduled\n".into())
            }
            ("hook", _) => text(405, "POST a webhook delivery here\n".into()),
            _ => text(
                404,
                "expected /git/<upstream>/hook or /git/<upstream>/status\n".into(),
            ),
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

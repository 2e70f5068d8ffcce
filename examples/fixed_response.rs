//! The ceiling for `scripts/bench`: Pingora answering a fixed response from memory, with
//! the same thread count as the proxy, so a cache hit can be compared against "Pingora
//! doing nothing at all". Usage:
//! fixed_response ADDR BODY_FILE CONTENT_TYPE THREADS [--no-work-stealing] [--per-thread] [--keepalive SECS]
//!   [--also PATH=FILE]...
//! `--keepalive` gives client connections the same idle timeout the proxy sets (Pingora's
//! default has none, and so skips a timer per request). `--also` answers requests for
//! exactly PATH with FILE (as `application/octet-stream`), so a package mix of manifest
//! and blobs can be served with the bytes it would get from the proxy.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::{Error, ErrorType, Result};

/// The same allocator as the proxy binary, so the ceiling compares like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone)]
struct Fixed {
    body: Bytes,
    content_type: String,
    keepalive: Option<u64>,
    /// `--also` bodies by exact path.
    also: Vec<(String, Bytes)>,
}

#[async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}

    /// Like the proxy: no downstream modules (Pingora's default is an idle compression
    /// module), so the ceiling is Pingora at its leanest.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if let Some(secs) = self.keepalive {
            session.set_keepalive(Some(secs));
        }
        let path = session.req_header().uri.path();
        let (body, content_type) = match self.also.iter().find(|(p, _)| p == path) {
            Some((_, b)) => (b, "application/octet-stream"),
            None => (&self.body, self.content_type.as_str()),
        };
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("Content-Type", content_type)?;
        resp.insert_header("Content-Length", body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(body.clone()), true)
            .await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Error::e_explain(ErrorType::InternalError, "never proxies")
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let work_stealing = !take_flag(&mut args, "--no-work-stealing");
    let per_thread = take_flag(&mut args, "--per-thread");
    let keepalive = take_option(&mut args, "--keepalive").and_then(|v| v.parse().ok());
    let mut also = Vec::new();
    while let Some(spec) = take_option(&mut args, "--also") {
        let (path, file) = spec.split_once('=').expect("--also PATH=FILE");
        also.push((
            path.to_string(),
            Bytes::from(std::fs::read(file).expect("--also file")),
        ));
    }
    let [_, addr, body, content_type, threads] = args.as_slice() else {
        eprintln!(
            "usage: fixed_response ADDR BODY_FILE CONTENT_TYPE THREADS [--no-work-stealing] [--per-thread] [--keepalive SECS] [--also PATH=FILE]..."
        );
        std::process::exit(2);
    };
    let body = std::fs::read(body).expect("body file");
    let conf = ServerConf {
        threads: threads.parse().unwrap_or(2),
        // A benchmark target: exit at once on SIGTERM (Pingora's default waits 300 s).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing,
        ..ServerConf::default()
    };
    let threads = conf.threads;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let fixed = Fixed {
        body: Bytes::from(body),
        content_type: content_type.clone(),
        keepalive,
        also,
    };
    if per_thread {
        // As the proxy's `server.runtime: per_thread`: one single-thread service per
        // worker, each with its own SO_REUSEPORT socket on the address.
        for i in 0..threads {
            let mut svc = pingora::proxy::http_proxy_service_with_name(
                &server.configuration,
                fixed.clone(),
                &format!("fixed {i}"),
            );
            svc.threads = Some(1);
            let mut opts = pingora::listeners::TcpSocketOptions::default();
            opts.so_reuseport = Some(true);
            svc.add_tcp_with_settings(addr, opts);
            server.add_service(svc);
        }
    } else {
        let mut svc = pingora::proxy::http_proxy_service(&server.configuration, fixed);
        svc.add_tcp(addr);
        server.add_service(svc);
    }
    server.run_forever();
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

fn take_option(args: &mut Vec<String>, name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.remove(i);
    (i < args.len()).then(|| args.remove(i))
}

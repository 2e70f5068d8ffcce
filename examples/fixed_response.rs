//! The ceiling for `scripts/bench`: Pingora answering a fixed response from memory, with
//! the same thread count as the proxy, so a cache hit can be compared against "Pingora
//! doing nothing at all". Usage:
//! fixed_response ADDR BODY_FILE CONTENT_TYPE THREADS [--no-work-stealing] [--keepalive SECS]
//! `--keepalive` gives client connections the same idle timeout the proxy sets (Pingora's
//! default has none, and so skips a timer per request).
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

struct Fixed {
    body: Bytes,
    content_type: String,
    keepalive: Option<u64>,
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
        let mut resp = ResponseHeader::build(200, Some(3))?;
        resp.insert_header("Content-Type", self.content_type.as_str())?;
        resp.insert_header("Content-Length", self.body.len().to_string())?;
        session.write_response_header(Box::new(resp), false).await?;
        session
            .write_response_body(Some(self.body.clone()), true)
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
    let keepalive = take_option(&mut args, "--keepalive").and_then(|v| v.parse().ok());
    let [_, addr, body, content_type, threads] = args.as_slice() else {
        eprintln!(
            "usage: fixed_response ADDR BODY_FILE CONTENT_TYPE THREADS [--no-work-stealing] [--keepalive SECS]"
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
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(
        &server.configuration,
        Fixed {
            body: Bytes::from(body),
            content_type: content_type.clone(),
            keepalive,
        },
    );
    svc.add_tcp(addr);
    server.add_service(svc);
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

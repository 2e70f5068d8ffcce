//! The floor for `scripts/bench`: a Pingora proxy that does nothing but pass every request
//! to one plain-HTTP upstream (no routing, no rewriting, no logging, no metrics). Whatever
//! margo-proxy costs beyond this is ours; what this costs beyond direct is Pingora's.
//! Usage: bare_proxy ADDR UPSTREAM_HOST:PORT THREADS
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and tooling code: a panic is a failure report

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::Result;

/// The same allocator as the proxy binary, so the floor compares like with like.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, upstream, threads] = args.as_slice() else {
        eprintln!("usage: bare_proxy ADDR UPSTREAM_HOST:PORT THREADS");
        std::process::exit(2);
    };
    let conf = ServerConf {
        threads: threads.parse().unwrap_or(2),
        // A benchmark target: exit at once on SIGTERM (Pingora's default waits 300 s).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = pingora::proxy::http_proxy_service(
        &server.configuration,
        Bare {
            upstream: upstream.clone(),
        },
    );
    svc.add_tcp(addr);
    server.add_service(svc);
    server.run_forever();
}

//! Bare Pingora: the smallest pass-through proxy on the same Pingora version as the
//! gateway, so the harness can tell Pingora's own cost from the gateway's.
//! `x402-bench-bare-proxy --listen 127.0.0.1:18081 --upstream 127.0.0.1:18080 --threads 1`
//! It uses the gateway's allocator, so the two differ only in the gateway's own work.

use async_trait::async_trait;
use clap::Parser;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: String,
    #[arg(long)]
    upstream: String,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

struct PassThrough {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf { threads: args.threads.max(1), grace_period_seconds: Some(0), graceful_shutdown_timeout_seconds: Some(1), ..ServerConf::default() };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, PassThrough { upstream: args.upstream });
    service.add_tcp(&args.listen);
    server.add_service(service);
    server.run_forever();
}

//! The benchmark upstream: answers every request with the sample API's weather JSON, over
//! HTTP/1.1 keep-alive. Fast enough (hyper) that it is never the bottleneck the proxies
//! are measured against. `x402-bench-upstream --port 18080 --threads 1`

use clap::Parser;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

const BODY: &[u8] = br#"{"location":"Lisbon","temperature_c":21,"conditions":"sunny"}"#;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

async fn weather(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    Ok(response)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service_fn(weather)).await;
            });
        }
    })
}

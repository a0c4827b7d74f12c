//! Serves the front ends' fake backend (see `tests/frontend/fake.rs`) over real sockets, so
//! `tests/tritonclient/check.py` can run against it:
//!
//! ```text
//! cargo run -p cumulus-inference --example fake_kserve_server -- [--http ADDR] [--grpc ADDR] [--max-body-bytes N]
//! ```
//!
//! Both addresses default to `127.0.0.1:0` (a free port). Once both listen it prints one line
//! each, `http HOST:PORT` and `grpc HOST:PORT`, and serves until Ctrl-C or SIGTERM.

#[path = "../tests/frontend/fake.rs"]
mod fake;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use cumulus_inference::protocol::{InferBackend, Limits};
use tokio_stream::wrappers::TcpListenerStream;

fn usage(problem: &str) -> ! {
    eprintln!(
        "{problem}\nusage: fake_kserve_server [--http ADDR] [--grpc ADDR] [--max-body-bytes N]"
    );
    std::process::exit(2)
}

fn parse<T: std::str::FromStr>(flag: &str, value: Option<String>) -> T {
    let Some(value) = value else {
        usage(&format!("{flag} needs a value"))
    };
    value
        .parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: cannot parse {value:?}")))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut http: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut grpc: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut limits = Limits::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--http" => http = parse(&flag, args.next()),
            "--grpc" => grpc = parse(&flag, args.next()),
            "--max-body-bytes" => limits.max_body_bytes = parse(&flag, args.next()),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if let Err(e) = limits.validate() {
        usage(&e);
    }
    let backend: Arc<dyn InferBackend> = Arc::new(fake::FakeBackend::new(limits));

    let http_listener = tokio::net::TcpListener::bind(http).await?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc).await?;
    println!("http {}", http_listener.local_addr()?);
    println!("grpc {}", grpc_listener.local_addr()?);
    std::io::stdout().flush()?;

    let app = cumulus_inference::http::router(backend.clone());
    let http_server =
        axum::serve(http_listener, app).with_graceful_shutdown(cumulus_service::shutdown::signal());
    let grpc_server = tonic::transport::Server::builder()
        .add_service(cumulus_inference::grpc::service(backend))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(grpc_listener),
            cumulus_service::shutdown::signal(),
        );
    let (h, g) = tokio::join!(http_server, grpc_server);
    h?;
    g.map_err(std::io::Error::other)
}

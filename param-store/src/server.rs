//! [`run`]: start one shard (gRPC + health + reflection + metrics) and get a [`ShardHandle`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cumulus_proto::paramstore::v1::param_store_server::ParamStoreServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::config::ShardConfig;
use crate::error::{Result, StoreError};
use crate::grpc::ParamStoreService;
use crate::shard::Shard;

/// A running shard.
#[derive(Debug)]
pub struct ShardHandle {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound Prometheus address, when metrics are served.
    pub metrics_addr: Option<SocketAddr>,
    /// Turn to `true` to stop the shard (in-flight requests finish, waiting pulls are released).
    pub shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl ShardHandle {
    /// Stops the shard and waits until it has stopped.
    pub async fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server ends (after a shutdown, or on a fatal error).
    pub async fn wait(self) -> Result<()> {
        self.task
            .await
            .map_err(|e| StoreError::Transport(format!("server task: {e}")))?
    }
}

/// Opens the data directory (snapshot + log replay), binds `config.listen`, and serves.
pub async fn run(config: ShardConfig) -> Result<ShardHandle> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shard = Shard::open(config.clone(), shutdown_rx.clone()).await?;
    let metrics_addr = match config.metrics_listen {
        Some(addr) => Some(
            crate::metrics::serve_prometheus(addr, config.prometheus.clone(), shutdown_rx.clone())
                .await?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ParamStoreServer<ParamStoreService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cumulus_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StoreError::Transport(format!("reflection: {e}")))?;
    // The decoder's hard limit sits above the configured one so that an oversized push reaches
    // the service and is refused with a message naming the tensor.
    let hard_limit = config.max_message_bytes.saturating_mul(2);
    let service = ParamStoreServer::new(ParamStoreService::new(shard.clone()))
        .max_decoding_message_size(hard_limit)
        .max_encoding_message_size(hard_limit);

    spawn_snapshotter(
        shard.clone(),
        config.snapshot_wal_bytes,
        shutdown_rx.clone(),
    );
    let mut stop = shutdown_rx.clone();
    let server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Large pushes over loopback or a LAN: 64 KiB default windows cost a round trip per window.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service)
        // The builder's nodelay only applies to sockets it accepts itself: without it here, small
        // responses wait out Nagle and delayed ACKs (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        );
    let task = tokio::spawn(async move {
        let r = server
            .await
            .map_err(|e| StoreError::Transport(e.to_string()));
        tracing::info!("parameter store shard stopped");
        r
    });
    tracing::info!(%addr, shard = config.shard_index, of = config.shard_count, "parameter store shard serving");
    Ok(ShardHandle {
        addr,
        metrics_addr,
        shutdown,
        task,
    })
}

/// Takes a snapshot whenever the log the newest snapshot does not cover grows past `threshold`
/// bytes (the segments kept for the fallback do not count).
fn spawn_snapshotter(shard: Arc<Shard>, threshold: u64, mut shutdown: watch::Receiver<bool>) {
    if threshold == 0 {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            if shard.wal_bytes_since_snapshot() > threshold
                && let Err(e) = shard.snapshot(None).await
            {
                tracing::error!(error = %e, "automatic snapshot failed");
            }
        }
    });
}

/// Runs one shard until SIGINT or SIGTERM, on its own multi-threaded runtime (the `cumulus
/// param-store` role). Prints `listening on ADDR` on stdout once serving, for scripts and tests
/// that bind port 0.
pub fn serve_until_signal(config: ShardConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("param-store")
        .build()?;
    rt.block_on(async move {
        let handle = run(config).await?;
        println!("listening on {}", handle.addr);
        if let Some(m) = handle.metrics_addr {
            println!("metrics on http://{m}/metrics");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        cumulus_service::shutdown::signal().await;
        tracing::info!("stopping");
        handle.stop().await
    })
}

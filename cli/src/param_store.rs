//! `cumulus param-store` (one shard) and `cumulus bench param-store`: argument parsing only; the
//! role and the benchmark live in `cumulus-param-store`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cumulus_param_store::ShardConfig;
use cumulus_param_store::bench::{BenchOptions, run_blocking};
use cumulus_param_store::config::{DEFAULT_MAX_JOB_ELEMENTS, parse_shard};
use cumulus_param_store::layout::MAX_TENSOR_ELEMENTS;

/// Run one shard of the parameter store.
#[derive(Debug, clap::Args)]
pub struct ParamStoreArgs {
    /// gRPC listen address (port 0 picks a free port; the bound address is printed).
    #[arg(
        long,
        env = "CUMULUS_PARAM_STORE_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    listen: SocketAddr,

    /// Directory of the write-ahead log (and of snapshots when --store is not given).
    #[arg(long, env = "CUMULUS_PARAM_STORE_DATA_DIR")]
    data_dir: PathBuf,

    /// Object store URL for snapshots: file:///dir, memory:///, or s3://, gs://, az:// when built
    /// with the `cloud` feature. Default: DATA_DIR/objects.
    #[arg(long, env = "CUMULUS_PARAM_STORE_STORE")]
    store: Option<String>,

    /// This shard as I/N (shard I of N).
    #[arg(long, env = "CUMULUS_PARAM_STORE_SHARD", default_value = "0/1")]
    shard: String,

    /// Prometheus metrics listen address (serves /metrics).
    #[arg(long, env = "CUMULUS_PARAM_STORE_METRICS")]
    metrics: Option<SocketAddr>,

    /// Largest gRPC message accepted, in bytes.
    #[arg(long, env = "CUMULUS_PARAM_STORE_MAX_MESSAGE_BYTES", default_value_t = 64 << 20)]
    max_message_bytes: usize,

    /// Locks (sub-shards) per job inside this shard.
    #[arg(long, env = "CUMULUS_PARAM_STORE_SUB_SHARDS", default_value_t = 16)]
    sub_shards: usize,

    /// Accept NaN and infinite values in pushes (refused by default).
    #[arg(long, env = "CUMULUS_PARAM_STORE_ALLOW_NON_FINITE")]
    allow_non_finite: bool,

    /// Do not fsync the write-ahead log (faster; acknowledged pushes may be lost on power failure).
    #[arg(long, env = "CUMULUS_PARAM_STORE_NO_FSYNC")]
    no_fsync: bool,

    /// Take a snapshot when the write-ahead log passes this many bytes (0: only on request).
    #[arg(long, env = "CUMULUS_PARAM_STORE_SNAPSHOT_WAL_BYTES", default_value_t = 1 << 30)]
    snapshot_wal_bytes: u64,

    /// Longest a pull or clock call waits for the synchronization mode, in seconds.
    #[arg(
        long,
        env = "CUMULUS_PARAM_STORE_MAX_CLOCK_WAIT_SECS",
        default_value_t = 300
    )]
    max_clock_wait_secs: u64,

    /// Most elements of one tensor (at most 2^30); a larger registration is refused before it is
    /// logged.
    #[arg(long, env = "CUMULUS_PARAM_STORE_MAX_TENSOR_ELEMENTS", default_value_t = MAX_TENSOR_ELEMENTS)]
    max_tensor_elements: u64,

    /// Most elements of one job, all tensors together.
    #[arg(long, env = "CUMULUS_PARAM_STORE_MAX_JOB_ELEMENTS", default_value_t = DEFAULT_MAX_JOB_ELEMENTS)]
    max_job_elements: u64,

    /// Most bytes the jobs of this shard may take (estimated from their layouts: about 8 bytes
    /// per element it holds, plus bookkeeping); a registration past it is refused with
    /// RESOURCE_EXHAUSTED. Default: half of the machine's (or container's) memory.
    #[arg(long, env = "CUMULUS_PARAM_STORE_MAX_SHARD_BYTES")]
    max_shard_bytes: Option<u64>,

    /// Start even with a damaged write-ahead log: keep the records before the damage, set the rest
    /// aside (`*.damaged-*` files next to the log) and report the loss; also leave out logged jobs
    /// over the limits. Without it the shard refuses to start and names the file and byte offset.
    #[arg(long, env = "CUMULUS_PARAM_STORE_SALVAGE")]
    salvage: bool,
}

/// Runs the shard until SIGINT/SIGTERM.
pub fn run(args: ParamStoreArgs) -> anyhow::Result<()> {
    let (shard_index, shard_count) = parse_shard(&args.shard)?;
    let mut config = ShardConfig::new(args.listen, args.data_dir);
    config.store_url = args.store;
    config.shard_index = shard_index;
    config.shard_count = shard_count;
    config.metrics_listen = args.metrics;
    config.prometheus = args
        .metrics
        .is_some()
        .then(crate::telemetry::prometheus)
        .transpose()?;
    config.max_message_bytes = args.max_message_bytes;
    config.sub_shards = args.sub_shards;
    config.allow_non_finite = args.allow_non_finite;
    config.wal_fsync = !args.no_fsync;
    config.snapshot_wal_bytes = args.snapshot_wal_bytes;
    config.max_clock_wait = std::time::Duration::from_secs(args.max_clock_wait_secs);
    config.max_tensor_elements = args.max_tensor_elements;
    config.max_job_elements = args.max_job_elements;
    if let Some(bytes) = args.max_shard_bytes {
        config.max_shard_bytes = bytes;
    }
    config.salvage = args.salvage;
    cumulus_param_store::server::serve_until_signal(config).context("parameter store shard")
}

/// Benchmark the parameter store against Redis (as MLLess uses it) on sparse exchanges.
#[derive(Debug, clap::Args)]
pub struct BenchParamStoreArgs {
    /// Worker counts to run (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_WORKERS",
        value_delimiter = ',',
        default_value = "2,4,8"
    )]
    workers: Vec<usize>,

    /// Update densities in percent (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_DENSITIES",
        value_delimiter = ',',
        default_value = "0.1,1,10,100"
    )]
    densities: Vec<f64>,

    /// Parameter-store shard counts (comma-separated).
    #[arg(
        long,
        env = "CUMULUS_BENCH_SHARDS",
        value_delimiter = ',',
        default_value = "1,4"
    )]
    shards: Vec<u32>,

    /// Model size in parameters.
    #[arg(long, env = "CUMULUS_BENCH_PARAMS", default_value_t = 10_000_000)]
    params: u64,

    /// Exchanges (push + pull) per worker in each configuration.
    #[arg(long, env = "CUMULUS_BENCH_ROUNDS", default_value_t = 10)]
    rounds: usize,

    /// Skip the Redis side (no redis-server needed).
    #[arg(long, env = "CUMULUS_BENCH_NO_REDIS")]
    no_redis: bool,

    /// Path of the redis-server binary.
    #[arg(
        long,
        env = "CUMULUS_BENCH_REDIS_SERVER",
        default_value = "redis-server"
    )]
    redis_server: PathBuf,

    /// Do not fsync the store's write-ahead log (Redis runs without persistence).
    #[arg(long, env = "CUMULUS_BENCH_NO_FSYNC")]
    no_fsync: bool,

    /// Write the results as JSON to this file.
    #[arg(long, env = "CUMULUS_BENCH_OUT")]
    out: Option<PathBuf>,
}

/// Runs the benchmark, prints its table, writes JSON.
pub fn bench(args: BenchParamStoreArgs) -> anyhow::Result<()> {
    let opts = BenchOptions {
        workers: args.workers,
        densities: args.densities.iter().map(|d| d / 100.0).collect(),
        shards: args.shards,
        params: args.params,
        rounds: args.rounds,
        redis_server: (!args.no_redis).then_some(args.redis_server),
        wal_fsync: !args.no_fsync,
        out: args.out,
    };
    run_blocking(opts).context("parameter store benchmark")?;
    Ok(())
}

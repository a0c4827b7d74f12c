//! The `cumulus bench param-store` suite without the rest of the binary, for quick iterations:
//! `cargo run --release -p cumulus-param-store --features bench --example bench_param_store -- W D% SHARDS PARAMS ROUNDS [redis|-] [OUT.json]`.

fn main() -> Result<(), cumulus_param_store::StoreError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let list = |s: String| {
        s.split(',')
            .filter_map(|x| x.parse::<f64>().ok())
            .collect::<Vec<_>>()
    };
    let opts = cumulus_param_store::bench::BenchOptions {
        workers: list(get(0, "4")).into_iter().map(|x| x as usize).collect(),
        densities: list(get(1, "1")).into_iter().map(|d| d / 100.0).collect(),
        shards: list(get(2, "1")).into_iter().map(|x| x as u32).collect(),
        params: get(3, "10000000").parse().unwrap_or(10_000_000),
        rounds: get(4, "5").parse().unwrap_or(5),
        redis_server: (get(5, "") == "redis").then(|| "redis-server".into()),
        wal_fsync: std::env::var("BENCH_FSYNC").map_or(true, |v| v != "0"),
        out: args.get(6).map(Into::into),
    };
    cumulus_param_store::bench::run_blocking(opts).map(|_| ())
}

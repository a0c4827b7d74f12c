//! The open-loop load generator as a stand-alone program, for benchmark harnesses that drive
//! other servers (`bench/serve/run.sh`) before `cumulus bench serve` exists.
//!
//! ```text
//! cargo run --release -p cumulus-inference --features bench --example loadgen -- \
//!     --url http://127.0.0.1:8080 --transport rest-json --rates 100,200,400 \
//!     --duration 10 --slo-ms 25 --server-pid 1234 --out run.json
//! ```
//!
//! It sweeps the rates (stepping up, then bisecting between the last that held and the first that
//! failed), prints the table and writes `{"label", "spec", "plan", "sweep"}` as JSON. Arguments
//! are parsed by hand so the example needs no dependency beyond the crate's own.

use std::collections::HashMap;
use std::error::Error;
use std::str::FromStr;

use cumulus_inference::loadgen::{self, Arrival, LoadSpec, Payload, SweepPlan, Transport};

const USAGE: &str = "\
loadgen: open-loop KServe V2 load generator; sweeps rates, reports the maximum sustainable one

  --url URL               server base URL (gRPC: the gRPC endpoint)          [required]
  --rates R1,R2,...       mean arrival rates to step through, req/s           [required]
  --transport T           rest-json | rest-binary | grpc                      [rest-json]
  --model NAME            model name                                          [mlp]
  --input NAME            input tensor name                                   [input]
  --output NAME           output tensor to ask for                            [all]
  --shape D1,D2,...       input shape                                         [1,784]
  --arrival A             poisson | constant | bursty                         [poisson]
  --peak-to-mean X        bursty: on rate / mean rate                         [4]
  --on-s S, --off-s S     bursty: mean on / off period, seconds               [0.25, 0.75]
  --duration S            measured seconds per rate                           [10]
  --warmup S              warm-up seconds per rate (not measured)             [2]
  --slo-ms MS             a rate holds when p99 <= MS ...                     [25]
  --max-error-rate F      ... and errors < F                                  [0.01]
  --bisect-steps N        bisection runs after the first failing rate         [3]
  --tolerance F           stop bisecting when the bracket is narrower         [0.05]
  --pause-s S             quiet seconds between rates                         [2]
  --retries N             re-runs of a failing stepped rate (it holds if any run holds) [0]
  --seed N                seed of the schedule and payloads                   [1]
  --max-in-flight N       outstanding requests at most (more are dropped)     [2048]
  --timeout-ms MS         request timeout                                     [10000]
  --server-pid PID        measure CPU of this process tree
  --metrics-url URL       Prometheus endpoint with cumulus_runtime_billed_gb_seconds
  --vcpu-second-usd P     price of a vCPU-second (cost of servers that bill nothing)
  --label TEXT            stored in the JSON
  --out FILE              write the JSON here
";

const FLAGS: &[&str] = &[
    "url",
    "rates",
    "transport",
    "model",
    "input",
    "output",
    "shape",
    "arrival",
    "peak-to-mean",
    "on-s",
    "off-s",
    "duration",
    "warmup",
    "slo-ms",
    "max-error-rate",
    "bisect-steps",
    "tolerance",
    "pause-s",
    "retries",
    "seed",
    "max-in-flight",
    "timeout-ms",
    "server-pid",
    "metrics-url",
    "vcpu-second-usd",
    "label",
    "out",
];

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            if arg == "--help" || arg == "-h" {
                print!("{USAGE}");
                std::process::exit(0);
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument `{arg}`"));
            };
            let (key, value) = match flag.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => {
                    let v = it.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                    (flag.to_string(), v)
                }
            };
            if !FLAGS.contains(&key.as_str()) {
                return Err(format!("unknown flag --{key}"));
            }
            map.insert(key, value);
        }
        Ok(Self(map))
    }

    fn get<T: FromStr>(&self, key: &str, default: T) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(key) {
            Some(v) => v.parse().map_err(|e| format!("--{key} {v}: {e}")),
            None => Ok(default),
        }
    }

    fn opt<T: FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.0
            .get(key)
            .map(|v| v.parse().map_err(|e| format!("--{key} {v}: {e}")))
            .transpose()
    }

    fn list<T: FromStr>(&self, key: &str, default: &str) -> Result<Vec<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.0.get(key).map_or(default, String::as_str);
        text.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.trim().parse().map_err(|e| format!("--{key} {s}: {e}")))
            .collect()
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse().map_err(|e| format!("{e}\n\n{USAGE}"))?;
    let url: String = args.opt("url")?.ok_or("--url is required")?;
    let rates: Vec<f64> = args.list("rates", "")?;
    let first = *rates.first().ok_or("--rates is required")?;
    let arrival = match args.get("arrival", "poisson".to_string())?.as_str() {
        "poisson" => Arrival::Poisson { rate: first },
        "constant" => Arrival::Constant { rate: first },
        "bursty" => Arrival::bursty(
            first,
            args.get("peak-to-mean", 4.0)?,
            args.get("on-s", 0.25)?,
            args.get("off-s", 0.75)?,
        )?,
        other => return Err(format!("--arrival {other}: poisson, constant or bursty").into()),
    };
    let mut spec = LoadSpec {
        transport: args.get("transport", Transport::RestJson)?,
        arrival,
        duration_s: args.get("duration", 10.0)?,
        warmup_s: args.get("warmup", 2.0)?,
        seed: args.get("seed", 1)?,
        slo_ms: args.get("slo-ms", 25.0)?,
        max_in_flight: args.get("max-in-flight", 2048)?,
        timeout_ms: args.get("timeout-ms", 10_000)?,
        server_pid: args.opt("server-pid")?,
        metrics_url: args.opt("metrics-url")?,
        ..LoadSpec::new(
            &url,
            Payload {
                output: args.opt("output")?,
                ..Payload::new(
                    &args.get("model", "mlp".to_string())?,
                    &args.get("input", "input".to_string())?,
                    &args.list::<i64>("shape", "1,784")?,
                )
            },
        )
    };
    if let Some(p) = args.opt("vcpu-second-usd")? {
        spec.cost.vcpu_second_usd = p;
    }
    let plan = SweepPlan {
        rates,
        bisect_steps: args.get("bisect-steps", 3)?,
        tolerance: args.get("tolerance", 0.05)?,
        max_error_rate: args.get("max-error-rate", 0.01)?,
        pause_s: args.get("pause-s", 2.0)?,
        retries: args.get("retries", 0)?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let swept = rt.block_on(loadgen::sweep(&spec, &plan))?;
    print!("{}", loadgen::sweep_table(&swept));
    if let Some(out) = args.opt::<String>("out")? {
        let json = serde_json::json!({
            "label": args.get("label", String::new())?,
            "spec": spec,
            "plan": plan,
            "sweep": swept,
        });
        std::fs::write(&out, serde_json::to_vec_pretty(&json)?)
            .map_err(|e| format!("writing {out}: {e}"))?;
    }
    Ok(())
}

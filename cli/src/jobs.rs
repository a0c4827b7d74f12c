//! `cumulus submit` and `cumulus jobs list|watch|cancel`: a client of the job API that
//! `cumulus up` serves (DESIGN.md §5). Progress comes as server-sent events, read here as a byte
//! stream split on blank lines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::train::phase_kind;

/// Where the control plane is and how to prove who we are.
#[derive(Clone, Args)]
pub struct ClientArgs {
    /// The control plane's URL, as `cumulus up` prints it (`http://HOST:PORT` or
    /// `http://HOST:PORT/v1/jobs`).
    #[arg(long, env = "CUMULUS_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Bearer token of the job API, when the control plane requires one.
    #[arg(long, env = "CUMULUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

// The token is a secret: never printed, not even in debug output.
impl std::fmt::Debug for ClientArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The job file: TOML, or JSON when it ends in `.json`.
    job: PathBuf,
    /// Follow the job's progress to its end; exit non-zero unless it succeeded.
    #[arg(long, env = "CUMULUS_SUBMIT_WATCH")]
    watch: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One line per job: id, state, steps, loss, metric, cost.
    List(ClientArgs),
    /// Follow a job's progress to its end; exit non-zero unless it succeeded.
    Watch {
        /// The job id, as `submit` printed it.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a job: its workers stop after the step they are in, wherever they wait, and the
    /// model so far is written.
    Cancel {
        /// The job id, as `submit` printed it.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.job)
        .with_context(|| format!("{}: cannot read", args.job.display()))?;
    let json = args.job.extension().is_some_and(|e| e == "json");
    block_on(async move {
        let api = Api::new(&args.client)?;
        let response = api
            .request(reqwest::Method::POST, "")
            .header(
                reqwest::header::CONTENT_TYPE,
                if json {
                    "application/json"
                } else {
                    "application/toml"
                },
            )
            .body(text)
            .send()
            .await
            .with_context(|| format!("submitting to {}", api.base))?;
        let body = answer(response).await?;
        let id = body["id"]
            .as_str()
            .context("the control plane answered without a job id")?
            .to_string();
        println!("{id}");
        if args.watch {
            watch(&api, &id).await
        } else {
            Ok(())
        }
    })
}

pub fn run(command: JobsCommand) -> anyhow::Result<()> {
    block_on(async move {
        match command {
            JobsCommand::List(client) => list(&Api::new(&client)?).await,
            JobsCommand::Watch { id, client } => watch(&Api::new(&client)?, &id).await,
            JobsCommand::Cancel { id, client } => {
                let api = Api::new(&client)?;
                let response = api
                    .request(reqwest::Method::DELETE, &format!("/{id}"))
                    .send()
                    .await
                    .with_context(|| format!("cancelling at {}", api.base))?;
                let job = answer(response).await?;
                println!("{id}: {}", job["state"].as_str().unwrap_or("?"));
                Ok(())
            }
        }
    })
}

fn block_on<F: Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

struct Api {
    client: reqwest::Client,
    /// `http://HOST:PORT/v1/jobs`.
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let url = args.url.trim_end_matches('/');
        let url = url.strip_suffix("/v1/jobs").unwrap_or(url);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            base: format!("{url}/v1/jobs"),
            token: args.token.clone(),
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// The JSON body of a successful answer, or the server's `error` message as the error.
async fn answer(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = body["error"].as_str().unwrap_or("no reason given");
        bail!("the control plane refused ({status}): {reason}");
    }
    Ok(body)
}

async fn list(api: &Api) -> anyhow::Result<()> {
    let response = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .with_context(|| format!("listing jobs at {}", api.base))?;
    let body = answer(response).await?;
    let jobs = body["jobs"].as_array().cloned().unwrap_or_default();
    let mut table = comfy_table::Table::new();
    table.set_header(["id", "state", "phase", "steps", "loss", "metric", "cost $"]);
    for job in &jobs {
        let st = &job["status"];
        let metric = match st["metric_value"].as_f64() {
            Some(v) => format!("{} {v:.4}", st["metric"].as_str().unwrap_or("")),
            None => String::new(),
        };
        table.add_row([
            job["id"].as_str().unwrap_or("?").to_string(),
            job["state"].as_str().unwrap_or("?").to_string(),
            st["phase"].as_str().unwrap_or("").to_string(),
            st["steps"].to_string(),
            st["loss"]
                .as_f64()
                .map(|l| format!("{l:.4}"))
                .unwrap_or_default(),
            metric,
            st["cost_usd"]
                .as_f64()
                .map(|c| format!("{c:.6}"))
                .unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// Follows `/events` with a progress bar; an error unless the job succeeded.
async fn watch(api: &Api, id: &str) -> anyhow::Result<()> {
    let response = api
        .request(reqwest::Method::GET, &format!("/{id}/events"))
        .send()
        .await
        .with_context(|| format!("following {id} at {}", api.base))?;
    if !response.status().is_success() {
        answer(response).await?;
        bail!("the control plane refused to stream {id}");
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .expect("the progress template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut phase = String::new();
    let end = 'stream: loop {
        let Some(chunk) = body.next().await else {
            break None;
        };
        buffer.extend_from_slice(&chunk.context("reading the event stream")?);
        while let Some((event, data)) = next_event(&mut buffer) {
            let Ok(value) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            match event.as_str() {
                "status" => {
                    // Each new phase as a line too: a pipe or a log, where the bar is hidden,
                    // sees what the job waits for (queued, starting workers, a barrier).
                    let now = value["phase"].as_str().unwrap_or("").to_string();
                    if phase_kind(&now) != phase_kind(&phase) {
                        let line = format!("{id}: {now}");
                        if bar.is_hidden() {
                            eprintln!("{line}");
                        } else {
                            bar.println(line);
                        }
                    }
                    phase = now;
                    bar.set_message(progress_line(&value));
                }
                "end" => break 'stream Some(value),
                _ => {}
            }
        }
    };
    bar.finish_and_clear();
    let Some(job) = end else {
        bail!("the event stream of {id} closed before the job ended");
    };
    let state = job["state"].as_str().unwrap_or("?");
    let st = &job["status"];
    let metric = match st["metric_value"].as_f64() {
        Some(v) => format!(", {} {v:.4}", st["metric"].as_str().unwrap_or("")),
        None => String::new(),
    };
    println!(
        "{id}: {state}{metric} after {} steps, {} bytes pushed, billed ${:.6}",
        st["steps"],
        st["bytes_pushed"],
        st["cost_usd"].as_f64().unwrap_or(0.0)
    );
    match state {
        "succeeded" => Ok(()),
        "failed" => bail!(
            "job {id} failed: {}",
            job["error"].as_str().unwrap_or("no reason given")
        ),
        other => bail!("job {id} ended {other}"),
    }
}

/// Takes the next complete event (`event:` name, joined `data:` lines) off the front of the
/// buffer; comments and data-less blocks are skipped.
fn next_event(buffer: &mut Vec<u8>) -> Option<(String, String)> {
    loop {
        let end = buffer.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = buffer.drain(..end + 2).collect();
        let block = String::from_utf8_lossy(&block);
        let mut event = "message".to_string();
        let mut data = Vec::new();
        for line in block.lines() {
            let line = line.trim_end_matches('\r');
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
            }
        }
        if !data.is_empty() {
            return Some((event, data.join("\n")));
        }
    }
}

fn progress_line(st: &Value) -> String {
    let metric = match st["metric_value"].as_f64() {
        Some(v) => format!(" {} {v:.4}", st["metric"].as_str().unwrap_or("")),
        None => String::new(),
    };
    format!(
        "epoch {:.1} step {} loss {:.4}{metric} | pushed {} KiB | {} workers | ${:.6}",
        st["epoch"].as_f64().unwrap_or(0.0),
        st["steps"],
        st["loss"].as_f64().unwrap_or(f64::NAN),
        st["bytes_pushed"].as_u64().unwrap_or(0) / 1024,
        st["workers"],
        st["cost_usd"].as_f64().unwrap_or(0.0)
    )
}

#[cfg(test)]
mod tests {
    use super::next_event;

    #[test]
    fn events_are_split_on_blank_lines_and_comments_skipped() {
        let mut buffer =
            b": keep-alive\n\nevent: status\ndata: {\"a\":1}\n\nevent: end\ndata: {}\n\nevent: par"
                .to_vec();
        assert_eq!(
            next_event(&mut buffer),
            Some(("status".into(), "{\"a\":1}".into()))
        );
        assert_eq!(next_event(&mut buffer), Some(("end".into(), "{}".into())));
        assert_eq!(next_event(&mut buffer), None);
        assert_eq!(buffer, b"event: par");
    }
}

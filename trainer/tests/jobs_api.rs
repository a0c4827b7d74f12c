//! The job API: the router without a socket (every refusal and its status), then a real server
//! on 127.0.0.1:0 with a real in-process parameter-store shard and in-process workers, followed
//! through its server-sent events to the end of a job that succeeds and of one that is cancelled.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cumulus_param_store::ShardConfig;
use cumulus_service::auth::BearerTokens;
use cumulus_trainer::fleet::InProcessFleet;
use cumulus_trainer::jobs::confine::Confinement;
use cumulus_trainer::jobs::{JobManager, ManagerConfig, http};
use futures::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;

/// Every test that runs jobs ends well within this, or fails.
const TEST_LIMIT: Duration = Duration::from_secs(600);

fn digits_job(target: f64, max_epochs: u32) -> String {
    common::digits_job(
        "name = \"digits\"",
        "sync = \"bsp\"",
        &format!("target_accuracy = {target}\nmax_epochs = {max_epochs}"),
    )
}

fn manager(work_dir: &std::path::Path, store: String, max_active: usize) -> JobManager {
    let mut config = ManagerConfig::new(work_dir, vec![store]);
    config.max_running = 1;
    config.max_active = max_active;
    let fleet = Arc::new(InProcessFleet {
        time_limit: Duration::from_secs(120),
    });
    JobManager::new(config, fleet)
}

async fn call(app: axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body is readable");
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, value)
}

fn post(body: impl Into<Body>) -> Request<Body> {
    Request::post("/v1/jobs").body(body.into()).unwrap()
}

fn error_of(value: &Value) -> &str {
    value["error"]
        .as_str()
        .expect("an error body has an `error` string")
}

#[tokio::test]
async fn a_bad_job_file_is_a_400_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = http::router(
        manager(dir.path(), "127.0.0.1:9".into(), 4),
        BearerTokens::default(),
    );
    let bad = digits_job(0.95, 60).replace("count = 2", "count = 0");
    let (status, body) = call(app.clone(), post(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("workers.count"), "{body}");

    let (status, body) = call(app.clone(), post("name = ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // JSON is read as JSON when it says so.
    let request = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"name": "x"}"#))
        .unwrap();
    let (status, body) = call(app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error_of(&body).contains("model"), "{body}");
}

#[tokio::test]
async fn an_unknown_job_is_a_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = http::router(
        manager(dir.path(), "127.0.0.1:9".into(), 4),
        BearerTokens::default(),
    );
    for request in [
        Request::get("/v1/jobs/nope-1").body(Body::empty()).unwrap(),
        Request::get("/v1/jobs/nope-1/events")
            .body(Body::empty())
            .unwrap(),
        Request::delete("/v1/jobs/nope-1")
            .body(Body::empty())
            .unwrap(),
    ] {
        let (status, body) = call(app.clone(), request).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("nope-1"), "{body}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_a_401_when_tokens_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let app = http::router(
        manager(dir.path(), "127.0.0.1:9".into(), 4),
        BearerTokens::new(vec!["s3cret".to_string()]),
    );
    let (status, body) = call(
        app.clone(),
        Request::get("/v1/jobs").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!error_of(&body).contains("s3cret"));
    let wrong = Request::get("/v1/jobs")
        .header(header::AUTHORIZATION, "Bearer s3cres")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app.clone(), wrong).await.0, StatusCode::UNAUTHORIZED);
    let right = Request::get("/v1/jobs")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(app, right).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["jobs"], Value::Array(vec![]));
}

#[tokio::test]
async fn an_oversized_body_is_a_413() {
    let dir = tempfile::tempdir().unwrap();
    let app = http::router(
        manager(dir.path(), "127.0.0.1:9".into(), 4),
        BearerTokens::default(),
    );
    let huge = "#".repeat(http::MAX_BODY_BYTES + 1);
    let (status, body) = call(app, post(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(error_of(&body).contains("larger than"), "{body}");
}

// A current-thread runtime: the first job cannot start (let alone end) before the second
// submission, so the limit is met deterministically.
#[tokio::test]
async fn too_many_jobs_is_a_429() {
    let dir = tempfile::tempdir().unwrap();
    let app = http::router(
        manager(dir.path(), "127.0.0.1:9".into(), 1),
        BearerTokens::default(),
    );
    let (status, body) = call(app.clone(), post(digits_job(0.95, 60))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("digits-"))
    );
    let (status, body) = call(app, post(digits_job(0.95, 60))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(error_of(&body).contains("limit is 1"), "{body}");
}

// Current-thread runtime: both jobs are queued before either task runs.
#[tokio::test]
async fn a_queued_job_cancelled_before_it_starts_ends_cancelled_without_running() {
    tokio::time::timeout(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let manager = manager(dir.path(), "127.0.0.1:9".into(), 2);
        let first = manager.submit_text(&digits_job(0.95, 60), false).unwrap();
        let queued = manager.submit_text(&digits_job(0.95, 60), false).unwrap();
        assert_ne!(first, queued);
        let mut progress = manager.subscribe(&queued).unwrap();
        manager.cancel(&queued).unwrap();
        while progress.changed().await.is_ok() {}
        let job = manager.get(&queued).unwrap();
        assert_eq!(job.state, cumulus_trainer::report::JobState::Cancelled);
        assert!(!job.started);
        assert_eq!(manager.list().len(), 2, "a finished job stays listed");
    })
    .await
    .expect("the queued job ends at once");
}

/// A real server on port 0 with its shard; dropped state shuts both down.
struct Server {
    url: String,
    manager: JobManager,
    shutdown: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
    shard: cumulus_param_store::ShardHandle,
    _dir: tempfile::TempDir,
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut shard = ShardConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("store"));
    shard.wal_fsync = false;
    let shard = cumulus_param_store::run(shard).await.unwrap();
    let manager = manager(&dir.path().join("jobs"), shard.addr.to_string(), 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let app = http::router(manager.clone(), BearerTokens::default());
    let served = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop.await;
            })
            .await
            .expect("the test server runs");
    });
    Server {
        url,
        manager,
        shutdown,
        served,
        shard,
        _dir: dir,
    }
}

impl Server {
    async fn stop(self) {
        self.manager.shutdown().await;
        let _ = self.shutdown.send(());
        self.served.await.unwrap();
        self.shard.stop().await.unwrap();
    }
}

/// Follows `/events` to the end: every `status` event's data, and the `end` event's data.
async fn follow(url: &str, id: &str, mut on_status: impl FnMut(&Value)) -> (usize, Value) {
    let response = reqwest::get(format!("{url}/v1/jobs/{id}/events"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut statuses = 0;
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // a keep-alive comment
            }
            let value: Value = serde_json::from_str(&data).unwrap();
            match event {
                "status" => {
                    statuses += 1;
                    on_status(&value);
                }
                "end" => return (statuses, value),
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    panic!("the event stream closed without an `end` event");
}

async fn submit(url: &str, job: String) -> String {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/jobs"))
        .body(job)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_digits_job_submitted_over_http_succeeds_and_its_events_end() {
    tokio::time::timeout(TEST_LIMIT, async {
        let server = start_server().await;
        let id = submit(&server.url, digits_job(0.95, 60)).await;
        let (statuses, end) = follow(&server.url, &id, |_| {}).await;
        assert!(statuses >= 1);
        assert_eq!(end["state"], "succeeded", "{end}");
        let accuracy = end["metrics"]["test_accuracy"].as_f64().unwrap();
        assert!(accuracy >= 0.95, "test accuracy {accuracy}");

        let job: Value = reqwest::get(format!("{}/v1/jobs/{id}", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["state"], "succeeded");
        assert!(job["status"]["steps"].as_u64().unwrap() > 0);
        assert!(job["status"]["bytes_pushed"].as_u64().unwrap() > 0);
        let model = server._dir.path().join("jobs").join(&id).join("model");
        assert!(model.join("metrics.json").is_file());
        let list: Value = reqwest::get(format!("{}/v1/jobs", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["jobs"][0]["id"], id.as_str());
        server.stop().await;
    })
    .await
    .expect("the job ends within the test's limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_cancelled_over_http_ends_cancelled_and_stays_listed() {
    tokio::time::timeout(TEST_LIMIT, async {
        let server = start_server().await;
        let id = submit(&server.url, digits_job(1.0, 10_000)).await;
        let client = reqwest::Client::new();
        let url = server.url.clone();
        let target = id.clone();
        let mut cancelled = false;
        let (_, end) = follow(&server.url, &id, |st| {
            // Cancel once the job has made progress, so the cancel reaches a running job.
            if !cancelled && st["steps"].as_u64().unwrap_or(0) > 0 {
                cancelled = true;
                let client = client.clone();
                let url = format!("{url}/v1/jobs/{target}");
                tokio::spawn(async move {
                    let response = client.delete(url).send().await.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                });
            }
        })
        .await;
        assert_eq!(end["state"], "cancelled", "{end}");
        let job: Value = reqwest::get(format!("{}/v1/jobs/{id}", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(job["state"], "cancelled");
        // Cancelling a finished job changes nothing.
        let again = client
            .delete(format!("{}/v1/jobs/{id}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), StatusCode::OK);
        let again: Value = again.json().await.unwrap();
        assert_eq!(again["state"], "cancelled");
        server.stop().await;
    })
    .await
    .expect("the cancelled job ends within the test's limit");
}

#[tokio::test]
async fn jobs_from_the_api_read_and_write_only_where_the_operator_allows() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("data");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(allowed.join("ok.csv"), "f0,label\n1,0\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path(), allowed.join("link")).unwrap();
    let mut config = ManagerConfig::new(dir.path().join("jobs"), vec!["127.0.0.1:9".into()]);
    config.confinement = Some(Confinement {
        read_roots: vec![allowed.clone()],
        write_roots: vec![dir.path().join("jobs")],
    });
    let manager = JobManager::new(
        config,
        Arc::new(InProcessFleet {
            time_limit: Duration::from_secs(60),
        }),
    );
    let app = http::router(manager, BearerTokens::default());
    let job = |source: &str, output: &str| {
        digits_job(0.95, 1)
            .replace(
                "source = \"builtin:digits\"",
                &format!("source = \"{source}\""),
            )
            .replace(
                "name = \"digits\"",
                &format!("name = \"digits\"\noutput = \"{output}\""),
            )
    };
    let inside_out = dir.path().join("jobs/out").display().to_string();
    let mut cases = vec![
        ("/etc/passwd".to_string(), inside_out.clone(), "data.source"),
        (
            format!("{}/../../etc/passwd", allowed.display()),
            inside_out.clone(),
            "data.source",
        ),
        (
            allowed.join("ok.csv").display().to_string(),
            outside.path().join("model").display().to_string(),
            "output",
        ),
    ];
    #[cfg(unix)]
    cases.push((
        allowed.join("link/x.csv").display().to_string(),
        inside_out.clone(),
        "data.source",
    ));
    for (source, output, key) in cases {
        let (status, body) = call(app.clone(), post(job(&source, &output))).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{source} -> {output}: {body}"
        );
        assert!(error_of(&body).contains(key), "{body}");
    }
    // Inside the allowed folders the job is accepted.
    let (status, body) = call(
        app,
        post(job(
            &allowed.join("ok.csv").display().to_string(),
            &inside_out,
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

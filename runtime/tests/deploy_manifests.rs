//! The manifests in `deploy/` parse and carry what the roles need: the one image, the subcommand
//! and its flags, the ports Knative and the StatefulSet expose, the env the instance reads, and the
//! `/invoke` readiness contract. The Dockerfile builds with `--release --locked` in two stages.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

const IMAGE: &str = "ghcr.io/cumulus-ml/cumulus:";

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document under `dir`, with its file name.
fn documents(dir: &Path) -> Vec<(String, Value)> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("manifest dir exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable manifest");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.push((path.display().to_string(), value));
        }
    }
    docs
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, key| match key.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[key],
        })
}

fn str_at<'a>(v: &'a Value, path: &str, file: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{file}: {path} must be a string"))
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_sequence()
        .expect("args list")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
}

#[test]
fn knative_function_services_run_cumulus_fn() {
    let docs = documents(&deploy().join("knative"));
    let mut kinds = Vec::new();
    for (file, doc) in &docs {
        assert_eq!(
            str_at(doc, "apiVersion", file),
            "serving.knative.dev/v1",
            "{file}"
        );
        assert_eq!(str_at(doc, "kind", file), "Service", "{file}");
        assert_eq!(str_at(doc, "metadata.namespace", file), "cumulus", "{file}");
        let spec = get(doc, "spec.template.spec");
        let container = &spec["containers"][0];
        assert!(
            str_at(container, "image", file).starts_with(IMAGE),
            "{file}: image"
        );
        let port = container["ports"][0]["containerPort"].as_u64();
        assert_eq!(
            port,
            Some(8080),
            "{file}: Knative routes to containerPort 8080"
        );
        let a = args(container);
        match a.first().copied() {
            Some("fn") => {
                let kind = a.get(1).copied().expect("fn needs a kind");
                kinds.push(kind.to_owned());
                let name = str_at(doc, "metadata.name", file);
                assert_eq!(name, format!("cumulus-{kind}"), "{file}: service name");
                assert_eq!(
                    spec["containerConcurrency"].as_u64(),
                    Some(1),
                    "{file}: one invocation per instance"
                );
                assert_eq!(
                    str_at(container, "readinessProbe.httpGet.path", file),
                    "/healthz"
                );
                let function = env(container, "CUMULUS_FUNCTION").and_then(|e| e["value"].as_str());
                assert_eq!(function, Some(kind), "{file}: CUMULUS_FUNCTION");
                let memory_mb: u64 = env(container, "CUMULUS_MEMORY_MB")
                    .and_then(|e| e["value"].as_str())
                    .and_then(|v| v.parse().ok())
                    .expect("CUMULUS_MEMORY_MB");
                let limit = str_at(container, "resources.limits.memory", file);
                assert_eq!(
                    limit,
                    format!("{memory_mb}Mi"),
                    "{file}: limit equals the memory tier"
                );
                assert!(
                    spec["timeoutSeconds"]
                        .as_u64()
                        .is_some_and(|t| (1..=900).contains(&t)),
                    "{file}"
                );
            }
            Some("serve") => {
                let http = a
                    .iter()
                    .position(|x| *x == "--http")
                    .and_then(|i| a.get(i + 1));
                assert_eq!(
                    http.copied(),
                    Some("0.0.0.0:8080"),
                    "{file}: gateway listens where Knative routes"
                );
                assert!(a.contains(&"--models"), "{file}: serve needs --models");
            }
            other => panic!("{file}: unexpected subcommand {other:?}"),
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["infer-stage", "train-worker"]);
}

#[test]
fn param_store_is_a_stateful_set_with_a_headless_service() {
    let docs = documents(&deploy().join("k8s"));
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|(_, d)| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("{kind} {name} missing"))
    };
    let (file, set) = find("StatefulSet", "cumulus-param-store");
    assert_eq!(str_at(set, "apiVersion", file), "apps/v1");
    assert_eq!(str_at(set, "spec.serviceName", file), "cumulus-param-store");
    let replicas = get(set, "spec.replicas").as_u64().expect("replicas");
    let container = get(set, "spec.template.spec.containers.0");
    assert!(str_at(container, "image", file).starts_with(IMAGE));
    let a = args(container);
    assert_eq!(a.first().copied(), Some("param-store"));
    let flag = |f: &str| {
        a.iter()
            .position(|x| *x == f)
            .and_then(|i| a.get(i + 1))
            .copied()
    };
    assert_eq!(
        flag("--shard"),
        Some(format!("$(POD_INDEX)/{replicas}").as_str()),
        "shard count = replicas"
    );
    assert!(
        env(container, "POD_INDEX").is_some(),
        "POD_INDEX comes from the downward API"
    );
    let data_dir = flag("--data-dir").expect("--data-dir");
    let mount = get(container, "volumeMounts.0.mountPath").as_str();
    assert_eq!(
        mount,
        Some(data_dir),
        "the data dir is the persistent volume"
    );
    let listen_port: u64 = flag("--listen")
        .and_then(|l| l.rsplit(':').next()?.parse().ok())
        .expect("--listen port");
    assert_eq!(
        get(container, "ports.0.containerPort").as_u64(),
        Some(listen_port)
    );
    assert_eq!(
        str_at(set, "spec.volumeClaimTemplates.0.metadata.name", file),
        "data"
    );
    let (file, svc) = find("Service", "cumulus-param-store");
    assert_eq!(
        str_at(svc, "spec.clusterIP", file),
        "None",
        "headless, one DNS name per shard"
    );
    assert_eq!(get(svc, "spec.ports.0.port").as_u64(), Some(listen_port));
}

#[test]
fn config_map_holds_a_valid_platform_config() {
    let docs = documents(&deploy().join("k8s"));
    let (file, map) = docs
        .iter()
        .find(|(_, d)| d["kind"].as_str() == Some("ConfigMap"))
        .expect("ConfigMap with cumulus.toml");
    // `cumulus.toml` is one key with a dot in it: look it up directly.
    let text = map["data"]["cumulus.toml"]
        .as_str()
        .expect("cumulus.toml key");
    let config =
        cumulus_runtime::CumulusConfig::from_toml_str(text, file).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.functions.spec("train-worker").url.is_some());
}

#[test]
fn dockerfile_builds_locked_release_in_two_stages() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).expect("Dockerfile");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "multi-stage: build and run");
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("COPY --from=build"));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/cumulus\"]"));
    assert!(
        text.lines().any(|l| l.starts_with("USER ")),
        "runs as a non-root user"
    );
}

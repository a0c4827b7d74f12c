//! Tests of the job file: defaults, refusals naming their key, fine-tuning, JSON, schedules.

use super::*;

/// The smallest valid job file; other modules' tests start from it too.
pub(crate) const MINIMAL: &str = r#"
    name = "t"
    [model]
    arch = "logreg"
    n_features = 64
    n_outputs = 10
    [data]
    source = "builtin:digits"
    [training]
    loss = "cross_entropy"
    batch_size = 16
    optimizer = { kind = "sgd", lr = 0.1 }
    [workers]
    count = 2
    [stop]
    max_epochs = 3
"#;

fn with(extra_edit: impl Fn(&str) -> String) -> Result<JobSpec, JobError> {
    JobSpec::from_toml_str("job.toml", &extra_edit(MINIMAL))
}

fn message(r: Result<JobSpec, JobError>) -> String {
    r.expect_err("the job file must be refused").to_string()
}

#[test]
fn defaults_fill_what_is_left_out() {
    let job = with(str::to_string).unwrap();
    assert_eq!(job.workers.sync, SyncMode::Bsp);
    assert_eq!(job.workers.memory_mb, 1769);
    assert_eq!(job.workers.significance, 0.0);
    assert_eq!(job.workers.wire_precision, WirePrecision::F32);
    assert_eq!(job.data.test_fraction, 0.2);
    assert_eq!(job.training.lr_schedule, LrSchedule::Constant);
    assert!(!job.autotune.enabled);
    assert_eq!(job.output_dir(), Path::new("runs/t"));
}

#[test]
fn unknown_keys_are_refused_with_file_and_key() {
    let m = message(with(|s| s.replace("count = 2", "count = 2\nworkerz = 3")));
    assert!(m.starts_with("job.toml: "), "{m}");
    assert!(m.contains("workerz"), "{m}");
    let m = message(with(|s| {
        s.replace("n_outputs = 10", "n_outputs = 10\ndepth = 3")
    }));
    assert!(m.contains("depth"), "{m}");
}

#[test]
fn bad_values_name_their_key() {
    let lr = "optimizer = { kind = \"sgd\", lr = 0.1 }";
    let cases: [(&str, &str, &str); 16] = [
        (
            lr,
            "optimizer = { kind = \"sgd\", lr = nan }",
            "training.optimizer",
        ),
        (
            lr,
            "optimizer = { kind = \"sgd\", lr = inf }",
            "training.optimizer",
        ),
        (
            lr,
            "optimizer = { kind = \"sgd\", lr = 0.0 }",
            "training.optimizer",
        ),
        (
            lr,
            "optimizer = { kind = \"sgd\", lr = -1.0 }",
            "training.optimizer",
        ),
        (
            lr,
            "optimizer = { kind = \"sgd\", lr = 0.1, momentum = 1.5 }",
            "momentum",
        ),
        (
            "count = 2",
            "count = 2\ntimeout_secs = 0",
            "workers.timeout_secs",
        ),
        (
            "loss = \"cross_entropy\"",
            "loss = \"binary_logistic\"",
            "training.loss",
        ),
        ("count = 2", "count = 0", "workers.count"),
        (
            "count = 2",
            "count = 2\nwire_precision = \"f8\"",
            "unknown variant `f8`, expected `f32` or `f16`",
        ),
        ("batch_size = 16", "batch_size = 0", "training.batch_size"),
        ("count = 2", "count = 2\nsync = \"ssp:x\"", "ssp"),
        (
            "count = 2",
            "count = 2\nsignificance = -1.0",
            "workers.significance",
        ),
        (
            "count = 2",
            "count = 2\nmemory_mb = 64",
            "workers.memory_mb",
        ),
        ("max_epochs = 3", "target_accuracy = 0.9", "stop"),
        (
            "max_epochs = 3",
            "max_epochs = 3\ntarget_rmse = 0.9",
            "stop.target_rmse",
        ),
        ("name = \"t\"", "name = \"../x\"", "name"),
    ];
    for (from, to, key) in cases {
        let m = message(with(|s| s.replace(from, to)));
        assert!(m.contains(key), "{to}: {m}");
        assert!(m.starts_with("job.toml"), "{m}");
    }
    let m = message(with(|s| s.replace("n_outputs = 10", "n_outputs = 0")));
    assert!(m.contains("model"), "{m}");
}

#[test]
fn a_model_folder_can_be_fine_tuned_but_not_mixed_with_arch_keys() {
    let job = with(|s| {
        s.replace("arch = \"logreg\"", "from = \"models/digits\"")
            .replace("n_features = 64\n", "")
            .replace("n_outputs = 10\n", "")
    })
    .unwrap();
    assert_eq!(job.model, ModelSource::Folder("models/digits".into()));
    let m = message(with(|s| {
        s.replace("arch = \"logreg\"", "from = \"x\"\narch = \"logreg\"")
    }));
    assert!(m.contains("cannot be combined"), "{m}");
}

#[test]
fn json_and_toml_describe_the_same_job() {
    let job = with(str::to_string).unwrap();
    let json = serde_json::to_string(&job).unwrap();
    assert_eq!(JobSpec::from_json_str("job.json", &json).unwrap(), job);
}

#[test]
fn schedules_scale_the_learning_rate() {
    assert_eq!(LrSchedule::Constant.factor(7, 10), 1.0);
    let step = LrSchedule::Step {
        every_epochs: 2,
        gamma: 0.5,
    };
    assert_eq!(step.factor(0, 10), 1.0);
    assert_eq!(step.factor(3, 10), 0.5);
    assert_eq!(step.factor(4, 10), 0.25);
    let cos = LrSchedule::Cosine { min_factor: 0.1 };
    assert!((cos.factor(0, 10) - 1.0).abs() < 1e-12);
    assert!((cos.factor(5, 10) - 0.55).abs() < 1e-12);
    assert!((cos.factor(10, 10) - 0.1).abs() < 1e-12);
}

//! The `cumulus models` commands as a user runs them: the real binary, real folders.

use std::process::{Command, Output};

fn cumulus(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cumulus"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the cumulus binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn list_names_every_architecture() {
    let out = cumulus(&["models", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for arch in cumulus_models::architectures() {
        assert!(
            stdout(&out).contains(arch),
            "{arch} missing from:\n{}",
            stdout(&out)
        );
    }
}

/// ResNet-18 for 10 classes at 32x32 (the CIFAR variant): 11,173,962 trainable parameters.
/// stem conv 3*3*3*64 + BN 2*64 = 1,856; per stage c_in -> c (BasicBlock = two 3x3 convs + two BNs,
/// plus a 1x1 conv + BN shortcut when the shape changes):
///   64:  2 * (2*(9*64*64) + 4*64)                                  = 147,968
///   128: (9*64*128 + 9*128*128 + 4*128 + 64*128 + 2*128) + (2*9*128*128 + 4*128) = 525,568
///   256: (9*128*256 + 9*256*256 + 4*256 + 128*256 + 2*256) + (2*9*256*256 + 4*256) = 2,099,712
///   512: (9*256*512 + 9*512*512 + 4*512 + 256*512 + 2*512) + (2*9*512*512 + 4*512) = 8,393,728
/// head 512*10 + 10 = 5,130. Sum: 11,173,962 — within 0.3% of the well-known 11.2 M (ImageNet
/// ResNet-18 has 11,689,512 with its 7x7 stem and 1000 classes).
#[test]
fn init_then_inspect_resnet18_reports_its_layers_and_parameter_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("resnet18");
    let folder = folder.to_str().expect("utf-8 temp path");
    let out = cumulus(&["models", "init", "resnet", "--out", folder]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = cumulus(&["models", "inspect", folder]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(
        text.lines().last(),
        Some("total params: 11173962"),
        "{text}"
    );
    let expected: u64 = 1_856 + 147_968 + 525_568 + 2_099_712 + 8_393_728 + 5_130;
    assert_eq!(expected, 11_173_962);
    assert!((expected as f64 - 11.2e6).abs() / 11.2e6 < 0.01);
    assert!(text.contains("[1, 512, 4, 4]"), "{text}");
    assert!(text.contains("[1, 10]"), "{text}");
}

#[test]
fn init_refuses_an_unknown_architecture_and_a_mismatched_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("m");
    let out_dir = out_dir.to_str().expect("utf-8 temp path");
    let out = cumulus(&["models", "init", "gpt9", "--out", out_dir]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown architecture \"gpt9\""),
        "{}",
        stderr(&out)
    );

    let config = dir.path().join("mlp.json");
    std::fs::write(
        &config,
        r#"{"arch": "mlp", "input_dim": 64, "hidden": [0], "n_outputs": 10}"#,
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 temp path");
    let out = cumulus(&[
        "models", "init", "mlp", "--config", config, "--out", out_dir,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("mlp.json"), "{}", stderr(&out));
    let out = cumulus(&[
        "models", "init", "lenet", "--config", config, "--out", out_dir,
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("arch is \"mlp\""), "{}", stderr(&out));
}

#[test]
fn inspect_refuses_a_folder_without_a_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = cumulus(&[
        "models",
        "inspect",
        dir.path().to_str().expect("utf-8 temp path"),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("config.json"), "{}", stderr(&out));
}

#[test]
fn init_keeps_an_existing_model_and_inspect_bounds_its_batch() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_dir = dir.path().join("m");
    let out_dir = out_dir.to_str().expect("utf-8 temp path");
    let out = cumulus(&["models", "init", "mlp", "--out", out_dir]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = std::fs::read(dir.path().join("m/model.safetensors")).expect("weights");

    // A second init does not overwrite it, unless asked to.
    let out = cumulus(&["models", "init", "mlp", "--out", out_dir, "--seed", "7"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let after = std::fs::read(dir.path().join("m/model.safetensors")).expect("weights");
    assert_eq!(before, after, "the refused init left the model as it was");
    let out = cumulus(&[
        "models", "init", "mlp", "--out", out_dir, "--seed", "7", "--force",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A batch past the bound is refused; the bound itself is inspected.
    let out = cumulus(&["models", "inspect", out_dir, "--batch", "0"]);
    assert!(!out.status.success());
    let out = cumulus(&["models", "inspect", out_dir, "--batch", "99999999999"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--batch"), "{}", stderr(&out));
    let out = cumulus(&["models", "inspect", out_dir, "--batch", "1048576"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A model over --max-params is refused before any weight exists, and a bad config names its
    // field once.
    let big = dir.path().join("big.json");
    std::fs::write(
        &big,
        r#"{"arch": "mlp", "input_dim": 100000, "hidden": [100000], "n_outputs": 10}"#,
    )
    .expect("write config");
    let big_out = dir.path().join("big");
    let out = cumulus(&[
        "models",
        "init",
        "mlp",
        "--config",
        big.to_str().expect("utf-8 temp path"),
        "--out",
        big_out.to_str().expect("utf-8 temp path"),
        "--max-params",
        "1000000",
    ]);
    assert!(!out.status.success());
    assert!(!big_out.join("model.safetensors").exists());
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"arch": "mlp", "input_dim": 64, "hidden": [0], "n_outputs": 10}"#,
    )
    .expect("write config");
    let out = cumulus(&[
        "models",
        "init",
        "mlp",
        "--config",
        bad.to_str().expect("utf-8 temp path"),
        "--out",
        big_out.to_str().expect("utf-8 temp path"),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).matches("invalid model config").count(),
        1,
        "{}",
        stderr(&out)
    );
}

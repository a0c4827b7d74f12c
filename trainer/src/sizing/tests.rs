use cumulus_runtime::billing::Pricing;

use super::fit::{Row, non_negative_least_squares, power_law, power_law_epochs};
use super::trial::trial_tiers;
use super::*;

fn job(stop: &str) -> JobSpec {
    JobSpec::from_toml_str(
        "plan-test.toml",
        &format!(
            r#"
            name = "plan-test"
            [model]
            arch = "mlp"
            input_dim = 64
            hidden = [32]
            n_outputs = 10
            [data]
            source = "builtin:digits"
            [training]
            loss = "cross_entropy"
            batch_size = 32
            optimizer = {{ kind = "sgd", lr = 0.1 }}
            steps_per_invocation = 10
            [workers]
            count = 2
            [stop]
            {stop}
            "#
        ),
    )
    .expect("the test job is valid")
}

/// Deterministic noise in [-1, 1].
fn noise(i: usize) -> f64 {
    ((i as f64 * 12.9898).sin() * 43_758.545_3).fract()
}

#[test]
fn least_squares_recovers_known_coefficients() {
    let truth = [0.004, 0.0015, 2e-9];
    let rows: Vec<Row> = (0..60)
        .map(|i| {
            let x = vec![
                1.0 / (0.2 + 0.05 * (i % 7) as f64),
                1.0,
                1e5 * (1 + i % 5) as f64,
            ];
            let y: f64 = x.iter().zip(truth).map(|(x, b)| x * b).sum();
            Row {
                x,
                y: y * (1.0 + 0.002 * noise(i)),
                weight: 1.0 + (i % 3) as f64,
            }
        })
        .collect();
    let beta = non_negative_least_squares(&rows, 3).expect("solvable");
    for (got, want) in beta.iter().zip(truth) {
        assert!(
            (got - want).abs() / want < 0.05,
            "got {beta:?}, want {truth:?}"
        );
    }
}

#[test]
fn least_squares_keeps_coefficients_non_negative() {
    // y falls with x: the best non-negative fit is the mean with a zero slope.
    let rows: Vec<Row> = (0..10)
        .map(|i| Row {
            x: vec![1.0, i as f64],
            y: 10.0 - i as f64,
            weight: 1.0,
        })
        .collect();
    let beta = non_negative_least_squares(&rows, 2).expect("solvable");
    assert_eq!(beta[1], 0.0);
    assert!((beta[0] - 5.5).abs() < 1e-9, "{beta:?}");
    assert!(non_negative_least_squares(&[], 2).is_none());
}

#[test]
fn power_law_recovers_a_learning_curve() {
    let points: Vec<(f64, f64)> = (1..8)
        .map(|e| (f64::from(e) * 0.5, 0.4 * (f64::from(e) * 0.5).powf(-0.7)))
        .collect();
    let (a, b) = power_law(&points).expect("a falling curve");
    assert!((a - 0.4).abs() < 1e-9 && (b - 0.7).abs() < 1e-9, "{a} {b}");
    let e = power_law_epochs(a, b, 0.05).expect("reachable");
    assert!((0.4 * e.powf(-0.7) - 0.05).abs() < 1e-9);
    // A curve that does not fall cannot be extrapolated.
    assert!(power_law(&[(1.0, 0.3), (2.0, 0.3), (3.0, 0.31)]).is_none());
}

#[test]
fn cpu_share_follows_the_tier_and_the_shared_host() {
    let cpu = CpuModel {
        mb_per_vcpu: Some(1769.0),
        host_cores: Some(2.0),
    };
    assert!((cpu.vcpus(1, 512) - 512.0 / 1769.0).abs() < 1e-12);
    assert_eq!(cpu.vcpus(1, 3538), 2.0);
    assert_eq!(cpu.vcpus(1, 10240), 2.0);
    assert_eq!(cpu.vcpus(8, 1769), 0.25);
    let remote = CpuModel {
        mb_per_vcpu: Some(1769.0),
        host_cores: None,
    };
    assert_eq!(remote.vcpus(8, 3538), 2.0);
    assert_eq!(
        trial_tiers(&[3008, 512, 1024, 1769, 2048], cpu, 2),
        vec![512, 1769]
    );
    let unlimited = CpuModel {
        mb_per_vcpu: None,
        host_cores: Some(2.0),
    };
    assert_eq!(trial_tiers(&[2048, 512], unlimited, 2), vec![512]);
}

/// Known coefficients, and a profile generated from them.
struct Truth {
    alpha: f64,
    beta: f64,
    gamma: f64,
    bytes: u64,
    o1: f64,
    o0: f64,
    gap: f64,
    s1: f64,
    s0: f64,
    fixed: f64,
    e1: f64,
    k: f64,
}

const TRUTH: Truth = Truth {
    alpha: 0.003,
    beta: 0.002,
    gamma: 4e-9,
    bytes: 40_000,
    o1: 0.05,
    o0: 0.02,
    gap: 0.004,
    s1: 0.2,
    s0: 0.1,
    fixed: 0.3,
    e1: 1.5,
    k: 0.5,
};

fn synthetic_profile(cpu: CpuModel, t: &Truth) -> Trials {
    let train_examples = 1437;
    let per_inv = 10;
    let mut runs = Vec::new();
    let mut i = 0;
    for n in [1u32, 2] {
        for m in [512u32, 1769] {
            let c = cpu.vcpus(n, m);
            let step = t.alpha / c + t.beta + t.gamma * f64::from(n) * t.bytes as f64;
            let target_epoch = t.e1 * f64::from(n).powf(t.k);
            let epochs_per_round = f64::from(n * per_inv * 32) / train_examples as f64;
            let rounds = (target_epoch / epochs_per_round).ceil() as u32;
            let mut invocations = Vec::new();
            for w in 0..n {
                for r in 0..rounds {
                    i += 1;
                    let cold = r == 0;
                    let steps_secs = f64::from(per_inv) * step * (1.0 + 0.001 * noise(i));
                    let billed = t.o1 / c + t.o0 + steps_secs;
                    let start = if cold { t.s1 / c + t.s0 } else { 0.0 };
                    invocations.push(InvocationSample {
                        workers: n,
                        worker: w,
                        memory_mb: m,
                        cold,
                        start_secs: start,
                        billed_secs: billed,
                        wall_secs: billed + start + t.gap,
                        steps: per_inv,
                        step_secs: steps_secs,
                        step_bytes: t.bytes * u64::from(per_inv),
                    });
                }
            }
            let busiest: f64 = invocations
                .iter()
                .filter(|s| s.worker == 0)
                .map(|s| s.wall_secs)
                .sum();
            // Accuracy climbs to 1 - 0.05 at exactly the target epoch.
            let curve = (1..=rounds)
                .map(|r| {
                    let e = f64::from(r) * epochs_per_round;
                    (e, 1.0 - 0.05 * (e / target_epoch).powf(-1.0))
                })
                .collect();
            runs.push(TrialRun {
                workers: n,
                memory_mb: m,
                wall_secs: t.fixed + busiest,
                steps: u64::from(rounds * per_inv * n),
                epochs: f64::from(rounds) * epochs_per_round,
                cost_usd: 0.0,
                curve,
                invocations,
            });
        }
    }
    Trials {
        runs,
        train_examples,
    }
}

const LOCAL: CpuModel = CpuModel {
    mb_per_vcpu: Some(1769.0),
    host_cores: Some(2.0),
};

#[test]
fn fit_recovers_the_coefficients_of_a_synthetic_profile() {
    let job = job("target_accuracy = 0.95\nmax_epochs = 40");
    let model = fit(&synthetic_profile(LOCAL, &TRUTH), &job, LOCAL).expect("fits");
    let close = |got: f64, want: f64, tol: f64, what: &str| {
        assert!(
            (got - want).abs() <= tol * want.abs(),
            "{what}: got {got}, want {want}"
        );
    };
    close(model.step_cpu_secs, TRUTH.alpha, 0.05, "alpha");
    close(model.step_fixed_secs, TRUTH.beta, 0.15, "beta");
    close(model.step_secs_per_byte, TRUTH.gamma, 0.25, "gamma");
    close(model.step_bytes, TRUTH.bytes as f64, 1e-9, "bytes");
    close(model.invocation_cpu_secs, TRUTH.o1, 0.05, "o1");
    close(model.invocation_fixed_secs, TRUTH.o0, 0.1, "o0");
    close(model.invocation_gap_secs, TRUTH.gap, 1e-6, "gap");
    close(model.cold_start_cpu_secs, TRUTH.s1, 1e-6, "s1");
    close(model.cold_start_fixed_secs, TRUTH.s0, 1e-6, "s0");
    close(model.job_fixed_secs, TRUTH.fixed, 1e-3, "F");
    assert!(model.step_fit_error < 0.02, "{}", model.step_fit_error);
    // The synthetic runs stop right at the round that reached the target.
    assert_eq!(model.rounds_after_stop, 0.0);
    assert_eq!(model.host_cores_reserved, 0.0);
    assert_eq!(model.cpu, LOCAL);
    assert_eq!(model.epochs.source, EpochsSource::Measured);
    // The measured epochs are the rounds' ends at or past the target: within one round.
    let e1 = model.epochs.at_one_worker.expect("estimated");
    close(e1, TRUTH.e1, 0.25, "E1");
    assert!((0.0..=1.0).contains(&model.epochs.exponent));
}

#[test]
fn epochs_fall_back_to_the_curve_then_to_max_epochs() {
    let job = job("target_accuracy = 0.99\nmax_epochs = 40");
    let mut profile = synthetic_profile(LOCAL, &TRUTH);
    // No run reached 0.99: the curves are extrapolated.
    let model = fit(&profile, &job, LOCAL).expect("fits");
    assert_eq!(model.epochs.source, EpochsSource::Extrapolated);
    let e = model.epochs.epochs(1).expect("estimated");
    assert!(e > TRUTH.e1 && e <= 40.0, "{e}");

    for run in &mut profile.runs {
        run.curve.clear();
    }
    let model = fit(&profile, &job, LOCAL).expect("fits");
    assert_eq!(model.epochs.source, EpochsSource::MaxEpochs);
    assert_eq!(model.epochs.epochs(4), Some(40.0));

    let model = fit(&profile, &self::job("max_wall_secs = 60"), LOCAL).expect("fits");
    assert_eq!(model.epochs.source, EpochsSource::Limits);
    assert_eq!(model.epochs.epochs(1), None);
}

#[test]
fn fit_refuses_a_profile_without_steps() {
    let job = job("max_epochs = 1");
    let mut profile = synthetic_profile(LOCAL, &TRUTH);
    for run in &mut profile.runs {
        for s in &mut run.invocations {
            s.steps = 0;
        }
    }
    assert!(matches!(
        fit(&profile, &job, LOCAL),
        Err(SizingError::Trials(_))
    ));
}

#[test]
fn predictions_follow_the_model_and_the_pricing() {
    let job = job("target_accuracy = 0.95\nmax_epochs = 40\nmax_wall_secs = 300");
    let model = fit(&synthetic_profile(LOCAL, &TRUTH), &job, LOCAL).expect("fits");
    let pricing = Pricing::default();
    let preds = predict(
        &model,
        &job,
        &pricing,
        &[1, 2, 4, 8],
        &[512, 1769, 3008],
        1437,
    )
    .expect("predicts");
    assert_eq!(preds.len(), 12);
    let get = |n, m| {
        preds
            .iter()
            .find(|p| p.workers == n && p.memory_mb == m)
            .expect("predicted")
    };
    // More CPU, shorter steps; past the host's cores, no faster but dearer.
    assert!(get(1, 1769).step_secs < get(1, 512).step_secs);
    assert!((get(2, 1769).step_secs - get(2, 3008).step_secs).abs() < 1e-12);
    assert!(get(2, 3008).cost_usd > get(2, 1769).cost_usd);
    for p in &preds {
        assert!((p.steps_per_worker - p.invocations_per_worker * 10.0).abs() < 1e-9);
        let gb_s = f64::from(p.memory_mb) / 1024.0
            * p.invocations_per_worker
            * (model.invocation_cpu_secs / p.vcpus
                + model.invocation_fixed_secs
                + 10.0 * p.step_secs);
        let cost = f64::from(p.workers)
            * (p.invocations_per_worker * pricing.invocation_usd + gb_s * pricing.gb_second_usd);
        assert!((p.cost_usd - cost).abs() <= 1e-12 + 1e-9 * cost, "{p:?}");
        assert!(p.meets_deadline == (p.wall_secs <= 300.0));
        assert!(p.within_budget);
    }
    assert!(predict(&model, &job, &pricing, &[], &[512], 1437).is_err());
    assert!(predict(&model, &job, &pricing, &[0], &[512], 1437).is_err());
    assert!(predict(&model, &job, &pricing, &[1], &[64], 1437).is_err());
    assert!(predict(&model, &job, &pricing, &[1], &[512], 0).is_err());
}

fn prediction(workers: u32, wall: f64, cost: f64, deadline: f64) -> Prediction {
    Prediction {
        workers,
        memory_mb: 1024,
        vcpus: 1.0,
        step_secs: 0.01,
        epochs: 1.0,
        steps_per_worker: 10.0,
        invocations_per_worker: 1.0,
        wall_secs: wall,
        cost_usd: cost,
        meets_deadline: wall <= deadline,
        within_budget: true,
    }
}

#[test]
fn choice_is_the_cheapest_meeting_the_deadline() {
    let preds = vec![
        prediction(1, 120.0, 0.001, 100.0), // cheapest, too slow
        prediction(2, 80.0, 0.003, 100.0),
        prediction(4, 50.0, 0.002, 100.0), // cheapest in time
        prediction(8, 30.0, 0.004, 100.0),
    ];
    assert_eq!(choose(&preds), Some((2, Choice::CheapestWithinLimits)));
    let mut over_budget = preds.clone();
    over_budget[2].within_budget = false;
    assert_eq!(
        choose(&over_budget),
        Some((1, Choice::CheapestWithinLimits))
    );
}

#[test]
fn choice_without_a_feasible_configuration_is_the_fastest_and_flagged() {
    let preds = vec![
        prediction(1, 120.0, 0.001, 10.0),
        prediction(2, 80.0, 0.003, 10.0),
        prediction(8, 30.0, 0.004, 10.0),
        prediction(4, 50.0, 0.002, 10.0),
    ];
    assert_eq!(choose(&preds), Some((2, Choice::NoneWithinLimitsFastest)));
    assert_eq!(choose(&[]), None);
}

#[test]
fn a_job_bounded_only_by_its_wall_time_runs_to_it() {
    let job = job("max_wall_secs = 20");
    let model = fit(&synthetic_profile(LOCAL, &TRUTH), &job, LOCAL).expect("fits");
    let preds =
        predict(&model, &job, &Pricing::default(), &[1, 4], &[1024], 1437).expect("predicts");
    for p in &preds {
        assert!(p.meets_deadline);
        // The coordinator stops at the first round past the limit, the round in flight then
        // finishes.
        assert!(p.wall_secs >= 20.0, "{p:?}");
        let round = model.invocation_cpu_secs / p.vcpus
            + model.invocation_fixed_secs
            + model.invocation_gap_secs
            + 10.0 * p.step_secs;
        assert!(p.wall_secs < 20.0 + 2.0 * round + 1e-9, "{p:?}");
    }
}

#[test]
fn a_flattening_curve_is_extrapolated_from_its_tail_never_below_what_ran() {
    let job = JobSpec::from_toml_str(
        "plan-rmse.toml",
        r#"
        name = "plan-rmse"
        [model]
        arch = "mlp"
        input_dim = 8
        hidden = [8]
        n_outputs = 1
        [data]
        source = "builtin:digits"
        [training]
        loss = "mse"
        batch_size = 32
        optimizer = { kind = "sgd", lr = 0.1 }
        steps_per_invocation = 10
        [workers]
        count = 1
        [stop]
        target_rmse = 0.95
        max_epochs = 10
        "#,
    )
    .expect("the test job is valid");
    // Test RMSE of PMF on MovieLens-100K in a profile run: steep, then flat above the target.
    let long = [
        (0.14, 3.238),
        (0.28, 2.785),
        (0.43, 2.342),
        (0.57, 1.901),
        (0.71, 1.484),
        (0.85, 1.191),
        (1.0, 1.065),
        (1.14, 1.024),
        (1.28, 1.005),
        (1.42, 0.993),
        (1.56, 0.985),
        (1.71, 0.978),
        (1.85, 0.974),
        (1.99, 0.972),
        (2.13, 0.969),
        (2.28, 0.967),
    ];
    let mut profile = synthetic_profile(LOCAL, &TRUTH);
    profile.runs.retain(|r| r.workers == 1);
    profile.runs[0].curve = long[..9].to_vec();
    profile.runs[1].curve = long.to_vec();
    let model = fit(&profile, &job, LOCAL).expect("fits");
    assert_eq!(model.epochs.source, EpochsSource::Extrapolated);
    let e = model.epochs.epochs(1).expect("estimated");
    // Past what the longer run reached, and short of the whole curve's power law, which the
    // steep start bends down to about 1.4 epochs.
    assert!(e > 2.28 && e <= 10.0, "{e}");
    let (a, b) = power_law(&long).expect("falls");
    let whole = power_law_epochs(a, b, 0.95).expect("reachable");
    assert!(whole < 2.28, "{whole}");
}

#[test]
fn the_cores_others_take_on_a_shared_host_are_fitted() {
    let job = job("target_accuracy = 0.95\nmax_epochs = 40");
    // The workers had 1.5 of the 2 cores: two of them at 1769 MB got 0.75 vCPU each.
    let busy = CpuModel {
        mb_per_vcpu: Some(1769.0),
        host_cores: Some(1.5),
    };
    let model = fit(&synthetic_profile(busy, &TRUTH), &job, LOCAL).expect("fits");
    assert!(
        (model.host_cores_reserved - 0.5).abs() < 0.051,
        "{}",
        model.host_cores_reserved
    );
    assert!((model.step_cpu_secs - TRUTH.alpha).abs() < 0.1 * TRUTH.alpha);
    let pred = predict(&model, &job, &Pricing::default(), &[4], &[1769], 1437).expect("predicts");
    assert!((pred[0].vcpus - 1.5 / 4.0).abs() < 0.02, "{pred:?}");
}

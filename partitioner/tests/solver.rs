//! The solver against the definition: every plan it returns is feasible and its numbers are the
//! evaluator's; on small instances its optimum is exhaustive enumeration's, on larger ones that
//! of a plain Pareto dynamic program without bounds; infeasible instances are infeasible for
//! all, with the binding constraint explained.

use std::collections::BTreeMap;

use cumulus_partitioner::random::{self, Family, RandomSpec};
use cumulus_partitioner::{
    GroupChoice, Infeasibility, Instance, Layer, PartitionError, Plan, Problem,
    TIE_RELATIVE_TOLERANCE, evaluate, solve,
};
use proptest::prelude::*;

/// The winner among feasible (cost, latency) pairs: least cost, then among costs within the tie
/// tolerance the least latency, then the least cost.
fn pick(pairs: &[(f64, f64)]) -> Option<(f64, f64)> {
    let least = pairs.iter().map(|p| p.0).min_by(f64::total_cmp)?;
    let tie = least + least.abs() * TIE_RELATIVE_TOLERANCE;
    pairs
        .iter()
        .filter(|p| p.0 <= tie)
        .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)))
        .copied()
}

/// A group's billed time, compute cost and latency straight from the definition, or `None` when
/// it breaks payload, memory or a missing time.
fn group(inst: &Instance, first: usize, last: usize, mb: u32) -> Option<(f64, f64)> {
    let input = if first == 0 {
        inst.input_bytes
    } else {
        inst.layers[first - 1].output_bytes
    };
    if input > inst.max_payload_bytes {
        return None;
    }
    let layers = &inst.layers[first..=last];
    let needed = (u64::from(inst.base_memory_mb) << 20)
        + layers.iter().map(|l| l.weight_bytes).sum::<u64>()
        + layers.iter().map(|l| l.activation_bytes).max().unwrap();
    if needed > u64::from(mb) << 20 {
        return None;
    }
    let mut ms = 0.0;
    for l in layers {
        ms += l.time_ms.get(&mb)?;
    }
    let billed = ms + input as f64 / inst.bandwidth_bytes_per_ms;
    let cost = f64::from(mb) / 1024.0 * inst.price_per_gb_s * (billed / 1000.0);
    Some((cost, inst.invoke_overhead_ms + billed))
}

/// Every composition of the layers into at most `max_functions` groups × every tier of every
/// group, pruned only by exact feasibility (a prefix over the SLO stays over it).
fn brute_force(inst: &Instance) -> Option<(f64, f64)> {
    fn go(
        inst: &Instance,
        start: usize,
        groups: usize,
        cost: f64,
        lat: f64,
        out: &mut Vec<(f64, f64)>,
    ) {
        let n = inst.layers.len();
        if start == n {
            out.push((cost + groups as f64 * inst.price_per_invocation, lat));
            return;
        }
        if groups == inst.max_functions {
            return;
        }
        for last in start..n {
            for &mb in &inst.tiers_mb {
                if let Some((c, l)) = group(inst, start, last, mb)
                    && lat + l <= inst.slo_ms
                {
                    go(inst, last + 1, groups + 1, cost + c, lat + l, out);
                }
            }
        }
    }
    let mut all = Vec::new();
    go(inst, 0, 0, 0.0, 0.0, &mut all);
    pick(&all)
}

/// A forward dynamic program over (cut, groups) keeping every Pareto-optimal (cost, latency)
/// pair: exact, with no bounds and no Lagrangian, for instances too large to enumerate.
fn pareto_dp(inst: &Instance) -> Option<(f64, f64)> {
    let n = inst.layers.len();
    let k = inst.max_functions.min(n);
    let mut fronts = vec![vec![Vec::<(f64, f64)>::new(); k + 1]; n + 1];
    fronts[0][0].push((0.0, 0.0));
    for start in 0..n {
        for h in 0..k {
            let mut front = std::mem::take(&mut fronts[start][h]);
            prune(&mut front);
            for &(cost, lat) in &front {
                for last in start..n {
                    for &mb in &inst.tiers_mb {
                        if let Some((c, l)) = group(inst, start, last, mb)
                            && lat + l <= inst.slo_ms
                        {
                            fronts[last + 1][h + 1].push((cost + c, lat + l));
                        }
                    }
                }
            }
        }
    }
    let finals: Vec<(f64, f64)> = (1..=k)
        .flat_map(|h| {
            fronts[n][h]
                .iter()
                .map(move |&(c, l)| (c + h as f64 * inst.price_per_invocation, l))
        })
        .collect();
    pick(&finals)
}

fn prune(front: &mut Vec<(f64, f64)>) {
    front.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.total_cmp(&b.0)));
    let mut kept: Vec<(f64, f64)> = Vec::with_capacity(front.len());
    for &p in front.iter() {
        if kept.last().is_none_or(|q| p.0 < q.0) {
            kept.push(p);
        }
    }
    *front = kept;
}

/// The solver's plan checked against the evaluator: feasible, and every number equal.
fn check_plan(inst: &Instance, plan: &Plan) {
    let evaluation = evaluate(inst, &plan.choices()).expect("the solver's plan is a partition");
    assert!(
        evaluation.is_feasible(),
        "violations: {:?}",
        evaluation.violations
    );
    assert_eq!(
        &evaluation.plan, plan,
        "the solver's numbers are the evaluator's, bit for bit"
    );
}

/// Solves, checks the plan, and returns its (cost, latency), or `None` when infeasible.
fn solved(inst: &Instance) -> Option<(f64, f64)> {
    match solve(inst) {
        Ok(plan) => {
            check_plan(inst, &plan);
            Some((plan.cost_per_request, plan.latency_ms))
        }
        Err(PartitionError::Infeasible(_)) => None,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// Small instances built from a few round values, so ties and zero prices happen often.
fn small_instance() -> impl Strategy<Value = Instance> {
    let tiers = prop::sample::subsequence(vec![128u32, 256, 512, 1024], 1..=4);
    (tiers, 1usize..=8, 1usize..=8, any::<u64>()).prop_map(|(tiers_mb, n, k, seed)| {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let pick = |rng: &mut rand::rngs::StdRng, values: &[f64]| {
            values[rng.random_range(0..values.len())]
        };
        let layers = (0..n)
            .map(|l| Layer {
                name: format!("l{l}"),
                weight_bytes: rng.random_range(0..=3u64) * (40 << 20),
                activation_bytes: rng.random_range(0..=2u64) * (30 << 20),
                output_bytes: rng.random_range(0..=3u64) * (1 << 20),
                time_ms: tiers_mb
                    .iter()
                    .filter_map(|&mb| {
                        let units = pick(&mut rng, &[0.0, 1.0, 2.0, 4.0, 8.0]);
                        rng.random_bool(0.9)
                            .then(|| (mb, units * 512.0 / f64::from(mb)))
                    })
                    .collect::<BTreeMap<_, _>>(),
            })
            .collect();
        Instance {
            layers,
            input_bytes: rng.random_range(0..=2u64) << 20,
            tiers_mb,
            price_per_gb_s: pick(&mut rng, &[0.0, 0.0000166667, 1.0]),
            price_per_invocation: pick(&mut rng, &[0.0, 0.0000002]),
            slo_ms: pick(&mut rng, &[5.0, 20.0, 40.0, 80.0, 1000.0]),
            invoke_overhead_ms: pick(&mut rng, &[0.0, 1.0, 5.0]),
            bandwidth_bytes_per_ms: pick(&mut rng, &[1048576.0, 100000.0]),
            max_payload_bytes: 2 << 20,
            max_functions: k,
            base_memory_mb: pick(&mut rng, &[0.0, 100.0]) as u32,
        }
    })
}

fn realistic(
    layers: std::ops::RangeInclusive<usize>,
    tiers: std::ops::RangeInclusive<usize>,
) -> impl Strategy<Value = Instance> {
    (layers, tiers, 1usize..=12, any::<u64>(), 0.5f64..1.5).prop_map(
        |(layers, tiers, max_functions, seed, slo_scale)| {
            let mut inst = random::instance(
                &RandomSpec {
                    layers,
                    tiers,
                    max_functions,
                    family: None,
                },
                seed,
            );
            inst.slo_ms *= slo_scale;
            inst
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn small_rounded_instances_match_enumeration(inst in small_instance()) {
        prop_assert_eq!(solved(&inst), brute_force(&inst));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn realistic_instances_match_enumeration(inst in realistic(1..=12, 1..=4)) {
        prop_assert_eq!(solved(&inst), brute_force(&inst));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 60, ..ProptestConfig::default() })]

    #[test]
    fn larger_instances_match_the_plain_pareto_program(inst in realistic(13..=40, 2..=8)) {
        prop_assert_eq!(solved(&inst), pareto_dp(&inst));
    }
}

#[test]
fn every_family_of_the_generator_is_solved_at_bench_sizes() {
    for (seed, family) in [Family::Cnn, Family::Transformer, Family::Mlp]
        .into_iter()
        .enumerate()
    {
        for layers in [10, 100] {
            let spec = RandomSpec {
                layers,
                tiers: 10,
                max_functions: 16,
                family: Some(family),
            };
            let inst = random::instance(&spec, seed as u64);
            if let Some(found) = solved(&inst) {
                assert!(found.1 <= inst.slo_ms);
            }
        }
    }
}

fn one_layer(name: &str, weight_mb: u64, times: &[(u32, f64)]) -> Layer {
    Layer {
        name: name.into(),
        weight_bytes: weight_mb << 20,
        activation_bytes: 0,
        output_bytes: 1 << 20,
        time_ms: times.iter().copied().collect(),
    }
}

fn base_instance(layers: Vec<Layer>) -> Instance {
    Instance {
        layers,
        input_bytes: 1 << 20,
        tiers_mb: vec![512, 1024, 2048],
        price_per_gb_s: 0.0000166667,
        price_per_invocation: 0.0000002,
        slo_ms: 200.0,
        invoke_overhead_ms: 5.0,
        bandwidth_bytes_per_ms: 1048576.0,
        max_payload_bytes: 6 << 20,
        max_functions: 8,
        base_memory_mb: 100,
    }
}

fn infeasibility(inst: &Instance) -> Infeasibility {
    match solve(inst) {
        Err(PartitionError::Infeasible(why)) => why,
        other => panic!("expected infeasible, got {other:?}"),
    }
}

const ALL: [(u32, f64); 3] = [(512, 10.0), (1024, 5.0), (2048, 2.5)];

#[test]
fn equal_costs_prefer_the_faster_plan() {
    // Time halves as memory doubles: every tier costs the same (up to rounding); the largest
    // tier is the fastest and must win.
    let mut inst = base_instance(vec![one_layer("a", 10, &ALL), one_layer("b", 10, &ALL)]);
    inst.input_bytes = 0;
    inst.price_per_invocation = 0.0;
    inst.max_functions = 1;
    let plan = solve(&inst).unwrap();
    assert_eq!(plan.groups.len(), 1);
    assert_eq!(plan.groups[0].memory_mb, 2048);
    assert_eq!(plan.latency_ms, 10.0);
    check_plan(&inst, &plan);
}

#[test]
fn a_tight_slo_is_reported_with_the_smallest_latency() {
    let mut inst = base_instance(vec![one_layer("a", 10, &ALL), one_layer("b", 10, &ALL)]);
    inst.slo_ms = 10.0;
    // Fastest: one group at 2048 MB: 5 ms overhead + 5 ms of layers + 1 ms of input.
    assert_eq!(
        infeasibility(&inst),
        Infeasibility::SloTooTight {
            min_latency_ms: 11.0,
            slo_ms: 10.0,
            groups_of_fastest: 1
        }
    );
    inst.slo_ms = 11.0;
    assert_eq!(
        solve(&inst).unwrap().latency_ms,
        11.0,
        "an SLO met exactly is met"
    );
}

#[test]
fn a_layer_too_large_for_every_tier_is_named() {
    let inst = base_instance(vec![
        one_layer("a", 10, &ALL),
        one_layer("huge", 4000, &ALL),
    ]);
    let why = infeasibility(&inst);
    assert!(
        matches!(&why, Infeasibility::LayerTooLarge { layer: 1, name, largest_tier_mb: 2048, .. } if name == "huge"),
        "{why:?}"
    );
    assert!(
        why.to_string()
            .contains("layer 1 `huge` alone needs 4100.0 MiB"),
        "{why}"
    );
}

#[test]
fn a_layer_without_times_where_it_fits_is_named() {
    let inst = base_instance(vec![
        one_layer("a", 10, &ALL),
        one_layer("b", 1500, &[(512, 1.0)]),
    ]);
    let why = infeasibility(&inst);
    assert_eq!(
        why,
        Infeasibility::LayerHasNoTier {
            layer: 1,
            name: "b".into(),
            memory_bytes_needed: 1600 << 20,
            fitting_tiers_mb: vec![2048],
        }
    );
}

#[test]
fn cuts_over_the_payload_that_force_too_large_a_group_are_explained() {
    let mut layers: Vec<Layer> = (0..4)
        .map(|l| one_layer(&format!("l{l}"), 1000, &ALL))
        .collect();
    layers[1].output_bytes = 64 << 20; // No cut after l1: l1 and l2 must share, 2000 MiB + base.
    let why = infeasibility(&base_instance(layers));
    assert_eq!(
        why,
        Infeasibility::Uncoverable {
            stuck_at: 2,
            name: "l2".into(),
            reachable_cuts: 3,
            cuts_over_payload: 1,
            last_cut_over_payload_after: Some(1),
        }
    );
    assert!(
        why.to_string()
            .starts_with("no group can cover layer 2 `l2`"),
        "{why}"
    );
}

#[test]
fn an_input_over_the_payload_is_explained() {
    let mut inst = base_instance(vec![one_layer("a", 10, &ALL)]);
    inst.input_bytes = 7 << 20;
    assert!(matches!(
        infeasibility(&inst),
        Infeasibility::InputOverPayload { .. }
    ));
}

#[test]
fn too_few_functions_are_explained() {
    let layers: Vec<Layer> = (0..5)
        .map(|l| one_layer(&format!("l{l}"), 1200, &ALL))
        .collect();
    let mut inst = base_instance(layers);
    inst.max_functions = 4;
    assert_eq!(
        infeasibility(&inst),
        Infeasibility::TooFewFunctions {
            min_groups: 5,
            max_functions: 4
        }
    );
    inst.max_functions = 5;
    assert_eq!(solve(&inst).unwrap().groups.len(), 5);
}

#[test]
fn the_plan_json_has_the_contract_fields() {
    let inst = base_instance(vec![one_layer("a", 10, &ALL), one_layer("b", 10, &ALL)]);
    let plan = solve(&inst).unwrap();
    let json: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
    assert!(json["cost_per_request"].is_f64() && json["latency_ms"].is_f64());
    let group = &json["groups"][0];
    for field in [
        "first",
        "last",
        "first_name",
        "last_name",
        "memory_mb",
        "memory_bytes_needed",
        "billed_ms",
        "input_bytes",
    ] {
        assert!(!group[field].is_null(), "groups[0].{field}");
    }
    let back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn the_evaluator_lists_what_a_plan_breaks() {
    let mut inst = base_instance(vec![
        one_layer("a", 600, &ALL),
        one_layer("b", 10, &[(1024, 1.0)]),
    ]);
    inst.max_functions = 1;
    inst.slo_ms = 1.0;
    let evaluation = evaluate(
        &inst,
        &[GroupChoice {
            first: 0,
            last: 1,
            memory_mb: 512,
        }],
    )
    .unwrap();
    let names: Vec<String> = evaluation
        .violations
        .iter()
        .map(|v| {
            serde_json::to_value(v).unwrap()["constraint"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["memory", "missing_time", "slo"]);
    let not_a_partition = evaluate(
        &inst,
        &[GroupChoice {
            first: 0,
            last: 0,
            memory_mb: 512,
        }],
    );
    assert!(matches!(
        not_a_partition,
        Err(PartitionError::InvalidPlan(_))
    ));
    let unknown_tier = evaluate(
        &inst,
        &[GroupChoice {
            first: 0,
            last: 1,
            memory_mb: 333,
        }],
    );
    assert!(matches!(unknown_tier, Err(PartitionError::InvalidPlan(_))));
}

#[test]
fn stats_say_the_bound_brackets_the_optimum() {
    let spec = RandomSpec {
        layers: 60,
        tiers: 6,
        max_functions: 8,
        family: None,
    };
    let mut seen = 0;
    for seed in 0..20 {
        let problem = Problem::new(&random::instance(&spec, seed)).unwrap();
        if let Ok((plan, stats)) = problem.solve_with_stats() {
            seen += 1;
            let slack = 1e-9 * plan.cost_per_request;
            assert!(
                stats.lower_bound <= plan.cost_per_request + slack,
                "{stats:?} vs {}",
                plan.cost_per_request
            );
            if let Some(incumbent) = stats.initial_incumbent {
                assert!(incumbent >= plan.cost_per_request - slack);
            }
        }
    }
    assert!(
        seen > 5,
        "most generated instances are feasible ({seen}/20)"
    );
}

#[test]
fn an_instance_too_large_for_the_search_is_refused_not_attempted() {
    let spec = RandomSpec {
        layers: 5000,
        tiers: 3,
        max_functions: 1000,
        family: Some(Family::Mlp),
    };
    match solve(&random::instance(&spec, 0)) {
        Err(PartitionError::TooLarge { what, value, limit }) => {
            assert!(what.contains("layers"), "{what}");
            assert!(value > limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

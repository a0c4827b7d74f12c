//! The export read back by a small parser of the LP subset it writes: the sections and
//! declarations are well formed, and the model agrees with the evaluator on every plan — the
//! plan's variable values ([`Problem::lp_values`]) satisfy every constraint exactly when the plan
//! is feasible, and then the objective is its cost × 1e6.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::OBJECTIVE_SCALE;
use crate::evaluate::evaluate;
use crate::instance::{Instance, Problem};
use crate::plan::GroupChoice;
use crate::random::{self, RandomSpec};

/// `coefficient · variable` terms.
type Terms = Vec<(f64, String)>;

#[derive(Debug, Default)]
struct Model {
    objective: Terms,
    /// (name, terms, sense, right-hand side).
    constraints: Vec<(String, Terms, String, f64)>,
    bounds: BTreeMap<String, (f64, f64)>,
    binaries: BTreeSet<String>,
    sections: Vec<String>,
}

fn parse_terms(tokens: &[&str]) -> Terms {
    let mut terms = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let sign = match tokens[i] {
            "+" => 1.0,
            "-" => -1.0,
            other => panic!("expected a sign, got {other:?} in {tokens:?}"),
        };
        i += 1;
        let (coefficient, var) = match tokens[i].parse::<f64>() {
            Ok(c) => {
                i += 1;
                (c, tokens[i])
            }
            Err(_) => (1.0, tokens[i]),
        };
        assert!(
            var.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E'),
            "bad variable name {var:?}"
        );
        terms.push((sign * coefficient, var.to_string()));
        i += 1;
    }
    terms
}

fn parse(text: &str) -> Model {
    let mut model = Model::default();
    let mut entries: Vec<String> = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        assert!(line.len() <= 256, "a line of {} characters", line.len());
        if line.starts_with('\\') {
            continue;
        }
        if !line.starts_with(' ') {
            section = line.to_string();
            model.sections.push(section.clone());
            continue;
        }
        match section.as_str() {
            "Minimize" | "Subject To" => {
                if line.starts_with("   ") {
                    entries
                        .last_mut()
                        .expect("a continuation follows an entry")
                        .push_str(line);
                } else {
                    entries.push(line.to_string());
                }
            }
            "Bounds" => {
                let tokens: Vec<&str> = line.split_whitespace().collect();
                let (var, bounds) = match tokens.as_slice() {
                    [lo, "<=", var, "<=", hi] => (var, (lo.parse().unwrap(), hi.parse().unwrap())),
                    [var, ">=", lo] => (var, (lo.parse().unwrap(), f64::INFINITY)),
                    _ => panic!("bad bound {line:?}"),
                };
                assert!(
                    model.bounds.insert(var.to_string(), bounds).is_none(),
                    "{var} bounded twice"
                );
            }
            "Binaries" => {
                for name in line.split_whitespace() {
                    assert!(
                        model.binaries.insert(name.to_string()),
                        "{name} listed twice"
                    );
                }
            }
            other => panic!("a line in section {other:?}: {line:?}"),
        }
    }
    for entry in entries {
        let (name, rest) = entry.trim().split_once(':').expect("an entry has a name");
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        if name == "obj" {
            model.objective = parse_terms(&tokens);
            continue;
        }
        let sense_at = tokens
            .iter()
            .position(|t| ["<=", ">=", "="].contains(t))
            .expect("a constraint has a sense");
        let rhs = tokens[sense_at + 1].parse().unwrap();
        assert_eq!(
            sense_at + 2,
            tokens.len(),
            "{name}: tokens after the right-hand side"
        );
        model.constraints.push((
            name.to_string(),
            parse_terms(&tokens[..sense_at]),
            tokens[sense_at].to_string(),
            rhs,
        ));
    }
    model
}

fn export(problem: &Problem) -> String {
    let mut out = Vec::new();
    problem.export_lp(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// The constraints `values` breaks (a relative tolerance of 1e-9), and the objective.
fn check(model: &Model, values: &BTreeMap<String, f64>) -> (Vec<String>, f64) {
    let value = |var: &str| values.get(var).copied().unwrap_or(0.0);
    let mut broken = Vec::new();
    for (name, terms, sense, rhs) in &model.constraints {
        let lhs: f64 = terms.iter().map(|(c, v)| c * value(v)).sum();
        let scale = terms
            .iter()
            .map(|(c, v)| (c * value(v)).abs())
            .fold(rhs.abs(), f64::max)
            .max(1.0);
        let tolerance = 1e-9 * scale;
        let ok = match sense.as_str() {
            "<=" => lhs <= rhs + tolerance,
            ">=" => lhs >= rhs - tolerance,
            _ => (lhs - rhs).abs() <= tolerance,
        };
        if !ok {
            broken.push(format!("{name}: {lhs} {sense} {rhs}"));
        }
    }
    for (var, &v) in values {
        if let Some(&(lo, hi)) = model.bounds.get(var) {
            assert!(lo <= v && v <= hi, "{var} = {v} outside [{lo}, {hi}]");
        } else {
            assert!(model.binaries.contains(var), "{var} is declared nowhere");
            assert!(v == 0.0 || v == 1.0, "binary {var} = {v}");
        }
    }
    let objective = model.objective.iter().map(|(c, v)| c * value(v)).sum();
    (broken, objective)
}

#[test]
fn the_file_is_well_formed() {
    let spec = RandomSpec {
        layers: 12,
        tiers: 4,
        max_functions: 5,
        family: None,
    };
    let instance = random::instance(&spec, 3);
    let problem = Problem::new(&instance).unwrap();
    let text = export(&problem);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("\\ Cumulus"));
    assert_eq!(
        lines.next().unwrap(),
        "\\ objective in $ per 1e6 requests (cost per request x 1e6)"
    );
    let model = parse(&text);
    assert_eq!(
        model.sections,
        ["Minimize", "Subject To", "Bounds", "Binaries", "End"]
    );

    // Binaries: x for k <= l + 1 within the slots, a z per slot and tier, a u per slot.
    let (n, k, t) = (12, 5, 4);
    let xs: usize = (0..n).map(|l| (l + 1).min(k)).sum();
    assert_eq!(model.binaries.len(), xs + k * t + k);
    assert!(model.binaries.contains("x_0_1") && !model.binaries.contains("x_0_2"));
    assert!(model.binaries.contains("z_5_1024") || !instance.tiers_mb.contains(&1024));
    // Every variable used is declared, once, as binary or bounded.
    let used: BTreeSet<&String> = model
        .objective
        .iter()
        .chain(model.constraints.iter().flat_map(|c| c.1.iter()))
        .map(|(_, v)| v)
        .collect();
    for var in used {
        assert!(
            model.binaries.contains(var) ^ model.bounds.contains_key(var),
            "{var}"
        );
    }
    let names: BTreeSet<&String> = model.constraints.iter().map(|c| &c.0).collect();
    assert_eq!(
        names.len(),
        model.constraints.len(),
        "constraint names are unique"
    );
    for name in [
        "assign_0",
        "slo",
        "functions",
        "memory_1",
        "tier_5",
        "nonempty_3",
        "in_order_2",
    ] {
        assert!(names.contains(&name.to_string()), "{name}");
    }
}

#[test]
fn the_optimum_is_a_solution_of_the_model_with_the_scaled_cost() {
    let mut checked = 0;
    for seed in 0..40 {
        let spec = RandomSpec {
            layers: 15,
            tiers: 5,
            max_functions: 6,
            family: None,
        };
        let problem = Problem::new(&random::instance(&spec, seed)).unwrap();
        let Ok(plan) = problem.solve() else { continue };
        let model = parse(&export(&problem));
        let values: BTreeMap<String, f64> = problem.lp_values(&plan).into_iter().collect();
        let (broken, objective) = check(&model, &values);
        assert!(broken.is_empty(), "seed {seed}: {broken:?}");
        let expected = plan.cost_per_request * OBJECTIVE_SCALE;
        assert!(
            (objective - expected).abs() <= 1e-9 * expected,
            "seed {seed}: {objective} vs {expected}"
        );
        let mut sol = Vec::new();
        problem.write_sol(&plan, &mut sol).unwrap();
        assert!(
            String::from_utf8(sol)
                .unwrap()
                .starts_with("objective value: ")
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} feasible instances");
}

/// Any partition into groups with any tiers.
fn any_plan(instance: &Instance, cuts: &[bool], tiers: &[usize]) -> Vec<GroupChoice> {
    let n = instance.layers.len();
    let mut groups = Vec::new();
    let mut first = 0;
    for (l, &cut) in cuts.iter().enumerate().take(n) {
        if l + 1 == n || cut {
            let tier = instance.tiers_mb[tiers[groups.len()] % instance.tiers_mb.len()];
            groups.push(GroupChoice {
                first,
                last: l,
                memory_mb: tier,
            });
            first = l + 1;
        }
    }
    groups
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_model_agrees_with_the_evaluator_on_every_plan(
        seed in any::<u64>(),
        layers in 1usize..=10,
        tiers in 1usize..=4,
        max_functions in 1usize..=6,
        cuts in prop::collection::vec(any::<bool>(), 10),
        choices in prop::collection::vec(0usize..4, 10),
        slo_scale in 0.3f64..3.0,
    ) {
        let spec = RandomSpec { layers, tiers, max_functions, family: None };
        let mut instance = random::instance(&spec, seed);
        instance.slo_ms *= slo_scale;
        let problem = Problem::new(&instance).unwrap();
        let evaluation = evaluate(&instance, &any_plan(&instance, &cuts, &choices)).unwrap();
        let model = parse(&export(&problem));
        let values: BTreeMap<String, f64> = problem.lp_values(&evaluation.plan).into_iter().collect();
        let (broken, objective) = check(&model, &values);
        let near_slo = (evaluation.plan.latency_ms - instance.slo_ms).abs() <= 1e-6 * instance.slo_ms;
        if !near_slo {
            prop_assert_eq!(
                broken.is_empty(),
                evaluation.is_feasible(),
                "broken {:?}, violations {:?}", broken, evaluation.violations
            );
        }
        if evaluation.is_feasible() {
            let expected = evaluation.plan.cost_per_request * OBJECTIVE_SCALE;
            prop_assert!((objective - expected).abs() <= 1e-9 * expected, "{} vs {}", objective, expected);
        }
    }
}

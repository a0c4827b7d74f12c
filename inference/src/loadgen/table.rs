//! Plain-text tables of runs and sweeps (fixed-width columns, no terminal escapes), the form
//! `cumulus bench serve` prints.

use std::fmt::Write as _;

use super::RunResult;
use super::sweep::{SweepResult, sustainable};

const HEADER: [&str; 14] = [
    "rate",
    "sent/s",
    "ok/s",
    "good/s",
    "err%",
    "429",
    "drop",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "CPU-ms/req",
    "$/M req",
];

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.digits$}"))
}

fn row(r: &RunResult) -> [String; 14] {
    [
        format!("{:.1}", r.target_rate),
        format!("{:.1}", r.achieved_send_rate),
        format!("{:.1}", r.throughput_rps),
        format!("{:.1}", r.goodput_rps),
        format!("{:.2}", r.error_rate * 100.0),
        r.overloaded.to_string(),
        r.dropped.to_string(),
        format!("{:.2}", r.latency.p50_ms),
        format!("{:.2}", r.latency.p90_ms),
        format!("{:.2}", r.latency.p99_ms),
        format!("{:.2}", r.latency.p999_ms),
        format!("{:.2}", r.latency.max_ms),
        opt(r.server_cpu_ms_per_request, 3),
        opt(r.cost_per_million_usd, 3),
    ]
}

fn render(rows: &[[String; 14]], marks: &[&str]) -> String {
    let mut widths = HEADER.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str], mark: &str| {
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            let _ = write!(out, "{sep}{cell:>w$}");
        }
        let _ = writeln!(out, "{mark}");
    };
    line(&mut out, &HEADER, "");
    for (r, mark) in rows.iter().zip(marks) {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells, mark);
    }
    out
}

/// One row per run: target and achieved rates, OK and within-SLO throughput, errors, latency
/// percentiles from the scheduled send time, server CPU-ms per OK request and cost.
pub fn table(runs: &[RunResult]) -> String {
    let rows: Vec<_> = runs.iter().map(row).collect();
    render(&rows, &vec![""; rows.len()])
}

/// The sweep's runs by rate, each marked held / failed, and the maximum sustainable rate.
pub fn sweep_table(s: &SweepResult) -> String {
    let runs = s.by_rate();
    let rows: Vec<_> = runs.iter().map(|r| row(r)).collect();
    let marks: Vec<&str> = runs
        .iter()
        .map(|r| {
            if sustainable(r, s.max_error_rate) {
                "  held"
            } else {
                "  FAILED"
            }
        })
        .collect();
    let mut out = render(&rows, &marks);
    let criterion = format!(
        "p99 <= {} ms, errors < {}%",
        s.slo_ms,
        s.max_error_rate * 100.0
    );
    let _ = match (s.max_sustainable_rate, s.first_unsustainable_rate) {
        (Some(good), Some(bad)) => writeln!(
            out,
            "max sustainable rate: {good:.1} req/s ({criterion}; {bad:.1} req/s failed)"
        ),
        (Some(good), None) => writeln!(
            out,
            "max sustainable rate: at least {good:.1} req/s ({criterion}; every rate tried held)"
        ),
        (None, _) => writeln!(
            out,
            "max sustainable rate: none ({criterion} failed at every rate tried)"
        ),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::super::sweep::SweepResult;
    use super::*;

    #[test]
    fn tables_have_a_row_per_run_and_the_verdict() {
        let runs = vec![
            crate::loadgen::sweep::tests::fake_run(200.0, 30.0, 0.0),
            crate::loadgen::sweep::tests::fake_run(100.0, 5.0, 0.0),
        ];
        let t = table(&runs);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.lines().next().unwrap().contains("p99 ms"));
        let s = SweepResult {
            slo_ms: 25.0,
            max_error_rate: 0.01,
            runs,
            max_sustainable_rate: Some(100.0),
            first_unsustainable_rate: Some(200.0),
        };
        let t = sweep_table(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].trim_start().starts_with("100.0") && lines[1].ends_with("held"));
        assert!(lines[2].ends_with("FAILED"), "{t}");
        assert!(
            lines[3].contains("max sustainable rate: 100.0 req/s"),
            "{t}"
        );
        // Columns line up: every row is as wide as the header (before the mark).
        let width = lines[0].len();
        assert!(lines[1..3].iter().all(|l| l.len() > width));
    }
}

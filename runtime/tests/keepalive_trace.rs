//! The hybrid histogram policy against a fixed 10-minute keep-alive on the generated Azure-like
//! trace (fixed seed): as in Shahrad et al. (ATC'20), the hybrid policy must cut both the cold-start
//! rate and the idle instance time.

use cumulus_runtime::bench::{keepalive_table, run_keepalive};
use cumulus_runtime::keepalive::TraceParams;

#[test]
fn hybrid_beats_fixed_ttl_on_cold_starts_and_idle_time() {
    let report = run_keepalive(TraceParams::default());
    println!("{}", keepalive_table(&report));
    let (fixed, hybrid) = (&report.fixed, &report.hybrid);
    assert_eq!(fixed.invocations, hybrid.invocations);
    assert!(
        hybrid.cold_start_rate < fixed.cold_start_rate,
        "cold-start rate: {hybrid:?} vs {fixed:?}"
    );
    assert!(
        hybrid.mean_function_cold_start_rate < fixed.mean_function_cold_start_rate,
        "per-function cold-start rate: {hybrid:?} vs {fixed:?}"
    );
    assert!(
        hybrid.idle_instance_seconds < fixed.idle_instance_seconds,
        "idle time: {hybrid:?} vs {fixed:?}"
    );
}

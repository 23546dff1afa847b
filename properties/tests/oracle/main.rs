//! The one-call API end to end on the cluster `Cluster::from_env()` gives: many generated
//! cases for a correct consumer, and clear errors for bad replay files.

use kafka_harness::schedule::Schedule;
use kafka_harness::{Error, Guarantee, Harness, Outcome};
use kafka_harness_fixtures::{at_least_once, Fixture};

#[test]
fn a_correct_at_least_once_consumer_passes_32_generated_cases_with_crashes() {
    let fixture = Fixture::named("at_least_once").unwrap();
    let started = std::time::Instant::now();
    let summary = match fixture
        .harness()
        .name("a_correct_at_least_once_consumer_passes_32_generated_cases_with_crashes")
        .cases(32)
        .check(at_least_once)
    {
        Ok(Outcome::Passed(s)) => s,
        Ok(Outcome::Failed(r)) => panic!("{r}"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(summary.cases, 32);
    assert!(
        summary.crashes >= 16,
        "most cases crash the worker at least once: {summary}"
    );
    assert!(
        summary.crash_points_hit.len() >= 3,
        "crashes spread over several points: {summary}"
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "MEASURE {:?} correct at-least-once: 32 cases, {} crashes in {secs:.1} s = {:.1} cases/min",
        summary.backend,
        summary.crashes,
        32.0 * 60.0 / secs
    );
}

#[test]
fn a_malformed_replay_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    std::fs::write(&path, "{\"version\": 1, \"workload\": ").unwrap();
    let err = Harness::new(Guarantee::AtLeastOnce)
        .replay(&path, at_least_once)
        .unwrap_err();
    assert!(matches!(err, Error::Schedule { .. }), "{err:?}");
    assert!(
        err.to_string().contains("broken.json") && err.to_string().contains("not a schedule"),
        "{err}"
    );
    let missing = Harness::new(Guarantee::AtLeastOnce)
        .replay(dir.path().join("nope.json"), at_least_once)
        .unwrap_err();
    assert!(missing.to_string().contains("nope.json"), "{missing}");
}

#[test]
fn an_unknown_crash_point_in_a_schedule_file_is_named() {
    let json = r#"{"version":1,"workload":{"messages":2,"partitions":1,"keys":1},"faults":[{"fault":"crash","point":"after-polll","hit":1}]}"#;
    let err = Schedule::from_json(
        json,
        Some(&["after-poll".to_string(), "after-commit".to_string()]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown crash point `after-polll`"),
        "{err}"
    );
    assert!(
        err.to_string().contains("after-poll, after-commit"),
        "{err}"
    );
}

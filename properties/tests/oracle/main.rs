//! The one-call API end to end on the cluster `Cluster::from_env()` gives: many generated
//! cases for a correct consumer, and clear errors for bad replay files.

use std::sync::Arc;

use kafka_harness::schedule::Schedule;
use kafka_harness::{Cluster, ClusterConfig, Error, Guarantee, Harness, Outcome};
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

/// A saved schedule is a regression test: one whose crash point no longer exists (renamed in
/// the code) must fail its replay, naming the fault and the points that do exist — it used to
/// run and pass.
#[test]
fn replaying_a_schedule_whose_fault_never_fires_fails_naming_it_and_the_points_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renamed.json");
    let json = r#"{"version":1,"workload":{"messages":3,"partitions":1,"keys":3},"faults":[{"fault":"crash","point":"no-such-point","hit":1}]}"#;
    std::fs::write(&path, json).unwrap();
    let err = Harness::new(Guarantee::AtLeastOnce)
        .name("vacuous_replay")
        .replay(&path, at_least_once)
        .unwrap_err();
    assert!(matches!(err, Error::ReplayVacuous { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("renamed.json"), "{text}");
    assert!(text.contains("crash at `no-such-point` hit #1"), "{text}");
    assert!(text.contains("`after-poll` (3)"), "{text}");
    assert!(text.contains("`after-commit` (3)"), "{text}");
}

/// The documented `.cluster(…)` path on a cluster started just now: "ready" must include a
/// group coordinator that answers (it used to fail at once with `NotCoordinator` while
/// reading committed offsets).
#[test]
fn a_check_runs_on_a_cluster_started_just_before_it() {
    let config = ClusterConfig::from_env().unwrap();
    let cluster = Arc::new(Cluster::start(config).unwrap());
    let outcome = Harness::new(Guarantee::AtLeastOnce)
        .name("fresh_cluster")
        .cluster(cluster)
        .cases(4)
        .check(at_least_once);
    match outcome {
        Ok(Outcome::Passed(s)) => assert_eq!(s.cases, 4, "{s}"),
        Ok(Outcome::Failed(r)) => panic!("{r}"),
        Err(e) => panic!("{e}"),
    }
}

/// An at-least-once consumer with two bugs, each of which skips (commits past, unprocessed)
/// the first record its incarnation polls: a flaky one — the first worker process after the
/// discovery run (the first case's first incarnation, cases run one at a time) does it, once
/// per check, so its schedule never reproduces — and a real one — an incarnation started after
/// two crashes does it, every time.
fn flaky_once_then_two_crash_bug(
    ctx: &mut kafka_harness::worker::WorkerCtx,
) -> Result<(), kafka_harness::worker::WorkerError> {
    use kafka_harness::worker::{transient, CommitMode};
    use std::fs::OpenOptions;
    let markers = std::path::PathBuf::from(
        std::env::var_os("FLAKY_MARKERS").expect("the test sets FLAKY_MARKERS"),
    );
    let claim = |name: &str| {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(markers.join(name))
            .is_ok()
    };
    // This process's place in start order (0: the discovery run).
    let order = (0..).find(|i| claim(&format!("worker-{i}"))).unwrap();
    let inc = ctx.incarnation();
    let mut flaky = order == 1;
    let mut config = rdkafka::ClientConfig::new();
    config.set("enable.auto.commit", "false");
    let consumer = ctx.consumer(&config)?;
    let mut sink = ctx.sink()?;
    let mut skip = inc >= 3;
    while ctx.running() {
        let Some(record) = consumer.poll(std::time::Duration::from_millis(100)) else {
            continue;
        };
        let record = match record {
            Err(e) if transient(&e) => continue,
            other => other?,
        };
        // The flaky bug strikes the first record the first case's first incarnation polls.
        if std::mem::take(&mut flaky) && claim("flaky") {
            skip = true;
        }
        if !std::mem::take(&mut skip) {
            sink.apply(&record)?;
        }
        consumer.commit_record(&record, CommitMode::Sync)?;
    }
    Ok(())
}

/// Regression: a CI run reported `auto_commit_slow` by a schedule that reproduced 0 of 3 times
/// (a crash an auto-commit tick happened to beat), though the same check finds a crash that
/// loses a record every time. A failure whose minimal schedule is timing-dependent is now kept
/// while generation goes on, and a later failure that reproduces is reported instead. The
/// seed is fixed: its case 1 (one kill, after 4 effects) fails by the flaky bug, no shrink
/// candidate of it meets the real one, and before this the check reported it, 0/3; its case 4
/// (two crashes) meets the real bug. (A change to how schedules are drawn changes which cases a
/// seed gives: the assertions below say which premise broke.)
#[test]
fn a_timing_dependent_failure_gives_way_to_a_later_one_that_reproduces() {
    // Workers inherit FLAKY_MARKERS; the test body they run again must not point it elsewhere.
    let markers = (!kafka_harness::worker::is_worker_process()).then(|| {
        let dir = tempfile::tempdir().unwrap();
        std::env::set_var("FLAKY_MARKERS", dir.path());
        dir
    });
    let outcome = Harness::new(Guarantee::AtLeastOnce)
        .name("flaky_once_then_two_crash_bug")
        .seed("2222222222222222222222222222222222222222222222222222222222222222")
        .parallel(1)
        .cases(48)
        .check(flaky_once_then_two_crash_bug)
        .unwrap_or_else(|e| panic!("{e}"));
    let Outcome::Failed(report) = outcome else {
        panic!("both bugs hid in 48 cases")
    };
    let markers = markers.expect("the orchestrator made the marker directory");
    assert!(
        markers.path().join("flaky").exists(),
        "the flaky failure never happened"
    );
    assert!(!report.timing_dependent(), "{report}");
    let crashes = report
        .schedule
        .faults
        .iter()
        .filter(|f| {
            matches!(
                f,
                kafka_harness::Fault::Crash { .. }
                    | kafka_harness::Fault::CrashAfter { .. }
                    | kafka_harness::Fault::KillAfterEffects { .. }
                    | kafka_harness::Fault::KillAfterMillis { .. }
            )
        })
        .count();
    assert!(crashes >= 2, "not the two-crash bug: {report}");
    assert!(report.cases_before_failure >= 2, "{report}");
}

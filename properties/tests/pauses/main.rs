//! Consumer pauses (SIGSTOP/SIGCONT) on the cluster `Cluster::from_env()` gives: a pause the
//! group rides out, and one past the session timeout after which the worker wakes as a
//! zombie whose partitions a second member took.

use kafka_harness::schedule::Schedule;
use kafka_harness::trace::{EventKind, Trace};
use kafka_harness::{Fault, Workload};
use kafka_harness_fixtures::{at_least_once, Fixture};

/// One case at a time: a pause's outcome is a race against timeouts (a session timeout, a
/// transaction timeout) that a second case's processes on these 2 cores would slow down.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn schedule(millis: u64) -> Schedule {
    Schedule {
        faults: vec![Fault::PauseAt {
            point: "after-poll".into(),
            hit: 2,
            millis,
        }],
        ..Schedule::new(Workload {
            messages: 12,
            partitions: 1,
            keys: 3,
        })
    }
}

fn at(trace: &Trace, pred: impl Fn(&EventKind) -> bool) -> Option<u64> {
    trace.events.iter().find(|e| pred(&e.kind)).map(|e| e.at_us)
}

#[test]
fn a_pause_past_the_session_timeout_wakes_a_zombie_after_a_second_member_took_over() {
    let _one = one_at_a_time();
    let result = Fixture::named("at_least_once")
        .unwrap()
        .harness()
        .name("a_pause_past_the_session_timeout_wakes_a_zombie_after_a_second_member_took_over")
        .run_schedule(&schedule(2500), at_least_once)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &result.trace;
    let timeline = kafka_harness::report::timeline(t);
    let paused = at(t, |k| {
        matches!(
            k,
            EventKind::Paused {
                hit: 2,
                millis: 2500,
                ..
            }
        )
    })
    .unwrap_or_else(|| panic!("no pause:\n{timeline}"));
    let resumed = t
        .events
        .iter()
        .find_map(|e| match e.kind {
            EventKind::Resumed { paused_ms } => Some((e.at_us, paused_ms)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("never continued:\n{timeline}"));
    assert!(resumed.1 >= 2500, "stopped {} ms:\n{timeline}", resumed.1);
    // The second member joined and consumed while the worker was stopped.
    let peer = t
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::Started { primary: false, .. }))
        .unwrap_or_else(|| panic!("no second member:\n{timeline}"))
        .inc;
    let peer_polled_while_stopped = t.events.iter().any(|e| {
        e.inc == peer
            && matches!(e.kind, EventKind::Polled { .. })
            && e.at_us > paused
            && e.at_us < resumed.0
    });
    assert!(
        peer_polled_while_stopped,
        "the second member did not take over during the pause:\n{timeline}"
    );
    // The zombie woke and acted: any event of its own after the SIGCONT.
    let zombie_acted = t.events.iter().any(|e| e.inc == 1 && e.at_us > resumed.0);
    assert!(
        zombie_acted,
        "the zombie did nothing after waking:\n{timeline}"
    );
    // A correct at-least-once consumer keeps its claim through it.
    assert!(result.verdict.holds(), "{:?}\n{timeline}", result.verdict);
    eprintln!("{timeline}");
}

#[test]
fn a_short_pause_is_ridden_out_without_a_takeover() {
    let _one = one_at_a_time();
    let result = Fixture::named("at_least_once")
        .unwrap()
        .harness()
        .name("a_short_pause_is_ridden_out_without_a_takeover")
        .run_schedule(&schedule(300), at_least_once)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = &result.trace;
    let timeline = kafka_harness::report::timeline(t);
    assert!(
        at(t, |k| matches!(k, EventKind::Resumed { .. })).is_some(),
        "{timeline}"
    );
    assert!(
        at(t, |k| matches!(
            k,
            EventKind::Started { primary: false, .. }
        ))
        .is_none(),
        "a 300 ms pause started a second member:\n{timeline}"
    );
    // Incarnation 1 itself processed everything after the pause.
    let applied_by_1 = t
        .events
        .iter()
        .filter(|e| e.inc == 1 && matches!(e.kind, EventKind::Applied { .. }))
        .count();
    assert_eq!(applied_by_1, 12, "{timeline}");
    assert!(result.verdict.holds(), "{:?}\n{timeline}", result.verdict);
}

/// A schedule with one pause at `point`'s `hit`-th hit for 2.5 s.
fn paused_at(point: &str, hit: u32, messages: u32, partitions: i32, keys: u32) -> Schedule {
    Schedule {
        faults: vec![Fault::PauseAt {
            point: point.into(),
            hit,
            millis: 2500,
        }],
        ..Schedule::new(Workload {
            messages,
            partitions,
            keys,
        })
    }
}

/// Run fixture `name` on `schedule` under the harness name `test`; the result and its timeline.
fn run_fixture(name: &str, test: &str, schedule: &Schedule) -> (kafka_harness::CaseResult, String) {
    let fixture = Fixture::named(name).unwrap();
    let result = fixture
        .harness()
        .name(test)
        .run_schedule(schedule, fixture.worker)
        .unwrap_or_else(|e| panic!("{e}"));
    let timeline = kafka_harness::report::timeline(&result.trace);
    (result, timeline)
}

/// The case broke the guarantee, first of all with `kind`.
fn assert_primary(
    result: &kafka_harness::CaseResult,
    timeline: &str,
    kind: kafka_harness::ViolationKind,
) {
    assert_eq!(
        result.verdict.primary_kind(),
        Some(kind),
        "{:?}\n{timeline}",
        result.verdict
    );
}

/// A pause at `before-commit-transaction`, past the session timeout: the second member's
/// producer (same `transactional.id`) fences the paused one. 2 partitions, so after the zombie rejoins both members hold one. (A
/// consumer that swallows that failure is not caught this way: the rebalance the zombie's
/// return causes resets its position to the committed offsets — the last test below catches
/// it with a pause inside its session timeout instead.)
fn transactional_zombie() -> Schedule {
    paused_at("before-commit-transaction", 1, 16, 2, 4)
}

/// A pause at `before-commit-transaction` 2 s past a 2 s transaction timeout.
fn expired_transaction() -> Schedule {
    Schedule {
        faults: vec![Fault::PauseAt {
            point: "before-commit-transaction".into(),
            hit: 1,
            millis: 4000,
        }],
        ..transactional_zombie()
    }
}

#[test]
fn a_fenced_transactional_zombie_is_harmless_when_its_error_ends_it() {
    let _one = one_at_a_time();
    let (result, timeline) = run_fixture(
        "exactly_once_transactional",
        "a_fenced_transactional_zombie_is_harmless_when_its_error_ends_it",
        &transactional_zombie(),
    );
    let t = &result.trace;
    // The paused worker's transaction failed when it woke: it ended with that error.
    let zombie_failed = t.events.iter().any(|e| {
        e.inc == 1
            && matches!(
                &e.kind,
                EventKind::Exited {
                    exit: kafka_harness::trace::Exit::Failed { .. }
                }
            )
    });
    assert!(
        zombie_failed,
        "the zombie's transaction did not fail:\n{timeline}"
    );
    assert!(result.verdict.holds(), "{:?}\n{timeline}", result.verdict);
}

#[test]
fn a_commit_refused_to_a_zombie_and_retried_later_moves_the_offset_back() {
    let _one = one_at_a_time();
    let (result, timeline) = run_fixture(
        "retry_failed_commit_later",
        "a_commit_refused_to_a_zombie_and_retried_later_moves_the_offset_back",
        &paused_at("before-commit", 2, 12, 1, 3),
    );
    assert_primary(
        &result,
        &timeline,
        kafka_harness::ViolationKind::CommitBackwards,
    );
    eprintln!("{timeline}");
}

/// `txn_swallows_commit_error` keeps a 6 s session timeout: a 4 s pause at
/// `before-commit-transaction` does not cost it its partitions (no second member is started,
/// no rebalance resets its position) but outlives its 2 s transaction timeout, so the broker
/// aborts the open transaction; the consumer swallows the failed commit and moves on. (The
/// broker aborts at its first cleanup scan — every 0.5 s here — past the timeout: a 2.5 s
/// pause woke the worker only a few ms after the latest such scan, a race a slow scan on a
/// loaded machine could lose.)
#[test]
fn a_transaction_that_expired_in_a_pause_and_was_swallowed_loses_its_output() {
    let _one = one_at_a_time();
    let (result, timeline) = run_fixture(
        "txn_swallows_commit_error",
        "a_transaction_that_expired_in_a_pause_and_was_swallowed_loses_its_output",
        &expired_transaction(),
    );
    let t = &result.trace;
    // The pause said the consumer's own session timeout, and no member took over.
    assert!(
        t.events.iter().any(|e| matches!(
            e.kind,
            EventKind::Paused {
                session_timeout_ms: Some(6000),
                ..
            }
        )),
        "{timeline}"
    );
    assert!(
        !t.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Started { primary: false, .. })),
        "a second member was started for a pause inside the session timeout:\n{timeline}"
    );
    assert_primary(&result, &timeline, kafka_harness::ViolationKind::OutputLost);
}

/// Found by the fixtures suite (a CI run, a random seed): `at_least_once_stored_offsets` —
/// auto-commit on, offsets stored only after each record is applied — stopped for 2.5 s inside
/// its revoke handler (where a rebalance after a failed write reached it) wakes after the second
/// member has applied and committed the rest and left; librdkafka then auto-commits the
/// zombie's stale stored offset, the broker accepts it, and the group's offset goes back. The record is delivered again, not lost — and the invariant
/// "the committed offset never goes backwards" is broken, 3/3 on replay.
#[test]
fn an_auto_committing_zombie_woken_in_its_revoke_handler_moves_the_offset_back() {
    let _one = one_at_a_time();
    let mut schedule = paused_at("revoke", 1, 2, 1, 1);
    schedule.faults.extend([
        Fault::SinkFailure {
            write: 2,
            failure: kafka_harness::schedule::SinkFailure::Transient,
            writes: 1,
            millis: None,
        },
        Fault::RebalanceAfter {
            after: "sink-outage".into(),
            point: "revoke".into(),
            hit: 1,
        },
    ]);
    let (result, timeline) = run_fixture(
        "at_least_once_stored_offsets",
        "an_auto_committing_zombie_woken_in_its_revoke_handler_moves_the_offset_back",
        &schedule,
    );
    assert_primary(
        &result,
        &timeline,
        kafka_harness::ViolationKind::CommitBackwards,
    );
    eprintln!("{timeline}");
}

/// Which partitions a rebalance moves is the schedule's choice (`Schedule::joiner_first`): the
/// harness orders the members' `client.id`s, and the range assignor hands partitions out in
/// member-id order, so the worker keeps partition 0 when the joiner sorts last and partition 1
/// when it sorts first — the same on every run (it was a coin: the member id's random UUID).
/// The embedded mock ignores `client.id` in its member ids: there it stays a coin.
#[test]
fn the_schedule_picks_which_partitions_a_rebalance_moves() {
    let _one = one_at_a_time();
    for (joiner_first, kept) in [(false, 0), (true, 1)] {
        let schedule = Schedule {
            faults: vec![Fault::RebalanceAt {
                point: "after-poll".into(),
                hit: 2,
            }],
            joiner_first,
            ..Schedule::new(Workload {
                messages: 12,
                partitions: 2,
                keys: 6,
            })
        };
        let fixture = Fixture::named("at_least_once").unwrap();
        let h = fixture
            .harness()
            .name(&format!("rebalance_side_{joiner_first}"));
        if kafka_harness::worker::is_worker_process() {
            // Only the harness this worker belongs to serves (and exits).
            let _ = h.run_schedule(&schedule, at_least_once);
            continue;
        }
        let result = h
            .run_schedule(&schedule, at_least_once)
            .unwrap_or_else(|e| panic!("{e}"));
        let timeline = kafka_harness::report::timeline(&result.trace);
        if kafka_harness::Cluster::shared().unwrap().backend()
            == kafka_harness::BackendKind::Embedded
        {
            return;
        }
        let assigned: Vec<Vec<i32>> = result
            .trace
            .events
            .iter()
            .filter(|e| e.inc == 1)
            .filter_map(|e| match &e.kind {
                EventKind::Rebalanced {
                    phase: kafka_harness::trace::RebalancePhase::Assign,
                    partitions,
                } => Some(partitions.clone()),
                _ => None,
            })
            .collect();
        // The first assignment is both partitions; the one after the joiner came is the
        // worker's side (a later one, after the joiner left, is both again).
        assert_eq!(
            assigned.get(1),
            Some(&vec![kept]),
            "joiner_first={joiner_first}: the worker's assignments {assigned:?}\n{timeline}"
        );
        assert!(result.verdict.holds(), "{:?}\n{timeline}", result.verdict);
    }
}

/// Found by `catch_rate --correct-cases 200 --pauses` on 3 brokers (2026-12-02): the same
/// at-least-once code into a last-write-wins upsert (`upsert_zombie_overwrites`, what
/// `effectively_once` was) and into a versioned one (`effectively_once` now). Stopped for 2.5 s
/// between poll and write, the worker wakes after the second member wrote the key's later
/// records, and writes record 0 over them before its next poll tells it the partition moved.
/// Both tests below see that late write; only the versioned upsert keeps the newer row.
fn zombie_upsert() -> Schedule {
    paused_at("before-sink-write", 1, 5, 1, 1)
}

/// The zombie (incarnation 1) applied a record after the second member applied its last.
fn zombie_wrote_late(t: &Trace) -> bool {
    let applied = |e: &&kafka_harness::trace::Event| matches!(e.kind, EventKind::Applied { .. });
    let last_by_second = t
        .events
        .iter()
        .filter(applied)
        .filter(|e| e.inc != 1)
        .map(|e| e.at_us)
        .max();
    last_by_second.is_some_and(|last| {
        t.events
            .iter()
            .filter(applied)
            .any(|e| e.inc == 1 && e.at_us > last)
    })
}

#[test]
fn a_zombies_late_write_undoes_a_newer_row_in_a_last_write_wins_upsert() {
    let _one = one_at_a_time();
    let (result, timeline) = run_fixture(
        "upsert_zombie_overwrites",
        "a_zombies_late_write_undoes_a_newer_row_in_a_last_write_wins_upsert",
        &zombie_upsert(),
    );
    assert!(zombie_wrote_late(&result.trace), "{timeline}");
    assert_primary(
        &result,
        &timeline,
        kafka_harness::ViolationKind::StateMismatch,
    );
}

#[test]
fn a_versioned_upsert_keeps_the_newer_row_against_a_zombies_late_write() {
    let _one = one_at_a_time();
    let (result, timeline) = run_fixture(
        "effectively_once",
        "a_versioned_upsert_keeps_the_newer_row_against_a_zombies_late_write",
        &zombie_upsert(),
    );
    assert!(zombie_wrote_late(&result.trace), "{timeline}");
    assert!(result.verdict.holds(), "{:?}\n{timeline}", result.verdict);
}

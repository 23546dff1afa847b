//! The crash engine on a real broker (whatever `Cluster::from_env()` picks; CI gives it the
//! containers backend): crashes are SIGKILL at precise points, the trace and the broker agree
//! on what happened, and a worker's own exit is not mistaken for a scheduled crash.

use std::sync::Mutex;
use std::time::Duration;

use kafka_harness::schedule::{Fault, Schedule, Workload};
use kafka_harness::sink::UpsertSink;
use kafka_harness::trace::{CommitMode as Mode, EventKind, Exit, RebalancePhase, Trace};
use kafka_harness::worker::{CommitMode, WorkerCtx, WorkerError};
use kafka_harness::{Guarantee, Harness};
use rdkafka::ClientConfig;

/// Cases share the process-wide cluster; run them one at a time on 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn manual() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.auto.commit", "false");
    c
}

/// Process, then commit each record synchronously.
fn process_then_commit(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let consumer = ctx.consumer(&manual())?;
    let mut sink = ctx.sink()?;
    while ctx.running() {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            let r = r?;
            sink.apply(&r)?;
            consumer.commit_record(&r, CommitMode::Sync)?;
        }
    }
    Ok(())
}

fn one_partition(messages: u32) -> Workload {
    Workload {
        messages,
        partitions: 1,
        keys: messages,
    }
}

/// Committed offsets the harness read from the broker after incarnation `n` (1-based) ended.
fn broker_committed_after(trace: &Trace, n: usize) -> Vec<(i32, Option<i64>)> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::BrokerCommitted { offsets } => Some(offsets.clone()),
            _ => None,
        })
        .nth(n - 1)
        .expect("a broker read after that incarnation")
}

fn at(trace: &Trace, pred: impl Fn(&EventKind) -> bool) -> Vec<(u32, u64)> {
    trace
        .events
        .iter()
        .filter(|e| pred(&e.kind))
        .map(|e| (e.inc, e.at_us))
        .collect()
}

#[test]
fn a_crash_before_commit_leaves_the_brokers_offset_at_the_previous_explicit_commit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::AtLeastOnce);
    let s = Schedule::new(one_partition(6)).fault(Fault::Crash {
        point: "before-commit".into(),
        hit: 3,
    });
    let r = h.run_schedule(&s, process_then_commit).unwrap();
    let crashed = at(
        &r.trace,
        |k| matches!(k, EventKind::Crashed { point, hit: 3 } if point == "before-commit"),
    );
    assert_eq!(crashed.len(), 1, "the crash fired once, in incarnation 1");
    assert_eq!(crashed[0].0, 1);
    // Two commits made it (offsets 1 and 2); the third never left the process.
    assert_eq!(broker_committed_after(&r.trace, 1), vec![(0, Some(2))]);
    let inc1_commits: Vec<i64> = r
        .trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Committed { offsets, .. } if e.inc == 1 => Some(offsets[0].offset),
            _ => None,
        })
        .collect();
    assert_eq!(inc1_commits, vec![1, 2]);
    assert!(r.verdict.holds(), "{:?}", r.verdict);
}

/// Auto-commit on, a long interval: offsets are stored by poll, committed by the timer or on close.
fn auto_commit_poll_all(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let mut cfg = ClientConfig::new();
    cfg.set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "60000");
    let consumer = ctx.consumer(&cfg)?;
    let mut seen = 0;
    while seen < 5 {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            r?;
            seen += 1;
        }
    }
    ctx.crash_point("all-polled");
    Ok(()) // returning drops the consumer: close() commits the stored offsets
}

#[test]
fn an_auto_commit_consumer_killed_commits_nothing_more_while_a_graceful_drop_does_commit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::AtMostOnce);
    // Killed at the crash point: no close, no final auto-commit.
    let killed = Schedule::new(one_partition(5)).fault(Fault::Crash {
        point: "all-polled".into(),
        hit: 1,
    });
    let r = h.run_schedule(&killed, auto_commit_poll_all).unwrap();
    assert_eq!(
        broker_committed_after(&r.trace, 1),
        vec![(0, None)],
        "SIGKILL: nothing committed"
    );
    assert!(at(&r.trace, |k| matches!(k, EventKind::Committed { .. }))
        .iter()
        .all(|(inc, _)| *inc != 1));
    // Graceful: the same code returning normally commits all 5 on Drop.
    let graceful = Schedule::new(one_partition(5));
    let r = h.run_schedule(&graceful, auto_commit_poll_all).unwrap();
    assert_eq!(
        broker_committed_after(&r.trace, 1),
        vec![(0, Some(5))],
        "Drop commits the stored offsets"
    );
}

#[test]
fn the_ledger_holds_every_effect_applied_before_the_kill_and_nothing_after() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::AtLeastOnce);
    let s = Schedule::new(one_partition(8)).fault(Fault::Crash {
        point: "after-sink-write".into(),
        hit: 4,
    });
    let r = h.run_schedule(&s, process_then_commit).unwrap();
    let crash_at = at(&r.trace, |k| matches!(k, EventKind::Crashed { .. }))[0].1;
    let inc1: Vec<(u64, u64)> = r
        .trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Applied { msg } if e.inc == 1 => Some((msg.id, e.at_us)),
            _ => None,
        })
        .collect();
    assert_eq!(
        inc1.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(inc1.iter().all(|(_, t)| *t <= crash_at));
    // Message 3 was applied but not committed: redelivered and applied again by incarnation 2.
    let threes = r.trace.applied().filter(|(_, m)| m.id == 3).count();
    assert_eq!(threes, 2);
    // An orchestrator kill: every ledger entry of the killed incarnation precedes the kill.
    let s = Schedule::new(one_partition(30)).fault(Fault::KillAfterEffects { effects: 3 });
    let r = h.run_schedule(&s, process_then_commit).unwrap();
    let killed = at(&r.trace, |k| matches!(k, EventKind::Killed { .. }));
    assert_eq!(killed.len(), 1);
    let n = r.trace.applied().filter(|(e, _)| e.inc == 1).count();
    assert!(n >= 3, "the kill waited for 3 effects, saw {n}");
    assert!(r
        .trace
        .applied()
        .filter(|(e, _)| e.inc == 1)
        .all(|(e, _)| e.at_us <= killed[0].1));
    assert!(r.verdict.holds(), "{:?}", r.verdict);
}

/// Slow enough that a second member joins mid-stream.
fn slow(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let consumer = ctx.consumer(&manual())?;
    let mut sink = ctx.sink()?;
    while ctx.running() {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            let r = r?;
            std::thread::sleep(Duration::from_millis(40));
            sink.apply(&r)?;
            consumer.commit_record(&r, CommitMode::Sync)?;
        }
    }
    Ok(())
}

#[test]
fn a_second_worker_joining_rebalances_the_group_and_the_trace_records_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::AtLeastOnce);
    let s = Schedule::new(Workload {
        messages: 60,
        partitions: 4,
        keys: 8,
    })
    .fault(Fault::Rebalance { after_effects: 3 });
    let r = h.run_schedule(&s, slow).unwrap();
    assert!(
        r.trace
            .events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Started { primary: false, .. })),
        "a peer started"
    );
    let revokes = at(&r.trace, |k| {
        matches!(
            k,
            EventKind::Rebalanced {
                phase: RebalancePhase::Revoke,
                ..
            }
        )
    });
    assert!(
        revokes.iter().any(|(inc, _)| *inc == 1),
        "incarnation 1 had partitions revoked: {revokes:?}"
    );
    let hits = |point: &str| {
        at(
            &r.trace,
            |k| matches!(k, EventKind::CrashPointHit { point: p, .. } if p == point),
        )
    };
    assert!(hits("revoke").iter().any(|(inc, _)| *inc == 1));
    assert!(
        hits("assign").iter().filter(|(inc, _)| *inc == 1).count() >= 2,
        "assigned at start and again after the rebalance"
    );
    assert!(r.verdict.holds(), "{:?}", r.verdict);
}

#[test]
fn the_idempotent_sink_holds_one_row_per_business_key_after_redelivery() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::EffectivelyOnce).sink(UpsertSink);
    let s = Schedule::new(Workload {
        messages: 9,
        partitions: 1,
        keys: 3,
    })
    .fault(Fault::Crash {
        point: "after-sink-write".into(),
        hit: 5,
    });
    let r = h.run_schedule(&s, process_then_commit).unwrap();
    assert!(
        r.trace.applied().filter(|(_, m)| m.id == 4).count() == 2,
        "message 4 was redelivered and applied twice"
    );
    let state = r.trace.state.clone().unwrap();
    assert_eq!(
        state,
        vec![("k0".into(), 6), ("k1".into(), 7), ("k2".into(), 8)],
        "one row per key, the last value"
    );
    assert!(r.verdict.holds(), "{:?}", r.verdict);
}

fn panics_in_first_incarnation(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() == 1 {
        let consumer = ctx.consumer(&manual())?;
        while consumer.poll(Duration::from_millis(100)).is_none() {}
        panic!("boom: the consumer's own bug");
    }
    process_then_commit(ctx)
}

fn exits_with_7(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() == 1 {
        std::process::exit(7);
    }
    process_then_commit(ctx)
}

fn returns_error(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() == 1 {
        return Err("database unreachable".into());
    }
    process_then_commit(ctx)
}

/// Runs `worker` (one worker per test: the worker process re-enters this same test) and
/// returns incarnation 1's recorded exit, checking it was not taken for a scheduled crash.
fn first_exit(worker: fn(&mut WorkerCtx) -> Result<(), WorkerError>) -> Exit {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let r = Harness::new(Guarantee::AtLeastOnce)
        .run_schedule(&Schedule::new(one_partition(3)), worker)
        .unwrap();
    assert!(
        at(&r.trace, |k| matches!(
            k,
            EventKind::Crashed { .. } | EventKind::Killed { .. }
        ))
        .is_empty(),
        "not a scheduled crash"
    );
    assert!(
        r.verdict.holds(),
        "the restarted worker drained it: {:?}",
        r.verdict
    );
    r.trace
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Exited { exit } if e.inc == 1 => Some(exit.clone()),
            _ => None,
        })
        .expect("incarnation 1's exit is recorded")
}

#[test]
fn a_worker_that_panics_is_reported_as_a_panic_with_its_message() {
    match first_exit(panics_in_first_incarnation) {
        Exit::Panicked { message } => assert!(message.contains("boom"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_worker_that_exits_on_its_own_is_reported_with_its_exit_code() {
    assert_eq!(first_exit(exits_with_7), Exit::Code { code: 7 });
}

#[test]
fn a_worker_that_returns_an_error_is_reported_with_the_error() {
    match first_exit(returns_error) {
        Exit::Failed { error } => assert!(error.contains("database unreachable"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn commits_recorded_by_the_worker_match_what_the_broker_reports() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let h = Harness::new(Guarantee::AtLeastOnce);
    let r = h
        .run_schedule(
            &Schedule::new(Workload {
                messages: 10,
                partitions: 2,
                keys: 4,
            }),
            process_then_commit,
        )
        .unwrap();
    let mut last = std::collections::BTreeMap::new();
    for e in &r.trace.events {
        if let EventKind::Committed {
            offsets,
            mode: Mode::Sync,
            ..
        } = &e.kind
        {
            for o in offsets {
                last.insert(o.partition, o.offset);
            }
        }
    }
    let broker: std::collections::BTreeMap<i32, i64> = broker_committed_after(&r.trace, 1)
        .into_iter()
        .map(|(p, o)| (p, o.unwrap_or(-1)))
        .collect();
    assert_eq!(last, broker);
}

/// A schedule with a fault of the cluster that the backend cannot inject is refused before
/// anything runs, with one error that names the fault and the backends that can.
#[test]
fn cluster_faults_the_embedded_mock_cannot_inject_are_one_clear_error() {
    use kafka_harness::schedule::{BrokerAction, BrokerTarget, LinkAction, LinkTarget};
    use kafka_harness::{BackendKind, Cluster, ClusterConfig};
    let config = ClusterConfig::default().backend(BackendKind::Embedded);
    let cluster = std::sync::Arc::new(Cluster::start(config).unwrap_or_else(|e| panic!("{e}")));
    for (fault, words) in [
        (
            Fault::Network {
                target: LinkTarget::Coordinator,
                action: LinkAction::Cut { millis: 2000 },
                after_effects: 1,
            },
            "network fault",
        ),
        (
            Fault::Broker {
                target: BrokerTarget::Coordinator,
                action: BrokerAction::Restart,
                after_effects: 1,
            },
            "broker fault",
        ),
    ] {
        let schedule = Schedule::new(one_partition(2)).fault(fault);
        let err = Harness::new(Guarantee::AtLeastOnce)
            .cluster(cluster.clone())
            .name("cluster_faults_the_embedded_mock_cannot_inject_are_one_clear_error")
            .run_schedule(&schedule, process_then_commit)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(words) && err.contains("containers or local"),
            "{err}"
        );
    }
}

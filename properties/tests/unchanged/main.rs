//! A consumer the harness did not build — an async `StreamConsumer` with its own context,
//! JSON payloads, `crash_point!` and a `fail::fail_point!` — measured for what the harness
//! sees of it, on the cluster `Cluster::from_env()` gives.

use kafka_harness::trace::EventKind;
use kafka_harness::{Fault, Schedule, ViolationKind, Workload};
use kafka_harness_fixtures::{stream_commit_then_process, stream_stored_offsets, Fixture};

const WORKLOAD: Workload = Workload {
    messages: 6,
    partitions: 1,
    keys: 2,
};

fn count(trace: &kafka_harness::trace::Trace, pred: impl Fn(&EventKind) -> bool) -> usize {
    trace.events.iter().filter(|e| pred(&e.kind)).count()
}

#[test]
fn a_user_built_stream_consumer_is_seen_through_effects_crash_points_and_broker_reads() {
    let fixture = Fixture::named("stream_stored_offsets").unwrap();
    let schedule = Schedule {
        faults: vec![Fault::Crash {
            point: "order-recorded".into(),
            hit: 3,
        }],
        ..Schedule::new(WORKLOAD)
    };
    let r = fixture
        .harness()
        .name("a_user_built_stream_consumer_is_seen_through_effects_crash_points_and_broker_reads")
        .run_schedule(&schedule, stream_stored_offsets)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.verdict.holds(), "{:?}", r.verdict);
    let t = &r.trace;
    // What it sees: the `crash_point!` in the user's code (and the crash there), every effect,
    // and the auto-commits as broker reads.
    let crashed = count(
        t,
        |k| matches!(k, EventKind::Crashed { point, hit } if point == "order-recorded" && *hit == 3),
    );
    assert_eq!(crashed, 1, "the crash_point! crashed the process");
    let applied: std::collections::BTreeSet<u64> = t
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Applied { msg } => Some(msg.id),
            _ => None,
        })
        .collect();
    assert_eq!(applied, (0..6).collect(), "every order was recorded");
    let observed = count(t, |k| matches!(k, EventKind::BrokerCommitObserved { .. }));
    assert!(observed >= 1, "auto-commits are seen on the broker");
    // What it does not see: polls and commits inside the user's client.
    assert_eq!(count(t, |k| matches!(k, EventKind::Polled { .. })), 0);
    assert_eq!(count(t, |k| matches!(k, EventKind::Committed { .. })), 0);
    eprintln!(
        "MEASURE user-built StreamConsumer: {} events, {} applied, {observed} broker-observed commits, 0 polls, 0 in-process commits",
        t.events.len(),
        applied.len()
    );
}

#[test]
fn a_fail_point_in_the_users_code_is_a_crash_point_the_schedule_can_name() {
    let fixture = Fixture::named("stream_commit_then_process").unwrap();
    let schedule = Schedule {
        faults: vec![Fault::Crash {
            point: "order-acknowledged".into(),
            hit: 2,
        }],
        ..Schedule::new(WORKLOAD)
    };
    let r = fixture
        .harness()
        .name("a_fail_point_in_the_users_code_is_a_crash_point_the_schedule_can_name")
        .run_schedule(&schedule, stream_commit_then_process)
        .unwrap_or_else(|e| panic!("{e}"));
    let hits = r.trace.crash_point_hits();
    assert!(
        hits.get("order-acknowledged").is_some_and(|h| *h >= 2),
        "{hits:?}"
    );
    assert_eq!(
        r.verdict.primary_kind(),
        Some(ViolationKind::Lost),
        "acknowledged, then killed at the fail point: message 1 is lost"
    );
    let lost: Vec<String> = r.verdict.violations.iter().map(|v| v.to_string()).collect();
    assert!(
        lost.iter()
            .any(|v| v.contains("message 1 ") && v.contains("seen on the broker")),
        "{lost:?}"
    );
}

#[test]
fn a_postgres_sink_opened_through_ctx_sink_is_a_clear_error() {
    // A PostgresSink is written by the consumer's own client; ctx.sink() says so.
    let sink = kafka_harness::sink::PostgresSink::new("SELECT 1", "SELECT 'k', 0::bigint");
    let err = kafka_harness::sink::SinkFactory::open(&sink, std::path::Path::new("/tmp"))
        .err()
        .expect("open refuses");
    assert!(err.to_string().contains("connection_string"), "{err}");
}

#[test]
fn a_panicking_payload_generator_is_one_clear_error_before_anything_is_judged() {
    let err = Fixture::named("stream_stored_offsets")
        .unwrap()
        .harness()
        .name("a_panicking_payload_generator_is_one_clear_error_before_anything_is_judged")
        .payload(|id, key| {
            if id == 2 {
                panic!("no template for order {id}");
            }
            kafka_harness_fixtures::order_json(id, key)
        })
        .run_schedule(&Schedule::new(WORKLOAD), stream_stored_offsets)
        .expect_err("the generator panics for message 2");
    let text = err.to_string();
    assert!(
        text.contains("the payload generator (Harness::payload) panicked for message 2")
            && text.contains("no template for order 2"),
        "{text}"
    );
}

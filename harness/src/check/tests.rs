//! Checkers are the product's heart: every violation kind has unit tests with its witnesses
//! and words, and property tests compare each checker with a brute-force reference on
//! generated synthetic traces.

use proptest::prelude::*;

use super::*;
use crate::cluster::BackendKind;
use crate::trace::*;

/// Builds traces by hand: every call is one event, one microsecond after the previous.
struct T {
    trace: Trace,
    now: u64,
    partitions: i32,
}

impl T {
    fn new(sink: SinkSemantics, partitions: i32, messages: u64) -> T {
        let case = CaseInfo {
            topic: "t".into(),
            group: "g".into(),
            partitions,
            backend: BackendKind::Embedded,
            sink,
        };
        let mut t = T {
            trace: Trace::new(case),
            now: 0,
            partitions,
        };
        for id in 0..messages {
            let msg = t.msg(id);
            t.push(
                0,
                EventKind::Produced {
                    msg,
                    key: format!("k{}", id % 3),
                },
            );
        }
        if sink == SinkSemantics::Upsert || sink == SinkSemantics::Append {
            t.trace.state = Some(vec![]);
        }
        t
    }
    /// Message `id`: partition `id % partitions`, offset `id / partitions`.
    fn msg(&self, id: u64) -> MessageRef {
        MessageRef {
            id,
            partition: (id % self.partitions as u64) as i32,
            offset: (id / self.partitions as u64) as i64,
        }
    }
    fn push(&mut self, inc: Incarnation, kind: EventKind) -> &mut Self {
        self.now += 1;
        self.trace.events.push(Event {
            at_us: self.now,
            inc,
            kind,
        });
        self
    }
    fn start(&mut self, inc: Incarnation) -> &mut Self {
        self.push(
            inc,
            EventKind::Started {
                primary: true,
                faults: vec![],
            },
        )
    }
    fn poll(&mut self, inc: Incarnation, id: u64) -> &mut Self {
        let msg = self.msg(id);
        self.push(inc, EventKind::Polled { msg })
    }
    fn apply(&mut self, inc: Incarnation, id: u64) -> &mut Self {
        let msg = self.msg(id);
        self.push(inc, EventKind::Applied { msg })
    }
    fn commit(&mut self, inc: Incarnation, partition: i32, offset: i64) -> &mut Self {
        self.commit_requested(inc, partition, offset, 0)
    }
    /// A commit that returned now but was requested `back` events ago (it was in flight).
    fn commit_requested(
        &mut self,
        inc: Incarnation,
        partition: i32,
        offset: i64,
        back: u64,
    ) -> &mut Self {
        let at = (self.now + 1).saturating_sub(back);
        self.push(
            inc,
            EventKind::Committed {
                offsets: vec![PartitionOffset { partition, offset }],
                mode: CommitMode::Sync,
                requested_at_us: at,
            },
        )
    }
    /// A commit seen on the broker during an incarnation: landed since `back` events ago.
    fn observe(&mut self, partition: i32, offset: i64, back: u64) -> &mut Self {
        let since_us = self.now.saturating_sub(back);
        self.push(
            0,
            EventKind::BrokerCommitObserved {
                offsets: vec![PartitionOffset { partition, offset }],
                since_us,
            },
        )
    }
    fn crash(&mut self, inc: Incarnation, point: &str) -> &mut Self {
        self.push(
            inc,
            EventKind::Crashed {
                point: point.into(),
                hit: 1,
            },
        )
    }
    fn drained(&mut self) -> &mut Self {
        self.push(0, EventKind::Drained)
    }
    fn done(&self) -> Trace {
        self.trace.clone()
    }
}

#[test]
fn a_message_never_applied_is_lost_and_the_commit_and_crash_that_lost_it_are_named() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 2);
    t.start(1)
        .apply(1, 0)
        .commit(1, 0, 2)
        .crash(1, "after-commit")
        .start(2)
        .drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    let lost: Vec<_> = v
        .violations
        .iter()
        .filter(|v| v.kind() == ViolationKind::Lost)
        .collect();
    assert_eq!(lost.len(), 1);
    match lost[0] {
        Violation::Lost {
            msg,
            commit: Some(c),
            death: Some(d),
        } => {
            assert_eq!(msg.id, 1);
            assert_eq!((c.inc, c.offset), (1, 2));
            assert_eq!(d.inc, 1);
            assert!(d.how.contains("after-commit"));
        }
        other => panic!("no witnesses: {other:?}"),
    }
    let words = lost[0].to_string();
    assert!(
        words.starts_with("message 1 (partition 0, offset 1) was lost"),
        "{words}"
    );
    assert!(
        words.contains("offset 2 was committed by incarnation 1"),
        "{words}"
    );
    assert!(
        words.contains("then incarnation 1 crashed at `after-commit` hit #1"),
        "{words}"
    );
    assert_eq!(v.primary_kind(), Some(ViolationKind::Lost));
}

/// The false alarm's mirror: an auto-commit whose callback was never served before the crash
/// is invisible to the worker, but the broker read during the incarnation names it — with the
/// bracket it landed in, and the death that followed.
#[test]
fn a_commit_no_process_reported_is_named_from_the_broker_read_with_its_time_bracket() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 3);
    t.start(1)
        .apply(1, 0)
        .observe(0, 2, 1)
        .crash(1, "before-sink-write")
        .start(2)
        .drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    let lost = v
        .violations
        .iter()
        .find(|v| v.kind() == ViolationKind::Lost)
        .unwrap();
    match lost {
        Violation::Lost {
            msg,
            commit: Some(c),
            death: Some(d),
        } => {
            assert_eq!(msg.id, 1);
            assert_eq!((c.inc, c.offset, c.mode), (0, 2, None));
            let since = c.since_us.expect("a bracket");
            assert!(since < c.at_us);
            assert_eq!(d.inc, 1);
            let text = lost.to_string();
            assert!(text.contains("was committed between"), "{text}");
            assert!(text.contains("no process reported this commit"), "{text}");
            assert!(text.contains("crashed at `before-sink-write`"), "{text}");
        }
        other => panic!("expected a lost message with its commit and death, got {other:?}"),
    }
    // The same commit is "too far" too: message 1 was not applied by the read that showed it.
    assert!(v.kinds().contains(&ViolationKind::CommittedTooFar));
}

/// Judged against the bracket's end, an observed commit never accuses processing that may
/// have preceded it.
#[test]
fn a_commit_seen_on_the_broker_after_the_processing_is_not_too_far() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 2);
    t.start(1)
        .apply(1, 0)
        .apply(1, 1)
        .observe(0, 2, 3)
        .drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert!(v.holds(), "{:?}", v.violations);
}

#[test]
fn process_then_commit_with_every_message_applied_holds_at_least_once() {
    let mut t = T::new(SinkSemantics::Ledger, 2, 4);
    t.start(1);
    for id in 0..4 {
        let m = t.msg(id);
        t.apply(1, id).commit(1, m.partition, m.offset + 1);
    }
    t.drained();
    assert!(check(&t.done(), Guarantee::AtLeastOnce).unwrap().holds());
}

#[test]
fn an_effect_applied_twice_is_a_duplicate_with_the_crash_that_caused_the_redelivery() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 1);
    t.start(1)
        .apply(1, 0)
        .crash(1, "before-commit")
        .start(2)
        .apply(2, 0)
        .commit(2, 0, 1)
        .drained();
    let v = check(&t.done(), Guarantee::AtMostOnce).unwrap();
    assert_eq!(v.kinds(), vec![ViolationKind::Duplicated]);
    match &v.violations[0] {
        Violation::Duplicated {
            msg,
            count,
            by,
            death: Some(d),
        } => {
            assert_eq!((msg.id, *count), (0, 2));
            assert_eq!(by, &vec![1, 2]);
            assert!(d.how.contains("before-commit"));
        }
        other => panic!("{other:?}"),
    }
    // The same trace keeps at-least-once.
    assert!(check(&t.done(), Guarantee::AtLeastOnce).unwrap().holds());
}

#[test]
fn upsert_state_equal_to_applying_each_input_once_is_effectively_once_even_with_redelivery() {
    let mut t = T::new(SinkSemantics::Upsert, 1, 4);
    t.start(1)
        .apply(1, 0)
        .apply(1, 1)
        .crash(1, "before-commit")
        .start(2);
    for id in 0..4 {
        t.apply(2, id);
    }
    t.commit(2, 0, 4).drained();
    // keys k0: ids 0, 3 → last is 3; k1: 1; k2: 2.
    t.trace.state = Some(vec![("k0".into(), 3), ("k1".into(), 1), ("k2".into(), 2)]);
    assert!(check(&t.done(), Guarantee::EffectivelyOnce)
        .unwrap()
        .holds());
}

#[test]
fn an_appended_row_per_redelivery_is_a_state_mismatch_naming_the_key() {
    let mut t = T::new(SinkSemantics::Append, 1, 2);
    t.start(1)
        .apply(1, 0)
        .crash(1, "after-sink-write")
        .start(2)
        .apply(2, 0)
        .apply(2, 1)
        .commit(2, 0, 2)
        .drained();
    t.trace.state = Some(vec![("k0".into(), 0), ("k0".into(), 0), ("k1".into(), 1)]);
    let v = check(&t.done(), Guarantee::EffectivelyOnce).unwrap();
    assert_eq!(v.kinds(), vec![ViolationKind::StateMismatch]);
    assert_eq!(
        v.violations[0],
        Violation::StateMismatch {
            key: "k0".into(),
            expected: vec![0],
            actual: vec![0, 0]
        }
    );
    assert!(v.violations[0].to_string().contains("\"k0\""));
}

#[test]
fn the_read_committed_output_must_hold_each_input_exactly_once() {
    let mut t = T::new(SinkSemantics::OutputTopic, 1, 3);
    t.start(1)
        .crash(1, "after-commit-transaction")
        .start(2)
        .drained();
    t.trace.output = Some(vec![0, 0, 2]);
    let v = check(&t.done(), Guarantee::ExactlyOnceTransactional).unwrap();
    assert_eq!(
        v.kinds(),
        vec![ViolationKind::OutputLost, ViolationKind::OutputDuplicated]
    );
    assert!(matches!(&v.violations[0], Violation::OutputLost { msg } if msg.id == 1));
    assert!(
        matches!(&v.violations[1], Violation::OutputDuplicated { msg, count: 2, death: Some(_) } if msg.id == 0)
    );
    t.trace.output = Some(vec![2, 0, 1]);
    assert!(check(&t.done(), Guarantee::ExactlyOnceTransactional)
        .unwrap()
        .holds());
}

#[test]
fn a_commit_in_flight_while_another_member_committed_is_not_called_backwards() {
    // Incarnation 1 asks for offset 1 and is stopped before the call returns; incarnation 2
    // commits 3 meanwhile; incarnation 1's call returns afterwards. They raced: which one the
    // broker kept is for its reads to say, not the order the calls returned in.
    let mut t = T::new(SinkSemantics::Ledger, 1, 3);
    t.start(1).apply(1, 0).start(2);
    t.apply(2, 0).apply(2, 1).apply(2, 2).commit(2, 0, 3);
    t.commit_requested(1, 0, 1, 5).drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert!(
        !v.kinds().contains(&ViolationKind::CommitBackwards),
        "{v:?}"
    );
    // Requested after the other had returned: backwards.
    let mut t = T::new(SinkSemantics::Ledger, 1, 3);
    t.start(1).apply(1, 0).start(2);
    t.apply(2, 0).apply(2, 1).apply(2, 2).commit(2, 0, 3);
    t.apply(1, 1).commit_requested(1, 0, 1, 1).drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert!(v.kinds().contains(&ViolationKind::CommitBackwards), "{v:?}");
}

#[test]
fn a_commit_lower_than_an_earlier_one_goes_backwards() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 3);
    t.start(1)
        .apply(1, 0)
        .apply(1, 1)
        .apply(1, 2)
        .commit(1, 0, 3)
        .start(2)
        .commit(2, 0, 1)
        .drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert_eq!(v.kinds(), vec![ViolationKind::CommitBackwards]);
    assert!(
        matches!(&v.violations[0], Violation::CommitBackwards { partition: 0, from: 3, to: 1, commit } if commit.inc == 2)
    );
    // Read from the broker too.
    let mut t = T::new(SinkSemantics::Ledger, 1, 1);
    t.start(1).apply(1, 0);
    t.push(
        0,
        EventKind::BrokerCommitted {
            offsets: vec![(0, Some(1))],
        },
    );
    t.push(
        0,
        EventKind::BrokerCommitted {
            offsets: vec![(0, Some(0))],
        },
    );
    t.drained();
    assert_eq!(commit_backwards(&t.done()).len(), 1);
}

/// The CI trace of 2026-12-02, in small: the group coordinator is killed while the consumer
/// has committed 2; the read after its incarnation ends answers 1 (the new coordinator's log
/// had not caught up), and the next read shows 2 again, which nobody committed again.
fn stale_read_after_failover(fault: bool, recommit: bool, back_at: i64) -> Trace {
    let mut t = T::new(SinkSemantics::Ledger, 1, 4);
    t.start(1)
        .apply(1, 0)
        .commit(1, 0, 1)
        .apply(1, 1)
        .commit(1, 0, 2);
    t.observe(0, 2, 1);
    if fault {
        t.push(
            0,
            EventKind::BrokerFault {
                broker: 0,
                action: "kill".into(),
                role: Some("the group coordinator".into()),
            },
        );
    }
    t.push(
        0,
        EventKind::BrokerCommitted {
            offsets: vec![(0, Some(1))],
        },
    );
    t.start(2);
    if recommit {
        t.apply(2, 1).commit(2, 0, 2);
    }
    t.observe(0, back_at, 1);
    t.apply(2, 2)
        .commit(2, 0, 3)
        .apply(2, 3)
        .commit(2, 0, 4)
        .drained();
    t.done()
}

#[test]
fn a_stale_broker_read_after_a_broker_fault_is_not_a_commit_going_backwards() {
    assert!(commit_backwards(&stale_read_after_failover(true, false, 2)).is_empty());
    // Without a broker fault a read below what was held is the group going back.
    assert_eq!(
        commit_backwards(&stale_read_after_failover(false, false, 2)).len(),
        1
    );
    // Back at 2 because someone committed 2 again: the group had gone back.
    assert_eq!(
        commit_backwards(&stale_read_after_failover(true, true, 2)).len(),
        1
    );
    // Seen next at an offset it never held before: nothing says the read was stale.
    assert_eq!(
        commit_backwards(&stale_read_after_failover(true, false, 3)).len(),
        1
    );
}

#[test]
fn a_restart_given_messages_below_a_commit_the_broker_held_is_a_redelivery_beyond_the_window() {
    // Incarnation 1 processes 0..3 and commits 3; the broker is read holding 3 after it died.
    // Incarnation 2 is then given offsets 1 and 2 again: the commit was lost.
    let mut t = T::new(SinkSemantics::Ledger, 1, 4);
    t.start(1);
    for id in 0..3 {
        t.poll(1, id).apply(1, id);
    }
    t.commit(1, 0, 3).crash(1, "after-commit");
    t.push(
        0,
        EventKind::BrokerCommitted {
            offsets: vec![(0, Some(3))],
        },
    );
    t.start(2);
    for id in 1..4 {
        t.poll(2, id).apply(2, id);
    }
    t.drained();
    let trace = t.done();
    let found = redelivered_below_commit(&trace);
    assert_eq!(found.len(), 1);
    let Violation::RedeliveredBelowCommit {
        inc,
        msg,
        commit,
        count,
    } = &found[0]
    else {
        panic!("{found:?}")
    };
    assert_eq!((*inc, msg.offset, commit.offset, *count), (2, 1, 3, 2));
    assert_eq!(
        found[0].to_string(),
        "message 1 (partition 0, offset 1) was delivered again to incarnation 2 although offset 3 was found committed on the broker at 0.0 ms, before that incarnation started (2 message(s) below it delivered again): a commit was lost or went backwards"
    );
    for g in [Guarantee::AtLeastOnce, Guarantee::AtMostOnce] {
        assert!(check(&trace, g)
            .unwrap()
            .kinds()
            .contains(&ViolationKind::RedeliveredBelowCommit));
    }
    // Effectively-once judges the state, which redelivery into an idempotent sink keeps.
    assert!(!Guarantee::EffectivelyOnce
        .breaking_kinds()
        .contains(&ViolationKind::RedeliveredBelowCommit));
}

#[test]
fn redelivery_within_the_uncommitted_window_and_commits_seen_after_the_start_are_not_judged() {
    // Committed 1 before incarnation 2 started: offsets 1 and 2 again are within the window.
    let mut t = T::new(SinkSemantics::Ledger, 1, 3);
    t.start(1).poll(1, 0).apply(1, 0).poll(1, 1).apply(1, 1);
    t.observe(0, 1, 1).crash(1, "p").start(2);
    // A read that shows a higher commit *after* incarnation 2 started does not bind it: it
    // may have started from the earlier position legitimately.
    t.observe(0, 3, 1);
    t.poll(2, 1).apply(2, 1).poll(2, 2).apply(2, 2).drained();
    assert!(redelivered_below_commit(&t.done()).is_empty());
}

#[test]
fn committing_past_a_message_not_yet_applied_is_committed_too_far_once_per_message() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 2);
    t.start(1)
        .commit(1, 0, 1)
        .apply(1, 0)
        .commit(1, 0, 2)
        .commit(1, 0, 2)
        .apply(1, 1)
        .drained();
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert_eq!(v.kinds(), vec![ViolationKind::CommittedTooFar]);
    assert_eq!(v.violations.len(), 2, "{:#?}", v.violations);
    assert!(
        matches!(&v.violations[0], Violation::CommittedTooFar { unprocessed, count: 1, .. } if unprocessed.id == 0)
    );
    // At-most-once commits first by design: not a violation there.
    assert!(check(&t.done(), Guarantee::AtMostOnce).unwrap().holds());
}

#[test]
fn transactional_commits_are_judged_on_the_output_not_on_processing_order() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 1);
    t.start(1);
    t.push(
        1,
        EventKind::Committed {
            offsets: vec![PartitionOffset {
                partition: 0,
                offset: 1,
            }],
            mode: CommitMode::Transaction,
            requested_at_us: 1,
        },
    );
    t.apply(1, 0).drained();
    assert!(committed_too_far(&t.done()).is_empty());
}

#[test]
fn a_group_that_does_not_drain_is_stuck() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 1);
    t.start(1).apply(1, 0);
    t.push(
        0,
        EventKind::Stuck {
            lag: vec![(0, 1)],
            waited_ms: 5000,
        },
    );
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    assert_eq!(v.kinds(), vec![ViolationKind::Stuck]);
    let text = v.violations[0].to_string();
    assert!(text.contains("partition 0: 1"));
    // An effect and no commit of the group, ever: the hint names the likely cause.
    assert!(
        text.contains(
            "1 effect(s) were applied but the broker never saw a commit of the case's group"
        ),
        "{text}"
    );
}

#[test]
fn a_stuck_group_that_committed_gets_no_other_group_hint() {
    let mut t = T::new(SinkSemantics::Ledger, 1, 2);
    t.start(1).apply(1, 0);
    t.push(
        0,
        EventKind::BrokerCommitted {
            offsets: vec![(0, Some(1))],
        },
    );
    t.push(
        0,
        EventKind::Stuck {
            lag: vec![(0, 1)],
            waited_ms: 5000,
        },
    );
    let v = check(&t.done(), Guarantee::AtLeastOnce).unwrap();
    let text = v.violations[0].to_string();
    assert!(!text.contains("never saw a commit"), "{text}");
}

#[test]
fn malformed_traces_are_errors_not_verdicts() {
    // Out of time order.
    let mut t = T::new(SinkSemantics::Ledger, 1, 1);
    t.start(1).apply(1, 0);
    let mut bad = t.done();
    bad.events.swap(0, 2);
    assert!(matches!(
        check(&bad, Guarantee::AtLeastOnce),
        Err(crate::Error::MalformedTrace(_))
    ));
    // An effect of a message at an offset the broker did not give it.
    let mut bad = t.done();
    bad.events.push(Event {
        at_us: 99,
        inc: 1,
        kind: EventKind::Applied {
            msg: MessageRef {
                id: 0,
                partition: 0,
                offset: 7,
            },
        },
    });
    assert!(matches!(
        check(&bad, Guarantee::AtLeastOnce),
        Err(crate::Error::MalformedTrace(_))
    ));
    // An event of an incarnation that never started.
    let mut bad = t.done();
    bad.events.push(Event {
        at_us: 99,
        inc: 9,
        kind: EventKind::Crashed {
            point: "x".into(),
            hit: 1,
        },
    });
    assert!(matches!(
        check(&bad, Guarantee::AtLeastOnce),
        Err(crate::Error::MalformedTrace(_))
    ));
    // A stateful sink whose state was never read back.
    let mut t = T::new(SinkSemantics::Upsert, 1, 1);
    t.trace.state = None;
    assert!(matches!(
        check(&t.done(), Guarantee::EffectivelyOnce),
        Err(crate::Error::MalformedTrace(_))
    ));
    // Another format version.
    let mut bad = T::new(SinkSemantics::Ledger, 1, 1).done();
    bad.version = 99;
    assert!(check(&bad, Guarantee::AtLeastOnce).is_err());
}

#[test]
fn a_guarantee_is_refused_with_a_sink_that_cannot_judge_it() {
    let t = T::new(SinkSemantics::Ledger, 1, 1).done();
    assert!(matches!(
        check(&t, Guarantee::EffectivelyOnce),
        Err(crate::Error::Config(_))
    ));
    assert!(matches!(
        check(&t, Guarantee::ExactlyOnceTransactional),
        Err(crate::Error::Config(_))
    ));
}

// ---- property tests against brute-force references ----

#[derive(Debug, Clone)]
enum Op {
    Apply(u64),
    Poll(u64),
    /// The op's incarnation starts here (again: only its first start counts).
    Start,
    /// Partition, offset, requested this many events before it returned.
    Commit(i32, i64, u64),
    Observe(i32, i64, u64),
    Crash,
    /// A broker fault (after which a broker read may be stale).
    BrokerFault,
}

fn synthetic() -> impl Strategy<Value = Trace> {
    (1i32..=3, 1u64..=8, any::<bool>())
        .prop_flat_map(|(partitions, messages, upsert)| {
            let op = prop_oneof![
                (0..messages).prop_map(Op::Apply),
                (0..messages).prop_map(Op::Poll),
                Just(Op::Start),
                (
                    0..partitions,
                    0i64..=4,
                    prop_oneof![3 => Just(0u64), 1 => 1u64..=4]
                )
                    .prop_map(|(p, o, b)| Op::Commit(p, o, b)),
                (0..partitions, 0i64..=4, 1u64..=3).prop_map(|(p, o, b)| Op::Observe(p, o, b)),
                Just(Op::Crash),
                Just(Op::BrokerFault),
            ];
            let state = proptest::collection::vec((0u64..3, 0..messages), 0..6);
            (
                Just(partitions),
                Just(messages),
                Just(upsert),
                proptest::collection::vec((1u32..=3, op), 0..24),
                state,
            )
        })
        .prop_map(|(partitions, messages, upsert, ops, state)| {
            let sink = if upsert {
                SinkSemantics::Upsert
            } else {
                SinkSemantics::Append
            };
            let mut t = T::new(sink, partitions, messages);
            t.start(1);
            for (inc, op) in ops {
                match op {
                    Op::Apply(id) => t.apply(inc, id),
                    Op::Poll(id) => t.poll(inc, id),
                    Op::Start => t.start(inc),
                    Op::Commit(p, o, back) => t.commit_requested(inc, p, o, back),
                    Op::Observe(p, o, back) => t.observe(p, o, back),
                    Op::Crash => t.crash(inc, "p"),
                    Op::BrokerFault => t.push(
                        0,
                        EventKind::BrokerFault {
                            broker: 0,
                            action: "kill".into(),
                            role: None,
                        },
                    ),
                };
            }
            // Every incarnation starts (validation): those the ops never started, at the end.
            t.start(2).start(3);
            t.drained();
            t.trace.state = Some(
                state
                    .into_iter()
                    .map(|(k, id)| (format!("k{k}"), id))
                    .collect(),
            );
            t.done()
        })
}

fn ref_counts(t: &Trace, id: u64) -> usize {
    t.events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Applied { msg } if msg.id == id))
        .count()
}

fn ref_partition(t: &Trace, id: u64) -> i32 {
    ref_produced(t)
        .into_iter()
        .find(|(m, _)| m.id == id)
        .map_or(-1, |(m, _)| m.partition)
}

fn ref_produced(t: &Trace) -> Vec<(MessageRef, String)> {
    t.events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Produced { msg, key } => Some((*msg, key.clone())),
            _ => None,
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lost_and_duplicated_agree_with_counting_by_hand(t in synthetic()) {
        let lost: Vec<u64> = lost(&t).iter().filter_map(|v| v.message()).map(|m| m.id).collect();
        let dup: Vec<u64> = duplicated(&t).iter().filter_map(|v| v.message()).map(|m| m.id).collect();
        let mut ref_lost = vec![];
        let mut ref_dup = vec![];
        for (m, _) in ref_produced(&t) {
            match ref_counts(&t, m.id) {
                0 => ref_lost.push(m.id),
                1 => {}
                _ => ref_dup.push(m.id),
            }
        }
        prop_assert_eq!(lost, ref_lost);
        prop_assert_eq!(dup, ref_dup);
    }

    #[test]
    fn state_mismatch_agrees_with_replaying_every_input_once(t in synthetic()) {
        let produced = ref_produced(&t);
        // S* by brute force: replay inputs in (partition, offset) order into a map or a list.
        let mut order = produced.clone();
        order.sort_by_key(|(m, _)| (m.partition, m.offset));
        let mut expected: Vec<(String, u64)> = vec![];
        for (m, k) in &order {
            if t.case.sink == SinkSemantics::Upsert {
                expected.retain(|(key, _)| key != k);
            }
            expected.push((k.clone(), m.id));
        }
        let mut keys: Vec<String> = expected.iter().map(|(k, _)| k.clone()).chain(t.state.clone().unwrap().into_iter().map(|(k, _)| k)).collect();
        keys.sort();
        keys.dedup();
        let ids = |rows: &[(String, u64)], k: &str| { let mut v: Vec<u64> = rows.iter().filter(|(key, _)| key == k).map(|(_, i)| *i).collect(); v.sort(); v };
        let ref_bad: Vec<String> = keys.into_iter().filter(|k| ids(&expected, k) != ids(t.state.as_ref().unwrap(), k)).collect();
        let got: Vec<String> = state_mismatch(&t).unwrap().into_iter().map(|v| match v { Violation::StateMismatch { key, .. } => key, _ => unreachable!() }).collect();
        prop_assert_eq!(got, ref_bad);
    }

    #[test]
    fn commit_checks_agree_with_scanning_every_earlier_event(t in synthetic()) {
        // (index, partition, offset, latest time the commit can have been issued, seen on the broker?)
        let commits: Vec<(usize, i32, i64, u64, bool)> = t.events.iter().enumerate().filter_map(|(i, e)| match &e.kind {
            EventKind::Committed { offsets, requested_at_us, .. } => Some((i, offsets[0].partition, offsets[0].offset, *requested_at_us, false)),
            EventKind::BrokerCommitObserved { offsets, .. } => Some((i, offsets[0].partition, offsets[0].offset, e.at_us, true)),
            _ => None,
        }).collect();
        // Backwards: within the consumers' reports, and within the broker reads, some commit
        // on the partition that had returned by the time this one was issued was higher; a
        // drop both show is reported once.
        // A broker read below is not a drop when it was stale: a broker fault before it, and a
        // later read back at an offset the partition held before it (a reported commit or a
        // read) that no reported commit returned after it.
        let stale = |i: usize, p: i32, high: i64| -> bool {
            let fault = t.events[..i].iter().any(|e| matches!(e.kind, EventKind::BrokerFault { .. }));
            let at = |j: usize| commits.iter().find(|c| c.0 == j).filter(|c| c.1 == p).map(|c| c.2);
            fault && commits.iter().filter(|c| c.0 > i && c.4 && c.1 == p && c.2 >= high).any(|later| {
                let w = later.2;
                (0..=i).any(|j| at(j) == Some(w)) && !commits.iter().any(|c| c.0 > i && !c.4 && c.1 == p && c.2 == w)
            })
        };
        let drops = |broker: bool| -> Vec<(i32, i64, i64)> {
            let seq: Vec<_> = commits.iter().filter(|c| c.4 == broker).collect();
            seq.iter().filter_map(|(i, p, o, issued, _)| {
                let high = seq.iter().filter(|(j, q, ..)| j < i && q == p && t.events[*j].at_us <= *issued).map(|c| c.2).max()?;
                (high > *o && !(broker && stale(*i, *p, high))).then_some((*p, high, *o))
            }).collect()
        };
        let reported = drops(false);
        let mut ref_back = reported.clone();
        ref_back.extend(drops(true).into_iter().filter(|d| !reported.contains(d)));
        let mut got_back: Vec<(i32, i64, i64)> = commit_backwards(&t).into_iter().map(|v| match v {
            Violation::CommitBackwards { partition, from, to, .. } => (partition, from, to),
            _ => unreachable!(),
        }).collect();
        got_back.sort();
        ref_back.sort();
        prop_assert_eq!(got_back, ref_back);
        // Too far: the first unprocessed message below each commit, distinct per (partition, message).
        let mut ref_far: Vec<(i32, u64)> = vec![];
        for (_, p, o, at, _) in &commits {
            let mut below: Vec<MessageRef> = ref_produced(&t).into_iter().map(|(m, _)| m)
                .filter(|m| m.partition == *p && m.offset < *o)
                .filter(|m| !t.events.iter().any(|e| e.at_us <= *at && matches!(&e.kind, EventKind::Applied { msg } if msg.id == m.id)))
                .collect();
            below.sort_by_key(|m| m.offset);
            if let Some(first) = below.first() {
                if !ref_far.contains(&(*p, first.id)) {
                    ref_far.push((*p, first.id));
                }
            }
        }
        let got: Vec<(i32, u64)> = committed_too_far(&t).into_iter().map(|v| match v { Violation::CommittedTooFar { partition, unprocessed, .. } => (partition, unprocessed.id), _ => unreachable!() }).collect();
        prop_assert_eq!(got, ref_far);
    }

    #[test]
    fn redelivery_below_commit_agrees_with_scanning_every_earlier_event(t in synthetic()) {
        // For each poll: the incarnation's first start before it; the highest broker-seen
        // commit of the partition before that start; flagged when the poll is below it. First
        // per (incarnation, partition), with the count.
        let ev = &t.events;
        let mut want: Vec<(u32, u64, i64, usize)> = vec![];
        for (i, e) in ev.iter().enumerate() {
            let EventKind::Polled { msg } = &e.kind else { continue };
            let Some(s) = ev.iter().position(|x| x.inc == e.inc && matches!(x.kind, EventKind::Started { .. })) else { continue };
            if s > i {
                continue;
            }
            let held = ev[..s].iter().filter_map(|x| match &x.kind {
                EventKind::BrokerCommitObserved { offsets, .. } if offsets[0].partition == msg.partition => Some(offsets[0].offset),
                _ => None,
            }).max();
            if held.is_some_and(|h| msg.offset < h) {
                match want.iter_mut().find(|w| w.0 == e.inc && ref_partition(&t, w.1) == msg.partition) {
                    Some(w) => w.3 += 1,
                    None => want.push((e.inc, msg.id, held.unwrap_or_default(), 1)),
                }
            }
        }
        let got: Vec<(u32, u64, i64, usize)> = redelivered_below_commit(&t).into_iter().map(|v| match v {
            Violation::RedeliveredBelowCommit { inc, msg, commit, count } => (inc, msg.id, commit.offset, count),
            _ => unreachable!(),
        }).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn each_guarantee_holds_exactly_when_none_of_its_breaking_anomalies_occur(t in synthetic()) {
        for g in [Guarantee::AtLeastOnce, Guarantee::AtMostOnce, Guarantee::EffectivelyOnce] {
            let v = check(&t, g).unwrap();
            let any = g.breaking_kinds().iter().any(|k| match k {
                ViolationKind::Lost => !lost(&t).is_empty(),
                ViolationKind::Duplicated => !duplicated(&t).is_empty(),
                ViolationKind::StateMismatch => !state_mismatch(&t).unwrap().is_empty(),
                ViolationKind::CommitBackwards => !commit_backwards(&t).is_empty(),
                ViolationKind::CommittedTooFar => !committed_too_far(&t).is_empty(),
                ViolationKind::RedeliveredBelowCommit => !redelivered_below_commit(&t).is_empty(),
                ViolationKind::Wedged => !wedged(&t).is_empty(),
                ViolationKind::Stuck => !stuck(&t).is_empty(),
                _ => false,
            });
            prop_assert_eq!(v.holds(), !any);
            // Most severe first.
            prop_assert!(v.violations.windows(2).all(|w| w[0].kind() <= w[1].kind()));
        }
    }

    #[test]
    fn traces_survive_a_json_round_trip(t in synthetic()) {
        let back: Trace = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        prop_assert_eq!(back, t);
    }
}

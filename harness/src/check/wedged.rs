//! Liveness of a consumer that stays alive: `wedged`. Pure, like every checker.

use std::collections::{BTreeSet, HashMap};

use super::violation::{FaultWitness, Violation};
use crate::trace::{EventKind, Incarnation, RebalancePhase, Trace};

/// A broker fault this close before (or during) an idle stretch excuses it: the client may
/// still be finding the partition leader or the coordinator again.
pub const BROKER_SETTLE_US: u64 = 10_000_000;

/// A consumer that stays alive but stops consuming — "wedged after an outage", the incident
/// where a consumer restarts its runner forever, or parks a partition and never resumes it,
/// while its health checks pass. The witness is an incarnation the harness had to stop
/// ([`EventKind::IdleStopped`]) because it did nothing for the idle timeout
/// (`KAFKA_HARNESS_IDLE_MS`) while a partition it owned held records past its position:
/// past everything it had polled of that partition, and past the group's committed offset as
/// the broker was last read. In production it would have waited forever; in a case the drain
/// that follows starts fresh incarnations, which hides it from every other checker.
///
/// Ownership is the incarnation's own rebalance events (assign adds, revoke removes); an
/// incarnation that recorded none is not judged, nor one whose worker function had already
/// returned (it was closing its clients, not consuming) or that had crashed or been killed
/// (the harness's reads can keep it from noticing a death at once), nor one stopped while inside a
/// blocking client call (waiting on the cluster, see [`EventKind::ClientCallStarted`]). An
/// idle stretch that a broker fault
/// overlaps, or follows within [`BROKER_SETTLE_US`], is not judged either. One violation per
/// stop, naming the first partition with records waiting, and the last fault the incarnation
/// went through before it went idle.
///
/// ```
/// use kafka_harness::check::wedged;
/// use kafka_harness::trace::*;
/// use kafka_harness::BackendKind;
/// let mut t = Trace::new(CaseInfo { topic: "t".into(), group: "g".into(), partitions: 1,
///     backend: BackendKind::Embedded, sink: SinkSemantics::Ledger });
/// let ev = |at_us, inc, kind| Event { at_us, inc, kind };
/// for offset in 0..3 {
///     let msg = MessageRef { id: offset as u64, partition: 0, offset };
///     t.events.push(ev(1, 0, EventKind::Produced { msg, key: "k0".into() }));
/// }
/// t.events.push(ev(2, 1, EventKind::Started { primary: true, faults: vec![] }));
/// t.events.push(ev(3, 1, EventKind::Rebalanced { phase: RebalancePhase::Assign, partitions: vec![0] }));
/// t.events.push(ev(4, 1, EventKind::Polled { msg: MessageRef { id: 0, partition: 0, offset: 0 } }));
/// t.events.push(ev(2_600_000, 0, EventKind::IdleStopped { worker: 1, idle_ms: 2_500 }));
/// let v = wedged(&t);
/// assert_eq!(v.len(), 1);
/// assert!(v[0].to_string().contains("records waiting from offset 1 (2 in all"));
/// ```
pub fn wedged(trace: &Trace) -> Vec<Violation> {
    let mut end: HashMap<i32, i64> = HashMap::new();
    let mut owned: HashMap<Incarnation, BTreeSet<i32>> = HashMap::new();
    let mut polled_next: HashMap<(Incarnation, i32), i64> = HashMap::new();
    let mut committed: HashMap<i32, i64> = HashMap::new();
    let mut broker_faults: Vec<u64> = Vec::new();
    let mut last_fault: HashMap<Incarnation, FaultWitness> = HashMap::new();
    let mut group_fault: Option<FaultWitness> = None;
    let mut returned: BTreeSet<Incarnation> = BTreeSet::new();
    let mut in_call: HashMap<Incarnation, usize> = HashMap::new();
    let mut out = Vec::new();
    for e in &trace.events {
        match &e.kind {
            EventKind::Produced { msg, .. } => {
                let next = end.entry(msg.partition).or_insert(0);
                *next = (*next).max(msg.offset + 1);
            }
            EventKind::Rebalanced { phase, partitions } => {
                let mine = owned.entry(e.inc).or_default();
                for p in partitions {
                    match phase {
                        RebalancePhase::Assign => mine.insert(*p),
                        RebalancePhase::Revoke => mine.remove(p),
                    };
                }
            }
            EventKind::Polled { msg } => {
                let next = polled_next.entry((e.inc, msg.partition)).or_insert(0);
                *next = (*next).max(msg.offset + 1);
            }
            EventKind::BrokerCommitObserved { offsets, .. } => {
                for o in offsets {
                    committed.insert(o.partition, o.offset);
                }
            }
            EventKind::BrokerCommitted { offsets } => {
                for (p, o) in offsets {
                    if let Some(o) = o {
                        committed.insert(*p, *o);
                    }
                }
            }
            EventKind::SinkFailed { write, .. } => {
                let what = format!("its sink outage (failed write #{write})");
                last_fault.insert(e.inc, FaultWitness::new(what, e.at_us));
            }
            EventKind::Resumed { paused_ms } => {
                let what = format!("its pause of {paused_ms} ms");
                last_fault.insert(e.inc, FaultWitness::new(what, e.at_us));
            }
            EventKind::RebalanceStarted { .. } => {
                group_fault = Some(FaultWitness::new("a rebalance".into(), e.at_us));
            }
            EventKind::ClientCallStarted { .. } => *in_call.entry(e.inc).or_default() += 1,
            EventKind::ClientCallEnded { .. } => {
                let n = in_call.entry(e.inc).or_default();
                *n = n.saturating_sub(1);
            }
            // Returned, crashed or killed: a worker that is not consuming any more, or not
            // alive, cannot be wedged.
            EventKind::Exited { .. }
            | EventKind::Crashed { .. }
            | EventKind::CrashedAfter { .. }
            | EventKind::Killed { .. } => {
                returned.insert(e.inc);
            }
            EventKind::BrokerFault { .. } => broker_faults.push(e.at_us),
            EventKind::LinkFault { action, role, .. } if action == "heal" => {
                let what = format!("a network fault on its links to {role}");
                group_fault = Some(FaultWitness::new(what, e.at_us));
            }
            EventKind::IdleStopped { worker, idle_ms } => {
                // An incarnation with no rebalance events: ownership unknown.
                if !owned.contains_key(worker)
                    || returned.contains(worker)
                    || in_call.get(worker).is_some_and(|n| *n > 0)
                {
                    continue;
                }
                let since_us = e.at_us.saturating_sub(idle_ms.saturating_mul(1000));
                let settle_from = since_us.saturating_sub(BROKER_SETTLE_US);
                if broker_faults.iter().any(|&at| at >= settle_from) {
                    continue;
                }
                let mut first = None;
                let mut waiting = 0;
                for p in owned.get(worker).into_iter().flatten() {
                    let position = polled_next
                        .get(&(*worker, *p))
                        .copied()
                        .unwrap_or(0)
                        .max(committed.get(p).copied().unwrap_or(0));
                    let log_end = end.get(p).copied().unwrap_or(0);
                    if log_end > position {
                        waiting += log_end - position;
                        first.get_or_insert((*p, position));
                    }
                }
                let Some((partition, next_offset)) = first else {
                    continue;
                };
                let after = [last_fault.get(worker), group_fault.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter(|f| f.at_us <= since_us)
                    .max_by_key(|f| f.at_us)
                    .cloned();
                out.push(Violation::Wedged {
                    inc: *worker,
                    partition,
                    next_offset,
                    waiting: waiting as u64,
                    idle_ms: *idle_ms,
                    since_us,
                    after,
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::BackendKind;
    use crate::trace::{CaseInfo, Event, MessageRef, PartitionOffset, SinkSemantics};

    fn trace(partitions: i32, per_partition: i64) -> Trace {
        let mut t = Trace::new(CaseInfo {
            topic: "t".into(),
            group: "g".into(),
            partitions,
            backend: BackendKind::Embedded,
            sink: SinkSemantics::Ledger,
        });
        let mut id = 0;
        for p in 0..partitions {
            for offset in 0..per_partition {
                let msg = MessageRef {
                    id,
                    partition: p,
                    offset,
                };
                id += 1;
                push(
                    &mut t,
                    1,
                    0,
                    EventKind::Produced {
                        msg,
                        key: "k".into(),
                    },
                );
            }
        }
        t
    }

    fn push(t: &mut Trace, at_us: u64, inc: Incarnation, kind: EventKind) {
        t.events.push(Event { at_us, inc, kind });
    }

    fn msg(t: &Trace, partition: i32, offset: i64) -> MessageRef {
        *t.produced()
            .map(|(m, _)| m)
            .find(|m| m.partition == partition && m.offset == offset)
            .expect("produced")
    }

    fn rebalanced(phase: RebalancePhase, partitions: &[i32]) -> EventKind {
        EventKind::Rebalanced {
            phase,
            partitions: partitions.to_vec(),
        }
    }

    const IDLE: EventKind = EventKind::IdleStopped {
        worker: 1,
        idle_ms: 2_500,
    };

    #[test]
    fn a_live_consumer_that_stops_polling_after_an_outage_is_wedged_with_its_words() {
        let mut t = trace(2, 4);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0, 1]));
        for o in 0..4 {
            let m = msg(&t, 0, o);
            push(&mut t, 20, 1, EventKind::Polled { msg: m });
        }
        let m = msg(&t, 1, 0);
        push(&mut t, 30, 1, EventKind::Polled { msg: m });
        push(
            &mut t,
            40,
            1,
            EventKind::SinkFailed {
                msg: m,
                write: 5,
                failure: crate::schedule::SinkFailure::Transient,
            },
        );
        push(&mut t, 3_000_000, 0, IDLE);
        let v = wedged(&t);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(
            v[0].to_string(),
            "incarnation 1 stayed alive but stopped consuming: it did nothing for 2500 ms (from 500.0 ms) while partition 1 had records waiting from offset 1 (3 in all on the partitions it owned), after its sink outage (failed write #5) at 0.0 ms — the harness stopped it; in production it would wait forever"
        );
    }

    #[test]
    fn a_consumer_that_never_resumes_after_a_network_cut_healed_is_wedged_after_it() {
        let mut t = trace(1, 3);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let m = msg(&t, 0, 0);
        push(&mut t, 20, 1, EventKind::Polled { msg: m });
        for (at, action) in [(30, "cut"), (2_000_030, "heal")] {
            let kind = EventKind::LinkFault {
                broker: None,
                action: action.into(),
                role: "every broker".into(),
            };
            push(&mut t, at, 0, kind);
        }
        push(&mut t, 17_000_000, 0, IDLE);
        let v = wedged(&t);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].to_string()
                .contains("after a network fault on its links to every broker at 2000.0 ms"),
            "{}",
            v[0]
        );
    }

    #[test]
    fn caught_up_revoked_committed_past_or_unowned_partitions_are_not_wedged() {
        // Caught up by its own polls.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        for o in 0..2 {
            let m = msg(&t, 0, o);
            push(&mut t, 20, 1, EventKind::Polled { msg: m });
        }
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // Another member committed past the records: nothing is waiting for this one.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let offsets = vec![PartitionOffset {
            partition: 0,
            offset: 2,
        }];
        push(
            &mut t,
            20,
            0,
            EventKind::BrokerCommitObserved {
                offsets,
                since_us: 10,
            },
        );
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // Revoked before it went idle.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        push(&mut t, 20, 1, rebalanced(RebalancePhase::Revoke, &[0]));
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // Its worker function had returned: it was closing its clients, not consuming.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let exit = crate::trace::Exit::Failed {
            error: "Transaction error: Failed to add offsets to transaction".into(),
        };
        push(&mut t, 20, 1, EventKind::Exited { exit });
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // It had crashed: the harness, blocked in a committed-offset read that a pending
        // transactional commit holds up, noticed the death only after the idle timeout (a
        // false alarm seen under generated faults: crash at `before-commit-transaction`).
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let crashed = EventKind::Crashed {
            point: "before-commit-transaction".into(),
            hit: 1,
        };
        push(&mut t, 20, 1, crashed);
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // Stopped while waiting inside a client call: the cluster owed it an answer.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let call = "send_offsets_to_transaction".to_string();
        push(&mut t, 20, 1, EventKind::ClientCallStarted { call });
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // No rebalance events: ownership unknown, not judged.
        let mut t = trace(1, 2);
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
        // A broker restart just before the idle stretch excuses it.
        let mut t = trace(1, 2);
        push(&mut t, 10, 1, rebalanced(RebalancePhase::Assign, &[0]));
        let restart = EventKind::BrokerFault {
            broker: 0,
            action: "restart".into(),
            role: None,
        };
        push(&mut t, 20, 0, restart);
        push(&mut t, 3_000_000, 0, IDLE);
        assert!(wedged(&t).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(i32),
        Revoke(i32),
        Poll(i32, i64),
        Commit(i32, i64),
        Idle(u64),
        Exit,
        Crash,
        CallStart,
        CallEnd,
    }

    fn synthetic() -> impl Strategy<Value = Trace> {
        let op = prop_oneof![
            3 => (0..2i32).prop_map(Op::Assign),
            3 => (0..2i32).prop_map(Op::Revoke),
            3 => (0..2i32, 0..4i64).prop_map(|(p, o)| Op::Poll(p, o)),
            3 => (0..2i32, 0..5i64).prop_map(|(p, o)| Op::Commit(p, o)),
            3 => (1..4u64).prop_map(Op::Idle),
            // Rarer: each makes the stops after it unjudged.
            1 => Just(Op::Exit),
            1 => Just(Op::Crash),
            1 => Just(Op::CallStart),
            2 => Just(Op::CallEnd),
        ];
        proptest::collection::vec((1..=2u32, op), 0..16).prop_map(|ops| {
            let mut t = trace(2, 4);
            let mut now = 10;
            for (inc, op) in ops {
                now += 1_000_000;
                let kind = match op {
                    Op::Assign(p) => rebalanced(RebalancePhase::Assign, &[p]),
                    Op::Revoke(p) => rebalanced(RebalancePhase::Revoke, &[p]),
                    Op::Poll(p, o) => EventKind::Polled { msg: msg(&t, p, o) },
                    Op::Exit => EventKind::Exited {
                        exit: crate::trace::Exit::Returned,
                    },
                    Op::Crash => EventKind::Crashed {
                        point: "before-commit-transaction".into(),
                        hit: 1,
                    },
                    Op::CallStart => EventKind::ClientCallStarted {
                        call: "commit_transaction".into(),
                    },
                    Op::CallEnd => EventKind::ClientCallEnded {
                        call: "commit_transaction".into(),
                        ms: 1,
                        error: None,
                    },
                    Op::Commit(p, o) => {
                        let offsets = vec![PartitionOffset {
                            partition: p,
                            offset: o,
                        }];
                        push(
                            &mut t,
                            now,
                            0,
                            EventKind::BrokerCommitObserved {
                                offsets,
                                since_us: now - 1,
                            },
                        );
                        continue;
                    }
                    Op::Idle(s) => {
                        let stop = EventKind::IdleStopped {
                            worker: inc,
                            idle_ms: s * 1000,
                        };
                        push(&mut t, now, 0, stop);
                        continue;
                    }
                };
                push(&mut t, now, inc, kind);
            }
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn wedged_agrees_with_scanning_every_earlier_event(t in synthetic()) {
            // For every idle stop: replay the worker's assigns and revokes before it; for each
            // partition it then owned (in order), its position is the highest of one past its
            // polls and the last broker read; records past the position are waiting. A worker
            // that had returned or crashed before it was stopped is not judged, nor one inside a client
            // call (more starts than ends before the stop, an end without a start counting
            // for nothing).
            let ev = &t.events;
            let mut want = vec![];
            for (i, e) in ev.iter().enumerate() {
                let EventKind::IdleStopped { worker, .. } = e.kind else { continue };
                let before = &ev[..i];
                let mine: Vec<&Event> = before.iter().filter(|x| x.inc == worker).collect();
                if !mine.iter().any(|x| matches!(x.kind, EventKind::Rebalanced { .. }))
                    || mine.iter().any(|x| matches!(
                        x.kind,
                        EventKind::Exited { .. }
                            | EventKind::Crashed { .. }
                            | EventKind::CrashedAfter { .. }
                            | EventKind::Killed { .. }
                    ))
                    || mine.iter().fold(0usize, |open, x| match x.kind {
                        EventKind::ClientCallStarted { .. } => open + 1,
                        EventKind::ClientCallEnded { .. } => open.saturating_sub(1),
                        _ => open,
                    }) > 0
                {
                    continue;
                }
                let mut waiting = 0;
                let mut first = None;
                for p in 0..2 {
                    let last = mine.iter().rev().find_map(|x| match &x.kind {
                        EventKind::Rebalanced { phase, partitions } if partitions.contains(&p) => Some(*phase),
                        _ => None,
                    });
                    if last != Some(RebalancePhase::Assign) {
                        continue;
                    }
                    let polled = mine.iter().filter_map(|x| match &x.kind {
                        EventKind::Polled { msg } if msg.partition == p => Some(msg.offset + 1),
                        _ => None,
                    }).max().unwrap_or(0);
                    let read = before.iter().rev().find_map(|x| match &x.kind {
                        EventKind::BrokerCommitObserved { offsets, .. } if offsets[0].partition == p => Some(offsets[0].offset),
                        _ => None,
                    }).unwrap_or(0);
                    let position = polled.max(read);
                    if 4 > position {
                        waiting += 4 - position;
                        first.get_or_insert((p, position));
                    }
                }
                if let Some((p, o)) = first {
                    want.push((worker, p, o, waiting as u64));
                }
            }
            let got: Vec<(Incarnation, i32, i64, u64)> = wedged(&t).into_iter().map(|v| match v {
                Violation::Wedged { inc, partition, next_offset, waiting, .. } => (inc, partition, next_offset, waiting),
                _ => unreachable!(),
            }).collect();
            prop_assert_eq!(got, want);
        }
    }
}

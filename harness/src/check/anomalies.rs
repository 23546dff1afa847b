//! One function per anomaly. Each reads only the trace.

use std::collections::{BTreeMap, HashMap};

use super::violation::{CommitWitness, DeathWitness, Violation};
use crate::trace::{
    CommitMode, Event, EventKind, Exit, Incarnation, KillReason, MessageRef, PartitionOffset,
    SinkSemantics, Trace, TRACE_VERSION,
};
use crate::{Error, Result};

/// A trace the harness itself got wrong: wrong version, events out of time order, an effect
/// of a message whose id the broker placed elsewhere, an event of a never-started incarnation.
pub fn validate(trace: &Trace) -> Result<()> {
    let bad = |m: String| Err(Error::MalformedTrace(m));
    if trace.version != TRACE_VERSION {
        return bad(format!(
            "trace version {} (expected {TRACE_VERSION})",
            trace.version
        ));
    }
    if trace.events.windows(2).any(|w| w[0].at_us > w[1].at_us) {
        return bad("events are not in time order".into());
    }
    let produced: HashMap<u64, MessageRef> = trace.produced().map(|(m, _)| (m.id, *m)).collect();
    let started: std::collections::HashSet<Incarnation> = trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Started { .. }))
        .map(|e| e.inc)
        .collect();
    for e in &trace.events {
        if e.inc != 0 && !started.contains(&e.inc) && !matches!(e.kind, EventKind::Applied { .. }) {
            return bad(format!(
                "event at {} µs belongs to incarnation {}, which never started",
                e.at_us, e.inc
            ));
        }
        if let EventKind::Applied { msg } | EventKind::Polled { msg } = &e.kind {
            if let Some(p) = produced.get(&msg.id) {
                if p != msg {
                    return bad(format!(
                        "message {} was produced at {p} but seen as {msg}",
                        msg.id
                    ));
                }
            }
        }
    }
    match trace.case.sink {
        SinkSemantics::Upsert | SinkSemantics::Append if trace.state.is_none() => {
            bad("the sink's final state was not read back".into())
        }
        SinkSemantics::OutputTopic if trace.output.is_none() => {
            bad("the output topic was not read back".into())
        }
        _ => Ok(()),
    }
}

fn counts(trace: &Trace) -> HashMap<u64, Vec<&Event>> {
    let mut c: HashMap<u64, Vec<&Event>> = HashMap::new();
    for (e, m) in trace.applied() {
        c.entry(m.id).or_default().push(e);
    }
    c
}

/// How incarnation `inc` died after `after_us`, if it did.
fn death_of(trace: &Trace, inc: Incarnation, after_us: u64) -> Option<DeathWitness> {
    trace
        .events
        .iter()
        .filter(|e| e.inc == inc && e.at_us >= after_us)
        .find_map(|e| {
            let how = match &e.kind {
                EventKind::Crashed { point, hit } => format!("crashed at `{point}` hit #{hit}"),
                EventKind::CrashedAfter { after, point, hit } => {
                    format!("crashed at `{point}` hit #{hit} after `{after}`")
                }
                EventKind::Killed {
                    reason: KillReason::AfterEffects { effects, observed },
                } => {
                    format!(
                        "was killed by the harness after {observed} effects (scheduled: {effects})"
                    )
                }
                EventKind::Killed {
                    reason: KillReason::AfterMillis { millis },
                } => format!("was killed by the harness after {millis} ms"),
                EventKind::Killed { reason } => format!("was killed by the harness ({reason:?})"),
                EventKind::Exited {
                    exit: Exit::Panicked { message },
                } => format!("panicked ({message})"),
                EventKind::Exited {
                    exit: Exit::Failed { error },
                } => format!("returned an error ({error})"),
                EventKind::Exited {
                    exit: Exit::Signal { signal },
                } => format!("died of signal {signal}"),
                _ => return None,
            };
            Some(DeathWitness {
                inc,
                how,
                at_us: e.at_us,
            })
        })
}

/// The first commit that moved past `msg`: the earliest of the consumer's own reports and the
/// commits seen on the broker during incarnations; else a read after an incarnation.
fn commit_past(trace: &Trace, msg: &MessageRef) -> Option<CommitWitness> {
    let passes = |p: i32, o: i64| p == msg.partition && o > msg.offset;
    let during = trace.events.iter().find_map(|e| match &e.kind {
        EventKind::Committed {
            offsets,
            mode,
            requested_at_us,
        } => offsets
            .iter()
            .find(|o| passes(o.partition, o.offset))
            .map(|o| CommitWitness {
                inc: e.inc,
                offset: o.offset,
                at_us: *requested_at_us,
                mode: Some(*mode),
                since_us: None,
            }),
        EventKind::BrokerCommitObserved { offsets, since_us } => offsets
            .iter()
            .find(|o| passes(o.partition, o.offset))
            .map(|o| CommitWitness {
                inc: 0,
                offset: o.offset,
                at_us: e.at_us,
                mode: None,
                since_us: Some(*since_us),
            }),
        _ => None,
    });
    during.or_else(|| {
        trace.events.iter().find_map(|e| match &e.kind {
            EventKind::BrokerCommitted { offsets } => offsets
                .iter()
                .find(|(p, o)| o.is_some_and(|o| passes(*p, o)))
                .map(|(_, o)| CommitWitness {
                    inc: 0,
                    offset: o.unwrap_or_default(),
                    at_us: e.at_us,
                    mode: None,
                    since_us: None,
                }),
            _ => None,
        })
    })
}

/// The first death, after `after_us`, of an incarnation started before `started_before_us`:
/// who died after a commit the broker showed but no process reported.
fn death_after(trace: &Trace, after_us: u64, started_before_us: u64) -> Option<DeathWitness> {
    let started: Vec<Incarnation> = trace
        .events
        .iter()
        .filter(|e| e.at_us <= started_before_us && matches!(e.kind, EventKind::Started { .. }))
        .map(|e| e.inc)
        .collect();
    started
        .into_iter()
        .filter_map(|inc| death_of(trace, inc, after_us))
        .min_by_key(|d| d.at_us)
}

/// No loss: every acknowledged input applied at least once.
pub fn lost(trace: &Trace) -> Vec<Violation> {
    let counts = counts(trace);
    trace
        .produced()
        .filter(|(m, _)| !counts.contains_key(&m.id))
        .map(|(msg, _)| {
            let commit = commit_past(trace, msg);
            let death = commit.as_ref().and_then(|c| match (c.inc, c.since_us) {
                (0, Some(since)) => death_after(trace, since, c.at_us),
                (0, None) => None,
                (inc, _) => death_of(trace, inc, c.at_us),
            });
            Violation::Lost {
                msg: *msg,
                commit,
                death,
            }
        })
        .collect()
}

/// No duplicate: every input applied at most once.
pub fn duplicated(trace: &Trace) -> Vec<Violation> {
    let counts = counts(trace);
    let mut out: Vec<Violation> = trace
        .produced()
        .filter_map(|(msg, _)| {
            let applied = counts.get(&msg.id)?;
            if applied.len() < 2 {
                return None;
            }
            let first = applied[0];
            let death =
                death_of(trace, first.inc, first.at_us).filter(|d| d.at_us <= applied[1].at_us);
            Some(Violation::Duplicated {
                msg: *msg,
                count: applied.len(),
                by: applied.iter().map(|e| e.inc).collect(),
                death,
            })
        })
        .collect();
    out.sort_by_key(|v| v.message());
    out
}

/// `S*`: the state from applying every input once, in per-partition offset order.
pub fn expected_state(trace: &Trace) -> Option<Vec<(String, u64)>> {
    let mut inputs: Vec<(&MessageRef, &str)> = trace.produced().collect();
    inputs.sort_by_key(|(m, _)| (m.partition, m.offset));
    match trace.case.sink {
        SinkSemantics::Upsert => {
            let mut last: BTreeMap<&str, &MessageRef> = BTreeMap::new();
            for (m, k) in inputs {
                // All of a key's messages share a partition, so offset order is the key's order.
                last.insert(k, m);
            }
            Some(
                last.into_iter()
                    .map(|(k, m)| (k.to_string(), m.id))
                    .collect(),
            )
        }
        SinkSemantics::Append => {
            let mut rows: Vec<(String, u64)> = inputs
                .into_iter()
                .map(|(m, k)| (k.to_string(), m.id))
                .collect();
            rows.sort();
            Some(rows)
        }
        SinkSemantics::Ledger | SinkSemantics::OutputTopic => None,
    }
}

/// Exactly-once effect: `S == S*`, compared key by key.
pub fn state_mismatch(trace: &Trace) -> Result<Vec<Violation>> {
    let Some(expected) = expected_state(trace) else {
        return Err(Error::Config(format!(
            "a {:?} sink has no final state to compare",
            trace.case.sink
        )));
    };
    let actual = trace
        .state
        .as_ref()
        .ok_or_else(|| Error::MalformedTrace("no sink state".into()))?;
    let group = |rows: &[(String, u64)]| {
        let mut m: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for (k, id) in rows {
            m.entry(k.clone()).or_default().push(*id);
        }
        for v in m.values_mut() {
            v.sort();
        }
        m
    };
    let (e, a) = (group(&expected), group(actual));
    let mut keys: Vec<&String> = e.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| e.get(*k) != a.get(*k))
        .map(|k| Violation::StateMismatch {
            key: k.clone(),
            expected: e.get(k).cloned().unwrap_or_default(),
            actual: a.get(k).cloned().unwrap_or_default(),
        })
        .collect())
}

/// Transactional exactly-once: each input exactly once in the `read_committed` output.
pub fn output_anomalies(trace: &Trace) -> Result<Vec<Violation>> {
    let output = trace
        .output
        .as_ref()
        .ok_or_else(|| Error::MalformedTrace("the output topic was not read back".into()))?;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for id in output {
        *seen.entry(*id).or_insert(0) += 1;
    }
    let first_death = trace.events.iter().find_map(|e| match &e.kind {
        EventKind::Crashed { .. } | EventKind::CrashedAfter { .. } | EventKind::Killed { .. } => {
            death_of(trace, e.inc, e.at_us)
        }
        _ => None,
    });
    Ok(trace
        .produced()
        .filter_map(|(msg, _)| match seen.get(&msg.id).copied().unwrap_or(0) {
            0 => Some(Violation::OutputLost { msg: *msg }),
            1 => None,
            count => Some(Violation::OutputDuplicated {
                msg: *msg,
                count,
                death: first_death.clone(),
            }),
        })
        .collect())
}

/// Where a sequence of commits comes from. Each sequence is in a trustworthy time order on its
/// own; mixing them is not (a read during an incarnation may be answered before an in-flight
/// commit the consumer already issued lands).
#[derive(Clone, Copy, PartialEq, Eq)]
enum CommitSource {
    /// The consumers' own reports, plus the reads after each incarnation ended.
    Reported,
    /// The broker reads: during incarnations and after each.
    Broker,
}

/// One commit from one source: (partition, offset, witness, the latest time it can have been
/// issued — a consumer's request time; a broker read's own time).
type SourcedCommit = (i32, i64, CommitWitness, u64);

/// Commits in time order per partition from one source.
fn commits(trace: &Trace, source: CommitSource) -> Vec<SourcedCommit> {
    let mut out = Vec::new();
    for e in &trace.events {
        let witness =
            |offset: i64, mode: Option<CommitMode>, since_us: Option<u64>| CommitWitness {
                inc: e.inc,
                offset,
                at_us: e.at_us,
                mode,
                since_us,
            };
        match &e.kind {
            EventKind::Committed {
                offsets,
                mode,
                requested_at_us,
            } if source == CommitSource::Reported => {
                for o in offsets {
                    out.push((
                        o.partition,
                        o.offset,
                        witness(o.offset, Some(*mode), None),
                        *requested_at_us,
                    ));
                }
            }
            EventKind::BrokerCommitObserved { offsets, since_us }
                if source == CommitSource::Broker =>
            {
                for o in offsets {
                    out.push((
                        o.partition,
                        o.offset,
                        witness(o.offset, None, Some(*since_us)),
                        e.at_us,
                    ));
                }
            }
            EventKind::BrokerCommitted { offsets } => {
                for (p, o) in offsets {
                    if let Some(o) = o {
                        out.push((*p, *o, witness(*o, None, None), e.at_us));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Commit sanity: a partition's committed offset never decreases — in the consumers' reports
/// or on the broker.
///
/// A reported commit goes backwards only below a commit that had *completed before it was
/// requested*: two commits in flight at once (a sync commit whose process was stopped before
/// it returned, while another member committed) may land in either order, and which one the
/// broker kept is what its reads show. A broker read below what the group held is not a drop
/// when it was stale (see `stale_read`: after a broker fault, the group seen back at what it
/// held without anyone committing it again).
pub fn commit_backwards(trace: &Trace) -> Vec<Violation> {
    let drops = |source: CommitSource| {
        let all = commits(trace, source);
        let mut out = Vec::new();
        for (i, (p, o, w, issued)) in all.iter().enumerate() {
            let high = all[..i]
                .iter()
                .filter(|(q, _, d, _)| q == p && d.at_us <= *issued)
                .map(|(_, offset, ..)| *offset)
                .max();
            if let Some(h) = high.filter(|h| o < h) {
                if w.mode.is_none() && stale_read(trace, *p, h, w.at_us) {
                    continue;
                }
                out.push(Violation::CommitBackwards {
                    partition: *p,
                    from: h,
                    to: *o,
                    commit: w.clone(),
                });
            }
        }
        out
    };
    let key = |v: &Violation| match v {
        Violation::CommitBackwards {
            partition,
            from,
            to,
            ..
        } => Some((*partition, *from, *to)),
        _ => None,
    };
    let mut out = drops(CommitSource::Reported);
    let seen: Vec<_> = out.iter().map(key).collect();
    // A drop the broker reads show that the reports already showed is the same drop.
    out.extend(
        drops(CommitSource::Broker)
            .into_iter()
            .filter(|v| !seen.contains(&key(v))),
    );
    out
}

/// Whether a broker read at `read_us` that showed `partition` below `from` — an offset the
/// group held before — was a stale answer, not the group's offset going back: a broker fault
/// came before it (after a coordinator fails over, its successor can answer from a log whose
/// high watermark has not caught up yet: seen in CI, a read 10 → 9 → 10 after the coordinator
/// was killed and restarted, with nobody committing 10 again), and a later broker read shows
/// the group at `from` or above again, at an offset it already held before the read and that
/// no reported commit completed after the read. A group that really went back could only
/// return by someone committing that offset again.
fn stale_read(trace: &Trace, partition: i32, from: i64, read_us: u64) -> bool {
    let after_fault = trace
        .events
        .iter()
        .any(|e| e.at_us < read_us && matches!(e.kind, EventKind::BrokerFault { .. }));
    if !after_fault {
        return false;
    }
    // (offset, time) on this partition: every broker read, and the consumers' own reports
    // (the reported source without its after-incarnation reads, which carry no mode).
    let on_partition = |all: Vec<SourcedCommit>, reports_only: bool| -> Vec<(i64, u64)> {
        all.into_iter()
            .filter(|(p, _, w, _)| *p == partition && (!reports_only || w.mode.is_some()))
            .map(|(_, o, w, _)| (o, w.at_us))
            .collect()
    };
    let reads = on_partition(commits(trace, CommitSource::Broker), false);
    let reported = on_partition(commits(trace, CommitSource::Reported), true);
    let held_before = |w: i64| {
        reads
            .iter()
            .chain(&reported)
            .any(|&(o, at)| o == w && at <= read_us)
    };
    let committed_after = |w: i64| reported.iter().any(|&(o, at)| o == w && at > read_us);
    reads
        .iter()
        .filter(|&&(_, at)| at > read_us)
        .any(|&(w, _)| w >= from && held_before(w) && !committed_after(w))
}

/// Commit sanity (at-least-once): a commit never passes a message not yet applied when the
/// commit was issued. Transactional commits are judged on the output instead.
pub fn committed_too_far(trace: &Trace) -> Vec<Violation> {
    let mut first_applied: HashMap<u64, u64> = HashMap::new();
    for (e, m) in trace.applied() {
        first_applied.entry(m.id).or_insert(e.at_us);
    }
    let produced: Vec<&MessageRef> = trace.produced().map(|(m, _)| m).collect();
    let mut out = Vec::new();
    let mut reported: std::collections::HashSet<(i32, u64)> = std::collections::HashSet::new();
    for e in &trace.events {
        // The latest time the commit can have been issued: a consumer's request time, or for
        // a commit seen on the broker, the read that showed it. A message applied after that
        // was certainly unprocessed when the commit was made.
        let (offsets, issued_by_us, witness): (&[PartitionOffset], u64, CommitWitness) =
            match &e.kind {
                EventKind::Committed {
                    offsets,
                    mode,
                    requested_at_us,
                } if *mode != CommitMode::Transaction => (
                    offsets,
                    *requested_at_us,
                    CommitWitness {
                        inc: e.inc,
                        offset: 0,
                        at_us: *requested_at_us,
                        mode: Some(*mode),
                        since_us: None,
                    },
                ),
                EventKind::BrokerCommitObserved { offsets, since_us } => (
                    offsets,
                    e.at_us,
                    CommitWitness {
                        inc: 0,
                        offset: 0,
                        at_us: e.at_us,
                        mode: None,
                        since_us: Some(*since_us),
                    },
                ),
                _ => continue,
            };
        for o in offsets {
            let mut unprocessed: Vec<&&MessageRef> = produced
                .iter()
                .filter(|m| m.partition == o.partition && m.offset < o.offset)
                .filter(|m| first_applied.get(&m.id).is_none_or(|at| *at > issued_by_us))
                .collect();
            unprocessed.sort_by_key(|m| m.offset);
            if let Some(first) = unprocessed.first() {
                // One report per (partition, first unprocessed message): later commits repeat it.
                if reported.insert((o.partition, first.id)) {
                    out.push(Violation::CommittedTooFar {
                        partition: o.partition,
                        commit: CommitWitness {
                            offset: o.offset,
                            ..witness.clone()
                        },
                        unprocessed: ***first,
                        count: unprocessed.len(),
                    });
                }
            }
        }
    }
    out
}

/// Commit durability: an incarnation never polls a message below the committed offset the
/// broker was seen holding for that partition before the incarnation started. Client test
/// suites allow duplicates only within the last uncommitted window; a redelivery below it
/// means a commit the broker had accepted was lost or overwritten by a lower one (a zombie's
/// stale commit, a retried commit of old offsets, a coordinator that lost it). The broker
/// reads are the witness, so a drop between two reads that no read saw is still caught.
/// One violation per (incarnation, partition), naming the first such message.
pub fn redelivered_below_commit(trace: &Trace) -> Vec<Violation> {
    let mut held: HashMap<i32, CommitWitness> = HashMap::new();
    let mut window: HashMap<Incarnation, HashMap<i32, CommitWitness>> = HashMap::new();
    // (inc, partition) → index in `out`
    let mut reported: HashMap<(Incarnation, i32), usize> = HashMap::new();
    let mut out: Vec<Violation> = Vec::new();
    let see = |held: &mut HashMap<i32, CommitWitness>, p: i32, o: i64, at_us: u64| {
        if held.get(&p).is_none_or(|w| o > w.offset) {
            held.insert(
                p,
                CommitWitness {
                    inc: 0,
                    offset: o,
                    at_us,
                    mode: None,
                    since_us: None,
                },
            );
        }
    };
    for e in &trace.events {
        match &e.kind {
            EventKind::BrokerCommitObserved { offsets, .. } => {
                for o in offsets {
                    see(&mut held, o.partition, o.offset, e.at_us);
                }
            }
            EventKind::BrokerCommitted { offsets } => {
                for (p, o) in offsets {
                    if let Some(o) = o {
                        see(&mut held, *p, *o, e.at_us);
                    }
                }
            }
            EventKind::Started { .. } => {
                window.entry(e.inc).or_insert_with(|| held.clone());
            }
            EventKind::Polled { msg } => {
                let Some(commit) = window.get(&e.inc).and_then(|w| w.get(&msg.partition)) else {
                    continue;
                };
                if msg.offset >= commit.offset {
                    continue;
                }
                match reported.get(&(e.inc, msg.partition)) {
                    Some(&i) => {
                        if let Violation::RedeliveredBelowCommit { count, .. } = &mut out[i] {
                            *count += 1;
                        }
                    }
                    None => {
                        reported.insert((e.inc, msg.partition), out.len());
                        out.push(Violation::RedeliveredBelowCommit {
                            inc: e.inc,
                            msg: *msg,
                            commit: commit.clone(),
                            count: 1,
                        });
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Liveness: the group drained after the faults stopped.
pub fn stuck(trace: &Trace) -> Vec<Violation> {
    let committed_ever = trace.events.iter().any(|e| match &e.kind {
        EventKind::Committed { offsets, .. } => !offsets.is_empty(),
        EventKind::BrokerCommitObserved { offsets, .. } => !offsets.is_empty(),
        EventKind::BrokerCommitted { offsets } => offsets.iter().any(|(_, o)| o.is_some()),
        _ => false,
    });
    let effects = trace.applied().count() + trace.output.as_ref().map_or(0, Vec::len);
    let effects_without_commit = if committed_ever { 0 } else { effects };
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Stuck { lag, waited_ms } => Some(Violation::Stuck {
                lag: lag.clone(),
                waited_ms: *waited_ms,
                effects_without_commit,
            }),
            _ => None,
        })
        .collect()
}

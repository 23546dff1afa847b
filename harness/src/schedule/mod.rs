//! The fault plan as data: a workload plus an ordered list of faults.
//!
//! Faults are grouped into worker incarnations: every fault up to and including the next
//! *terminal* fault (a crash or a kill) belongs to one incarnation; crash-point hits are
//! counted per incarnation. A schedule is stored as versioned JSON, so a failure found by
//! one run replays exactly in another.
//!
//! ```
//! use kafka_harness::schedule::{Fault, Schedule, Workload};
//! let s = Schedule::new(Workload { messages: 10, partitions: 2, keys: 4 })
//!     .fault(Fault::Crash { point: "after-commit".into(), hit: 3 });
//! let json = s.to_json();
//! assert_eq!(Schedule::from_json(&json, None).unwrap(), s);
//! assert_eq!(s.incarnations().len(), 1);
//! ```

mod cluster;
mod strategy;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use cluster::{BrokerAction, BrokerTarget, ClusterFault, LinkAction, LinkTarget};
pub use strategy::{
    FaultKinds, ScheduleSpace, ANCHOR_REVOKE, ANCHOR_SINK_OUTAGE, ANY_POINT, BROKER_FAULT_MS,
};

use crate::{Error, Result};

/// Format version of the schedule file.
pub const SCHEDULE_VERSION: u32 = 1;

/// What the harness produces before the consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// Number of input messages (ids `0..messages`).
    pub messages: u32,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Distinct business keys (`k0..k{keys-1}`); message `i` has key `k{i % keys}`, and every
    /// key lives in one partition (`key index % partitions`), so per-key order is defined.
    pub keys: u32,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            messages: 12,
            partitions: 2,
            keys: 6,
        }
    }
}

impl Workload {
    /// Key of message `id`.
    pub fn key_of(&self, id: u64) -> String {
        format!("k{}", id % self.keys.max(1) as u64)
    }

    /// Partition of message `id`.
    pub fn partition_of(&self, id: u64) -> i32 {
        ((id % self.keys.max(1) as u64) % self.partitions.max(1) as u64) as i32
    }
}

/// How an injected sink write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkFailure {
    /// An error the consumer may retry.
    Transient,
    /// An error retrying will not fix.
    Permanent,
    /// The write hung for this many milliseconds, then timed out.
    Hang {
        /// How long it hung.
        millis: u64,
    },
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// One fault. Triggers are deterministic where the fault allows it: a point and a hit count
/// (`at the n-th hit of X`), possibly counted from an earlier event (`the k-th hit of X after
/// the revoke`), or a count of effects.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fault")]
pub enum Fault {
    /// The worker SIGKILLs itself at the `hit`-th hit (1-based, this incarnation) of `point`.
    Crash {
        /// Crash point name (built-in or user-named).
        point: String,
        /// Which hit fires.
        hit: u32,
    },
    /// The orchestrator SIGKILLs the worker once the sink holds `effects` effects of this
    /// incarnation (black-box: the worker runs on while the orchestrator notices).
    KillAfterEffects {
        /// Effects to wait for.
        effects: u32,
    },
    /// The orchestrator SIGKILLs the worker `millis` after it started (non-deterministic).
    KillAfterMillis {
        /// Delay.
        millis: u64,
    },
    /// The worker SIGKILLs itself at the `hit`-th hit of `point` counted from the first hit
    /// of `after` in this incarnation ("crash at the 2nd `before-sink-write` after the
    /// `revoke`"): a fault relative to an earlier one.
    CrashAfter {
        /// The point whose first hit starts the count (e.g. `revoke`).
        after: String,
        /// Crash point name.
        point: String,
        /// Which hit after `after` fires (1-based).
        hit: u32,
    },
    /// A sink outage: from the `write`-th sink write of this incarnation, `writes`
    /// consecutive writes fail — or, with `millis`, every write fails until `millis` ms after
    /// the outage began. Real outages last: one failed write is the special case `writes: 1`.
    SinkFailure {
        /// 1-based index of the first failing write.
        write: u32,
        /// How the writes fail.
        failure: SinkFailure,
        /// Consecutive failing writes (default 1; ignored when `millis` is set).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        writes: u32,
        /// Outage length in time, from its first failed write.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        millis: Option<u64>,
    },
    /// A second member joins the group once this incarnation applied `after_effects`
    /// effects, forcing a rebalance; it leaves when the incarnation ends.
    Rebalance {
        /// Effects to wait for.
        after_effects: u32,
    },
    /// A rebalance at a precise point: the worker blocks at the `hit`-th hit of `point` until
    /// a second member has joined and the group is rebalancing, so the worker's next poll is
    /// revoked while it holds whatever it was holding at that point. The member leaves when
    /// the incarnation ends.
    RebalanceAt {
        /// Crash point name where the worker waits.
        point: String,
        /// Which hit (1-based, this incarnation).
        hit: u32,
    },
    /// A rebalance at the `hit`-th hit of `point` counted from the first hit of `after`
    /// ("rebalance at the 1st `before-sink-write` after the sink outage began"): as
    /// [`Fault::RebalanceAt`], relative to an earlier fault.
    RebalanceAfter {
        /// The point whose first hit starts the count (e.g. `sink-outage`).
        after: String,
        /// Crash point name where the worker waits.
        point: String,
        /// Which hit after `after` (1-based).
        hit: u32,
    },
    /// The worker stops — SIGSTOP, every thread at once, like a long GC pause or a blocked
    /// host — at the `hit`-th hit of `point`, for `millis` ms, then continues (SIGCONT). A
    /// pause of at least the session timeout (the harness's default `session.timeout.ms` is
    /// 1000) makes the group evict it: a second member, started when the pause begins, takes
    /// its partitions, and the worker wakes as a zombie holding whatever it had polled. Its
    /// later writes and commits are in the trace and judged like any other.
    PauseAt {
        /// Crash point name where the worker stops.
        point: String,
        /// Which hit (1-based, this incarnation).
        hit: u32,
        /// How long it stays stopped.
        millis: u64,
    },
    /// A pause at the `hit`-th hit of `point` counted from the first hit of `after` ("pause
    /// 300 ms at the first thing the consumer does after the revoke"): as [`Fault::PauseAt`],
    /// relative to an earlier fault. After a rebalance, a short pause lets the member that
    /// took partitions over run ahead — process and commit them — before this one goes on
    /// with whatever it kept of them.
    PauseAfter {
        /// The point whose first hit starts the count (e.g. `revoke`).
        after: String,
        /// Crash point name where the worker stops (`*`: any point).
        point: String,
        /// Which hit after `after` (1-based).
        hit: u32,
        /// How long it stays stopped.
        millis: u64,
    },
    /// Broker `broker` is hard-killed once this incarnation applied `after_effects` effects,
    /// and restarted right away (containers and local backends). [`Fault::Broker`] names the
    /// broker by its role instead; generation uses that one.
    BrokerRestart {
        /// Broker index (0-based).
        broker: usize,
        /// Effects to wait for.
        after_effects: u32,
    },
    /// A broker fault once this incarnation applied `after_effects` effects: the broker that
    /// has a role for this case when the fault fires (the leader of an input partition, or
    /// the group's coordinator) is killed, kept down, or frozen (containers and local
    /// backends). The client sees what it sees in production: connections dropped or hung,
    /// leadership or coordination moving to another broker on a 3-broker cluster. The worker
    /// waits at that effect (after its sink write, before its commit; for output to a topic,
    /// inside the poll that returns that record, before it is processed) until the broker is
    /// down or frozen, so the fault lands at the same place on every replay — unless the
    /// orchestrator is itself held up past the worker's 20 s bound, or the fault must wait for
    /// an earlier broker or network fault to end (then it fires black-box, later).
    Broker {
        /// Which broker.
        target: BrokerTarget,
        /// What happens to it.
        action: BrokerAction,
        /// Effects to wait for.
        after_effects: u32,
    },
    /// A network fault once this incarnation applied `after_effects` effects: the links
    /// between the worker and the broker with a role (or every broker) are cut or slowed for
    /// a while, then healed. The brokers stay up and keep serving everyone else — the
    /// harness's own reads, the other group member, each other (containers and local
    /// backends: the worker connects through a harness proxy per broker). As with
    /// [`Fault::Broker`], the worker waits at that effect until the links are cut or slowed.
    Network {
        /// Which links.
        target: LinkTarget,
        /// What happens to them.
        action: LinkAction,
        /// Effects to wait for.
        after_effects: u32,
    },
    /// A broker fault at a precise point: the worker waits at the `hit`-th hit (1-based, this
    /// incarnation) of `point` until the broker with the role is down or frozen, then goes
    /// on. The fault lands between two things the consumer does — inside an open transaction,
    /// between a write and its commit — on every replay, for any consumer with crash points
    /// (its own fail points included: a consumer with its own clients has no effect markers).
    BrokerAt {
        /// Which broker.
        target: BrokerTarget,
        /// What happens to it.
        action: BrokerAction,
        /// Crash point name where the worker waits.
        point: String,
        /// Which hit (1-based, this incarnation).
        hit: u32,
    },
    /// A network fault at a precise point: as [`Fault::BrokerAt`], with the worker's links to
    /// the broker with the role (or to every broker) cut or slowed while it waits there.
    NetworkAt {
        /// Which links.
        target: LinkTarget,
        /// What happens to them.
        action: LinkAction,
        /// Crash point name where the worker waits.
        point: String,
        /// Which hit (1-based, this incarnation).
        hit: u32,
    },
}

impl Fault {
    /// Whether this fault ends its incarnation.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Fault::Crash { .. }
                | Fault::CrashAfter { .. }
                | Fault::KillAfterEffects { .. }
                | Fault::KillAfterMillis { .. }
        )
    }

    /// A short name of the fault's kind (reports, coverage).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Fault::Crash { .. } => "crash",
            Fault::CrashAfter { .. } => "crash-after",
            Fault::KillAfterEffects { .. } => "kill",
            Fault::KillAfterMillis { .. } => "random-kill",
            Fault::SinkFailure { .. } => "sink-outage",
            Fault::Rebalance { .. } => "rebalance",
            Fault::RebalanceAt { .. } => "rebalance-at",
            Fault::RebalanceAfter { .. } => "rebalance-after",
            Fault::BrokerRestart { .. } => "broker-restart",
            Fault::Broker { action, .. } | Fault::BrokerAt { action, .. } => match action {
                BrokerAction::Restart => "broker-restart",
                BrokerAction::Down { .. } => "broker-down",
                BrokerAction::Pause { .. } => "broker-pause",
            },
            Fault::PauseAt { .. } => "pause-at",
            Fault::PauseAfter { .. } => "pause-after",
            Fault::Network { action, .. } | Fault::NetworkAt { action, .. } => match action {
                LinkAction::Cut { .. } => "network-cut",
                LinkAction::Slow { .. } => "network-slow",
            },
        }
    }

    /// The crash points this fault names (to check a replay against the points that exist).
    pub fn points(&self) -> Vec<&str> {
        match self {
            Fault::Crash { point, .. }
            | Fault::RebalanceAt { point, .. }
            | Fault::PauseAt { point, .. }
            | Fault::BrokerAt { point, .. }
            | Fault::NetworkAt { point, .. } => vec![point],
            Fault::CrashAfter { after, point, .. }
            | Fault::RebalanceAfter { after, point, .. }
            | Fault::PauseAfter { after, point, .. } => {
                // `*` is any point, not a name to look up.
                std::iter::once(after.as_str())
                    .chain((point != ANY_POINT).then_some(point.as_str()))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// The effect count at which the worker waits for this fault to be put in place: broker
    /// and network faults, which the orchestrator fires. Without the wait the fault would land
    /// wherever the worker has got to by the time the orchestrator notices the effect and
    /// finds the broker with the role — on loopback that can be the end of a partition, and
    /// a schedule that caught a bug once would not catch it again.
    pub fn held_at_effect(&self) -> Option<u32> {
        match self {
            Fault::Broker { after_effects, .. } | Fault::Network { after_effects, .. } => {
                Some(*after_effects)
            }
            _ => None,
        }
    }

    /// The point hit at which the worker waits for this fault to be put in place: broker and
    /// network faults triggered at a point ([`Fault::BrokerAt`], [`Fault::NetworkAt`]).
    pub fn held_at_point(&self) -> Option<(&str, u32)> {
        match self {
            Fault::BrokerAt { point, hit, .. } | Fault::NetworkAt { point, hit, .. } => {
                Some((point, *hit))
            }
            _ => None,
        }
    }

    /// What a fault the cluster suffers does, whatever triggers it: a broker fault
    /// ([`Fault::Broker`], [`Fault::BrokerAt`]) or a network fault ([`Fault::Network`],
    /// [`Fault::NetworkAt`]). `None` for the worker's own faults and for the old
    /// index-addressed [`Fault::BrokerRestart`].
    pub fn cluster_fault(&self) -> Option<ClusterFault> {
        match self {
            Fault::Broker { target, action, .. } | Fault::BrokerAt { target, action, .. } => {
                Some(ClusterFault::Broker(*target, *action))
            }
            Fault::Network { target, action, .. } | Fault::NetworkAt { target, action, .. } => {
                Some(ClusterFault::Network(*target, *action))
            }
            _ => None,
        }
    }

    /// Whether this fault is a process death (what "crashes injected" counts).
    pub fn is_crash(&self) -> bool {
        self.is_terminal()
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Crash { point, hit } => write!(f, "crash at `{point}` hit #{hit}"),
            Fault::KillAfterEffects { effects } => write!(f, "kill after {effects} effects"),
            Fault::KillAfterMillis { millis } => write!(f, "kill after {millis} ms"),
            Fault::CrashAfter { after, point, hit } => {
                write!(f, "crash at {} after `{after}`", relative_hit(point, *hit))
            }
            Fault::SinkFailure {
                write,
                failure,
                writes,
                millis,
            } => match (millis, writes) {
                (Some(ms), _) => write!(
                    f,
                    "sink outage from write #{write} for {ms} ms ({failure:?})"
                ),
                (None, 1) => write!(f, "sink write #{write} fails ({failure:?})"),
                (None, n) => write!(
                    f,
                    "sink outage: writes #{write}..#{} fail ({failure:?})",
                    write + n - 1
                ),
            },
            Fault::Rebalance { after_effects } => {
                write!(f, "second member joins after {after_effects} effects")
            }
            Fault::RebalanceAt { point, hit } => {
                write!(f, "rebalance at `{point}` hit #{hit}")
            }
            Fault::PauseAt { point, hit, millis } => {
                write!(f, "pause (SIGSTOP) at `{point}` hit #{hit} for {millis} ms")
            }
            Fault::RebalanceAfter { after, point, hit } => {
                write!(
                    f,
                    "rebalance at {} after `{after}`",
                    relative_hit(point, *hit)
                )
            }
            Fault::PauseAfter {
                after,
                point,
                hit,
                millis,
            } => {
                write!(
                    f,
                    "pause (SIGSTOP) at {} after `{after}` for {millis} ms",
                    relative_hit(point, *hit)
                )
            }
            Fault::BrokerRestart {
                broker,
                after_effects,
            } => {
                write!(
                    f,
                    "broker {broker} killed and restarted after {after_effects} effects"
                )
            }
            Fault::Broker { after_effects, .. } | Fault::Network { after_effects, .. } => {
                match self.cluster_fault() {
                    Some(c) => write!(f, "{c} after {after_effects} effects"),
                    None => Ok(()),
                }
            }
            Fault::BrokerAt { point, hit, .. } | Fault::NetworkAt { point, hit, .. } => {
                match self.cluster_fault() {
                    Some(c) => write!(f, "{c} at `{point}` hit #{hit}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The after-poll point name generation favours for rebalances (see the strategy).
#[cfg(test)]
pub(crate) fn strategy_after_poll() -> &'static str {
    strategy::AFTER_POLL
}

/// "`before-sink-write` hit #2", or for `*`, "crash-point hit #2 (any point)".
fn relative_hit(point: &str, hit: u32) -> String {
    if point == ANY_POINT {
        format!("crash-point hit #{hit} (any point)")
    } else {
        format!("`{point}` hit #{hit}")
    }
}

/// A workload and its ordered faults: one proptest case, or one replay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Schedule {
    /// [`SCHEDULE_VERSION`].
    pub version: u32,
    /// The input.
    pub workload: Workload,
    /// Faults in order.
    pub faults: Vec<Fault>,
    /// Whether a member a rebalance fault starts sorts *before* the worker in the group, so
    /// the range and round-robin assignors (librdkafka's default is range) hand it the
    /// first partitions and the worker keeps the last ones; otherwise the reverse. The harness
    /// gives the consumers it configures a `client.id` (`kafka-harness-b-<incarnation>` for
    /// the worker, `-a-` or `-c-` for the joiner), and a broker makes a member's id from its
    /// `client.id` and a random UUID: without this choice, which partitions moved at a
    /// rebalance was a coin per run, and a rebalance schedule could replay differently. No
    /// effect when the consumer sets its own `client.id`, under `group.protocol=consumer` (the
    /// broker assigns) or on the embedded mock (its member ids ignore `client.id`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub joiner_first: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Schedule {
    /// A fault-free schedule.
    pub fn new(workload: Workload) -> Self {
        Schedule {
            version: SCHEDULE_VERSION,
            workload,
            faults: Vec::new(),
            joiner_first: false,
        }
    }

    /// Whether some fault starts a second member (a rebalance).
    pub fn adds_member(&self) -> bool {
        self.faults.iter().any(|f| {
            matches!(
                f,
                Fault::Rebalance { .. } | Fault::RebalanceAt { .. } | Fault::RebalanceAfter { .. }
            )
        })
    }

    /// Append a fault.
    pub fn fault(mut self, fault: Fault) -> Self {
        self.faults.push(fault);
        self
    }

    /// Faults grouped per incarnation (each group ends at its terminal fault, the last may not).
    pub fn incarnations(&self) -> Vec<Vec<Fault>> {
        let mut out = Vec::new();
        let mut cur = Vec::new();
        for f in &self.faults {
            cur.push(f.clone());
            if f.is_terminal() {
                out.push(std::mem::take(&mut cur));
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        out
    }

    /// Number of process deaths the schedule asks for.
    pub fn crash_count(&self) -> usize {
        self.faults.iter().filter(|f| f.is_crash()).count()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parse and validate. With `known_points`, a crash at a point not in the list is an error.
    pub fn from_json(text: &str, known_points: Option<&[String]>) -> Result<Schedule> {
        Self::parse(text, Path::new("<inline>"), known_points)
    }

    /// Read, parse and validate a schedule file.
    pub fn load(path: &Path, known_points: Option<&[String]>) -> Result<Schedule> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading schedule", path, e))?;
        Self::parse(&text, path, known_points)
    }

    fn parse(text: &str, path: &Path, known_points: Option<&[String]>) -> Result<Schedule> {
        let bad = |reason: String| Error::Schedule {
            path: path.to_path_buf(),
            reason,
        };
        let s: Schedule =
            serde_json::from_str(text).map_err(|e| bad(format!("not a schedule: {e}")))?;
        if s.version != SCHEDULE_VERSION {
            return Err(bad(format!(
                "version {} (this harness reads version {SCHEDULE_VERSION})",
                s.version
            )));
        }
        s.validate(known_points).map_err(bad)?;
        Ok(s)
    }

    /// Check the preconditions every schedule must meet.
    pub fn validate(&self, known_points: Option<&[String]>) -> std::result::Result<(), String> {
        let w = &self.workload;
        if w.messages == 0 || w.partitions < 1 || w.keys == 0 {
            return Err(format!(
                "workload needs ≥1 message, partition and key, got {w:?}"
            ));
        }
        for (i, f) in self.faults.iter().enumerate() {
            match f {
                Fault::Crash { hit: 0, .. }
                | Fault::CrashAfter { hit: 0, .. }
                | Fault::RebalanceAt { hit: 0, .. }
                | Fault::RebalanceAfter { hit: 0, .. }
                | Fault::PauseAt { hit: 0, .. }
                | Fault::PauseAfter { hit: 0, .. }
                | Fault::BrokerAt { hit: 0, .. }
                | Fault::NetworkAt { hit: 0, .. } => {
                    return Err(format!("fault {i}: hits count from 1"));
                }
                Fault::SinkFailure { write: 0, .. } => {
                    return Err(format!("fault {i}: writes count from 1"))
                }
                Fault::SinkFailure { writes: 0, .. } => {
                    return Err(format!("fault {i}: an outage lasts at least 1 write"))
                }
                Fault::Broker {
                    target: BrokerTarget::Leader { partition },
                    ..
                }
                | Fault::BrokerAt {
                    target: BrokerTarget::Leader { partition },
                    ..
                }
                | Fault::Network {
                    target: LinkTarget::Leader { partition },
                    ..
                }
                | Fault::NetworkAt {
                    target: LinkTarget::Leader { partition },
                    ..
                } if *partition < 0 || *partition >= w.partitions => {
                    return Err(format!(
                        "fault {i}: partition {partition} does not exist (the workload has {})",
                        w.partitions
                    ))
                }
                _ => {}
            }
            if let Some(known) = known_points {
                for point in f.points() {
                    if !known.iter().any(|k| k == point) {
                        return Err(format!(
                            "fault {i}: unknown crash point `{point}` (this consumer has: {})",
                            known.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_group_into_incarnations_at_each_crash_or_kill() {
        let s = Schedule::new(Workload::default())
            .fault(Fault::SinkFailure {
                write: 1,
                failure: SinkFailure::Transient,
                writes: 1,
                millis: None,
            })
            .fault(Fault::Crash {
                point: "p".into(),
                hit: 1,
            })
            .fault(Fault::KillAfterEffects { effects: 2 })
            .fault(Fault::Rebalance { after_effects: 1 });
        let inc = s.incarnations();
        assert_eq!(inc.len(), 3);
        assert_eq!(inc[0].len(), 2);
        assert_eq!(inc[2], vec![Fault::Rebalance { after_effects: 1 }]);
        assert_eq!(s.crash_count(), 2);
    }

    #[test]
    fn an_unknown_crash_point_is_one_clear_error() {
        let s = Schedule::new(Workload::default()).fault(Fault::Crash {
            point: "nope".into(),
            hit: 1,
        });
        let err = Schedule::from_json(&s.to_json(), Some(&["after-poll".to_string()])).unwrap_err();
        assert!(
            err.to_string().contains("unknown crash point `nope`"),
            "{err}"
        );
    }

    #[test]
    fn schedules_written_before_outages_and_anchors_still_load() {
        let old = r#"{"version":1,"workload":{"messages":3,"partitions":1,"keys":1},
            "faults":[{"fault":"sink-failure","write":2,"failure":"transient"}]}"#;
        let s = Schedule::from_json(old, None).unwrap();
        assert_eq!(
            s.faults,
            vec![Fault::SinkFailure {
                write: 2,
                failure: SinkFailure::Transient,
                writes: 1,
                millis: None
            }]
        );
        // …and a one-write failure is still written the old way.
        assert!(!s.to_json().contains("writes"));
    }

    #[test]
    fn a_relative_crash_names_both_points_and_both_must_exist() {
        let s = Schedule::new(Workload::default()).fault(Fault::CrashAfter {
            after: "revoke".into(),
            point: "before-sink-write".into(),
            hit: 1,
        });
        let known = ["before-sink-write".to_string()];
        let err = s.validate(Some(&known)).unwrap_err();
        assert!(err.contains("unknown crash point `revoke`"), "{err}");
        assert!(s.incarnations().len() == 1 && s.faults[0].is_terminal());
    }

    #[test]
    fn a_broker_fault_is_written_by_role_and_its_partition_must_exist() {
        let f = Fault::Broker {
            target: BrokerTarget::Leader { partition: 1 },
            action: BrokerAction::Pause { millis: 1500 },
            after_effects: 2,
        };
        let s = Schedule::new(Workload::default()).fault(f.clone());
        let json = s.to_json();
        assert!(json.contains("\"role\": \"leader\""), "{json}");
        assert!(json.contains("\"do\": \"pause\""), "{json}");
        assert_eq!(Schedule::from_json(&json, None).unwrap(), s);
        assert_eq!(
            f.to_string(),
            "the leader of partition 1 frozen for 1500 ms after 2 effects"
        );
        assert_eq!(f.kind_name(), "broker-pause");
        assert!(!f.is_terminal());
        let one = Schedule::new(Workload {
            messages: 3,
            partitions: 1,
            keys: 1,
        })
        .fault(f);
        let err = one.validate(None).unwrap_err();
        assert!(err.contains("partition 1 does not exist"), "{err}");
    }

    /// A network fault at a point hit: written with its point, named in words, and replayed
    /// only where that point exists.
    #[test]
    fn a_cluster_fault_at_a_point_names_the_point_and_the_point_must_exist() {
        let f = Fault::NetworkAt {
            target: LinkTarget::Coordinator,
            action: LinkAction::Cut { millis: 2000 },
            point: "before-transaction-commit".into(),
            hit: 2,
        };
        let s = Schedule::new(Workload::default()).fault(f.clone());
        let json = s.to_json();
        assert!(json.contains("\"fault\": \"network-at\""), "{json}");
        assert_eq!(Schedule::from_json(&json, None).unwrap(), s);
        assert_eq!(
            f.to_string(),
            "the worker cut off from the group coordinator for 2000 ms at `before-transaction-commit` hit #2"
        );
        assert_eq!(f.held_at_point(), Some(("before-transaction-commit", 2)));
        assert_eq!(f.held_at_effect(), None);
        assert_eq!(f.kind_name(), "network-cut");
        let err = s.validate(Some(&["after-poll".to_string()])).unwrap_err();
        assert!(
            err.contains("unknown crash point `before-transaction-commit`"),
            "{err}"
        );
        let zero = Schedule::new(Workload::default()).fault(Fault::BrokerAt {
            target: BrokerTarget::Coordinator,
            action: BrokerAction::Restart,
            point: "after-poll".into(),
            hit: 0,
        });
        assert!(zero
            .validate(None)
            .unwrap_err()
            .contains("hits count from 1"));
    }

    #[test]
    fn malformed_json_and_wrong_versions_are_errors_not_panics() {
        assert!(Schedule::from_json("{not json", None).is_err());
        let mut s = Schedule::new(Workload::default());
        s.version = 99;
        assert!(Schedule::from_json(&s.to_json(), None)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
        let zero = r#"{"version":1,"workload":{"messages":0,"partitions":1,"keys":1},"faults":[]}"#;
        assert!(Schedule::from_json(zero, None).is_err());
    }

    #[test]
    fn every_key_lives_in_exactly_one_partition() {
        let w = Workload {
            messages: 50,
            partitions: 3,
            keys: 7,
        };
        for id in 0..50u64 {
            let same_key = id + 7;
            assert_eq!(w.partition_of(id), w.partition_of(same_key));
            assert_eq!(w.key_of(id), w.key_of(same_key));
        }
    }
}

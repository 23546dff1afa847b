//! The history of one case: the single source of truth the checkers read.
//!
//! Events come from three writers and are merged by time:
//! - the orchestrator (produced, started, killed, exited, committed-as-read-from-the-broker,
//!   broker faults, drained/stuck);
//! - the worker process (polled, commits it made, rebalances, crash points, sink failures),
//!   appended to a file one `write(2)` per event, so a SIGKILL can cut the history short but
//!   never leave half an event;
//! - the sink's durable state read back after the run (applied effects), so the record of an
//!   effect cannot disagree with the effect.
//!
//! Times are microseconds of `CLOCK_MONOTONIC` since the case began, comparable across processes.

use serde::{Deserialize, Serialize};

use crate::cluster::BackendKind;
use crate::schedule::{Fault, SinkFailure};

/// Format version of [`Trace`] (bumped on incompatible change).
pub const TRACE_VERSION: u32 = 1;

/// A worker incarnation: 1, 2, … in start order. 0 is the orchestrator.
pub type Incarnation = u32;

/// One input message, as the broker placed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageRef {
    /// The harness's id for the message (0-based, in produce order).
    pub id: u64,
    /// Partition of the input topic.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
}

impl std::fmt::Display for MessageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "message {} (partition {}, offset {})",
            self.id, self.partition, self.offset
        )
    }
}

/// "The next offset to read in `partition` is `offset`" — Kafka's meaning of a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// Partition.
    pub partition: i32,
    /// Next offset to consume.
    pub offset: i64,
}

/// How a commit was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommitMode {
    /// `commit(.., CommitMode::Sync)`.
    Sync,
    /// `commit(.., CommitMode::Async)`, recorded when its callback reports.
    Async,
    /// librdkafka's auto-commit, recorded when its callback reports.
    Auto,
    /// Offsets sent to a transaction that then committed.
    Transaction,
}

/// Which side of a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebalancePhase {
    /// Partitions taken away (before the rebalance completes).
    Revoke,
    /// Partitions given (after it completes).
    Assign,
}

/// How a worker process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "how")]
pub enum Exit {
    /// The worker function returned `Ok` (after a stop request, or on its own).
    Returned,
    /// The worker function returned an error.
    Failed {
        /// The error, displayed.
        error: String,
    },
    /// The worker function panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The process exited with a code the harness did not produce.
    Code {
        /// Exit code.
        code: i32,
    },
    /// The process died of a signal (SIGKILL from a crash point or the orchestrator, or other).
    Signal {
        /// Signal number.
        signal: i32,
    },
}

/// Why the orchestrator killed a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum KillReason {
    /// The schedule's "kill after N applied effects" fired.
    AfterEffects {
        /// N from the schedule.
        effects: u32,
        /// Effects the ledger held when the kill landed (≥ N: the worker keeps running meanwhile).
        observed: u32,
    },
    /// The schedule's "kill after this many milliseconds" fired.
    AfterMillis {
        /// Milliseconds since the incarnation started.
        millis: u64,
    },
    /// The worker did not stop within the grace period after a stop request.
    StopTimeout,
    /// The incarnation ran past the case's time limit.
    Deadline,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
pub enum EventKind {
    /// The broker acknowledged an input message (only these are in `I`).
    Produced {
        /// The message.
        msg: MessageRef,
        /// Its business key.
        key: String,
    },
    /// A worker process started.
    Started {
        /// `false` for an extra group member started to cause a rebalance.
        primary: bool,
        /// The faults this incarnation was given.
        faults: Vec<Fault>,
    },
    /// The consumer received a message from `poll`.
    Polled {
        /// The message.
        msg: MessageRef,
    },
    /// The sink durably applied the message's effect (read back from the sink).
    Applied {
        /// The message.
        msg: MessageRef,
    },
    /// The schedule made a sink write fail; the effect was not applied.
    SinkFailed {
        /// The message whose write failed.
        msg: MessageRef,
        /// 1-based index of the write in this incarnation.
        write: u32,
        /// How it failed.
        failure: SinkFailure,
    },
    /// A commit succeeded (as the consumer saw it).
    Committed {
        /// Offsets committed (next offset to read).
        offsets: Vec<PartitionOffset>,
        /// How.
        mode: CommitMode,
        /// When the commit was issued (≤ the event's time).
        requested_at_us: u64,
    },
    /// Partitions revoked or assigned.
    Rebalanced {
        /// Which side.
        phase: RebalancePhase,
        /// Partitions involved.
        partitions: Vec<i32>,
    },
    /// A crash point was reached (every hit is recorded).
    CrashPointHit {
        /// Point name.
        point: String,
        /// 1-based hit count in this incarnation.
        hit: u32,
    },
    /// A scheduled crash fired: the worker SIGKILLed itself right after this event.
    Crashed {
        /// Point name.
        point: String,
        /// Hit that fired.
        hit: u32,
    },
    /// A scheduled relative crash fired: the worker SIGKILLed itself right after this event.
    CrashedAfter {
        /// The point whose first hit started the count.
        after: String,
        /// The point it crashed at (the one hit, also for a `*` fault).
        point: String,
        /// Hit (counted from `after`) that fired.
        hit: u32,
    },
    /// A `rebalance-at` point was reached: the worker waits there until the group rebalances.
    RebalanceRequested {
        /// Point name.
        point: String,
        /// Hit that triggered it.
        hit: u32,
    },
    /// A `pause-at` point was reached: the worker stops itself (SIGSTOP) right after this
    /// event, until the orchestrator continues it.
    Paused {
        /// Point name.
        point: String,
        /// Hit that triggered it.
        hit: u32,
        /// How long the schedule pauses it.
        millis: u64,
        /// For a `pause-after` fault: the point its hit was counted from (and `hit` is
        /// counted from there).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// The paused consumer's `session.timeout.ms`, when the harness built it (a pause at
        /// least this long gets it evicted, and the harness starts a member to take over).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_timeout_ms: Option<u64>,
    },
    /// The orchestrator continued (SIGCONT) a paused worker.
    Resumed {
        /// How long it was stopped, as the orchestrator measured.
        paused_ms: u64,
    },
    /// The orchestrator saw the group rebalancing with a second member and released the worker.
    RebalanceStarted {
        /// The group state the broker reported (e.g. `PreparingRebalance`).
        state: String,
    },
    /// The worker entered a client call that blocks until the cluster answers or the call
    /// times out (`commit_transaction`, `send_offsets_to_transaction`, a sync commit, …).
    /// Until its [`EventKind::ClientCallEnded`], the worker is waiting on its client, not
    /// idle: after a coordinator failover librdkafka can hold such a call for longer than
    /// its timeout (13.5 s measured for a 10 s `send_offsets_to_transaction`).
    ClientCallStarted {
        /// The call, as rdkafka names it.
        call: String,
    },
    /// A blocking client call returned.
    ClientCallEnded {
        /// The call, as rdkafka names it.
        call: String,
        /// How long it blocked.
        ms: u64,
        /// The error it returned, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The orchestrator SIGKILLed the worker.
    Killed {
        /// Why.
        #[serde(flatten)]
        reason: KillReason,
    },
    /// The worker process ended.
    Exited {
        /// How.
        #[serde(flatten)]
        exit: Exit,
    },
    /// Committed offsets read from the broker after an incarnation ended (`None`: never committed).
    BrokerCommitted {
        /// Per partition.
        offsets: Vec<(i32, Option<i64>)>,
    },
    /// The group's committed offsets, read from the broker *during* an incarnation, changed:
    /// some commit (by any member, through any path — auto-commit, async, transactional —
    /// whether or not the process ever reported it) landed between `since_us` and this
    /// event's time. Only the partitions that changed are listed.
    BrokerCommitObserved {
        /// The new committed offsets (next offset to read).
        offsets: Vec<PartitionOffset>,
        /// The previous read, which did not show them yet.
        since_us: u64,
    },
    /// A broker fault was injected.
    BrokerFault {
        /// Broker index (0-based).
        broker: usize,
        /// `kill`, `restart`, `pause`, `resume`.
        action: String,
        /// The role that made it the target when the fault fired (`the group coordinator`,
        /// `the leader of partition 0`); `None` for a fault that named the broker by index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
    },
    /// A network fault: the worker's links to `broker` (every broker: `None`) were cut,
    /// slowed, or healed.
    LinkFault {
        /// Broker index (0-based); `None` for every broker.
        broker: Option<usize>,
        /// `cut`, `slow`, `heal`.
        action: String,
        /// The role that made it the target (`the group coordinator`, `every broker`).
        role: String,
    },
    /// The harness stopped a live worker that had done nothing — no event of its own, no
    /// progress of any other member — for `idle_ms` while the group still had lag: left
    /// alone it might have waited forever (judged by `check::wedged`).
    IdleStopped {
        /// The incarnation stopped.
        worker: Incarnation,
        /// How long it had been idle when the harness stopped it.
        idle_ms: u64,
    },
    /// A scheduled fault did not fire (the input was consumed before its trigger).
    FaultSkipped {
        /// The fault.
        fault: Fault,
    },
    /// After the faults, the group's lag reached 0.
    Drained,
    /// After the faults, the group's lag did not reach 0 within the timeout.
    Stuck {
        /// Lag per partition when the harness gave up.
        lag: Vec<(i32, i64)>,
        /// How long the harness waited.
        waited_ms: u64,
    },
}

/// One event with its time and the incarnation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the case began (`CLOCK_MONOTONIC`).
    pub at_us: u64,
    /// Incarnation (0 = orchestrator).
    pub inc: Incarnation,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// How the sink's final state relates to the input (what `S*` is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkSemantics {
    /// No state beyond the ledger of effects.
    Ledger,
    /// `key → id of the last message with that key` (upsert on a unique business key).
    Upsert,
    /// One row per applied effect (a plain insert).
    Append,
    /// Records on an output topic, read `read_committed`.
    OutputTopic,
}

/// Facts about the case that the checkers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseInfo {
    /// Input topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Backend the case ran on.
    pub backend: BackendKind,
    /// What `S*` means for the sink used.
    pub sink: SinkSemantics,
}

/// A row of sink state `S`: for upsert sinks `(key, id)`, for append sinks `(key, id)` once per row.
pub type StateRow = (String, u64);

/// The recorded history of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// [`TRACE_VERSION`].
    pub version: u32,
    /// Case facts.
    pub case: CaseInfo,
    /// Events ordered by time.
    pub events: Vec<Event>,
    /// Final sink state `S` (sorted), for upsert and append sinks.
    pub state: Option<Vec<StateRow>>,
    /// Input ids found on the output topic read `read_committed`, in read order (transactional sinks).
    pub output: Option<Vec<u64>>,
    /// Where the case's wall time went, in order: so a slow case explains itself.
    #[serde(default)]
    pub phases: Vec<Phase>,
}

/// One step of a case and how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// `create-topics`, `produce`, `incarnation 1`, `drain`, `read-back`, …
    pub name: String,
    /// Wall time in milliseconds.
    pub ms: u64,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ms >= 1000 {
            write!(f, "{} {:.1} s", self.name, self.ms as f64 / 1000.0)
        } else {
            write!(f, "{} {} ms", self.name, self.ms)
        }
    }
}

impl Trace {
    /// An empty trace for a case.
    pub fn new(case: CaseInfo) -> Self {
        Trace {
            version: TRACE_VERSION,
            case,
            events: Vec::new(),
            state: None,
            output: None,
            phases: Vec::new(),
        }
    }

    /// Input `I`: messages the broker acknowledged, with keys, in produce order.
    pub fn produced(&self) -> impl Iterator<Item = (&MessageRef, &str)> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Produced { msg, key } => Some((msg, key.as_str())),
            _ => None,
        })
    }

    /// Every applied effect, with its event.
    pub fn applied(&self) -> impl Iterator<Item = (&Event, &MessageRef)> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Applied { msg } => Some((e, msg)),
            _ => None,
        })
    }

    /// Sort events by time; ties keep insertion order.
    pub fn sort(&mut self) {
        self.events.sort_by_key(|e| e.at_us);
    }

    /// Crash-point hits per point name, the most any one incarnation reached.
    pub fn crash_point_hits(&self) -> std::collections::BTreeMap<String, u32> {
        let mut max = std::collections::BTreeMap::new();
        for e in &self.events {
            if let EventKind::CrashPointHit { point, hit } = &e.kind {
                let m = max.entry(point.clone()).or_insert(0);
                *m = (*m).max(*hit);
            }
        }
        max
    }
}

/// Microseconds of `CLOCK_MONOTONIC` (the same clock in every process of this machine).
pub(crate) fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

//! What went wrong, with the events that show it, in words an on-call engineer can act on.

use serde::{Deserialize, Serialize};

use crate::trace::{CommitMode, Incarnation, MessageRef};

/// Kinds of violation, most severe first (the order reports and shrinking use).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// An acknowledged input was never applied.
    Lost,
    /// An input's effect was applied more than once.
    Duplicated,
    /// The final sink state differs from applying every input once.
    StateMismatch,
    /// An input is missing from the committed output.
    OutputLost,
    /// An input appears more than once in the committed output.
    OutputDuplicated,
    /// A committed offset went backwards.
    CommitBackwards,
    /// An offset was committed past a message not yet processed (a loss waiting for a crash).
    CommittedTooFar,
    /// A restarted consumer was given a message below an offset the broker had been seen
    /// holding committed: a commit was lost or went backwards.
    RedeliveredBelowCommit,
    /// A live consumer stopped consuming: idle while records waited in a partition it owned.
    Wedged,
    /// The group did not drain after the faults stopped.
    Stuck,
}

/// The commit that moved past a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitWitness {
    /// Who committed (0: read from the broker by the harness).
    pub inc: Incarnation,
    /// The committed offset (next to read).
    pub offset: i64,
    /// When.
    pub at_us: u64,
    /// How (`None`: read from the broker).
    pub mode: Option<CommitMode>,
    /// For a commit seen on the broker during an incarnation: the previous read, which did
    /// not show it yet. The commit landed between `since_us` and `at_us`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_us: Option<u64>,
}

impl std::fmt::Display for CommitWitness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.inc, self.since_us) {
            (0, Some(since)) => write!(
                f,
                "offset {} was committed between {} and {} (seen on the broker; no process reported this commit — an auto-commit, an async commit, a commit outside the instrumented calls, or one whose report a crash cut off)",
                self.offset,
                ms(since),
                ms(self.at_us)
            ),
            (0, None) => write!(
                f,
                "offset {} was found committed on the broker at {}",
                self.offset,
                ms(self.at_us)
            ),
            (inc, _) => {
                write!(f, "offset {} was committed by incarnation {inc}", self.offset)?;
                if let Some(mode) = self.mode {
                    write!(f, " ({})", mode_word(mode))?;
                }
                write!(f, " at {}", ms(self.at_us))
            }
        }
    }
}

fn mode_word(mode: CommitMode) -> &'static str {
    match mode {
        CommitMode::Sync => "sync commit",
        CommitMode::Async => "async commit",
        CommitMode::Auto => "auto-commit",
        CommitMode::Transaction => "transaction",
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A fault an incarnation went through, in words, with when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultWitness {
    /// "its sink outage (failed write #3)", "its pause of 300 ms", "a rebalance".
    pub what: String,
    /// When (its last event).
    pub at_us: u64,
}

impl FaultWitness {
    pub(crate) fn new(what: String, at_us: u64) -> Self {
        FaultWitness { what, at_us }
    }
}

/// How an incarnation died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeathWitness {
    /// Which incarnation.
    pub inc: Incarnation,
    /// "crashed at `after-commit` hit #1", "was killed after 3 effects", …
    pub how: String,
    /// When.
    pub at_us: u64,
}

/// One violation with its witnesses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Violation {
    /// `count(m) = 0` for an acknowledged `m`.
    Lost {
        /// The message.
        msg: MessageRef,
        /// The first commit past it.
        commit: Option<CommitWitness>,
        /// The death of the committer after that commit.
        death: Option<DeathWitness>,
    },
    /// `count(m) > 1`.
    Duplicated {
        /// The message.
        msg: MessageRef,
        /// `count(m)`.
        count: usize,
        /// Incarnations that applied it, in order.
        by: Vec<Incarnation>,
        /// The death that caused the redelivery, if one preceded the second application.
        death: Option<DeathWitness>,
    },
    /// `S ≠ S*` for one key.
    StateMismatch {
        /// The business key.
        key: String,
        /// Ids `S*` holds for the key.
        expected: Vec<u64>,
        /// Ids `S` holds for the key.
        actual: Vec<u64>,
    },
    /// The input never appeared in the committed output.
    OutputLost {
        /// The message.
        msg: MessageRef,
    },
    /// The input appeared more than once in the committed output.
    OutputDuplicated {
        /// The message.
        msg: MessageRef,
        /// Times it appeared.
        count: usize,
        /// The death that caused the redelivery, if any.
        death: Option<DeathWitness>,
    },
    /// A committed offset lower than one committed before.
    CommitBackwards {
        /// Partition.
        partition: i32,
        /// Highest offset committed before.
        from: i64,
        /// The lower offset.
        to: i64,
        /// The commit that went back.
        commit: CommitWitness,
    },
    /// A commit past messages not yet applied.
    CommittedTooFar {
        /// The commit.
        partition: i32,
        /// The commit.
        commit: CommitWitness,
        /// The first message below the committed offset not applied when the commit was issued.
        unprocessed: MessageRef,
        /// How many such messages.
        count: usize,
    },
    /// An incarnation polled a message below the committed offset the broker was seen
    /// holding for its partition before that incarnation started: a redelivery beyond the
    /// uncommitted window.
    RedeliveredBelowCommit {
        /// The incarnation that polled it.
        inc: Incarnation,
        /// The first such message it polled.
        msg: MessageRef,
        /// The highest committed offset seen on the broker before the incarnation started.
        commit: CommitWitness,
        /// How many messages of the partition below that offset it polled.
        count: usize,
    },
    /// A live incarnation did nothing for the idle timeout while records waited past its
    /// position in a partition it owned; the harness had to stop it.
    Wedged {
        /// The incarnation.
        inc: Incarnation,
        /// The first owned partition with records waiting.
        partition: i32,
        /// Its position there: one past what it polled, or the committed offset if higher.
        next_offset: i64,
        /// Records waiting past its positions, over every partition it owned.
        waiting: u64,
        /// How long it had done nothing when the harness stopped it.
        idle_ms: u64,
        /// When that idle stretch began.
        since_us: u64,
        /// The last fault it (or the group) went through before the idle stretch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<FaultWitness>,
    },
    /// Lag remained after the drain timeout.
    Stuck {
        /// Lag per partition.
        lag: Vec<(i32, i64)>,
        /// How long the harness waited.
        waited_ms: u64,
        /// Effects were applied, yet no commit of the case's group was ever seen: the
        /// consumer commits elsewhere (another `group.id`) or never.
        #[serde(default, skip_serializing_if = "is_zero")]
        effects_without_commit: usize,
    },
}

impl Violation {
    /// The kind.
    pub fn kind(&self) -> ViolationKind {
        match self {
            Violation::Lost { .. } => ViolationKind::Lost,
            Violation::Duplicated { .. } => ViolationKind::Duplicated,
            Violation::StateMismatch { .. } => ViolationKind::StateMismatch,
            Violation::OutputLost { .. } => ViolationKind::OutputLost,
            Violation::OutputDuplicated { .. } => ViolationKind::OutputDuplicated,
            Violation::CommitBackwards { .. } => ViolationKind::CommitBackwards,
            Violation::CommittedTooFar { .. } => ViolationKind::CommittedTooFar,
            Violation::RedeliveredBelowCommit { .. } => ViolationKind::RedeliveredBelowCommit,
            Violation::Wedged { .. } => ViolationKind::Wedged,
            Violation::Stuck { .. } => ViolationKind::Stuck,
        }
    }

    /// The message involved, if one is.
    pub fn message(&self) -> Option<MessageRef> {
        match self {
            Violation::Lost { msg, .. }
            | Violation::Duplicated { msg, .. }
            | Violation::OutputLost { msg }
            | Violation::OutputDuplicated { msg, .. }
            | Violation::RedeliveredBelowCommit { msg, .. } => Some(*msg),
            Violation::CommittedTooFar { unprocessed, .. } => Some(*unprocessed),
            _ => None,
        }
    }
}

fn who(inc: Incarnation) -> String {
    if inc == 0 {
        "the broker".into()
    } else {
        format!("incarnation {inc}")
    }
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Lost { msg, commit, death } => {
                write!(f, "{msg} was lost: never applied to the sink")?;
                if let Some(c) = commit {
                    write!(f, "; {c} before it was processed")?;
                    if let Some(d) = death {
                        write!(f, ", then incarnation {} {} at {}", d.inc, d.how, ms(d.at_us))?;
                    }
                }
                Ok(())
            }
            Violation::Duplicated { msg, count, by, death } => {
                let by: Vec<String> = by.iter().map(|i| i.to_string()).collect();
                write!(f, "{msg} was applied {count} times (by incarnations {})", by.join(", "))?;
                if let Some(d) = death {
                    write!(f, ": incarnation {} {} at {} before its commit, so it was redelivered", d.inc, d.how, ms(d.at_us))?;
                }
                Ok(())
            }
            Violation::StateMismatch { key, expected, actual } => write!(
                f,
                "sink state for key {key:?} is {actual:?}, but applying every input once gives {expected:?}"
            ),
            Violation::OutputLost { msg } => write!(f, "{msg} is missing from the committed output"),
            Violation::OutputDuplicated { msg, count, death } => {
                write!(f, "{msg} appears {count} times in the committed (read_committed) output")?;
                if let Some(d) = death {
                    write!(f, ": incarnation {} {} at {}", d.inc, d.how, ms(d.at_us))?;
                }
                Ok(())
            }
            Violation::CommitBackwards { partition, from, to, commit } => write!(
                f,
                "committed offset of partition {partition} went backwards from {from} to {to} ({} at {})",
                who(commit.inc),
                ms(commit.at_us)
            ),
            Violation::CommittedTooFar { partition, commit, unprocessed, count } => write!(
                f,
                "committed too far on partition {partition}: {commit} while {count} message(s) below it were not yet processed, first {unprocessed} — a crash there loses them"
            ),
            Violation::RedeliveredBelowCommit { inc, msg, commit, count } => write!(
                f,
                "{msg} was delivered again to incarnation {inc} although {commit}, before that incarnation started ({count} message(s) below it delivered again): a commit was lost or went backwards"
            ),
            Violation::Wedged { inc, partition, next_offset, waiting, idle_ms, since_us, after } => {
                write!(f, "incarnation {inc} stayed alive but stopped consuming: it did nothing for {idle_ms} ms (from {}) while partition {partition} had records waiting from offset {next_offset} ({waiting} in all on the partitions it owned)", ms(*since_us))?;
                if let Some(a) = after {
                    write!(f, ", after {} at {}", a.what, ms(a.at_us))?;
                }
                write!(f, " — the harness stopped it; in production it would wait forever")
            }
            Violation::Stuck { lag, waited_ms, effects_without_commit } => {
                let lag: Vec<String> = lag.iter().filter(|(_, l)| *l > 0).map(|(p, l)| format!("partition {p}: {l}")).collect();
                write!(f, "the group did not drain within {waited_ms} ms after the faults stopped (lag {})", lag.join(", "))?;
                if *effects_without_commit > 0 {
                    write!(f, "; {effects_without_commit} effect(s) were applied but the broker never saw a commit of the case's group — a client built by your code must take its group.id from ctx.consumer_config(), and commit")?;
                }
                Ok(())
            }
        }
    }
}

//! Checkers: pure functions from a [`Trace`] to violations, with witnesses. No I/O.
//!
//! One function per anomaly (`lost`, `duplicated`, `state_mismatch`, `output_anomalies`,
//! `commit_backwards`, `committed_too_far`, `redelivered_below_commit`, `wedged`, `stuck`), then one
//! policy step per [`Guarantee`]
//! that decides which anomalies break it. A malformed trace (a harness bug) is an `Err`, never
//! a failing verdict.
//!
//! ```
//! use kafka_harness::check::{check, Guarantee};
//! use kafka_harness::trace::*;
//! use kafka_harness::BackendKind;
//! let mut t = Trace::new(CaseInfo { topic: "t".into(), group: "g".into(), partitions: 1,
//!     backend: BackendKind::Embedded, sink: SinkSemantics::Ledger });
//! let m = MessageRef { id: 0, partition: 0, offset: 0 };
//! t.events.push(Event { at_us: 1, inc: 0, kind: EventKind::Produced { msg: m, key: "k0".into() } });
//! t.events.push(Event { at_us: 2, inc: 0, kind: EventKind::Drained });
//! let verdict = check(&t, Guarantee::AtLeastOnce).unwrap();
//! assert!(!verdict.holds());
//! assert!(verdict.violations[0].to_string().starts_with("message 0 (partition 0, offset 0) was lost"));
//! ```

mod anomalies;
mod violation;
mod wedged;

use serde::{Deserialize, Serialize};

pub use anomalies::{
    commit_backwards, committed_too_far, duplicated, lost, output_anomalies,
    redelivered_below_commit, state_mismatch, stuck, validate,
};
pub use violation::{CommitWitness, DeathWitness, FaultWitness, Violation, ViolationKind};
pub use wedged::{wedged, BROKER_SETTLE_US};

use crate::trace::{SinkSemantics, Trace};
use crate::{Error, Result};

/// The delivery guarantee a consumer claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guarantee {
    /// No loss; commits never backwards and never past what was processed; no redelivery
    /// below a committed offset; never wedged; drains.
    AtLeastOnce,
    /// No duplicate effect; commits never backwards; no redelivery below a committed offset;
    /// never wedged; drains.
    AtMostOnce,
    /// Final sink state equals applying every input once, in order, and no loss; never
    /// wedged; drains.
    /// Needs a sink with state (upsert or append).
    EffectivelyOnce,
    /// The output topic, read `read_committed`, holds every input exactly once; never
    /// wedged; drains.
    /// Needs the output-topic sink and a backend with faithful transactions.
    ExactlyOnceTransactional,
}

impl std::fmt::Display for Guarantee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::AtMostOnce => "at-most-once",
            Guarantee::EffectivelyOnce => "effectively-once",
            Guarantee::ExactlyOnceTransactional => "exactly-once (transactional)",
        })
    }
}

impl Guarantee {
    /// The anomalies that break this guarantee.
    pub fn breaking_kinds(self) -> &'static [ViolationKind] {
        use ViolationKind::*;
        match self {
            Guarantee::AtLeastOnce => &[
                Lost,
                CommitBackwards,
                CommittedTooFar,
                RedeliveredBelowCommit,
                Wedged,
                Stuck,
            ],
            Guarantee::AtMostOnce => &[
                Duplicated,
                CommitBackwards,
                RedeliveredBelowCommit,
                Wedged,
                Stuck,
            ],
            Guarantee::EffectivelyOnce => &[Lost, StateMismatch, Wedged, Stuck],
            Guarantee::ExactlyOnceTransactional => &[OutputLost, OutputDuplicated, Wedged, Stuck],
        }
    }

    /// The sink semantics this guarantee can be judged with.
    pub fn accepts(self, sink: SinkSemantics) -> bool {
        match self {
            Guarantee::AtLeastOnce | Guarantee::AtMostOnce => sink != SinkSemantics::OutputTopic,
            Guarantee::EffectivelyOnce => {
                matches!(sink, SinkSemantics::Upsert | SinkSemantics::Append)
            }
            Guarantee::ExactlyOnceTransactional => sink == SinkSemantics::OutputTopic,
        }
    }
}

/// The outcome of checking one trace against one guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The guarantee checked.
    pub guarantee: Guarantee,
    /// Violations, most severe kind first.
    pub violations: Vec<Violation>,
}

impl Verdict {
    /// Whether the guarantee held.
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }

    /// The most severe kind of violation found.
    pub fn primary_kind(&self) -> Option<ViolationKind> {
        self.violations.iter().map(Violation::kind).min()
    }

    /// Distinct kinds, most severe first.
    pub fn kinds(&self) -> Vec<ViolationKind> {
        let mut k: Vec<_> = self.violations.iter().map(Violation::kind).collect();
        k.sort();
        k.dedup();
        k
    }
}

/// Check `trace` against `guarantee`: validate, run the anomaly checkers, keep what breaks it.
pub fn check(trace: &Trace, guarantee: Guarantee) -> Result<Verdict> {
    validate(trace)?;
    if !guarantee.accepts(trace.case.sink) {
        return Err(Error::Config(format!(
            "{guarantee} cannot be judged with a {:?} sink",
            trace.case.sink
        )));
    }
    let mut violations = Vec::new();
    for kind in guarantee.breaking_kinds() {
        violations.extend(match kind {
            ViolationKind::Lost => lost(trace),
            ViolationKind::Duplicated => duplicated(trace),
            ViolationKind::StateMismatch => state_mismatch(trace)?,
            ViolationKind::OutputLost => output_anomalies(trace)?
                .into_iter()
                .filter(|v| v.kind() == ViolationKind::OutputLost)
                .collect(),
            ViolationKind::OutputDuplicated => output_anomalies(trace)?
                .into_iter()
                .filter(|v| v.kind() == ViolationKind::OutputDuplicated)
                .collect(),
            ViolationKind::CommitBackwards => commit_backwards(trace),
            ViolationKind::CommittedTooFar => committed_too_far(trace),
            ViolationKind::RedeliveredBelowCommit => redelivered_below_commit(trace),
            ViolationKind::Wedged => wedged(trace),
            ViolationKind::Stuck => stuck(trace),
        });
    }
    violations.sort_by_key(Violation::kind);
    Ok(Verdict {
        guarantee,
        violations,
    })
}

#[cfg(test)]
mod tests;

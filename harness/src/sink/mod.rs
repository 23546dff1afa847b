//! Where effects land, and how the harness learns what landed.
//!
//! A SIGKILL must not make the record of effects lie, so every built-in sink records an
//! effect in the same atomic write as the effect itself, and the orchestrator reads the
//! sink's durable state back after the run:
//!
//! | sink | effect | record | `S*` |
//! |---|---|---|---|
//! | [`LedgerSink`] | one line appended (one `write(2)`) | the line | — (counts only) |
//! | [`UpsertSink`] | SQLite upsert on the business key, the last write wins | same transaction | last id per key |
//! | [`VersionedUpsertSink`] | the same, only from a later offset than the row's | same transaction | last id per key |
//! | [`AppendSink`] | SQLite insert (not idempotent) | same transaction | each input once |
//! | [`OutputTopicSink`] | record on the output topic, in a Kafka transaction | the topic, read `read_committed` | each input once |
//! | [`PostgresSink`] | the user's own SQL, by the user's own client | the user's rows, read back by the user's query | each input once, or last per key |
//!
//! Bring your own by implementing [`SinkFactory`] (opened in the worker, read back in the
//! orchestrator) and [`Sink`].

mod ledger;
mod output;
mod postgres;
mod sqlite;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use ledger::LedgerSink;
pub use output::OutputTopicSink;
pub use postgres::PostgresSink;
pub use sqlite::{AppendSink, UpsertSink, VersionedUpsertSink};

use crate::trace::{Incarnation, MessageRef, SinkSemantics, StateRow};
use crate::worker::Record;

/// When and by whom an effect was applied: sinks store it with the effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// Incarnation that applied it.
    pub inc: Incarnation,
    /// µs since the case began.
    pub at_us: u64,
}

/// A sink write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The schedule made this write fail; retrying may succeed.
    #[error("sink write #{write} failed (injected, transient)")]
    Transient {
        /// 1-based write index in the incarnation.
        write: u32,
    },
    /// The schedule made this write fail; retrying will not help.
    #[error("sink write #{write} failed (injected, permanent)")]
    Permanent {
        /// 1-based write index in the incarnation.
        write: u32,
    },
    /// The write hung past its deadline (injected); whether it applied is unknown to the caller
    /// (it did not).
    #[error("sink write #{write} timed out after {millis} ms (injected)")]
    TimedOut {
        /// 1-based write index in the incarnation.
        write: u32,
        /// How long it hung.
        millis: u64,
    },
    /// The sink's own storage failed.
    #[error("sink storage: {0}")]
    Storage(String),
}

impl SinkError {
    /// Whether retrying the same write may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SinkError::Transient { .. } | SinkError::TimedOut { .. }
        )
    }
}

/// Applies effects, in the worker process.
pub trait Sink: Send {
    /// Apply the effect of `record` durably, recording `stamp` with it atomically.
    fn apply(&mut self, record: &Record, stamp: Stamp) -> Result<(), SinkError>;
}

/// What the orchestrator needs to read a sink back after the run.
#[derive(Debug, Clone)]
pub struct ReadBackContext<'a> {
    /// The case directory (the same one the worker's sink was opened in).
    pub dir: &'a Path,
    /// Client config pointing at the case's cluster.
    pub client: rdkafka::ClientConfig,
    /// The case's output topic.
    pub output_topic: &'a str,
}

/// A sink's durable state after the run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReadBack {
    /// Every applied effect, with its stamp.
    pub applied: Vec<(Stamp, MessageRef)>,
    /// Final state `S` (upsert and append sinks).
    pub state: Option<Vec<StateRow>>,
    /// Ids on the output topic, read `read_committed` (output-topic sinks).
    pub output: Option<Vec<u64>>,
}

/// A kind of sink: opened in each worker incarnation, read back once by the orchestrator.
pub trait SinkFactory: Send + Sync {
    /// Short name for reports.
    fn name(&self) -> &str;
    /// What `S*` means for this sink.
    fn semantics(&self) -> SinkSemantics;
    /// Set the sink up for a case, before any worker starts (orchestrator side): e.g. create
    /// the case's schema. Default: nothing.
    fn prepare(&self, _dir: &Path) -> crate::Result<()> {
        Ok(())
    }

    /// Open the sink in the case directory (worker side).
    fn open(&self, dir: &Path) -> Result<Box<dyn Sink>, SinkError>;
    /// Read the durable state back (orchestrator side, after every worker is dead).
    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack>;
}

//! One error type per layer, with structured fields (see STYLE.md §8).
//!
//! A harness error is never a consumer bug: a violated guarantee is a
//! [`Verdict`](crate::Verdict), not an `Error`.

use std::path::PathBuf;

/// The crate's `Result` alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the harness itself (not in the consumer under test).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Starting, reaching or faulting the Kafka cluster failed.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The worker process could not be started or its protocol was broken.
    #[error("worker: {0}")]
    Worker(String),
    /// A schedule file could not be read or is not a valid schedule.
    #[error("schedule {path}: {reason}")]
    Schedule {
        /// The file that was read (or `<inline>`).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A replayed schedule tested nothing it names: some of its faults never fired (a crash
    /// point renamed or removed, a hit count the code no longer reaches). A saved schedule is
    /// a regression test, so this fails it.
    #[error("replay of {path} is vacuous: {} never fired — the consumer's crash points (most hits in one incarnation) are: {}. Update the schedule to a point that exists, or delete it", .faults.join("; "), .points.join(", "))]
    ReplayVacuous {
        /// The schedule file.
        path: PathBuf,
        /// The faults that never fired, in words.
        faults: Vec<String>,
        /// The crash points this consumer hit on replay, with their most hits.
        points: Vec<String>,
    },
    /// The recorded history is not a well-formed trace: a harness bug, not a verdict.
    #[error("malformed trace: {0}")]
    MalformedTrace(String),
    /// A Kafka client call made by the orchestrator failed.
    #[error("kafka client ({during}): {source}")]
    Kafka {
        /// What the harness was doing.
        during: String,
        /// The client error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// The guarantee asked for cannot be judged faithfully on this backend.
    #[error("{guarantee} cannot be checked on the {backend} backend: {reason}")]
    Unsupported {
        /// The guarantee or feature asked for.
        guarantee: String,
        /// The backend in use.
        backend: String,
        /// Why not.
        reason: String,
    },
    /// Reading or writing the case directory, ledger or failure file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sink could not be opened or read back.
    #[error("sink: {0}")]
    Sink(String),
    /// The harness was configured in a way that cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// A case was abandoned (its workers killed, its topics deleted) because an earlier case
    /// of the same check already failed and the machine is needed to shrink that one. Internal
    /// to a check: a cancelled case runs again if generation goes on, and a check never
    /// returns this.
    #[error("case cancelled: an earlier case failed first")]
    Cancelled,
}

impl Error {
    pub(crate) fn kafka(during: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            during: during.into(),
            source,
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

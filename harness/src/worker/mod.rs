//! The consumer under test runs in a child process that dies by SIGKILL when its schedule
//! says so.
//!
//! ```text
//!  test process (orchestrator)                 worker process (same test binary, re-executed)
//!  ─────────────────────────────               ───────────────────────────────────────────────
//!  Harness::check(worker) ── spawn ──────────► Harness::check(worker) sees KAFKA_HARNESS_WORKER_SPEC
//!       watches lag, ledger, exit                 → worker(&mut WorkerCtx)  (the user's code)
//!       SIGKILL (orchestrator faults)             → ctx.crash_point("x") → SIGKILL itself
//! ```
//!
//! The worker process is the user's own test binary, started again with libtest's
//! `<test name> --exact` filter (the way rusty-fork does it), so no extra binary is needed and
//! it works under `cargo test` and `cargo nextest`. A binary that is not a test re-executes
//! itself with its own arguments.

mod asynchronous;
mod consumer;
mod context;
mod process;
mod producer;
mod recorder;
pub(crate) mod spec;

use rdkafka::message::{Headers, Message};

pub use asynchronous::on_tokio;
pub use consumer::{points, CommitMode, Consumer, HarnessContext, Revoking};
pub use context::{crash_point, SinkHandle, WorkerCtx, WorkerError, TRANSACTION_TIMEOUT_MS};
pub use producer::TransactionalProducer;

pub(crate) use context::serve;
pub(crate) use process::{Launch, WorkerProcess};
pub(crate) use recorder::{effect_go_path_of, fault_go_path_of, go_path_of};

use crate::trace::MessageRef;

/// One input record as the consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Id, partition, offset.
    pub msg: MessageRef,
    /// Business key (the Kafka message key).
    pub key: String,
}

/// Whether `error` is one a broker fault causes and a consumer should ride out (log it, go on,
/// let the client reconnect and the next commit cover this one): the connection dropped, the
/// leader or the coordinator moved or is loading, a request timed out. A generation error
/// (the group moved on without this member: a zombie) is not one of them.
///
/// ```
/// use rdkafka::error::KafkaError;
/// use rdkafka::types::RDKafkaErrorCode;
/// use kafka_harness::worker::transient;
/// assert!(transient(&KafkaError::ConsumerCommit(RDKafkaErrorCode::CoordinatorNotAvailable)));
/// assert!(!transient(&KafkaError::ConsumerCommit(RDKafkaErrorCode::UnknownMemberId)));
/// ```
pub fn transient(error: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        error.rdkafka_error_code(),
        Some(
            C::NotCoordinator
                | C::CoordinatorLoadInProgress
                | C::CoordinatorNotAvailable
                | C::OperationTimedOut
                | C::RequestTimedOut
                | C::BrokerTransportFailure
                | C::AllBrokersDown
                | C::NetworkException
                | C::NotLeaderForPartition
                | C::LeaderNotAvailable
                | C::NotEnoughReplicas
                | C::NotEnoughReplicasAfterAppend
        )
    )
}

/// The record header that carries a workload message's id (decimal ASCII). The harness
/// identifies messages by it, so the payload is the user's own (see [`crate::Harness::payload`]).
pub const ID_HEADER: &str = "kafka-harness-id";

/// The id of a workload message, read from its [`ID_HEADER`]; works on every rdkafka message
/// type (`BorrowedMessage` from a `BaseConsumer`, the same from a `StreamConsumer`'s stream,
/// `OwnedMessage` after `detach()`). `None` for a message the harness did not produce.
///
/// ```
/// use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
/// let m = OwnedMessage::new(
///     Some(br#"{"order":7}"#.to_vec()), Some(b"k1".to_vec()), "t".into(),
///     Timestamp::NotAvailable, 0, 7,
///     Some(OwnedHeaders::new().insert(Header { key: kafka_harness::worker::ID_HEADER, value: Some("7") })),
/// );
/// assert_eq!(kafka_harness::worker::message_id(&m), Some(7));
/// ```
pub fn message_id<M: Message>(m: &M) -> Option<u64> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == ID_HEADER)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .and_then(|v| v.trim().parse().ok())
}

impl Record {
    /// The payload the harness produces for message `id` with `key` unless the harness was
    /// given a payload generator.
    pub(crate) fn default_payload(id: u64, key: &str) -> Vec<u8> {
        format!("{id}:{key}").into_bytes()
    }

    /// The record a workload message stands for (id from its header, key from its key);
    /// `None` for a message the harness did not produce.
    pub fn from_message<M: Message>(m: &M) -> Option<Record> {
        let id = message_id(m)?;
        let key = std::str::from_utf8(m.key()?).ok()?;
        Some(Record {
            msg: MessageRef {
                id,
                partition: m.partition(),
                offset: m.offset(),
            },
            key: key.to_string(),
        })
    }
}

/// Whether this process is a worker the harness started (it re-runs your test binary with a
/// worker spec). A test that runs several harnesses with different names in one function
/// gets, in a worker process, an error from every `check` / `run_schedule` but the one it
/// serves; skip those with this.
///
/// ```
/// assert!(!kafka_harness::worker::is_worker_process());
/// ```
pub fn is_worker_process() -> bool {
    std::env::var_os(crate::cluster::ENV_WORKER_SPEC).is_some()
}

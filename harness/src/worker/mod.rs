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

mod consumer;
mod context;
mod process;
mod producer;
mod recorder;
pub(crate) mod spec;

use rdkafka::message::{BorrowedMessage, Message};

pub use consumer::{points, CommitMode, Consumer, HarnessContext};
pub use context::{SinkHandle, WorkerCtx, WorkerError};
pub use producer::TransactionalProducer;

pub(crate) use context::serve;
pub(crate) use process::{Launch, WorkerProcess};
pub(crate) use recorder::go_path_of;

use crate::trace::MessageRef;

/// One input record as the consumer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Id, partition, offset.
    pub msg: MessageRef,
    /// Business key (the Kafka message key).
    pub key: String,
}

impl Record {
    /// The payload the harness produces for message `id` with `key`.
    pub(crate) fn payload(id: u64, key: &str) -> String {
        format!("{id}:{key}")
    }

    /// Parse a harness-produced message; `None` for anything else.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Option<Record> {
        let payload = std::str::from_utf8(m.payload()?).ok()?;
        let (id, key) = payload.split_once(':')?;
        Some(Record {
            msg: MessageRef {
                id: id.parse().ok()?,
                partition: m.partition(),
                offset: m.offset(),
            },
            key: key.to_string(),
        })
    }
}

//! The instrumented transactional producer for consume-transform-produce consumers.
//!
//! Its `transactional.id` is the same for every incarnation of a case, so a restarted worker
//! fences the one that crashed (`init_transactions` aborts its open transaction).
//! Crash points: `before-commit-transaction` (offsets already sent to the transaction) and
//! `after-commit-transaction`.

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};

use super::consumer::{offsets_of, points, Consumer};
use super::recorder::Recorder;
use super::Record;
use crate::trace::{CommitMode, EventKind, PartitionOffset};

/// How long `init_transactions`, `send_offsets_to_transaction`, `commit_transaction` and
/// `abort_transaction` may block: a call that gets no answer (its coordinator down or frozen)
/// returns librdkafka's retriable timeout error then.
const TXN_TIMEOUT: Duration = Duration::from_secs(10);

/// A transactional producer writing to the case's output topic.
pub struct TransactionalProducer {
    /// Dropped by hand in `Drop`, inside a recorded client call: closing can block.
    inner: ManuallyDrop<BaseProducer>,
    recorder: Arc<Recorder>,
    output_topic: String,
    pending_offsets: Vec<PartitionOffset>,
}

impl TransactionalProducer {
    pub(crate) fn new(
        config: &rdkafka::ClientConfig,
        recorder: Arc<Recorder>,
        output_topic: &str,
    ) -> KafkaResult<Self> {
        let inner: BaseProducer = config.create()?;
        recorder.client_call("init_transactions", || inner.init_transactions(TXN_TIMEOUT))?;
        Ok(TransactionalProducer {
            inner: ManuallyDrop::new(inner),
            recorder,
            output_topic: output_topic.to_string(),
            pending_offsets: Vec::new(),
        })
    }

    /// Begin a transaction.
    pub fn begin(&mut self) -> KafkaResult<()> {
        self.pending_offsets.clear();
        self.inner.begin_transaction()
    }

    /// Write the output for `record` (its id, keyed by its business key) in the open transaction.
    pub fn send(&self, record: &Record) -> KafkaResult<()> {
        let payload = record.msg.id.to_string();
        let mut r = BaseRecord::to(&self.output_topic)
            .key(record.key.as_str())
            .payload(payload.as_str());
        loop {
            match self.inner.send(r) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    self.inner.poll(Duration::from_millis(10));
                    r = back;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Add the consumer's current position to the transaction (`send_offsets_to_transaction`).
    pub fn send_offsets(&mut self, consumer: &Consumer) -> KafkaResult<()> {
        let position = consumer.inner().position()?;
        let metadata = consumer.inner().group_metadata().ok_or_else(|| {
            rdkafka::error::KafkaError::Subscription(
                "the consumer has no group metadata yet".into(),
            )
        })?;
        let inner = &self.inner;
        self.recorder
            .client_call("send_offsets_to_transaction", || {
                inner.send_offsets_to_transaction(&position, &metadata, TXN_TIMEOUT)
            })?;
        self.pending_offsets = offsets_of(&position);
        Ok(())
    }

    /// Commit the transaction (crash points around it).
    pub fn commit(&mut self) -> KafkaResult<()> {
        self.recorder.crash_point(points::BEFORE_COMMIT_TRANSACTION);
        let requested_at_us = self.recorder.now_us();
        let inner = &self.inner;
        self.recorder.client_call("commit_transaction", || {
            inner.commit_transaction(TXN_TIMEOUT)
        })?;
        let offsets = std::mem::take(&mut self.pending_offsets);
        if !offsets.is_empty() {
            self.recorder.record(EventKind::Committed {
                offsets,
                mode: CommitMode::Transaction,
                requested_at_us,
            });
        }
        self.recorder.crash_point(points::AFTER_COMMIT_TRANSACTION);
        Ok(())
    }

    /// Abort the transaction. librdkafka purges the transaction's outstanding messages and
    /// waits until their delivery reports are served, which on a `BaseProducer` happens only
    /// when the application polls: so abort in short rounds and poll between them (an abort
    /// that timed out may be called again), up to the usual 10 s.
    pub fn abort(&mut self) -> KafkaResult<()> {
        self.pending_offsets.clear();
        let inner = &self.inner;
        self.recorder.client_call("abort_transaction", || {
            let deadline = std::time::Instant::now() + TXN_TIMEOUT;
            loop {
                match inner.abort_transaction(Duration::from_millis(200)) {
                    Err(rdkafka::error::KafkaError::Transaction(e))
                        if e.is_retriable() && std::time::Instant::now() < deadline =>
                    {
                        inner.poll(Duration::from_millis(50));
                    }
                    other => return other,
                }
            }
        })
    }

    /// The underlying rdkafka producer.
    pub fn inner(&self) -> &BaseProducer {
        &self.inner
    }
}

/// Closing the producer (purge, a short flush, destroy) can wait on brokers: recorded as a
/// client call, like the consumer's close.
impl Drop for TransactionalProducer {
    fn drop(&mut self) {
        let recorder = self.recorder.clone();
        recorder.client_call("close", || {
            // SAFETY: `inner` is dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
            Ok::<(), std::convert::Infallible>(())
        });
    }
}

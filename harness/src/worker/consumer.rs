//! The instrumented consumer the worker context hands out: an rdkafka `BaseConsumer` whose
//! calls carry built-in crash points and leave events in the trace.
//!
//! Built-in crash points: `after-poll` (per message), `before-commit` / `after-commit`
//! (sync), `before-commit-async` / `after-commit-async`, `revoke` (before partitions are
//! taken away) and `assign` (after partitions are given).

use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::recorder::Recorder;
use super::Record;
use crate::trace::{CommitMode as TraceMode, EventKind, PartitionOffset, RebalancePhase};

pub use rdkafka::consumer::CommitMode;

/// Crash point names the instrumented clients hit.
pub mod points {
    /// After `poll` returned a message, before the caller sees it.
    pub const AFTER_POLL: &str = "after-poll";
    /// Before a synchronous commit is sent.
    pub const BEFORE_COMMIT: &str = "before-commit";
    /// After a synchronous commit succeeded.
    pub const AFTER_COMMIT: &str = "after-commit";
    /// Before an asynchronous commit is sent.
    pub const BEFORE_COMMIT_ASYNC: &str = "before-commit-async";
    /// After an asynchronous commit was handed to the client.
    pub const AFTER_COMMIT_ASYNC: &str = "after-commit-async";
    /// In the rebalance callback, before partitions are revoked.
    pub const REVOKE: &str = "revoke";
    /// In the rebalance callback, after partitions are assigned.
    pub const ASSIGN: &str = "assign";
    /// Before a sink write.
    pub const BEFORE_SINK_WRITE: &str = "before-sink-write";
    /// After a sink write succeeded.
    pub const AFTER_SINK_WRITE: &str = "after-sink-write";
    /// After offsets were sent to the transaction, before `commit_transaction`.
    pub const BEFORE_COMMIT_TRANSACTION: &str = "before-commit-transaction";
    /// After `commit_transaction` returned.
    pub const AFTER_COMMIT_TRANSACTION: &str = "after-commit-transaction";
}

/// The rdkafka context of the instrumented consumer: rebalances and commit callbacks.
pub struct HarnessContext {
    recorder: Arc<Recorder>,
    /// A sync commit is in flight: its callback is recorded by `commit` itself.
    sync_in_flight: Mutex<bool>,
    /// Request times of async commits in flight, oldest first.
    async_in_flight: Mutex<VecDeque<u64>>,
    /// The worker's own revoke handler (e.g. commit what was processed).
    on_revoke: Mutex<Option<RevokeHook>>,
    topic: String,
    /// librdkafka auto-commits unless `enable.auto.commit=false`.
    auto_commit: bool,
}

type RevokeHook = Box<dyn FnMut(&Revoking<'_>) + Send>;

/// What a revoke handler can do while partitions are being taken away.
pub struct Revoking<'a> {
    base: &'a BaseConsumer<HarnessContext>,
    partitions: Vec<i32>,
}

impl Revoking<'_> {
    /// The partitions being revoked.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Commit offsets (each the next offset to read) before the partitions go.
    pub fn commit_offsets(&self, offsets: &[PartitionOffset], mode: CommitMode) -> KafkaResult<()> {
        let ctx = self.base.context();
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            tpl.add_partition_offset(&ctx.topic, o.partition, Offset::Offset(o.offset))?;
        }
        commit_tpl(self.base, &tpl, mode)
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

pub(crate) fn offsets_of(tpl: &TopicPartitionList) -> Vec<PartitionOffset> {
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(PartitionOffset {
                partition: e.partition(),
                offset: o,
            }),
            _ => None,
        })
        .collect()
}

impl ClientContext for HarnessContext {}

impl ConsumerContext for HarnessContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.recorder.record(EventKind::Rebalanced {
                phase: RebalancePhase::Revoke,
                partitions: partitions(tpl),
            });
            self.recorder.crash_point(points::REVOKE);
            let mut hook = self.on_revoke.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hook) = hook.as_mut() {
                hook(&Revoking {
                    base,
                    partitions: partitions(tpl),
                });
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            self.recorder.record(EventKind::Rebalanced {
                phase: RebalancePhase::Assign,
                partitions: partitions(tpl),
            });
            self.recorder.crash_point(points::ASSIGN);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if *self
            .sync_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            return;
        }
        let requested = self
            .async_in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        let offsets = offsets_of(offsets);
        if result.is_err() || offsets.is_empty() {
            return;
        }
        let now = self.recorder.now_us();
        let (mode, requested_at_us) = match requested {
            Some(at) => (TraceMode::Async, at),
            None if self.auto_commit => (TraceMode::Auto, now),
            // A sync commit's callback served after `commit` returned: already recorded.
            None => return,
        };
        self.recorder.record_at(
            now,
            EventKind::Committed {
                offsets,
                mode,
                requested_at_us,
            },
        );
    }
}

/// The consumer under test, subscribed to the case's input topic.
///
/// Use it like an rdkafka `BaseConsumer`; reach the raw one with [`Consumer::inner`].
pub struct Consumer {
    /// Dropped by hand in `Drop`, inside a recorded client call: closing can block.
    inner: ManuallyDrop<BaseConsumer<HarnessContext>>,
    recorder: Arc<Recorder>,
    topic: String,
}

impl Consumer {
    pub(crate) fn new(
        config: &rdkafka::ClientConfig,
        recorder: Arc<Recorder>,
        topic: &str,
    ) -> KafkaResult<Self> {
        let context = HarnessContext {
            recorder: recorder.clone(),
            sync_in_flight: Mutex::new(false),
            async_in_flight: Mutex::new(VecDeque::new()),
            on_revoke: Mutex::new(None),
            topic: topic.to_string(),
            auto_commit: config
                .get("enable.auto.commit")
                .is_none_or(|v| v != "false"),
        };
        let inner: BaseConsumer<HarnessContext> = config.create_with_context(context)?;
        inner.subscribe(&[topic])?;
        Ok(Consumer {
            inner: ManuallyDrop::new(inner),
            recorder,
            topic: topic.to_string(),
        })
    }

    /// Poll for one record (crash point `after-poll` per message).
    ///
    /// `None` when nothing arrived within `timeout`. A message the harness did not produce is
    /// an error, not a panic.
    pub fn poll(&self, timeout: Duration) -> Option<KafkaResult<Record>> {
        let msg = match self.inner.poll(timeout)? {
            Ok(m) => m,
            Err(e) => return Some(Err(e)),
        };
        let record = match Record::from_message(&msg) {
            Some(r) => r,
            None => {
                return Some(Err(KafkaError::MessageConsumption(
                    rdkafka::types::RDKafkaErrorCode::BadMessage,
                )));
            }
        };
        drop(msg);
        self.recorder.record(EventKind::Polled { msg: record.msg });
        self.recorder.crash_point(points::AFTER_POLL);
        Some(Ok(record))
    }

    /// Commit the consumer's current position on every assigned partition.
    pub fn commit(&self, mode: CommitMode) -> KafkaResult<()> {
        let position = self.inner.position()?;
        self.commit_tpl(&position, mode)
    }

    /// Commit "next offset to read = record's offset + 1" for the record's partition.
    pub fn commit_record(&self, record: &Record, mode: CommitMode) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            record.msg.partition,
            Offset::Offset(record.msg.offset + 1),
        )?;
        self.commit_tpl(&tpl, mode)
    }

    /// Commit explicit offsets (each the next offset to read).
    pub fn commit_offsets(&self, offsets: &[PartitionOffset], mode: CommitMode) -> KafkaResult<()> {
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            tpl.add_partition_offset(&self.topic, o.partition, Offset::Offset(o.offset))?;
        }
        self.commit_tpl(&tpl, mode)
    }

    fn commit_tpl(&self, tpl: &TopicPartitionList, mode: CommitMode) -> KafkaResult<()> {
        commit_tpl(&self.inner, tpl, mode)
    }

    /// Run `hook` in the rebalance callback before partitions are revoked (after the `revoke`
    /// crash point): the place to commit what was processed.
    ///
    /// librdkafka serves the rebalance callback inside [`Consumer::poll`], on the thread that
    /// polls (and again when the consumer is closed or dropped, for what it still owns): while
    /// the loop that polls is processing a record, no revoke can run. A consumer that processes
    /// on other threads must itself make the hook wait for, or account for, work in flight.
    pub fn on_revoke(&self, hook: impl FnMut(&Revoking<'_>) + Send + 'static) {
        *self
            .inner
            .context()
            .on_revoke
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    /// Mark `record` processed for the next auto-commit (with `enable.auto.offset.store=false`):
    /// the auto-commit then commits `record`'s offset + 1, exactly as rdkafka's
    /// `store_offset_from_message` would.
    ///
    /// rdkafka's `store_offset(topic, partition, offset)` calls `rd_kafka_offset_store`, which
    /// itself stores `offset + 1`: so the record's own offset is passed, not offset + 1 (which
    /// would skip the next message). The offsets-module test compares this with rdkafka on a
    /// real broker.
    pub fn store_offset(&self, record: &Record) -> KafkaResult<()> {
        self.inner
            .store_offset(&self.topic, record.msg.partition, record.msg.offset)
    }

    /// The underlying rdkafka consumer (crash points and events are not added to direct calls).
    pub fn inner(&self) -> &BaseConsumer<HarnessContext> {
        &self.inner
    }

    /// The input topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// Commit with crash points around it and a `Committed` event once it succeeded.
/// Closing a consumer (leave the group, the revoke callback, a final auto-commit) waits on the
/// group coordinator: recorded as a client call, so a close that blocks after a fault is not
/// mistaken for an idle worker.
impl Drop for Consumer {
    fn drop(&mut self) {
        let recorder = self.recorder.clone();
        recorder.client_call("close", || {
            // SAFETY: `inner` is dropped exactly once, here, and never used again.
            unsafe { ManuallyDrop::drop(&mut self.inner) };
            Ok::<(), std::convert::Infallible>(())
        });
    }
}

fn commit_tpl(
    base: &BaseConsumer<HarnessContext>,
    tpl: &TopicPartitionList,
    mode: CommitMode,
) -> KafkaResult<()> {
    let ctx = base.context();
    let recorder = &ctx.recorder;
    match mode {
        CommitMode::Sync => {
            recorder.crash_point(points::BEFORE_COMMIT);
            let requested_at_us = recorder.now_us();
            *ctx.sync_in_flight.lock().unwrap_or_else(|p| p.into_inner()) = true;
            let result = recorder.client_call("commit", || base.commit(tpl, CommitMode::Sync));
            *ctx.sync_in_flight.lock().unwrap_or_else(|p| p.into_inner()) = false;
            result?;
            let offsets = offsets_of(tpl);
            if !offsets.is_empty() {
                recorder.record(EventKind::Committed {
                    offsets,
                    mode: TraceMode::Sync,
                    requested_at_us,
                });
            }
            recorder.crash_point(points::AFTER_COMMIT);
            Ok(())
        }
        CommitMode::Async => {
            recorder.crash_point(points::BEFORE_COMMIT_ASYNC);
            ctx.async_in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(recorder.now_us());
            if let Err(e) = base.commit(tpl, CommitMode::Async) {
                ctx.async_in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_back();
                return Err(e);
            }
            recorder.crash_point(points::AFTER_COMMIT_ASYNC);
            Ok(())
        }
    }
}

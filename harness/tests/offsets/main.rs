//! Every wrapper method that moves a consumer group's committed offset commits, on a real
//! broker, exactly what the plain rdkafka call with the same intent commits — and both equal
//! the offset this file computes by hand, so an off-by-one on either side fails the test.
//!
//! Each test runs the same intent twice on a 1-partition topic of 5 messages:
//! - through the harness: the worker's first incarnation polls 3 records (offsets 0, 1, 2),
//!   makes the one wrapper call and returns; the harness reads the group's committed offset
//!   from the broker after that incarnation (the trace's first `BrokerCommitted`), then
//!   restarts the worker to drain the rest;
//! - with plain rdkafka clients on a topic and group of its own, read back by a separate,
//!   non-subscribed consumer of that group.
//!
//! A method that takes a record acts on the record at offset 1, *not* the last one polled:
//! the broker must then hold 2 (a method that committed the position would show 3, one that
//! stored offset + 2 would show 3 too). A method that acts on the position must leave 3.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use kafka_harness::cluster::Cluster;
use kafka_harness::schedule::{Schedule, Workload};
use kafka_harness::trace::{EventKind, Exit, PartitionOffset, Trace};
use kafka_harness::worker::{CommitMode, Consumer, Record, WorkerCtx, WorkerError};
use kafka_harness::{Guarantee, Harness};
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

/// Cases share the process-wide cluster; run them one at a time on 2 cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Messages in the input topic (one partition, offsets 0..5).
const MESSAGES: u32 = 5;
/// Records polled before the call under test (offsets 0, 1, 2): the position is then 3.
const POLLED: usize = 3;
/// The record a record-taking method acts on: not the last one polled.
const ACTED_ON: usize = 1;
/// What the broker must hold after acting on the record at offset 1: "next to read" = 2.
const AFTER_RECORD: i64 = 2;
/// What the broker must hold after committing the position: 3 records read, next is 3.
const AFTER_POSITION: i64 = 3;
/// How long an auto-commit or an async commit gets to land (auto.commit.interval.ms = 100).
const SETTLE: Duration = Duration::from_secs(1);
/// Longest wait for records, a rebalance or a coordinator.
const PATIENCE: Duration = Duration::from_secs(30);
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Consumer settings both sides use (the harness's defaults, repeated for the plain side).
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    ("session.timeout.ms", "1000"),
    ("heartbeat.interval.ms", "200"),
    ("fetch.wait.max.ms", "50"),
];

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn manual() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.auto.commit", "false");
    c
}

/// Auto-commit every 100 ms of offsets the application stores itself.
fn auto_commit_stored() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "100");
    c
}

// ───────────────────────────── the wrapper side (in the worker) ─────────────────────────────

/// Poll exactly `n` records; they must be offsets 0..n of partition 0.
fn poll_records(consumer: &Consumer, n: usize) -> Result<Vec<Record>, WorkerError> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        if Instant::now() > deadline {
            return Err(format!("polled {} of {n} records in {PATIENCE:?}", out.len()).into());
        }
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            out.push(r?);
        }
    }
    let got: Vec<(i32, i64)> = out
        .iter()
        .map(|r| (r.msg.partition, r.msg.offset))
        .collect();
    let want: Vec<(i32, i64)> = (0..n as i64).map(|o| (0, o)).collect();
    if got != want {
        return Err(format!("polled (partition, offset) {got:?}, expected {want:?}").into());
    }
    Ok(out)
}

/// Keep the consumer polling (serving commit callbacks and the auto-commit timer) for `d`.
fn keep_polling(consumer: &Consumer, d: Duration) -> Result<(), WorkerError> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if let Some(r) = consumer.poll(Duration::from_millis(50)) {
            r?;
        }
    }
    Ok(())
}

/// Incarnations ≥ 2: read the rest and commit it, so the case drains quickly.
fn drain(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let consumer = ctx.consumer(&manual())?;
    while ctx.running() {
        if let Some(r) = consumer.poll(Duration::from_millis(100)) {
            consumer.commit_record(&r?, CommitMode::Sync)?;
        }
    }
    Ok(())
}

fn commit_position(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&manual())?;
    poll_records(&consumer, POLLED)?;
    consumer.commit(CommitMode::Sync)?;
    Ok(())
}

fn commit_record_sync(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&manual())?;
    let records = poll_records(&consumer, POLLED)?;
    consumer.commit_record(&records[ACTED_ON], CommitMode::Sync)?;
    Ok(())
}

fn commit_record_async(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&manual())?;
    let records = poll_records(&consumer, POLLED)?;
    consumer.commit_record(&records[ACTED_ON], CommitMode::Async)?;
    keep_polling(&consumer, SETTLE)
}

fn commit_offsets(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&manual())?;
    let records = poll_records(&consumer, POLLED)?;
    let acted = records[ACTED_ON].msg;
    consumer.commit_offsets(
        &[PartitionOffset {
            partition: acted.partition,
            offset: acted.offset + 1,
        }],
        CommitMode::Sync,
    )?;
    Ok(())
}

fn store_offset(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&auto_commit_stored())?;
    let records = poll_records(&consumer, POLLED)?;
    consumer.store_offset(&records[ACTED_ON])?;
    // The auto-commit timer commits what was stored; returning closes the consumer.
    keep_polling(&consumer, SETTLE)
}

fn revoke_commit(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    if ctx.incarnation() > 1 {
        return drain(ctx);
    }
    let consumer = ctx.consumer(&manual())?;
    let records = poll_records(&consumer, POLLED)?;
    let acted = records[ACTED_ON].msg;
    let outcome: Arc<Mutex<Option<KafkaResult<()>>>> = Arc::new(Mutex::new(None));
    let seen = outcome.clone();
    consumer.on_revoke(move |rev| {
        let r = rev.commit_offsets(
            &[PartitionOffset {
                partition: acted.partition,
                offset: acted.offset + 1,
            }],
            CommitMode::Sync,
        );
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
    });
    consumer.inner().unsubscribe();
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(r) = outcome.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Ok(r?);
        }
        if Instant::now() > deadline {
            return Err(format!("the revoke hook did not run within {PATIENCE:?}").into());
        }
        // Records fetched before the revoke may still come out; they do not matter here.
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// Wait until the group's transactional offsets are stable (the commit markers are written),
/// so the harness's read after this incarnation sees the committed transaction: a
/// `read_committed` client's offset fetch asks the broker for stable offsets only (the
/// harness's own probe reads `read_uncommitted`). Reads only: it does not say what to expect.
fn wait_stable_offsets(ctx: &WorkerCtx) -> Result<(), WorkerError> {
    let mut cfg = ctx.consumer_config();
    cfg.set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let reader: BaseConsumer = cfg.create()?;
    committed_offset(&reader, ctx.topic())?;
    Ok(())
}

fn send_offsets(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let consumer = ctx.consumer(&manual())?;
    let mut producer = ctx.transactional_producer(&ClientConfig::new())?;
    if ctx.incarnation() > 1 {
        while ctx.running() {
            if let Some(r) = consumer.poll(Duration::from_millis(100)) {
                r?;
                producer.begin()?;
                producer.send_offsets(&consumer)?;
                producer.commit()?;
            }
        }
        return Ok(());
    }
    producer.begin()?;
    poll_records(&consumer, POLLED)?;
    producer.send_offsets(&consumer)?;
    producer.commit()?;
    wait_stable_offsets(ctx)
}

/// Run `worker` through the harness (no faults) and return the offset the broker held for
/// partition 0 after incarnation 1, which must have returned normally.
fn wrapper_side(
    guarantee: Guarantee,
    worker: fn(&mut WorkerCtx) -> Result<(), WorkerError>,
) -> anyhow::Result<Option<i64>> {
    let workload = Workload {
        messages: MESSAGES,
        partitions: 1,
        keys: MESSAGES,
    };
    let r = Harness::new(guarantee).run_schedule(&Schedule::new(workload), worker)?;
    let exit = first_exit(&r.trace);
    ensure!(
        exit == Some(Exit::Returned),
        "incarnation 1 did not return normally: {exit:?}"
    );
    let first = r
        .trace
        .events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::BrokerCommitted { offsets } => Some(offsets.clone()),
            _ => None,
        })
        .context("no broker read after incarnation 1")?;
    match first.as_slice() {
        [(0, offset)] => Ok(*offset),
        other => bail!("the broker read after incarnation 1 is {other:?}, expected partition 0"),
    }
}

fn first_exit(trace: &Trace) -> Option<Exit> {
    trace.events.iter().find_map(|e| match &e.kind {
        EventKind::Exited { exit } if e.inc == 1 => Some(exit.clone()),
        _ => None,
    })
}

// ───────────────────────────── the plain rdkafka side ─────────────────────────────

fn retriable(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::CoordinatorNotAvailable
        )
    )
}

/// The committed offset of partition 0 of `topic` for `reader`'s group; retried while a
/// fresh broker's coordinator is still loading.
fn committed_offset<C: ConsumerContext>(
    reader: &BaseConsumer<C>,
    topic: &str,
) -> KafkaResult<Option<i64>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let result = reader
            .committed_offsets(tpl, Duration::from_secs(10))
            .and_then(|got| {
                let e = got
                    .find_partition(topic, 0)
                    .ok_or(KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition))?;
                e.error()?;
                Ok(match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
            });
        match result {
            Err(e) if retriable(&e) && attempt < 10 => {
                std::thread::sleep(Duration::from_millis(500))
            }
            other => return other,
        }
    }
}

/// A topic of 5 messages and a group of this test's own, deleted on drop.
struct Plain {
    cluster: Arc<Cluster>,
    topic: String,
    group: String,
}

impl Plain {
    fn new(case: &str) -> anyhow::Result<Plain> {
        let cluster = Cluster::shared()?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
            & 0xffff_ffff_ffff;
        let topic = cluster.topic_name(&format!(
            "offsets-plain.{case}.{}.{nonce:x}",
            std::process::id()
        ));
        let group = format!("{topic}.group");
        cluster.create_topic(&topic, 1)?;
        let plain = Plain {
            cluster,
            topic,
            group,
        };
        plain.produce()?;
        Ok(plain)
    }

    /// The same 5 messages the harness produces ("{id}:k{id}", partition 0), acknowledged.
    fn produce(&self) -> anyhow::Result<()> {
        let mut cfg = self.cluster.client_config();
        cfg.set("acks", "all").set("enable.idempotence", "true");
        let producer: BaseProducer = cfg.create()?;
        for id in 0..MESSAGES {
            let key = format!("k{id}");
            let payload = format!("{id}:{key}");
            producer
                .send(
                    BaseRecord::to(&self.topic)
                        .key(key.as_str())
                        .payload(payload.as_str())
                        .partition(0),
                )
                .map_err(|(e, _)| e)?;
        }
        producer.flush(PATIENCE)?;
        let marks = producer
            .client()
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(10))?;
        ensure!(
            marks == (0, MESSAGES as i64),
            "the plain topic holds offsets {marks:?}, expected (0, {MESSAGES})"
        );
        Ok(())
    }

    fn config(&self, user: &ClientConfig) -> ClientConfig {
        let mut c = self.cluster.client_config();
        c.set("group.id", &self.group);
        for (k, v) in CONSUMER_DEFAULTS {
            c.set(*k, *v);
        }
        for (k, v) in user.config_map() {
            c.set(k, v);
        }
        c
    }

    /// A consumer of this group subscribed to this topic.
    fn consumer<C: ConsumerContext>(
        &self,
        user: &ClientConfig,
        context: C,
    ) -> anyhow::Result<BaseConsumer<C>> {
        let c: BaseConsumer<C> = self.config(user).create_with_context(context)?;
        c.subscribe(&[&self.topic])?;
        Ok(c)
    }

    /// What the broker holds for the group, read by a consumer that never joins it
    /// (`read_committed`: the fetch waits for a committed transaction's offsets to be stable).
    fn committed(&self) -> anyhow::Result<Option<i64>> {
        let mut cfg = self.config(&manual());
        cfg.set("isolation.level", "read_committed");
        let reader: BaseConsumer = cfg.create()?;
        Ok(committed_offset(&reader, &self.topic)?)
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if let Err(e) = self.cluster.delete_topics(&[&self.topic]) {
            eprintln!("offsets test: could not delete {}: {e}", self.topic);
        }
        // A member that just left may still be listed for a moment.
        let mut last = None;
        for _ in 0..5 {
            match self.cluster.delete_groups(&[&self.group]) {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if let Some(e) = last {
            eprintln!("offsets test: could not delete group {}: {e}", self.group);
        }
    }
}

/// Poll exactly `n` messages; they must be offsets 0..n of partition 0.
fn poll_messages<C: ConsumerContext>(
    c: &BaseConsumer<C>,
    n: usize,
) -> anyhow::Result<Vec<BorrowedMessage<'_>>> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        ensure!(
            Instant::now() < deadline,
            "polled {} of {n} messages in {PATIENCE:?}",
            out.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            out.push(m?);
        }
    }
    let got: Vec<(i32, i64)> = out.iter().map(|m| (m.partition(), m.offset())).collect();
    let want: Vec<(i32, i64)> = (0..n as i64).map(|o| (0, o)).collect();
    ensure!(got == want, "polled {got:?}, expected {want:?}");
    Ok(out)
}

fn keep_polling_plain<C: ConsumerContext>(c: &BaseConsumer<C>, d: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            m?;
        }
    }
    Ok(())
}

fn plain_default(plain: &Plain, user: &ClientConfig) -> anyhow::Result<BaseConsumer> {
    plain.consumer(user, rdkafka::consumer::DefaultConsumerContext)
}

/// Wrapper and plain rdkafka must both leave `expected` on the broker.
fn assert_agree(
    method: &str,
    plain_call: &str,
    wrapper: Option<i64>,
    plain: Option<i64>,
    expected: i64,
) {
    assert!(
        wrapper == Some(expected) && plain == Some(expected),
        "{method}: the broker holds {wrapper:?} after the wrapper call and {plain:?} after \
         rdkafka's {plain_call}; expected Some({expected})"
    );
}

// ───────────────────────────── the tests ─────────────────────────────

#[test]
fn commit_commits_the_position_as_commit_consumer_state_does() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, commit_position)?;

    let plain = Plain::new("commit")?;
    {
        let c = plain_default(&plain, &manual())?;
        poll_messages(&c, POLLED)?;
        c.commit_consumer_state(CommitMode::Sync)?;
    }
    assert_agree(
        "Consumer::commit(Sync)",
        "commit_consumer_state(Sync)",
        wrapper,
        plain.committed()?,
        AFTER_POSITION,
    );
    Ok(())
}

#[test]
fn commit_record_sync_commits_what_commit_message_sync_commits() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, commit_record_sync)?;

    let plain = Plain::new("commit-record-sync")?;
    {
        let c = plain_default(&plain, &manual())?;
        let msgs = poll_messages(&c, POLLED)?;
        c.commit_message(&msgs[ACTED_ON], CommitMode::Sync)?;
    }
    assert_agree(
        "Consumer::commit_record(record at offset 1, Sync)",
        "commit_message(message at offset 1, Sync)",
        wrapper,
        plain.committed()?,
        AFTER_RECORD,
    );
    Ok(())
}

#[test]
fn commit_record_async_commits_what_commit_message_async_commits() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, commit_record_async)?;

    let plain = Plain::new("commit-record-async")?;
    {
        let c = plain_default(&plain, &manual())?;
        let msgs = poll_messages(&c, POLLED)?;
        c.commit_message(&msgs[ACTED_ON], CommitMode::Async)?;
        drop(msgs);
        keep_polling_plain(&c, SETTLE)?;
    }
    assert_agree(
        "Consumer::commit_record(record at offset 1, Async)",
        "commit_message(message at offset 1, Async)",
        wrapper,
        plain.committed()?,
        AFTER_RECORD,
    );
    Ok(())
}

#[test]
fn commit_offsets_commits_what_commit_with_the_same_list_commits() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, commit_offsets)?;

    let plain = Plain::new("commit-offsets")?;
    {
        let c = plain_default(&plain, &manual())?;
        let msgs = poll_messages(&c, POLLED)?;
        let acted = &msgs[ACTED_ON];
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &plain.topic,
            acted.partition(),
            Offset::Offset(acted.offset() + 1),
        )?;
        c.commit(&tpl, CommitMode::Sync)?;
    }
    assert_agree(
        "Consumer::commit_offsets([partition 0 → offset 2], Sync)",
        "commit([partition 0 → offset 2], Sync)",
        wrapper,
        plain.committed()?,
        AFTER_RECORD,
    );
    Ok(())
}

#[test]
fn store_offset_commits_what_store_offset_from_message_commits() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, store_offset)?;

    let plain = Plain::new("store-offset")?;
    {
        let c = plain_default(&plain, &auto_commit_stored())?;
        let msgs = poll_messages(&c, POLLED)?;
        c.store_offset_from_message(&msgs[ACTED_ON])?;
        drop(msgs);
        keep_polling_plain(&c, SETTLE)?;
    }
    assert_agree(
        "Consumer::store_offset(record at offset 1) + auto-commit",
        "store_offset_from_message(message at offset 1) + auto-commit",
        wrapper,
        plain.committed()?,
        AFTER_RECORD,
    );
    Ok(())
}

/// A plain rdkafka context whose `pre_rebalance` commits `offsets` on revoke.
struct CommitOnRevoke {
    /// (topic, partition, next offset) to commit once partitions are revoked.
    offsets: Mutex<Option<(String, i32, i64)>>,
    result: Mutex<Option<KafkaResult<()>>>,
}

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            let Some((topic, partition, offset)) = self
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            else {
                return;
            };
            let mut tpl = TopicPartitionList::new();
            let r = tpl
                .add_partition_offset(&topic, partition, Offset::Offset(offset))
                .and_then(|()| base.commit(&tpl, CommitMode::Sync));
            *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
    }
}

#[test]
fn a_revoke_handler_commit_lands_as_a_pre_rebalance_commit_does() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::AtLeastOnce, revoke_commit)?;

    let plain = Plain::new("revoke")?;
    {
        let c = plain.consumer(
            &manual(),
            CommitOnRevoke {
                offsets: Mutex::new(None),
                result: Mutex::new(None),
            },
        )?;
        let msgs = poll_messages(&c, POLLED)?;
        let acted = (
            plain.topic.clone(),
            msgs[ACTED_ON].partition(),
            msgs[ACTED_ON].offset() + 1,
        );
        drop(msgs);
        *c.context()
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(acted);
        c.unsubscribe();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ran = c
                .context()
                .result
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(r) = ran {
                r.context("the plain pre_rebalance commit")?;
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the plain revoke did not happen within {PATIENCE:?}"
            );
            let _ = c.poll(Duration::from_millis(100));
        }
    }
    assert_agree(
        "Revoking::commit_offsets([partition 0 → offset 2], Sync) in on_revoke",
        "commit([partition 0 → offset 2], Sync) in ConsumerContext::pre_rebalance on Revoke",
        wrapper,
        plain.committed()?,
        AFTER_RECORD,
    );
    Ok(())
}

#[test]
fn send_offsets_commits_the_position_as_send_offsets_to_transaction_does() -> anyhow::Result<()> {
    let _one = one_at_a_time();
    let wrapper = wrapper_side(Guarantee::ExactlyOnceTransactional, send_offsets)?;

    let plain = Plain::new("send-offsets")?;
    {
        let c = plain_default(&plain, &manual())?;
        let mut cfg = plain.cluster.client_config();
        cfg.set("transactional.id", format!("{}.txn", plain.topic))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", "10000");
        let producer: BaseProducer = cfg.create()?;
        producer.init_transactions(TXN_TIMEOUT)?;
        producer.begin_transaction()?;
        poll_messages(&c, POLLED)?;
        let metadata = c
            .group_metadata()
            .context("the plain consumer has no group metadata")?;
        producer.send_offsets_to_transaction(&c.position()?, &metadata, TXN_TIMEOUT)?;
        producer.commit_transaction(TXN_TIMEOUT)?;
    }
    assert_agree(
        "TransactionalProducer::send_offsets + commit",
        "send_offsets_to_transaction(position) + commit_transaction",
        wrapper,
        plain.committed()?,
        AFTER_POSITION,
    );
    Ok(())
}

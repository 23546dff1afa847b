//! Written blind (2026-12-02) by a developer who read only README and the public API docs —
//! not `fixtures/` or these tests — as a check that the harness judges consumers it was never
//! tuned for: all five verdicts came out as the author predicted on first run (containers, 64
//! cases each). The buggy ones ask for 64 cases explicitly: CI lowers the default count
//! (`PROPTEST_CASES=8`), and a search stops at its first failure anyway.
//!
//! Five consumers written the way our teams write them in production, checked blind with
//! kafka-harness's default `check` on the default cluster (`Cluster::shared()`, i.e.
//! `Cluster::from_env()`'s pick), each with the guarantee the consumer *claims*.
//!
//! One worker per `#[test]` (the worker process re-runs this binary with `<test name> --exact`),
//! no `#[ignore]`, nothing created before the harness call, default workload (12 messages,
//! 2 partitions, 6 keys) and default case count; fault kinds are the defaults (crashes and
//! kills) except where the bug, or the claim, is about rebalances.
//!
//! 1. `orders_projection_stream_async_commit` — async `StreamConsumer` on tokio, JSON orders,
//!    idempotent upsert per order (`UpsertSink`), explicit offsets of what was *processed*
//!    committed with `CommitMode::Async` every 5 orders and synchronously on shutdown.
//!    Claims at-least-once. Expect: HOLDS. Every committed offset is `offset + 1` of a message
//!    whose upsert already returned, so a crash anywhere can only cause redelivery (and the
//!    upsert makes that harmless anyway); a short last batch is committed when the harness asks
//!    an idle worker to stop. Async commits are issued in order on one connection, so they do
//!    not go backwards. (The whole-map commit would go backwards if another member took a
//!    partition — it never drops revoked partitions — but default faults start no second member.)
//!
//! 2. `payment_authorizer_concurrent_commit_per_task` — async `StreamConsumer`, every payment is
//!    authorised in its own tokio task (at most 4 in flight; payments ≥ 100.00 take a 400 ms
//!    3-D Secure round-trip, the rest 20 ms), and each task, when it finishes, commits *its own*
//!    `offset + 1` (async), guarded so a partition's commit never moves backwards.
//!    Claims at-least-once. Expect: FAILS with Lost (CommittedTooFar if the harness cannot
//!    realise the loss). A fast payment finishing after a slow earlier one in the same
//!    partition commits past the unfinished one; a crash or kill before the slow one is recorded
//!    loses it. The monotonic guard hides the "commit backwards" symptom and keeps only the loss.
//!
//! 3. `fulfilment_auto_commit_worker_thread` — plain sync `BaseConsumer`, `enable.auto.commit=true`
//!    with the default `enable.auto.offset.store=true` and a 1 s commit interval; the poll loop
//!    hands each order to a fulfilment thread over a channel, which calls the (slow, 200 ms)
//!    warehouse API and then records the shipment.
//!    Claims at-least-once. Expect: FAILS with Lost (or CommittedTooFar). librdkafka stores each
//!    offset when poll hands the message over, the poll loop runs far ahead of the 200 ms/order
//!    worker, and the auto-commit timer commits the polled (stored) positions; a crash/kill while
//!    the queue still holds orders loses them.
//!
//! 4. `payments_ledger_commit_on_revoke` — sync `BaseConsumer` with our own `ConsumerContext`:
//!    processed offsets are kept in a shared map; the main loop commits them synchronously every
//!    5 payments and on shutdown, and `pre_rebalance(Revoke)` commits the revoked partitions'
//!    processed offsets synchronously and forgets those partitions.
//!    Claims at-least-once. Run with rebalances on (besides the default crashes and kills), since
//!    the revoke path is what the claim rests on. Expect: HOLDS. Rebalance callbacks run inside
//!    `poll` on the only thread, so at a revoke every polled message has been fully processed and
//!    is in the map; only processed offsets are ever committed; revoked partitions leave the map,
//!    so no stale offset is committed over the new owner's progress.
//!
//! 5. `payments_booking_in_memory_dedupe` — the harness's instrumented wrapper (`ctx.consumer`):
//!    bookings are a plain INSERT into the payments ledger (`AppendSink`), "made idempotent" with an
//!    in-memory `HashSet` of booked payment ids; offsets committed synchronously every 5 records
//!    and on shutdown. The team claims exactly-once *effects* (effectively-once).
//!    Expect: FAILS with StateMismatch. The dedupe set lives in process memory: a crash after a
//!    booking but before the next commit redelivers those payments to a fresh process whose set
//!    is empty, and the plain INSERT books them twice.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use kafka_harness::sink::{AppendSink, UpsertSink};
use kafka_harness::trace::PartitionOffset;
use kafka_harness::worker::{on_tokio, Record, SinkHandle, WorkerCtx, WorkerError};
use kafka_harness::{FaultKinds, Guarantee, Harness, Outcome, ViolationKind};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, OwnedMessage};
use rdkafka::util::{AsyncRuntime, TokioRuntime};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use serde_json::Value;

/// How long one poll / recv waits before the loop looks at `ctx.running()` again.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Batch size of the consumers that commit every n records.
const COMMIT_EVERY: usize = 5;
/// Payments at or above this need a 3-D Secure step-up (slow issuer round-trip).
const STEP_UP_CENTS: u64 = 10_000;

/// Partition → next offset to read.
type Offsets = BTreeMap<i32, i64>;

// ---------------------------------------------------------------------------------------------
// Shared bits: our event format, a recv with a timeout, offset lists.
// ---------------------------------------------------------------------------------------------

/// The `OrderPlaced` / `PaymentRequested` event our producers emit. Every third one is large.
fn order_event(id: u64, customer: &str) -> Vec<u8> {
    let amount_cents = if id.is_multiple_of(3) {
        25_000
    } else {
        1_200 + 10 * id
    };
    format!(
        r#"{{"order_id":{id},"customer":"{customer}","amount_cents":{amount_cents},"currency":"EUR"}}"#
    )
    .into_bytes()
}

/// Parse and validate an order event (our deserializer; a bad event is an error).
fn parse_order<M: Message>(m: &M) -> Result<(u64, u64), WorkerError> {
    let event: Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
    let order_id = event["order_id"]
        .as_u64()
        .ok_or("order event without order_id")?;
    let amount_cents = event["amount_cents"]
        .as_u64()
        .ok_or("order event without amount_cents")?;
    Ok((order_id, amount_cents))
}

/// `consumer.recv()` with a timeout, so the loop can notice shutdown (what
/// `tokio::time::timeout` does; tokio is reached through rdkafka's runtime here).
async fn recv_for(
    consumer: &StreamConsumer,
    wait: Duration,
) -> Option<KafkaResult<BorrowedMessage<'_>>> {
    let mut message = std::pin::pin!(consumer.recv());
    let mut timer = std::pin::pin!(TokioRuntime::delay_for(wait));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(m) = message.as_mut().poll(cx) {
            return Poll::Ready(Some(m));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}

fn offsets_tpl(topic: &str, next: &Offsets) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (&partition, &offset) in next {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    Ok(tpl)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// 1. Orders projection: StreamConsumer, idempotent upsert, async commit every 5 + on shutdown.
// ---------------------------------------------------------------------------------------------

async fn orders_projection(ctx: WorkerCtx) -> Result<(), WorkerError> {
    let mut config = ctx.consumer_config();
    config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[ctx.topic()])?;
    let mut orders_table = ctx.sink()?; // UPSERT INTO orders … ON CONFLICT (order key) DO UPDATE

    let mut processed = Offsets::new();
    let mut since_commit = 0usize;
    while ctx.running() {
        let Some(m) = recv_for(&consumer, POLL_WAIT).await else {
            continue;
        };
        let m = m?;
        let (_order_id, _amount_cents) = parse_order(&m)?;
        let record = Record::from_message(&m).ok_or("not a workload message")?;
        orders_table.apply(&record)?;
        kafka_harness::crash_point!("order-upserted");
        processed.insert(m.partition(), m.offset() + 1);
        since_commit += 1;
        if since_commit >= COMMIT_EVERY {
            consumer.commit(&offsets_tpl(ctx.topic(), &processed)?, CommitMode::Async)?;
            since_commit = 0;
        }
    }
    // Shutdown: make the short last batch durable before leaving the group.
    if !processed.is_empty() {
        consumer.commit(&offsets_tpl(ctx.topic(), &processed)?, CommitMode::Sync)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Payment authorizer: one tokio task per payment, each commits its own offset when done.
// ---------------------------------------------------------------------------------------------

const MAX_IN_FLIGHT: usize = 4;

async fn authorize(
    m: &OwnedMessage,
    authorizations: &Mutex<SinkHandle>,
) -> Result<(), WorkerError> {
    let (_payment_id, amount_cents) = parse_order(m)?;
    let record = Record::from_message(m).ok_or("not a workload message")?;
    // The card issuer: large payments need a 3-D Secure step-up.
    let issuer_latency_ms = if amount_cents >= STEP_UP_CENTS {
        400
    } else {
        20
    };
    TokioRuntime::delay_for(Duration::from_millis(issuer_latency_ms)).await;
    lock(authorizations).apply(&record)?;
    Ok(())
}

/// Commit `next` for `partition` unless an equal or later offset was already committed.
fn commit_if_ahead(
    consumer: &StreamConsumer,
    topic: &str,
    high_water: &Mutex<Offsets>,
    partition: i32,
    next: i64,
) {
    let mut committed = lock(high_water);
    if committed.get(&partition).is_some_and(|&done| done >= next) {
        return;
    }
    committed.insert(partition, next);
    let mut tpl = TopicPartitionList::new();
    let result = tpl
        .add_partition_offset(topic, partition, Offset::Offset(next))
        .and_then(|()| consumer.commit(&tpl, CommitMode::Async));
    if let Err(e) = result {
        eprintln!("payment-authorizer: commit of {partition}@{next} failed: {e}");
    }
}

async fn payment_authorizer(ctx: WorkerCtx) -> Result<(), WorkerError> {
    let mut config = ctx.consumer_config();
    config.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = config.create()?;
    let consumer = Arc::new(consumer);
    consumer.subscribe(&[ctx.topic()])?;
    let authorizations = Arc::new(Mutex::new(ctx.sink()?));
    let high_water: Arc<Mutex<Offsets>> = Arc::default();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let topic = ctx.topic().to_string();

    while ctx.running() {
        if in_flight.load(Ordering::SeqCst) >= MAX_IN_FLIGHT {
            TokioRuntime::delay_for(Duration::from_millis(5)).await;
            continue;
        }
        let Some(m) = recv_for(&consumer, POLL_WAIT).await else {
            continue;
        };
        let m = m?.detach();
        in_flight.fetch_add(1, Ordering::SeqCst);
        let task_consumer = Arc::clone(&consumer);
        let task_sink = Arc::clone(&authorizations);
        let task_high_water = Arc::clone(&high_water);
        let task_in_flight = Arc::clone(&in_flight);
        let task_topic = topic.clone();
        TokioRuntime::spawn(async move {
            let result = authorize(&m, &task_sink).await;
            match result {
                Ok(()) => commit_if_ahead(
                    &task_consumer,
                    &task_topic,
                    &task_high_water,
                    m.partition(),
                    m.offset() + 1,
                ),
                Err(e) => eprintln!(
                    "payment-authorizer: payment at {}@{} failed: {e}",
                    m.partition(),
                    m.offset()
                ),
            }
            task_in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // Graceful shutdown: let in-flight authorisations finish, then flush the commits.
    while in_flight.load(Ordering::SeqCst) > 0 {
        TokioRuntime::delay_for(Duration::from_millis(10)).await;
    }
    let last = lock(&high_water).clone();
    if !last.is_empty() {
        consumer.commit(&offsets_tpl(&topic, &last)?, CommitMode::Sync)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Fulfilment: auto-commit, poll loop feeding a slow worker thread.
// ---------------------------------------------------------------------------------------------

fn fulfilment(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let mut config = ctx.consumer_config();
    config
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000");
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[ctx.topic()])?;
    let mut shipments = ctx.sink()?;

    let (orders_tx, orders_rx) = std::sync::mpsc::channel::<OwnedMessage>();
    let worker = std::thread::Builder::new()
        .name("fulfilment".into())
        .spawn(move || -> Result<(), WorkerError> {
            for order in orders_rx {
                let (_order_id, _amount_cents) = parse_order(&order)?;
                let record = Record::from_message(&order).ok_or("not a workload message")?;
                std::thread::sleep(Duration::from_millis(200)); // the warehouse API
                shipments.apply(&record)?;
                kafka_harness::crash_point!("order-shipped");
            }
            Ok(())
        })?;

    while ctx.running() {
        match consumer.poll(POLL_WAIT) {
            None => continue,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(m)) => {
                if orders_tx.send(m.detach()).is_err() {
                    break; // the fulfilment thread died; its error is returned below
                }
            }
        }
    }
    // Graceful shutdown: drain the queue, then close the consumer (final auto-commit).
    drop(orders_tx);
    match worker.join() {
        Ok(result) => result,
        Err(_) => Err("fulfilment thread panicked".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Payments ledger: own ConsumerContext, sync commit of processed offsets on revoke.
// ---------------------------------------------------------------------------------------------

struct PaymentsContext {
    topic: String,
    /// Processed but not yet committed: partition → next offset to read.
    processed: Arc<Mutex<Offsets>>,
}

impl ClientContext for PaymentsContext {}

impl ConsumerContext for PaymentsContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            kafka_harness::crash_point!("payments-revoke");
            // README: the harness does not see our context's callbacks; this marks the revoke
            // so faults counted from it (a crash at the 2nd hit of X after the revoke) fire.
            kafka_harness::crash_point!("revoke");
            let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
            let mut to_commit = Offsets::new();
            {
                let mut processed = lock(&self.processed);
                for partition in partitions {
                    if let Some(next) = processed.remove(&partition) {
                        to_commit.insert(partition, next);
                    }
                }
            }
            if to_commit.is_empty() {
                return;
            }
            let result = offsets_tpl(&self.topic, &to_commit)
                .and_then(|tpl| base.commit(&tpl, CommitMode::Sync));
            if let Err(e) = result {
                // The new owner re-reads from the last commit: duplicates, never a loss.
                eprintln!("payments: commit on revoke failed: {e}");
            }
        }
    }
}

/// Commit what was processed; on failure keep it for the next batch or the revoke handler.
fn commit_processed(
    consumer: &BaseConsumer<PaymentsContext>,
    topic: &str,
    processed: &Mutex<Offsets>,
) {
    let snapshot = lock(processed).clone();
    if snapshot.is_empty() {
        return;
    }
    let result =
        offsets_tpl(topic, &snapshot).and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync));
    match result {
        Ok(()) => {
            let mut processed = lock(processed);
            for (partition, next) in snapshot {
                if processed.get(&partition) == Some(&next) {
                    processed.remove(&partition);
                }
            }
        }
        Err(e) => eprintln!("payments: commit failed, retried with the next batch: {e}"),
    }
}

fn payments_ledger(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let processed: Arc<Mutex<Offsets>> = Arc::default();
    let mut config = ctx.consumer_config();
    config.set("enable.auto.commit", "false");
    let consumer: BaseConsumer<PaymentsContext> = config.create_with_context(PaymentsContext {
        topic: ctx.topic().to_string(),
        processed: Arc::clone(&processed),
    })?;
    consumer.subscribe(&[ctx.topic()])?;
    let mut ledger = ctx.sink()?;

    let mut since_commit = 0usize;
    while ctx.running() {
        let Some(m) = consumer.poll(POLL_WAIT) else {
            continue;
        };
        let m = m?;
        let (_payment_id, _amount_cents) = parse_order(&m)?;
        let record = Record::from_message(&m).ok_or("not a workload message")?;
        ledger.apply(&record)?;
        kafka_harness::crash_point!("payment-recorded");
        lock(&processed).insert(m.partition(), m.offset() + 1);
        since_commit += 1;
        if since_commit >= COMMIT_EVERY {
            commit_processed(&consumer, ctx.topic(), &processed);
            since_commit = 0;
        }
    }
    commit_processed(&consumer, ctx.topic(), &processed);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Payments booking: plain INSERT made "idempotent" by an in-memory set of booked ids.
// ---------------------------------------------------------------------------------------------

fn partition_offsets(next: &Offsets) -> Vec<PartitionOffset> {
    next.iter()
        .map(|(&partition, &offset)| PartitionOffset { partition, offset })
        .collect()
}

fn payments_booking(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
    let mut cfg = ClientConfig::new();
    cfg.set("enable.auto.commit", "false");
    let consumer = ctx.consumer(&cfg)?;
    let mut ledger = ctx.sink()?; // INSERT INTO ledger_entries (payment_id, …)

    let mut booked: HashSet<u64> = HashSet::new();
    let mut next = Offsets::new();
    let mut since_commit = 0usize;
    while ctx.running() {
        let Some(record) = consumer.poll(POLL_WAIT) else {
            continue;
        };
        let record = record?;
        if booked.insert(record.msg.id) {
            ledger.apply(&record)?;
        }
        next.insert(record.msg.partition, record.msg.offset + 1);
        since_commit += 1;
        if since_commit >= COMMIT_EVERY {
            consumer.commit_offsets(&partition_offsets(&next), CommitMode::Sync)?;
            since_commit = 0;
        }
    }
    if !next.is_empty() {
        consumer.commit_offsets(&partition_offsets(&next), CommitMode::Sync)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Verdict helpers and the tests.
// ---------------------------------------------------------------------------------------------

fn expect_holds(outcome: kafka_harness::Result<Outcome>) {
    match outcome {
        Ok(Outcome::Passed(summary)) => eprintln!("kafka-harness: {summary}"),
        Ok(Outcome::Failed(report)) => {
            panic!("expected the claimed guarantee to hold, but the harness found:\n{report}")
        }
        Err(e) => panic!("kafka-harness could not run the check: {e}"),
    }
}

/// The check must fail, and its primary (most severe) violation must be one of `expected`.
fn expect_broken(outcome: kafka_harness::Result<Outcome>, expected: &[ViolationKind]) {
    match outcome {
        Ok(Outcome::Failed(report)) => {
            let primary = report.kind();
            assert!(
                primary.is_some_and(|k| expected.contains(&k)),
                "expected a {expected:?} violation, got {primary:?} (all kinds: {:?}):\n{report}",
                report.verdict.kinds()
            );
            eprintln!(
                "kafka-harness caught it as expected: {}",
                report.summary_line()
            );
        }
        Ok(Outcome::Passed(summary)) => {
            panic!("expected a {expected:?} violation, but the guarantee held: {summary}")
        }
        Err(e) => panic!("kafka-harness could not run the check: {e}"),
    }
}

#[test]
fn orders_projection_stream_async_commit() {
    expect_holds(
        Harness::new(Guarantee::AtLeastOnce)
            .sink(UpsertSink)
            .payload(order_event)
            .check(on_tokio(orders_projection)),
    );
}

#[test]
fn payment_authorizer_concurrent_commit_per_task() {
    expect_broken(
        Harness::new(Guarantee::AtLeastOnce)
            .payload(order_event)
            .cases(64)
            .check(on_tokio(payment_authorizer)),
        &[ViolationKind::Lost, ViolationKind::CommittedTooFar],
    );
}

#[test]
fn fulfilment_auto_commit_worker_thread() {
    expect_broken(
        Harness::new(Guarantee::AtLeastOnce)
            .payload(order_event)
            .cases(64)
            .check(fulfilment),
        &[ViolationKind::Lost, ViolationKind::CommittedTooFar],
    );
}

#[test]
fn payments_ledger_commit_on_revoke() {
    expect_holds(
        Harness::new(Guarantee::AtLeastOnce)
            .payload(order_event)
            .fault_kinds(FaultKinds {
                rebalances: true,
                ..FaultKinds::default()
            })
            .check(payments_ledger),
    );
}

#[test]
fn payments_booking_in_memory_dedupe() {
    expect_broken(
        Harness::new(Guarantee::EffectivelyOnce)
            .sink(AppendSink)
            .cases(64)
            .check(payments_booking),
        &[ViolationKind::StateMismatch],
    );
}

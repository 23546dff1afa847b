//! What the user's worker function receives, and the worker process's main.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;

use super::consumer::{points, Consumer};
use super::producer::TransactionalProducer;
use super::recorder::Recorder;
use super::spec::WorkerSpec;
use super::Record;
use crate::schedule::{SinkFailure, ANCHOR_SINK_OUTAGE};
use crate::sink::{Sink, SinkError, SinkFactory, Stamp};
use crate::trace::{EventKind, Exit, Incarnation};

/// The error type worker functions return (anything boxed: `anyhow::Error` converts).
pub type WorkerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The worker's view of its case: where to connect, what to read, where effects go.
///
/// Handles from [`WorkerCtx::consumer`], [`WorkerCtx::sink`] and
/// [`WorkerCtx::transactional_producer`] are owned values, so a worker holds several at once.
#[derive(Clone)]
pub struct WorkerCtx {
    spec: WorkerSpec,
    recorder: Arc<Recorder>,
    sink: Arc<dyn SinkFactory>,
}

/// Settings the harness chooses unless the worker's own config sets them.
const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("auto.offset.reset", "earliest"),
    // A crashed member holds its partitions until this expires (the broker floor is lowered to 500).
    ("session.timeout.ms", "1000"),
    ("heartbeat.interval.ms", "200"),
    // librdkafka's 5 s would never auto-commit inside a case that lasts a second or two, so an
    // auto-committing consumer's risk (a commit of what was polled, not processed) would go
    // untested: time is compressed here as the session timeout is (45 s → 1 s).
    ("auto.commit.interval.ms", "100"),
    ("fetch.wait.max.ms", "50"),
    ("broker.address.family", "v4"),
];

/// The harness's default `transaction.timeout.ms` for a transactional worker (librdkafka's is
/// 60 s). Not shorter: a correct consumer may keep a transaction open while it waits for more
/// records (rdkafka's `transactions` example commits every N records, and on stop), and the
/// harness lets a quiet worker sit 2.5 s before it asks it to stop. A consumer that sets its
/// own, shorter timeout keeps it — then a generated 2.5 s pause can outlive an open
/// transaction, and the broker aborts it (brokers the harness starts check every 0.5 s).
pub const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// Settings that belong to the case; a worker config may repeat them but not change them.
const OWNED: &[&str] = &["bootstrap.servers", "group.id", "transactional.id"];

impl WorkerCtx {
    /// This incarnation's number (1, 2, … in start order).
    pub fn incarnation(&self) -> Incarnation {
        self.spec.inc
    }

    /// The case's input topic.
    pub fn topic(&self) -> &str {
        &self.spec.topic
    }

    /// The case's consumer group.
    pub fn group(&self) -> &str {
        &self.spec.group
    }

    /// The case's directory (shared by the orchestrator and every incarnation; sinks keep
    /// their files and connection details there).
    pub fn case_dir(&self) -> &std::path::Path {
        &self.spec.case_dir
    }

    /// The case's output topic (consume-transform-produce).
    pub fn output_topic(&self) -> &str {
        &self.spec.output_topic
    }

    /// `false` once the orchestrator asks the worker to stop (the case is drained): end your
    /// loop and return `Ok(())`. Check it between records.
    pub fn running(&self) -> bool {
        !self.recorder.stop_requested()
    }

    /// A crash point of your own: the schedule may SIGKILL the process at its n-th hit.
    pub fn crash_point(&self, name: &str) {
        self.recorder.crash_point(name);
    }

    /// A config for any client of your own (a `FutureProducer`, an admin client, a consumer
    /// outside the case's group): the case's bootstrap servers and address family only.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.spec.cluster.bootstrap)
            .set("broker.address.family", "v4");
        c
    }

    /// The harness's consumer config, for the consumer under test whether you build it
    /// (`StreamConsumer<YourContext>`, `BaseConsumer`) or the harness does: bootstrap
    /// servers, the case's group, and fast-test defaults (`session.timeout.ms=1000`,
    /// `heartbeat.interval.ms=200`, `auto.commit.interval.ms=100`,
    /// `auto.offset.reset=earliest`, a `client.id` that orders the members at a rebalance, …)
    /// that your own settings may override. Nothing in it observes the client: the harness reads the group's commits
    /// from the broker (see README, "Your consumer, unchanged").
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.spec.cluster.bootstrap)
            .set("group.id", &self.spec.group);
        for (k, v) in CONSUMER_DEFAULTS {
            c.set(*k, *v);
        }
        // Orders the members for the assignor (see `Schedule::joiner_first`).
        if !self.spec.client_id.is_empty() {
            c.set("client.id", &self.spec.client_id);
        }
        c
    }

    /// Configuration for a transactional producer you build yourself (`FutureProducer`,
    /// `BaseProducer`, with your own context) writing to [`WorkerCtx::output_topic`]: bootstrap
    /// servers, this case's `transactional.id` (the same in every incarnation, so a restart
    /// fences the crashed one), idempotence, `acks=all` and a 10 s `transaction.timeout.ms`
    /// ([`TRANSACTION_TIMEOUT_MS`]; set your own to override it).
    /// The output-topic sink identifies an output record by the `kafka-harness-id` header
    /// (copy the input's headers to it) or a payload that is the decimal id.
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.spec.cluster.bootstrap)
            .set("transactional.id", &self.spec.transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
            .set("broker.address.family", "v4");
        c
    }

    fn merged(&self, base: ClientConfig, user: &ClientConfig) -> Result<ClientConfig, WorkerError> {
        let mut c = base;
        for (k, v) in user.config_map() {
            if OWNED.contains(&k) {
                if let Some(ours) = c.get(k) {
                    if ours != v {
                        return Err(format!(
                            "the worker config sets {k}={v}, but the harness owns it for this case ({k}={ours})"
                        )
                        .into());
                    }
                }
            }
            c.set(k, v);
        }
        Ok(c)
    }

    /// An instrumented consumer subscribed to the input topic: the harness's config with
    /// `user`'s settings on top (they win, except the case-owned bootstrap/group, which must
    /// not be changed).
    pub fn consumer(&self, user: &ClientConfig) -> Result<Consumer, WorkerError> {
        let config = self.merged(self.consumer_config(), user)?;
        // Its pauses say how long the group waits for it before it is evicted.
        if let Some(ms) = config
            .get("session.timeout.ms")
            .and_then(|v| v.parse().ok())
        {
            self.recorder.note_session_timeout(ms);
        }
        Ok(Consumer::new(
            &config,
            self.recorder.clone(),
            &self.spec.topic,
        )?)
    }

    /// An instrumented transactional producer to the output topic (same `transactional.id`
    /// in every incarnation, so a restart fences the crashed one). `user` settings on top.
    pub fn transactional_producer(
        &self,
        user: &ClientConfig,
    ) -> Result<TransactionalProducer, WorkerError> {
        let config = self.merged(self.producer_config(), user)?;
        Ok(TransactionalProducer::new(
            &config,
            self.recorder.clone(),
            &self.spec.output_topic,
        )?)
    }

    /// The case's sink, with crash points `before-sink-write` / `after-sink-write` and the
    /// schedule's sink failures.
    pub fn sink(&self) -> Result<SinkHandle, WorkerError> {
        let sink = self.sink.open(&self.spec.case_dir)?;
        Ok(SinkHandle {
            sink,
            recorder: self.recorder.clone(),
        })
    }
}

/// The instrumented sink. Open one per thread or task if you like (or share one behind a
/// `Mutex`): the schedule's sink failures count writes over every handle of the incarnation.
pub struct SinkHandle {
    sink: Box<dyn Sink>,
    recorder: Arc<Recorder>,
}

impl SinkHandle {
    /// Apply `record`'s effect. A write the schedule makes fail returns an error and applies
    /// nothing; a "hang" sleeps first, then returns [`SinkError::TimedOut`].
    pub fn apply(&mut self, record: &Record) -> Result<(), SinkError> {
        let write = self.recorder.next_sink_write();
        self.recorder.crash_point(points::BEFORE_SINK_WRITE);
        if let Some(failure) = self.recorder.sink_failure(write) {
            self.recorder.record(EventKind::SinkFailed {
                msg: record.msg,
                write,
                failure,
            });
            // A relative crash may count from the outage's first failed write.
            self.recorder.relative_hit(ANCHOR_SINK_OUTAGE);
            return Err(match failure {
                SinkFailure::Transient => SinkError::Transient { write },
                SinkFailure::Permanent => SinkError::Permanent { write },
                SinkFailure::Hang { millis } => {
                    std::thread::sleep(Duration::from_millis(millis));
                    SinkError::TimedOut { write, millis }
                }
            });
        }
        let stamp = Stamp {
            inc: self.recorder.inc(),
            at_us: self.recorder.now_us(),
        };
        self.sink.apply(record, stamp)?;
        self.recorder.crash_point(points::AFTER_SINK_WRITE);
        Ok(())
    }
}

/// The recorder of the worker process this is, if it is one.
static PROCESS_RECORDER: std::sync::OnceLock<Arc<Recorder>> = std::sync::OnceLock::new();

/// A crash point anywhere in the user's code, no context needed: in a worker process the
/// schedule may SIGKILL it at its n-th hit (and discovery counts it); anywhere else —
/// production, other tests — it is one atomic load and does nothing.
///
/// ```
/// fn charge_card(order: u64) {
///     kafka_harness::crash_point("before-charge");
///     // … the side effect …
///     kafka_harness::crash_point!("after-charge");
///     # let _ = order;
/// }
/// charge_card(7); // not in a worker: nothing happens
/// ```
#[inline]
pub fn crash_point(name: &str) {
    if let Some(r) = PROCESS_RECORDER.get() {
        r.crash_point(name);
    }
}

/// The worker process's main: run `worker` with its context, record how it ended, exit.
/// Never returns. Exit codes: 0 returned, 3 returned an error, 101 panicked.
pub(crate) fn serve<F>(spec: WorkerSpec, sink: Arc<dyn SinkFactory>, worker: F) -> !
where
    F: Fn(&mut WorkerCtx) -> Result<(), WorkerError>,
{
    let recorder = match Recorder::open(
        &spec.trace_path,
        spec.epoch_us,
        spec.inc,
        &spec.faults,
        &spec.stop_path,
    ) {
        Ok(r) if sink.semantics() == crate::trace::SinkSemantics::OutputTopic => {
            Arc::new(r.count_effects_at(super::consumer::points::AFTER_POLL))
        }
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("kafka-harness worker: {e}");
            std::process::exit(4);
        }
    };
    // `crate::crash_point` (and the `crash_point!` macro) reach this incarnation's recorder
    // from anywhere in the user's code; set once, in the worker process only.
    let _ = PROCESS_RECORDER.set(recorder.clone());
    #[cfg(feature = "fail")]
    for name in &spec.fail_points {
        let point = name.clone();
        if let Err(e) = fail::cfg_callback(name.as_str(), move || crash_point(&point)) {
            eprintln!("kafka-harness worker: fail point {name}: {e}");
            std::process::exit(4);
        }
    }
    let mut ctx = WorkerCtx {
        spec,
        recorder: recorder.clone(),
        sink,
    };
    // Keep libtest's panic output, but record the message for the report.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| worker(&mut ctx)));
    let (exit, code) = match result {
        Ok(Ok(())) => (Exit::Returned, 0),
        Ok(Err(e)) => (
            Exit::Failed {
                error: error_chain(e.as_ref()),
            },
            3,
        ),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic".into());
            (Exit::Panicked { message }, 101)
        }
    };
    recorder.record(EventKind::Exited { exit });
    // Dropping the context closes the clients gracefully: this is a normal end, not a crash.
    drop(ctx);
    std::process::exit(code);
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

//! Executes one case: fresh topic and group, produce the workload, run worker incarnations
//! as the schedule says, then a fault-free drain until the group's lag is 0 (or "stuck").
//!
//! ```text
//!  create topic ─► produce I ─► incarnation 1 (faults…) ─► committed? ─► incarnation 2 … ─► drain ─► read sink back
//!                               │ ends when: it dies (crash point / kill), or lag = 0 (stop), or deadline
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::cluster::Cluster;
use crate::schedule::{Fault, Schedule};
use crate::sink::{ReadBackContext, SinkFactory};
use crate::trace::{
    monotonic_us, CaseInfo, Event, EventKind, Exit, Incarnation, KillReason, MessageRef,
    SinkSemantics, Trace,
};
use crate::worker::spec::WorkerSpec;
use crate::worker::{Launch, Record, WorkerProcess};
use crate::{Error, Result};

/// Time limits of a case.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// An incarnation whose faults have not fired by then is stopped. Env: `KAFKA_HARNESS_INCARNATION_TIMEOUT_MS`.
    pub incarnation: Duration,
    /// After the faults, the group must drain within this, or the case is "stuck". Env: `KAFKA_HARNESS_DRAIN_TIMEOUT_MS`.
    pub drain: Duration,
    /// A worker asked to stop gets this long before SIGKILL.
    pub stop_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        let ms = |name: &str, default: u64| {
            Duration::from_millis(
                std::env::var(name)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(default),
            )
        };
        Timing {
            incarnation: ms("KAFKA_HARNESS_INCARNATION_TIMEOUT_MS", 30_000),
            drain: ms("KAFKA_HARNESS_DRAIN_TIMEOUT_MS", 45_000),
            stop_grace: Duration::from_secs(15),
        }
    }
}

/// Everything a case needs besides its schedule.
pub(crate) struct CaseRunner {
    pub cluster: Arc<Cluster>,
    pub launch: Launch,
    pub name: String,
    pub sink: Arc<dyn SinkFactory>,
    pub timing: Timing,
}

/// The result of running one case.
pub(crate) struct CaseOutcome {
    pub trace: Trace,
    pub dir: tempfile::TempDir,
    pub elapsed: Duration,
}

/// `name` with every character outside `[A-Za-z0-9_-]` replaced by `-` (topic and file names).
pub(crate) fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').to_string()
}

/// The last 60 characters of the sanitized name: topic names stay well under Kafka's limit.
fn topic_stem(name: &str) -> String {
    let s = sanitize(name);
    s.chars()
        .skip(s.chars().count().saturating_sub(60))
        .collect()
}

struct Case<'a> {
    runner: &'a CaseRunner,
    schedule: &'a Schedule,
    dir: PathBuf,
    topic: String,
    group: String,
    epoch_us: u64,
    events: Vec<Event>,
    ends: Vec<i64>,
    probe: BaseConsumer,
    next_inc: Incarnation,
}

struct Deliveries {
    ok: Mutex<Vec<(u64, i32, i64, u64)>>,
    failed: Mutex<Vec<String>>,
}

impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, id: Box<u64>) {
        match result {
            Ok(m) => self.ok.lock().unwrap_or_else(|p| p.into_inner()).push((
                *id,
                m.partition(),
                m.offset(),
                monotonic_us(),
            )),
            Err((e, _)) => self
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("message {id}: {e}")),
        }
    }
}

impl CaseRunner {
    pub(crate) fn run(&self, schedule: &Schedule, case_no: u64) -> Result<CaseOutcome> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("kafka-harness-case-")
            .tempdir()
            .map_err(|e| Error::io("creating the case directory", std::env::temp_dir(), e))?;
        let base = format!(
            "{}{}.{}.{}",
            self.cluster.prefix(),
            topic_stem(&self.name),
            std::process::id(),
            case_no
        );
        let topic = base.clone();
        let group = format!("{base}.group");
        let output = format!("{base}.out");
        let w = schedule.workload;
        let needs_output = self.sink.semantics() == SinkSemantics::OutputTopic;
        self.cluster.create_topic(&topic, w.partitions)?;
        if needs_output {
            self.cluster.create_topic(&output, w.partitions)?;
        }
        let result = self.run_in(schedule, dir.path(), &topic, &group, &output);
        // Leave nothing behind on the cluster, whatever happened.
        let mut topics = vec![topic.as_str()];
        if needs_output {
            topics.push(&output);
        }
        let _ = self.cluster.delete_topics(&topics);
        let _ = self
            .cluster
            .delete_groups(&[group.as_str(), &format!("{output}.reader")]);
        let trace = result?;
        Ok(CaseOutcome {
            trace,
            dir,
            elapsed: started.elapsed(),
        })
    }

    fn run_in(
        &self,
        schedule: &Schedule,
        dir: &Path,
        topic: &str,
        group: &str,
        output: &str,
    ) -> Result<Trace> {
        let mut probe_config = self.cluster.client_config();
        probe_config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        let probe: BaseConsumer = probe_config
            .create()
            .map_err(|e| Error::kafka("creating the lag probe", e))?;
        let mut case = Case {
            runner: self,
            schedule,
            dir: dir.to_path_buf(),
            topic: topic.to_string(),
            group: group.to_string(),
            epoch_us: monotonic_us(),
            events: Vec::new(),
            ends: Vec::new(),
            probe,
            next_inc: 1,
        };
        case.produce()?;
        for faults in schedule.incarnations() {
            if case.lag()?.iter().all(|(_, l)| *l == 0) {
                for fault in faults {
                    case.orchestrator(EventKind::FaultSkipped { fault });
                }
                continue;
            }
            case.incarnation(&faults)?;
        }
        case.drain()?;
        let mut trace = Trace::new(CaseInfo {
            topic: topic.to_string(),
            group: group.to_string(),
            partitions: schedule.workload.partitions,
            backend: self.cluster.backend(),
            sink: self.sink.semantics(),
        });
        trace.events = std::mem::take(&mut case.events);
        trace.events.extend(read_worker_traces(dir, case.next_inc)?);
        let back = self.sink.read_back(&ReadBackContext {
            dir,
            client: self.cluster.client_config(),
            output_topic: output,
        })?;
        for (stamp, msg) in back.applied {
            trace.events.push(Event {
                at_us: stamp.at_us,
                inc: stamp.inc,
                kind: EventKind::Applied { msg },
            });
        }
        trace.state = back.state;
        trace.output = back.output;
        trace.sort();
        Ok(trace)
    }
}

/// Read every worker's event file. A line cut short by SIGKILL can only be a file's last.
fn read_worker_traces(dir: &Path, incs: Incarnation) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for inc in 1..incs {
        let path = dir.join(format!("trace-{inc}.jsonl"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("reading a worker trace", path, e)),
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Event>(line) {
                Ok(e) => out.push(e),
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(Error::MalformedTrace(format!(
                        "{} line {}: {e}",
                        path.display(),
                        i + 1
                    )))
                }
            }
        }
    }
    Ok(out)
}

struct Running {
    inc: Incarnation,
    process: WorkerProcess,
    stop_path: PathBuf,
    trace_path: PathBuf,
}

impl Case<'_> {
    fn now(&self) -> u64 {
        monotonic_us().saturating_sub(self.epoch_us)
    }

    fn record(&mut self, inc: Incarnation, kind: EventKind) {
        let at_us = self.now();
        self.events.push(Event { at_us, inc, kind });
    }

    fn orchestrator(&mut self, kind: EventKind) {
        self.record(0, kind);
    }

    fn produce(&mut self) -> Result<()> {
        let w = self.schedule.workload;
        let mut config = self.runner.cluster.client_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        let ctx = Deliveries {
            ok: Mutex::new(Vec::new()),
            failed: Mutex::new(Vec::new()),
        };
        let producer: BaseProducer<Deliveries> = config
            .create_with_context(ctx)
            .map_err(|e| Error::kafka("creating the workload producer", e))?;
        for id in 0..w.messages as u64 {
            let key = w.key_of(id);
            let payload = Record::payload(id, &key);
            let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(id))
                .key(key.as_str())
                .payload(payload.as_str())
                .partition(w.partition_of(id));
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, back)) => {
                        if !matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ) {
                            return Err(Error::kafka("producing the workload", e));
                        }
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                }
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| Error::kafka("flushing the workload", e))?;
        let ctx = producer.context();
        let failed = ctx.failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !failed.is_empty() {
            // Unacknowledged messages are not in I; the checkers judge only what the broker took.
            eprintln!(
                "kafka-harness: {} workload messages not acknowledged: {}",
                failed.len(),
                failed.join("; ")
            );
        }
        let mut ok = ctx.ok.lock().unwrap_or_else(|p| p.into_inner()).clone();
        ok.sort_by_key(|(id, ..)| *id);
        for (id, partition, offset, at) in ok {
            self.events.push(Event {
                at_us: at.saturating_sub(self.epoch_us),
                inc: 0,
                kind: EventKind::Produced {
                    msg: MessageRef {
                        id,
                        partition,
                        offset,
                    },
                    key: w.key_of(id),
                },
            });
        }
        self.ends = (0..w.partitions)
            .map(|p| {
                self.probe
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .map(|(_, high)| high)
                    .map_err(|e| Error::kafka("reading high watermarks", e))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// Committed offsets from the broker; a timed-out fetch (a coordinator moving, a broker
    /// restarting) is retried before it becomes an error.
    fn committed(&self) -> Result<Vec<(i32, Option<i64>)>> {
        let mut last = None;
        for _ in 0..3 {
            match self.committed_once() {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Worker("no committed offsets".into())))
    }

    fn committed_once(&self) -> Result<Vec<(i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.schedule.workload.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let got = self
            .probe
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| Error::kafka("reading committed offsets", e))?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                (
                    e.partition(),
                    if let Offset::Offset(o) = e.offset() {
                        Some(o)
                    } else {
                        None
                    },
                )
            })
            .collect())
    }

    /// Per partition: high watermark − committed offset (everything, if nothing is committed).
    fn lag(&self) -> Result<Vec<(i32, i64)>> {
        Ok(self
            .committed()?
            .into_iter()
            .map(|(p, c)| {
                let end = self.ends.get(p as usize).copied().unwrap_or(0);
                (p, (end - c.unwrap_or(0)).max(0))
            })
            .collect())
    }

    fn spawn(&mut self, primary: bool, faults: &[Fault]) -> Result<Running> {
        let inc = self.next_inc;
        self.next_inc += 1;
        let trace_path = self.dir.join(format!("trace-{inc}.jsonl"));
        let stop_path = self.dir.join(format!("stop-{inc}"));
        let spec = WorkerSpec {
            name: self.runner.name.clone(),
            inc,
            primary,
            bootstrap: self.runner.cluster.bootstrap_servers(),
            backend: self.runner.cluster.backend(),
            brokers: self.runner.cluster.broker_count(),
            prefix: self.runner.cluster.prefix().to_string(),
            topic: self.topic.clone(),
            output_topic: format!("{}.out", self.topic),
            group: self.group.clone(),
            transactional_id: format!("{}.txn", self.topic),
            partitions: self.schedule.workload.partitions,
            faults: faults.to_vec(),
            epoch_us: self.epoch_us,
            case_dir: self.dir.clone(),
            trace_path: trace_path.clone(),
            stop_path: stop_path.clone(),
        };
        self.record(
            inc,
            EventKind::Started {
                primary,
                faults: faults.to_vec(),
            },
        );
        let process = WorkerProcess::spawn(&spec, &self.runner.launch)?;
        Ok(Running {
            inc,
            process,
            stop_path,
            trace_path,
        })
    }

    /// Record how a worker ended, unless it recorded that itself (returned, failed, panicked).
    fn ended(&mut self, w: &Running, exit: Exit) {
        let recorded = std::fs::read_to_string(&w.trace_path)
            .map(|t| t.contains("\"event\":\"exited\""))
            .unwrap_or(false);
        if !recorded {
            self.record(w.inc, EventKind::Exited { exit });
        }
    }

    /// Ask a worker to stop; SIGKILL it after the grace period.
    fn stop(&mut self, mut w: Running) -> Result<()> {
        std::fs::write(&w.stop_path, b"stop")
            .map_err(|e| Error::io("writing the stop file", &w.stop_path, e))?;
        let deadline = Instant::now() + self.runner.timing.stop_grace;
        loop {
            if let Some(exit) = w.process.try_exit()? {
                self.ended(&w, exit);
                return Ok(());
            }
            if Instant::now() > deadline {
                self.record(
                    w.inc,
                    EventKind::Killed {
                        reason: KillReason::StopTimeout,
                    },
                );
                let exit = w.process.kill()?;
                self.ended(&w, exit);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Effects the worker applied so far: sink writes, or, for a consumer whose effects are
    /// transactional output (invisible until committed), records it polled.
    fn effects(&self, w: &Running) -> u32 {
        let marker = match self.runner.sink.semantics() {
            SinkSemantics::OutputTopic => "\"point\":\"after-poll\"",
            _ => "\"point\":\"after-sink-write\"",
        };
        std::fs::read_to_string(&w.trace_path)
            .map(|t| t.matches(marker).count() as u32)
            .unwrap_or(0)
    }

    fn crashed(w: &Running) -> bool {
        std::fs::read_to_string(&w.trace_path)
            .map(|t| t.contains("\"event\":\"crashed\""))
            .unwrap_or(false)
    }

    fn incarnation(&mut self, faults: &[Fault]) -> Result<()> {
        let mut primary = self.spawn(true, faults)?;
        let mut peer: Option<Running> = None;
        let mut fired = vec![false; faults.len()];
        let deadline = Instant::now() + self.runner.timing.incarnation;
        let mut last_lag = Instant::now();
        let mut primary_done = false;
        loop {
            if let Some(exit) = primary.process.try_exit()? {
                for (i, f) in faults.iter().enumerate() {
                    if matches!(f, Fault::Crash { .. }) && Self::crashed(&primary) {
                        fired[i] = true;
                    }
                }
                self.ended(&primary, exit);
                primary_done = true;
                break;
            }
            let effects = self.effects(&primary);
            let elapsed = primary.process.started.elapsed();
            let mut kill = None;
            for (i, f) in faults.iter().enumerate() {
                if fired[i] {
                    continue;
                }
                match f {
                    Fault::KillAfterEffects { effects: n } if effects >= *n => {
                        kill = Some(KillReason::AfterEffects {
                            effects: *n,
                            observed: effects,
                        });
                        fired[i] = true;
                    }
                    Fault::KillAfterMillis { millis }
                        if elapsed >= Duration::from_millis(*millis) =>
                    {
                        kill = Some(KillReason::AfterMillis { millis: *millis });
                        fired[i] = true;
                    }
                    Fault::Rebalance { after_effects } if effects >= *after_effects => {
                        fired[i] = true;
                        peer = Some(self.spawn(false, &[])?);
                    }
                    Fault::BrokerRestart {
                        broker,
                        after_effects,
                    } if effects >= *after_effects => {
                        fired[i] = true;
                        self.broker_restart(*broker)?;
                    }
                    _ => {}
                }
            }
            if let Some(reason) = kill {
                let exit = primary.process.kill()?;
                self.record(primary.inc, EventKind::Killed { reason });
                self.ended(&primary, exit);
                primary_done = true;
                break;
            }
            if last_lag.elapsed() > Duration::from_millis(150) {
                last_lag = Instant::now();
                if self.lag()?.iter().all(|(_, l)| *l == 0) {
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !primary_done {
            self.stop(primary)?;
        }
        if let Some(p) = peer {
            self.stop(p)?;
        }
        for (i, f) in faults.iter().enumerate() {
            if !fired[i] && !matches!(f, Fault::SinkFailure { .. }) {
                self.orchestrator(EventKind::FaultSkipped { fault: f.clone() });
            }
        }
        let offsets = self.committed()?;
        self.orchestrator(EventKind::BrokerCommitted { offsets });
        Ok(())
    }

    fn broker_restart(&mut self, broker: usize) -> Result<()> {
        self.orchestrator(EventKind::BrokerFault {
            broker,
            action: "kill".into(),
        });
        self.runner.cluster.kill_broker(broker)?;
        self.runner.cluster.restart_broker(broker)?;
        self.orchestrator(EventKind::BrokerFault {
            broker,
            action: "restart".into(),
        });
        Ok(())
    }

    /// Fault-free incarnations until lag is 0 or the drain timeout. A worker that exits on its
    /// own is started again, as a supervisor would, at most 3 times.
    fn drain(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut restarts = 0;
        let mut lag = self.lag()?;
        while !lag.iter().all(|(_, l)| *l == 0) {
            if started.elapsed() > self.runner.timing.drain || restarts > 3 {
                self.orchestrator(EventKind::Stuck {
                    lag,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
                return Ok(());
            }
            let mut w = self.spawn(true, &[])?;
            restarts += 1;
            let mut exited = false;
            while started.elapsed() <= self.runner.timing.drain {
                if let Some(exit) = w.process.try_exit()? {
                    self.ended(&w, exit);
                    exited = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(150));
                lag = self.lag()?;
                if lag.iter().all(|(_, l)| *l == 0) {
                    break;
                }
            }
            if !exited {
                self.stop(w)?;
            }
            let offsets = self.committed()?;
            self.orchestrator(EventKind::BrokerCommitted { offsets });
            lag = self.lag()?;
        }
        self.orchestrator(EventKind::Drained);
        Ok(())
    }
}

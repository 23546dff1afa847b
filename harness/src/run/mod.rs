//! Executes one case: fresh topic and group, produce the workload, run worker incarnations
//! as the schedule says, then a fault-free drain until the group's lag is 0 (or "stuck").
//!
//! ```text
//!  create topic ─► produce I ─► incarnation 1 (faults…) ─► committed? ─► incarnation 2 … ─► drain ─► read sink back
//!                               │ ends when: it dies (crash point / kill), or lag = 0, or it sits
//!                               │ idle with lag left (stopped: a graceful close may commit), or deadline
//! ```
//!
//! This file sets a case up and collects its trace; [`incarnation`] controls the worker
//! processes (faults, the rebalance handshake, commit observation, stop, drain).

mod broker;
mod cleanup;
mod incarnation;
mod network;
mod retry;
mod workload;

pub(crate) use cleanup::Cleanup;
pub(crate) use workload::WorkloadProducer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use crate::cluster::Cluster;
use crate::schedule::Schedule;
use crate::sink::{ReadBackContext, SinkFactory};
use crate::trace::{
    monotonic_us, CaseInfo, Event, EventKind, Incarnation, MessageRef, Phase, SinkSemantics, Trace,
};
use crate::worker::Launch;
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
    /// A worker that changed nothing for this long (no event, no commit) while lag remains is
    /// asked to stop: it waits for input that will not come (e.g. it commits every n records
    /// and the last batch is short). Env: `KAFKA_HARNESS_IDLE_MS`.
    pub idle: Duration,
    /// How often committed offsets are read from the broker during an incarnation (each
    /// change is recorded with its time bracket). Env: `KAFKA_HARNESS_OBSERVE_MS`.
    pub observe: Duration,
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
            idle: ms("KAFKA_HARNESS_IDLE_MS", 2_500),
            observe: ms("KAFKA_HARNESS_OBSERVE_MS", 100),
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
    /// One producer for every case's workload (creating an idempotent producer per case
    /// costs ~0.5 s of metadata and producer-id round trips).
    pub producer: WorkloadProducer,
    /// Deletes finished cases' topics and groups in the background.
    pub cleanup: Cleanup,
    /// The user's payload for message `(id, key)`; `None`: `"{id}:{key}"`.
    pub payload: Option<PayloadFn>,
    /// The `fail` crate's fail points workers serve as crash points.
    pub fail_points: Vec<String>,
    /// Set while the cases in flight are to be abandoned: a search that found a failure
    /// needs the machine to shrink it, and the later cases' verdicts would be thrown away.
    /// A case sees it within ~10 ms, kills its workers (SIGKILL, as any crash) and returns
    /// [`Error::Cancelled`]; its topics are deleted as for any case.
    pub cancel: std::sync::atomic::AtomicBool,
}

impl CaseRunner {
    /// Abandon (`true`) the cases in flight, or run cases normally again (`false`).
    pub(crate) fn cancel_cases(&self, on: bool) {
        self.cancel.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A payload generator: message id and key to the bytes the consumer will deserialize.
pub type PayloadFn = Arc<dyn Fn(u64, &str) -> Vec<u8> + Send + Sync>;

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
    phases: Vec<Phase>,
    /// The committed offsets of the last broker read, per partition, and when it was made.
    seen: Vec<Option<i64>>,
    seen_at_us: u64,
    /// Brokers a fault took down or froze, to bring back.
    outstanding: Vec<broker::Outstanding>,
    /// When the last broker taken out was brought back (or the last cut link healed).
    broker_back: Option<std::time::Instant>,
    /// Links a network fault cut or slowed, to heal.
    cut_links: Vec<network::CutLink>,
}

impl Drop for Case<'_> {
    /// A case abandoned on an error must not leave a broker down or frozen for the next one.
    fn drop(&mut self) {
        self.restore_brokers_quietly();
        self.heal_links_quietly();
    }
}

impl CaseRunner {
    pub(crate) fn run(&self, schedule: &Schedule, case_no: u64) -> Result<CaseOutcome> {
        let backend = self.cluster.backend();
        // Faults of the cluster only some backends can inject: one clear error, before anything
        // runs.
        use crate::schedule::ClusterFault;
        let unsupported = schedule
            .faults
            .iter()
            .find_map(|f| match f.cluster_fault() {
                Some(ClusterFault::Broker(..)) if !backend.broker_faults() => {
                    Some((f, "broker", ""))
                }
                Some(ClusterFault::Network(..)) if !backend.network_faults() => Some((
                    f,
                    "network",
                    " (its brokers do not advertise the harness's link proxies)",
                )),
                _ => None,
            });
        if let Some((f, kind, why)) = unsupported {
            return Err(Error::Config(format!(
                "the schedule has a {kind} fault ({f}), which the {backend} backend cannot inject{why}: run it on the containers or local backend (KAFKA_HARNESS_BACKEND)"
            )));
        }
        let started = Instant::now();
        let dir = cleanup::case_dir()
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
        let t = Instant::now();
        self.cluster.create_topic(&topic, w.partitions)?;
        if needs_output {
            self.cluster.create_topic(&output, w.partitions)?;
        }
        let create = phase("create-topics", t);
        let result = self.run_in(schedule, dir.path(), &topic, &group, &output);
        // Leave nothing behind on the cluster, whatever happened.
        let mut topics = vec![topic.clone()];
        if needs_output {
            topics.push(output.clone());
        }
        self.cleanup.submit(
            &self.cluster,
            topics,
            vec![group.clone(), format!("{output}.reader")],
        );
        let mut trace = result?;
        trace.phases.insert(0, create);
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
        // read_uncommitted: librdkafka asks for *stable* committed offsets when a consumer
        // reads committed (its default), and the broker holds that answer back while a
        // transaction has offsets pending — up to the transaction timeout when the worker
        // died or stopped inside it, which froze this case's whole loop (no pause ended, no
        // fault fired, a dead worker noticed late). The harness wants what the group holds
        // committed now; a pending transaction's offsets show once it commits. Watermarks are
        // then high watermarks, a transactional output's open records included.
        probe_config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted");
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
            phases: Vec::new(),
            seen: vec![None; schedule.workload.partitions.max(0) as usize],
            seen_at_us: 0,
            outstanding: Vec::new(),
            broker_back: None,
            cut_links: Vec::new(),
        };
        self.sink
            .prepare(dir)
            .map_err(|e| Error::Sink(format!("preparing the `{}` sink: {e}", self.sink.name())))?;
        let t = Instant::now();
        case.produce()?;
        case.phases.push(phase("produce", t));
        for faults in schedule.incarnations() {
            case.go_on()?;
            if case.lag()?.iter().all(|(_, l)| *l == 0) {
                for fault in faults {
                    case.orchestrator(EventKind::FaultSkipped { fault });
                }
                continue;
            }
            let t = Instant::now();
            let inc = case.next_inc;
            case.incarnation(&faults)?;
            case.phases.push(phase(&format!("incarnation {inc}"), t));
        }
        let t = Instant::now();
        case.drain()?;
        case.phases.push(phase("drain", t));
        let t = Instant::now();
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
        // A sink the user's own code wrote (e.g. `PostgresSink`) knows ids only: its rows take
        // the message's place from the workload and the read-back's time.
        let produced: std::collections::HashMap<u64, MessageRef> =
            trace.produced().map(|(m, _)| (m.id, *m)).collect();
        let read_at = monotonic_us().saturating_sub(case.epoch_us);
        for (stamp, mut msg) in back.applied {
            if msg.offset < 0 {
                msg = produced.get(&msg.id).copied().unwrap_or(msg);
            }
            trace.events.push(Event {
                at_us: stamp.at_us.min(read_at),
                inc: stamp.inc,
                kind: EventKind::Applied { msg },
            });
        }
        trace.state = back.state;
        trace.output = back.output;
        trace.sort();
        case.phases.push(phase("read-back", t));
        trace.phases = std::mem::take(&mut case.phases);
        Ok(trace)
    }
}

impl Case<'_> {
    /// `Err(Cancelled)` once the runner's cases are to be abandoned. The workers in flight
    /// are killed as their handles drop (see `WorkerProcess`'s `Drop`), a broker or link
    /// fault is undone by `Case`'s.
    fn go_on(&self) -> Result<()> {
        if self.runner.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }
}

fn phase(name: &str, since: Instant) -> Phase {
    Phase {
        name: name.to_string(),
        ms: since.elapsed().as_millis() as u64,
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

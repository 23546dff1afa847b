//! Incarnation control: start worker processes, fire the orchestrator's faults, release a
//! worker waiting at a `rebalance-at` point once the group rebalances, watch the group's
//! committed offsets on the broker while workers run, stop idle workers, and drain.
//!
//! ```text
//!  spawn ─► loop every ~10 ms: exited? ─ kill/rebalance/broker faults ─ rebalance handshake
//!                              └─ every `observe`: read committed offsets; record changes with
//!                                 their time bracket; lag 0 → end; idle with lag → stop
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::Case;
use crate::schedule::{ClusterFault, Fault};
use crate::trace::{Event, EventKind, Exit, Incarnation, KillReason, PartitionOffset};
use crate::worker::spec::WorkerSpec;
use crate::worker::WorkerProcess;
use crate::{Error, Result};

/// Extra wait after the group is seen rebalancing, so the waiting worker's heartbeat (every
/// `heartbeat.interval.ms`, 200 ms by the harness's defaults) has learnt of it before it polls.
/// The least of it: on a loaded machine the wait grows with the broker's answer time (see
/// [`heartbeat_margin`]).
const HEARTBEAT_MARGIN: Duration = Duration::from_millis(450);
/// The most the margin grows to on a slow broker.
const HEARTBEAT_MARGIN_MAX: Duration = Duration::from_millis(2_000);
/// How long the orchestrator waits for the group to start rebalancing after the second member
/// was started.
const REBALANCE_BOUND: Duration = Duration::from_secs(15);
/// When the cluster cannot describe the group, how long after starting the second member the
/// held worker is released (process start and JoinGroup take ~100–200 ms on loopback).
const UNDESCRIBED_JOIN_WAIT: Duration = Duration::from_millis(300);

pub(super) struct Running {
    inc: Incarnation,
    process: WorkerProcess,
    stop_path: PathBuf,
    trace_path: PathBuf,
}

/// What a worker's own trace file says so far.
#[derive(Default)]
struct Progress {
    /// Bytes written (any change means the worker did something).
    len: usize,
    /// Effects applied: sink writes, or polled records for output to a topic (for a consumer
    /// with its own producer, which leaves no markers, the incarnation counts the records
    /// that reached the output topic instead).
    effects: u32,
    /// `rebalance-at` points reached.
    rebalance_requests: usize,
    /// `pause-at` points reached.
    pauses: usize,
    /// The worker's latest event is a failed sink write: it may be backing off before a retry
    /// (see [`RETRYING`]).
    retrying: bool,
    /// The worker function has returned (its `exited` event is written): the process is
    /// only closing its clients now, which may block on a broker it cannot reach.
    returned: bool,
    /// The worker is inside a blocking client call (started, not yet ended): waiting on the
    /// cluster, not idle.
    in_client_call: bool,
    /// An instrumented client has spoken (a rebalance, a client call, an effect marker): the
    /// markers count this worker's effects.
    instrumented: bool,
}

impl Running {
    fn progress(&self, output_topic: bool) -> Progress {
        let Ok(text) = std::fs::read_to_string(&self.trace_path) else {
            return Progress::default();
        };
        progress_of(&text, output_topic)
    }
}

/// What a worker's trace text says so far.
fn progress_of(text: &str, output_topic: bool) -> Progress {
    // Hits only, as the worker counts them: a crash, a pause or a rebalance request at the
    // same point names it too.
    let marker = if output_topic {
        "\"event\":\"crash-point-hit\",\"point\":\"after-poll\""
    } else {
        "\"event\":\"crash-point-hit\",\"point\":\"after-sink-write\""
    };
    let effects = text.matches(marker).count() as u32;
    Progress {
        len: text.len(),
        effects,
        instrumented: effects > 0
            || text.contains("\"event\":\"rebalanced\"")
            || text.contains("\"event\":\"client-call-started\""),
        rebalance_requests: text.matches("\"event\":\"rebalance-requested\"").count(),
        pauses: text.matches("\"event\":\"paused\"").count(),
        retrying: text
            .trim_end()
            .rsplit('\n')
            .next()
            .is_some_and(|last| last.contains("\"event\":\"sink-failed\"")),
        returned: text.contains("\"event\":\"exited\""),
        in_client_call: text.matches("\"event\":\"client-call-started\"").count()
            > text.matches("\"event\":\"client-call-ended\"").count(),
    }
}

/// Every complete event a worker wrote to `trace_path` (a line cut by SIGKILL is skipped).
fn events_in(trace_path: &Path) -> Vec<Event> {
    std::fs::read_to_string(trace_path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A pause of at least this many ms outlasts the harness's default `session.timeout.ms`
/// (1000): a second member is started to take over the paused worker's partitions. A consumer
/// the harness built says its own session timeout in its pause event, which wins.
pub(crate) const TAKEOVER_PAUSE_MS: u64 = 1000;

/// How long a worker keeps running, after it woke from a pause or a broker or link came
/// back, before a drained group ends its incarnation: time to notice it was evicted, rejoin
/// (the group rebalances again) and act on what it held or queued — two session timeouts of
/// the harness's default, with room for a retry. A consumer in production runs on; ending at
/// lag 0 is the harness's shortcut, and it must not cut off what a fault set in motion.
const AFTER_WAKE: Duration = Duration::from_millis(2000);

/// How long a worker that has shown no sign of work (no event, no output record, no commit)
/// may sit before it is called idle: a consumer's start — its first join, a transactional
/// producer's `init_transactions` — takes seconds on a 3-broker cluster (the idle limit,
/// 2.5 s by default, applies once it has started).
const STARTING: Duration = Duration::from_secs(15);

/// How long a worker whose latest act was a failed sink write may sit before it is called
/// idle: it may be backing off before a retry (a second or two is common, after a write that
/// hung up to 2 s), which the idle limit (2.5 s by default) would cut short — and judge
/// *wedged* — though the consumer would have gone on. One wedged after an outage is still
/// stopped, and judged, after this; a longer backoff needs `KAFKA_HARNESS_IDLE_MS` above it.
const RETRYING: Duration = Duration::from_secs(5);

/// Where a `pause-at` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    None,
    /// The worker said it stops itself, for this long.
    Requested(Duration),
    /// The kernel shows it stopped since then.
    Stopped(Instant, Duration),
}

/// The `millis` of the last `paused` event in a worker's trace (0 if unreadable).
/// The last pause the worker recorded: how long, and whether it outlasts the consumer's
/// session timeout (the harness's default when the worker built its consumer itself).
fn last_pause(trace_path: &Path) -> (u64, bool) {
    events_in(trace_path)
        .iter()
        .rev()
        .find_map(|e| match &e.kind {
            EventKind::Paused {
                millis,
                session_timeout_ms,
                ..
            } => Some((
                *millis,
                *millis >= session_timeout_ms.unwrap_or(TAKEOVER_PAUSE_MS),
            )),
            _ => None,
        })
        .unwrap_or((0, false))
}

/// Per fault: whether it is a broker or network fault that has come due — once the worker
/// applied its effects, or reached the point hit where it waits for it. A fault already
/// released stays due (it may still wait for another cluster fault to end before it fires).
fn cluster_faults_due(
    faults: &[Fault],
    released: &[bool],
    effects: u32,
    trace_path: &Path,
) -> Vec<bool> {
    // The worker's events are read only while a fault held at a point waits for its hit.
    let hits: Vec<(String, u32)> = if faults
        .iter()
        .zip(released)
        .any(|(f, r)| f.held_at_point().is_some() && !r)
    {
        events_in(trace_path)
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::CrashPointHit { point, hit } => Some((point, hit)),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    faults
        .iter()
        .zip(released)
        .map(|(f, released)| {
            f.cluster_fault().is_some()
                && (*released
                    || f.held_at_effect().is_some_and(|n| effects >= n)
                    || f.held_at_point()
                        .is_some_and(|(p, h)| hits.iter().any(|(q, k)| q == p && *k == h)))
        })
        .collect()
}

/// The `client.id` of an incarnation's consumer: a broker's member id starts with it, and the
/// range and round-robin assignors order members by id, so a joiner sorts before the worker
/// (`a` < `b`) when the schedule says so, after it (`c`) otherwise.
fn client_id(primary: bool, joiner_first: bool, inc: Incarnation) -> String {
    let side = match (primary, joiner_first) {
        (true, _) => 'b',
        (false, true) => 'a',
        (false, false) => 'c',
    };
    format!("kafka-harness-{side}-{inc}")
}

/// How long to wait after the group is seen rebalancing before the held worker may poll: its
/// client learns of the rebalance from a heartbeat answer, and only a poll after that is the
/// revoke the schedule asks for (a poll before it returns prefetched records, and the
/// rebalance lands later than scheduled). A heartbeat answer is as slow as the broker's other
/// answers, so the margin grows with the slowest group-list answer seen while waiting:
/// 450 ms on a quiet machine (a replay of a rebalance-at schedule reproduced 35 of 35 times),
/// more under a CI run's load (where the fixed 450 ms let a worker poll its next records
/// first; with no margin at all, 4 of 10 replays missed the revoke).
fn heartbeat_margin(slowest_answer: Duration) -> Duration {
    (HEARTBEAT_MARGIN + slowest_answer * 4).min(HEARTBEAT_MARGIN_MAX)
}

/// Whether a fault's `point` names the point an event recorded (`*` names every point).
fn names(point: &str, recorded: &str) -> bool {
    point == crate::schedule::ANY_POINT || point == recorded
}

/// Whether the worker-side fault `f` fired, judged from the worker's own events.
fn fired_in_worker(f: &Fault, events: &[Event]) -> Option<bool> {
    let any = |pred: &dyn Fn(&EventKind) -> bool| events.iter().any(|e| pred(&e.kind));
    Some(match f {
        Fault::Crash { point, hit } => {
            any(&|k| matches!(k, EventKind::Crashed { point: p, hit: h } if p == point && h == hit))
        }
        Fault::CrashAfter { after, point, hit } => any(&|k| {
            matches!(k, EventKind::CrashedAfter { after: a, point: p, hit: h }
                if a == after && names(point, p) && h == hit)
        }),
        Fault::SinkFailure { write, .. } => {
            any(&|k| matches!(k, EventKind::SinkFailed { write: w, .. } if w == write))
        }
        Fault::PauseAt { point, hit, .. } => any(&|k| {
            matches!(k, EventKind::Paused { point: p, hit: h, after: None, .. }
                if p == point && h == hit)
        }),
        Fault::PauseAfter {
            after, point, hit, ..
        } => any(&|k| {
            matches!(k, EventKind::Paused { point: p, hit: h, after: Some(a), .. }
                if a == after && names(point, p) && h == hit)
        }),
        Fault::RebalanceAt { point, hit } | Fault::RebalanceAfter { point, hit, .. } => any(
            &|k| matches!(k, EventKind::RebalanceRequested { point: p, hit: h } if names(point, p) && h == hit),
        ),
        // The orchestrator's own faults: it knows whether it fired them.
        Fault::KillAfterEffects { .. }
        | Fault::KillAfterMillis { .. }
        | Fault::Rebalance { .. }
        | Fault::BrokerRestart { .. }
        | Fault::Broker { .. }
        | Fault::Network { .. }
        | Fault::BrokerAt { .. }
        | Fault::NetworkAt { .. } => return None,
    })
}

impl Case<'_> {
    pub(super) fn now(&self) -> u64 {
        crate::trace::monotonic_us().saturating_sub(self.epoch_us)
    }

    fn record(&mut self, inc: Incarnation, kind: EventKind) {
        let at_us = self.now();
        self.events.push(Event { at_us, inc, kind });
    }

    pub(super) fn orchestrator(&mut self, kind: EventKind) {
        self.record(0, kind);
    }

    /// How long a worker may show no change before it is called idle: longer while it has
    /// shown no sign of work at all (see [`STARTING`]), or right after a failed sink write
    /// (see [`RETRYING`]).
    fn idle_limit(&self, started: bool, retrying: bool) -> Duration {
        let idle = self.runner.timing.idle;
        match (started, retrying) {
            (false, _) => idle.max(STARTING),
            (true, true) => idle.max(RETRYING),
            (true, false) => idle,
        }
    }

    fn idle_stopped(&mut self, worker: Incarnation, idle: Duration) {
        self.orchestrator(EventKind::IdleStopped {
            worker,
            idle_ms: idle.as_millis() as u64,
        });
    }

    /// Committed offsets from the broker. The coordinator's retriable errors are retried
    /// within [`super::retry::TRANSIENT_BOUND`]; anything else is an error at once.
    fn committed(&self) -> Result<Vec<(i32, Option<i64>)>> {
        super::retry::retry_transient(|| self.committed_once())
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
        let mut out = Vec::new();
        for e in got.elements() {
            if let Some(err) = e.error().err() {
                return Err(Error::kafka("reading committed offsets", err));
            }
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            out.push((e.partition(), offset));
        }
        Ok(out)
    }

    /// Per partition: high watermark − committed offset (everything, if nothing is committed).
    pub(super) fn lag(&mut self) -> Result<Vec<(i32, i64)>> {
        let committed = self.observe()?;
        Ok(committed
            .into_iter()
            .map(|(p, c)| {
                let end = self.ends.get(p as usize).copied().unwrap_or(0);
                (p, (end - c.unwrap_or(0)).max(0))
            })
            .collect())
    }

    /// Read committed offsets and record what changed since the last read, with the bracket
    /// in which the commit must have landed: the broker is the record of commits the worker
    /// never reported (auto-commits whose callback was not served, async commits, commits of
    /// code the harness does not wrap).
    fn observe(&mut self) -> Result<Vec<(i32, Option<i64>)>> {
        let committed = self.committed()?;
        let at_us = self.now();
        let mut changed = Vec::new();
        for (p, c) in &committed {
            let Some(seen) = self.seen.get_mut(*p as usize) else {
                continue;
            };
            if let (Some(offset), true) = (c, c != seen) {
                changed.push(PartitionOffset {
                    partition: *p,
                    offset: *offset,
                });
            }
            *seen = *c;
        }
        if !changed.is_empty() {
            let since_us = self.seen_at_us;
            self.events.push(Event {
                at_us,
                inc: 0,
                kind: EventKind::BrokerCommitObserved {
                    offsets: changed,
                    since_us,
                },
            });
        }
        self.seen_at_us = at_us;
        Ok(committed)
    }

    fn spawn(&mut self, primary: bool, faults: &[Fault]) -> Result<Running> {
        let inc = self.next_inc;
        self.next_inc += 1;
        let trace_path = self.dir.join(format!("trace-{inc}.jsonl"));
        let stop_path = self.dir.join(format!("stop-{inc}"));
        let mut cluster = self.runner.cluster.view();
        // In a case with a network fault the worker reaches the brokers through the link
        // proxies (the second member does not: the cut is this worker's).
        if primary && self.proxied() {
            if let Some(bootstrap) = self.runner.cluster.proxied_bootstrap_servers() {
                cluster.bootstrap = bootstrap;
            }
        }
        let spec = WorkerSpec {
            name: self.runner.name.clone(),
            inc,
            primary,
            cluster,
            topic: self.topic.clone(),
            output_topic: format!("{}.out", self.topic),
            group: self.group.clone(),
            transactional_id: self.transactional_id(),
            partitions: self.schedule.workload.partitions,
            client_id: client_id(primary, self.schedule.joiner_first, inc),
            faults: faults.to_vec(),
            fail_points: self.runner.fail_points.clone(),
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

    /// The case's `transactional.id`: the same for every incarnation, so each fences the last.
    pub(super) fn transactional_id(&self) -> String {
        format!("{}.txn", self.topic)
    }

    fn output_topic(&self) -> bool {
        self.runner.sink.semantics() == crate::trace::SinkSemantics::OutputTopic
    }

    /// One incarnation with its faults. It ends when the worker dies, when lag reaches 0, when
    /// the worker sits idle with lag left (then it is asked to stop), or at the deadline.
    pub(super) fn incarnation(&mut self, faults: &[Fault]) -> Result<()> {
        let output = self.output_topic();
        // Where the output topic stands before this worker starts (`None`: it could not be
        // read — the output-topic count stays off for this incarnation).
        let output_base = if output {
            self.output_records(Duration::from_secs(5))
        } else {
            None
        };
        let mut output_effects = 0;
        let mut primary = self.spawn(true, faults)?;
        let mut peer: Option<Running> = None;
        let mut fired = vec![false; faults.len()];
        let mut released = vec![false; faults.len()];
        let deadline = Instant::now() + self.runner.timing.incarnation;
        let mut last_read = Instant::now();
        let mut last_change = Instant::now();
        // Set when the worker sat idle with lag left and is stopped for it.
        let mut idle: Option<Duration> = None;
        let mut last_len = (0, 0, 0);
        // Whether the worker has shown any sign of work yet (an event, an output record, a
        // commit): until then it is starting, not idle.
        let mut started = false;
        let mut last_seen = self.seen.clone();
        let mut handled_requests = 0;
        let mut handled_pauses = 0;
        let mut pause = Pause::None;
        // When the worker was last continued after a pause.
        let mut woke: Option<Instant> = None;
        let mut primary_done = false;
        loop {
            self.go_on()?;
            if let Some(exit) = primary.process.try_exit()? {
                self.ended(&primary, exit);
                primary_done = true;
                break;
            }
            let mut progress = primary.progress(output);
            if !progress.instrumented {
                // A consumer that writes its output with its own clients leaves no markers:
                // its effects are the records that reached the output topic.
                progress.effects = output_effects;
            }
            // A worker whose function has returned is not consuming any more, so it is neither
            // idle nor wedged while it closes its clients (a transactional producer's close can
            // wait on a coordinator that just failed over): it is stopped like an ended one —
            // waited for up to the stop grace, then killed.
            if progress.returned {
                break;
            }
            let elapsed = primary.process.started.elapsed();
            // Which broker and network faults have come due: the worker reached their effect,
            // or the point hit where it waits for them.
            let due = cluster_faults_due(faults, &released, progress.effects, &primary.trace_path);
            let mut kill = None;
            for (i, f) in faults.iter().enumerate() {
                if fired[i] {
                    continue;
                }
                match f {
                    Fault::KillAfterEffects { effects: n } if progress.effects >= *n => {
                        kill = Some(KillReason::AfterEffects {
                            effects: *n,
                            observed: progress.effects,
                        });
                        fired[i] = true;
                    }
                    Fault::KillAfterMillis { millis }
                        if elapsed >= Duration::from_millis(*millis) =>
                    {
                        kill = Some(KillReason::AfterMillis { millis: *millis });
                        fired[i] = true;
                    }
                    Fault::Rebalance { after_effects } if progress.effects >= *after_effects => {
                        fired[i] = true;
                        peer = Some(self.spawn(false, &[])?);
                    }
                    Fault::BrokerRestart {
                        broker,
                        after_effects,
                    } if progress.effects >= *after_effects => {
                        fired[i] = true;
                        self.broker_restart(*broker)?;
                    }
                    // One broker out at a time, one network fault at a time, and no network
                    // fault while a broker is out (metadata would wait on it; a broker's
                    // restart would hold up the heal): a fault that comes due then waits.
                    _ if due[i] && !self.broker_out() && !self.link_out() => {
                        fired[i] = true;
                        match f.cluster_fault() {
                            Some(ClusterFault::Broker(target, action)) => {
                                self.broker_fault(target, action)?
                            }
                            Some(ClusterFault::Network(target, action)) => {
                                self.network_fault(target, action)?
                            }
                            None => {}
                        }
                    }
                    _ => {}
                }
            }
            // A worker waits at the effect or point hit where a broker or network fault is due
            // until the fault is in place; a fault that must wait for another to end fires
            // later, but the worker is released all the same.
            for (i, f) in faults.iter().enumerate() {
                if !due[i] || released[i] {
                    continue;
                }
                released[i] = true;
                let go = match f.held_at_effect() {
                    Some(n) => crate::worker::effect_go_path_of(&primary.stop_path, n),
                    None => crate::worker::fault_go_path_of(&primary.stop_path, i),
                };
                std::fs::write(&go, b"go")
                    .map_err(|e| Error::io("releasing the worker", &go, e))?;
            }
            if let Some(reason) = kill {
                let exit = primary.process.kill()?;
                self.record(primary.inc, EventKind::Killed { reason });
                self.ended(&primary, exit);
                primary_done = true;
                break;
            }
            if progress.rebalance_requests > handled_requests {
                handled_requests = progress.rebalance_requests;
                peer = self.rebalance(&primary, peer)?;
                last_change = Instant::now();
            }
            if progress.pauses > handled_pauses {
                handled_pauses = progress.pauses;
                let (millis, evicted) = last_pause(&primary.trace_path);
                pause = Pause::Requested(Duration::from_millis(millis));
                // Past the session timeout the group evicts the worker: a second member is
                // there to take its partitions, so it wakes as a zombie.
                if evicted && peer.is_none() {
                    peer = Some(self.spawn(false, &[])?);
                }
            }
            match pause {
                // The timer starts once the kernel says the worker is stopped: a SIGCONT sent
                // before its SIGSTOP would leave it stopped for good.
                Pause::Requested(length) if primary.process.is_stopped() => {
                    pause = Pause::Stopped(Instant::now(), length);
                }
                Pause::Stopped(since, length) if since.elapsed() >= length => {
                    primary.process.resume();
                    woke = Some(Instant::now());
                    self.record(
                        primary.inc,
                        EventKind::Resumed {
                            paused_ms: since.elapsed().as_millis() as u64,
                        },
                    );
                    pause = Pause::None;
                }
                _ => {}
            }
            self.restore_brokers(false)?;
            self.heal_links(false)?;
            if pause != Pause::None || self.broker_recovering() {
                // Neither a drained group nor an idle worker ends the incarnation while the
                // worker is stopped, or while a broker is down or just back: what it does
                // when it wakes, or when its client has recovered, is the point.
                last_change = Instant::now();
            }
            if progress.in_client_call {
                // Waiting for the cluster's answer inside a blocking call is not idleness;
                // the incarnation's deadline still bounds it.
                last_change = Instant::now();
            }
            // No broker reads while a broker is down: they would wait on it, and hold up its
            // return.
            if last_read.elapsed() >= self.runner.timing.observe && !self.broker_out() {
                last_read = Instant::now();
                // Only for a worker no instrumented client speaks for. A progress signal,
                // not a judgement: a read that fails (a leader moving, a broker just back)
                // keeps the last count, and waits at most 1 s.
                if let Some(base) = output_base.filter(|_| !progress.instrumented) {
                    if let Some(now) = self.output_records(Duration::from_secs(1)) {
                        output_effects = (now - base).max(0) as u32;
                    }
                }
                // A drained group ends the incarnation — but not right after the worker woke or
                // a broker or link came back: a zombie still holds polled records and refused
                // commits, and what it does with them (writes, retried commits) is what the
                // fault is scheduled to show.
                let settled = woke.is_none_or(|t| t.elapsed() >= AFTER_WAKE)
                    && !self.link_out()
                    && self.broker_back.is_none_or(|t| t.elapsed() >= AFTER_WAKE);
                if self.lag()?.iter().all(|(_, l)| *l == 0) && pause == Pause::None && settled {
                    break;
                }
                let peer_len = peer.as_ref().map_or(0, |p| p.progress(output).len);
                let lens = (progress.len, peer_len, output_effects);
                // A worker that has shown nothing yet may still be starting: a consumer built
                // by the user's own code (no event of its own) can spend seconds in
                // `init_transactions` or its first join on a 3-broker cluster, and stopping it
                // there as idle would skip the faults due at its first records.
                let idle_after = self.idle_limit(started, progress.retrying);
                if lens != last_len || self.seen != last_seen {
                    started = true;
                    last_len = lens;
                    last_seen = self.seen.clone();
                    last_change = Instant::now();
                } else if last_change.elapsed() >= idle_after {
                    // The reads above can block for seconds (a committed-offset read waits
                    // out a pending transactional commit): a worker that died meanwhile ended,
                    // it did not sit idle.
                    if let Some(exit) = primary.process.try_exit()? {
                        self.ended(&primary, exit);
                        primary_done = true;
                        break;
                    }
                    idle = Some(last_change.elapsed());
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The rest of the incarnation (a graceful stop may commit) and the drain run on a whole
        // cluster.
        self.restore_brokers(true)?;
        self.heal_links(true)?;
        // Read the worker's events only once it has ended: a worker asked to stop may still
        // reach a scheduled crash on its way out (it finishes the record it holds).
        let primary_trace = primary.trace_path.clone();
        if let Some(idle) = idle {
            // Alive, idle, lag left: `check::wedged` judges whether records were waiting.
            let live = std::iter::once(primary.inc).chain(peer.as_ref().map(|p| p.inc));
            for worker in live.collect::<Vec<_>>() {
                self.idle_stopped(worker, idle);
            }
        }
        if !primary_done {
            if pause != Pause::None {
                primary.process.resume();
            }
            self.stop(primary)?;
        }
        if let Some(p) = peer {
            self.stop(p)?;
        }
        let worker_events = events_in(&primary_trace);
        for (i, f) in faults.iter().enumerate() {
            let fired = fired_in_worker(f, &worker_events).unwrap_or(fired[i]);
            if !fired {
                self.orchestrator(EventKind::FaultSkipped { fault: f.clone() });
            }
        }
        self.read_after_incarnation()?;
        Ok(())
    }

    /// Records in the output topic, transactional ones not yet committed included (the sum
    /// of its high watermarks; a transaction's commit marker takes an offset too); `None` if
    /// a partition's watermark could not be read within `timeout`.
    fn output_records(&self, timeout: Duration) -> Option<i64> {
        let topic = format!("{}.out", self.topic);
        (0..self.schedule.workload.partitions)
            .map(|p| {
                self.probe
                    .fetch_watermarks(&topic, p, timeout)
                    .ok()
                    .map(|(_, high)| high)
            })
            .sum()
    }

    /// The committed offsets once an incarnation ended: a change since the last read is a
    /// commit observed (with its bracket); the whole list is the incarnation's outcome.
    fn read_after_incarnation(&mut self) -> Result<()> {
        let offsets = self.observe()?;
        self.orchestrator(EventKind::BrokerCommitted { offsets });
        Ok(())
    }

    /// The primary waits at a `rebalance-at` point: make the group rebalance (a second
    /// member joins, or the one already there leaves), wait until the broker says the group
    /// is rebalancing, then release the primary. Returns the second member, if one runs.
    fn rebalance(&mut self, primary: &Running, peer: Option<Running>) -> Result<Option<Running>> {
        let peer = match peer {
            Some(p) => {
                self.stop(p)?;
                None
            }
            None => Some(self.spawn(false, &[])?),
        };
        let started = Instant::now();
        let mut state = String::from("unknown");
        let mut described = false;
        let mut slowest_answer = Duration::ZERO;
        while started.elapsed() < REBALANCE_BOUND {
            self.go_on()?;
            let asked = Instant::now();
            let answer = self
                .probe
                .fetch_group_list(Some(&self.group), Duration::from_secs(5));
            slowest_answer = slowest_answer.max(asked.elapsed());
            if let Ok(list) = answer {
                if let Some(g) = list.groups().first() {
                    described = true;
                    state = g.state().to_string();
                    if matches!(state.as_str(), "PreparingRebalance" | "CompletingRebalance") {
                        break;
                    }
                }
            }
            // A cluster that never describes the group (librdkafka's mock has no
            // DescribeGroups) cannot be watched: its coordinator waits only
            // `session.timeout.ms` for old members to rejoin, so waiting the full bound would
            // expel the held worker instead of revoking it. Release it once the second
            // member has had time to send its JoinGroup.
            if !described && started.elapsed() >= UNDESCRIBED_JOIN_WAIT {
                state = "not describable (timed release)".into();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(heartbeat_margin(slowest_answer));
        self.orchestrator(EventKind::RebalanceStarted { state });
        let go = crate::worker::go_path_of(&primary.stop_path);
        std::fs::write(&go, b"go").map_err(|e| Error::io("writing the go file", &go, e))?;
        Ok(peer)
    }

    fn broker_restart(&mut self, broker: usize) -> Result<()> {
        self.orchestrator(EventKind::BrokerFault {
            broker,
            action: "kill".into(),
            role: None,
        });
        self.runner.cluster.kill_broker(broker)?;
        self.runner.cluster.restart_broker(broker)?;
        self.broker_back = Some(Instant::now());
        self.orchestrator(EventKind::BrokerFault {
            broker,
            action: "restart".into(),
            role: None,
        });
        Ok(())
    }

    /// Fault-free incarnations until lag is 0 or the drain timeout. A worker that exits on its
    /// own is started again, as a supervisor would; one that sits idle with lag left is asked
    /// to stop (its close may commit) and started again; at most 4 starts.
    pub(super) fn drain(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut restarts = 0;
        let mut lag = self.lag()?;
        let output = self.output_topic();
        while !lag.iter().all(|(_, l)| *l == 0) {
            self.go_on()?;
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
            let mut last_change = Instant::now();
            let mut last = (0, self.seen.clone());
            let mut shown_work = false;
            while started.elapsed() <= self.runner.timing.drain {
                self.go_on()?;
                if let Some(exit) = w.process.try_exit()? {
                    self.ended(&w, exit);
                    exited = true;
                    break;
                }
                std::thread::sleep(self.runner.timing.observe);
                lag = self.lag()?;
                if lag.iter().all(|(_, l)| *l == 0) {
                    break;
                }
                let progress = w.progress(output);
                // As in an incarnation: a worker that returned is closing, not idle; one inside
                // a blocking client call is waiting on the cluster (the drain starts right
                // after a broker fault is undone, when coordinators fail over).
                if progress.returned {
                    break;
                }
                if progress.in_client_call {
                    last_change = Instant::now();
                }
                let now = (progress.len, self.seen.clone());
                if now != last {
                    last = now;
                    last_change = Instant::now();
                    shown_work = true;
                } else if last_change.elapsed() >= self.idle_limit(shown_work, progress.retrying) {
                    // As in an incarnation: the lag read may have blocked while it died.
                    if let Some(exit) = w.process.try_exit()? {
                        self.ended(&w, exit);
                        exited = true;
                        break;
                    }
                    self.idle_stopped(w.inc, last_change.elapsed());
                    break;
                }
            }
            if !exited {
                self.stop(w)?;
            }
            self.read_after_incarnation()?;
            lag = self.lag()?;
        }
        self.orchestrator(EventKind::Drained);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait before a held worker polls is 450 ms on a quiet broker, grows with a slow
    /// one's answers, and stays bounded (the worker's session goes on meanwhile).
    #[test]
    fn the_rebalance_margin_grows_with_the_brokers_answer_time_and_stays_bounded() {
        assert_eq!(heartbeat_margin(Duration::ZERO), HEARTBEAT_MARGIN);
        let quiet = heartbeat_margin(Duration::from_millis(10));
        let loaded = heartbeat_margin(Duration::from_millis(150));
        assert!(quiet < loaded, "{quiet:?} vs {loaded:?}");
        assert_eq!(loaded, Duration::from_millis(1_050));
        assert_eq!(
            heartbeat_margin(Duration::from_secs(5)),
            HEARTBEAT_MARGIN_MAX
        );
    }

    #[test]
    fn a_joiner_sorts_before_or_after_every_worker_incarnation_as_the_schedule_says() {
        for inc in [1, 2, 9, 10, 123] {
            let worker = client_id(true, false, inc);
            assert_eq!(
                worker,
                client_id(true, true, inc),
                "the side is the joiner's"
            );
            for other in [1, 2, 9, 10, 123] {
                assert!(
                    client_id(false, true, other) < worker,
                    "{other} vs {worker}"
                );
                assert!(
                    client_id(false, false, other) > worker,
                    "{other} vs {worker}"
                );
            }
        }
    }

    fn trace_text(kinds: Vec<EventKind>) -> String {
        kinds
            .into_iter()
            .map(|kind| serde_json::to_string(&event(kind)).unwrap() + "\n")
            .collect()
    }

    fn hit(point: &str, hit: u32) -> EventKind {
        EventKind::CrashPointHit {
            point: point.into(),
            hit,
        }
    }

    /// The orchestrator counts effects as the worker does (hits of the effect point only),
    /// so a fault held at an effect is released at that effect.
    #[test]
    fn effects_are_the_hits_of_the_effect_point_only() {
        let text = trace_text(vec![
            hit("after-sink-write", 1),
            EventKind::Paused {
                point: "after-sink-write".into(),
                hit: 1,
                millis: 100,
                after: None,
                session_timeout_ms: None,
            },
            EventKind::RebalanceRequested {
                point: "after-sink-write".into(),
                hit: 1,
            },
            hit("before-commit", 1),
            hit("after-sink-write", 2),
        ]);
        let p = progress_of(&text, false);
        assert_eq!(p.effects, 2);
        assert!(p.instrumented);
        assert_eq!(progress_of(&text, true).effects, 0);
    }

    /// A consumer with its own clients, seen only through its own crash points, is not
    /// instrumented: its effects are counted from the output topic.
    #[test]
    fn a_worker_seen_only_through_its_own_points_is_not_instrumented() {
        let byo = trace_text(vec![hit("order-accepted", 1)]);
        assert!(!progress_of(&byo, true).instrumented);
        let txn = trace_text(vec![EventKind::ClientCallStarted {
            call: "init_transactions".into(),
        }]);
        let p = progress_of(&txn, true);
        assert!(p.instrumented && p.in_client_call);
    }

    /// A worker whose latest event is a failed sink write may be backing off before a retry;
    /// any later event (the retry's hit, a poll) ends that.
    #[test]
    fn a_failed_write_as_the_latest_event_marks_a_worker_retrying() {
        let failed = EventKind::SinkFailed {
            msg: crate::trace::MessageRef {
                id: 0,
                partition: 0,
                offset: 0,
            },
            write: 1,
            failure: crate::schedule::SinkFailure::Transient,
        };
        let text = trace_text(vec![hit("before-sink-write", 1), failed.clone()]);
        assert!(progress_of(&text, false).retrying);
        let retried = trace_text(vec![failed, hit("before-sink-write", 2)]);
        assert!(!progress_of(&retried, false).retrying);
        assert!(!progress_of("", false).retrying);
    }

    /// Broker and network faults come due at their effect count or at their point hit, and
    /// stay due once released; the worker's own faults never do.
    #[test]
    fn cluster_faults_come_due_at_their_effect_or_their_point_hit() {
        use crate::schedule::{BrokerAction, BrokerTarget, LinkAction, LinkTarget};
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("trace.jsonl");
        std::fs::write(
            &trace,
            trace_text(vec![hit("order-accepted", 1), hit("before-commit", 1)]),
        )
        .unwrap();
        let at = |point: &str, hit: u32| Fault::NetworkAt {
            target: LinkTarget::All,
            action: LinkAction::Cut { millis: 100 },
            point: point.into(),
            hit,
        };
        let faults = [
            at("order-accepted", 1),
            at("order-accepted", 2),
            at("before-commit", 1),
            Fault::Broker {
                target: BrokerTarget::Coordinator,
                action: BrokerAction::Restart,
                after_effects: 3,
            },
            Fault::Crash {
                point: "order-accepted".into(),
                hit: 1,
            },
        ];
        let none = [false; 5];
        assert_eq!(
            cluster_faults_due(&faults, &none, 2, &trace),
            vec![true, false, true, false, false]
        );
        assert_eq!(
            cluster_faults_due(&faults, &none, 3, &trace),
            vec![true, false, true, true, false]
        );
        let released = [false, true, false, false, true];
        assert_eq!(
            cluster_faults_due(&faults, &released, 0, &trace),
            vec![true, true, true, false, false]
        );
    }

    fn event(kind: EventKind) -> Event {
        Event {
            at_us: 1,
            inc: 1,
            kind,
        }
    }

    /// Every worker-side fault kind is judged from the worker's events (a replay whose fault
    /// never fired must fail, so a kind that fell through here would pass vacuously).
    #[test]
    fn every_worker_side_fault_is_judged_fired_from_its_own_event() {
        let cases = [
            (
                Fault::Crash {
                    point: "p".into(),
                    hit: 2,
                },
                EventKind::Crashed {
                    point: "p".into(),
                    hit: 2,
                },
            ),
            (
                Fault::CrashAfter {
                    after: "a".into(),
                    point: "p".into(),
                    hit: 1,
                },
                EventKind::CrashedAfter {
                    after: "a".into(),
                    point: "p".into(),
                    hit: 1,
                },
            ),
            (
                Fault::SinkFailure {
                    write: 3,
                    failure: crate::schedule::SinkFailure::Transient,
                    writes: 2,
                    millis: None,
                },
                EventKind::SinkFailed {
                    msg: crate::trace::MessageRef {
                        id: 0,
                        partition: 0,
                        offset: 0,
                    },
                    write: 3,
                    failure: crate::schedule::SinkFailure::Transient,
                },
            ),
            (
                Fault::RebalanceAt {
                    point: "p".into(),
                    hit: 1,
                },
                EventKind::RebalanceRequested {
                    point: "p".into(),
                    hit: 1,
                },
            ),
            (
                Fault::RebalanceAfter {
                    after: "a".into(),
                    point: "p".into(),
                    hit: 1,
                },
                EventKind::RebalanceRequested {
                    point: "p".into(),
                    hit: 1,
                },
            ),
            (
                Fault::PauseAt {
                    point: "p".into(),
                    hit: 2,
                    millis: 300,
                },
                EventKind::Paused {
                    point: "p".into(),
                    hit: 2,
                    millis: 300,
                    after: None,
                    session_timeout_ms: None,
                },
            ),
            (
                Fault::PauseAfter {
                    after: "revoke".into(),
                    point: "*".into(),
                    hit: 1,
                    millis: 300,
                },
                EventKind::Paused {
                    point: "p".into(),
                    hit: 1,
                    millis: 300,
                    after: Some("revoke".into()),
                    session_timeout_ms: None,
                },
            ),
        ];
        for (fault, fired) in cases {
            assert_eq!(
                fired_in_worker(&fault, &[event(fired)]),
                Some(true),
                "{fault}"
            );
            assert_eq!(fired_in_worker(&fault, &[]), Some(false), "{fault}");
        }
        // A pause at a point is not the pause counted from an anchor, nor the reverse.
        let relative = EventKind::Paused {
            point: "p".into(),
            hit: 2,
            millis: 300,
            after: Some("revoke".into()),
            session_timeout_ms: None,
        };
        let absolute = Fault::PauseAt {
            point: "p".into(),
            hit: 2,
            millis: 300,
        };
        assert_eq!(fired_in_worker(&absolute, &[event(relative)]), Some(false));
        assert_eq!(
            fired_in_worker(&Fault::KillAfterEffects { effects: 1 }, &[]),
            None
        );
    }
}

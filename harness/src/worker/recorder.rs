//! The worker's half of the trace, and the crash points.
//!
//! Each event is one line written with a single `write(2)` on an `O_APPEND` file: a SIGKILL
//! lands between writes, so the file never holds half an event written before the kill, and
//! the kernel keeps what was written even though the process dies without flushing anything.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::schedule::{Fault, SinkFailure};
use crate::trace::{monotonic_us, Event, EventKind, Incarnation};

/// How long a worker waits at a `rebalance-at` point for the orchestrator's go.
const REBALANCE_WAIT: Duration = Duration::from_secs(20);
/// How long a worker waits at an effect for the orchestrator to put a broker or network fault
/// in place (finding the broker with a role is one metadata read; a frozen or killed broker
/// is one `docker` call).
const FAULT_WAIT: Duration = Duration::from_secs(20);

/// An outage as the schedule describes it.
#[derive(Debug, Clone, Copy)]
struct Outage {
    from_write: u32,
    writes: u32,
    millis: Option<u64>,
    failure: SinkFailure,
}

/// A relative fault: counts hits of `point` once `after` has been hit.
#[derive(Debug, Clone)]
struct Relative {
    after: String,
    point: String,
    hit: u32,
    /// What happens at that hit.
    action: RelativeAction,
}

/// What a relative fault does when its hit comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelativeAction {
    /// Die by SIGKILL.
    Crash,
    /// Wait there for a rebalance.
    Rebalance,
    /// Stop (SIGSTOP) for this many ms.
    Pause(u64),
}
use crate::{Error, Result};

pub(crate) struct Recorder {
    file: Mutex<File>,
    epoch_us: u64,
    inc: Incarnation,
    hits: Mutex<HashMap<String, u32>>,
    crashes: Vec<(String, u32)>,
    relative: Vec<Relative>,
    /// Per relative crash: hits of its point since its anchor was first hit (`None`: not yet).
    relative_hits: Mutex<Vec<Option<u32>>>,
    rebalances: Vec<(String, u32)>,
    /// `pause-at` faults: (point, hit, millis).
    pauses: Vec<(String, u32, u64)>,
    outages: Vec<Outage>,
    /// When each outage's first failed write happened.
    outage_started: Mutex<Vec<Option<Instant>>>,
    stop_path: PathBuf,
    go_path: PathBuf,
    /// The point that counts effects (`after-sink-write`, or `after-poll` for output to a
    /// topic) and the effect counts at which the orchestrator fires a broker or network fault:
    /// the worker waits there until the fault is in place, so the fault lands at that effect
    /// (after the write, before the commit; for `after-poll`, before the record is processed)
    /// and not wherever the worker has got to by the time the orchestrator notices.
    effect_point: String,
    effect_holds: Vec<u32>,
    /// Broker and network faults at a point hit: (index of the fault in this incarnation's
    /// list, point, hit). The worker waits there until the orchestrator has put it in place.
    point_holds: Vec<(usize, String, u32)>,
    /// The `session.timeout.ms` of the consumer the harness built for this worker (0: not
    /// known — a consumer the worker built itself from `consumer_config`).
    session_timeout_ms: AtomicU64,
    /// Sink writes so far in this incarnation, over every `SinkHandle` (a consumer may open
    /// one per thread or task): the schedule's "write #n" counts them all.
    sink_writes: AtomicU32,
}

impl Recorder {
    /// The 1-based index of the incarnation's next sink write.
    pub(crate) fn next_sink_write(&self) -> u32 {
        self.sink_writes.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn open(
        path: &Path,
        epoch_us: u64,
        inc: Incarnation,
        faults: &[Fault],
        stop_path: &Path,
    ) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("opening the worker trace", path, e))?;
        let crashes = faults
            .iter()
            .filter_map(|f| match f {
                Fault::Crash { point, hit } => Some((point.clone(), *hit)),
                _ => None,
            })
            .collect();
        let relative: Vec<Relative> = faults
            .iter()
            .filter_map(|f| {
                let (after, point, hit, action) = match f {
                    Fault::CrashAfter { after, point, hit } => {
                        (after, point, hit, RelativeAction::Crash)
                    }
                    Fault::RebalanceAfter { after, point, hit } => {
                        (after, point, hit, RelativeAction::Rebalance)
                    }
                    Fault::PauseAfter {
                        after,
                        point,
                        hit,
                        millis,
                    } => (after, point, hit, RelativeAction::Pause(*millis)),
                    _ => return None,
                };
                Some(Relative {
                    after: after.clone(),
                    point: point.clone(),
                    hit: *hit,
                    action,
                })
            })
            .collect();
        let pauses = faults
            .iter()
            .filter_map(|f| match f {
                Fault::PauseAt { point, hit, millis } => Some((point.clone(), *hit, *millis)),
                _ => None,
            })
            .collect();
        let rebalances = faults
            .iter()
            .filter_map(|f| match f {
                Fault::RebalanceAt { point, hit } => Some((point.clone(), *hit)),
                _ => None,
            })
            .collect();
        let outages: Vec<Outage> = faults
            .iter()
            .filter_map(|f| match f {
                Fault::SinkFailure {
                    write,
                    failure,
                    writes,
                    millis,
                } => Some(Outage {
                    from_write: *write,
                    writes: *writes,
                    millis: *millis,
                    failure: *failure,
                }),
                _ => None,
            })
            .collect();
        let effect_holds = faults.iter().filter_map(Fault::held_at_effect).collect();
        let point_holds = faults
            .iter()
            .enumerate()
            .filter_map(|(i, f)| f.held_at_point().map(|(p, h)| (i, p.to_string(), h)))
            .collect();
        Ok(Recorder {
            file: Mutex::new(file),
            epoch_us,
            inc,
            hits: Mutex::new(HashMap::new()),
            crashes,
            relative_hits: Mutex::new(vec![None; relative.len()]),
            relative,
            rebalances,
            pauses,
            outage_started: Mutex::new(vec![None; outages.len()]),
            outages,
            stop_path: stop_path.to_path_buf(),
            go_path: go_path_of(stop_path),
            effect_point: super::consumer::points::AFTER_SINK_WRITE.to_string(),
            effect_holds,
            point_holds,
            session_timeout_ms: AtomicU64::new(0),
            sink_writes: AtomicU32::new(0),
        })
    }

    /// Count effects at `point` instead of `after-sink-write` (a worker whose output is a
    /// topic: its effects are its polls, as the orchestrator counts them).
    pub(crate) fn count_effects_at(mut self, point: &str) -> Self {
        self.effect_point = point.to_string();
        self
    }

    /// Note the session timeout of the consumer the harness built (its pauses say it).
    pub(crate) fn note_session_timeout(&self, millis: u64) {
        self.session_timeout_ms.store(millis, Ordering::Relaxed);
    }

    fn session_timeout(&self) -> Option<u64> {
        Some(self.session_timeout_ms.load(Ordering::Relaxed)).filter(|m| *m > 0)
    }

    pub(crate) fn now_us(&self) -> u64 {
        monotonic_us().saturating_sub(self.epoch_us)
    }

    pub(crate) fn inc(&self) -> Incarnation {
        self.inc
    }

    /// Append one event. A failed write is reported on stderr, never a panic inside a callback.
    pub(crate) fn record(&self, kind: EventKind) {
        self.record_at(self.now_us(), kind)
    }

    pub(crate) fn record_at(&self, at_us: u64, kind: EventKind) {
        let event = Event {
            at_us,
            inc: self.inc,
            kind,
        };
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kafka-harness worker: cannot encode event: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write call per event: see the module docs.
        if let Err(e) = f.write_all(&line) {
            eprintln!("kafka-harness worker: cannot record event: {e}");
        }
    }

    /// Run a client call that blocks on the cluster, recorded as started and ended: the
    /// harness does not call a worker idle while it waits inside one.
    pub(crate) fn client_call<T, E: std::fmt::Display>(
        &self,
        call: &str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.record(EventKind::ClientCallStarted { call: call.into() });
        let started = std::time::Instant::now();
        let result = f();
        self.record(EventKind::ClientCallEnded {
            call: call.into(),
            ms: started.elapsed().as_millis() as u64,
            error: result.as_ref().err().map(|e| e.to_string()),
        });
        result
    }

    /// Count a hit of `point`; if the schedule says this hit crashes, die now by SIGKILL.
    pub(crate) fn crash_point(&self, point: &str) {
        let hit = {
            let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
            let h = hits.entry(point.to_string()).or_insert(0);
            *h += 1;
            *h
        };
        self.record(EventKind::CrashPointHit {
            point: point.to_string(),
            hit,
        });
        if self.crashes.iter().any(|(p, h)| p == point && *h == hit) {
            self.crash(point, hit);
        }
        self.relative_hit(point);
        if self.rebalances.iter().any(|(p, h)| p == point && *h == hit) {
            self.wait_for_rebalance(point, hit);
        }
        if point == self.effect_point && self.effect_holds.contains(&hit) {
            self.wait_for_fault(hit);
        }
        for (i, p, h) in &self.point_holds {
            if p == point && *h == hit {
                let go = fault_go_path_of(&self.stop_path, *i);
                self.wait_for_go(&go, FAULT_WAIT, &format!("fault at `{point}` hit #{hit}"));
            }
        }
        if let Some((_, _, millis)) = self.pauses.iter().find(|(p, h, _)| p == point && *h == hit) {
            self.record(EventKind::Paused {
                point: point.to_string(),
                hit,
                millis: *millis,
                after: None,
                session_timeout_ms: self.session_timeout(),
            });
            stop_self();
        }
    }

    fn crash(&self, point: &str, hit: u32) -> ! {
        self.record(EventKind::Crashed {
            point: point.to_string(),
            hit,
        });
        die()
    }

    /// Count `point` for relative faults: an anchor starts its count, a counted point may fire.
    /// The anchor's own hit is not counted (`the 1st hit of X after the revoke` comes later).
    pub(crate) fn relative_hit(&self, point: &str) {
        let mut fire = Vec::new();
        {
            let mut counts = self.relative_hits.lock().unwrap_or_else(|p| p.into_inner());
            for (r, count) in self.relative.iter().zip(counts.iter_mut()) {
                match count {
                    None if r.after == point => *count = Some(0),
                    Some(n) if r.point == point || r.point == crate::schedule::ANY_POINT => {
                        *n += 1;
                        if *n == r.hit {
                            fire.push(r.clone());
                        }
                    }
                    _ => {}
                }
            }
        }
        // The point actually hit is recorded (a `*` fault names no point).
        for r in &fire {
            match r.action {
                RelativeAction::Rebalance => self.wait_for_rebalance(point, r.hit),
                RelativeAction::Pause(millis) => {
                    self.record(EventKind::Paused {
                        point: point.to_string(),
                        hit: r.hit,
                        millis,
                        after: Some(r.after.clone()),
                        session_timeout_ms: self.session_timeout(),
                    });
                    stop_self();
                }
                RelativeAction::Crash => {}
            }
        }
        if let Some(r) = fire.into_iter().find(|r| r.action == RelativeAction::Crash) {
            self.record(EventKind::CrashedAfter {
                after: r.after,
                point: point.to_string(),
                hit: r.hit,
            });
            die();
        }
    }

    /// Block at a `rebalance-at` point until the orchestrator has a second member in the
    /// group and the group is rebalancing (it creates the go file), then go on: the next poll
    /// is revoked. Bounded: a worker never waits forever for an orchestrator that gave up.
    fn wait_for_rebalance(&self, point: &str, hit: u32) {
        self.record(EventKind::RebalanceRequested {
            point: point.to_string(),
            hit,
        });
        if self.wait_for_go(&self.go_path, REBALANCE_WAIT, "rebalance") {
            let _ = std::fs::remove_file(&self.go_path);
        }
    }

    /// Wait until the orchestrator creates `go` (true), or the worker is asked to stop (true),
    /// or `bound` passes (false: said on stderr, and the worker goes on).
    fn wait_for_go(&self, go: &Path, bound: Duration, what: &str) -> bool {
        let started = Instant::now();
        while !go.exists() && !self.stop_requested() {
            if started.elapsed() > bound {
                eprintln!("kafka-harness worker: no {what} within {bound:?}; going on");
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Wait at effect `effects` until the orchestrator has put the faults due there in place
    /// (it creates the effect's go file). Bounded like the rebalance wait.
    fn wait_for_fault(&self, effects: u32) {
        let go = effect_go_path_of(&self.stop_path, effects);
        self.wait_for_go(&go, FAULT_WAIT, &format!("fault at effect {effects}"));
    }

    /// Whether sink write `write` (1-based, this incarnation) fails, and how: it does while
    /// an outage the schedule describes lasts (k writes from its first, or t ms from it).
    pub(crate) fn sink_failure(&self, write: u32) -> Option<SinkFailure> {
        let mut started = self
            .outage_started
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (o, began) in self.outages.iter().zip(started.iter_mut()) {
            if write < o.from_write {
                continue;
            }
            let failing = match (o.millis, *began) {
                (_, None) => write == o.from_write,
                (Some(ms), Some(at)) => at.elapsed() < Duration::from_millis(ms),
                (None, Some(_)) => write < o.from_write.saturating_add(o.writes),
            };
            if failing {
                if began.is_none() {
                    *began = Some(Instant::now());
                }
                return Some(o.failure);
            }
        }
        None
    }

    /// Whether the orchestrator asked this worker to stop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_path.exists()
    }
}

/// The file the orchestrator creates to release a worker waiting at a `rebalance-at` point.
pub(crate) fn go_path_of(stop_path: &Path) -> PathBuf {
    beside(stop_path, ".go")
}

/// `stop_path` with `suffix` appended to its file name.
fn beside(stop_path: &Path, suffix: &str) -> PathBuf {
    let mut name = stop_path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    stop_path.with_file_name(name)
}

/// The file the orchestrator creates once the faults due at effect `effects` are in place,
/// releasing a worker that waits there.
pub(crate) fn effect_go_path_of(stop_path: &Path, effects: u32) -> PathBuf {
    beside(stop_path, &format!(".effect-{effects}.go"))
}

/// The file the orchestrator creates once the incarnation's fault number `index` (0-based, a
/// fault held at a point hit) is in place, releasing a worker that waits there.
pub(crate) fn fault_go_path_of(stop_path: &Path, index: usize) -> PathBuf {
    beside(stop_path, &format!(".fault-{index}.go"))
}

/// A real pause: SIGSTOP to ourselves, every thread (librdkafka's too: no heartbeats). The
/// orchestrator sends SIGCONT; if it dies meanwhile, the parent-death SIGKILL still lands.
fn stop_self() {
    // Directed at this thread, not the process: a process-directed SIGSTOP is taken by
    // whichever thread the kernel picks, and this one runs on (processes a record, sends a
    // commit) until that thread gets round to stopping the group. A thread-directed SIGSTOP
    // is taken on the way out of this call, and still stops every thread of the process.
    // SAFETY: pthread_kill(3) on the calling thread, which is alive.
    unsafe {
        libc::pthread_kill(libc::pthread_self(), libc::SIGSTOP);
    }
}

/// A real crash: SIGKILL to ourselves. No destructors, no `close()`, no final commit.
pub(crate) fn die() -> ! {
    // SAFETY: kill(2) on our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this only runs if the signal is somehow delayed.
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ANY_POINT;

    fn recorder(dir: &Path, faults: &[Fault]) -> Recorder {
        Recorder::open(&dir.join("trace.jsonl"), 0, 1, faults, &dir.join("stop")).unwrap()
    }

    fn events(dir: &Path) -> Vec<EventKind> {
        std::fs::read_to_string(dir.join("trace.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().kind)
            .collect()
    }

    /// Crash-point hits recorded so far.
    fn point_hits(dir: &Path) -> usize {
        events(dir)
            .into_iter()
            .filter(|k| matches!(k, EventKind::CrashPointHit { .. }))
            .count()
    }

    #[test]
    fn the_schedule_and_the_worker_agree_on_the_after_poll_point() {
        assert_eq!(
            crate::schedule::strategy_after_poll(),
            crate::worker::points::AFTER_POLL
        );
    }

    #[test]
    fn an_outage_of_k_writes_fails_exactly_those_writes_retries_included() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(
            dir.path(),
            &[Fault::SinkFailure {
                write: 3,
                failure: SinkFailure::Transient,
                writes: 2,
                millis: None,
            }],
        );
        let failing: Vec<u32> = (1..=6).filter(|w| r.sink_failure(*w).is_some()).collect();
        assert_eq!(failing, vec![3, 4]);
    }

    #[test]
    fn a_timed_outage_fails_every_write_until_it_is_over() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(
            dir.path(),
            &[Fault::SinkFailure {
                write: 2,
                failure: SinkFailure::Permanent,
                writes: 1,
                millis: Some(150),
            }],
        );
        assert_eq!(r.sink_failure(1), None);
        assert_eq!(r.sink_failure(2), Some(SinkFailure::Permanent));
        assert_eq!(r.sink_failure(3), Some(SinkFailure::Permanent));
        assert_eq!(r.sink_failure(4), Some(SinkFailure::Permanent));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(r.sink_failure(5), None);
    }

    /// A network fault after 2 effects: the worker waits at its 2nd `after-sink-write` (not
    /// its 1st, not at other points) until the orchestrator's go for that effect exists.
    #[test]
    fn a_worker_waits_at_the_effect_where_a_cluster_fault_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let r = std::sync::Arc::new(recorder(
            dir.path(),
            &[Fault::Network {
                target: crate::schedule::LinkTarget::All,
                action: crate::schedule::LinkAction::Cut { millis: 100 },
                after_effects: 2,
            }],
        ));
        r.crash_point("after-sink-write");
        r.crash_point("before-commit");
        let worker = {
            let r = r.clone();
            std::thread::spawn(move || {
                r.crash_point("after-sink-write");
                r.crash_point("before-commit");
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(point_hits(dir.path()), 3, "the worker went past the effect");
        assert!(!worker.is_finished());
        std::fs::write(effect_go_path_of(&dir.path().join("stop"), 2), b"go").unwrap();
        worker.join().unwrap();
        assert_eq!(point_hits(dir.path()), 4);
    }

    /// A broker fault at `before-commit` hit #2: the worker waits there (not at its 1st hit,
    /// not at other points) until the orchestrator's go for that fault exists.
    #[test]
    fn a_worker_waits_at_the_point_hit_where_a_cluster_fault_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let r = std::sync::Arc::new(recorder(
            dir.path(),
            &[
                Fault::SinkFailure {
                    write: 9,
                    failure: SinkFailure::Transient,
                    writes: 1,
                    millis: None,
                },
                Fault::BrokerAt {
                    target: crate::schedule::BrokerTarget::Coordinator,
                    action: crate::schedule::BrokerAction::Restart,
                    point: "before-commit".into(),
                    hit: 2,
                },
            ],
        ));
        r.crash_point("before-commit");
        r.crash_point("after-sink-write");
        let worker = {
            let r = r.clone();
            std::thread::spawn(move || {
                r.crash_point("before-commit");
                r.crash_point("after-commit");
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(point_hits(dir.path()), 3, "the worker went past the point");
        assert!(!worker.is_finished());
        // The go is per fault, by its index in the incarnation's list (here 1).
        std::fs::write(fault_go_path_of(&dir.path().join("stop"), 0), b"go").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!worker.is_finished());
        std::fs::write(fault_go_path_of(&dir.path().join("stop"), 1), b"go").unwrap();
        worker.join().unwrap();
        assert_eq!(point_hits(dir.path()), 4);
    }

    /// "The 2nd hit of any point after the revoke": the anchor's own hit does not count, hits
    /// before the anchor do not count, and the worker waits there for the rebalance.
    #[test]
    fn a_relative_rebalance_counts_hits_from_its_anchor_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = recorder(
            dir.path(),
            &[Fault::RebalanceAfter {
                after: "revoke".into(),
                point: ANY_POINT.into(),
                hit: 2,
            }],
        );
        // The orchestrator's go is already there: the wait returns at once.
        std::fs::write(go_path_of(&dir.path().join("stop")), b"go").unwrap();
        for p in [
            "after-poll",
            "after-poll",
            "revoke",
            "before-commit",
            "after-commit",
        ] {
            r.crash_point(p);
        }
        let requested: Vec<(String, u32)> = events(dir.path())
            .into_iter()
            .filter_map(|k| match k {
                EventKind::RebalanceRequested { point, hit } => Some((point, hit)),
                _ => None,
            })
            .collect();
        assert_eq!(requested, vec![("after-commit".to_string(), 2)]);
        // It was requested right after the 2nd hit after the anchor (`after-commit`).
        let kinds = events(dir.path());
        let at = kinds
            .iter()
            .position(|k| matches!(k, EventKind::RebalanceRequested { .. }))
            .unwrap();
        assert!(
            matches!(&kinds[at - 1], EventKind::CrashPointHit { point, .. } if point == "after-commit")
        );
        assert!(
            !go_path_of(&dir.path().join("stop")).exists(),
            "the go file is consumed"
        );
    }
}

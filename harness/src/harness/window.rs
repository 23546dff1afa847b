//! Cases side by side as a sliding window: a new case starts as soon as one ends, instead of
//! batches that wait for their slowest case. A case with a broker or network fault runs with
//! nothing beside it (it would fault the other cases' cluster), and only it waits for the
//! window to empty. Results come back as cases end; callers that judge in generation order
//! keep them by index.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::Scope;

use super::search::alone;
use super::{CaseResult, Harness};
use crate::run::CaseRunner;
use crate::schedule::Schedule;
use crate::{Error, Result};

/// What one case returns: its result and the directory that holds its files.
pub(super) type CaseOutcome = Result<(CaseResult, tempfile::TempDir)>;

/// How a window runs one case: the schedule and its case number in, its outcome out.
pub(super) type RunCase<'env, T> = &'env (dyn Fn(&Schedule, u64) -> T + Sync);

/// Up to `width` cases running at once on one thread scope.
pub(super) struct Window<'scope, 'env, T> {
    scope: &'scope Scope<'scope, 'env>,
    run: RunCase<'env, T>,
    /// The outcome of a case whose thread panicked.
    panicked: fn() -> T,
    width: usize,
    tx: Sender<(usize, T)>,
    rx: Receiver<(usize, T)>,
    in_flight: usize,
    /// A case that must run alone is in flight.
    alone_running: bool,
}

impl<'scope, 'env, T: Send + 'env> Window<'scope, 'env, T> {
    pub(super) fn new(
        scope: &'scope Scope<'scope, 'env>,
        run: RunCase<'env, T>,
        panicked: fn() -> T,
        width: usize,
    ) -> Self {
        let (tx, rx) = channel();
        Window {
            scope,
            run,
            panicked,
            width: width.max(1),
            tx,
            rx,
            in_flight: 0,
            alone_running: false,
        }
    }

    /// Whether `schedule` can start now.
    pub(super) fn has_room_for(&self, schedule: &Schedule) -> bool {
        !self.alone_running
            && self.in_flight < self.width
            && (self.in_flight == 0 || !alone(schedule))
    }

    /// Start case `index` (the caller's numbering) as case number `case_no`.
    pub(super) fn start(&mut self, index: usize, schedule: Schedule, case_no: u64) {
        self.alone_running = alone(&schedule);
        self.in_flight += 1;
        let (run, panicked, tx) = (self.run, self.panicked, self.tx.clone());
        self.scope.spawn(move || {
            // A panic must still report, or the window would wait for this case forever.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&schedule, case_no)))
                    .unwrap_or_else(|_| panicked());
            // The receiver lives as long as the window; it is gone only when the caller
            // returned early (an error), and then nobody wants the result.
            let _ = tx.send((index, outcome));
        });
    }

    /// The next case to end, or `None` when none is running.
    pub(super) fn next(&mut self) -> Option<(usize, T)> {
        if self.in_flight == 0 {
            return None;
        }
        // `self.tx` keeps the channel open and every started case sends (see `start`).
        let got = self.rx.recv().ok()?;
        self.in_flight -= 1;
        // A case that runs alone was the only one in flight.
        self.alone_running = false;
        Some(got)
    }
}

/// Every job through a window of `width`; outcomes in the order given.
pub(super) fn run_all<T: Send>(
    jobs: Vec<(Schedule, u64)>,
    width: usize,
    run: &(dyn Fn(&Schedule, u64) -> T + Sync),
    panicked: fn() -> T,
) -> Vec<T> {
    let mut out: Vec<Option<T>> = (0..jobs.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let mut window = Window::new(scope, run, panicked, width);
        let mut jobs = jobs.into_iter().enumerate().peekable();
        loop {
            while jobs
                .peek()
                .is_some_and(|(_, (s, _))| window.has_room_for(s))
            {
                if let Some((index, (schedule, case_no))) = jobs.next() {
                    window.start(index, schedule, case_no);
                }
            }
            match window.next() {
                Some((index, outcome)) => out[index] = Some(outcome),
                None => break,
            }
        }
    });
    // Every job started, and `next` returned each one's outcome before the window emptied.
    out.into_iter()
        .map(|o| o.unwrap_or_else(panicked))
        .collect()
}

/// A case thread's panic as the case's outcome.
pub(super) fn panicked_case() -> CaseOutcome {
    Err(Error::Worker("a case thread panicked".into()))
}

impl Harness {
    /// Run cases, `parallelism()` at a time on the shared cluster (each has its own topic,
    /// group and transactional id) in a sliding window; results in the order given. A
    /// schedule with a broker or network fault runs alone: killing a broker under other cases
    /// would inject faults they did not schedule.
    pub(super) fn run_batch(
        &self,
        runner: &CaseRunner,
        jobs: Vec<(Schedule, u64)>,
    ) -> Vec<CaseOutcome> {
        let run = |s: &Schedule, case_no: u64| self.run_once(runner, s, case_no);
        let width = self.parallelism(runner.cluster.backend()) as usize;
        run_all(jobs, width, &run, panicked_case)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::{BrokerAction, BrokerTarget, Fault, Workload};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    fn plain(messages: u32) -> Schedule {
        Schedule::new(Workload {
            messages,
            partitions: 1,
            keys: 1,
        })
    }

    fn with_broker_fault(messages: u32) -> Schedule {
        plain(messages).fault(Fault::Broker {
            target: BrokerTarget::Coordinator,
            action: BrokerAction::Restart,
            after_effects: 1,
        })
    }

    /// At most `width` cases at once, a broker-fault case with nothing beside it, every
    /// outcome in the order given, and a slow case does not hold the others back.
    #[test]
    fn cases_slide_through_the_window_and_a_cluster_fault_runs_alone() {
        // Message counts double as case ids and durations (ms).
        let mut jobs: Vec<(Schedule, u64)> = Vec::new();
        for (i, ms) in [300u32, 20, 20, 20, 20, 20, 20, 20].into_iter().enumerate() {
            jobs.push((plain(ms), i as u64));
        }
        jobs.push((with_broker_fault(30), 8));
        for i in 9..14u64 {
            jobs.push((plain(20), i));
        }
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let log: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let run = |s: &Schedule, case_no: u64| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            if alone(s) {
                assert_eq!(now, 1, "a broker-fault case had company");
            }
            log.lock().unwrap().push(format!("start {case_no}"));
            std::thread::sleep(Duration::from_millis(s.workload.messages.into()));
            log.lock().unwrap().push(format!("end {case_no}"));
            running.fetch_sub(1, Ordering::SeqCst);
            case_no
        };
        let out = run_all(jobs, 3, &run, || u64::MAX);
        assert_eq!(out, (0..14).collect::<Vec<u64>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
        let log = log.into_inner().unwrap();
        let at = |e: &str| log.iter().position(|l| l == e).unwrap();
        // Cases 1..7 went through the two other slots while case 0 (300 ms) ran.
        assert!(at("end 7") < at("end 0"), "{log:?}");
        // The broker-fault case waited for every case before it, and every later one for it.
        for i in 0..8 {
            assert!(at(&format!("end {i}")) < at("start 8"), "{log:?}");
        }
        for i in 9..14 {
            assert!(at("end 8") < at(&format!("start {i}")), "{log:?}");
        }
    }

    #[test]
    fn a_panicking_case_is_an_outcome_not_a_hang() {
        let jobs = vec![(plain(1), 0), (plain(2), 1), (plain(3), 2)];
        let run = |s: &Schedule, _| {
            if s.workload.messages == 2 {
                panic!("boom");
            }
            s.workload.messages
        };
        assert_eq!(run_all(jobs, 2, &run, || 0), vec![1, 0, 3]);
    }
}

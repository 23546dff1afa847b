//! Shrinking a failing schedule: proptest's own steps, several at a time side by side
//! (`speculate`), then the faults that never fired dropped, then one-fault deletions and
//! deterministic outages side by side (`minimize`). Every candidate must fail the same way
//! ("fails in ≥1 of k tries").

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::test_runner::Config as ProptestConfig;

use super::search::{alone, faults_word, Found};
use super::speculate::{self, TreeSource};
use super::{env_u32, CaseResult, Harness, Outcome};
use crate::check::ViolationKind;
use crate::run::CaseRunner;
use crate::schedule::Schedule;
use crate::trace::{EventKind, Trace};
use crate::{Error, Result};

impl Harness {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn shrink(
        &self,
        runner: &CaseRunner,
        mut schedule: Schedule,
        source: TreeSource<Schedule>,
        mut result: CaseResult,
        mut dir: tempfile::TempDir,
        kind: Option<ViolationKind>,
        seed: String,
        cases: u32,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Outcome> {
        let config = ProptestConfig::default();
        let max_iters = env_u32("PROPTEST_MAX_SHRINK_ITERS").unwrap_or(48);
        let max_time = match config.max_shrink_time {
            0 => {
                Duration::from_secs(env_u32("KAFKA_HARNESS_MAX_SHRINK_SECS").unwrap_or(600) as u64)
            }
            ms => Duration::from_millis(ms as u64),
        };
        let tries = env_u32("KAFKA_HARNESS_SHRINK_TRIES")
            .unwrap_or(self.tries)
            .max(1);
        let started = Instant::now();
        // Drawn again exactly (the strategy is deterministic in its generator; a unit test
        // holds it to that): else proptest's steps are skipped, the one-fault deletions below
        // still run.
        let redrawn = source.after(&[]).as_ref() == Some(&schedule);
        if !redrawn {
            self.progress_line(
                "shrink: the failing case could not be drawn again; one-fault deletions only",
            );
        }
        let original = schedule.clone();
        let mut steps = 0;
        let mut iters = 0;
        // Candidates already answered: proptest's value trees offer the same schedule again
        // when they shrink a part it does not show (which alternative of a union was drawn,
        // a value already at its bound), and a case with a cluster fault costs seconds. The
        // failing schedule in hand is kept again, a schedule that held is dropped again,
        // without running either (a step still counts toward the budget).
        let mut held: HashSet<Schedule> = HashSet::new();
        // proptest's shrink loop — simplify while the candidate still fails, complicate when
        // it passes — a few steps at a time (see `speculate`).
        let mut history = Vec::new();
        let mut last_failed = true;
        // Candidates run but not yet reached by the walk (a later round may reach them).
        let mut answers: HashMap<Schedule, Answer> = HashMap::new();
        let mut answered_before = 0u32;
        while redrawn && iters < max_iters && started.elapsed() < max_time {
            let room = max_iters - iters;
            let fit = |by_itself| {
                speculate::depth(self.parallelism(runner.cluster.backend()), tries, by_itself)
                    .min(room)
            };
            let mut nodes = speculate::plan(&source, &history, last_failed, fit(alone(&schedule)));
            if nodes.len() > 1
                && nodes
                    .iter()
                    .any(|n| n.candidate.as_ref().is_some_and(alone))
            {
                // A candidate with a cluster fault runs alone: the batch would run one by one.
                nodes = speculate::plan(&source, &history, last_failed, 1);
            }
            let mut unknown: Vec<Schedule> = Vec::new();
            for c in nodes.iter().filter_map(|n| n.candidate.as_ref()) {
                if *c != schedule
                    && !held.contains(c)
                    && !answers.contains_key(c)
                    && !unknown.contains(c)
                {
                    unknown.push(c.clone());
                }
            }
            let jobs: Vec<(Schedule, u64)> = unknown
                .iter()
                .flat_map(|c| (0..tries).map(move |_| c.clone()))
                .map(|c| (c, next_case()))
                .collect();
            let labels: Vec<Schedule> = jobs.iter().map(|(c, _)| c.clone()).collect();
            for (candidate, outcome) in labels.into_iter().zip(self.run_batch(runner, jobs)) {
                // A candidate's tries in order, as one run after another would see them: the
                // first failing try answers; an error before it is the answer instead.
                let slot = answers.entry(candidate).or_insert(Answer::Held);
                if let Answer::Held = slot {
                    *slot = match outcome {
                        Err(e) => Answer::Error(e),
                        Ok((r, d))
                            if !r.verdict.holds()
                                && kind.is_none_or(|k| r.verdict.kinds().contains(&k)) =>
                        {
                            Answer::Failed(Box::new(r), d)
                        }
                        Ok(_) => Answer::Held,
                    };
                }
            }
            // An error is raised only if the walk reaches its candidate.
            let mut error = None;
            let walk = speculate::walk(&nodes, last_failed, room, |candidate| {
                let (fails, known) = if *candidate == schedule {
                    (true, true)
                } else if held.contains(candidate) {
                    (false, true)
                } else {
                    match answers.remove(candidate) {
                        Some(Answer::Failed(r, d)) => {
                            result = *r;
                            dir = d;
                            (true, false)
                        }
                        Some(Answer::Held) => (false, false),
                        Some(Answer::Error(e)) => {
                            error = Some(e);
                            return None;
                        }
                        None => return None,
                    }
                };
                if known {
                    // proptest offers a schedule again and again once its trees are at their
                    // bounds: counted, not logged line by line.
                    answered_before += 1;
                } else {
                    self.progress_line(&format!(
                        "shrink step {} · {} · {}",
                        iters + 1,
                        faults_word(candidate),
                        if fails {
                            "still fails: kept"
                        } else {
                            "holds: dropped"
                        },
                    ));
                }
                iters += 1;
                if fails {
                    if !known {
                        schedule = candidate.clone();
                        steps += 1;
                    }
                } else {
                    held.insert(candidate.clone());
                }
                Some(fails)
            });
            if let Some(e) = error {
                return Err(e);
            }
            history.extend(walk.moves);
            last_failed = walk.last_failed;
            if walk.ended {
                break;
            }
        }
        if answered_before > 0 {
            self.progress_line(&format!(
                "shrink: {answered_before} more step(s) offered schedules answered before (not run again)"
            ));
        }
        // A fault that never fired in the failing run cannot be its cause: drop them all and
        // keep the smaller schedule if it still fails the same way.
        let unfired = skipped_faults(&result.trace);
        if !unfired.is_empty() {
            let mut candidate = schedule.clone();
            for f in &unfired {
                if let Some(i) = candidate.faults.iter().position(|g| g == f) {
                    candidate.faults.remove(i);
                }
            }
            if candidate.faults.len() < schedule.faults.len() {
                if let Some((r, d)) = self.fails_with(runner, &candidate, kind, tries, next_case)? {
                    schedule = candidate;
                    result = r;
                    dir = d;
                    steps += 1;
                }
            }
        }
        // proptest's shrink budget can run out with a fault still removable, or with an outage
        // still timed: finish with one-fault deletions and deterministic outages.
        if let Some(smaller) =
            self.minimize(runner, &schedule, kind, started + max_time, next_case)?
        {
            steps += smaller.steps;
            schedule = smaller.found.schedule;
            result = smaller.found.result;
            dir = smaller.found.dir;
        }
        let found = Found {
            schedule,
            result,
            dir,
            original: Some(original),
        };
        self.fail(runner, found, kind, seed, steps, cases, next_case)
    }

    /// One-fault deletions and deterministic outages ([`simpler_schedules`]) of `schedule`,
    /// all tried side by side, round after round until no single step keeps the failure (or
    /// `deadline`): the smallest failing schedule, if smaller than `schedule`.
    pub(super) fn minimize(
        &self,
        runner: &CaseRunner,
        schedule: &Schedule,
        kind: Option<ViolationKind>,
        deadline: Instant,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Option<Minimized>> {
        let mut best: Option<Minimized> = None;
        let mut steps = 0;
        let mut rounds = 0;
        while rounds < MINIMIZE_ROUNDS && Instant::now() < deadline {
            rounds += 1;
            let from = best.as_ref().map_or(schedule, |b| &b.found.schedule);
            let candidates = simpler_schedules(from);
            if candidates.is_empty() {
                break;
            }
            let jobs = candidates
                .iter()
                .map(|c| (c.clone(), next_case()))
                .collect();
            let mut accepted = false;
            for (candidate, outcome) in candidates.into_iter().zip(self.run_batch(runner, jobs)) {
                let (r, d) = outcome?;
                if !accepted
                    && !r.verdict.holds()
                    && kind.is_none_or(|k| r.verdict.kinds().contains(&k))
                {
                    steps += 1;
                    best = Some(Minimized {
                        found: Found {
                            schedule: candidate,
                            result: r,
                            dir: d,
                            original: None,
                        },
                        steps,
                    });
                    accepted = true;
                }
            }
            if !accepted {
                break;
            }
        }
        Ok(best)
    }
}

/// What the runs of a shrink candidate said.
enum Answer {
    /// Every try held (or failed another way).
    Held,
    /// A try failed the same way: its result and case directory.
    Failed(Box<CaseResult>, tempfile::TempDir),
    /// A try could not run, before any failed.
    Error(Error),
}

/// A schedule [`Harness::minimize`] made smaller, and how many steps it kept.
pub(super) struct Minimized {
    pub(super) found: Found,
    pub(super) steps: u32,
}

/// Rounds of [`simpler_schedules`] after proptest's shrinking.
const MINIMIZE_ROUNDS: u32 = 6;

/// One step simpler than `schedule`, most valuable first: each fault removed (when more than
/// one), then each timed sink outage made a count of plain transient failures (which replays
/// without depending on timing).
fn simpler_schedules(schedule: &Schedule) -> Vec<Schedule> {
    let mut out = Vec::new();
    if schedule.faults.len() > 1 {
        for i in 0..schedule.faults.len() {
            let mut c = schedule.clone();
            c.faults.remove(i);
            out.push(c);
        }
    }
    for (i, f) in schedule.faults.iter().enumerate() {
        if let crate::Fault::SinkFailure {
            write,
            failure,
            writes,
            millis,
        } = f
        {
            let timed = millis.is_some();
            if !timed && matches!(failure, crate::schedule::SinkFailure::Transient) {
                continue;
            }
            // A timed outage covered the write and maybe its retries: try one more write too.
            let lengths = if timed {
                vec![*writes, writes + 1]
            } else {
                vec![*writes]
            };
            for n in lengths {
                let mut c = schedule.clone();
                c.faults[i] = crate::Fault::SinkFailure {
                    write: *write,
                    failure: crate::schedule::SinkFailure::Transient,
                    writes: n,
                    millis: None,
                };
                out.push(c);
            }
        }
    }
    out
}

/// The same schedule with its sink outages made to last longer (every count-based outage
/// ×4 writes, every timed one ×4 ms), together: how many writes a consumer makes before the
/// next fault depends on timing (retries, polls that return nothing), and an outage that
/// outlasts them pins the failure down. Empty when the schedule has no outage.
pub(super) fn sturdier(schedule: &Schedule) -> Vec<Schedule> {
    let mut longer = schedule.clone();
    let mut changed = false;
    for f in &mut longer.faults {
        if let crate::Fault::SinkFailure { writes, millis, .. } = f {
            match millis {
                Some(ms) => *ms = ms.saturating_mul(4),
                None => *writes = writes.saturating_mul(4).max(4),
            }
            changed = true;
        }
    }
    if changed {
        vec![longer]
    } else {
        Vec::new()
    }
}

/// The faults a run recorded as never fired.
fn skipped_faults(trace: &Trace) -> Vec<crate::Fault> {
    trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FaultSkipped { fault } => Some(fault.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::SinkFailure;
    use crate::{Fault, Workload};

    #[test]
    fn simpler_schedules_remove_one_fault_each_then_make_timed_outages_counted() {
        let outage = Fault::SinkFailure {
            write: 3,
            failure: SinkFailure::Hang { millis: 900 },
            writes: 1,
            millis: Some(40),
        };
        let crash = Fault::Crash {
            point: "after-commit".into(),
            hit: 1,
        };
        let s = Schedule {
            faults: vec![outage.clone(), crash.clone()],
            ..Schedule::new(Workload::default())
        };
        let c = simpler_schedules(&s);
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[0].faults, vec![crash.clone()]);
        assert_eq!(c[1].faults, vec![outage]);
        for (n, candidate) in c[2..].iter().enumerate() {
            assert_eq!(
                candidate.faults[0],
                Fault::SinkFailure {
                    write: 3,
                    failure: SinkFailure::Transient,
                    writes: 1 + n as u32,
                    millis: None
                }
            );
            assert_eq!(candidate.faults[1], crash);
        }
        // A single counted transient outage is as simple as it gets.
        let done = Schedule {
            faults: vec![Fault::SinkFailure {
                write: 1,
                failure: SinkFailure::Transient,
                writes: 2,
                millis: None,
            }],
            ..Schedule::new(Workload::default())
        };
        assert!(simpler_schedules(&done).is_empty());
    }

    #[test]
    fn sturdier_schedules_lengthen_every_outage_and_keep_the_other_faults() {
        let counted = Fault::SinkFailure {
            write: 2,
            failure: SinkFailure::Permanent,
            writes: 3,
            millis: None,
        };
        let timed = Fault::SinkFailure {
            write: 5,
            failure: SinkFailure::Transient,
            writes: 1,
            millis: Some(50),
        };
        let crash = Fault::Crash {
            point: "after-commit".into(),
            hit: 2,
        };
        let s = Schedule {
            faults: vec![counted, crash.clone(), timed],
            ..Schedule::new(Workload::default())
        };
        let out = sturdier(&s);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].faults,
            vec![
                Fault::SinkFailure {
                    write: 2,
                    failure: SinkFailure::Permanent,
                    writes: 12,
                    millis: None,
                },
                crash.clone(),
                Fault::SinkFailure {
                    write: 5,
                    failure: SinkFailure::Transient,
                    writes: 1,
                    millis: Some(200),
                },
            ]
        );
        assert_eq!(out[0].workload, s.workload);
        let no_outage = Schedule {
            faults: vec![crash],
            ..Schedule::new(Workload::default())
        };
        assert!(sturdier(&no_outage).is_empty());
    }
}

//! Confirming a minimal schedule: re-runs side by side; when it reproduces in fewer than half
//! of them (timing-dependent), sturdier forms and the schedule it was shrunk from; then save
//! and build the report. A "committed too far" is first shown as the loss it waits for.

use std::time::{Duration, Instant};

use super::search::{faults_word, is_latent, Found};
use super::shrink::sturdier;
use super::{CaseResult, Harness, Outcome};
use crate::check::ViolationKind;
use crate::report::Report;
use crate::run::CaseRunner;
use crate::schedule::Schedule;
use crate::trace::EventKind;
use crate::Result;

impl Harness {
    /// Confirm the failure by re-running it, save it and build the report. A minimal
    /// schedule that reproduces in fewer than half of the re-runs is timing-dependent: the
    /// schedule it was shrunk from is confirmed too, and the one that reproduces more often
    /// is reported (with the rate, and plain words when it stays low).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fail(
        &self,
        runner: &CaseRunner,
        found: Found,
        kind: Option<ViolationKind>,
        seed: String,
        mut shrink_steps: u32,
        cases: u32,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Outcome> {
        let Found {
            mut schedule,
            mut result,
            mut dir,
            original,
        } = found;
        let mut kind = kind;
        // A loss waiting to happen is shown happening: crash right after the commit that went
        // too far, where the trace says the committer went next.
        if is_latent(kind) {
            for candidate in realizations(&schedule, &result) {
                if let Some((r, d)) = self.fails_with(runner, &candidate, None, 1, next_case)? {
                    let realized = r.verdict.primary_kind();
                    if !is_latent(realized) {
                        eprintln!(
                            "kafka-harness: the commit too far becomes a {realized:?} with a crash after it: {}",
                            candidate.faults.last().map(|f| f.to_string()).unwrap_or_default()
                        );
                        schedule = candidate;
                        result = r;
                        dir = d;
                        kind = realized;
                        break;
                    }
                }
            }
        }
        let confirming = Instant::now();
        let mut reproduced = self.reproductions(runner, &schedule, kind, next_case)?;
        self.progress_line(&format!(
            "confirm · {} · reproduced {reproduced}/{} re-runs · {:.1} s",
            faults_word(&schedule),
            self.confirm_runs,
            confirming.elapsed().as_secs_f64()
        ));
        if reproduced * 2 < self.confirm_runs {
            // Timing-dependent: try sturdier forms of the minimal schedule (outages that last
            // longer than the retries a fast or slow run makes), then the schedule it was
            // shrunk from; report the first that reproduces in at least half the re-runs, or
            // else the one that reproduced most.
            let minimal_rate = reproduced;
            let mut candidates: Vec<(Schedule, &str)> = sturdier(&schedule)
                .into_iter()
                .map(|s| (s, "a longer outage"))
                .collect();
            if let Some(original) = original.filter(|o| *o != schedule) {
                candidates.push((original, "the schedule it was shrunk from"));
            }
            for (candidate, what) in candidates {
                let Some((r, d)) = self.fails_with(runner, &candidate, kind, 1, next_case)? else {
                    continue;
                };
                let rate = 1 + self.reproductions(runner, &candidate, kind, next_case)?;
                let rate = rate.min(self.confirm_runs);
                if rate > reproduced {
                    eprintln!(
                        "kafka-harness: the minimal schedule reproduced {minimal_rate}/{n}; reporting {what}, which reproduced {rate}/{n}",
                        n = self.confirm_runs
                    );
                    schedule = candidate;
                    result = r;
                    dir = d;
                    reproduced = rate;
                }
                if reproduced * 2 >= self.confirm_runs {
                    break;
                }
            }
            if reproduced * 2 >= self.confirm_runs && schedule.faults.len() > 1 {
                // Shrinking judged timing-dependent runs once each: a fault whose deletion
                // "held" once may not be needed. Shrink again from the schedule that
                // reproduces, and keep the smaller one only if it reproduces as well.
                let deadline = Instant::now() + REMINIMIZE_TIME;
                if let Some(smaller) =
                    self.minimize(runner, &schedule, kind, deadline, next_case)?
                {
                    let rate =
                        self.reproductions(runner, &smaller.found.schedule, kind, next_case)?;
                    if rate * 2 >= self.confirm_runs {
                        eprintln!(
                            "kafka-harness: shrunk again from it to {}, which reproduced {rate}/{n}",
                            faults_word(&smaller.found.schedule),
                            n = self.confirm_runs
                        );
                        shrink_steps += smaller.steps;
                        reproduced = rate;
                        schedule = smaller.found.schedule;
                        result = smaller.found.result;
                        dir = smaller.found.dir;
                    }
                }
            }
        }
        let saved = self.save(&runner.name, &schedule)?;
        let case_dir = Some(dir.keep());
        Ok(Outcome::Failed(Box::new(Report {
            name: runner.name.clone(),
            schedule,
            seed,
            verdict: result.verdict,
            trace: result.trace,
            reproduced,
            confirm_runs: self.confirm_runs,
            shrink_steps,
            cases_before_failure: cases,
            saved: Some(saved),
            case_dir,
            coverage: None,
            html: None,
            replay_command: None,
        })))
    }

    /// Of `confirm_runs` re-runs of `schedule` (side by side), how many fail with `kind`.
    fn reproductions(
        &self,
        runner: &CaseRunner,
        schedule: &Schedule,
        kind: Option<ViolationKind>,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<u32> {
        let jobs = (0..self.confirm_runs)
            .map(|_| (schedule.clone(), next_case()))
            .collect();
        let mut reproduced = 0;
        for outcome in self.run_batch(runner, jobs) {
            let (result, _dir) = outcome?;
            if !result.verdict.holds() && kind.is_none_or(|k| result.verdict.kinds().contains(&k)) {
                reproduced += 1;
            }
        }
        Ok(reproduced)
    }
}

/// How long shrinking again from a sturdier schedule may take.
const REMINIMIZE_TIME: Duration = Duration::from_secs(300);

/// Schedules that turn a "committed too far" into the loss it waits for: the failing schedule
/// with a crash at one of the next crash points (at most 3) the committing incarnation hit
/// after the commit. The crash joins the fault group that incarnation ran, replacing that
/// group's own terminal fault if that one never fired (it ended the incarnation later, or not
/// at all), so it lands in the same incarnation at the same hit.
fn realizations(schedule: &Schedule, failed: &CaseResult) -> Vec<Schedule> {
    use crate::check::Violation;
    let Some((inc, at_us)) = failed.verdict.violations.iter().find_map(|v| match v {
        Violation::CommittedTooFar { commit, .. } => Some((commit.inc, commit.at_us)),
        _ => None,
    }) else {
        return Vec::new();
    };
    let trace = &failed.trace;
    // The committer: a worker-reported commit names it; a broker-seen one is the primary
    // running at the time.
    let committer = if inc != 0 {
        inc
    } else {
        trace
            .events
            .iter()
            .rev()
            .filter(|e| e.at_us <= at_us)
            .find_map(|e| match &e.kind {
                EventKind::Started { primary: true, .. } => Some(e.inc),
                _ => None,
            })
            .unwrap_or(0)
    };
    // Which group it ran: primaries start with the schedule's groups in order.
    let mut groups = schedule.incarnations();
    let primaries: Vec<u32> = trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Started { primary: true, .. } => Some(e.inc),
            _ => None,
        })
        .collect();
    let Some(index) = primaries.iter().position(|i| *i == committer) else {
        return Vec::new();
    };
    let fired_before_commit = trace.events.iter().any(|e| {
        e.inc == committer
            && e.at_us <= at_us
            && matches!(
                e.kind,
                EventKind::Crashed { .. }
                    | EventKind::CrashedAfter { .. }
                    | EventKind::Killed { .. }
            )
    });
    if fired_before_commit {
        return Vec::new();
    }
    if index >= groups.len() {
        // A drain worker (after every group): a new group of its own.
        if index > groups.len() {
            return Vec::new();
        }
        groups.push(Vec::new());
    }
    let mut out: Vec<Schedule> = Vec::new();
    for e in trace
        .events
        .iter()
        .filter(|e| e.inc == committer && e.at_us > at_us)
    {
        let EventKind::CrashPointHit { point, hit } = &e.kind else {
            continue;
        };
        let mut with_crash = groups.clone();
        let group = &mut with_crash[index];
        group.retain(|f| !f.is_terminal());
        group.push(crate::Fault::Crash {
            point: point.clone(),
            hit: *hit,
        });
        let mut candidate = schedule.clone();
        candidate.faults = with_crash.into_iter().flatten().collect();
        if !out.contains(&candidate) {
            out.push(candidate);
        }
        if out.len() == 3 {
            break;
        }
    }
    out
}

//! Search: generate schedules, run them, and on failure shrink, confirm and save.
//!
//! ```text
//!  discovery run (no faults) ─► crash points + hit counts ─► ScheduleSpace ─► proptest cases
//!        │ a failure here is reported as is                       │ first failure
//!        ▼                                                        ▼
//!     Summary  ◄── every case held            shrink ("fails in ≥1 of k tries") ─► confirm ─► save ─► Report
//! ```
//!
//! Shrinking takes proptest's own steps, several at a time side by side (`speculate`), then
//! one-fault deletions side by side (`minimize`). A failure whose minimal schedule reproduces
//! in fewer than half its confirmation re-runs is kept while generation goes on: a later case
//! that fails in a way that reproduces is reported instead, the kept one only if none does.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use super::speculate::{self, TreeSource};
use super::{env_u32, CaseResult, Harness, Outcome, Summary};
use crate::check::ViolationKind;
use crate::report::Report;
use crate::run::CaseRunner;
use crate::schedule::{Schedule, ScheduleSpace};
use crate::trace::{EventKind, Trace};
use crate::worker::{WorkerCtx, WorkerError};
use crate::{Error, Guarantee, Result};

/// Cases a check generates unless told otherwise (`.cases(n)`, `PROPTEST_CASES`).
pub(super) const DEFAULT_CASES: u32 = 64;

impl Harness {
    /// Generate schedules, run them, and on failure shrink, confirm and save. Passing returns
    /// [`Outcome::Passed`]; a broken guarantee returns [`Outcome::Failed`]; `Err` is a harness
    /// or environment problem (no cluster, malformed trace), never a verdict.
    ///
    /// Every check leaves its files in the report directory (see [`crate::report::artifacts`]):
    /// a run record, a JUnit file, and for a failure (or any run with
    /// [`Harness::html_for_passing`]) an HTML page. With `KAFKA_HARNESS_REPLAY=<schedule
    /// file>` set, the check replays that file instead of generating cases (the command a
    /// report prints).
    pub fn check<F>(&self, worker: F) -> Result<Outcome>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        if self.serve_if_worker(&worker)? {
            return Ok(Outcome::Passed(Summary::default()));
        }
        let started = Instant::now();
        let mut log = RunLog::default();
        let outcome = match std::env::var_os("KAFKA_HARNESS_REPLAY") {
            Some(path) => self.replay_as_check(std::path::Path::new(&path), &worker, &mut log),
            None => self.search(&mut log),
        };
        self.publish(outcome, log, started)
    }

    /// Generation, shrinking and confirmation (the body of [`Harness::check`]).
    fn search(&self, log: &mut RunLog) -> Result<Outcome> {
        let started = Instant::now();
        let cluster = self.cluster_for_run()?;
        let runner = self.runner(cluster.clone());
        let name = runner.name.clone();
        let mut next_case = super::next_case_no;

        // Discovery: the fault-free run names the crash points that exist and how often they hit.
        let discovery = Schedule::new(self.workload);
        let (first, dir) = self.run_once(&runner, &discovery, next_case())?;
        let points: Vec<(String, u32)> = first.trace.crash_point_hits().into_iter().collect();
        log.coverage = crate::report::Coverage::new(&points, self.kinds);
        log.show(&discovery, &first);
        // A latent failure (committed too far: a loss waiting for a crash) is kept while
        // generation looks for a realized one, which is what the report should show.
        let mut latent: Option<Latent> = None;
        let mut timing_dependent: Option<Box<Report>> = None;
        if !first.verdict.holds() {
            let kind = first.verdict.primary_kind();
            if !is_latent(kind) {
                return self.fail(
                    &runner,
                    Found {
                        schedule: discovery,
                        result: first,
                        dir,
                        original: None,
                    },
                    kind,
                    "discovery".into(),
                    0,
                    0,
                    &mut next_case,
                );
            }
            latent = Some(Latent::Discovery(discovery, first, dir));
        }

        let space = ScheduleSpace {
            points: points.clone(),
            max: self.workload,
            faults: self.faults.clone(),
            kinds: self.kinds,
            brokers: if cluster.backend().broker_faults() {
                cluster.broker_count()
            } else {
                0
            },
            links: cluster.backend().network_faults(),
            transactional: self.guarantee == Guarantee::ExactlyOnceTransactional,
            effects: runner.sink.semantics() == crate::trace::SinkSemantics::OutputTopic
                || points
                    .iter()
                    .any(|(p, _)| p == crate::worker::points::AFTER_SINK_WRITE),
        };
        if self.kinds.broker_faults && !cluster.backend().broker_faults() {
            eprintln!(
                "kafka-harness: broker faults are not generated on the {} backend (only containers and local brokers can be killed and frozen by the harness)",
                cluster.backend()
            );
        }
        if self.kinds.network_faults && !cluster.backend().network_faults() {
            eprintln!(
                "kafka-harness: network faults are not generated on the {} backend (only brokers the harness starts advertise its link proxies: containers, local)",
                cluster.backend()
            );
        }
        let config = ProptestConfig {
            cases: self
                .cases
                .or_else(|| env_u32("PROPTEST_CASES"))
                .unwrap_or(DEFAULT_CASES),
            ..ProptestConfig::default()
        };
        let seed = match &self.seed {
            Some(text) => parse_seed(text).ok_or_else(|| {
                Error::Config(format!(
                    "seed {text:?} is not 64 hex digits (a report prints the seed it used)"
                ))
            })?,
            None => seed(),
        };
        let mut rng_runner = TestRunner::new_with_rng(
            config.clone(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed),
        );
        let strategy = space.strategy();
        let mut summary = Summary {
            name: name.clone(),
            discovered_points: points,
            backend: Some(cluster.backend()),
            ..Summary::default()
        };
        log.seed = Some(hex(&seed));
        let parallel = self.parallelism();
        let mut case = 0;
        while case < config.cases {
            let n = parallel.min(config.cases - case) as usize;
            let mut trees = Vec::with_capacity(n);
            for _ in 0..n {
                // The generator as it was before this case: shrinking draws the tree again.
                let rng = rng_runner.rng().clone();
                let tree = strategy
                    .new_tree(&mut rng_runner)
                    .map_err(|e| Error::Config(format!("schedule generation: {e}")))?;
                trees.push((
                    tree.current(),
                    TreeSource::new(strategy.clone(), rng, config.clone()),
                ));
            }
            let jobs: Vec<(Schedule, u64)> = trees
                .iter()
                .map(|(s, _)| (s.clone(), next_case()))
                .collect();
            let schedules: Vec<Schedule> = jobs.iter().map(|(s, _)| s.clone()).collect();
            let results = self.run_batch(&runner, jobs);
            for (((_, tree), outcome), schedule) in trees.into_iter().zip(results).zip(schedules) {
                let (result, dir) = outcome?;
                case += 1;
                summary.cases += 1;
                tally(&mut summary, &result.trace);
                log.coverage.add(&result.trace);
                log.show(&schedule, &result);
                self.progress_line(&format!(
                    "case {case}/{} · {} · {} · {:.1} s",
                    config.cases,
                    faults_word(&schedule),
                    verdict_word(&result),
                    result.elapsed.as_secs_f64()
                ));
                if result.verdict.holds() {
                    continue;
                }
                let kind = result.verdict.primary_kind();
                if is_latent(kind) {
                    if !matches!(latent, Some(Latent::Case(..))) {
                        latent = Some(Latent::Case(Box::new((schedule, tree)), result, dir, case));
                    }
                    continue;
                }
                // The first realized failure in generation order wins, unless its minimal
                // schedule is timing-dependent; the rest of its batch is dropped.
                let outcome = self.shrink(
                    &runner,
                    schedule,
                    tree,
                    result,
                    dir,
                    kind,
                    hex(&seed),
                    case,
                    &mut next_case,
                )?;
                match outcome {
                    Outcome::Failed(report) if report.timing_dependent() => {
                        // A schedule that reproduces is the report a user can act on, so
                        // generation goes on looking for one (e.g. a crash after a record's
                        // processing began, where this one raced an auto-commit's timer);
                        // the best timing-dependent one is reported if none turns up.
                        self.progress_line(&format!(
                            "its minimal schedule reproduced {}/{}: timing-dependent; generation goes on for a failure that reproduces ({} case(s) left)",
                            report.reproduced,
                            report.confirm_runs,
                            config.cases - case
                        ));
                        timing_dependent = Some(match timing_dependent.take() {
                            Some(kept) if kept.reproduced >= report.reproduced => {
                                discard(*report);
                                kept
                            }
                            Some(kept) => {
                                discard(*kept);
                                report
                            }
                            None => report,
                        });
                    }
                    outcome => {
                        if let Some(kept) = timing_dependent {
                            discard(*kept);
                        }
                        return Ok(outcome);
                    }
                }
            }
        }
        if let Some(mut kept) = timing_dependent {
            // A later timing-dependent failure may have saved its schedule over this one's.
            kept.saved = Some(self.save(&runner.name, &kept.schedule)?);
            return Ok(Outcome::Failed(kept));
        }
        match latent {
            Some(Latent::Case(drawn, result, dir, case)) => {
                let kind = result.verdict.primary_kind();
                let (schedule, tree) = *drawn;
                return self.shrink(
                    &runner,
                    schedule,
                    tree,
                    result,
                    dir,
                    kind,
                    hex(&seed),
                    case,
                    &mut next_case,
                );
            }
            Some(Latent::Discovery(schedule, result, dir)) => {
                let kind = result.verdict.primary_kind();
                return self.fail(
                    &runner,
                    Found {
                        schedule,
                        result,
                        dir,
                        original: None,
                    },
                    kind,
                    hex(&seed),
                    0,
                    summary.cases,
                    &mut next_case,
                );
            }
            None => {}
        }
        summary.elapsed = started.elapsed();
        Ok(Outcome::Passed(summary))
    }

    /// Whether `schedule` fails with `kind` in at least one of `tries` runs (run side by side);
    /// the first failing run.
    fn fails_with(
        &self,
        runner: &CaseRunner,
        schedule: &Schedule,
        kind: Option<ViolationKind>,
        tries: u32,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Option<(CaseResult, tempfile::TempDir)>> {
        let jobs = (0..tries)
            .map(|_| (schedule.clone(), next_case()))
            .collect();
        for outcome in self.run_batch(runner, jobs) {
            let (result, dir) = outcome?;
            if !result.verdict.holds() && kind.is_none_or(|k| result.verdict.kinds().contains(&k)) {
                return Ok(Some((result, dir)));
            }
        }
        Ok(None)
    }

    /// Run cases, `parallelism()` at a time on the shared cluster (each has its own topic,
    /// group and transactional id); results in the order given. A schedule with a broker
    /// fault runs alone: killing a broker under other cases would inject faults they did not
    /// schedule.
    fn run_batch(
        &self,
        runner: &CaseRunner,
        jobs: Vec<(Schedule, u64)>,
    ) -> Vec<Result<(CaseResult, tempfile::TempDir)>> {
        let width = if jobs.iter().any(|(s, _)| alone(s)) {
            1
        } else {
            self.parallelism().max(1) as usize
        };
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(width) {
            if chunk.len() == 1 {
                out.push(self.run_once(runner, &chunk[0].0, chunk[0].1));
                continue;
            }
            std::thread::scope(|scope| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|(schedule, case_no)| {
                        scope.spawn(move || self.run_once(runner, schedule, *case_no))
                    })
                    .collect();
                for h in handles {
                    out.push(
                        h.join().unwrap_or_else(|_| {
                            Err(Error::Worker("a case thread panicked".into()))
                        }),
                    );
                }
            });
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn shrink(
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
            let fit = |by_itself| speculate::depth(self.parallelism(), tries, by_itself).min(room);
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
    fn minimize(
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

    /// Confirm the failure by re-running it, save it and build the report. A minimal
    /// schedule that reproduces in fewer than half of the re-runs is timing-dependent: the
    /// schedule it was shrunk from is confirmed too, and the one that reproduces more often
    /// is reported (with the rate, and plain words when it stays low).
    #[allow(clippy::too_many_arguments)]
    fn fail(
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

/// Remove the case directory a report kept, when the report will not be shown.
fn discard(report: Report) {
    if let Some(dir) = report.case_dir {
        let _ = std::fs::remove_dir_all(dir);
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

/// Whether a schedule's case must run with no other case beside it: killing a broker or cutting
/// links under other cases would inject faults they did not schedule.
fn alone(schedule: &Schedule) -> bool {
    schedule
        .faults
        .iter()
        .any(|f| matches!(f, crate::Fault::BrokerRestart { .. }) || f.cluster_fault().is_some())
}

/// A failing run and what produced it.
struct Found {
    schedule: Schedule,
    result: CaseResult,
    dir: tempfile::TempDir,
    /// The generated schedule before shrinking, if it was shrunk.
    original: Option<Schedule>,
}

/// A schedule [`Harness::minimize`] made smaller, and how many steps it kept.
struct Minimized {
    found: Found,
    steps: u32,
}

/// Rounds of [`simpler_schedules`] after proptest's shrinking.
const MINIMIZE_ROUNDS: u32 = 6;

/// How long shrinking again from a sturdier schedule may take.
const REMINIMIZE_TIME: Duration = Duration::from_secs(300);

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
fn sturdier(schedule: &Schedule) -> Vec<Schedule> {
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

/// What a check ran, for its files: coverage and the run to draw.
#[derive(Default)]
pub(super) struct RunLog {
    pub(super) coverage: crate::report::Coverage,
    /// The case with the most faults fired (a passing check draws it).
    pub(super) shown: Option<(Schedule, CaseResultParts, u32)>,
    pub(super) seed: Option<String>,
}

/// The verdict and trace of a drawn case.
pub(super) type CaseResultParts = (crate::check::Verdict, Trace);

impl RunLog {
    /// Keep `result` to draw if it injected more faults than the one kept.
    fn show(&mut self, schedule: &Schedule, result: &CaseResult) {
        let mut s = Summary::default();
        tally(&mut s, &result.trace);
        let faults = s.faults_injected;
        if self.shown.as_ref().is_none_or(|(_, _, f)| faults > *f) {
            self.shown = Some((
                schedule.clone(),
                (result.verdict.clone(), result.trace.clone()),
                faults,
            ));
        }
    }
}

/// "12 msg/1 part · 2 fault(s): crash at `x` hit #1; …" for a progress line.
fn faults_word(schedule: &Schedule) -> String {
    let w = &schedule.workload;
    let workload = format!("{} msg/{} part", w.messages, w.partitions);
    if schedule.faults.is_empty() {
        return format!("{workload} · no faults");
    }
    let faults: Vec<String> = schedule.faults.iter().map(|f| f.to_string()).collect();
    format!(
        "{workload} · {} fault(s): {}",
        faults.len(),
        faults.join("; ")
    )
}

fn verdict_word(result: &CaseResult) -> String {
    if result.verdict.holds() {
        "holds".into()
    } else {
        format!("FAILS {:?}", result.verdict.kinds())
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

/// A failure that only shows a loss waiting to happen.
fn is_latent(kind: Option<ViolationKind>) -> bool {
    kind == Some(ViolationKind::CommittedTooFar)
}

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

enum Latent {
    /// The fault-free discovery run already committed too far.
    Discovery(Schedule, CaseResult, tempfile::TempDir),
    /// A generated case did.
    Case(
        Box<(Schedule, TreeSource<Schedule>)>,
        CaseResult,
        tempfile::TempDir,
        u32,
    ),
}

fn tally(summary: &mut Summary, trace: &Trace) {
    for e in &trace.events {
        match &e.kind {
            EventKind::Crashed { point, .. } => {
                summary.crashes += 1;
                summary.faults_injected += 1;
                *summary.crash_points_hit.entry(point.clone()).or_insert(0) += 1;
            }
            EventKind::Killed { reason }
                if !matches!(reason, crate::trace::KillReason::StopTimeout) =>
            {
                summary.crashes += 1;
                summary.faults_injected += 1;
                *summary.crash_points_hit.entry("kill".into()).or_insert(0) += 1;
            }
            // A broker or link fault counts once: not again when it is undone.
            EventKind::SinkFailed { .. } => summary.faults_injected += 1,
            EventKind::BrokerFault { action, .. } if action == "kill" || action == "pause" => {
                summary.faults_injected += 1
            }
            EventKind::LinkFault { action, .. } if action != "heal" => summary.faults_injected += 1,
            EventKind::Started { primary: false, .. } => summary.faults_injected += 1,
            _ => {}
        }
    }
}

/// 64 hex digits as a seed.
pub(super) fn parse_seed(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The generator seed: `KAFKA_HARNESS_SEED` (64 hex digits) or fresh.
fn seed() -> [u8; 32] {
    if let Some(s) = std::env::var("KAFKA_HARNESS_SEED")
        .ok()
        .and_then(|s| parse_seed(&s))
    {
        return s;
    }
    let mut out = [0u8; 32];
    let mut x = crate::trace::monotonic_us() ^ ((std::process::id() as u64) << 32);
    for b in out.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    out
}

fn hex(seed: &[u8; 32]) -> String {
    seed.iter().map(|b| format!("{b:02x}")).collect()
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

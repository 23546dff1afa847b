//! Search: generate schedules, run them, and on failure shrink, confirm and save.
//!
//! ```text
//!  discovery run (no faults) ─► crash points + hit counts ─► ScheduleSpace ─► proptest cases
//!        │ a failure here is reported as is                       │ first failure
//!        ▼                                                        ▼
//!     Summary  ◄── every case held            shrink ("fails in ≥1 of k tries") ─► confirm ─► save ─► Report
//! ```
//!
//! Shrinking (`shrink`) takes proptest's own steps, several at a time side by side
//! (`speculate`), then one-fault deletions side by side; confirming (`confirm`) re-runs the
//! minimal schedule. A failure whose minimal schedule reproduces in fewer than half its
//! confirmation re-runs is kept while generation goes on: a later case that fails in a way that
//! reproduces is reported instead, the kept one only if none does. This file: generation, and
//! running a batch of cases side by side.

use std::collections::BTreeMap;
use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use super::speculate::TreeSource;
use super::window::{panicked_case, CaseOutcome, Window};
use super::{env_u32, CaseResult, Harness, Outcome, Summary};
use crate::check::ViolationKind;
use crate::report::Report;
use crate::run::CaseRunner;
use crate::schedule::{Schedule, ScheduleSpace};
use crate::trace::{EventKind, Trace};
use crate::worker::{WorkerCtx, WorkerError};
use crate::{Error, Guarantee, Result};

/// Cases a check generates unless told otherwise (`.cases(n)`, `PROPTEST_CASES`).
/// 128: on one broker a correct consumer's 128 cases take ≈20 s at the default parallelism, and
/// the hardest two-fault fixture (`commit_every_three_keeps_revoked`, ≈3 % of cases find it)
/// was missed by 3 of 20 seeds at 64.
pub(super) const DEFAULT_CASES: u32 = 128;

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
        let width = self.parallelism(cluster.backend()) as usize;
        let run = |s: &Schedule, case_no: u64| self.run_once(&runner, s, case_no);
        // Generation runs ahead of judgement: cases start in a sliding window as others end
        // (see `window`), and are judged in generation order, so which failure is reported does
        // not depend on which case ended first.
        let generated = std::thread::scope(|scope| -> Result<Option<Outcome>> {
            let mut window = Window::new(scope, &run, panicked_case, width);
            let mut drawn = 0u32;
            let mut waiting: Option<Drawn> = None;
            let mut started: BTreeMap<u32, (Schedule, TreeSource<Schedule>)> = BTreeMap::new();
            let mut ended: BTreeMap<u32, CaseOutcome> = BTreeMap::new();
            // Cases cancelled for a shrink, to start again if generation goes on.
            let mut redo: Vec<u32> = Vec::new();
            let mut case = 0u32;
            loop {
                loop {
                    if waiting.is_none() {
                        if let Some(index) = redo.pop() {
                            if let Some((schedule, _)) = started.get(&index) {
                                waiting = Some(Drawn {
                                    index,
                                    schedule: schedule.clone(),
                                    tree: None,
                                    case_no: next_case(),
                                });
                            }
                        }
                    }
                    if waiting.is_none() && drawn < config.cases {
                        // The generator as it was before this case: shrinking draws the tree again.
                        let rng = rng_runner.rng().clone();
                        let tree = strategy
                            .new_tree(&mut rng_runner)
                            .map_err(|e| Error::Config(format!("schedule generation: {e}")))?;
                        waiting = Some(Drawn {
                            index: drawn,
                            schedule: tree.current(),
                            tree: Some(TreeSource::new(strategy.clone(), rng, config.clone())),
                            case_no: next_case(),
                        });
                        drawn += 1;
                    }
                    match waiting.take() {
                        Some(d) if window.has_room_for(&d.schedule) => {
                            if let Some(tree) = d.tree {
                                started.insert(d.index, (d.schedule.clone(), tree));
                            }
                            window.start(d.index as usize, d.schedule, d.case_no);
                        }
                        other => {
                            waiting = other;
                            break;
                        }
                    }
                }
                let Some((index, outcome)) = window.next() else {
                    break;
                };
                ended.insert(index as u32, outcome);
                while let Some(outcome) = ended.remove(&case) {
                    let Some((schedule, tree)) = started.remove(&case) else {
                        break;
                    };
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
                            latent =
                                Some(Latent::Case(Box::new((schedule, tree)), result, dir, case));
                        }
                        continue;
                    }
                    // The first realized failure in generation order wins, unless its minimal
                    // schedule is timing-dependent. The cases still running come later in
                    // generation order and the shrink needs the machine: they are cancelled
                    // (killed within ~10 ms, instead of seconds to their end) and run again if
                    // generation goes on; a case that ended first keeps its result.
                    runner.cancel_cases(true);
                    while let Some((index, outcome)) = window.next() {
                        match outcome {
                            Err(Error::Cancelled) => redo.push(index as u32),
                            outcome => {
                                ended.insert(index as u32, outcome);
                            }
                        }
                    }
                    runner.cancel_cases(false);
                    redo.sort_unstable_by(|a, b| b.cmp(a));
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
                            if let Some(kept) = timing_dependent.take() {
                                discard(*kept);
                            }
                            return Ok(Some(outcome));
                        }
                    }
                }
            }
            Ok(None)
        })?;
        if let Some(outcome) = generated {
            return Ok(outcome);
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
    pub(super) fn fails_with(
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
}

/// Remove the case directory a report kept, when the report will not be shown.
fn discard(report: Report) {
    if let Some(dir) = report.case_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Whether a schedule's case must run with no other case beside it: killing a broker or cutting
/// links under other cases would inject faults they did not schedule.
pub(super) fn alone(schedule: &Schedule) -> bool {
    schedule
        .faults
        .iter()
        .any(|f| matches!(f, crate::Fault::BrokerRestart { .. }) || f.cluster_fault().is_some())
}

/// A failing run and what produced it.
pub(super) struct Found {
    pub(super) schedule: Schedule,
    pub(super) result: CaseResult,
    pub(super) dir: tempfile::TempDir,
    /// The generated schedule before shrinking, if it was shrunk.
    pub(super) original: Option<Schedule>,
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
pub(super) fn faults_word(schedule: &Schedule) -> String {
    let w = &schedule.workload;
    let workload = format!("{} msg/{} part", w.messages, w.partitions);
    if schedule.faults.is_empty() {
        return format!("{workload} · no faults");
    }
    let faults: Vec<String> = schedule.faults.iter().map(|f| f.to_string()).collect();
    let side = if schedule.joiner_first && schedule.adds_member() {
        " (the joiner takes the first partitions)"
    } else {
        ""
    };
    format!(
        "{workload} · {} fault(s): {}{side}",
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

/// A failure that only shows a loss waiting to happen.
pub(super) fn is_latent(kind: Option<ViolationKind>) -> bool {
    kind == Some(ViolationKind::CommittedTooFar)
}

/// A case drawn and not started yet (the window had no room for it).
struct Drawn {
    index: u32,
    schedule: Schedule,
    /// How to draw it again for a shrink; `None` for a cancelled case started again (its
    /// source is kept from its first start).
    tree: Option<TreeSource<Schedule>>,
    case_no: u64,
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

//! The one-call API: claim a guarantee, hand over the consumer, get a summary or a report.
//!
//! ```text
//!  discovery run (no faults) ─► crash points + hit counts ─► ScheduleSpace ─► proptest cases
//!        │ a failure here is reported as is                       │ first failure
//!        ▼                                                        ▼
//!     Summary  ◄── every case held            shrink ("fails in ≥1 of k tries") ─► confirm ─► save ─► Report
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use crate::check::{check, Guarantee, Verdict, ViolationKind};
use crate::cluster::Cluster;
use crate::report::Report;
use crate::run::{CaseRunner, Timing};
use crate::schedule::{FaultKinds, Schedule, ScheduleSpace, Workload};
use crate::sink::{LedgerSink, OutputTopicSink, SinkFactory, UpsertSink};
use crate::trace::{EventKind, Trace};
use crate::worker::spec::WorkerSpec;
use crate::worker::{serve, Launch, WorkerCtx, WorkerError};
use crate::{Error, Result};

/// How a guarantee check ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every case held.
    Passed(Summary),
    /// A case broke the guarantee; the report has the minimal schedule.
    Failed(Box<Report>),
}

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The harness name.
    pub name: String,
    /// Cases run (the discovery run not counted).
    pub cases: u32,
    /// Faults that fired (crashes, kills, sink failures, rebalances, broker restarts).
    pub faults_injected: u32,
    /// Process deaths among them.
    pub crashes: u32,
    /// Crashes per crash point (orchestrator kills under `kill`).
    pub crash_points_hit: std::collections::BTreeMap<String, u32>,
    /// Crash points the discovery run found, with their hit counts.
    pub discovered_points: Vec<(String, u32)>,
    /// Wall time.
    pub elapsed: Duration,
    /// Backend used.
    pub backend: Option<crate::BackendKind>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` held over {} case(s) on {}: {} fault(s) injected, {} crash(es) {:?}, in {:.1} s",
            self.name,
            self.cases,
            self.backend.map(|b| b.to_string()).unwrap_or_default(),
            self.faults_injected,
            self.crashes,
            self.crash_points_hit,
            self.elapsed.as_secs_f64()
        )
    }
}

/// One case's verdict, trace and time.
#[derive(Debug)]
pub struct CaseResult {
    /// The verdict.
    pub verdict: Verdict,
    /// The trace it was judged on.
    pub trace: Trace,
    /// Wall time of the case.
    pub elapsed: Duration,
}

/// Checks that a consumer keeps a delivery guarantee across generated crash schedules.
///
/// ```no_run
/// use kafka_harness::{Guarantee, Harness, worker::{CommitMode, WorkerCtx, WorkerError}};
///
/// fn my_consumer(ctx: &mut WorkerCtx) -> Result<(), WorkerError> {
///     let mut cfg = rdkafka::ClientConfig::new();
///     cfg.set("enable.auto.commit", "false");
///     let consumer = ctx.consumer(&cfg)?;
///     let mut sink = ctx.sink()?;
///     while ctx.running() {
///         if let Some(record) = consumer.poll(std::time::Duration::from_millis(100)) {
///             let record = record?;
///             sink.apply(&record)?;                          // process …
///             consumer.commit_record(&record, CommitMode::Sync)?; // … then commit
///         }
///     }
///     Ok(())
/// }
///
/// #[test]
/// fn my_consumer_is_at_least_once() {
///     Harness::new(Guarantee::AtLeastOnce).assert(my_consumer);
/// }
/// ```
#[derive(Clone)]
pub struct Harness {
    guarantee: Guarantee,
    sink: Arc<dyn SinkFactory>,
    cluster: Option<Arc<Cluster>>,
    name: Option<String>,
    workload: Workload,
    faults: std::ops::RangeInclusive<usize>,
    kinds: FaultKinds,
    cases: Option<u32>,
    tries: u32,
    confirm_runs: u32,
    timing: Timing,
    failure_dir: Option<PathBuf>,
}

fn env_u32(name: &str) -> Option<u32> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

impl Harness {
    /// Check `guarantee`, with the sink it needs by default: the counting ledger for
    /// at-least/at-most-once, the SQLite upsert sink for effectively-once, the output topic for
    /// transactional exactly-once.
    pub fn new(guarantee: Guarantee) -> Self {
        let sink: Arc<dyn SinkFactory> = match guarantee {
            Guarantee::AtLeastOnce | Guarantee::AtMostOnce => Arc::new(LedgerSink),
            Guarantee::EffectivelyOnce => Arc::new(UpsertSink),
            Guarantee::ExactlyOnceTransactional => Arc::new(OutputTopicSink),
        };
        Harness {
            guarantee,
            sink,
            cluster: None,
            name: None,
            workload: Workload::default(),
            faults: 1..=3,
            kinds: FaultKinds::default(),
            cases: None,
            tries: 2,
            confirm_runs: 3,
            timing: Timing::default(),
            failure_dir: None,
        }
    }

    /// Use another sink (e.g. [`crate::sink::AppendSink`], or your own [`SinkFactory`]).
    pub fn sink(mut self, sink: impl SinkFactory + 'static) -> Self {
        self.sink = Arc::new(sink);
        self
    }

    /// Run on this cluster instead of the process-wide [`Cluster::shared`] one.
    pub fn cluster(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Name the harness (default: the test's name; required when one binary runs several).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    /// Largest workload to generate (smaller ones are generated and shrunk toward).
    pub fn workload(mut self, max: Workload) -> Self {
        self.workload = max;
        self
    }

    /// Faults per schedule (default 1..=3).
    pub fn faults(mut self, range: std::ops::RangeInclusive<usize>) -> Self {
        self.faults = range;
        self
    }

    /// Which fault kinds to generate.
    pub fn fault_kinds(mut self, kinds: FaultKinds) -> Self {
        self.kinds = kinds;
        self
    }

    /// Cases to generate. Default: `PROPTEST_CASES`, else 16.
    pub fn cases(mut self, n: u32) -> Self {
        self.cases = Some(n);
        self
    }

    /// While shrinking, a candidate fails if it fails in at least one of `k` tries (default 2;
    /// env `KAFKA_HARNESS_SHRINK_TRIES`).
    pub fn tries(mut self, k: u32) -> Self {
        self.tries = k.max(1);
        self
    }

    /// Re-runs of the minimal schedule to measure how often it reproduces (default 3).
    pub fn confirm_runs(mut self, n: u32) -> Self {
        self.confirm_runs = n;
        self
    }

    /// Time limits of each case.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Where failing schedules are saved. Default: env `KAFKA_HARNESS_FAILURE_DIR`, else
    /// `kafka-harness-failures/` in the crate under test (`CARGO_MANIFEST_DIR`), else the cwd.
    pub fn failure_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.failure_dir = Some(dir.into());
        self
    }

    fn launch(&self) -> Launch {
        Launch::detect()
    }

    fn resolved_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.launch().name())
    }

    /// In a worker process started for this harness: run the worker and exit. For another
    /// harness's worker: `Ok(true)`, the caller returns at once.
    fn serve_if_worker<F>(&self, worker: &F) -> Result<bool>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        let Some(spec) = WorkerSpec::from_env()? else {
            return Ok(false);
        };
        if spec.name != self.resolved_name() {
            return Ok(true);
        }
        serve(spec, self.sink.clone(), worker)
    }

    fn cluster_for_run(&self) -> Result<Arc<Cluster>> {
        let cluster = match &self.cluster {
            Some(c) => c.clone(),
            None => Cluster::shared()?,
        };
        if !self.guarantee.accepts(self.sink.semantics()) {
            return Err(Error::Config(format!(
                "{} cannot be judged with the `{}` sink",
                self.guarantee,
                self.sink.name()
            )));
        }
        if self.guarantee == Guarantee::ExactlyOnceTransactional
            && !cluster.backend().transactions_faithful()
        {
            return Err(Error::Unsupported {
                guarantee: self.guarantee.to_string(),
                backend: cluster.backend().to_string(),
                reason: "librdkafka's mock cluster does not implement transactions faithfully (EndTxn does nothing, aborted records stay visible); use the containers or local backend".into(),
            });
        }
        Ok(cluster)
    }

    fn runner(&self, cluster: Arc<Cluster>) -> CaseRunner {
        CaseRunner {
            cluster,
            launch: self.launch(),
            name: self.resolved_name(),
            sink: self.sink.clone(),
            timing: self.timing,
        }
    }

    /// Run one schedule once and judge it.
    pub fn run_schedule<F>(&self, schedule: &Schedule, worker: F) -> Result<CaseResult>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        if self.serve_if_worker(&worker)? {
            return Err(Error::Worker(
                "this process is a worker for another harness".into(),
            ));
        }
        let runner = self.runner(self.cluster_for_run()?);
        let (result, _dir) = self.run_once(&runner, schedule, 0)?;
        Ok(result)
    }

    fn run_once(
        &self,
        runner: &CaseRunner,
        schedule: &Schedule,
        case_no: u64,
    ) -> Result<(CaseResult, tempfile::TempDir)> {
        let mut outcome = runner.run(schedule, case_no)?;
        if std::env::var_os("KAFKA_HARNESS_KEEP_CASES").is_some() {
            outcome.dir.disable_cleanup(true);
            eprintln!(
                "kafka-harness: case {case_no} kept in {}",
                outcome.dir.path().display()
            );
        }
        let verdict = check(&outcome.trace, self.guarantee)?;
        Ok((
            CaseResult {
                verdict,
                trace: outcome.trace,
                elapsed: outcome.elapsed,
            },
            outcome.dir,
        ))
    }

    /// Generate schedules, run them, and on failure shrink, confirm and save. Passing returns
    /// [`Outcome::Passed`]; a broken guarantee returns [`Outcome::Failed`]; `Err` is a harness
    /// or environment problem (no cluster, malformed trace), never a verdict.
    pub fn check<F>(&self, worker: F) -> Result<Outcome>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        if self.serve_if_worker(&worker)? {
            return Ok(Outcome::Passed(Summary::default()));
        }
        let started = Instant::now();
        let cluster = self.cluster_for_run()?;
        let runner = self.runner(cluster.clone());
        let name = runner.name.clone();
        let mut case_no = 0u64;
        let mut next_case = || {
            case_no += 1;
            case_no
        };

        // Discovery: the fault-free run names the crash points that exist and how often they hit.
        let discovery = Schedule::new(self.workload);
        let (first, dir) = self.run_once(&runner, &discovery, next_case())?;
        let points: Vec<(String, u32)> = first.trace.crash_point_hits().into_iter().collect();
        // A latent failure (committed too far: a loss waiting for a crash) is kept while
        // generation looks for a realized one, which is what the report should show.
        let mut latent: Option<Latent> = None;
        if !first.verdict.holds() {
            let kind = first.verdict.primary_kind();
            if !is_latent(kind) {
                return self.fail(
                    &runner,
                    discovery,
                    first,
                    dir,
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
            brokers: if cluster.backend() == crate::BackendKind::External {
                0
            } else {
                cluster.broker_count()
            },
        };
        let config = ProptestConfig {
            cases: self
                .cases
                .or_else(|| env_u32("PROPTEST_CASES"))
                .unwrap_or(16),
            ..ProptestConfig::default()
        };
        let seed = seed();
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
        for case in 0..config.cases {
            let tree = strategy
                .new_tree(&mut rng_runner)
                .map_err(|e| Error::Config(format!("schedule generation: {e}")))?;
            let schedule = tree.current();
            let (result, dir) = self.run_once(&runner, &schedule, next_case())?;
            summary.cases += 1;
            tally(&mut summary, &result.trace);
            if result.verdict.holds() {
                continue;
            }
            let kind = result.verdict.primary_kind();
            if is_latent(kind) {
                if !matches!(latent, Some(Latent::Case(..))) {
                    latent = Some(Latent::Case(Box::new(tree), result, dir, case + 1));
                }
                continue;
            }
            return self.shrink(
                &runner,
                Box::new(tree),
                result,
                dir,
                kind,
                hex(&seed),
                case + 1,
                &mut next_case,
            );
        }
        match latent {
            Some(Latent::Case(tree, result, dir, case)) => {
                let kind = result.verdict.primary_kind();
                return self.shrink(
                    &runner,
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
                    schedule,
                    result,
                    dir,
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

    /// Whether `schedule` fails with `kind` in at least one of `tries` runs; the failing run.
    fn fails_with(
        &self,
        runner: &CaseRunner,
        schedule: &Schedule,
        kind: Option<ViolationKind>,
        tries: u32,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Option<(CaseResult, tempfile::TempDir)>> {
        for _ in 0..tries {
            let (result, dir) = self.run_once(runner, schedule, next_case())?;
            if !result.verdict.holds()
                && (kind.is_none()
                    || result
                        .verdict
                        .kinds()
                        .contains(&kind.unwrap_or(ViolationKind::Stuck)))
            {
                return Ok(Some((result, dir)));
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    fn shrink(
        &self,
        runner: &CaseRunner,
        mut tree: Box<dyn ValueTree<Value = Schedule>>,
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
        let mut schedule = tree.current();
        let mut steps = 0;
        let mut iters = 0;
        // proptest's shrink loop: simplify while the candidate still fails, complicate when it passes.
        let mut simplify = true;
        while iters < max_iters && started.elapsed() < max_time {
            let moved = if simplify {
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !moved {
                break;
            }
            iters += 1;
            let candidate = tree.current();
            match self.fails_with(runner, &candidate, kind, tries, next_case)? {
                Some((r, d)) => {
                    schedule = candidate;
                    result = r;
                    dir = d;
                    steps += 1;
                    simplify = true;
                }
                None => simplify = false,
            }
        }
        self.fail(
            runner, schedule, result, dir, kind, seed, steps, cases, next_case,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn fail(
        &self,
        runner: &CaseRunner,
        schedule: Schedule,
        result: CaseResult,
        dir: tempfile::TempDir,
        kind: Option<ViolationKind>,
        seed: String,
        shrink_steps: u32,
        cases: u32,
        next_case: &mut dyn FnMut() -> u64,
    ) -> Result<Outcome> {
        let mut reproduced = 0;
        for _ in 0..self.confirm_runs {
            if self
                .fails_with(runner, &schedule, kind, 1, next_case)?
                .is_some()
            {
                reproduced += 1;
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
        })))
    }

    fn failure_path(&self, name: &str) -> PathBuf {
        let dir = self
            .failure_dir
            .clone()
            .or_else(|| std::env::var_os("KAFKA_HARNESS_FAILURE_DIR").map(PathBuf::from))
            .or_else(|| {
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .map(|d| PathBuf::from(d).join("kafka-harness-failures"))
            })
            .unwrap_or_else(|| PathBuf::from("kafka-harness-failures"));
        let file = crate::run::sanitize(name);
        dir.join(format!("{file}.json"))
    }

    fn save(&self, name: &str, schedule: &Schedule) -> Result<PathBuf> {
        let path = self.failure_path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating the failure directory", parent, e))?;
        }
        std::fs::write(&path, schedule.to_json())
            .map_err(|e| Error::io("saving the failing schedule", &path, e))?;
        Ok(path)
    }

    /// Re-run exactly the schedule saved at `path` (no generation, no shrinking) and judge it.
    pub fn replay<F>(&self, path: impl AsRef<Path>, worker: F) -> Result<CaseResult>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        if self.serve_if_worker(&worker)? {
            return Err(Error::Worker(
                "this process is a worker for another harness".into(),
            ));
        }
        let schedule = Schedule::load(path.as_ref(), None)?;
        self.run_schedule(&schedule, worker)
    }

    /// [`Harness::check`], panicking with the full report on failure or error (for `#[test]`s).
    pub fn assert<F>(&self, worker: F) -> Summary
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        match self.check(worker) {
            Ok(Outcome::Passed(summary)) => {
                eprintln!("kafka-harness: {summary}");
                summary
            }
            Ok(Outcome::Failed(report)) => panic!("\n{report}"),
            Err(e) => panic!(
                "kafka-harness could not run `{}`: {e}",
                self.resolved_name()
            ),
        }
    }

    /// [`Harness::replay`], panicking if the guarantee does not hold (a regression test).
    pub fn assert_replay<F>(&self, path: impl AsRef<Path>, worker: F)
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        match self.replay(path.as_ref(), worker) {
            Ok(r) if r.verdict.holds() => {}
            Ok(r) => {
                let v: Vec<String> = r
                    .verdict
                    .violations
                    .iter()
                    .map(|v| format!("  - {v}"))
                    .collect();
                panic!(
                    "replay of {} still fails:\n{}\n{}",
                    path.as_ref().display(),
                    v.join("\n"),
                    crate::report::timeline(&r.trace)
                )
            }
            Err(e) => panic!(
                "kafka-harness could not replay {}: {e}",
                path.as_ref().display()
            ),
        }
    }
}

/// A failure that only shows a loss waiting to happen.
fn is_latent(kind: Option<ViolationKind>) -> bool {
    kind == Some(ViolationKind::CommittedTooFar)
}

enum Latent {
    /// The fault-free discovery run already committed too far.
    Discovery(Schedule, CaseResult, tempfile::TempDir),
    /// A generated case did.
    Case(
        Box<dyn ValueTree<Value = Schedule>>,
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
            EventKind::SinkFailed { .. } | EventKind::BrokerFault { .. } => {
                summary.faults_injected += 1
            }
            EventKind::Started { primary: false, .. } => summary.faults_injected += 1,
            _ => {}
        }
    }
}

/// The generator seed: `KAFKA_HARNESS_SEED` (64 hex digits) or fresh.
fn seed() -> [u8; 32] {
    if let Some(s) = std::env::var("KAFKA_HARNESS_SEED")
        .ok()
        .filter(|s| s.len() == 64)
    {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        return out;
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

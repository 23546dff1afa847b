//! The one-call API: claim a guarantee, hand over the consumer, get a summary or a report.
//! This file is the builder and the single-schedule calls (run, replay); [`search`] is
//! generation, shrinking and confirmation.

mod confirm;
mod publish;
mod search;
mod shrink;
mod speculate;
mod window;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::check::{check, Guarantee, Verdict};
use crate::cluster::Cluster;
use crate::report::Report;
use crate::run::{CaseRunner, Timing};
use crate::schedule::{FaultKinds, Schedule, Workload};
use crate::sink::{LedgerSink, OutputTopicSink, SinkFactory, UpsertSink};
use crate::trace::{EventKind, Trace};
use crate::worker::spec::WorkerSpec;
use crate::worker::{serve, Launch, WorkerCtx, WorkerError};
use crate::{Error, Result};

/// How a guarantee check ended.
#[derive(Debug)]
// One per check, returned once: the size of a summary on the stack does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// What the check exercised.
    pub coverage: Option<crate::report::Coverage>,
    /// The HTML page, when one was written ([`Harness::html_for_passing`]).
    pub html: Option<PathBuf>,
    /// The JUnit file.
    pub junit: Option<PathBuf>,
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
        )?;
        if let Some(cov) = &self.coverage {
            write!(f, "; {cov}")?;
        }
        if let Some(html) = &self.html {
            write!(f, "; HTML report: {}", html.display())?;
        }
        Ok(())
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
    seed: Option<String>,
    parallel: Option<u32>,
    payload: Option<crate::run::PayloadFn>,
    fail_points: Vec<String>,
    report_dir: Option<PathBuf>,
    html_passing: bool,
    progress: bool,
}

/// Case numbers are unique in the process: they name the case's topics and group, and a
/// finished case's topics are deleted in the background while the next check may start.
fn next_case_no() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
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
            confirm_runs: env_u32("KAFKA_HARNESS_CONFIRM_RUNS").unwrap_or(3),
            timing: Timing::default(),
            failure_dir: None,
            seed: None,
            parallel: None,
            payload: None,
            fail_points: Vec::new(),
            report_dir: None,
            html_passing: std::env::var("KAFKA_HARNESS_HTML").is_ok_and(|v| v == "always"),
            progress: std::env::var("KAFKA_HARNESS_PROGRESS").map_or(true, |v| v != "0"),
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

    /// Cases to generate. Default: `PROPTEST_CASES`, else 128 (a correct consumer's 128 cases take ≈20 s on one broker and 2 cores, see README Performance).
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

    /// The generator seed (64 hex digits, as a report prints it): the same seed generates the
    /// same cases. Default: env `KAFKA_HARNESS_SEED`, else fresh per run. A malformed seed is
    /// an error when the check starts.
    pub fn seed(mut self, hex: &str) -> Self {
        self.seed = Some(hex.to_string());
        self
    }

    /// The payload of workload message `id` with `key`, in the consumer's own format (e.g.
    /// its JSON event), so its deserializer runs. The harness identifies messages by the
    /// [`crate::worker::ID_HEADER`] header it adds, never by the payload. Default: `"{id}:{key}"`.
    ///
    /// ```
    /// use kafka_harness::{Guarantee, Harness};
    /// let h = Harness::new(Guarantee::AtLeastOnce).payload(|id, key| {
    ///     format!(r#"{{"order_id":{id},"customer":"{key}","amount_cents":{}}}"#, 100 + id).into_bytes()
    /// });
    /// # let _ = h;
    /// ```
    pub fn payload<F>(mut self, generate: F) -> Self
    where
        F: Fn(u64, &str) -> Vec<u8> + Send + Sync + 'static,
    {
        self.payload = Some(Arc::new(generate));
        self
    }

    /// The consumer's own `fail::fail_point!`s (the `fail` crate) to schedule as crash points,
    /// by name: fail points cannot be enumerated, so discovery counts exactly these. In the
    /// worker each becomes a `fail::cfg_callback` that counts the hit and may SIGKILL, like
    /// [`crate::crash_point()`]. Needs this crate's `fail` feature (which turns on
    /// `fail/failpoints` for the build); without it the check fails with a clear error.
    ///
    /// ```
    /// use kafka_harness::{Guarantee, Harness};
    /// let h = Harness::new(Guarantee::AtLeastOnce).fail_points(&["db-commit", "after-charge"]);
    /// # let _ = h;
    /// ```
    pub fn fail_points(mut self, names: &[&str]) -> Self {
        self.fail_points = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Cases run side by side on the shared cluster (generation, the `k` tries of a shrink
    /// step, the next shrink steps, confirmation re-runs). Default: env
    /// `KAFKA_HARNESS_PARALLEL`, else 8 × the machine's cores (16 × on the embedded mock; 2
    /// to 32). Use 1 for a consumer
    /// that needs the machine to itself: one that is CPU-bound, or whose correctness depends
    /// on timing under load (e.g. a `session.timeout.ms` close to its processing time).
    pub fn parallel(mut self, cases: u32) -> Self {
        self.parallel = Some(cases.max(1));
        self
    }

    fn parallelism(&self, backend: crate::BackendKind) -> u32 {
        self.parallel
            .or_else(|| env_u32("KAFKA_HARNESS_PARALLEL"))
            .unwrap_or_else(|| {
                // Cases mostly wait on the broker (session timeouts, the controller): measured
                // on 2 cores, one broker, a correct consumer's cases ran at 210 cases/min 8 at
                // once, 440 at 16, 606 at 24, 686 at 32, the CPU 35 % busy at 16. On the
                // embedded mock (no broker JVM beside them) 527 at 16 and 689 at 32.
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
                let per_core = if backend == crate::BackendKind::Embedded {
                    16
                } else {
                    8
                };
                (per_core * cores).clamp(2, 32)
            })
            .max(1)
    }

    /// Where failing schedules are saved. Default: env `KAFKA_HARNESS_FAILURE_DIR`, else
    /// `kafka-harness-failures/` in the crate under test (`CARGO_MANIFEST_DIR`), else the cwd.
    pub fn failure_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.failure_dir = Some(dir.into());
        self
    }

    /// Where the check's files go (run record, JUnit, HTML). Default: env
    /// `KAFKA_HARNESS_REPORT_DIR`, else `kafka-harness/` in Cargo's target directory.
    pub fn report_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.report_dir = Some(dir.into());
        self
    }

    /// Write the HTML page for a passing check too (it draws the case that injected the most
    /// faults). Default: env `KAFKA_HARNESS_HTML=always`; failures always get one.
    pub fn html_for_passing(mut self, yes: bool) -> Self {
        self.html_passing = yes;
        self
    }

    /// One stderr line per case and per shrink step (default on; env
    /// `KAFKA_HARNESS_PROGRESS=0` turns it off). `cargo test` captures it unless
    /// `--nocapture`; nextest shows it for failing tests.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
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
        if !self.fail_points.is_empty() && !cfg!(feature = "fail") {
            return Err(Error::Config(format!(
                "fail points {:?} need kafka-harness's `fail` feature: \
                 kafka-harness = {{ version = \"…\", features = [\"fail\"] }}",
                self.fail_points
            )));
        }
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
            cleanup: crate::run::Cleanup::new(cluster.clone()),
            cluster,
            launch: self.launch(),
            name: self.resolved_name(),
            sink: self.sink.clone(),
            timing: self.timing,
            producer: Default::default(),
            payload: self.payload.clone(),
            fail_points: self.fail_points.clone(),
            cancel: Default::default(),
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
        let (result, _dir) = self.run_once(&runner, schedule, next_case_no())?;
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
    ///
    /// A replay in which any of the schedule's faults never fires is an error
    /// ([`Error::ReplayVacuous`]) naming the fault and the crash points that do exist: a
    /// regression test that injects nothing would pass for the wrong reason.
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
        let result = self.run_schedule(&schedule, worker)?;
        let skipped: Vec<String> = result
            .trace
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::FaultSkipped { fault } => Some(format!("fault `{fault}`")),
                _ => None,
            })
            .collect();
        if !skipped.is_empty() {
            let mut points: Vec<String> = result
                .trace
                .crash_point_hits()
                .into_iter()
                .map(|(p, n)| format!("`{p}` ({n})"))
                .collect();
            if points.is_empty() {
                points.push("none".into());
            }
            return Err(Error::ReplayVacuous {
                path: path.as_ref().to_path_buf(),
                faults: skipped,
                points,
            });
        }
        Ok(result)
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

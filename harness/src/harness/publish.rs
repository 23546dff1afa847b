//! After a check: its files for people and CI (run record, JUnit, HTML page), and the
//! `KAFKA_HARNESS_REPLAY` mode that replays a saved schedule in place of generation.

use std::path::Path;
use std::time::Instant;

use super::search::RunLog;
use super::{Harness, Outcome, Summary};
use crate::report::artifacts::{self, RunRecord, TestLocation, RECORD_VERSION};
use crate::report::Report;
use crate::schedule::Schedule;
use crate::worker::{Launch, WorkerCtx, WorkerError};
use crate::Result;

impl Harness {
    /// Where this harness writes its files.
    pub(super) fn reports_in(&self) -> std::path::PathBuf {
        self.report_dir
            .clone()
            .unwrap_or_else(crate::report::report_dir)
    }

    fn test_location(&self) -> Option<TestLocation> {
        match self.launch() {
            Launch::Test { test } => TestLocation::current(&test),
            Launch::Binary { .. } => None,
        }
    }

    /// A progress line on stderr (one per case and shrink step); `cargo test` shows it with
    /// `--nocapture`, and with a failing test's output.
    pub(super) fn progress_line(&self, line: &str) {
        if self.progress {
            eprintln!("kafka-harness: {}: {line}", self.resolved_name());
        }
    }

    /// Attach coverage and the replay command, write the files, name them in the outcome.
    /// A file that cannot be written is a warning on stderr, never a changed verdict.
    pub(super) fn publish(
        &self,
        outcome: Result<Outcome>,
        log: RunLog,
        started: Instant,
    ) -> Result<Outcome> {
        let dir = self.reports_in();
        let name = self.resolved_name();
        let test = self.test_location();
        let finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let warn = |e: crate::Error| {
            eprintln!("kafka-harness: could not write the reports of `{name}`: {e}")
        };
        match outcome {
            Err(e) => {
                if let Err(w) = artifacts::write_error(&dir, &name, self.guarantee, &e) {
                    warn(w);
                }
                Err(e)
            }
            Ok(Outcome::Passed(mut summary)) => {
                summary.coverage = Some(log.coverage);
                let Some((schedule, (verdict, trace), _)) = log.shown else {
                    return Ok(Outcome::Passed(summary));
                };
                let record = RunRecord {
                    version: RECORD_VERSION,
                    name: name.clone(),
                    guarantee: self.guarantee,
                    test,
                    finished_at,
                    elapsed_ms,
                    cases: summary.cases,
                    summary: summary.to_string(),
                    report: None,
                    schedule: Some(schedule),
                    verdict,
                    trace,
                    coverage: summary.coverage.clone(),
                    saved: None,
                    seed: log.seed,
                };
                match artifacts::write(&dir, &record, self.html_passing) {
                    Ok(w) => {
                        summary.html = w.html;
                        summary.junit = w.junit;
                    }
                    Err(e) => warn(e),
                }
                Ok(Outcome::Passed(summary))
            }
            Ok(Outcome::Failed(mut report)) => {
                if !log.coverage.points.is_empty() || log.coverage.cases > 0 {
                    report.coverage = Some(log.coverage);
                }
                report.replay_command = test
                    .as_ref()
                    .zip(report.saved.as_ref())
                    .map(|(t, p)| t.replay_command(p));
                let record = RunRecord {
                    version: RECORD_VERSION,
                    name: name.clone(),
                    guarantee: self.guarantee,
                    test,
                    finished_at,
                    elapsed_ms,
                    cases: report.cases_before_failure,
                    summary: report.summary_line(),
                    report: Some(report.to_string()),
                    schedule: Some(report.schedule.clone()),
                    verdict: report.verdict.clone(),
                    trace: report.trace.clone(),
                    coverage: report.coverage.clone(),
                    saved: report.saved.clone(),
                    seed: Some(report.seed.clone()),
                };
                match artifacts::write(&dir, &record, true) {
                    Ok(w) => report.html = w.html,
                    Err(e) => warn(e),
                }
                Ok(Outcome::Failed(report))
            }
        }
    }

    /// `KAFKA_HARNESS_REPLAY=<file>`: judge exactly that schedule (vacuous replays are errors,
    /// as in [`Harness::replay`]); a failure is reported as found, without shrinking.
    pub(super) fn replay_as_check<F>(
        &self,
        path: &Path,
        worker: &F,
        log: &mut RunLog,
    ) -> Result<Outcome>
    where
        F: Fn(&mut WorkerCtx) -> std::result::Result<(), WorkerError>,
    {
        eprintln!(
            "kafka-harness: KAFKA_HARNESS_REPLAY is set: replaying {} instead of generating cases",
            path.display()
        );
        let started = Instant::now();
        let schedule = Schedule::load(path, None)?;
        let result = self.replay(path, worker)?;
        log.coverage = crate::report::Coverage::new(&[], self.kinds);
        log.coverage.add(&result.trace);
        if result.verdict.holds() {
            let backend = Some(result.trace.case.backend);
            log.shown = Some((schedule, (result.verdict, result.trace), 0));
            return Ok(Outcome::Passed(Summary {
                name: self.resolved_name(),
                cases: 1,
                elapsed: started.elapsed(),
                backend,
                ..Summary::default()
            }));
        }
        Ok(Outcome::Failed(Box::new(Report {
            name: self.resolved_name(),
            schedule,
            seed: "replay".into(),
            verdict: result.verdict,
            trace: result.trace,
            reproduced: 1,
            confirm_runs: 1,
            shrink_steps: 0,
            cases_before_failure: 0,
            saved: Some(path.to_path_buf()),
            case_dir: None,
            coverage: None,
            html: None,
            replay_command: None,
        })))
    }
}

//! The files a check leaves for people and CI, in the report directory
//! (`KAFKA_HARNESS_REPORT_DIR`; default `kafka-harness/` in Cargo's target directory):
//!
//! ```text
//! <name>.html         the page: schedule, violations, swimlanes, coverage (failures always;
//!                     passing checks with KAFKA_HARNESS_HTML=always or Harness::html(true))
//! <name>.run.json     the run record the page was drawn from (the CLI lists, shows, renders
//!                     and diffs these)
//! junit/<name>.xml    one JUnit test suite with the check as its test case
//! ```

use std::path::{Path, PathBuf};

use quick_junit::{NonSuccessKind, Property, TestCase, TestCaseStatus, TestSuite};
use serde::{Deserialize, Serialize};

use super::coverage::Coverage;
use super::html::{render, Page};
use crate::check::{Guarantee, Verdict};
use crate::schedule::Schedule;
use crate::trace::Trace;
use crate::{Error, Result};

/// Format version of [`RunRecord`].
pub const RECORD_VERSION: u32 = 1;

/// Where a check's `#[test]` lives, so a saved schedule's replay command can be printed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestLocation {
    /// Cargo package (`-p`).
    pub package: String,
    /// Test target (`--test <target>`), or `None` for the library's unit tests (`--lib`).
    pub target: Option<String>,
    /// The test's path inside the binary (`--exact`).
    pub test: String,
}

impl TestLocation {
    /// The location of the test running in this process (`test` is the thread's test name),
    /// from the environment `cargo test` gives it. `None` outside `cargo test`.
    pub fn current(test: &str) -> Option<TestLocation> {
        let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from)?;
        let package = std::env::var("CARGO_PKG_NAME").ok().or_else(|| {
            manifest
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })?;
        let exe = std::env::current_exe().ok()?;
        let stem = exe.file_stem()?.to_string_lossy().into_owned();
        // Test binaries are `<target>-<16 hex digits>`.
        let target = match stem.rsplit_once('-') {
            Some((t, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                t.to_string()
            }
            _ => stem,
        };
        let lib = target == package.replace('-', "_");
        Some(TestLocation {
            package,
            target: (!lib).then_some(target),
            test: test.to_string(),
        })
    }

    /// `cargo test` for this test with `KAFKA_HARNESS_REPLAY` set: it replays `schedule`
    /// instead of generating cases.
    pub fn replay_command(&self, schedule: &Path) -> String {
        let target = match &self.target {
            Some(t) => format!("--test {}", shell_word(t)),
            None => "--lib".to_string(),
        };
        format!(
            "KAFKA_HARNESS_REPLAY={} cargo test -p {} {target} -- --exact {} --nocapture",
            shell_word(&schedule.display().to_string()),
            shell_word(&self.package),
            shell_word(&self.test)
        )
    }
}

/// A word safe to paste into a POSIX shell.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Everything a page, the JUnit file and the CLI need about one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// The check's name.
    pub name: String,
    /// The guarantee claimed.
    pub guarantee: Guarantee,
    /// Where its test lives.
    pub test: Option<TestLocation>,
    /// Unix seconds when the check finished.
    pub finished_at: u64,
    /// Wall time of the whole check, ms.
    pub elapsed_ms: u64,
    /// Cases generated (0 for a replay).
    pub cases: u32,
    /// One line: the summary, or the report's first violation.
    pub summary: String,
    /// The full text report (failures).
    pub report: Option<String>,
    /// The schedule drawn (the minimal one for a failure).
    pub schedule: Option<Schedule>,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its trace.
    pub trace: Trace,
    /// Coverage of the check.
    pub coverage: Option<Coverage>,
    /// The saved schedule file (failures).
    pub saved: Option<PathBuf>,
    /// Seed of the generator run.
    pub seed: Option<String>,
}

impl RunRecord {
    /// The page for this record.
    pub fn html(&self) -> String {
        let mut notes = vec![self.summary.clone()];
        if let Some(seed) = &self.seed {
            notes.push(format!("seed {seed}"));
        }
        if let Some(saved) = &self.saved {
            notes.push(format!("schedule saved to {}", saved.display()));
            if let Some(test) = &self.test {
                notes.push(format!("replay: {}", test.replay_command(saved)));
            }
        }
        render(&Page {
            name: &self.name,
            verdict: &self.verdict,
            trace: &self.trace,
            schedule: self.schedule.as_ref(),
            coverage: self.coverage.as_ref(),
            notes: &notes,
        })
    }

    /// The record at `path` (a `.run.json` file), with a clear error when it is not one.
    pub fn load(path: &Path) -> Result<RunRecord> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("reading a run record", path, e))?;
        let record: RunRecord = serde_json::from_str(&text).map_err(|e| {
            Error::Config(format!(
                "{} is not a kafka-harness run record (*.run.json): {e}",
                path.display()
            ))
        })?;
        if record.version != RECORD_VERSION {
            return Err(Error::Config(format!(
                "{} is a run record of format {}, this kafka-harness reads {RECORD_VERSION}",
                path.display(),
                record.version
            )));
        }
        Ok(record)
    }
}

/// The files written for one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The page, if one was written.
    pub html: Option<PathBuf>,
    /// The run record.
    pub record: Option<PathBuf>,
    /// The JUnit file.
    pub junit: Option<PathBuf>,
}

/// The report directory: `KAFKA_HARNESS_REPORT_DIR`, else `kafka-harness/` in Cargo's target
/// directory (`CARGO_TARGET_DIR`, or the `target` directory this test binary runs from), else
/// `target/kafka-harness` under the current directory.
pub fn report_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KAFKA_HARNESS_REPORT_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir).join("kafka-harness");
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(target) = exe
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "target"))
        {
            return target.join("kafka-harness");
        }
    }
    PathBuf::from("target").join("kafka-harness")
}

/// Write the record, the JUnit file and (when `html`) the page for `record` into `dir`.
pub fn write(dir: &Path, record: &RunRecord, html: bool) -> Result<Written> {
    let file = crate::run::sanitize(&record.name);
    std::fs::create_dir_all(dir.join("junit"))
        .map_err(|e| Error::io("creating the report directory", dir, e))?;
    let mut written = Written::default();
    if html {
        let path = dir.join(format!("{file}.html"));
        std::fs::write(&path, record.html())
            .map_err(|e| Error::io("writing the HTML report", &path, e))?;
        written.html = Some(path);
    }
    let path = dir.join(format!("{file}.run.json"));
    let json = serde_json::to_string(record)
        .map_err(|e| Error::Config(format!("encoding the run record: {e}")))?;
    std::fs::write(&path, json).map_err(|e| Error::io("writing the run record", &path, e))?;
    written.record = Some(path);
    let path = dir.join("junit").join(format!("{file}.xml"));
    let xml = junit(record, &written)?;
    std::fs::write(&path, xml).map_err(|e| Error::io("writing the JUnit file", &path, e))?;
    written.junit = Some(path);
    Ok(written)
}

/// A check that could not run (no cluster, a broken worker): its JUnit file says so, as an
/// error rather than a failure.
pub fn write_error(dir: &Path, name: &str, guarantee: Guarantee, error: &Error) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("junit"))
        .map_err(|e| Error::io("creating the report directory", dir, e))?;
    let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
    status.set_message(format!("kafka-harness could not run `{name}`: {error}"));
    status.set_type("harness-error");
    let mut case = TestCase::new(name, status);
    case.set_classname(format!("kafka-harness.{guarantee}"));
    let xml = suite_xml(case)?;
    let path = dir
        .join("junit")
        .join(format!("{}.xml", crate::run::sanitize(name)));
    std::fs::write(&path, xml).map_err(|e| Error::io("writing the JUnit file", &path, e))?;
    Ok(path)
}

/// The JUnit XML of one check: a suite `kafka-harness` holding one test case named after the
/// check (classname `kafka-harness.<guarantee>`), its failure message the report's first
/// violation, its text the whole report, the artifact paths in `system-out`, and coverage
/// and run facts as properties.
pub fn junit(record: &RunRecord, written: &Written) -> Result<String> {
    let status = if record.verdict.holds() {
        TestCaseStatus::success()
    } else {
        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
        s.set_message(record.summary.clone());
        if let Some(kind) = record.verdict.primary_kind() {
            s.set_type(format!("{kind:?}"));
        }
        if let Some(report) = &record.report {
            s.set_description(report.clone());
        }
        s
    };
    let mut case = TestCase::new(record.name.clone(), status);
    case.set_classname(format!("kafka-harness.{}", record.guarantee));
    case.set_time(std::time::Duration::from_millis(record.elapsed_ms));
    let mut out = Vec::new();
    if let Some(p) = &written.html {
        out.push(format!("html: {}", p.display()));
    }
    if let Some(p) = &record.saved {
        out.push(format!("schedule: {}", p.display()));
        if let Some(t) = &record.test {
            out.push(format!("replay: {}", t.replay_command(p)));
        }
    }
    if let Some(p) = &written.record {
        out.push(format!("run record: {}", p.display()));
    }
    if !out.is_empty() {
        case.set_system_out(out.join("\n"));
    }
    case.add_property(Property::new("cases", record.cases.to_string()));
    case.add_property(Property::new(
        "backend",
        record.trace.case.backend.to_string(),
    ));
    if let Some(seed) = &record.seed {
        case.add_property(Property::new("seed", seed.clone()));
    }
    if let Some(cov) = &record.coverage {
        case.add_property(Property::new("coverage", cov.to_string()));
        for p in &cov.points {
            let fired: Vec<String> = p.fired.iter().map(|(k, n)| format!("{k}={n}")).collect();
            case.add_property(Property::new(
                format!("point.{}", p.point),
                format!("hits={} {}", p.hits, fired.join(" ")),
            ));
        }
        let never: Vec<String> = cov
            .never_exercised()
            .into_iter()
            .map(|(p, k)| format!("{p}×{k}"))
            .collect();
        case.add_property(Property::new("never-exercised", never.join(", ")));
    }
    suite_xml(case)
}

fn suite_xml(case: TestCase) -> Result<String> {
    let mut suite = TestSuite::new("kafka-harness");
    suite.add_test_case(case);
    let mut report = quick_junit::Report::new("kafka-harness");
    report.add_test_suite(suite);
    report
        .to_string()
        .map_err(|e| Error::Config(format!("encoding JUnit XML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_commands_quote_what_the_shell_would_split() {
        let t = TestLocation {
            package: "orders".into(),
            target: Some("harness".into()),
            test: "consumer::keeps_at_least_once".into(),
        };
        assert_eq!(
            t.replay_command(Path::new("/repo/kafka-harness-failures/a b.json")),
            "KAFKA_HARNESS_REPLAY='/repo/kafka-harness-failures/a b.json' cargo test -p orders --test harness -- --exact consumer::keeps_at_least_once --nocapture"
        );
        let lib = TestLocation { target: None, ..t };
        assert!(lib
            .replay_command(Path::new("x.json"))
            .contains(" --lib -- "));
    }
}

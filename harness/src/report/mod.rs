//! What a failure looks like to the person who has to fix it: the minimal schedule and its
//! seed first, then the violations in words (capped per kind), then a per-partition timeline,
//! then how to replay it. [`html`] draws the same run as a page, [`artifacts`] writes the
//! files CI keeps (page, run record, JUnit), [`coverage`] says what a check exercised.

pub mod artifacts;
pub mod coverage;
pub mod html;

pub use artifacts::{report_dir, RunRecord, TestLocation};
pub use coverage::{Coverage, PointCoverage};

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::check::{Verdict, ViolationKind};
use crate::schedule::Schedule;
use crate::trace::{EventKind, Exit, Incarnation, KillReason, RebalancePhase, Trace};

/// Violations shown per kind before "… and N more".
pub const PER_KIND_CAP: usize = 5;

/// A failed guarantee, shrunk, confirmed and saved.
#[derive(Debug, Clone)]
pub struct Report {
    /// The harness (test) name.
    pub name: String,
    /// The smallest schedule found that fails.
    pub schedule: Schedule,
    /// Seed of the generator run (hex), to regenerate the same cases.
    pub seed: String,
    /// The verdict of the minimal schedule's failing run.
    pub verdict: Verdict,
    /// That run's trace.
    pub trace: Trace,
    /// Of `confirm_runs` re-runs of the minimal schedule, how many failed the same way.
    pub reproduced: u32,
    /// Re-runs made to confirm.
    pub confirm_runs: u32,
    /// Shrink steps that were accepted.
    pub shrink_steps: u32,
    /// Cases run before the first failure.
    pub cases_before_failure: u32,
    /// Where the schedule was saved.
    pub saved: Option<PathBuf>,
    /// The failing run's case directory (worker logs, traces, sink), kept for inspection.
    pub case_dir: Option<PathBuf>,
    /// What the check exercised before it failed.
    pub coverage: Option<Coverage>,
    /// The HTML page of this failure, once written.
    pub html: Option<PathBuf>,
    /// `cargo test` that replays the saved schedule for its test, when known.
    pub replay_command: Option<String>,
}

impl Report {
    /// The kind the report is about.
    pub fn kind(&self) -> Option<ViolationKind> {
        self.verdict.primary_kind()
    }

    /// One line for CI: the claim and the first violation.
    pub fn summary_line(&self) -> String {
        let first = self
            .verdict
            .violations
            .first()
            .map(|v| v.to_string())
            .unwrap_or_default();
        format!(
            "`{}` does NOT keep {}: {first}",
            self.name, self.verdict.guarantee
        )
    }

    /// Whether the minimal schedule failed in fewer than half of its confirmation re-runs.
    pub fn timing_dependent(&self) -> bool {
        self.confirm_runs > 0 && self.reproduced * 2 < self.confirm_runs
    }

    /// Plain words for a failure that does not reproduce reliably: what it depends on and
    /// how to make it likelier. `None` when it reproduces.
    pub fn timing_advice(&self) -> Option<String> {
        if !self.timing_dependent() {
            return None;
        }
        let orchestrated = self.schedule.faults.iter().any(|f| {
            matches!(
                f,
                crate::Fault::KillAfterEffects { .. }
                    | crate::Fault::KillAfterMillis { .. }
                    | crate::Fault::Rebalance { .. }
                    | crate::Fault::RebalanceAt { .. }
                    | crate::Fault::RebalanceAfter { .. }
                    | crate::Fault::BrokerRestart { .. }
            )
        });
        let cluster = self
            .schedule
            .faults
            .iter()
            .any(|f| f.cluster_fault().is_some());
        let mut s = format!(
            "TIMING-DEPENDENT: this schedule failed in {} of {} re-runs. The failure is real (the trace below shows it) but depends on timing the schedule does not pin down",
            self.reproduced, self.confirm_runs
        );
        if cluster && !orchestrated {
            s.push_str(
                ": the broker or network fault is put in place at the schedule's point (the worker waits there), but when the client notices it, how long its requests time out and when the group evicts it are timing. To make it likelier: trigger it at a later point inside the window that matters (`broker-at`/`network-at` a crash point of yours), lengthen it, or replay it several times (`KAFKA_HARNESS_CONFIRM_RUNS`).",
            );
        } else if orchestrated {
            s.push_str(
                ": the harness's kill/rebalance lands wherever the worker is when the harness notices. To make it likelier: replay it several times (`KAFKA_HARNESS_CONFIRM_RUNS`), or place a crash point where the race happens (`kafka_harness` crash points fire at an exact hit) — e.g. right after an async commit is handed to the client, or after `poll` returns.",
            );
        } else {
            s.push_str(
                ": typically an asynchronous commit or auto-commit racing the crash. To make it likelier: crash after the commit's result is known (a point after a synchronous commit, or lower `auto.commit.interval.ms`), or replay it several times (`KAFKA_HARNESS_CONFIRM_RUNS`).",
            );
        }
        Some(s)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "kafka-harness: `{}` does NOT keep {}",
            self.name, v.guarantee
        )?;
        writeln!(
            f,
            "minimal schedule ({} fault(s), {} message(s), {} partition(s)); seed {}; failed {}/{} confirmation re-runs; {} shrink step(s) after {} case(s):",
            self.schedule.faults.len(),
            self.schedule.workload.messages,
            self.schedule.workload.partitions,
            self.seed,
            self.reproduced,
            self.confirm_runs,
            self.shrink_steps,
            self.cases_before_failure
        )?;
        for (i, fault) in self.schedule.faults.iter().enumerate() {
            writeln!(f, "  {}. {fault}", i + 1)?;
        }
        if let Some(advice) = self.timing_advice() {
            writeln!(f, "\n{advice}")?;
        }
        writeln!(f, "\nviolations:")?;
        let mut per_kind: BTreeMap<ViolationKind, usize> = BTreeMap::new();
        for violation in &v.violations {
            let n = per_kind.entry(violation.kind()).or_insert(0);
            *n += 1;
            if *n <= PER_KIND_CAP {
                writeln!(f, "  - {violation}")?;
            }
        }
        for (kind, n) in per_kind {
            if n > PER_KIND_CAP {
                writeln!(f, "  … and {} more {kind:?}", n - PER_KIND_CAP)?;
            }
        }
        writeln!(f, "\ntimeline:\n{}", timeline(&self.trace))?;
        if let Some(path) = &self.saved {
            writeln!(f, "schedule saved to {}", path.display())?;
            writeln!(
                f,
                "replay it as a regression test:\n{}",
                regression_snippet(&self.name, path, v.guarantee)
            )?;
        }
        if let Some(cmd) = &self.replay_command {
            writeln!(f, "or run its test on it:\n    {cmd}")?;
        }
        if let Some(dir) = &self.case_dir {
            writeln!(f, "worker logs and traces: {}", dir.display())?;
        }
        if let Some(cov) = &self.coverage {
            writeln!(f, "coverage of the {} case(s) before it: {cov}", cov.cases)?;
        }
        if let Some(html) = &self.html {
            writeln!(f, "HTML report: {}", html.display())?;
        }
        Ok(())
    }
}

/// A test to paste into the suite so the failure stays fixed.
pub fn regression_snippet(
    name: &str,
    path: &std::path::Path,
    guarantee: crate::check::Guarantee,
) -> String {
    let g = format!("{guarantee:?}");
    let fn_name: String = name
        .rsplit("::")
        .next()
        .unwrap_or(name)
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "    #[test]\n    fn {fn_name}_regression() {{\n        kafka_harness::Harness::new(kafka_harness::Guarantee::{g})\n            .assert_replay(\"{}\", my_consumer);\n    }}",
        path.display()
    )
}

fn ids(list: &[i64]) -> String {
    list.iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Per partition: what was produced, then per incarnation what it polled, applied and
/// committed, and how it ended, in time order. Offsets, not ids, so commits line up.
pub fn timeline(trace: &Trace) -> String {
    let mut out = String::new();
    let mut partitions: Vec<i32> = trace.produced().map(|(m, _)| m.partition).collect();
    partitions.sort();
    partitions.dedup();
    for p in partitions {
        let produced: Vec<i64> = trace
            .produced()
            .filter(|(m, _)| m.partition == p)
            .map(|(m, _)| m.offset)
            .collect();
        let _ = writeln!(out, "partition {p}: produced offsets {}", ids(&produced));
        // (inc, label) runs in time order, consecutive same labels merged.
        let mut lines: BTreeMap<Incarnation, Vec<(String, Vec<i64>)>> = BTreeMap::new();
        let mut push = |inc: Incarnation, label: String, offset: Option<i64>| {
            let line = lines.entry(inc).or_default();
            match (line.last_mut(), offset) {
                (Some((l, offs)), Some(o)) if *l == label => offs.push(o),
                _ => line.push((label, offset.into_iter().collect())),
            }
        };
        for e in &trace.events {
            match &e.kind {
                EventKind::Polled { msg } if msg.partition == p => {
                    push(e.inc, "polled".into(), Some(msg.offset))
                }
                EventKind::Applied { msg } if msg.partition == p => {
                    push(e.inc, "applied".into(), Some(msg.offset))
                }
                EventKind::SinkFailed {
                    msg,
                    write,
                    failure,
                } if msg.partition == p => push(
                    e.inc,
                    format!("sink write #{write} failed ({failure:?}) at"),
                    Some(msg.offset),
                ),
                EventKind::Committed { offsets, mode, .. } => {
                    for o in offsets.iter().filter(|o| o.partition == p) {
                        push(e.inc, format!("committed ({mode:?})"), Some(o.offset));
                    }
                }
                EventKind::BrokerCommitted { offsets } => {
                    for (_, o) in offsets.iter().filter(|(q, _)| *q == p) {
                        push(0, "broker says committed".into(), Some(o.unwrap_or(-1)));
                    }
                }
                EventKind::BrokerCommitObserved { offsets, since_us } => {
                    for o in offsets.iter().filter(|o| o.partition == p) {
                        push(
                            0,
                            format!(
                                "broker commit seen in {:.0}–{:.0} ms:",
                                *since_us as f64 / 1000.0,
                                e.at_us as f64 / 1000.0
                            ),
                            Some(o.offset),
                        );
                    }
                }
                EventKind::RebalanceRequested { point, hit } => push(
                    e.inc,
                    format!("⇄ waits at `{point}` #{hit} for a rebalance"),
                    None,
                ),
                EventKind::Paused {
                    point,
                    hit,
                    millis,
                    after,
                    ..
                } => push(
                    e.inc,
                    format!(
                        "⏸ paused at `{point}` #{hit}{} for {millis} ms",
                        after_anchor(after)
                    ),
                    None,
                ),
                EventKind::Resumed { paused_ms } => {
                    push(e.inc, format!("▶ continued after {paused_ms} ms"), None)
                }
                // A call that held the worker for a second or more explains a slow or quiet
                // stretch; short ones are noise.
                EventKind::ClientCallEnded { call, ms, error } if *ms >= 1000 => push(
                    e.inc,
                    format!(
                        "⌛ `{call}` blocked {:.1} s{}",
                        *ms as f64 / 1000.0,
                        error
                            .as_ref()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ),
                    None,
                ),
                EventKind::CrashedAfter { after, point, hit } => push(
                    e.inc,
                    format!("✗ crashed at `{point}` #{hit} after `{after}`"),
                    None,
                ),
                EventKind::Rebalanced { phase, partitions } if partitions.contains(&p) => push(
                    e.inc,
                    if *phase == RebalancePhase::Revoke {
                        "revoked"
                    } else {
                        "assigned"
                    }
                    .into(),
                    None,
                ),
                EventKind::Crashed { point, hit } => {
                    push(e.inc, format!("✗ crashed at `{point}` #{hit}"), None)
                }
                EventKind::Killed { reason } => push(
                    e.inc,
                    match reason {
                        KillReason::AfterEffects { observed, .. } => {
                            format!("✗ killed after {observed} effects")
                        }
                        KillReason::AfterMillis { millis } => format!("✗ killed after {millis} ms"),
                        other => format!("✗ killed ({other:?})"),
                    },
                    None,
                ),
                EventKind::Exited { exit } if !matches!(exit, Exit::Signal { .. }) => {
                    push(e.inc, format!("exited: {exit:?}"), None)
                }
                _ => {}
            }
        }
        for (inc, runs) in lines {
            let who = if inc == 0 {
                "  harness".to_string()
            } else {
                format!("  inc {inc}  ")
            };
            let body: Vec<String> = runs
                .into_iter()
                .map(|(label, offs)| {
                    if offs.is_empty() {
                        label
                    } else {
                        format!("{label} {}", ids(&offs))
                    }
                })
                .collect();
            let _ = writeln!(out, "{who}: {}", body.join(" · "));
        }
    }
    for e in &trace.events {
        match &e.kind {
            EventKind::Stuck { lag, waited_ms } => {
                let _ = writeln!(out, "stuck: lag {lag:?} after {waited_ms} ms");
            }
            EventKind::IdleStopped { worker, idle_ms } => {
                let _ = writeln!(
                    out,
                    "incarnation {worker} idle for {idle_ms} ms with lag left: stopped at {:.1} ms",
                    e.at_us as f64 / 1000.0
                );
            }
            EventKind::RebalanceStarted { state } => {
                let _ = writeln!(
                    out,
                    "second member joined; group {state} at {:.1} ms",
                    e.at_us as f64 / 1000.0
                );
            }
            EventKind::BrokerFault {
                broker,
                action,
                role,
            } => {
                let _ = writeln!(
                    out,
                    "broker {broker}{}: {action} at {:.1} ms",
                    role.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
                    e.at_us as f64 / 1000.0
                );
            }
            EventKind::LinkFault { action, role, .. } => {
                let _ = writeln!(
                    out,
                    "the worker's links to {role}: {action} at {:.1} ms",
                    e.at_us as f64 / 1000.0
                );
            }
            _ => {}
        }
    }
    if !trace.phases.is_empty() {
        let phases: Vec<String> = trace.phases.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(out, "time: {}", phases.join(" · "));
    }
    out
}

/// " after `revoke`" for a fault counted from an anchor, else nothing.
pub(crate) fn after_anchor(after: &Option<String>) -> String {
    after
        .as_ref()
        .map(|a| format!(" after `{a}`"))
        .unwrap_or_default()
}

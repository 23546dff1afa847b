//! What a check exercised: which crash points exist, how often each was hit and crashed at,
//! which fault kinds fired, and which (point × fault kind) pairs were never tried — the
//! question every "it passed" raises. Pure: built from traces, no I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::schedule::FaultKinds;
use crate::trace::{EventKind, KillReason, Trace};

/// One crash point over a whole check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointCoverage {
    /// The point's name.
    pub point: String,
    /// The most hits one incarnation of the fault-free discovery run made (0: the point
    /// only showed up in faulted cases, e.g. one inside a revoke handler).
    pub discovered_hits: u32,
    /// Hits over every case.
    pub hits: u64,
    /// Faults that fired at this point, per point-targeting kind ([`POINT_KINDS`]).
    pub fired: BTreeMap<String, u32>,
}

/// Coverage of one check (the discovery run and every generated case).
///
/// ```
/// use kafka_harness::report::Coverage;
/// use kafka_harness::FaultKinds;
///
/// let cov = Coverage::new(&[("after-poll".into(), 3)], FaultKinds::default());
/// // Nothing ran yet: the point exists and no fault was tried at it.
/// assert_eq!(cov.never_exercised(), vec![("after-poll".to_string(), "crash".to_string())]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Cases counted (traces added).
    pub cases: u32,
    /// Every crash point seen, by name.
    pub points: Vec<PointCoverage>,
    /// Faults that fired over every case, per kind: the point kinds and `kill`,
    /// `sink-failure` (failed writes), `second-member` (rebalances caused), `broker-<action>`.
    pub kinds: BTreeMap<String, u32>,
    /// The point-targeting kinds the check could generate (from its [`FaultKinds`]).
    pub enabled: Vec<String>,
}

/// The fault kinds that fire at a crash point.
pub const POINT_KINDS: [&str; 5] = [
    "crash",
    "crash-after",
    "rebalance-at",
    "pause-at",
    "pause-after",
];

impl Coverage {
    /// Coverage before any case: the points discovery found, the kinds `kinds` allows.
    pub fn new(discovered: &[(String, u32)], kinds: FaultKinds) -> Self {
        let mut enabled = Vec::new();
        if kinds.crashes {
            enabled.push("crash".to_string());
        }
        if kinds.crashes && (kinds.sink_failures || kinds.rebalances) {
            enabled.push("crash-after".to_string());
        }
        if kinds.rebalances {
            enabled.push("rebalance-at".to_string());
        }
        if kinds.pauses {
            enabled.push("pause-at".to_string());
        }
        if kinds.pauses && kinds.rebalances {
            enabled.push("pause-after".to_string());
        }
        let points = discovered
            .iter()
            .map(|(point, hits)| PointCoverage {
                point: point.clone(),
                discovered_hits: *hits,
                ..PointCoverage::default()
            })
            .collect();
        Coverage {
            cases: 0,
            points,
            kinds: BTreeMap::new(),
            enabled,
        }
    }

    fn point(&mut self, name: &str) -> &mut PointCoverage {
        let i = match self.points.binary_search_by(|p| p.point.as_str().cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                self.points.insert(
                    i,
                    PointCoverage {
                        point: name.to_string(),
                        ..PointCoverage::default()
                    },
                );
                i
            }
        };
        &mut self.points[i]
    }

    fn fired_at(&mut self, point: &str, kind: &str) {
        *self.point(point).fired.entry(kind.to_string()).or_insert(0) += 1;
        *self.kinds.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Count one case's trace.
    pub fn add(&mut self, trace: &Trace) {
        self.cases += 1;
        self.points.sort_by(|a, b| a.point.cmp(&b.point));
        let count = |kinds: &mut BTreeMap<String, u32>, kind: String| {
            *kinds.entry(kind).or_insert(0) += 1;
        };
        for e in &trace.events {
            match &e.kind {
                EventKind::CrashPointHit { point, .. } => self.point(point).hits += 1,
                EventKind::Crashed { point, .. } => self.fired_at(point, "crash"),
                EventKind::CrashedAfter { point, .. } => self.fired_at(point, "crash-after"),
                EventKind::RebalanceRequested { point, .. } => self.fired_at(point, "rebalance-at"),
                EventKind::Paused {
                    point, after: None, ..
                } => self.fired_at(point, "pause-at"),
                EventKind::Paused { point, .. } => self.fired_at(point, "pause-after"),
                EventKind::Killed { reason } if *reason != KillReason::StopTimeout => {
                    count(&mut self.kinds, "kill".into())
                }
                EventKind::SinkFailed { .. } => count(&mut self.kinds, "sink-failure".into()),
                EventKind::Started { primary: false, .. } => {
                    count(&mut self.kinds, "second-member".into())
                }
                EventKind::BrokerFault { action, .. } => {
                    count(&mut self.kinds, format!("broker-{action}"))
                }
                EventKind::LinkFault { action, .. } if action != "heal" => {
                    count(&mut self.kinds, format!("network-{action}"))
                }
                _ => {}
            }
        }
    }

    /// (point, kind) pairs the check could generate but never fired, in point order.
    pub fn never_exercised(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in &self.points {
            for kind in &self.enabled {
                if p.fired.get(kind).copied().unwrap_or(0) == 0 {
                    out.push((p.point.clone(), kind.clone()));
                }
            }
        }
        out
    }

    /// Whether rebalances were caused (`rebalance-at` fired) but no case ever hit the
    /// `revoke` point, so no fault counted from a revoke could fire: what a consumer with its
    /// own context shows until its revoke handler calls `crash_point!("revoke")`.
    pub fn revoke_never_seen(&self) -> bool {
        let requested = self
            .points
            .iter()
            .any(|p| p.fired.get("rebalance-at").copied().unwrap_or(0) > 0);
        let follow_ups = self
            .enabled
            .iter()
            .any(|k| k == "crash-after" || k == "pause-after");
        let revoked = self
            .points
            .iter()
            .any(|p| p.point == crate::worker::points::REVOKE && p.hits > 0);
        requested && follow_ups && !revoked
    }

    /// Points at which some fault fired.
    pub fn points_faulted(&self) -> usize {
        self.points.iter().filter(|p| !p.fired.is_empty()).count()
    }

    /// A table, one line per point: hits, and what fired there.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = self
            .points
            .iter()
            .map(|p| p.point.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = write!(out, "{:width$}  discovered  hits", "point");
        for k in POINT_KINDS {
            let _ = write!(out, "  {k:>12}");
        }
        out.push('\n');
        for p in &self.points {
            let _ = write!(
                out,
                "{:width$}  {:>10}  {:>4}",
                p.point, p.discovered_hits, p.hits
            );
            for k in POINT_KINDS {
                let cell = if self.enabled.iter().any(|e| e == k) {
                    p.fired.get(k).copied().unwrap_or(0).to_string()
                } else {
                    "off".to_string()
                };
                let _ = write!(out, "  {cell:>12}");
            }
            out.push('\n');
        }
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "faults fired over {} case(s): {}",
            self.cases,
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            }
        );
        out
    }
}

impl std::fmt::Display for Coverage {
    /// One line: "faults at 4/6 point(s); never tried: `a` × crash-after, …".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "faults at {}/{} crash point(s)",
            self.points_faulted(),
            self.points.len()
        )?;
        if self.revoke_never_seen() {
            write!(
                f,
                "; rebalances were caused but no case hit the `revoke` point, so no fault counted \
                 from a revoke could fire (a consumer with its own context: call \
                 `kafka_harness::crash_point!(\"revoke\")` first in its revoke handler)"
            )?;
        }
        let never = self.never_exercised();
        if never.is_empty() {
            return write!(f, "; every (point × kind) pair tried");
        }
        let shown: Vec<String> = never
            .iter()
            .take(6)
            .map(|(p, k)| format!("`{p}` × {k}"))
            .collect();
        write!(f, "; never tried: {}", shown.join(", "))?;
        if never.len() > shown.len() {
            write!(f, " … and {} more", never.len() - shown.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::BackendKind;
    use crate::trace::{CaseInfo, Event, SinkSemantics};

    fn trace(kinds: Vec<EventKind>) -> Trace {
        let mut t = Trace::new(CaseInfo {
            topic: "t".into(),
            group: "g".into(),
            partitions: 1,
            backend: BackendKind::Embedded,
            sink: SinkSemantics::Ledger,
        });
        t.events = kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                at_us: i as u64,
                inc: 1,
                kind,
            })
            .collect();
        t
    }

    fn hit(point: &str, hit: u32) -> EventKind {
        EventKind::CrashPointHit {
            point: point.into(),
            hit,
        }
    }

    #[test]
    fn counts_hits_and_fired_faults_per_point_and_names_the_pairs_never_tried() {
        let kinds = FaultKinds {
            rebalances: true,
            ..FaultKinds::default()
        };
        let mut cov = Coverage::new(&[("a".into(), 2), ("b".into(), 1)], kinds);
        assert_eq!(cov.enabled, vec!["crash", "crash-after", "rebalance-at"]);
        cov.add(&trace(vec![
            hit("a", 1),
            hit("a", 2),
            EventKind::Crashed {
                point: "a".into(),
                hit: 2,
            },
        ]));
        cov.add(&trace(vec![
            hit("b", 1),
            EventKind::RebalanceRequested {
                point: "b".into(),
                hit: 1,
            },
            hit("revoke", 1),
            EventKind::CrashedAfter {
                after: "revoke".into(),
                point: "revoke".into(),
                hit: 1,
            },
            EventKind::Killed {
                reason: KillReason::StopTimeout,
            },
        ]));
        assert_eq!(cov.cases, 2);
        let names: Vec<&str> = cov.points.iter().map(|p| p.point.as_str()).collect();
        assert_eq!(names, ["a", "b", "revoke"]);
        assert_eq!(cov.points[0].hits, 2);
        assert_eq!(cov.points[2].discovered_hits, 0);
        assert_eq!(cov.kinds.get("crash"), Some(&1));
        assert_eq!(cov.kinds.get("kill"), None, "a stop timeout is not a fault");
        assert_eq!(
            cov.never_exercised(),
            vec![
                ("a".to_string(), "crash-after".to_string()),
                ("a".to_string(), "rebalance-at".to_string()),
                ("b".to_string(), "crash".to_string()),
                ("b".to_string(), "crash-after".to_string()),
                ("revoke".to_string(), "crash".to_string()),
                ("revoke".to_string(), "rebalance-at".to_string()),
            ]
        );
        assert_eq!(cov.points_faulted(), 3);
        let line = cov.to_string();
        assert!(
            line.starts_with("faults at 3/3 crash point(s); never tried: `a` × crash-after"),
            "{line}"
        );
        let table = cov.table();
        assert!(table.contains("revoke"), "{table}");
        assert!(
            table.contains("faults fired over 2 case(s): crash 1, crash-after 1, rebalance-at 1"),
            "{table}"
        );
    }

    #[test]
    fn rebalances_without_a_revoke_hit_say_why_follow_up_faults_never_fired() {
        let kinds = FaultKinds {
            rebalances: true,
            ..FaultKinds::default()
        };
        let requested = |point: &str| EventKind::RebalanceRequested {
            point: point.into(),
            hit: 1,
        };
        // A consumer with its own context: the rebalance fires, no `revoke` point is hit.
        let mut own = Coverage::new(&[("a".into(), 2)], kinds);
        own.add(&trace(vec![hit("a", 1), requested("a")]));
        assert!(own.revoke_never_seen());
        assert!(
            own.to_string().contains("no case hit the `revoke` point"),
            "{own}"
        );
        // The same with its handler's `crash_point!("revoke")`: nothing to say.
        let mut marked = Coverage::new(&[("a".into(), 2)], kinds);
        marked.add(&trace(vec![hit("a", 1), requested("a"), hit("revoke", 1)]));
        assert!(!marked.revoke_never_seen());
        assert!(!marked.to_string().contains("`revoke` point"), "{marked}");
        // No rebalance caused yet (or rebalances off): nothing to say either.
        let mut quiet = Coverage::new(&[("a".into(), 2)], kinds);
        quiet.add(&trace(vec![hit("a", 1)]));
        assert!(!quiet.revoke_never_seen());
        let mut off = Coverage::new(&[("a".into(), 2)], FaultKinds::default());
        off.add(&trace(vec![hit("a", 1), requested("a")]));
        assert!(!off.revoke_never_seen());
    }

    #[test]
    fn kinds_that_are_off_are_never_reported_missing() {
        let cov = Coverage::new(&[("a".into(), 1)], FaultKinds::default());
        assert_eq!(cov.enabled, vec!["crash"]);
        assert!(cov.table().contains("off"));
    }
}

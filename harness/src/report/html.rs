//! One self-contained HTML page per run (no network, no CDN): the schedule, the violations
//! in words, a per-partition swimlane timeline drawn as SVG (incarnations as lanes; polls,
//! effects, commits — the consumer's and those read from the broker —, rebalances, faults and
//! the crash), the violating messages highlighted, hover details, and the coverage table.
//! Pure: a string from a trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::coverage::{Coverage, POINT_KINDS};
use crate::check::Verdict;
use crate::schedule::Schedule;
use crate::trace::{EventKind, Incarnation, KillReason, RebalancePhase, Trace};

/// What a page shows. Only `name`, `verdict` and `trace` are required.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The check's name.
    pub name: &'a str,
    /// The verdict of the run drawn.
    pub verdict: &'a Verdict,
    /// Its trace.
    pub trace: &'a Trace,
    /// The schedule it ran (the minimal one for a failure).
    pub schedule: Option<&'a Schedule>,
    /// Coverage of the whole check.
    pub coverage: Option<&'a Coverage>,
    /// Extra lines shown under the title (seed, confirmation rate, saved paths).
    pub notes: &'a [String],
}

/// Plot width of a swimlane chart, in SVG units.
const PLOT: f64 = 960.0;
/// Left margin for lane labels.
const LABELS: f64 = 150.0;
/// Height of one lane.
const LANE: f64 = 34.0;
/// Closest two marks in one lane are drawn.
const MIN_GAP: f64 = 11.0;

/// Escape text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The whole page.
pub fn render(page: &Page<'_>) -> String {
    let v = page.verdict;
    let holds = v.holds();
    let mut out = String::new();
    let title = format!(
        "{}: {} {}",
        page.name,
        if holds { "keeps" } else { "does NOT keep" },
        v.guarantee
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"generator\" content=\"kafka-harness\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(
        out,
        "<h1 id=\"verdict\" class=\"{}\">{}</h1>",
        if holds { "holds" } else { "fails" },
        escape(&title)
    );
    for note in page.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    if let Some(schedule) = page.schedule {
        let _ = writeln!(
            out,
            "<h2>Schedule</h2><p>{} message(s), {} partition(s), {} key(s)</p><ol id=\"schedule\">",
            schedule.workload.messages, schedule.workload.partitions, schedule.workload.keys
        );
        for f in &schedule.faults {
            let _ = writeln!(out, "<li>{}</li>", escape(&f.to_string()));
        }
        if schedule.faults.is_empty() {
            out.push_str("<li>no faults</li>\n");
        }
        out.push_str("</ol>\n");
    }
    out.push_str("<h2>Violations</h2>\n<ul id=\"violations\">\n");
    for violation in &v.violations {
        let msg = violation
            .message()
            .map(|m| format!(" data-msg=\"{}\"", m.id))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<li class=\"violation\"{msg}><b>{:?}</b> {}</li>",
            violation.kind(),
            escape(&violation.to_string())
        );
    }
    if holds {
        out.push_str("<li class=\"none\">none: the guarantee held</li>\n");
    }
    out.push_str("</ul>\n<h2>Timeline</h2>\n");
    out.push_str(LEGEND);
    let violating: BTreeSet<u64> = v
        .violations
        .iter()
        .filter_map(|x| x.message().map(|m| m.id))
        .collect();
    for p in partitions(page.trace) {
        out.push_str(&swimlanes(page.trace, p, &violating));
    }
    let orchestration: Vec<String> = page
        .trace
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::RebalanceStarted { state } => Some(format!(
                "{}: second member joined; group {state}",
                ms(e.at_us)
            )),
            EventKind::BrokerFault {
                broker,
                action,
                role,
            } => Some(format!(
                "{}: broker {broker}{} {action}",
                ms(e.at_us),
                role.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            )),
            EventKind::LinkFault { action, role, .. } => Some(format!(
                "{}: the worker's links to {role}: {action}",
                ms(e.at_us)
            )),
            EventKind::Stuck { lag, waited_ms } => Some(format!(
                "{}: stuck, lag {lag:?} after {waited_ms} ms",
                ms(e.at_us)
            )),
            EventKind::FaultSkipped { fault } => {
                Some(format!("{}: fault never fired: {fault}", ms(e.at_us)))
            }
            EventKind::IdleStopped { worker, idle_ms } => Some(format!(
                "{}: incarnation {worker} idle for {idle_ms} ms with lag left: stopped",
                ms(e.at_us)
            )),
            _ => None,
        })
        .collect();
    if !orchestration.is_empty() {
        out.push_str("<ul id=\"orchestration\">\n");
        for line in orchestration {
            let _ = writeln!(out, "<li>{}</li>", escape(&line));
        }
        out.push_str("</ul>\n");
    }
    if !page.trace.phases.is_empty() {
        let phases: Vec<String> = page.trace.phases.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            out,
            "<p id=\"phases\">time: {}</p>",
            escape(&phases.join(" · "))
        );
    }
    if let Some(cov) = page.coverage {
        out.push_str(&coverage_table(cov));
    }
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

fn partitions(trace: &Trace) -> Vec<i32> {
    let mut ps: Vec<i32> = trace.produced().map(|(m, _)| m.partition).collect();
    if ps.is_empty() {
        ps = (0..trace.case.partitions.max(1)).collect();
    }
    ps.sort();
    ps.dedup();
    ps
}

/// One SVG mark.
struct Mark {
    x: f64,
    lane: usize,
    class: &'static str,
    msg: Option<u64>,
    title: String,
    label: Option<String>,
}

/// A broker fault shows on the partitions it touched: the leader of one partition on that
/// partition's lanes; the coordinator (every partition's commits) or a broker named by index
/// on all of them.
fn broker_fault_touches(role: Option<&str>, partition: i32) -> bool {
    match role
        .and_then(|r| r.strip_prefix("the leader of partition "))
        .and_then(|p| p.parse::<i32>().ok())
    {
        Some(p) => p == partition,
        None => true,
    }
}

/// The swimlane chart of one partition.
fn swimlanes(trace: &Trace, partition: i32, violating: &BTreeSet<u64>) -> String {
    // The axis starts a little before the first worker starts (topic creation and
    // producing are in the phases line, not worth the width).
    let end_us = trace
        .events
        .iter()
        .map(|e| e.at_us)
        .max()
        .unwrap_or(0)
        .max(1);
    let start_us = trace
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Started { .. }))
        .map(|e| e.at_us)
        .min()
        .unwrap_or(0)
        .saturating_sub(20_000)
        .min(end_us - 1);
    let span = (end_us - start_us) as f64;
    let x = |us: u64| LABELS + PLOT * us.saturating_sub(start_us) as f64 / span;
    // Lanes: the harness (broker reads) first, then incarnations in start order.
    let mut lanes: Vec<(Incarnation, String)> = vec![(0, "harness (broker)".into())];
    let mut spans: BTreeMap<Incarnation, (u64, u64)> = BTreeMap::new();
    for e in &trace.events {
        if e.inc == 0 {
            continue;
        }
        if let EventKind::Started { primary, .. } = &e.kind {
            lanes.push((
                e.inc,
                if *primary {
                    format!("inc {}", e.inc)
                } else {
                    format!("inc {} (2nd member)", e.inc)
                },
            ));
        }
        let span = spans.entry(e.inc).or_insert((e.at_us, e.at_us));
        span.0 = span.0.min(e.at_us);
        span.1 = span.1.max(e.at_us);
    }
    for inc in spans.keys() {
        if !lanes.iter().any(|(i, _)| i == inc) {
            lanes.push((*inc, format!("inc {inc}")));
        }
    }
    let lane_of = |inc: Incarnation| lanes.iter().position(|(i, _)| *i == inc).unwrap_or(0);
    let mut marks = Vec::new();
    let mut mark = |at: u64, inc: Incarnation, class, msg: Option<u64>, title: String, label| {
        marks.push(Mark {
            x: x(at),
            lane: lane_of(inc),
            class,
            msg,
            title: format!("{} — {title}", ms(at)),
            label,
        })
    };
    let who = |inc: Incarnation| {
        if inc == 0 {
            "the harness".to_string()
        } else {
            format!("incarnation {inc}")
        }
    };
    for e in &trace.events {
        let (at, inc) = (e.at_us, e.inc);
        match &e.kind {
            EventKind::Polled { msg } if msg.partition == partition => mark(
                at,
                inc,
                "polled",
                Some(msg.id),
                format!("{} polled {msg}", who(inc)),
                None,
            ),
            EventKind::Applied { msg } if msg.partition == partition => mark(
                at,
                inc,
                "applied",
                Some(msg.id),
                format!("{msg} applied to the sink by {}", who(inc)),
                None,
            ),
            EventKind::SinkFailed {
                msg,
                write,
                failure,
            } if msg.partition == partition => mark(
                at,
                inc,
                "sinkfail",
                Some(msg.id),
                format!("sink write #{write} of {msg} failed ({failure:?})"),
                None,
            ),
            EventKind::Committed {
                offsets,
                mode,
                requested_at_us,
            } => {
                for o in offsets.iter().filter(|o| o.partition == partition) {
                    mark(
                        at,
                        inc,
                        "commit",
                        None,
                        format!(
                            "{} committed offset {} ({mode:?}, requested at {})",
                            who(inc),
                            o.offset,
                            ms(*requested_at_us)
                        ),
                        Some(o.offset.to_string()),
                    );
                }
            }
            EventKind::BrokerCommitObserved { offsets, since_us } => {
                for o in offsets.iter().filter(|o| o.partition == partition) {
                    mark(
                        at,
                        0,
                        "brokercommit",
                        None,
                        format!(
                            "the broker holds offset {} committed: it landed between {} and {} (by whichever client)",
                            o.offset,
                            ms(*since_us),
                            ms(at)
                        ),
                        Some(o.offset.to_string()),
                    );
                }
            }
            EventKind::BrokerFault {
                broker,
                action,
                role,
            } if broker_fault_touches(role.as_deref(), partition) => mark(
                at,
                0,
                "brokerfault",
                None,
                format!(
                    "broker {broker}{} {action}",
                    role.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
                ),
                Some(format!("b{broker} {action}")),
            ),
            EventKind::LinkFault { action, role, .. }
                if broker_fault_touches(Some(role), partition) =>
            {
                mark(
                    at,
                    0,
                    "brokerfault",
                    None,
                    format!("the worker's links to {role}: {action}"),
                    Some(format!("net {action}")),
                )
            }
            EventKind::BrokerCommitted { offsets } => {
                for (_, o) in offsets.iter().filter(|(q, _)| *q == partition) {
                    mark(
                        at,
                        0,
                        "brokerread",
                        None,
                        match o {
                            Some(o) => format!(
                                "after the incarnation the broker says offset {o} is committed"
                            ),
                            None => {
                                "after the incarnation the broker holds no committed offset".into()
                            }
                        },
                        o.map(|o| o.to_string()),
                    );
                }
            }
            EventKind::Rebalanced { phase, partitions } if partitions.contains(&partition) => {
                let (class, word) = match phase {
                    RebalancePhase::Revoke => ("revoke", "revoked"),
                    RebalancePhase::Assign => ("assign", "assigned"),
                };
                mark(
                    at,
                    inc,
                    class,
                    None,
                    format!("partition {partition} {word} ({})", who(inc)),
                    None,
                );
            }
            EventKind::Paused {
                point,
                hit,
                millis,
                after,
                ..
            } => mark(
                at,
                inc,
                "pause",
                None,
                format!(
                    "{} stops (SIGSTOP) at `{point}` hit #{hit}{} for {millis} ms",
                    who(inc),
                    super::after_anchor(after)
                ),
                Some("⏸".into()),
            ),
            EventKind::Resumed { paused_ms } => mark(
                at,
                inc,
                "pause",
                None,
                format!("{} continued (SIGCONT) after {paused_ms} ms", who(inc)),
                Some("▶".into()),
            ),
            EventKind::ClientCallEnded { call, ms, error } if *ms >= 1000 => mark(
                at,
                inc,
                "pause",
                None,
                format!(
                    "{}: `{call}` blocked {:.1} s{}",
                    who(inc),
                    *ms as f64 / 1000.0,
                    error
                        .as_ref()
                        .map(|e| format!(" and failed: {e}"))
                        .unwrap_or_default()
                ),
                Some("⌛".into()),
            ),
            EventKind::RebalanceRequested { point, hit } => mark(
                at,
                inc,
                "rebalance",
                None,
                format!("{} waits at `{point}` hit #{hit} for a rebalance", who(inc)),
                None,
            ),
            EventKind::Crashed { point, hit } => mark(
                at,
                inc,
                "crash",
                None,
                format!("{} crashed (SIGKILL) at `{point}` hit #{hit}", who(inc)),
                None,
            ),
            EventKind::CrashedAfter { after, point, hit } => mark(
                at,
                inc,
                "crash",
                None,
                format!(
                    "{} crashed (SIGKILL) at `{point}`, hit #{hit} after `{after}`",
                    who(inc)
                ),
                None,
            ),
            EventKind::Killed { reason } => mark(
                at,
                inc,
                if *reason == KillReason::StopTimeout {
                    "exit"
                } else {
                    "crash"
                },
                None,
                format!("{} killed by the harness ({reason:?})", who(inc)),
                None,
            ),
            EventKind::Exited { exit } => mark(
                at,
                inc,
                "exit",
                None,
                format!("{} ended: {exit:?}", who(inc)),
                None,
            ),
            _ => {}
        }
    }
    // Marks closer than a mark's width are pushed right, in event order, so each stays
    // visible (the hover title keeps its exact time).
    let mut last_x: BTreeMap<usize, f64> = BTreeMap::new();
    for m in &mut marks {
        if let Some(prev) = last_x.get(&m.lane) {
            m.x = m.x.max(prev + MIN_GAP);
        }
        last_x.insert(m.lane, m.x);
    }
    let right = marks.iter().map(|m| m.x).fold(LABELS + PLOT, f64::max);
    let height = 30.0 + LANE * lanes.len() as f64 + 24.0;
    let width = right + 30.0;
    let produced: Vec<String> = trace
        .produced()
        .filter(|(m, _)| m.partition == partition)
        .map(|(m, _)| m.offset.to_string())
        .collect();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<h3>partition {partition}</h3><p class=\"produced\">produced offsets {}</p>",
        produced.join(", ")
    );
    let _ = writeln!(
        svg,
        "<svg class=\"swimlanes\" data-partition=\"{partition}\" viewBox=\"0 0 {width:.0} {height:.0}\" width=\"{width:.0}\" height=\"{height:.0}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let lane_y = |i: usize| 30.0 + LANE * i as f64;
    for (i, (inc, label)) in lanes.iter().enumerate() {
        let y = lane_y(i);
        let _ = writeln!(
            svg,
            "<rect class=\"lane\" x=\"0\" y=\"{y:.1}\" width=\"{width:.0}\" height=\"{LANE}\"/><text class=\"lanelabel\" x=\"6\" y=\"{:.1}\">{}</text>",
            y + LANE / 2.0 + 4.0,
            escape(label)
        );
        if let Some((from, to)) = spans.get(inc) {
            let _ = writeln!(
                svg,
                "<rect class=\"alive\" data-inc=\"{inc}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\"><title>incarnation {inc}: {} to {}</title></rect>",
                x(*from),
                y + LANE - 8.0,
                (x(*to) - x(*from)).max(1.0),
                ms(*from),
                ms(*to)
            );
        }
    }
    // Time axis: about eight ticks at a round step.
    let step = nice_step(span / 8.0);
    let mut t = (start_us as f64 / step).ceil() * step;
    while t <= end_us as f64 {
        let tx = x(t as u64);
        let _ = writeln!(
            svg,
            "<line class=\"tick\" x1=\"{tx:.1}\" y1=\"22\" x2=\"{tx:.1}\" y2=\"{:.1}\"/><text class=\"ticklabel\" x=\"{tx:.1}\" y=\"16\">{:.0} ms</text>",
            height - 20.0,
            t / 1000.0
        );
        t += step;
    }
    for m in &marks {
        let cy = lane_y(m.lane) + LANE / 2.0 - 2.0;
        let hot = m.msg.is_some_and(|id| violating.contains(&id));
        let class = if hot {
            format!("ev {} violating", m.class)
        } else {
            format!("ev {}", m.class)
        };
        let data = m
            .msg
            .map(|id| format!(" data-msg=\"{id}\""))
            .unwrap_or_default();
        let shape = match m.class {
            "polled" => format!("<circle cx=\"{:.1}\" cy=\"{cy:.1}\" r=\"4\"/>", m.x),
            "applied" => format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\"/>",
                m.x - 4.0,
                cy - 4.0
            ),
            "commit" | "brokercommit" | "brokerread" => {
                format!("<path d=\"M{:.1},{:.1} l6,10 l-12,0 z\"/>", m.x, cy - 6.0)
            }
            "crash" => format!(
                "<path d=\"M{a:.1},{b:.1} l12,12 M{c:.1},{b:.1} l-12,12\"/>",
                a = m.x - 6.0,
                b = cy - 6.0,
                c = m.x + 6.0
            ),
            "sinkfail" => format!(
                "<path d=\"M{a:.1},{b:.1} l8,8 M{c:.1},{b:.1} l-8,8\"/>",
                a = m.x - 4.0,
                b = cy - 4.0,
                c = m.x + 4.0
            ),
            _ => format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"16\"/>",
                m.x - 1.5,
                cy - 8.0
            ),
        };
        let label = m
            .label
            .as_ref()
            .map(|l| {
                format!(
                    "<text class=\"marklabel\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    m.x + 5.0,
                    cy - 7.0,
                    escape(l)
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            "<g class=\"{class}\"{data}><title>{}</title>{shape}{label}</g>",
            escape(&m.title)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = raw.max(1.0);
    let pow = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if pow * m >= raw {
            return pow * m;
        }
    }
    pow * 10.0
}

fn coverage_table(cov: &Coverage) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<h2>Coverage</h2><p id=\"coverage-summary\">{} over {} case(s)</p>\n<table id=\"coverage\"><tr><th>crash point</th><th>hits in discovery</th><th>hits</th>",
        escape(&cov.to_string()),
        cov.cases
    );
    for k in POINT_KINDS {
        let _ = write!(out, "<th>{k}</th>");
    }
    out.push_str("</tr>\n");
    for p in &cov.points {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td>",
            escape(&p.point),
            p.discovered_hits,
            p.hits
        );
        for k in POINT_KINDS {
            let enabled = cov.enabled.iter().any(|e| e == k);
            let n = p.fired.get(k).copied().unwrap_or(0);
            let (class, text) = match (enabled, n) {
                (false, _) => ("off", "off".to_string()),
                (true, 0) => ("never", "never".to_string()),
                (true, n) => ("tried", n.to_string()),
            };
            let _ = write!(out, "<td class=\"{class}\">{text}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    let kinds: Vec<String> = cov.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = writeln!(
        out,
        "<p>faults fired: {}</p>",
        escape(&if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        })
    );
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}\
h1.fails{color:#b00020}h1.holds{color:#1b7f3b}p.note{color:#555;margin:.2em 0;font-family:monospace}\
li.violation.hl,li.violation:hover{background:#ffe3e3}\
svg.swimlanes{border:1px solid #ccc;background:#fff;display:block;margin-bottom:1em}\
rect.lane{fill:#fafafa;stroke:#eee}.lanelabel{font-size:12px;fill:#333}\
rect.alive{fill:#d6e4f0}.tick{stroke:#eee}.ticklabel{font-size:10px;fill:#888;text-anchor:middle}\
.ev circle{fill:#888}.ev.applied rect{fill:#1b7f3b}.ev.commit path{fill:#1f5fbf}\
.ev.brokercommit path{fill:none;stroke:#1f5fbf;stroke-width:1.5}.ev.brokerread path{fill:#9bb7e0}\
.ev.crash path{stroke:#d00;stroke-width:3}.ev.sinkfail path{stroke:#e08000;stroke-width:2.5}\
.ev.revoke rect{fill:#7b3fa0}.ev.assign rect{fill:#b48fd0}.ev.rebalance rect{fill:#7b3fa0;opacity:.6}\
.ev.exit rect{fill:#333}.ev.pause rect{fill:#c90}.ev.brokerfault rect{fill:#d00;opacity:.7}.marklabel{font-size:9px;fill:#1f5fbf}\
.ev.violating circle,.ev.violating rect{stroke:#d00;stroke-width:2}.ev.hl circle,.ev.hl rect{stroke:#f0a;stroke-width:3}\
table#coverage{border-collapse:collapse}table#coverage td,table#coverage th{border:1px solid #ddd;padding:2px 8px}\
td.never{background:#fff3cd}td.tried{background:#e3f5e8}td.off{color:#aaa}\
.legend span{margin-right:1em;font-size:12px}";

const LEGEND: &str = "<p class=\"legend\"><span>● polled</span><span style=\"color:#1b7f3b\">■ applied</span>\
<span style=\"color:#1f5fbf\">▲ committed (label: next offset)</span><span style=\"color:#1f5fbf\">△ commit seen on the broker</span>\
<span style=\"color:#e08000\">✕ sink write failed</span><span style=\"color:#7b3fa0\">| revoke / assign / rebalance wait</span>\
<span style=\"color:#c90\">⏸ ▶ paused / continued</span><span style=\"color:#d00\">✖ crash or kill</span><span>| exit</span><span style=\"color:#d00\">red outline: a violating message</span>\
<span>hover a mark for details; hover a violation to find its message</span></p>\n";

/// Hovering a violation or a mark highlights every mark of the same message. When it has
/// run, the body says `data-ready="1"` (a browser test reads it: no script error before).
const SCRIPT: &str = "(function(){\
var byMsg={};document.querySelectorAll('[data-msg]').forEach(function(el){\
var k=el.getAttribute('data-msg');(byMsg[k]=byMsg[k]||[]).push(el);});\
function hl(k,on){(byMsg[k]||[]).forEach(function(el){el.classList.toggle('hl',on);});}\
Object.keys(byMsg).forEach(function(k){byMsg[k].forEach(function(el){\
el.addEventListener('mouseenter',function(){hl(k,true);});\
el.addEventListener('mouseleave',function(){hl(k,false);});});});\
document.body.setAttribute('data-marks',String(document.querySelectorAll('g.ev').length));\
document.body.setAttribute('data-ready','1');})();";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{check, Guarantee};
    use crate::cluster::BackendKind;
    use crate::trace::{CaseInfo, CommitMode, Event, MessageRef, PartitionOffset, SinkSemantics};

    #[test]
    fn a_broker_fault_shows_on_the_partitions_its_role_touched() {
        assert!(broker_fault_touches(Some("the leader of partition 1"), 1));
        assert!(!broker_fault_touches(Some("the leader of partition 1"), 0));
        assert!(broker_fault_touches(Some("the group coordinator"), 0));
        assert!(broker_fault_touches(None, 3));
        let mut t = lost_trace();
        t.events.push(Event {
            at_us: 350,
            inc: 0,
            kind: EventKind::BrokerFault {
                broker: 2,
                action: "pause".into(),
                role: Some("the leader of partition 0".into()),
            },
        });
        let lanes = swimlanes(&t, 0, &BTreeSet::new());
        assert!(lanes.contains("brokerfault"), "{lanes}");
        assert!(
            lanes.contains("broker 2 (the leader of partition 0) pause"),
            "{lanes}"
        );
    }

    /// Commit before processing, then a crash: message 0 is lost.
    fn lost_trace() -> Trace {
        let m0 = MessageRef {
            id: 0,
            partition: 0,
            offset: 0,
        };
        let mut t = Trace::new(CaseInfo {
            topic: "t".into(),
            group: "g".into(),
            partitions: 1,
            backend: BackendKind::Embedded,
            sink: SinkSemantics::Ledger,
        });
        let ev = |at_us, inc, kind| Event { at_us, inc, kind };
        t.events = vec![
            ev(
                10,
                0,
                EventKind::Produced {
                    msg: m0,
                    key: "k<0>".into(),
                },
            ),
            ev(
                100,
                1,
                EventKind::Started {
                    primary: true,
                    faults: vec![],
                },
            ),
            ev(200, 1, EventKind::Polled { msg: m0 }),
            ev(
                300,
                1,
                EventKind::Committed {
                    offsets: vec![PartitionOffset {
                        partition: 0,
                        offset: 1,
                    }],
                    mode: CommitMode::Sync,
                    requested_at_us: 250,
                },
            ),
            ev(
                400,
                1,
                EventKind::Crashed {
                    point: "before-sink-write".into(),
                    hit: 1,
                },
            ),
            ev(
                500,
                0,
                EventKind::BrokerCommitted {
                    offsets: vec![(0, Some(1))],
                },
            ),
        ];
        t
    }

    #[test]
    fn a_failure_page_is_self_contained_and_marks_the_lost_message() {
        let trace = lost_trace();
        let verdict = check(&trace, Guarantee::AtLeastOnce).unwrap();
        assert!(!verdict.holds());
        let notes = vec!["seed <abc>".to_string()];
        let page = render(&Page {
            name: "my_consumer",
            verdict: &verdict,
            trace: &trace,
            schedule: None,
            coverage: None,
            notes: &notes,
        });
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("does NOT keep"));
        // Nothing fetched from anywhere.
        for external in ["http://", "https://", "src=", "@import"] {
            let allowed = "xmlns=\"http://www.w3.org/2000/svg\"";
            assert!(
                !page.replace(allowed, "").contains(external),
                "page references {external}"
            );
        }
        // Text is escaped.
        assert!(page.contains("seed &lt;abc&gt;"));
        assert!(!page.contains("<abc>"));
        // One chart for partition 0 with the harness lane and incarnation 1.
        assert_eq!(page.matches("<svg class=\"swimlanes\"").count(), 1);
        assert!(page.contains(">inc 1</text>"));
        assert!(page.contains(">harness (broker)</text>"));
        // The lost message's poll is highlighted; the violation names it for hovering.
        assert!(page.contains("<g class=\"ev polled violating\" data-msg=\"0\">"));
        assert!(page.contains("<li class=\"violation\" data-msg=\"0\"><b>Lost</b>"));
        assert!(page.contains("<g class=\"ev crash\">"));
        assert!(page.contains("<g class=\"ev commit\">"));
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(120.0), 200.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(1000.0), 1000.0);
    }
}

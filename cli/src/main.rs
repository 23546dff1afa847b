//! `kafka-harness`: what a check left behind, for people and CI.
//!
//! Reads the run records (`*.run.json`) a check writes to the report directory and the
//! schedules it saves to the failure directory. Every bad input is one line on stderr and
//! exit status 2; a diff that finds differences exits 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kafka_harness::report::{report_dir, timeline, RunRecord};
use kafka_harness::Schedule;

const HELP: &str = "kafka-harness — saved runs of kafka-harness checks

USAGE:
    kafka-harness list [--reports DIR] [--failures DIR]
        every run record and saved schedule, with its last verdict
    kafka-harness show <NAME|RECORD.run.json> [--html] [--reports DIR]
        the run's report as text (or the path of its HTML page, written if missing)
    kafka-harness html <RECORD.run.json> [-o OUT.html]
        render the HTML page of a saved run (default: next to the record)
    kafka-harness diff <A.run.json> <B.run.json>
        what differs between two runs: schedule, verdict, events per incarnation, and the
        first event where their histories part (exit 1 when they differ)
    kafka-harness replay <NAME|RECORD.run.json|SCHEDULE.json> [--reports DIR]
        print the `cargo test` command that replays the saved schedule for its test
    kafka-harness help

DIRECTORIES:
    reports   KAFKA_HARNESS_REPORT_DIR, else target/kafka-harness (run records, HTML, junit/)
    failures  KAFKA_HARNESS_FAILURE_DIR, else every kafka-harness-failures/ directory up to
              two levels below the current one (the schedules checks save)
";

/// One clear error.
struct Fail(String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("kafka-harness: error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// Parsed options: positional words, and `--name value` pairs.
struct Args {
    words: Vec<String>,
    reports: Option<PathBuf>,
    failures: Option<PathBuf>,
    out: Option<PathBuf>,
    html: bool,
}

fn parse(args: &[String]) -> Result<Args, Fail> {
    let mut a = Args {
        words: Vec::new(),
        reports: None,
        failures: None,
        out: None,
        html: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .map(PathBuf::from)
                .ok_or_else(|| Fail(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--reports" => a.reports = Some(value("--reports")?),
            "--failures" => a.failures = Some(value("--failures")?),
            "-o" | "--out" => a.out = Some(value("-o")?),
            "--html" => a.html = true,
            flag if flag.starts_with('-') => {
                return Err(Fail(format!(
                    "unknown option `{flag}` (see `kafka-harness help`)"
                )))
            }
            word => a.words.push(word.to_string()),
        }
    }
    Ok(a)
}

fn run(args: &[String]) -> Result<ExitCode, Fail> {
    let Some((command, rest)) = args.split_first() else {
        print!("{HELP}");
        return Ok(ExitCode::SUCCESS);
    };
    let a = parse(rest)?;
    let reports = a.reports.clone().unwrap_or_else(report_dir);
    let arity = |n: usize, usage: &str| {
        if a.words.len() == n {
            Ok(())
        } else {
            Err(Fail(format!("usage: kafka-harness {usage}")))
        }
    };
    match command.as_str() {
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        "list" => {
            arity(0, "list [--reports DIR] [--failures DIR]")?;
            list(&reports, a.failures.as_deref())
        }
        "show" => {
            arity(1, "show <NAME|RECORD.run.json> [--html]")?;
            let (path, record) = find_record(&a.words[0], &reports)?;
            if a.html {
                let html = path.with_file_name(html_name(&path));
                if !html.exists() {
                    std::fs::write(&html, record.html())
                        .map_err(|e| Fail(format!("writing {}: {e}", html.display())))?;
                }
                println!("{}", html.display());
            } else {
                print!("{}", text(&record));
            }
            Ok(ExitCode::SUCCESS)
        }
        "html" => {
            arity(1, "html <RECORD.run.json> [-o OUT.html]")?;
            let path = PathBuf::from(&a.words[0]);
            let record = RunRecord::load(&path)?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| path.with_file_name(html_name(&path)));
            std::fs::write(&out, record.html())
                .map_err(|e| Fail(format!("writing {}: {e}", out.display())))?;
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        "diff" => {
            arity(2, "diff <A.run.json> <B.run.json>")?;
            let a_rec = RunRecord::load(Path::new(&a.words[0]))?;
            let b_rec = RunRecord::load(Path::new(&a.words[1]))?;
            let lines = diff(&a_rec, &b_rec);
            if lines.is_empty() {
                println!("the two runs agree: same schedule, verdict and event sequence");
                Ok(ExitCode::SUCCESS)
            } else {
                for l in lines {
                    println!("{l}");
                }
                Ok(ExitCode::from(1))
            }
        }
        "replay" => {
            arity(1, "replay <NAME|RECORD.run.json|SCHEDULE.json>")?;
            println!("{}", replay(&a.words[0], &reports)?);
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Fail(format!(
            "unknown command `{other}` (commands: list, show, html, diff, replay, help)"
        ))),
    }
}

/// `x.run.json` → `x.html`.
fn html_name(record: &Path) -> String {
    let name = record
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{}.html", name.trim_end_matches(".run.json"))
}

/// Every `*.run.json` in `dir`, sorted.
fn records_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.to_string_lossy().ends_with(".run.json"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A record by path, or by check name in the report directory.
fn find_record(what: &str, reports: &Path) -> Result<(PathBuf, RunRecord), Fail> {
    let as_path = PathBuf::from(what);
    if as_path.is_file() {
        return Ok((as_path.clone(), RunRecord::load(&as_path)?));
    }
    for path in records_in(reports) {
        if let Ok(record) = RunRecord::load(&path) {
            if record.name == what {
                return Ok((path, record));
            }
        }
    }
    Err(Fail(format!(
        "no run record named `{what}` in {} and no such file (try `kafka-harness list`)",
        reports.display()
    )))
}

/// The schedules checks saved: `dir`, or every `kafka-harness-failures/` up to two levels down.
fn schedules(dir: Option<&Path>) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = match dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KAFKA_HARNESS_FAILURE_DIR").map(PathBuf::from))
    {
        Some(d) => vec![d],
        None => {
            let mut found = Vec::new();
            let mut level = vec![PathBuf::from(".")];
            for _ in 0..3 {
                let mut next = Vec::new();
                for d in &level {
                    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                        let p = e.path();
                        if !p.is_dir() || p.file_name().is_some_and(|n| n == "target") {
                            continue;
                        }
                        if p.file_name().is_some_and(|n| n == "kafka-harness-failures") {
                            found.push(p);
                        } else {
                            next.push(p);
                        }
                    }
                }
                level = next;
            }
            found
        }
    };
    let mut out: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    out.sort();
    out
}

fn verdict_word(record: &RunRecord) -> String {
    if record.verdict.holds() {
        "holds".into()
    } else {
        let kinds: Vec<String> = record
            .verdict
            .kinds()
            .iter()
            .map(|k| format!("{k:?}"))
            .collect();
        format!("FAILS {}", kinds.join("+"))
    }
}

fn list(reports: &Path, failures: Option<&Path>) -> Result<ExitCode, Fail> {
    let records: Vec<(PathBuf, RunRecord)> = records_in(reports)
        .into_iter()
        .filter_map(|p| RunRecord::load(&p).ok().map(|r| (p, r)))
        .collect();
    println!("runs in {}:", reports.display());
    if records.is_empty() {
        println!("  (none)");
    }
    for (path, r) in &records {
        println!(
            "  {:<40} {:<24} {:>4} case(s)  {}",
            r.name,
            verdict_word(r),
            r.cases,
            path.display()
        );
    }
    let saved = schedules(failures);
    println!("saved schedules:");
    if saved.is_empty() {
        println!("  (none)");
    }
    for s in saved {
        let last = records
            .iter()
            .find(|(_, r)| r.saved.as_ref().is_some_and(|p| same_file(p, &s)))
            .map(|(_, r)| verdict_word(r))
            .unwrap_or_else(|| "no run recorded".into());
        let faults = match Schedule::load(&s, None) {
            Ok(sch) => format!("{} fault(s)", sch.faults.len()),
            Err(e) => format!("unreadable: {e}"),
        };
        println!("  {:<60} {:<14} last: {last}", s.display(), faults);
    }
    Ok(ExitCode::SUCCESS)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The text report of a record (the one the check printed, else rebuilt from the trace).
fn text(r: &RunRecord) -> String {
    if let Some(report) = &r.report {
        return report.clone();
    }
    let mut out = format!("{}\n", r.summary);
    if let Some(s) = &r.schedule {
        out.push_str("schedule drawn:\n");
        for (i, f) in s.faults.iter().enumerate() {
            out.push_str(&format!("  {}. {f}\n", i + 1));
        }
    }
    out.push_str(&format!("\ntimeline:\n{}", timeline(&r.trace)));
    if let Some(c) = &r.coverage {
        out.push_str(&format!("\ncoverage:\n{}", c.table()));
    }
    out
}

/// An event as a diff compares it: who and what, without times.
fn shape(e: &kafka_harness::trace::Event) -> String {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("at-us");
        o.remove("at_us");
        o.remove("requested_at_us");
        o.remove("since_us");
    }
    v.to_string()
}

fn diff(a: &RunRecord, b: &RunRecord) -> Vec<String> {
    let mut out = Vec::new();
    if a.name != b.name {
        out.push(format!("name: {} | {}", a.name, b.name));
    }
    if a.schedule != b.schedule {
        let faults = |r: &RunRecord| {
            r.schedule
                .as_ref()
                .map(|s| {
                    s.faults
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| "none".into())
        };
        out.push(format!("schedule: [{}] | [{}]", faults(a), faults(b)));
    }
    if verdict_word(a) != verdict_word(b) {
        out.push(format!(
            "verdict: {} | {}",
            verdict_word(a),
            verdict_word(b)
        ));
    }
    let counts = |r: &RunRecord| {
        let mut m = std::collections::BTreeMap::<(u32, String), u32>::new();
        for e in &r.trace.events {
            let v = serde_json::to_value(&e.kind).unwrap_or_default();
            let kind = v["event"].as_str().unwrap_or("?").to_string();
            *m.entry((e.inc, kind)).or_default() += 1;
        }
        m
    };
    let (ca, cb) = (counts(a), counts(b));
    let keys: std::collections::BTreeSet<_> = ca.keys().chain(cb.keys()).cloned().collect();
    for k in keys {
        let (x, y) = (
            ca.get(&k).copied().unwrap_or(0),
            cb.get(&k).copied().unwrap_or(0),
        );
        if x != y {
            let who = if k.0 == 0 {
                "harness".to_string()
            } else {
                format!("inc {}", k.0)
            };
            out.push(format!("{who} {}: {x} | {y}", k.1));
        }
    }
    let sa: Vec<String> = a.trace.events.iter().map(shape).collect();
    let sb: Vec<String> = b.trace.events.iter().map(shape).collect();
    if let Some(i) = (0..sa.len().max(sb.len())).find(|&i| sa.get(i) != sb.get(i)) {
        let at = |r: &RunRecord, s: &[String]| {
            s.get(i).map_or("(history ended)".to_string(), |e| {
                format!("{:.1} ms {e}", r.trace.events[i].at_us as f64 / 1000.0)
            })
        };
        out.push(format!(
            "histories part at event {}:\n  A: {}\n  B: {}",
            i + 1,
            at(a, &sa),
            at(b, &sb)
        ));
    }
    out
}

fn replay(what: &str, reports: &Path) -> Result<String, Fail> {
    let path = PathBuf::from(what);
    // A schedule file: find the record that saved it.
    let record = if path.is_file() && !what.ends_with(".run.json") {
        Schedule::load(&path, None)?;
        records_in(reports)
            .into_iter()
            .filter_map(|p| RunRecord::load(&p).ok())
            .find(|r| r.saved.as_ref().is_some_and(|s| same_file(s, &path)))
            .ok_or_else(|| {
                Fail(format!(
                    "no run record in {} saved {} — run its check once, or replay it from a test with `Harness::assert_replay`",
                    reports.display(),
                    path.display()
                ))
            })?
    } else {
        find_record(what, reports)?.1
    };
    let saved = record.saved.as_ref().ok_or_else(|| {
        Fail(format!(
            "`{}` passed: it saved no schedule to replay",
            record.name
        ))
    })?;
    let test = record.test.as_ref().ok_or_else(|| {
        Fail(format!(
            "`{}` did not run under `cargo test`; replay {} with `Harness::assert_replay`",
            record.name,
            saved.display()
        ))
    })?;
    Ok(test.replay_command(saved))
}

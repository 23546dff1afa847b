//! The `kafka-harness` command on run records written by the library's own writer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kafka_harness::check::check;
use kafka_harness::report::artifacts::{self, RunRecord, TestLocation, RECORD_VERSION};
use kafka_harness::trace::{
    CaseInfo, CommitMode, Event, EventKind, MessageRef, PartitionOffset, SinkSemantics, Trace,
};
use kafka_harness::{BackendKind, Fault, Guarantee, Schedule, Workload};

fn cli(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kafka-harness"))
        .args(args)
        .current_dir(cwd)
        .env_remove("KAFKA_HARNESS_REPORT_DIR")
        .env_remove("KAFKA_HARNESS_FAILURE_DIR")
        .output()
        .expect("run the CLI")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One message; `commit_first` commits it before the crash that keeps it from the sink.
fn trace(commit_first: bool) -> Trace {
    let m = MessageRef {
        id: 0,
        partition: 0,
        offset: 0,
    };
    let mut t = Trace::new(CaseInfo {
        topic: "t".into(),
        group: "g".into(),
        partitions: 1,
        backend: BackendKind::Containers,
        sink: SinkSemantics::Ledger,
    });
    let ev = |at_us, inc, kind| Event { at_us, inc, kind };
    t.events.push(ev(
        1,
        0,
        EventKind::Produced {
            msg: m,
            key: "k0".into(),
        },
    ));
    t.events.push(ev(
        2,
        1,
        EventKind::Started {
            primary: true,
            faults: vec![],
        },
    ));
    t.events.push(ev(3, 1, EventKind::Polled { msg: m }));
    if commit_first {
        t.events.push(ev(
            4,
            1,
            EventKind::Committed {
                offsets: vec![PartitionOffset {
                    partition: 0,
                    offset: 1,
                }],
                mode: CommitMode::Sync,
                requested_at_us: 4,
            },
        ));
    }
    t.events.push(ev(
        5,
        1,
        EventKind::Crashed {
            point: "before-sink-write".into(),
            hit: 1,
        },
    ));
    if !commit_first {
        t.events.push(ev(
            6,
            2,
            EventKind::Started {
                primary: true,
                faults: vec![],
            },
        ));
        t.events.push(ev(7, 2, EventKind::Polled { msg: m }));
        t.events.push(ev(8, 2, EventKind::Applied { msg: m }));
    }
    t
}

fn record(dir: &Path, name: &str, commit_first: bool) -> PathBuf {
    let trace = trace(commit_first);
    let verdict = check(&trace, Guarantee::AtLeastOnce).unwrap();
    let schedule = Schedule {
        faults: vec![Fault::Crash {
            point: "before-sink-write".into(),
            hit: 1,
        }],
        ..Schedule::new(Workload::default())
    };
    let saved = dir.join("failures").join(format!("{name}.json"));
    std::fs::create_dir_all(saved.parent().unwrap()).unwrap();
    std::fs::write(&saved, schedule.to_json()).unwrap();
    let r = RunRecord {
        version: RECORD_VERSION,
        name: name.into(),
        guarantee: Guarantee::AtLeastOnce,
        test: Some(TestLocation {
            package: "orders".into(),
            target: Some("harness".into()),
            test: format!("tests::{name}"),
        }),
        finished_at: 0,
        elapsed_ms: 1234,
        cases: 5,
        summary: format!("`{name}` summary"),
        report: None,
        schedule: Some(schedule),
        verdict,
        trace,
        coverage: None,
        saved: (commit_first).then_some(saved),
        seed: Some("ab".repeat(32)),
    };
    let w = artifacts::write(&dir.join("reports"), &r, false).unwrap();
    w.record.unwrap()
}

#[test]
fn list_show_html_diff_and_replay_work_on_saved_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bad = record(dir, "commit_first", true);
    let good = record(dir, "process_first", false);
    let reports = dir.join("reports");
    let reports = reports.to_str().unwrap();

    let o = cli(&["list", "--reports", reports], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("commit_first") && out.contains("FAILS Lost"),
        "{out}"
    );
    assert!(
        out.contains("process_first") && out.contains("holds"),
        "{out}"
    );
    // The saved schedule is found under ./failures? No: only kafka-harness-failures/ dirs.
    let o = cli(
        &["list", "--reports", reports, "--failures", "failures"],
        dir,
    );
    let out = stdout(&o);
    assert!(
        out.contains("commit_first.json") && out.contains("last: FAILS Lost"),
        "{out}"
    );

    let o = cli(&["show", "commit_first", "--reports", reports], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("inc 1  : polled 0 · committed (Sync) 1"),
        "{}",
        stdout(&o)
    );

    let o = cli(&["html", bad.to_str().unwrap()], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let page = std::fs::read_to_string(stdout(&o).trim()).unwrap();
    assert!(page.contains("<svg class=\"swimlanes\""));
    assert!(page.contains("does NOT keep"));

    let o = cli(
        &["diff", bad.to_str().unwrap(), good.to_str().unwrap()],
        dir,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("verdict: FAILS Lost"), "{out}");
    assert!(out.contains("histories part at event 4"), "{out}");
    let o = cli(&["diff", bad.to_str().unwrap(), bad.to_str().unwrap()], dir);
    assert_eq!(o.status.code(), Some(0));

    let o = cli(&["replay", "commit_first", "--reports", reports], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let cmd = stdout(&o);
    assert!(
        cmd.starts_with("KAFKA_HARNESS_REPLAY=")
            && cmd.contains("cargo test -p orders --test harness -- --exact tests::commit_first"),
        "{cmd}"
    );
    // By schedule file too.
    let schedule = dir.join("failures/commit_first.json");
    let o = cli(
        &["replay", schedule.to_str().unwrap(), "--reports", reports],
        dir,
    );
    assert_eq!(stdout(&o), cmd);
}

#[test]
fn bad_input_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("junk.run.json"), "{not json").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unknown command `frobnicate`"),
        (&["show"], "usage: kafka-harness show"),
        (&["list", "--bogus"], "unknown option `--bogus`"),
        (
            &["html", "junk.run.json"],
            "is not a kafka-harness run record",
        ),
        (&["html", "missing.run.json"], "missing.run.json"),
        (
            &["show", "nobody", "--reports", "."],
            "no run record named `nobody`",
        ),
        (&["replay", "--reports"], "--reports needs a value"),
    ];
    for (args, expected) in cases {
        let o = cli(args, dir);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with("kafka-harness: error: "), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let o = cli(&["help"], dir);
    assert!(o.status.success());
    assert!(stdout(&o).contains("USAGE:"));
}

//! `cargo bench -p kafka-harness --bench sinks`: the cost of recording one effect in each
//! built-in sink (effect and record in one durable write), and of checking a trace.
//!
//! Plain `Instant` timing over many iterations (no benchmark framework, to keep compile
//! times low on small CI machines); prints ns per operation.

use std::time::Instant;

use kafka_harness::check::{check, Guarantee};
use kafka_harness::sink::{AppendSink, LedgerSink, SinkFactory, Stamp, UpsertSink};
use kafka_harness::trace::{
    CaseInfo, Event, EventKind, MessageRef, PartitionOffset, SinkSemantics, Trace,
};
use kafka_harness::worker::Record;
use kafka_harness::BackendKind;

fn per_effect(name: &str, sink: &dyn SinkFactory, n: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = sink.open(dir.path()).expect("open");
    let started = Instant::now();
    for id in 0..n {
        let record = Record {
            msg: MessageRef {
                id,
                partition: 0,
                offset: id as i64,
            },
            key: format!("k{}", id % 100),
        };
        s.apply(&record, Stamp { inc: 1, at_us: id })
            .expect("apply");
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{name:<14} {n:>7} effects  {:>9.0} ns/effect  ({:.0} effects/s)",
        ns,
        1e9 / ns
    );
}

fn checking(n: u64) {
    let case = CaseInfo {
        topic: "t".into(),
        group: "g".into(),
        partitions: 4,
        backend: BackendKind::Embedded,
        sink: SinkSemantics::Ledger,
    };
    let mut t = Trace::new(case);
    for id in 0..n {
        let msg = MessageRef {
            id,
            partition: (id % 4) as i32,
            offset: (id / 4) as i64,
        };
        t.events.push(Event {
            at_us: id,
            inc: 0,
            kind: EventKind::Produced {
                msg,
                key: "k".into(),
            },
        });
    }
    t.events.push(Event {
        at_us: n,
        inc: 1,
        kind: EventKind::Started {
            primary: true,
            faults: vec![],
        },
    });
    for id in 0..n {
        let msg = MessageRef {
            id,
            partition: (id % 4) as i32,
            offset: (id / 4) as i64,
        };
        let at = n + 1 + 2 * id;
        t.events.push(Event {
            at_us: at,
            inc: 1,
            kind: EventKind::Applied { msg },
        });
        let offsets = vec![PartitionOffset {
            partition: msg.partition,
            offset: msg.offset + 1,
        }];
        t.events.push(Event {
            at_us: at + 1,
            inc: 1,
            kind: EventKind::Committed {
                offsets,
                mode: kafka_harness::trace::CommitMode::Sync,
                requested_at_us: at + 1,
            },
        });
    }
    t.events.push(Event {
        at_us: 4 * n,
        inc: 0,
        kind: EventKind::Drained,
    });
    let started = Instant::now();
    let v = check(&t, Guarantee::AtLeastOnce).expect("check");
    assert!(v.holds());
    println!(
        "check at-least-once: {n} messages, {} events in {:.2} ms",
        t.events.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// The Postgres sink as a user's consumer drives it: the harness prepares the case schema,
/// the consumer's own client inserts (one autocommitted `INSERT … ON CONFLICT DO NOTHING` per
/// effect), the harness reads the rows back. Skipped with the reason when no Postgres starts.
fn postgres(n: u64) {
    use kafka_harness::sink::{PostgresSink, ReadBackContext};
    let sink = PostgresSink::new(
        "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL)",
        "SELECT customer, order_id FROM orders",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    if let Err(e) = sink.prepare(dir.path()) {
        println!("postgres       skipped: {e}");
        return;
    }
    let prepare_ms = started.elapsed().as_secs_f64() * 1e3;
    let url = std::fs::read_to_string(dir.path().join("postgres.url")).expect("connection file");
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let insert = db
        .prepare("INSERT INTO orders (order_id, customer) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .expect("prepare");
    let started = Instant::now();
    for id in 0..n {
        db.execute(&insert, &[&(id as i64), &format!("k{}", id % 100)])
            .expect("insert");
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    let started = Instant::now();
    let back = sink
        .read_back(&ReadBackContext {
            dir: dir.path(),
            client: rdkafka::ClientConfig::new(),
            output_topic: "unused",
        })
        .expect("read back");
    assert_eq!(back.applied.len() as u64, n);
    println!(
        "postgres       {n:>7} effects  {ns:>9.0} ns/effect  ({:.0} effects/s; schema set-up {prepare_ms:.1} ms incl. server start, read-back {:.1} ms)",
        1e9 / ns,
        started.elapsed().as_secs_f64() * 1e3
    );
}

fn main() {
    postgres(2_000);
    per_effect("ledger", &LedgerSink, 20_000);
    per_effect("sqlite-upsert", &UpsertSink, 2_000);
    per_effect("sqlite-append", &AppendSink, 2_000);
    for n in [100, 1_000, 5_000] {
        checking(n);
    }
}

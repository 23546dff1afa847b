//! Sinks in a real embedded database (SQLite, in the case directory).

use std::path::Path;

use rusqlite::{params, Connection};

use super::{ReadBackContext, Sink, SinkError, SinkFactory, SinkReadBack, Stamp};
use crate::trace::{MessageRef, SinkSemantics};
use crate::worker::Record;
use crate::Error;

const FILE: &str = "sink.sqlite";

fn storage(e: rusqlite::Error) -> SinkError {
    SinkError::Storage(e.to_string())
}

fn open_db(dir: &Path) -> Result<Connection, rusqlite::Error> {
    let c = Connection::open(dir.join(FILE))?;
    // WAL with synchronous=NORMAL survives the death of the process (not of the machine).
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.busy_timeout(std::time::Duration::from_secs(10))?;
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (key TEXT PRIMARY KEY, id INTEGER NOT NULL, src_offset INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, id INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS applied (inc INTEGER, at_us INTEGER, id INTEGER, partition INTEGER, offset INTEGER);",
    )?;
    Ok(c)
}

/// What a [`Db`] sink does with an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Upsert on the key, the last write wins.
    Upsert,
    /// Upsert on the key, only from a record at a later offset than the row's.
    VersionedUpsert,
    /// A row per effect.
    Append,
}

struct Db {
    conn: Connection,
    write: Write,
}

impl Sink for Db {
    fn apply(&mut self, record: &Record, stamp: Stamp) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(storage)?;
        let sql = match self.write {
            Write::Upsert => {
                "INSERT INTO orders (key, id, src_offset) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET id = excluded.id, src_offset = excluded.src_offset"
            }
            // A key's records share a partition, so its offsets order its writes.
            Write::VersionedUpsert => {
                "INSERT INTO orders (key, id, src_offset) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET id = excluded.id, src_offset = excluded.src_offset \
                 WHERE excluded.src_offset > orders.src_offset"
            }
            Write::Append => "INSERT INTO rows (key, id) VALUES (?1, ?2)",
        };
        if self.write == Write::Append {
            tx.execute(sql, params![record.key, record.msg.id as i64])
        } else {
            tx.execute(
                sql,
                params![record.key, record.msg.id as i64, record.msg.offset],
            )
        }
        .map_err(storage)?;
        tx.execute(
            "INSERT INTO applied (inc, at_us, id, partition, offset) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                stamp.inc,
                stamp.at_us as i64,
                record.msg.id as i64,
                record.msg.partition,
                record.msg.offset
            ],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)
    }
}

fn read_back(dir: &Path, upsert: bool) -> crate::Result<SinkReadBack> {
    let path = dir.join(FILE);
    if !path.exists() {
        return Ok(SinkReadBack {
            applied: vec![],
            state: Some(vec![]),
            output: None,
        });
    }
    let err = |e: rusqlite::Error| Error::Sink(format!("{}: {e}", path.display()));
    let c = open_db(dir).map_err(err)?;
    let mut stmt = c
        .prepare("SELECT inc, at_us, id, partition, offset FROM applied ORDER BY rowid")
        .map_err(err)?;
    let applied = stmt
        .query_map([], |r| {
            Ok((
                Stamp {
                    inc: r.get(0)?,
                    at_us: r.get::<_, i64>(1)? as u64,
                },
                MessageRef {
                    id: r.get::<_, i64>(2)? as u64,
                    partition: r.get(3)?,
                    offset: r.get(4)?,
                },
            ))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    let sql = if upsert {
        "SELECT key, id FROM orders"
    } else {
        "SELECT key, id FROM rows"
    };
    let mut stmt = c.prepare(sql).map_err(err)?;
    let mut state = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    state.sort();
    Ok(SinkReadBack {
        applied,
        state: Some(state),
        output: None,
    })
}

/// A `SinkFactory` for one way of writing to the case's SQLite file.
macro_rules! sqlite_sink {
    ($(#[$doc:meta])* $name:ident, $label:literal, $semantics:ident, $write:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl SinkFactory for $name {
            fn name(&self) -> &str {
                $label
            }
            fn semantics(&self) -> SinkSemantics {
                SinkSemantics::$semantics
            }
            fn open(&self, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
                Ok(Box::new(Db {
                    conn: open_db(dir).map_err(storage)?,
                    write: Write::$write,
                }))
            }
            fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
                read_back(ctx.dir, Write::$write != Write::Append)
            }
        }
    };
}

sqlite_sink!(
    /// Idempotent key-value sink: `INSERT … ON CONFLICT(key) DO UPDATE` on the business key —
    /// the "insert with unique key" that turns at-least-once into effectively-once, as long as
    /// no one writes late. The last write wins, so a zombie (a worker paused past its session
    /// timeout, whose partition moved on) that writes an old record after the new owner wrote a
    /// newer one leaves the old value: pauses reveal it. [`VersionedUpsertSink`] keeps the newer.
    UpsertSink,
    "sqlite-upsert",
    Upsert,
    Upsert
);

sqlite_sink!(
    /// [`UpsertSink`] with a version guard: a write lands only if its record's offset is later
    /// than the one the row was written from (`ON CONFLICT(key) DO UPDATE … WHERE
    /// excluded.src_offset > orders.src_offset`), so a zombie's late write of an old record
    /// cannot undo a newer one, and a redelivery cannot move a key's state back. The state it
    /// keeps is the same, the last id per key.
    VersionedUpsertSink,
    "sqlite-versioned-upsert",
    Upsert,
    VersionedUpsert
);

sqlite_sink!(
    /// Deliberately non-idempotent sink: a plain `INSERT` per effect, so a redelivery adds a row.
    AppendSink,
    "sqlite-append",
    Append,
    Append
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::StateRow;

    fn record(key: &str, id: u64, offset: i64) -> Record {
        Record {
            msg: MessageRef {
                id,
                partition: 0,
                offset,
            },
            key: key.into(),
        }
    }

    /// The zombie's write: the new owner applied k0's later record, then the paused worker
    /// wakes and applies the earlier one.
    fn state_after_a_late_write(sink: &dyn SinkFactory) -> Vec<StateRow> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut open = sink.open(dir.path()).expect("open");
        let stamp = |inc| Stamp { inc, at_us: 0 };
        open.apply(&record("k0", 4, 4), stamp(2)).expect("apply");
        open.apply(&record("k1", 1, 1), stamp(2)).expect("apply");
        open.apply(&record("k0", 0, 0), stamp(1)).expect("apply");
        let ctx = ReadBackContext {
            dir: dir.path(),
            client: rdkafka::ClientConfig::new(),
            output_topic: "unused",
        };
        let back = sink.read_back(&ctx).expect("read back");
        assert_eq!(back.applied.len(), 3, "every effect is recorded");
        back.state.expect("an upsert sink has a state")
    }

    #[test]
    fn the_last_write_wins_so_a_late_write_of_an_old_record_undoes_a_newer_one() {
        assert_eq!(
            state_after_a_late_write(&UpsertSink),
            vec![("k0".into(), 0), ("k1".into(), 1)]
        );
    }

    #[test]
    fn the_versioned_upsert_keeps_the_newer_record() {
        assert_eq!(
            state_after_a_late_write(&VersionedUpsertSink),
            vec![("k0".into(), 4), ("k1".into(), 1)]
        );
        // A redelivery of the newest record itself changes nothing either.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut open = VersionedUpsertSink.open(dir.path()).expect("open");
        for _ in 0..2 {
            open.apply(&record("k0", 4, 4), Stamp { inc: 1, at_us: 0 })
                .expect("apply");
        }
        let ctx = ReadBackContext {
            dir: dir.path(),
            client: rdkafka::ClientConfig::new(),
            output_topic: "unused",
        };
        let back = VersionedUpsertSink.read_back(&ctx).expect("read back");
        assert_eq!(back.state, Some(vec![("k0".into(), 4)]));
    }
}

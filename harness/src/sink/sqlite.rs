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
        "CREATE TABLE IF NOT EXISTS orders (key TEXT PRIMARY KEY, id INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, id INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS applied (inc INTEGER, at_us INTEGER, id INTEGER, partition INTEGER, offset INTEGER);",
    )?;
    Ok(c)
}

struct Db {
    conn: Connection,
    upsert: bool,
}

impl Sink for Db {
    fn apply(&mut self, record: &Record, stamp: Stamp) -> Result<(), SinkError> {
        let tx = self.conn.transaction().map_err(storage)?;
        if self.upsert {
            tx.execute(
                "INSERT INTO orders (key, id) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET id = excluded.id",
                params![record.key, record.msg.id as i64],
            )
            .map_err(storage)?;
        } else {
            tx.execute(
                "INSERT INTO rows (key, id) VALUES (?1, ?2)",
                params![record.key, record.msg.id as i64],
            )
            .map_err(storage)?;
        }
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

/// Idempotent key-value sink: `INSERT … ON CONFLICT(key) DO UPDATE` on the business key —
/// the "insert with unique key" that turns at-least-once into effectively-once.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpsertSink;

impl SinkFactory for UpsertSink {
    fn name(&self) -> &str {
        "sqlite-upsert"
    }
    fn semantics(&self) -> SinkSemantics {
        SinkSemantics::Upsert
    }
    fn open(&self, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(Db {
            conn: open_db(dir).map_err(storage)?,
            upsert: true,
        }))
    }
    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
        read_back(ctx.dir, true)
    }
}

/// Deliberately non-idempotent sink: a plain `INSERT` per effect, so a redelivery adds a row.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendSink;

impl SinkFactory for AppendSink {
    fn name(&self) -> &str {
        "sqlite-append"
    }
    fn semantics(&self) -> SinkSemantics {
        SinkSemantics::Append
    }
    fn open(&self, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(Db {
            conn: open_db(dir).map_err(storage)?,
            upsert: false,
        }))
    }
    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
        read_back(ctx.dir, false)
    }
}

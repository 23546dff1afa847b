use std::fs::File;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ReadBackContext, Sink, SinkError, SinkFactory, SinkReadBack, Stamp};
use crate::trace::{MessageRef, SinkSemantics};
use crate::worker::Record;
use crate::Error;

const FILE: &str = "ledger.jsonl";

/// The counting ledger: each effect is one line appended with one `write(2)`, so the effect
/// and its record are the same write. Detects loss and duplicates; holds no other state.
#[derive(Debug, Clone, Copy, Default)]
pub struct LedgerSink;

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(flatten)]
    stamp: Stamp,
    #[serde(flatten)]
    msg: MessageRef,
}

struct Open(File);

impl Sink for Open {
    fn apply(&mut self, record: &Record, stamp: Stamp) -> Result<(), SinkError> {
        let mut line = serde_json::to_vec(&Line {
            stamp,
            msg: record.msg,
        })
        .map_err(|e| SinkError::Storage(e.to_string()))?;
        line.push(b'\n');
        self.0
            .write_all(&line)
            .map_err(|e| SinkError::Storage(e.to_string()))
    }
}

impl SinkFactory for LedgerSink {
    fn name(&self) -> &str {
        "ledger"
    }
    fn semantics(&self) -> SinkSemantics {
        SinkSemantics::Ledger
    }
    fn open(&self, dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE))
            .map_err(|e| SinkError::Storage(e.to_string()))?;
        Ok(Box::new(Open(f)))
    }
    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
        let path = ctx.dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("reading the ledger", path, e)),
        };
        let mut applied = Vec::new();
        for (i, l) in text.lines().enumerate() {
            let line: Line = serde_json::from_str(l)
                .map_err(|e| Error::Sink(format!("{} line {}: {e}", path.display(), i + 1)))?;
            applied.push((line.stamp, line.msg));
        }
        Ok(SinkReadBack {
            applied,
            state: None,
            output: None,
        })
    }
}

//! The worker's half of the trace, and the crash points.
//!
//! Each event is one line written with a single `write(2)` on an `O_APPEND` file: a SIGKILL
//! lands between writes, so the file never holds half an event written before the kill, and
//! the kernel keeps what was written even though the process dies without flushing anything.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use crate::schedule::Fault;
use crate::trace::{monotonic_us, Event, EventKind, Incarnation, SinkFailure};
use crate::{Error, Result};

pub(crate) struct Recorder {
    file: Mutex<File>,
    epoch_us: u64,
    inc: Incarnation,
    hits: Mutex<HashMap<String, u32>>,
    crashes: Vec<(String, u32)>,
    sink_failures: Vec<(u32, SinkFailure)>,
    stop_path: std::path::PathBuf,
}

impl Recorder {
    pub(crate) fn open(
        path: &Path,
        epoch_us: u64,
        inc: Incarnation,
        faults: &[Fault],
        stop_path: &Path,
    ) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("opening the worker trace", path, e))?;
        let crashes = faults
            .iter()
            .filter_map(|f| match f {
                Fault::Crash { point, hit } => Some((point.clone(), *hit)),
                _ => None,
            })
            .collect();
        let sink_failures = faults
            .iter()
            .filter_map(|f| match f {
                Fault::SinkFailure { write, failure } => Some((*write, *failure)),
                _ => None,
            })
            .collect();
        Ok(Recorder {
            file: Mutex::new(file),
            epoch_us,
            inc,
            hits: Mutex::new(HashMap::new()),
            crashes,
            sink_failures,
            stop_path: stop_path.to_path_buf(),
        })
    }

    pub(crate) fn now_us(&self) -> u64 {
        monotonic_us().saturating_sub(self.epoch_us)
    }

    pub(crate) fn inc(&self) -> Incarnation {
        self.inc
    }

    /// Append one event. A failed write is reported on stderr, never a panic inside a callback.
    pub(crate) fn record(&self, kind: EventKind) {
        self.record_at(self.now_us(), kind)
    }

    pub(crate) fn record_at(&self, at_us: u64, kind: EventKind) {
        let event = Event {
            at_us,
            inc: self.inc,
            kind,
        };
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("kafka-harness worker: cannot encode event: {e}");
                return;
            }
        };
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // One write call per event: see the module docs.
        if let Err(e) = f.write_all(&line) {
            eprintln!("kafka-harness worker: cannot record event: {e}");
        }
    }

    /// Count a hit of `point`; if the schedule says this hit crashes, die now by SIGKILL.
    pub(crate) fn crash_point(&self, point: &str) {
        let hit = {
            let mut hits = self.hits.lock().unwrap_or_else(|p| p.into_inner());
            let h = hits.entry(point.to_string()).or_insert(0);
            *h += 1;
            *h
        };
        self.record(EventKind::CrashPointHit {
            point: point.to_string(),
            hit,
        });
        if self.crashes.iter().any(|(p, h)| p == point && *h == hit) {
            self.record(EventKind::Crashed {
                point: point.to_string(),
                hit,
            });
            die();
        }
    }

    /// The failure the schedule assigns to the `write`-th sink write, if any.
    pub(crate) fn sink_failure(&self, write: u32) -> Option<SinkFailure> {
        self.sink_failures
            .iter()
            .find(|(w, _)| *w == write)
            .map(|(_, f)| *f)
    }

    /// Whether the orchestrator asked this worker to stop.
    pub(crate) fn stop_requested(&self) -> bool {
        self.stop_path.exists()
    }
}

/// A real crash: SIGKILL to ourselves. No destructors, no `close()`, no final commit.
pub(crate) fn die() -> ! {
    // SAFETY: kill(2) on our own pid.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL cannot be caught; this only runs if the signal is somehow delayed.
    loop {
        std::thread::park();
    }
}

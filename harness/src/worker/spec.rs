//! What the orchestrator tells a worker process: written as JSON to the case directory, its
//! path passed in `KAFKA_HARNESS_WORKER_SPEC`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::schedule::Fault;
use crate::trace::Incarnation;
use crate::{Error, Result};

use crate::cluster::ClusterView;
/// Environment variable that puts a process in worker mode.
pub(crate) use crate::cluster::ENV_WORKER_SPEC as ENV_SPEC;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// The harness (test) name the worker function belongs to.
    pub name: String,
    pub inc: Incarnation,
    pub primary: bool,
    /// Where the orchestrator's cluster is (also read by `Cluster::shared` in the worker).
    #[serde(flatten)]
    pub cluster: ClusterView,
    /// The orchestrator's cluster, so `Cluster::shared()` in a worker reuses it.
    pub topic: String,
    pub output_topic: String,
    pub group: String,
    pub transactional_id: String,
    pub partitions: i32,
    /// The `client.id` the harness's consumer config gives this incarnation (its member id
    /// on the broker starts with it; see `Schedule::joiner_first`). Empty: none.
    #[serde(default)]
    pub client_id: String,
    pub faults: Vec<Fault>,
    /// Names of the `fail` crate's fail points to serve as crash points.
    #[serde(default)]
    pub fail_points: Vec<String>,
    /// `CLOCK_MONOTONIC` µs at which the case began.
    pub epoch_us: u64,
    pub case_dir: PathBuf,
    pub trace_path: PathBuf,
    pub stop_path: PathBuf,
}

impl WorkerSpec {
    pub(crate) fn write(&self) -> Result<PathBuf> {
        let path = self.case_dir.join(format!("worker-{}.json", self.inc));
        let text = serde_json::to_string(self).map_err(|e| Error::Worker(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| Error::io("writing worker spec", &path, e))?;
        Ok(path)
    }

    /// `Some(spec)` when this process was started as a worker.
    pub(crate) fn from_env() -> Result<Option<WorkerSpec>> {
        let Some(path) = std::env::var_os(ENV_SPEC) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io("reading worker spec", &path, e))?;
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Worker(format!(
                "worker spec {}: {e}",
                PathBuf::from(path).display()
            ))
        })
    }
}

//! Someone else's cluster: the harness creates and deletes only what is under its prefix.

use super::{Backend, BackendKind, ClusterConfig, ClusterError, ClusterResult};

pub(crate) struct External {
    bootstrap: String,
}

impl External {
    pub(crate) fn new(config: &ClusterConfig) -> ClusterResult<Self> {
        let bootstrap = config.bootstrap.clone().ok_or(ClusterError::NoBootstrap)?;
        if bootstrap.split(',').any(|s| !s.contains(':')) {
            return Err(ClusterError::NoBootstrap);
        }
        Ok(External { bootstrap })
    }
}

impl Backend for External {
    fn kind(&self) -> BackendKind {
        BackendKind::External
    }
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }
    /// Never create topics on someone else's cluster just to probe it: metadata only.
    fn probe_with_topic(&self) -> bool {
        false
    }
    fn shutdown(&self) -> ClusterResult<()> {
        Ok(())
    }
}

/// A worker process's view of its orchestrator's cluster: addresses only, no faults, no teardown.
pub(crate) struct WorkerView {
    pub(crate) kind: BackendKind,
    pub(crate) bootstrap: String,
}

impl Backend for WorkerView {
    fn kind(&self) -> BackendKind {
        self.kind
    }
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }
    fn probe_with_topic(&self) -> bool {
        false
    }
    fn shutdown(&self) -> ClusterResult<()> {
        Ok(())
    }
}

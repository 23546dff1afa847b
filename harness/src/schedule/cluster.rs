//! The targets and actions of faults the cluster suffers rather than the consumer: a broker
//! killed or frozen ([`crate::Fault::Broker`]), the worker's links to brokers cut or slowed
//! ([`crate::Fault::Network`]). Targets are roles, looked up when the fault fires.

use serde::{Deserialize, Serialize};

/// Which broker a [`Fault::Broker`](crate::Fault::Broker) hits, looked up from the cluster's
/// metadata when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "role")]
pub enum BrokerTarget {
    /// The leader of this partition of the input topic.
    Leader {
        /// Input partition.
        partition: i32,
    },
    /// The coordinator of the consumer group: the leader of the `__consumer_offsets`
    /// partition the group id hashes to.
    Coordinator,
    /// The transaction coordinator of the case's `transactional.id`: the leader of the
    /// `__transaction_state` partition the id hashes to (for transactional workers; failing
    /// over mid-commit is the fault it models).
    TransactionCoordinator,
}

impl BrokerTarget {
    /// The same role, with a leader's partition brought within `partitions`.
    pub fn within(self, partitions: i32) -> Self {
        match self {
            BrokerTarget::Leader { partition } => BrokerTarget::Leader {
                partition: partition.min(partitions.max(1) - 1),
            },
            other => other,
        }
    }
}

impl std::fmt::Display for BrokerTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BrokerTarget::Leader { partition } => write!(f, "the leader of partition {partition}"),
            BrokerTarget::Coordinator => write!(f, "the group coordinator"),
            BrokerTarget::TransactionCoordinator => write!(f, "the transaction coordinator"),
        }
    }
}

/// What a [`Fault::Broker`](crate::Fault::Broker) does to its broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "do")]
pub enum BrokerAction {
    /// SIGKILL, then started again at once (same address, same data); the harness waits until
    /// the cluster is whole again before it goes on.
    Restart,
    /// SIGKILL, started again `millis` ms later.
    Down {
        /// How long it stays down.
        millis: u64,
    },
    /// Frozen for `millis` ms (SIGSTOP / `docker pause`): connections stay open and nothing
    /// answers — the fault timeouts, not connection errors, must handle.
    Pause {
        /// How long it stays frozen.
        millis: u64,
    },
}

/// Which of the worker's links a [`crate::Fault::Network`] cuts or slows: to the broker with
/// a role (looked up when the fault fires, as for [`BrokerTarget`]), or to every broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "role")]
pub enum LinkTarget {
    /// The leader of this partition of the input topic.
    Leader {
        /// Input partition.
        partition: i32,
    },
    /// The group coordinator.
    Coordinator,
    /// The transaction coordinator of the case's `transactional.id`.
    TransactionCoordinator,
    /// Every broker: the worker is cut off from the cluster.
    All,
}

impl LinkTarget {
    /// The same links, with a leader's partition brought within `partitions`.
    pub fn within(self, partitions: i32) -> Self {
        match self {
            LinkTarget::Leader { partition } => LinkTarget::Leader {
                partition: partition.min(partitions.max(1) - 1),
            },
            other => other,
        }
    }

    /// The broker role, `None` for [`LinkTarget::All`].
    pub fn broker(self) -> Option<BrokerTarget> {
        match self {
            LinkTarget::Leader { partition } => Some(BrokerTarget::Leader { partition }),
            LinkTarget::Coordinator => Some(BrokerTarget::Coordinator),
            LinkTarget::TransactionCoordinator => Some(BrokerTarget::TransactionCoordinator),
            LinkTarget::All => None,
        }
    }
}

impl std::fmt::Display for LinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.broker() {
            Some(b) => b.fmt(f),
            None => write!(f, "every broker"),
        }
    }
}

/// What a [`crate::Fault::Network`] does to its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "do")]
pub enum LinkAction {
    /// Nothing flows for `millis` ms, either way; connections stay open (new ones are
    /// accepted and carry nothing), so the client sees requests time out, as in a partition.
    Cut {
        /// How long the cut lasts.
        millis: u64,
    },
    /// Every chunk of bytes waits `delay_ms` in each direction, for `millis` ms.
    Slow {
        /// How long the slow link lasts.
        millis: u64,
        /// Added delay per chunk, each way.
        delay_ms: u64,
    },
}

impl LinkAction {
    /// How long the fault lasts.
    pub fn millis(self) -> u64 {
        match self {
            LinkAction::Cut { millis } | LinkAction::Slow { millis, .. } => millis,
        }
    }
}

/// What a fault the cluster suffers does, apart from its trigger (see
/// [`crate::Fault::cluster_fault`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterFault {
    /// A broker killed, kept down or frozen.
    Broker(BrokerTarget, BrokerAction),
    /// The worker's links cut or slowed.
    Network(LinkTarget, LinkAction),
}

impl std::fmt::Display for ClusterFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterFault::Broker(target, BrokerAction::Restart) => {
                write!(f, "{target} killed and restarted")
            }
            ClusterFault::Broker(target, BrokerAction::Down { millis }) => {
                write!(f, "{target} killed for {millis} ms")
            }
            ClusterFault::Broker(target, BrokerAction::Pause { millis }) => {
                write!(f, "{target} frozen for {millis} ms")
            }
            ClusterFault::Network(target, LinkAction::Cut { millis }) => {
                write!(f, "the worker cut off from {target} for {millis} ms")
            }
            ClusterFault::Network(target, LinkAction::Slow { millis, delay_ms }) => write!(
                f,
                "the worker's links to {target} slowed by {delay_ms} ms for {millis} ms"
            ),
        }
    }
}
